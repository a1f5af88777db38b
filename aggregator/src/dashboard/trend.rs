//! `/admin/metrics/trend.svg`: the DAU / WAU / MAU trend of the last days as an SVG
//! drawn on the server — an image that prints, scales, needs no chart library in the
//! page and no script to be read. The series comes from [`on_demand::active_series`],
//! the same numbers as `/api/v1/active`.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::DashboardState;
use crate::on_demand::{ActiveDay, active_series};

#[derive(Deserialize)]
pub struct TrendQuery {
    app: Option<String>,
    days: Option<u32>,
    /// The width the page has for the image, so labels keep their size on a phone.
    w: Option<u32>,
}

/// `GET /admin/metrics/trend.svg?app=A[&days=90][&w=900]`.
pub async fn serve(State(state): State<DashboardState>, Query(q): Query<TrendQuery>) -> Response {
    let text = |status, message: String| (status, message).into_response();
    let Some(snapshot) = state.app.cache.latest() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics not computed yet\n".into(),
        );
    };
    let days = q.days.unwrap_or(90);
    let width = q.w.unwrap_or(900);
    if !(7..=366).contains(&days) || !(300..=2000).contains(&width) {
        return text(
            StatusCode::BAD_REQUEST,
            "days must be 7-366 and w 300-2000\n".into(),
        );
    }
    let app = match q.app.as_deref() {
        Some(app) if snapshot.apps.contains_key(app) => app,
        Some(app) => return text(StatusCode::NOT_FOUND, format!("unknown app {app:?}\n")),
        None => return text(StatusCode::BAD_REQUEST, "app is required\n".into()),
    };
    let defs = &state.app.config.definitions;
    match active_series(&state.app.source, defs, app, snapshot.today, days).await {
        Ok(series) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "private, max-age=60"),
            ],
            render(&series, width),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "trend query failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "trend query failed\n".into(),
            )
        }
    }
}

/// The axis top and its number of steps: 4 or 5 steps of 1, 2, 2.5 or 5 × 10^k (whole
/// users), whichever reaches `max` with the least room to spare.
fn axis(max: u64) -> (u64, u64) {
    let nice_step = |raw: u64| -> u64 {
        let mut p = 1;
        while p * 10 <= raw {
            p *= 10;
        }
        let mut options = vec![p, 2 * p, 5 * p, 10 * p];
        if p >= 10 {
            options.push(p * 5 / 2); // 25, 250, …: still whole
        }
        options
            .into_iter()
            .filter(|s| *s >= raw)
            .min()
            .unwrap_or(10 * p)
    };
    let max = max.max(1);
    [4u64, 5]
        .into_iter()
        .map(|ticks| (nice_step(max.div_ceil(ticks)) * ticks, ticks))
        .min_by_key(|(top, _)| *top)
        .unwrap_or((4, 4))
}

/// One line of the chart: its name, colour and value of a day.
type Series = (&'static str, &'static str, fn(&ActiveDay) -> u64);

/// Draws the series (oldest first) as an SVG `width` pixels wide.
pub fn render(days: &[ActiveDay], width: u32) -> String {
    let w = f64::from(width);
    let h = if width < 600 { 180.0 } else { 240.0 };
    let (left, right, top, bottom) = (44.0, 24.0, 12.0, 26.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" data-days="{}" font-family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif" font-size="11"><title>DAU, WAU and MAU over the last {} days</title>"##,
        days.len(),
        days.len()
    );
    if days.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#6c757d" font-size="13">no activity yet</text></svg>"##,
            w / 2.0,
            h / 2.0
        );
        return svg;
    }
    let peak = days
        .iter()
        .map(|d| d.dau.max(d.wau).max(d.mau))
        .max()
        .unwrap_or(0);
    let (max, ticks) = axis(peak);
    let x = |i: usize| {
        if days.len() == 1 {
            left
        } else {
            left + i as f64 * (w - left - right) / (days.len() - 1) as f64
        }
    };
    let y = |v: u64| top + (h - top - bottom) * (1.0 - v as f64 / max as f64);
    for k in 0..=ticks {
        let v = max * k / ticks;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e7e9ef"/><text x="{}" y="{:.1}" text-anchor="end" fill="#6c757d">{v}</text>"##,
            w - right,
            left - 6.0,
            y(v) + 4.0,
            y = y(v),
        );
    }
    let labels = ((w / 110.0).floor() as usize).max(3);
    let step = days.len().div_ceil(labels).max(1);
    for (i, d) in days.iter().enumerate() {
        if (days.len() - 1 - i).is_multiple_of(step) {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#6c757d">{}</text>"##,
                x(i),
                h - 8.0,
                d.day.format("%m-%d")
            );
        }
    }
    let points = |value: fn(&ActiveDay) -> u64| -> String {
        days.iter()
            .enumerate()
            .map(|(i, d)| format!("{:.1},{:.1}", x(i), y(value(d))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let last = days.len() - 1;
    let _ = write!(
        svg,
        r##"<polygon points="{:.1},{:.1} {} {:.1},{:.1}" fill="#20c997" fill-opacity="0.08"/>"##,
        x(0),
        y(0),
        points(|d| d.mau),
        x(last),
        y(0)
    );
    let series: [Series; 3] = [
        ("MAU", "#20c997", |d| d.mau),
        ("WAU", "#0d6efd", |d| d.wau),
        ("DAU", "#6f42c1", |d| d.dau),
    ];
    for (name, colour, value) in series {
        let _ = write!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"><title>{name}: {} on {}</title></polyline>"##,
            points(value),
            value(&days[last]),
            days[last].day
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{}" stroke="#adb5bd" stroke-dasharray="3 3"/></svg>"##,
        h - bottom,
        x = x(last)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(n: u32, dau: u64, wau: u64, mau: u64) -> ActiveDay {
        ActiveDay {
            day: chrono::NaiveDate::from_ymd_opt(2026, 11, n).expect("date"),
            dau,
            wau,
            mau,
            in_progress: false,
        }
    }

    #[test]
    fn axis_steps_are_round_whole_numbers() {
        assert_eq!(axis(0), (4, 4));
        assert_eq!(axis(3), (4, 4));
        assert_eq!(axis(10), (10, 5));
        assert_eq!(axis(97), (100, 4));
        assert_eq!(axis(1730), (2000, 4));
        assert_eq!(axis(2500), (2500, 5));
    }

    #[test]
    fn draws_three_series_with_the_last_values() {
        let svg = render(&[day(1, 2, 5, 9), day(2, 4, 7, 10)], 900);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("<title>MAU: 10 on 2026-11-02</title>"));
        assert!(svg.contains("<title>DAU: 4 on 2026-11-02</title>"));
        assert!(svg.contains(">11-02</text>"));
        assert!(svg.contains("data-days=\"2\""));
        assert!(svg.ends_with("</svg>"));
        // Well-formed enough for a browser: every element that opens closes.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn no_data_says_so() {
        let svg = render(&[], 400);
        assert!(svg.contains("no activity yet") && svg.ends_with("</svg>"));
    }
}
