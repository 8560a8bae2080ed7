-- The loan read model (issue 6): the fold of each loan stream, written by the `loan`
-- projection in the same transaction as its watermark in read.projections.
INSERT INTO read.projections (name) VALUES ('loan') ON CONFLICT DO NOTHING;

CREATE TABLE read.loans (
    loan_id               text    PRIMARY KEY,
    borrower              text    NOT NULL,
    currency              text    NOT NULL,
    status                text    NOT NULL,
    principal             bigint  NOT NULL,
    rate_bps              int     NOT NULL,
    installments          int     NOT NULL,
    schedule_type         text    NOT NULL,
    origination_date      date    NOT NULL,
    first_due_date        date    NOT NULL,
    origination_fee       bigint  NOT NULL,
    late_fee              bigint  NOT NULL,
    grace_days            int     NOT NULL,
    closed_through        date,
    interest_recognised   bigint  NOT NULL,
    days_past_due         bigint  NOT NULL,
    principal_written_off bigint  NOT NULL,
    interest_reversed     bigint  NOT NULL,
    version               bigint  NOT NULL,
    position              bigint  NOT NULL
);
CREATE INDEX loans_borrower_idx ON read.loans (borrower, loan_id);

CREATE TABLE read.loan_installments (
    loan_id         text    NOT NULL,
    number          int     NOT NULL,
    due_date        date    NOT NULL,
    principal       bigint  NOT NULL,
    interest        bigint  NOT NULL,
    principal_paid  bigint  NOT NULL,
    interest_paid   bigint  NOT NULL,
    penalty         bigint  NOT NULL,
    penalty_paid    bigint  NOT NULL,
    overdue         boolean NOT NULL,
    interest_waived boolean NOT NULL,
    PRIMARY KEY (loan_id, number)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON read.loans, read.loan_installments TO ledger_app;
