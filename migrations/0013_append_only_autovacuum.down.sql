-- Back to the cluster's autovacuum settings for the append-only tables.
ALTER TABLE events RESET (autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold,
                          autovacuum_freeze_min_age);
ALTER TABLE idempotency_keys RESET (autovacuum_vacuum_insert_scale_factor,
                                    autovacuum_vacuum_insert_threshold, autovacuum_freeze_min_age);
ALTER TABLE read.entries RESET (autovacuum_vacuum_insert_scale_factor,
                                autovacuum_vacuum_insert_threshold, autovacuum_freeze_min_age);
ALTER TABLE read.audit RESET (autovacuum_vacuum_insert_scale_factor,
                              autovacuum_vacuum_insert_threshold, autovacuum_freeze_min_age);
