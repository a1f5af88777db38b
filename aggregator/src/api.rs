//! The JSON API under `/api/v1/` (the contract is `docs/api.md`). Handlers are
//! thin: parse and validate the parameters (a clear 400 otherwise), ask the snapshot
//! or [`crate::on_demand`], render JSON. Field names are stable within `v1`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use crate::definitions::{CellStatus, Lifecycle, Window};
use crate::funnels::{self, FunnelQuestion, Order, StepSpec};
use crate::on_demand::{
    self, CohortRetention, Mode, Period, RetentionQuestion, Split, active_series, events_per_day,
};
use crate::snapshot::{AppMetrics, MetricsSnapshot};
use crate::state::AppState;

/// The `/api/v1/*` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/apps", get(apps))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/active", get(active))
        .route("/api/v1/retention", get(retention))
        .route("/api/v1/events", get(events))
        .route("/api/v1/lifecycle", get(lifecycle))
        .route("/api/v1/funnels", get(funnels))
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("metrics not computed yet: waiting for the first refresh from ClickHouse")]
    NotReady,
    #[error("ClickHouse did not answer: {0}")]
    Upstream(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotReady | ApiError::Upstream(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if let ApiError::Upstream(e) = &self {
            tracing::warn!(error = %e, "API query failed");
        }
        let message = self.to_string();
        let mut response = json_response(status, &ErrorBody { error: &message });
        if matches!(self, ApiError::NotReady) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => json_text(status, text),
        Err(e) => {
            tracing::error!(error = %e, "JSON rendering failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn json_text(status: StatusCode, text: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The parameters of one request, looked up by name.
struct Request {
    params: Vec<(String, String)>,
}

impl Request {
    fn new(params: Params) -> Result<Self, ApiError> {
        let Query(params) =
            params.map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
        Ok(Self { params })
    }

    fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.params.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!("{name} is given twice")));
        }
        Ok(first)
    }

    fn number(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<u32>, ApiError> {
        self.get(name)?
            .map(|text| parse_number(name, text, &range))
            .transpose()
    }

    fn list(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<Vec<u32>>, ApiError> {
        let Some(text) = self.get(name)? else {
            return Ok(None);
        };
        let mut values = text
            .split(',')
            .map(|v| parse_number(name, v.trim(), &range))
            .collect::<Result<Vec<u32>, ApiError>>()?;
        if values.len() > 64 {
            return Err(ApiError::BadRequest(format!("{name}: at most 64 values")));
        }
        values.sort_unstable();
        values.dedup();
        Ok(Some(values))
    }

    fn choice<T: Copy>(
        &self,
        name: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, ApiError> {
        let Some(text) = self.get(name)? else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|(label, _)| *label == text)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let labels: Vec<&str> = choices.iter().map(|(l, _)| *l).collect();
                ApiError::BadRequest(format!("{name} must be one of {}", labels.join(", ")))
            })
    }
}

fn parse_number(
    name: &str,
    text: &str,
    range: &std::ops::RangeInclusive<u32>,
) -> Result<u32, ApiError> {
    text.parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name} must be a whole number from {} to {} (got {text:?})",
                range.start(),
                range.end()
            ))
        })
}

/// The snapshot, or 503 before the first refresh.
fn snapshot(state: &AppState) -> Result<Arc<MetricsSnapshot>, ApiError> {
    state.cache.latest().ok_or(ApiError::NotReady)
}

/// The app a request is about: `app=`, or the only app there is.
fn resolve_app<'s>(
    snapshot: &'s MetricsSnapshot,
    request: &Request,
) -> Result<(&'s str, &'s AppMetrics), ApiError> {
    match request.get("app")? {
        Some(name) => snapshot
            .apps
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| ApiError::NotFound(format!("unknown app '{name}'"))),
        None => {
            let mut apps = snapshot.apps.iter();
            match (apps.next(), apps.next()) {
                (Some((k, v)), None) => Ok((k.as_str(), v)),
                (None, _) => Err(ApiError::NotFound("no app has events yet".into())),
                _ => {
                    let names: Vec<&str> = snapshot.apps.keys().map(String::as_str).collect();
                    Err(ApiError::BadRequest(format!(
                        "app is required: one of {}",
                        names.join(", ")
                    )))
                }
            }
        }
    }
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Serialize)]
struct AppsBody {
    generated_at: String,
    timezone: &'static str,
    today: NaiveDate,
    apps: Vec<AppEntry>,
}

#[derive(Serialize)]
struct AppEntry {
    app: String,
    events_total: u64,
}

