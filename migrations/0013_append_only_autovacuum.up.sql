-- Autovacuum of the append-only tables (issue 18, item 4). Their rows are inserted and never
-- updated or deleted, so a vacuum has nothing to remove: it marks the new pages all-visible
-- (index-only scans) and freezes their rows. By default an insert-triggered vacuum waits for
-- 20 % of the table's size in new rows, so the larger the log, the rarer and the longer each
-- run (the bench found one busy through 64 % of its fixed-rate window, and the read models'
-- lag p99 twice as high meanwhile). A fixed threshold of 100,000 inserted rows keeps every run
-- to the pages written since the last, at any size. Freezing rows on that first visit
-- (freeze_min_age 0: the pages never change again) spares the table a later anti-wraparound
-- vacuum that would rewrite all of it at once.
ALTER TABLE events SET (autovacuum_vacuum_insert_scale_factor = 0,
                        autovacuum_vacuum_insert_threshold = 100000,
                        autovacuum_freeze_min_age = 0);
ALTER TABLE idempotency_keys SET (autovacuum_vacuum_insert_scale_factor = 0,
                                  autovacuum_vacuum_insert_threshold = 100000,
                                  autovacuum_freeze_min_age = 0);
-- The read models' append-only tables (a rebuild gives its shadow tables the live ones'
-- storage parameters, so these survive `ledger rebuild`).
ALTER TABLE read.entries SET (autovacuum_vacuum_insert_scale_factor = 0,
                              autovacuum_vacuum_insert_threshold = 100000,
                              autovacuum_freeze_min_age = 0);
ALTER TABLE read.audit SET (autovacuum_vacuum_insert_scale_factor = 0,
                            autovacuum_vacuum_insert_threshold = 100000,
                            autovacuum_freeze_min_age = 0);
