-- Sellers and their ads: the input of moderation.
CREATE TABLE sellers (
    id          BIGSERIAL PRIMARY KEY,
    is_verified BOOLEAN     NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE ads (
    id          BIGSERIAL PRIMARY KEY,
    seller_id   BIGINT      NOT NULL REFERENCES sellers (id),
    name        TEXT        NOT NULL,
    description TEXT        NOT NULL,
    category    INTEGER     NOT NULL,
    images_qty  INTEGER     NOT NULL CHECK (images_qty BETWEEN 0 AND 10),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX ads_seller_id_idx ON ads (seller_id);

-- One row per moderation task. It is also the task's outbox: published_at stays
-- NULL until Kafka acknowledged the task, and the relay republishes such rows.
-- item_id has no foreign key on purpose: deleting an ad keeps its history, and
-- the consumer records "Ad not found" against it.
CREATE TABLE moderation_results (
    id              BIGSERIAL PRIMARY KEY,
    item_id         BIGINT      NOT NULL CHECK (item_id > 0),
    status          TEXT        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'completed', 'failed')),
    is_violation    BOOLEAN,
    probability     DOUBLE PRECISION CHECK (probability BETWEEN 0 AND 1),
    model_version   TEXT,
    error_message   TEXT,
    attempts        INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    first_failure_at TIMESTAMPTZ,
    last_failure_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at    TIMESTAMPTZ,
    processed_at    TIMESTAMPTZ,
    -- A finished task carries its outcome, a pending one none.
    CONSTRAINT completed_has_verdict CHECK (
        status <> 'completed' OR (is_violation IS NOT NULL AND probability IS NOT NULL
                                  AND processed_at IS NOT NULL)
    ),
    CONSTRAINT failed_has_reason CHECK (
        status <> 'failed' OR (error_message IS NOT NULL AND processed_at IS NOT NULL)
    )
);

CREATE INDEX moderation_results_item_id_idx ON moderation_results (item_id);
-- The relay's sweep reads only tasks still waiting for their first publish.
CREATE INDEX moderation_results_unpublished_idx ON moderation_results (created_at)
    WHERE published_at IS NULL AND status = 'pending';

-- The dead-letter outbox. A record is written here in the same transaction that
-- fails its task, and published to the DLQ topic afterwards; the unique keys are
-- what stop a redelivered record from being dead-lettered twice.
CREATE TABLE dead_letters (
    id               BIGSERIAL PRIMARY KEY,
    task_id          BIGINT REFERENCES moderation_results (id),
    source_topic     TEXT        NOT NULL,
    source_partition INTEGER     NOT NULL,
    source_offset    BIGINT      NOT NULL,
    record_key       BYTEA,
    record_value     BYTEA,
    headers          JSONB       NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at     TIMESTAMPTZ,
    CONSTRAINT dead_letters_source_unique UNIQUE (source_topic, source_partition, source_offset)
);

CREATE UNIQUE INDEX dead_letters_task_unique ON dead_letters (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX dead_letters_unpublished_idx ON dead_letters (created_at) WHERE published_at IS NULL;
