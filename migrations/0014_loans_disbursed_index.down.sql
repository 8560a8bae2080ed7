DROP INDEX events_loan_disbursed_idx;
