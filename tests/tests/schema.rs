//! The schema as analysts and operators meet it: migrations are idempotent, create
//! the database they are pointed at, keep databases apart, and explain every table
//! and column with a COMMENT.

use growth_e2e::{clickhouse, clickhouse_url, unique_database};
use growth_schema::migrate::{MIGRATIONS, migrate};

#[tokio::test]
async fn migrations_are_idempotent_commented_and_isolated() {
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    let (a, b) = (unique_database("schema_a"), unique_database("schema_b"));

    let first = migrate(&server, &a).await.expect("first migration");
    assert_eq!(first.applied.len(), MIGRATIONS.len());
    let again = migrate(&server, &a).await.expect("second migration");
    assert!(again.applied.is_empty(), "nothing to apply the second time");
    assert_eq!(again.current, first.current);
    migrate(&server, &b).await.expect("other database");

    let uncommented_tables: Vec<String> = server
        .query("SELECT name FROM system.tables WHERE database = ? AND comment = '' ORDER BY name")
        .bind(&a)
        .fetch_all()
        .await
        .expect("tables");
    assert!(
        uncommented_tables.is_empty(),
        "tables without COMMENT: {uncommented_tables:?}"
    );
    let uncommented_columns: Vec<(String, String)> = server
        .query("SELECT table, name FROM system.columns WHERE database = ? AND comment = '' ORDER BY table, name")
        .bind(&a)
        .fetch_all()
        .await
        .expect("columns");
    assert!(
        uncommented_columns.is_empty(),
        "columns without COMMENT: {uncommented_columns:?}"
    );

    // Merges of `events` take at least 20 parts (0021): fewer rewrites of each row.
    let events_engine: String = server
        .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = 'events'")
        .bind(&a)
        .fetch_one()
        .await
        .expect("events engine");
    assert!(
        events_engine.contains("min_parts_to_merge_at_once = 20"),
        "{events_engine}"
    );

    // A row in one database is invisible from the other, views included.
    clickhouse(&a)
        .query("INSERT INTO events (app, event, event_time, user_hash, source, properties, numbers, received_at) VALUES ('iso', 'e', now64(3), ?, '', map(), map(), now64(3))")
        .bind("a".repeat(64))
        .execute()
        .await
        .expect("insert");
    for (db, expected) in [(&a, 1u64), (&b, 0)] {
        let n: u64 = clickhouse(db)
            .query("SELECT count() FROM first_seen_latest")
            .fetch_one()
            .await
            .expect("count");
        assert_eq!(n, expected, "{db}");
    }
    for db in [&a, &b] {
        server
            .query("DROP DATABASE ?")
            .bind(clickhouse::sql::Identifier(db))
            .execute()
            .await
            .expect("drop");
    }
}

/// Migrations 0010-0012 move what the first views held into the new layer, server-side,
/// and running them again changes nothing.
#[tokio::test]
async fn the_storage_rework_moves_existing_data_idempotently() {
    use growth_schema::migrate::migrate_to;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    let db = unique_database("rework");
    migrate_to(&server, &db, 4).await.expect("old schema");
    let ch = clickhouse(&db);
    // 300 events of 40 users over 20 days, through the old views.
    ch.query(
        "INSERT INTO events (app, event, event_time, user_hash, source, properties, numbers, received_at)
         SELECT ['a', 'b'][1 + intHash64(number + 1) % 2], ['x', 'y', 'z'][1 + number % 3],
                toDateTime64('2026-11-01 00:00:00', 3) + toIntervalSecond(intHash64(number) % (20 * 86400)),
                hex(SHA256(toString(number % 40))), '', map(), map(), now64(3)
         FROM numbers(300)",
    )
    .execute()
    .await
    .expect("old data");
    let expected_activity: Vec<(String, u32, u64, String)> = ch
        .query("SELECT toString(app), toUInt32(bucket), user_key, arrayStringConcat(arraySort(groupUniqArray(toString(event))), ',') FROM user_activity GROUP BY app, bucket, user_key ORDER BY 1, 2, 3")
        .fetch_all()
        .await
        .expect("old activity");
    let expected_first: Vec<(String, u64, u32)> = ch
        .query("SELECT toString(app), user_key, toUInt32(toStartOfFifteenMinutes(min(first_seen))) FROM user_first_seen GROUP BY app, user_key ORDER BY 1, 2")
        .fetch_all()
        .await
        .expect("old first seen");
    assert_eq!(expected_first.len(), 80, "40 users in each of 2 apps");

    let moved = |ch: clickhouse::Client| async move {
        let activity: Vec<(String, u32, u64, String)> = ch
            .query("SELECT toString(app), toUInt32(bucket), user_key, arrayStringConcat(arraySort(groupUniqArrayArray(event_names)), ',') FROM user_quarter_hours GROUP BY app, bucket, user_key ORDER BY 1, 2, 3")
            .fetch_all()
            .await
            .expect("new activity");
        let first: Vec<(String, u64, u32)> = ch
            .query("SELECT toString(app), user_key, toUInt32(first_bucket) FROM first_seen_changes GROUP BY app, user_key, first_bucket HAVING sum(sign) > 0 ORDER BY 1, 2")
            .fetch_all()
            .await
            .expect("new first seen");
        (activity, first)
    };
    migrate(&server, &db).await.expect("new schema");
    let (activity, first) = moved(ch.clone()).await;
    assert_eq!(activity, expected_activity);
    assert_eq!(first, expected_first);

    // Run the moves again (as after a crash before they were recorded): same result.
    ch.query("ALTER TABLE schema_migrations DELETE WHERE version IN (10, 11) SETTINGS mutations_sync = 1")
        .execute()
        .await
        .expect("forget 0010, 0011");
    let again = migrate(&server, &db).await.expect("re-run");
    assert_eq!(again.applied, vec![10, 11]);
    let (activity, first) = moved(ch.clone()).await;
    assert_eq!(activity, expected_activity);
    assert_eq!(first, expected_first);
    let rows: u64 = ch
        .query("SELECT count() FROM first_seen_changes")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(rows, 80, "the second run wrote no first-seen rows");
    server
        .query("DROP DATABASE ?")
        .bind(clickhouse::sql::Identifier(&db))
        .execute()
        .await
        .expect("drop");
}
