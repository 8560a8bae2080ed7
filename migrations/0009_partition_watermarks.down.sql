DROP TABLE read.partition_watermarks;
ALTER TABLE read.projections DROP COLUMN partitions;
