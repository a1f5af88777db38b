-- 0040 · key rotation: previous → current hash pairs of an overlap (docs/contract.md,
-- "Rotating the key").
--
-- During a rotation's overlap the collector knows two keys. The first event of a user
-- it sees (per process) carries the user hashed with the previous key in the column
-- user_hash_previous (from the SDK's attribute user.hash.previous, or computed from a
-- raw user.id); it is never a property. identity_rotations_mv turns each into an
-- identity_links row of kind 'rotation' (linked = the previous hash, known = the
-- current one): the people rules then count both keys as one person, and
-- `growth-collector rotate-keys finish` reads the pairs as its map, rewrites every
-- stored previous hash, clears user_hash_previous and deletes the rotation links.
ALTER TABLE events ADD COLUMN IF NOT EXISTS user_hash_previous String DEFAULT '' CODEC(ZSTD(1)) COMMENT 'Only during a key rotation''s overlap, on the first event of a user per collector: the user hashed with the previous key (64 lowercase hex); else empty. Feeds identity_links (kind rotation); cleared by rotate-keys finish';

CREATE MATERIALIZED VIEW IF NOT EXISTS identity_rotations_mv TO identity_links
(
    app         LowCardinality(String) COMMENT 'events.app',
    kind        LowCardinality(String) COMMENT 'rotation',
    linked_key  UInt64 COMMENT 'cityHash64(user_hash_previous)',
    linked_hash String COMMENT 'events.user_hash_previous: the previous key''s hash',
    known_key   UInt64 COMMENT 'events.user_key: the current key''s hash',
    known_hash  String COMMENT 'events.user_hash',
    event_time  DateTime64(3, 'UTC') COMMENT 'events.event_time',
    inserted_at DateTime64(3, 'UTC') COMMENT 'now64(3) at insert'
)
AS SELECT
    app,
    'rotation' AS kind,
    cityHash64(user_hash_previous) AS linked_key,
    user_hash_previous AS linked_hash,
    user_key AS known_key,
    user_hash AS known_hash,
    event_time,
    now64(3) AS inserted_at
FROM events
WHERE user_hash_previous != ''
  AND user_key != 0
  AND match(user_hash_previous, '^[0-9a-f]{64}$')
  AND user_hash_previous != user_hash
COMMENT 'Feeds identity_links with the rotation pairs (previous hash -> current hash) of a key rotation''s overlap';

-- The journal of rotate-keys finish: one row per table, partition and step done, so
-- that a run after a crash resumes where the last one stopped. Emptied at the end.
CREATE TABLE IF NOT EXISTS key_rotation_progress
(
    tbl          String COMMENT 'Table rewritten',
    partition_id String COMMENT 'Its partition (system.parts.partition_id)',
    step         LowCardinality(String) COMMENT 'staged (rows holds the mapped rows copied aside), moved (they are in the table), done (the previous rows deleted)',
    rows         UInt64 COMMENT 'Rows staged',
    at           DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When the step ended'
)
ENGINE = MergeTree
ORDER BY (tbl, partition_id, step)
COMMENT 'rotate-keys finish: steps done, per table and partition (docs/contract.md, "Rotating the key")';
