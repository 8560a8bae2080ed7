DROP TABLE read.loan_installments;
DROP TABLE read.loans;
DELETE FROM read.projections WHERE name = 'loan';
DELETE FROM read.kafka_offsets WHERE projection = 'loan';
