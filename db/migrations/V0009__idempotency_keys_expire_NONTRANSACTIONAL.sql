-- Idempotency keys now expire (IDEMPOTENCY_KEY_TTL_S): a request may take over an
-- expired key, and the relay deletes expired keys, the oldest first, through this
-- index. Built CONCURRENTLY, as V0008 is and for the same reasons (see there): keyed
-- requests go on while it is built, and each statement may run again after an
-- interrupted run.
SET lock_timeout = '1min';
DROP INDEX CONCURRENTLY IF EXISTS idempotency_keys_created_at_idx;
CREATE INDEX CONCURRENTLY idempotency_keys_created_at_idx ON idempotency_keys (created_at);
