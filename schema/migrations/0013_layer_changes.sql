-- 0013 · layer_changes: how many rows inserts wrote into the activity and first-seen
-- tables, per app, table and UTC quarter-hour.
--
-- The aggregator keeps each past day's active users and new users in memory and asks
-- ClickHouse for a day again only when that day changed (aggregator/src/day_sets.rs):
-- a refresh then reads today, the days late events touched and this small table,
-- instead of every row of the reported windows and cohorts. The counts only grow
-- (every insert adds, merges sum), so a changed count is a changed day; the numbers
-- themselves mean nothing else. Like the other view tables it drops a replayed
-- insert (deduplication window, migration 0005). Quarter-hours, like the tables they describe, so any --timezone maps
-- them to its own calendar days.
CREATE TABLE IF NOT EXISTS layer_changes
(
    app    LowCardinality(String) COMMENT 'Application (service.name)',
    layer  LowCardinality(String) COMMENT 'The table written: user_quarter_hours (activity) or first_seen_changes (first-seen, by first_bucket)',
    bucket DateTime('UTC') COMMENT 'UTC quarter-hour of the rows written (user_quarter_hours.bucket, first_seen_changes.first_bucket)',
    rows   UInt64 COMMENT 'Rows written there, ever (summed when parts merge): a change marker, not a metric'
)
ENGINE = SummingMergeTree(rows)
PARTITION BY toYYYYMM(bucket)
ORDER BY (app, layer, bucket)
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'Per app, layer table and UTC quarter-hour: rows ever written. The aggregator re-reads a day of users only when its count changed. Filled by layer_changes_activity_mv and layer_changes_first_seen_mv';

CREATE MATERIALIZED VIEW IF NOT EXISTS layer_changes_activity_mv TO layer_changes
(
    app    LowCardinality(String) COMMENT 'user_quarter_hours.app',
    layer  LowCardinality(String) COMMENT 'Always user_quarter_hours',
    bucket DateTime('UTC') COMMENT 'user_quarter_hours.bucket',
    rows   UInt64 COMMENT 'Rows of the insert in the quarter-hour'
)
AS SELECT app, 'user_quarter_hours' AS layer, bucket, count() AS rows
FROM user_quarter_hours
GROUP BY app, bucket
COMMENT 'Feeds layer_changes from every insert into user_quarter_hours';

CREATE MATERIALIZED VIEW IF NOT EXISTS layer_changes_first_seen_mv TO layer_changes
(
    app    LowCardinality(String) COMMENT 'first_seen_changes.app',
    layer  LowCardinality(String) COMMENT 'Always first_seen_changes',
    bucket DateTime('UTC') COMMENT 'first_seen_changes.first_bucket',
    rows   UInt64 COMMENT 'Rows (+1 and -1) of the insert in the quarter-hour'
)
AS SELECT app, 'first_seen_changes' AS layer, first_bucket AS bucket, count() AS rows
FROM first_seen_changes
GROUP BY app, first_bucket
COMMENT 'Feeds layer_changes from every insert into first_seen_changes';

-- Existing data: count what is there (running it twice doubles the counts, which
-- only marks every day changed once more).
INSERT INTO layer_changes (app, layer, bucket, rows)
SELECT app, 'user_quarter_hours', bucket, count()
FROM user_quarter_hours
GROUP BY app, bucket;

INSERT INTO layer_changes (app, layer, bucket, rows)
SELECT app, 'first_seen_changes', first_bucket, count()
FROM first_seen_changes
GROUP BY app, first_bucket;
