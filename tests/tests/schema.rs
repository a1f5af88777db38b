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

    // A row in one database is invisible from the other, views included.
    clickhouse(&a)
        .query("INSERT INTO events (app, event, event_time, user_hash, source, properties, numbers, received_at) VALUES ('iso', 'e', now64(3), ?, '', map(), map(), now64(3))")
        .bind("a".repeat(64))
        .execute()
        .await
        .expect("insert");
    for (db, expected) in [(&a, 1u64), (&b, 0)] {
        let n: u64 = clickhouse(db)
            .query("SELECT count() FROM user_first_seen")
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
