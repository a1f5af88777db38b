//! The Grafana dashboards in `dashboards/grafana/` work on the real schema: every SQL
//! query of the ClickHouse dashboard (panels and variables), with Grafana's macros and
//! variables replaced by concrete values the way the ClickHouse plugin expands them,
//! runs on the embedded ClickHouse without error and gives the numbers the inserted
//! events imply; every metric the Prometheus dashboard asks for is one the aggregator
//! exposes.

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use growth_e2e::{Aggregator, clickhouse_url, repo_root, unique_database};
use growth_schema::migrate::migrate;
use serde_json::Value;

fn dashboard(name: &str) -> Value {
    let path = repo_root().join("dashboards/grafana").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// Every (where, SQL) of a dashboard: panel targets' `rawSql` and query variables.
fn sql_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(sql) = target["rawSql"].as_str() {
                out.push((format!("panel {:?}", panel["title"]), sql.to_owned()));
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if var["type"] == "query" {
            let sql = var["query"]
                .as_str()
                .or_else(|| var["query"]["rawSql"].as_str())
                .expect("variable query");
            out.push((format!("variable {}", var["name"]), sql.to_owned()));
        }
    }
    out
}

/// Expands what the ClickHouse plugin (v4) expands, then the dashboard variables.
fn expand(sql: &str, from: i64, to: i64, vars: &[(&str, &str)]) -> String {
    let mut sql = sql.to_owned();
    // $__timeFilter(col) → col >= toDateTime(from) AND col <= toDateTime(to)
    while let Some(start) = sql.find("$__timeFilter(") {
        let open = start + "$__timeFilter(".len();
        let close = open + sql[open..].find(')').expect("closing parenthesis");
        let column = sql[open..close].trim().to_owned();
        sql.replace_range(
            start..=close,
            &format!("{column} >= toDateTime({from}) AND {column} <= toDateTime({to})"),
        );
    }
    sql = sql
        .replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"))
        .replace("$__interval_s", "3600");
    for (name, value) in vars {
        sql = sql
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(
        !sql.contains('$'),
        "a macro or variable the test does not know is left:\n{sql}"
    );
    sql
}

async fn run(sql: &str) -> Result<Vec<Value>, String> {
    let response = reqwest::Client::new()
        .post(clickhouse_url())
        .query(&[("default_format", "JSON")])
        .body(sql.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(body);
    }
    if body.trim().is_empty() {
        return Ok(Vec::new()); // an INSERT answers nothing
    }
    let parsed: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok(parsed["data"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn every_clickhouse_panel_query_runs_on_the_schema() {
    let database = unique_database("grafana");
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(&server, &database).await.expect("migrations");

    // Three users start two days ago (UTC noon); one of them comes back yesterday,
    // with a fourth, new user; an anonymous event counts for totals only.
    let today = Utc::now().date_naive();
    let at = |days_ago: i64| {
        (today - Duration::days(days_ago))
            .and_hms_opt(12, 0, 0)
            .expect("noon")
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let rows = [
        ("expense_logged", "u1", 2, "messenger"),
        ("expense_logged", "u2", 2, "form"),
        ("report_requested", "u3", 2, "pwa"),
        ("expense_logged", "u1", 1, "messenger"),
        ("expense_edited", "u4", 1, "messenger"),
        ("expense_logged", "", 1, ""),
    ];
    let values: Vec<String> = rows
        .iter()
        .map(|(event, user, days_ago, source)| {
            let hash = if user.is_empty() {
                String::new()
            } else {
                format!("{user:0>64}")
            };
            format!(
                "('finbrain', '{event}', '{}', '{hash}', '{source}', now64(3))",
                at(*days_ago)
            )
        })
        .collect();
    run(&format!(
        "INSERT INTO {database}.events (app, event, event_time, user_hash, source, received_at) VALUES {}",
        values.join(", ")
    ))
    .await
    .expect("test rows inserted");

    let ch = dashboard("growth-clickhouse.json");
    let queries = sql_queries(&ch);
    assert!(
        queries.len() >= 6,
        "the ClickHouse dashboard lost its panels"
    );
    let to = Utc::now().timestamp();
    let from = to - 7 * 86_400;
    for timezone in ["UTC", "Asia/Kolkata", "America/Los_Angeles"] {
        let vars = [
            ("database", database.as_str()),
            ("app", "finbrain"),
            ("timezone", timezone),
            ("cohorts", "31"),
        ];
        for (place, sql) in &queries {
            let expanded = expand(sql, from, to, &vars);
            if let Err(e) = run(&expanded).await {
                panic!("{place} fails in {timezone}:\n{expanded}\n\n{e}");
            }
        }
    }

    // The numbers, in UTC, where the inserted events decide them.
    let vars = [
        ("database", database.as_str()),
        ("app", "finbrain"),
        ("timezone", "UTC"),
        ("cohorts", "31"),
    ];
    let by_title = |fragment: &str| -> String {
        let (_, sql) = queries
            .iter()
            .find(|(place, _)| place.contains(fragment))
            .unwrap_or_else(|| panic!("no panel titled like {fragment:?}"));
        expand(sql, from, to, &vars)
    };
    let dau = run(&by_title("DAU per day")).await.expect("DAU");
    let dau: Vec<u64> = dau.iter().map(|r| number(&r["dau"])).collect();
    assert_eq!(dau, vec![3, 2], "DAU two days ago and yesterday");

    let triangle = run(&by_title("Retention triangle"))
        .await
        .expect("retention");
    let oldest = triangle
        .iter()
        .find(|r| r["cohort"] == at(2)[..10])
        .unwrap_or_else(|| panic!("no cohort of two days ago in {triangle:?}"));
    assert_eq!(number(&oldest["users"]), 3);
    assert!((float(&oldest["d1"]) - 33.3).abs() < 0.01, "{oldest:?}");
    assert!(oldest["d3"].is_null(), "day 3 has not come: {oldest:?}");

    let sources = run(&by_title("Events by source")).await.expect("sources");
    let messenger = sources
        .iter()
        .find(|r| r["source"] == "messenger")
        .expect("messenger row");
    assert_eq!(number(&messenger["events"]), 3);
    assert!(sources.iter().any(|r| r["source"] == "(none)"));

    let totals = run(&by_title("Running totals")).await.expect("totals");
    assert_eq!(
        number(&totals[0]["events"]),
        4,
        "expense_logged first: {totals:?}"
    );

    // The Prometheus dashboard asks only for metric families the aggregator exposes.
    let aggregator = Aggregator::start(&database, &[]).await;
    let exposition = aggregator.get("/metrics").await;
    // Family names from `# TYPE` and sample names (a counter's family may lack `_total`).
    let exposed: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .collect();
    let prom = serde_json::to_string(&dashboard("growth-prometheus.json")).expect("json");
    let asked: BTreeSet<String> = prom
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("growth_"))
        .map(str::to_owned)
        .collect();
    assert!(asked.len() >= 5, "{asked:?}");
    for metric in &asked {
        assert!(
            exposed.contains(metric.as_str()),
            "the Prometheus dashboard asks for {metric}, which /metrics does not expose ({exposed:?})"
        );
    }
}

/// ClickHouse's JSON format quotes 64-bit integers.
fn number(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a count: {v}"))
}

fn float(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}
