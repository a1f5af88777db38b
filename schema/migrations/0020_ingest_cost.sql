-- 0020 · ingest cost: what ClickHouse pays per stored event (issue 5; docs/benchmarks.md,
-- "Where ClickHouse's CPU goes").
--
-- Map keys as plain String. Merging `events` cost ~4 CPU-s per million rows with
-- `Map(LowCardinality(String), …)` and ~2.2 with `Map(String, …)` (measured: the same
-- 1,024,000 finance events, six inserts, then their merge; the inserts cost about the
-- same either way, the parts get 5 % bigger). Analysts query the maps exactly as before (properties['category'],
-- sum(numbers['amount']), mapKeys); only DESCRIBE shows the new type. Existing parts
-- are rewritten server-side by the mutation; running it again changes nothing.
ALTER TABLE events MODIFY COLUMN properties Map(String, String) CODEC(ZSTD(1)) COMMENT 'Every other attribute of the record, as text: properties[''category'']';
ALTER TABLE events MODIFY COLUMN numbers Map(String, Float64) CODEC(ZSTD(1)) COMMENT 'The numeric attributes again, as numbers: sum(numbers[''amount''])';

-- Fewer merge levels. With the default selector a merge takes as few as 2-5 parts, so
-- a row inserted in a part of ~170k rows (one insert a second) is rewritten about
-- log5(part size / insert size) times before its month's part is whole; taking at
-- least 10 parts a merge rewrites it about log10(…) times, ~30 % less, for at most a
-- few dozen active parts a month (the limits that slow or refuse inserts are 1000 and
-- 3000). The materialized views' tables keep the default: they are read on every
-- refresh, and their merges fold rows.
ALTER TABLE events MODIFY SETTING min_parts_to_merge_at_once = 10;
