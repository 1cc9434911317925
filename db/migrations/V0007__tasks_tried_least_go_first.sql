-- The relay claimed unpublished tasks oldest first. When one partition of `moderation`
-- is offline (its only replica's broker down, say), every immediate publish to it
-- fails, so the backlog of unpublished tasks soon holds a sweep's worth of them, all
-- refused, and every sweep claimed those same tasks again: a task of a healthy
-- partition whose own publish missed waited behind them for the whole outage. As for
-- dead letters (V0004), each sweep now counts one more try on the tasks it claimed and
-- could not publish, and claims the least tried first; an outage of the whole broker,
-- which every claimed task goes through alike, only rotates the order.
-- Only the relay changes publish_tries, so finishing a task stays a HOT update (V0002).
ALTER TABLE moderation_results ADD COLUMN publish_tries INTEGER NOT NULL DEFAULT 0;
DROP INDEX moderation_results_unpublished_idx;
CREATE INDEX moderation_results_unpublished_idx ON moderation_results (publish_tries, created_at)
    WHERE published_at IS NULL;
