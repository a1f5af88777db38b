-- 0010 · user_quarter_hours: one row per user per UTC quarter-hour they were seen in.
--
-- Replaces user_activity (one row per user, quarter-hour AND event name) as the source
-- of DAU/WAU/MAU and retention. The event names of the quarter-hour are kept as a
-- small set in the row, so the active-event set is still chosen at query time
-- (hasAny(event_names, [...])) while the table grows with active users x active
-- quarter-hours, not with events or event names. Quarter-hours, not days: every
-- timezone's offset is a multiple of 15 minutes, so a calendar day in any zone is an
-- exact union of buckets and --timezone needs no rebuild. Rows of different inserts
-- fold as parts merge (set union), which also makes a replayed insert harmless.
CREATE TABLE IF NOT EXISTS user_quarter_hours
(
    app         LowCardinality(String) COMMENT 'Application (service.name)',
    bucket      DateTime('UTC') COMMENT 'Start of the UTC quarter-hour; toDate(bucket, ''Zone/Name'') is the day in that zone',
    user_key    UInt64 COMMENT 'cityHash64 of the user hash (events.user_key); anonymous events are not here',
    event_names SimpleAggregateFunction(groupUniqArrayArray, Array(String)) CODEC(ZSTD(1)) COMMENT 'Names of the events the user had in the quarter-hour (a set): hasAny(event_names, [''a'',''b'']) picks active users for an active-event set'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (app, bucket, user_key)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'Per app, UTC quarter-hour and user: that the user was seen, and with which events. DAU/WAU/MAU and retention are computed from here. Filled by user_quarter_hours_mv';

CREATE MATERIALIZED VIEW IF NOT EXISTS user_quarter_hours_mv TO user_quarter_hours
(
    app         LowCardinality(String) COMMENT 'events.app',
    bucket      DateTime('UTC') COMMENT 'events.event_time rounded down to the UTC quarter-hour',
    user_key    UInt64 COMMENT 'events.user_key (never 0 here)',
    event_names Array(String) COMMENT 'Distinct events.event of the user in the quarter-hour, in one insert'
)
AS SELECT
    app,
    toDateTime(toStartOfFifteenMinutes(event_time), 'UTC') AS bucket,
    user_key,
    groupUniqArray(toString(event)) AS event_names
FROM events
WHERE user_key != 0
GROUP BY app, bucket, user_key
COMMENT 'Feeds user_quarter_hours from every insert into events (identified users only)';

-- Existing data moves server-side from user_activity (set union: running it twice is harmless).
INSERT INTO user_quarter_hours (app, bucket, user_key, event_names)
SELECT app, bucket, user_key, groupUniqArray(toString(event))
FROM user_activity
GROUP BY app, bucket, user_key;
