-- A dead letter now keeps the headers of the record it was made from (a trace context,
-- a producer's own), which its DLQ record carries again beside ours. Each is a pair
-- [name, value], both base64: to Kafka a header's name and value are any bytes, and
-- JSONB takes no NUL in a string.
--
-- A constant default, so adding the column changes only the catalogue, under a brief
-- lock (at most the session's 2 s lock_timeout to get it, db/migrations.yml). Letters
-- written before it, and by the release before during a rolling upgrade, have none.
ALTER TABLE dead_letters ADD COLUMN source_headers JSONB NOT NULL DEFAULT '[]';
