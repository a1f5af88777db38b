-- ClickHouse's own Native block for the three rows of native::tests (collector/src/native.rs):
-- curl -s http://127.0.0.1:8123/ --data-binary @collector/testdata/native_block.sql | xxd -p | tr -d '\n' > collector/testdata/native_block.hex
SELECT toLowCardinality(app) app, toLowCardinality(event) event, toDateTime64(fromUnixTimestamp64Milli(toInt64(1764633600123)), 3, 'UTC') event_time, repeat('ab', 32) user_hash, toLowCardinality(source) source,
 CAST(props AS Map(String, String)) properties, CAST(nums AS Map(String, Float64)) numbers,
 toDateTime64(fromUnixTimestamp64Milli(toInt64(1764633601000)), 3, 'UTC') received_at,
 if(n = 3, repeat('cd', 32), '') user_hash_previous
FROM (SELECT * FROM values('app String, event String, source String, props Map(String,String), nums Map(String, Float64), n UInt8',
 ('finbrain','expense_logged','form', map('category','groceries','currency','EUR','bench.seq','0000000000'), map('amount', 245.86), 1),
 ('finbrain','expense_edited','', map('category','groceries','currency','EUR','bench.seq','0000000001'), map(), 2),
 ('finbrain','report_requested','pwa', map('category','travel','currency','EUR','bench.seq','0000000002','note','lunch with team'), map(), 3)) ORDER BY n)
FORMAT Native
