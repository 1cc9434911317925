-- The key a caller of async_predict may send (Idempotency-Key), so that a request it
-- retries (after a timeout, a 503, a dropped connection) finds the task its first try
-- made instead of making a second one. A table of its own rather than a column of
-- moderation_results: a unique index built on moderation_results would hold that table
-- for a scan of every row, and requests without a key never touch this one. (Its foreign
-- key still takes a SHARE ROW EXCLUSIVE lock on moderation_results, which blocks writes
-- to it until this migration's transaction commits: see db/migrations.yml's lock_timeout.)
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key        TEXT        PRIMARY KEY,
    task_id    BIGINT      NOT NULL UNIQUE REFERENCES moderation_results (id),
    item_id    BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
