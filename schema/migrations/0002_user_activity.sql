-- 0002 · user_activity: which user did which event in which quarter-hour.
--
-- The source of DAU/WAU/MAU and of day-N retention. Buckets are quarter-hours in UTC
-- rather than days, so that a calendar day in ANY timezone (every zone's offset is a
-- multiple of 15 minutes) is an exact union of buckets: an aggregator started with
-- another --timezone reports that zone's numbers exactly, with no rebuild. A growth
-- app's user is active in a handful of quarter-hours a day, so the view grows with
-- users x active quarter-hours, not with events.
CREATE TABLE IF NOT EXISTS user_activity
(
    app      LowCardinality(String) COMMENT 'Application (service.name)',
    bucket   DateTime('UTC') COMMENT 'Start of the UTC quarter-hour the events fell in; toDate(bucket, ''Zone/Name'') is the day in that zone',
    event    LowCardinality(String) COMMENT 'Event name, so that the active-event set can be chosen at query time',
    user_key UInt64 COMMENT 'cityHash64 of the user hash (events.user_key); anonymous events are not here',
    events   UInt64 COMMENT 'How many such events the user had in the bucket (summed when parts merge)'
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(bucket)
ORDER BY (app, bucket, event, user_key)
COMMENT 'Per app, quarter-hour, event and user: the activity DAU and retention are computed from. Filled by user_activity_mv';

CREATE MATERIALIZED VIEW IF NOT EXISTS user_activity_mv TO user_activity
(
    app      LowCardinality(String) COMMENT 'events.app',
    bucket   DateTime('UTC') COMMENT 'events.event_time rounded down to the UTC quarter-hour',
    event    LowCardinality(String) COMMENT 'events.event',
    user_key UInt64 COMMENT 'events.user_key (never 0 here)',
    events   UInt64 COMMENT 'Events of this user in the bucket, in one insert'
)
AS SELECT
    app,
    toDateTime(toStartOfFifteenMinutes(event_time), 'UTC') AS bucket,
    event,
    user_key,
    count() AS events
FROM events
WHERE user_key != 0
GROUP BY app, bucket, event, user_key
COMMENT 'Feeds user_activity from every insert into events (identified users only)';
