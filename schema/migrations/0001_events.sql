-- 0001 · events: one row per accepted growth event (an OTLP log record that named an event).
--
-- Sorted for the questions it serves: one app, a range of days, some events, then users.
-- Partitioned by UTC month so old months can be dropped or moved as a whole.
-- `user_key` is a UInt64 digest of `user_hash`: joins and distinct counts on it are
-- 2-3x faster than on the 64-character hash, which is kept for erasure and for analysts.
CREATE TABLE IF NOT EXISTS events
(
    app         LowCardinality(String) COMMENT 'Application that sent the event: OTLP resource attribute service.name',
    event       LowCardinality(String) COMMENT 'Event name: LogRecord.event_name, else the attribute event.name',
    event_time  DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)) COMMENT 'When the event happened (UTC): time_unix_nano, else observed_time_unix_nano, else receive time',
    day         Date DEFAULT toDate(event_time) COMMENT 'UTC calendar day of event_time; for another zone use toDate(event_time, ''Zone/Name'')',
    user_hash   String CODEC(ZSTD(1)) COMMENT 'Hashed user id, 64 lowercase hex (HMAC-SHA256 with the deployment key, or SHA-256); empty for anonymous events. A raw id is never stored',
    user_key    UInt64 DEFAULT if(user_hash = '', 0, cityHash64(user_hash)) COMMENT 'cityHash64(user_hash), 0 for anonymous events: the compact key every user metric counts',
    source      LowCardinality(String) COMMENT 'Where the event came from (attribute source), e.g. messenger, form, pwa; empty when not sent',
    properties  Map(LowCardinality(String), String) CODEC(ZSTD(1)) COMMENT 'Every other attribute of the record, as text: properties[''category'']',
    numbers     Map(LowCardinality(String), Float64) CODEC(ZSTD(1)) COMMENT 'The numeric attributes again, as numbers: sum(numbers[''amount''])',
    received_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)) COMMENT 'When the collector received the record (UTC)'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (app, day, event, user_key)
COMMENT 'Growth events: one row per accepted OTLP log record that named an event. Raw user ids are never stored';