async fn apps(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = snapshot(&state)?;
    let body = AppsBody {
        generated_at: instant(snapshot.generated_at),
        timezone: snapshot.timezone.name(),
        today: snapshot.today,
        apps: snapshot
            .apps
            .iter()
            .map(|(app, m)| AppEntry {
                app: app.clone(),
                events_total: m.totals.values().sum(),
            })
            .collect(),
    };
    Ok(json_response(StatusCode::OK, &body))
}

#[derive(Serialize)]
struct SummaryBody<'a> {
    app: &'a str,
    timezone: &'static str,
    today: NaiveDate,
    generated_at: String,
    refresh_interval_seconds: f64,
    active_users: BTreeMap<&'static str, u64>,
    previous_active_users: BTreeMap<&'static str, u64>,
    stickiness: Option<f64>,
    previous_stickiness: Option<f64>,
    retention_days: &'a [u32],
    recent_retention: Vec<RecentBody>,
    cohorts: Vec<CohortBody>,
    totals: Vec<TotalBody<'a>>,
}

#[derive(Serialize)]
struct RecentBody {
    day: u32,
    ratio: Option<f64>,
    cohort_users: u64,
    retained_users: u64,
}

#[derive(Serialize)]
struct CohortBody {
    cohort: NaiveDate,
    users: u64,
    retention: Vec<CellBody>,
}

#[derive(Serialize)]
struct CellBody {
    day: u32,
    status: CellStatus,
    users: Option<u64>,
    ratio: Option<f64>,
}

#[derive(Serialize)]
struct TotalBody<'a> {
    event: &'a str,
    count: u64,
}

fn windows(values: &BTreeMap<Window, u64>) -> BTreeMap<&'static str, u64> {
    Window::ALL
        .iter()
        .map(|w| (w.label(), values.get(w).copied().unwrap_or(0)))
        .collect()
}

