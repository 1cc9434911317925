-- The relay claimed unpublished letters oldest first, so a full sweep of letters Kafka
-- refuses for good (each over the DLQ topic's size limit, say) came back first on every
-- sweep and held back every letter after them. Each sweep now counts, on the letters it
-- claimed and could not publish, one more try, and claims the least tried first: what
-- Kafka keeps refusing sinks behind the rest, and an outage, which every claimed letter
-- goes through alike, only rotates the order.
ALTER TABLE dead_letters ADD COLUMN publish_tries INTEGER NOT NULL DEFAULT 0;
DROP INDEX dead_letters_unpublished_idx;
CREATE INDEX dead_letters_unpublished_idx ON dead_letters (publish_tries, id)
    WHERE published_at IS NULL;
