-- 0011 · first_seen_changes + first_seen_latest: each user's first quarter-hour, readable
-- by first-seen range and exact when a late event moves it earlier.
--
-- A refresh needs the users whose first event falls in the reported cohorts: it reads
-- first_seen_changes by (app, first_bucket) range, so its cost follows the cohorts'
-- days, not every user ever seen. The row of a user cannot simply be re-sorted when a
-- late event moves their first event earlier, so the table is a log of changes: at
-- each insert, first_seen_changes_mv looks up the users of the insert in
-- first_seen_latest (by primary key) and writes +1 at a user's new first quarter-hour,
-- and -1 at the old one when a late event moved it. Readers keep the (user, bucket)
-- pairs whose signs sum above 0. first_seen_latest (min per user, fed from the +1
-- rows by first_seen_latest_mv) is the lookup; a replayed insert finds its users
-- already known and writes nothing.
CREATE TABLE IF NOT EXISTS first_seen_latest
(
    app          LowCardinality(String) COMMENT 'Application (service.name)',
    user_key     UInt64 COMMENT 'cityHash64 of the user hash (events.user_key)',
    first_bucket SimpleAggregateFunction(min, DateTime('UTC')) COMMENT 'UTC quarter-hour of the first event of any kind; read with min() GROUP BY app, user_key'
)
ENGINE = AggregatingMergeTree
ORDER BY (app, user_key)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 1024
COMMENT 'Per app and user: the quarter-hour of the first event (folded by min). The lookup first_seen_changes_mv uses; for a cohort range read first_seen_changes. Filled by first_seen_latest_mv';

CREATE TABLE IF NOT EXISTS first_seen_changes
(
    app          LowCardinality(String) COMMENT 'Application (service.name)',
    first_bucket DateTime('UTC') COMMENT 'A first-seen UTC quarter-hour of the user; the cohort is toDate(first_bucket, ''Zone/Name'')',
    user_key     UInt64 COMMENT 'cityHash64 of the user hash (events.user_key)',
    sign         Int8 COMMENT '+1: the user was first seen here; -1: a late event moved the first event earlier, this quarter-hour no longer is. Keep (user_key, first_bucket) pairs with sum(sign) > 0'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(first_bucket)
ORDER BY (app, first_bucket, user_key)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'Per app: when each user was first seen, as a log of changes sorted by first-seen time, so cohorts are read by range. Filled by first_seen_changes_mv';

CREATE MATERIALIZED VIEW IF NOT EXISTS first_seen_latest_mv TO first_seen_latest
(
    app          LowCardinality(String) COMMENT 'first_seen_changes.app',
    user_key     UInt64 COMMENT 'first_seen_changes.user_key',
    first_bucket DateTime('UTC') COMMENT 'first_seen_changes.first_bucket of a +1 row'
)
AS SELECT app, user_key, first_bucket
FROM first_seen_changes
WHERE sign = 1
COMMENT 'Feeds first_seen_latest from the +1 rows of first_seen_changes';

CREATE MATERIALIZED VIEW IF NOT EXISTS first_seen_changes_mv TO first_seen_changes
(
    app          LowCardinality(String) COMMENT 'events.app',
    first_bucket DateTime('UTC') COMMENT 'New (+1) or superseded (-1) first-seen quarter-hour',
    user_key     UInt64 COMMENT 'events.user_key (never 0 here)',
    sign         Int8 COMMENT '+1 or -1'
)
AS SELECT app, tupleElement(change, 1) AS first_bucket, user_key, tupleElement(change, 2) AS sign
FROM
(
    SELECT
        inserted.app AS app,
        inserted.user_key AS user_key,
        arrayJoin(if(known.user_key = 0,
                     [(inserted.first_bucket, toInt8(1))],
                     [(inserted.first_bucket, toInt8(1)), (known.first_bucket, toInt8(-1))])) AS change
    FROM
    (
        SELECT app, user_key, toDateTime(toStartOfFifteenMinutes(min(event_time)), 'UTC') AS first_bucket
        FROM events
        WHERE user_key != 0
        GROUP BY app, user_key
    ) AS inserted
    LEFT JOIN
    (
        -- Only the users of this insert: `events` here is the inserted block.
        SELECT app, user_key, min(first_bucket) AS first_bucket
        FROM first_seen_latest
        WHERE user_key IN (SELECT user_key FROM events WHERE user_key != 0)
        GROUP BY app, user_key
    ) AS known
    ON inserted.app = known.app AND inserted.user_key = known.user_key
    WHERE known.user_key = 0 OR inserted.first_bucket < known.first_bucket
)
COMMENT 'Feeds first_seen_changes from every insert into events: new users and first events moved earlier';

-- Existing users move server-side from user_first_seen, by the same rule (running it
-- twice writes nothing the second time).
INSERT INTO first_seen_changes (app, first_bucket, user_key, sign)
SELECT app, tupleElement(change, 1), user_key, tupleElement(change, 2)
FROM
(
    SELECT
        previous.app AS app,
        previous.user_key AS user_key,
        arrayJoin(if(known.user_key = 0,
                     [(previous.first_bucket, toInt8(1))],
                     [(previous.first_bucket, toInt8(1)), (known.first_bucket, toInt8(-1))])) AS change
    FROM
    (
        SELECT app, user_key, toDateTime(toStartOfFifteenMinutes(min(first_seen)), 'UTC') AS first_bucket
        FROM user_first_seen
        GROUP BY app, user_key
    ) AS previous
    LEFT JOIN
    (
        SELECT app, user_key, min(first_bucket) AS first_bucket
        FROM first_seen_latest
        GROUP BY app, user_key
    ) AS known
    ON previous.app = known.app AND previous.user_key = known.user_key
    WHERE known.user_key = 0 OR previous.first_bucket < known.first_bucket
);
