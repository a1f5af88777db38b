-- 0003 · user_first_seen: when each user was first (and last) seen in each app.
--
-- A user's cohort is the day, in the reporting timezone, of first_seen. Rows from
-- different inserts are folded by min/max as parts merge; read with GROUP BY
-- (app, user_key) and min(first_seen) to see the folded value before merges finish.
CREATE TABLE IF NOT EXISTS user_first_seen
(
    app        LowCardinality(String) COMMENT 'Application (service.name)',
    user_key   UInt64 COMMENT 'cityHash64 of the user hash (events.user_key)',
    user_hash  SimpleAggregateFunction(any, String) COMMENT 'The user hash itself, for joins by analysts and for erasure',
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')) COMMENT 'Time of the first event of any kind: the cohort is toDate(first_seen, ''Zone/Name'')',
    last_seen  SimpleAggregateFunction(max, DateTime64(3, 'UTC')) COMMENT 'Time of the latest event of any kind'
)
ENGINE = AggregatingMergeTree
ORDER BY (app, user_key)
COMMENT 'Per app and user: first and last event time. Cohorts are read from here. Filled by user_first_seen_mv';

CREATE MATERIALIZED VIEW IF NOT EXISTS user_first_seen_mv TO user_first_seen
(
    app        LowCardinality(String) COMMENT 'events.app',
    user_key   UInt64 COMMENT 'events.user_key (never 0 here)',
    user_hash  String COMMENT 'events.user_hash',
    first_seen DateTime64(3, 'UTC') COMMENT 'Earliest events.event_time of the user in one insert',
    last_seen  DateTime64(3, 'UTC') COMMENT 'Latest events.event_time of the user in one insert'
)
AS SELECT
    app,
    user_key,
    any(user_hash) AS user_hash,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM events
WHERE user_key != 0
GROUP BY app, user_key
COMMENT 'Feeds user_first_seen from every insert into events (identified users only)';
