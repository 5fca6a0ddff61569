-- Sharded Generate: a large job becomes a parent with shard children.
--
-- The parent is never claimed: its shards are ordinary jobs (claimed, leased,
-- retried and released like any other) and move it along in their own
-- transactions: the first shard to start starts it, every committed chunk
-- adds to its progress, the last shard to succeed completes it, and a shard
-- that fails for good fails it and stops its siblings.

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('GENERATE', 'GENERATE_SHARD', 'INGEST', 'EXPORT'));

ALTER TABLE jobs
    ADD COLUMN parent_id   uuid REFERENCES jobs (id) ON DELETE CASCADE,
    ADD COLUMN shard_count integer NOT NULL DEFAULT 0,  -- on a parent: its number of shards
    ADD COLUMN shards_done integer NOT NULL DEFAULT 0;  -- on a parent: shards that succeeded

CREATE INDEX jobs_parent_idx ON jobs (parent_id) WHERE parent_id IS NOT NULL;
