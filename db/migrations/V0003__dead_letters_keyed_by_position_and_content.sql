-- A record's position alone swallowed the letter of a later record at a position an
-- earlier one had held (a topic deleted and made again, or the local runner's in-memory
-- Kafka starting over at offset 0 on a kept database): its task was failed with no DLQ
-- record at all. Position and content together still make a redelivered record a no-op.
-- The hashes keep the index entries small whatever the record's size, and coalesce
-- keeps a NULL key or value apart from an empty one.
CREATE UNIQUE INDEX dead_letters_source_record_unique ON dead_letters (
    source_topic,
    source_partition,
    source_offset,
    coalesce(sha256(record_key), ''::bytea),
    coalesce(sha256(record_value), ''::bytea)
);
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_source_unique;