async fn summary(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let request = Request::new(params)?;
    let snapshot = snapshot(&state)?;
    let (app, m) = resolve_app(&snapshot, &request)?;
    let cohorts = m
        .latest_cohorts(snapshot.report_cohorts)
        .iter()
        .rev()
        .map(|c| CohortBody {
            cohort: c.day,
            users: c.users,
            retention: snapshot
                .retention_days
                .iter()
                .map(|&n| CellBody {
                    day: n,
                    status: c.status(n, snapshot.today),
                    users: c.retained.get(&n).copied(),
                    ratio: c.retention.get(&n).copied(),
                })
                .collect(),
        })
        .collect();
    let mut totals: Vec<TotalBody> = m
        .totals
        .iter()
        .map(|(event, &count)| TotalBody { event, count })
        .collect();
    totals.sort_by(|a, b| b.count.cmp(&a.count).then(a.event.cmp(b.event)));
    let body = SummaryBody {
        app,
        timezone: snapshot.timezone.name(),
        today: snapshot.today,
        generated_at: instant(snapshot.generated_at),
        refresh_interval_seconds: state.config.refresh_interval.as_secs_f64(),
        active_users: windows(&m.active_users),
        previous_active_users: windows(&m.previous_active_users),
        stickiness: m.stickiness(),
        previous_stickiness: m.previous_stickiness(),
        retention_days: &snapshot.retention_days,
        recent_retention: m
            .recent_retention
            .iter()
            .map(|(&day, r)| RecentBody {
                day,
                ratio: r.ratio(),
                cohort_users: r.cohort_users,
                retained_users: r.retained_users,
            })
            .collect(),
        cohorts,
        totals,
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Answers from the cache, or computes, renders and caches: one query per request
/// shape and snapshot.
async fn cached<T, F>(
    state: &AppState,
    snapshot: &MetricsSnapshot,
    key: String,
    compute: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: std::future::Future<Output = on_demand::QueryResult<T>>,
{
    if let Some(answer) = state.answers.get(&key, snapshot.generated_at) {
        return Ok(json_text(StatusCode::OK, answer.as_str().to_owned()));
    }
    // ClickHouse stops the query at the timeout too; this bounds the wait for the
    // connection as well.
    let body = tokio::time::timeout(state.config.query_timeout, compute)
        .await
        .map_err(|_| ApiError::Upstream("query timed out".into()))?
        .map_err(|e| ApiError::Upstream(e.to_string()))?;
    let text = serde_json::to_string(&body).map_err(|e| ApiError::Upstream(e.to_string()))?;
    state
        .answers
        .put(key, snapshot.generated_at, Arc::new(text.clone()));
    Ok(json_text(StatusCode::OK, text))
}

#[derive(Serialize)]
struct ActiveBody {
    app: String,
    timezone: &'static str,
    today: NaiveDate,
    days: Vec<ActiveDayBody>,
}

#[derive(Serialize)]
struct ActiveDayBody {
    day: NaiveDate,
    dau: u64,
    wau: u64,
    mau: u64,
    in_progress: bool,
}

async fn active(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let request = Request::new(params)?;
    let days = request.number("days", 1..=366)?.unwrap_or(90);
    let snapshot = snapshot(&state)?;
    let (app, _) = resolve_app(&snapshot, &request)?;
    let key = format!("active\u{0}{app}\u{0}{days}");
    let defs = &state.config.definitions;
    let today = snapshot.today;
    let compute = async {
        let series = active_series(&state.source, defs, app, today, days).await?;
        Ok(ActiveBody {
            app: app.to_owned(),
            timezone: defs.timezone.name(),
            today,
            days: series
                .into_iter()
                .map(|d| ActiveDayBody {
                    day: d.day,
                    dau: d.dau,
                    wau: d.wau,
                    mau: d.mau,
                    in_progress: d.in_progress,
                })
                .collect(),
        })
    };
    cached(&state, &snapshot, key, compute).await
}

#[derive(Serialize)]
struct RetentionBody {
    app: String,
    timezone: &'static str,
    today: NaiveDate,
    period: &'static str,
    mode: &'static str,
    days: Vec<u32>,
    cohorts: Vec<CohortBody>,
}

fn cohort_body(c: CohortRetention) -> CohortBody {
    CohortBody {
        cohort: c.cohort,
        users: c.users,
        retention: c
            .retention
            .into_iter()
            .map(|v| CellBody {
                day: v.day,
                status: v.status,
                users: v.users,
                ratio: v.ratio,
            })
            .collect(),
    }
}

async fn retention(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let request = Request::new(params)?;
    let period = request.choice(
        "period",
        &[("day", Period::Day), ("week", Period::Week)],
        Period::Day,
    )?;
    let mode = request.choice(
        "mode",
        &[("on_day", Mode::OnDay), ("on_or_after", Mode::OnOrAfter)],
        Mode::OnDay,
    )?;
    let defs = &state.config.definitions;
    let days = match (request.list("days", 1..=3650)?, period) {
        (Some(days), _) => days,
        (None, Period::Day) => defs.retention_days.clone(),
        (None, Period::Week) => vec![1, 2, 3, 4],
    };
    let cohorts = match (request.number("cohorts", 1..=366)?, period) {
        (Some(n), _) => n,
        (None, Period::Day) => defs
            .cohorts
            .max(days.last().copied().unwrap_or(0).saturating_add(1))
            .min(366),
        (None, Period::Week) => 8,
    };
    let snapshot = snapshot(&state)?;
    let (app, _) = resolve_app(&snapshot, &request)?;
    let question = RetentionQuestion {
        period,
        cohorts,
        days,
        mode,
    };
    let key = format!("retention\u{0}{app}\u{0}{question:?}");
    let today = snapshot.today;
    let compute = async {
        let lines = on_demand::retention(&state.source, defs, app, today, &question).await?;
        Ok(RetentionBody {
            app: app.to_owned(),
            timezone: defs.timezone.name(),
            today,
            period: match period {
                Period::Day => "day",
                Period::Week => "week",
            },
            mode: match mode {
                Mode::OnDay => "on_day",
                Mode::OnOrAfter => "on_or_after",
            },
            days: question.days.clone(),
            cohorts: lines.into_iter().map(cohort_body).collect(),
        })
    };
    cached(&state, &snapshot, key, compute).await
}

#[derive(Serialize)]
struct EventsBody {
    app: String,
    timezone: &'static str,
    today: NaiveDate,
    by: &'static str,
    event: Option<String>,
    keys: Vec<String>,
    days: Vec<EventDayBody>,
}

#[derive(Serialize)]
struct EventDayBody {
    day: NaiveDate,
    total: u64,
    counts: BTreeMap<String, u64>,
}

async fn events(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let request = Request::new(params)?;
    let days = request.number("days", 1..=366)?.unwrap_or(30);
    let split = request.choice(
        "by",
        &[("event", Split::Event), ("source", Split::Source)],
        Split::Event,
    )?;
    let event = request.get("event")?.map(str::to_owned);
    if let Some(e) = &event
        && (e.is_empty() || e.len() > growth_schema::limits::MAX_EVENT_NAME_BYTES)
    {
        return Err(ApiError::BadRequest(format!(
            "event must be 1 to {} bytes",
            growth_schema::limits::MAX_EVENT_NAME_BYTES
        )));
    }
    let snapshot = snapshot(&state)?;
    let (app, _) = resolve_app(&snapshot, &request)?;
    let key = format!("events\u{0}{app}\u{0}{days}\u{0}{split:?}\u{0}{event:?}");
    let defs = &state.config.definitions;
    let today = snapshot.today;
    let compute = async {
        let (keys, per_day) = events_per_day(
            &state.source,
            defs,
            app,
            today,
            days,
            split,
            event.as_deref(),
        )
        .await?;
        Ok(EventsBody {
            app: app.to_owned(),
            timezone: defs.timezone.name(),
            today,
            by: match split {
                Split::Event => "event",
                Split::Source => "source",
            },
            event: event.clone(),
            keys,
            days: per_day
                .into_iter()
                .map(|d| EventDayBody {
                    day: d.day,
                    total: d.total,
                    counts: d.counts,
                })
                .collect(),
        })
    };
    cached(&state, &snapshot, key, compute).await
}

#[derive(Serialize)]
struct LifecycleBody {
    app: String,
    timezone: &'static str,
    today: NaiveDate,
    period: &'static str,
    periods: Vec<LifecyclePeriodBody>,
}

#[derive(Serialize)]
struct LifecyclePeriodBody {
    start: NaiveDate,
    new: u64,
    returning: u64,
    resurrecting: u64,
    /// Negative (or 0): persons of the period before who are not active in this one.
    dormant: i64,
    active: u64,
    in_progress: bool,
}

fn lifecycle_body(
    app: &str,
    snapshot: &MetricsSnapshot,
    period: Period,
    series: &[(NaiveDate, Lifecycle)],
) -> LifecycleBody {
    let current = period.start_of(snapshot.today);
    LifecycleBody {
        app: app.to_owned(),
        timezone: snapshot.timezone.name(),
        today: snapshot.today,
        period: period.label(),
        periods: series
            .iter()
            .map(|(start, l)| LifecyclePeriodBody {
                start: *start,
                new: l.new,
                returning: l.returning,
                resurrecting: l.resurrecting,
                dormant: -(l.dormant as i64),
                active: l.active(),
                in_progress: *start == current,
            })
            .collect(),
    }
}

async fn lifecycle(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let request = Request::new(params)?;
    let period = request.choice(
        "period",
        &[("day", Period::Day), ("week", Period::Week)],
        Period::Day,
    )?;
    let periods = match period {
        Period::Day => request.number("periods", 1..=366)?.unwrap_or(30),
        Period::Week => request.number("periods", 1..=104)?.unwrap_or(8),
    };
    let snapshot = snapshot(&state)?;
    let (app, m) = resolve_app(&snapshot, &request)?;
    // From the snapshot when the cached days cover the range; else asked on demand.
    if let Some(series) = m.lifecycle.get(&period)
        && series.len() >= periods as usize
    {
        let body = lifecycle_body(
            app,
            &snapshot,
            period,
            &series[series.len() - periods as usize..],
        );
        return Ok(json_response(StatusCode::OK, &body));
    }
    let key = format!("lifecycle\u{0}{app}\u{0}{period:?}\u{0}{periods}");
    let defs = &state.config.definitions;
    let today = snapshot.today;
    let compute = async {
        let series = on_demand::lifecycle(&state.source, defs, app, today, period, periods).await?;
        Ok(lifecycle_body(app, &snapshot, period, &series))
    };
    cached(&state, &snapshot, key, compute).await
}

#[derive(Serialize)]
struct FunnelBody {
    app: String,
    timezone: &'static str,
    today: NaiveDate,
    from: NaiveDate,
    to: NaiveDate,
    window_seconds: f64,
    order: &'static str,
    exclude: Vec<String>,
    steps: Vec<FunnelStepBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    values: Option<Vec<FunnelValueBody>>,
}

#[derive(Serialize)]
struct FunnelValueBody {
    value: Option<String>,
    steps: Vec<FunnelStepBody>,
}

fn funnel_steps(question: &FunnelQuestion, results: &[funnels::StepResult]) -> Vec<FunnelStepBody> {
    let first = results.first().map_or(0, |r| r.persons);
    let ratio = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    results
        .iter()
        .enumerate()
        .map(|(i, r)| FunnelStepBody {
            step: i + 1,
            event: funnels::label(&question.steps[i]),
            persons: r.persons,
            conversion_from_first: ratio(r.persons, first),
            conversion_from_previous: ratio(
                r.persons,
                if i == 0 {
                    first
                } else {
                    results[i - 1].persons
                },
            ),
            median_seconds: r.median_seconds,
            p90_seconds: r.p90_seconds,
        })
        .collect()
}

#[derive(Serialize)]
struct FunnelStepBody {
    step: usize,
    event: String,
    persons: u64,
    conversion_from_first: Option<f64>,
    conversion_from_previous: Option<f64>,
    median_seconds: Option<f64>,
    p90_seconds: Option<f64>,
}

fn parse_day(request: &Request, name: &str) -> Result<Option<NaiveDate>, ApiError> {
    request
        .get(name)?
        .map(|text| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                ApiError::BadRequest(format!("{name} must be a day YYYY-MM-DD (got {text:?})"))
            })
        })
        .transpose()
}

