-- 0012 · retire the first views: user_quarter_hours and first_seen_changes (0010, 0011)
-- now hold everything the aggregator reads, with the old data moved in.
--
-- Their views stop (an insert no longer pays for them); the tables stay, frozen, for
-- analysts' queries written against them, and may be dropped by the operator.
DROP VIEW IF EXISTS user_activity_mv;
DROP VIEW IF EXISTS user_first_seen_mv;
ALTER TABLE user_activity MODIFY COMMENT 'Retired by migration 0012 (no longer filled): per app, quarter-hour, event and user activity up to then. Read user_quarter_hours instead';
ALTER TABLE user_first_seen MODIFY COMMENT 'Retired by migration 0012 (no longer filled): per app and user first/last event time up to then. Read first_seen_changes / first_seen_latest instead; events.user_hash finds a user';
