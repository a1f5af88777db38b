-- 0004 · event_counts: how many events of each name each app sent, per UTC quarter-hour.
--
-- Running totals are sum(events) over all buckets; daily counts in any timezone are
-- sums over toDate(bucket, 'Zone/Name'). Anonymous events count here too.
CREATE TABLE IF NOT EXISTS event_counts
(
    app    LowCardinality(String) COMMENT 'Application (service.name)',
    event  LowCardinality(String) COMMENT 'Event name',
    bucket DateTime('UTC') COMMENT 'Start of the UTC quarter-hour the events fell in',
    events UInt64 COMMENT 'Number of events (summed when parts merge)'
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(bucket)
ORDER BY (app, event, bucket)
COMMENT 'Per app, event and quarter-hour: event counts, anonymous events included. Filled by event_counts_mv';

CREATE MATERIALIZED VIEW IF NOT EXISTS event_counts_mv TO event_counts
(
    app    LowCardinality(String) COMMENT 'events.app',
    event  LowCardinality(String) COMMENT 'events.event',
    bucket DateTime('UTC') COMMENT 'events.event_time rounded down to the UTC quarter-hour',
    events UInt64 COMMENT 'Events in the bucket, in one insert'
)
AS SELECT
    app,
    event,
    toDateTime(toStartOfFifteenMinutes(event_time), 'UTC') AS bucket,
    count() AS events
FROM events
GROUP BY app, event, bucket
COMMENT 'Feeds event_counts from every insert into events, anonymous events included';
