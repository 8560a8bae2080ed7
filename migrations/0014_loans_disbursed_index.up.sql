-- Close of business lists every loan by its loan_disbursed event, 10,000 at a time in position
-- order (engine/src/close_of_business.cpp). Without an index on the event type each page
-- scanned the log after the page before: on the bench's store of 1,000,003 events and 100,000
-- loans, 230 to 430 ms a page, 10 pages of a 7.8 s close (issue 18, item 6), and with 1,000,000
-- loans 100 pages over a log ten times the size. A partial index holds one entry per loan, and
-- the other appends only test the predicate: 300,000 rows went into a table with and without it
-- in the same time (545 to 612 ms either way). The stream id is carried in the index so that a
-- page is read from the index alone: fetching each loan's row from the log instead took 130 ms
-- a page, its 10,000 rows spread over 3,865 pages of the table (4 ms from the index alone). It
-- takes 4.9 MB per 100,000 loans. See engine/README.md, "Indexes on the append path".
--
-- Built in the migration's transaction, so appends wait while it reads the log once.
CREATE INDEX events_loan_disbursed_idx ON events (position) INCLUDE (stream_id)
    WHERE type = 'loan_disbursed';
