-- The relay's index in the order it now claims tasks (V0007), built CONCURRENTLY, so
-- that reads and writes of moderation_results go on while it is built. pgmigrate runs
-- a NONTRANSACTIONAL migration statement by statement outside a transaction, which
-- CONCURRENTLY needs. Each statement may run again: an interrupted build leaves an
-- invalid index of the new name, which the first statement drops, and an interrupted
-- run is run again whole, since pgmigrate records the version only at its end.
-- Each CONCURRENTLY step first waits for the transactions on the table to end: longer
-- than the session's lock_timeout (db/migrations.yml) is allowed here, since this waiting
-- holds back no one else's reads or writes.
SET lock_timeout = '1min';
DROP INDEX CONCURRENTLY IF EXISTS moderation_results_unpublished_by_tries_idx;
CREATE INDEX CONCURRENTLY moderation_results_unpublished_by_tries_idx
    ON moderation_results (publish_tries, created_at) WHERE published_at IS NULL;
DROP INDEX CONCURRENTLY IF EXISTS moderation_results_unpublished_idx;
