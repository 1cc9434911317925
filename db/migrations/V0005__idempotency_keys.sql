-- The key a caller of async_predict may send (Idempotency-Key), so that a request it
-- retries (after a timeout, a 503, a dropped connection) finds the task its first try
-- made instead of making a second one. NULL for a request without one; the partial
-- index leaves those out, so they cost the insert nothing. On a large table the build
-- holds inserts back for one scan of it; create the index CONCURRENTLY by hand first
-- for none at all, and this finds it there.
ALTER TABLE moderation_results ADD COLUMN IF NOT EXISTS idempotency_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS moderation_results_idempotency_key_idx
    ON moderation_results (idempotency_key) WHERE idempotency_key IS NOT NULL;
