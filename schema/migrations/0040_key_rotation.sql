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

-- person_keys with the rotation links (docs/contract.md, "People" and "Rotating the
-- key"): the identifies and merges are read with every previous hash replaced by its
-- current one (rot), then resolved as in 0030; a previous key belongs to its current
-- key's person. The same rules as aggregator/src/identity.rs.
CREATE OR REPLACE VIEW person_keys
(
    app        LowCardinality(String) COMMENT 'Application (service.name)',
    user_key   UInt64 COMMENT 'A user key (events.user_key) linked to at least one other hash',
    person_key UInt64 COMMENT 'The person it belongs to: the user_key of the known hash that stands for the person'
)
AS WITH RECURSIVE
    -- previous key -> current key (a user's hashes are alike in every app, so one map
    -- serves all apps; computed once per query as a scalar).
    (SELECT mapFromArrays(groupArray(old), groupArray(cur)) FROM (
        SELECT linked_key AS old, min(known_key) AS cur FROM identity_links
        WHERE kind = 'rotation' AND linked_key != known_key GROUP BY linked_key)) AS rmap,
    links AS (
        SELECT app, kind,
               if(mapContains(rmap, linked_key), rmap[linked_key], linked_key) AS linked_key,
               if(mapContains(rmap, known_key), rmap[known_key], known_key) AS known_key,
               event_time
        FROM identity_links
        WHERE kind IN ('identify', 'merge')
    ),
    merges AS (
        SELECT app, linked_key, known_key FROM links
        WHERE kind = 'merge' AND linked_key != known_key
    ),
    edges AS (
        SELECT DISTINCT app, a, b FROM (
            SELECT app, linked_key AS a, known_key AS b FROM merges
            UNION ALL SELECT app, known_key AS a, linked_key AS b FROM merges
        )
    ),
    reach AS (
        SELECT DISTINCT app, a AS k, a AS m, [a] AS path FROM edges
        UNION ALL
        SELECT r.app, r.k, e.b, arrayPushBack(r.path, e.b)
        FROM reach AS r INNER JOIN edges AS e ON e.app = r.app AND e.a = r.m
        WHERE NOT has(r.path, e.b)
    ),
    away AS (SELECT DISTINCT app, linked_key AS k, toUInt8(1) AS merged_away FROM merges),
    merged AS (
        SELECT r.app AS app, r.k AS user_key,
               if(countIf(w.merged_away = 0) > 0, minIf(r.m, w.merged_away = 0), min(r.m)) AS person_key
        FROM reach AS r LEFT JOIN away AS w ON w.app = r.app AND w.k = r.m
        GROUP BY r.app, r.k
    ),
    known AS (
        SELECT DISTINCT app, k FROM (
            SELECT app, known_key AS k FROM links
            UNION ALL SELECT app, linked_key AS k FROM merges
        )
    ),
    claims AS (
        SELECT app, linked_key AS user_key, argMin(known_key, (event_time, known_key)) AS owner
        FROM links
        WHERE kind = 'identify' AND linked_key != known_key
          AND (app, linked_key) NOT IN (SELECT app, k FROM known)
        GROUP BY app, linked_key
    ),
    -- A previous key is owned like an anonymous key: by its current key's owner, else
    -- by its current key.
    owners AS (
        SELECT app, user_key, owner FROM claims
        UNION ALL
        SELECT r.app AS app, r.old AS user_key, if(c.owner = 0, r.cur, c.owner) AS owner
        FROM (
            SELECT app, linked_key AS old, min(known_key) AS cur FROM identity_links
            WHERE kind = 'rotation' AND linked_key != known_key GROUP BY app, linked_key
        ) AS r LEFT JOIN claims AS c ON c.app = r.app AND c.user_key = r.cur
    )
SELECT app, user_key, person_key FROM merged
UNION ALL
SELECT DISTINCT o.app, o.owner, if(m.person_key = 0, o.owner, m.person_key)
FROM owners AS o LEFT JOIN merged AS m ON m.app = o.app AND m.user_key = o.owner
WHERE m.person_key = 0
UNION ALL
SELECT o.app, o.user_key, if(m.person_key = 0, o.owner, m.person_key)
FROM owners AS o LEFT JOIN merged AS m ON m.app = o.app AND m.user_key = o.owner
COMMENT 'Per app: every user_key that belongs to a person of two or more hashes, and that person''s key (docs/contract.md, "People"; rotation links: "Rotating the key"). Keys not here are their own person. Computed from identity_links at each query';
