-- Finishing a task now also marks it published, but an earlier version of the consumer
-- left published_at NULL on a task it finished before its publish was acknowledged
-- (the broker's acknowledgement lost, say). Such rows stay in the relay's partial index
-- (published_at IS NULL) for good, the oldest first, and every sweep walks past them.
-- A finished task needs no publish: it counts as published when it finished. The
-- partial index finds exactly these rows, so this reads no others.
UPDATE moderation_results SET published_at = processed_at
WHERE published_at IS NULL AND status <> 'pending';
