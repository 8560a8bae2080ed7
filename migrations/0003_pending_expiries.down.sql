DROP TABLE pending_expiries;
