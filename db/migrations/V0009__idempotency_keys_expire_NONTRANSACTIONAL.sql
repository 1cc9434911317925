-- Idempotency keys now expire: each key's row says when (`expires_at`, set from
-- IDEMPOTENCY_KEY_TTL_S when the key is written), so its lifetime is the one it was
-- given, whatever the setting of the process that later reads or deletes it. A request
-- may take over an expired key, and the relay deletes expired keys, the soonest
-- expired first, through the index below.
--
-- NONTRANSACTIONAL, as V0008 and for the same reasons (see there): pgmigrate runs it
-- statement by statement, so that the index is built CONCURRENTLY while keyed requests
-- go on, and every statement may run again after an interrupted run.
--
-- The default is evaluated once for the rows already there (a day from now: the
-- setting's default, and no key expires sooner than its writer could have known), so
-- adding the column changes only the catalogue, under a brief lock. Keyed requests
-- queue behind the ALTER while it waits for that lock, so it waits 2 s at most, under
-- the 5 s statement timeout of those requests; a longer holder (a pg_dump, say) fails
-- the migration instead, and the next start tries again. The default stays for writers
-- that do not set the column: the processes of the release before, during a rolling
-- upgrade.
SET lock_timeout = '2s';
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ NOT NULL
    DEFAULT now() + interval '1 day';
SET lock_timeout = '1min';
DROP INDEX CONCURRENTLY IF EXISTS idempotency_keys_expires_at_idx;
CREATE INDEX CONCURRENTLY idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
