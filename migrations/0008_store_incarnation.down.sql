ALTER TABLE read.projections DROP COLUMN incarnation;
ALTER TABLE checkpoints DROP COLUMN incarnation;
DROP TABLE store_incarnation;