async fn funnels(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let request = Request::new(params)?;
    let bad = ApiError::BadRequest;
    let steps = StepSpec::parse_list(
        request
            .get("steps")?
            .ok_or_else(|| bad("steps is required: 2 to 10 comma-separated event names".into()))?,
    )
    .map_err(bad)?;
    if !(2..=funnels::MAX_STEPS).contains(&steps.len()) {
        return Err(bad(format!(
            "steps: 2 to {} steps (got {})",
            funnels::MAX_STEPS,
            steps.len()
        )));
    }
    let exclusions = match request.get("exclude")? {
        Some(text) => StepSpec::parse_list(text).map_err(bad)?,
        None => Vec::new(),
    };
    if exclusions.len() > funnels::MAX_EXCLUSIONS {
        return Err(bad(format!(
            "exclude: at most {} events",
            funnels::MAX_EXCLUSIONS
        )));
    }
    let window_ms = funnels::parse_window(request.get("window")?.unwrap_or("1d")).map_err(bad)?;
    let order = request.choice(
        "order",
        &[
            ("ordered", Order::Ordered),
            ("strict", Order::Strict),
            ("any", Order::Any),
        ],
        Order::Ordered,
    )?;
    let snapshot = snapshot(&state)?;
    let today = snapshot.today;
    let to = parse_day(&request, "to")?.unwrap_or(today);
    let from = parse_day(&request, "from")?.unwrap_or(to - chrono::Days::new(6));
    if from > to {
        return Err(bad(format!("from ({from}) is after to ({to})")));
    }
    if (to - from).num_days() >= funnels::MAX_RANGE_DAYS {
        return Err(bad(format!(
            "from to to: at most {} days",
            funnels::MAX_RANGE_DAYS
        )));
    }
    let breakdown = request.get("breakdown")?.map(str::to_owned);
    if let Some(b) = &breakdown
        && !growth_schema::limits::is_valid_name(b, growth_schema::limits::MAX_PROPERTY_KEY_BYTES)
    {
        return Err(bad(format!(
            "breakdown must be a property key of 1 to {} bytes",
            growth_schema::limits::MAX_PROPERTY_KEY_BYTES
        )));
    }
    let breakdown_limit = request
        .number("breakdown_limit", 1..=funnels::MAX_BREAKDOWN_VALUES as u32)?
        .unwrap_or(10) as usize;
    let (app, _) = resolve_app(&snapshot, &request)?;
    let question = FunnelQuestion {
        breakdown,
        breakdown_limit,
        steps,
        exclusions,
        window_ms,
        from,
        to,
        order,
    };
    let key = format!("funnels\u{0}{app}\u{0}{question:?}");
    let defs = &state.config.definitions;
    let compute = async {
        let answer = funnels::funnel(&state.source, defs, app, &question).await?;
        Ok(FunnelBody {
            app: app.to_owned(),
            timezone: defs.timezone.name(),
            today,
            from,
            to,
            window_seconds: window_ms as f64 / 1000.0,
            order: match order {
                Order::Ordered => "ordered",
                Order::Strict => "strict",
                Order::Any => "any",
            },
            exclude: question.exclusions.iter().map(funnels::label).collect(),
            steps: funnel_steps(&question, &answer.total),
            breakdown: question.breakdown.clone(),
            values: question.breakdown.as_ref().map(|_| {
                answer
                    .breakdown
                    .iter()
                    .map(|(value, results)| FunnelValueBody {
                        value: value.clone(),
                        steps: funnel_steps(&question, results),
                    })
                    .collect()
            }),
        })
    };
    cached(&state, &snapshot, key, compute).await
}
