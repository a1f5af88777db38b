-- 0005 · deduplication windows: a batch inserted twice is stored once, views included.
--
-- The collector gives every insert an insert_deduplication_token derived from the
-- range of its spool it came from, so a batch replayed after a crash or a lost answer
-- carries the same token. A non-replicated MergeTree deduplicates only with a window:
-- the hashes of its last N inserted blocks are kept. The window is needed on `events`
-- AND on every table a materialized view writes into, and the insert must also set
-- deduplicate_blocks_in_dependent_materialized_views=1: with the token alone, `events`
-- drops the repeated block while the views still count it a second time.
-- 1000 blocks is many minutes of inserts at one a second; a replay happens at start-up.
ALTER TABLE events MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE user_activity MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE user_first_seen MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE event_counts MODIFY SETTING non_replicated_deduplication_window = 1000;
