-- 0030 · identity_links + person_keys: people, not ids (docs/contract.md, "People").
--
-- An `identify` event (user = the known id, attribute anonymous.hash = the earlier
-- anonymous id) or a `merge` event (user = the surviving known id, attribute
-- merged.hash = the known id merged into it) links two hashes of one app. The links
-- are few (one per sign-up or merge), so they are kept apart from the events, fed by
-- a view, and read whole or by insert time: the aggregator reads only the links
-- inserted since its last refresh (inserted_at) and resolves them in memory; analysts
-- read the resolution from the view person_keys. The collector hashes anonymous.id and
-- merged.id into anonymous.hash and merged.hash, so no raw id reaches this table.
-- A repeated link (a replayed insert, an identify sent twice) changes nothing: the
-- rules read the links as a set.
CREATE TABLE IF NOT EXISTS identity_links
(
    app         LowCardinality(String) COMMENT 'Application (service.name): identity is per app',
    kind        LowCardinality(String) COMMENT 'identify (linked = an anonymous hash) or merge (linked = a known hash merged into the known one)',
    linked_key  UInt64 COMMENT 'cityHash64(linked_hash), as events.user_key',
    linked_hash String CODEC(ZSTD(1)) COMMENT 'The anonymous hash (identify: properties[''anonymous.hash'']) or the merged known hash (merge: properties[''merged.hash''])',
    known_key   UInt64 COMMENT 'events.user_key of the identify or merge event: the known id',
    known_hash  String CODEC(ZSTD(1)) COMMENT 'events.user_hash of the identify or merge event',
    event_time  DateTime64(3, 'UTC') COMMENT 'events.event_time of the identify or merge event: the earliest identify of an anonymous hash wins it',
    inserted_at DateTime64(3, 'UTC') COMMENT 'When the link was written (server time at insert): the aggregator reads the links inserted since its last refresh'
)
ENGINE = MergeTree
ORDER BY (app, linked_key, known_key, event_time)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'Per app: every identify (anonymous hash -> known hash) and merge (known hash -> known hash) ever sent. The people rules (docs/contract.md) read it as a set; person_keys resolves it. Filled by identity_links_mv';

CREATE MATERIALIZED VIEW IF NOT EXISTS identity_links_mv TO identity_links
(
    app         LowCardinality(String) COMMENT 'events.app',
    kind        LowCardinality(String) COMMENT 'events.event: identify or merge',
    linked_key  UInt64 COMMENT 'cityHash64(linked_hash)',
    linked_hash String COMMENT 'properties[''anonymous.hash''] of an identify, properties[''merged.hash''] of a merge',
    known_key   UInt64 COMMENT 'events.user_key (never 0 here)',
    known_hash  String COMMENT 'events.user_hash',
    event_time  DateTime64(3, 'UTC') COMMENT 'events.event_time',
    inserted_at DateTime64(3, 'UTC') COMMENT 'now64(3) at insert'
)
AS SELECT
    app,
    toString(event) AS kind,
    cityHash64(linked_hash) AS linked_key,
    if(event = 'identify', properties['anonymous.hash'], properties['merged.hash']) AS linked_hash,
    user_key AS known_key,
    user_hash AS known_hash,
    event_time,
    now64(3) AS inserted_at
FROM events
WHERE event IN ('identify', 'merge')
  AND user_key != 0
  AND match(linked_hash, '^[0-9a-f]{64}$')
  AND linked_hash != user_hash
COMMENT 'Feeds identity_links from every insert into events: identify and merge events with a valid linked hash';

-- The rules of docs/contract.md ("People"), in SQL: every user_key that belongs to a
-- person of more than one hash, with that person's key. A key not listed is its own
-- person. Analysts count people with
--   uniqExact(if(p.person_key = 0, e.user_key, p.person_key))
--   FROM events AS e LEFT JOIN person_keys AS p ON p.app = e.app AND p.user_key = e.user_key
-- The merge components are found by walking simple paths (a recursive CTE), fine for
-- the sparse graphs merges make; it reads identity_links whole at every query.
CREATE VIEW IF NOT EXISTS person_keys
(
    app        LowCardinality(String) COMMENT 'Application (service.name)',
    user_key   UInt64 COMMENT 'A user key (events.user_key) linked to at least one other hash',
    person_key UInt64 COMMENT 'The person it belongs to: the user_key of the known hash that stands for the person'
)
AS WITH RECURSIVE
    merges AS (
        SELECT app, linked_key, known_key FROM identity_links
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
            SELECT app, known_key AS k FROM identity_links
            UNION ALL SELECT app, linked_key AS k FROM merges
        )
    ),
    owners AS (
        SELECT app, linked_key AS user_key, argMin(known_key, (event_time, known_key)) AS owner
        FROM identity_links
        WHERE kind = 'identify' AND linked_key != known_key
          AND (app, linked_key) NOT IN (SELECT app, k FROM known)
        GROUP BY app, linked_key
    )
SELECT app, user_key, person_key FROM merged
UNION ALL
SELECT DISTINCT o.app, o.owner, if(m.person_key = 0, o.owner, m.person_key)
FROM owners AS o LEFT JOIN merged AS m ON m.app = o.app AND m.user_key = o.owner
WHERE m.person_key = 0
UNION ALL
SELECT o.app, o.user_key, if(m.person_key = 0, o.owner, m.person_key)
FROM owners AS o LEFT JOIN merged AS m ON m.app = o.app AND m.user_key = o.owner
COMMENT 'Per app: every user_key that belongs to a person of two or more hashes, and that person''s key (docs/contract.md, "People"). Keys not here are their own person. Computed from identity_links at each query';
