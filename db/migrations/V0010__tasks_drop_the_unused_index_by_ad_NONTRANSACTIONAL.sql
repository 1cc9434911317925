-- No statement of the service looks tasks up by their ad: the consumer, the relay,
-- prune and the results endpoint all go by task id (or by the relay's partial index).
-- The index by item_id only cost every task's insert its upkeep (a quarter more WAL per
-- task, measured) and its space. An operator who wants tasks by ad can build it again:
--   CREATE INDEX CONCURRENTLY moderation_results_item_id_idx ON moderation_results (item_id);
--
-- NONTRANSACTIONAL, as V0008 and for the same reasons (see there): the drop waits for the
-- transactions open on the table without blocking reads or writes meanwhile, and may run
-- again after an interrupted run.
SET lock_timeout = '1min';
DROP INDEX CONCURRENTLY IF EXISTS moderation_results_item_id_idx;
