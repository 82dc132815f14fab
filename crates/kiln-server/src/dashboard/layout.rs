//! The page shell (navigation, development-mode banner, sign-out) and the small pieces every
//! page prints the same way: statuses, times (relative, with the absolute time beside or on
//! hover), durations and JSON.

use std::sync::OnceLock;

use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use kiln_core::Run;
use maud::{html, Markup, DOCTYPE};

use super::session::{Session, CSRF_FIELD};
use crate::{status_of, ApiError};

pub(super) const CSS: &str = include_str!("../../assets/dashboard.css");
pub(super) const JS: &str = include_str!("../../assets/dashboard.js");

/// JSON longer than this is shown collapsed.
const COLLAPSE_JSON_ABOVE: usize = 2_000;

/// The pages of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Runs,
    Tasks,
    Queues,
    Schedules,
    Workers,
}

/// `?v=` of the asset URLs: changes with their content, so they can be cached for good.
fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in CSS.bytes().chain(JS.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{:012x}", hash & 0xffff_ffff_ffff)
    })
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Kiln" }
            link rel="stylesheet" href={ "/assets/dashboard.css?v=" (asset_version()) };
            script src={ "/assets/dashboard.js?v=" (asset_version()) } defer {}
        }
    }
}

/// A page for a signed-in operator (or development mode).
pub(super) fn page(session: &Session, title: &str, nav: Nav, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                @if session.dev {
                    div class="dev-banner" role="note" {
                        "Development mode: no sign-in is asked; anyone who can reach this address can act."
                    }
                }
                header class="top" {
                    a class="brand" href="/runs" { "Kiln" }
                    nav aria-label="Main" {
                        a href="/runs" aria-current=[(nav == Nav::Runs).then_some("page")] { "Runs" }
                        a href="/tasks" aria-current=[(nav == Nav::Tasks).then_some("page")] { "Tasks" }
                        a href="/queues" aria-current=[(nav == Nav::Queues).then_some("page")] { "Queues" }
                        a href="/schedules" aria-current=[(nav == Nav::Schedules).then_some("page")] { "Schedules" }
                        a href="/workers" aria-current=[(nav == Nav::Workers).then_some("page")] { "Workers" }
                    }
                    div class="who" {
                        span { "Signed in as " strong { (session.who) } }
                        @if !session.dev {
                            form method="post" action="/logout" class="inline" {
                                (csrf(session))
                                button type="submit" class="link" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page without navigation (sign-in, errors before a session exists).
pub(super) fn bare(title: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (body) }
        }
    };
    Html(markup.into_string())
}

/// A piece of a page, for the live sections' refreshes.
pub(super) fn fragment(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// An error kind's name as stored (`timed_out`).
pub(super) fn kind_name(kind: kiln_core::ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The hidden CSRF field of a form.
pub(super) fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

/// An error as a page, with the status the API would answer.
pub(crate) fn error_page(error: ApiError) -> Response {
    let status = status_of(error.code);
    let body = html! {
        main class="signin" {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("Error")) }
            p class="flash error" role="alert" { (error.message) }
            p { a href="/runs" { "Back to runs" } }
        }
    };
    (status, bare("Error", body)).into_response()
}

/// A status as a coloured badge ("retrying" for a queued run that has attempted before).
pub(super) fn status_badge(run: &Run) -> Markup {
    let shown = run.display_status();
    html! { span class={ "status status-" (shown) } { (shown) } }
}

/// "3 min ago" / "in 5 s", relative to `now`.
pub(super) fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let (amount, future) = (seconds.unsigned_abs(), seconds < 0);
    let text = match amount {
        0..=4 => return "just now".to_owned(),
        5..=59 => format!("{amount} s"),
        60..=3_599 => format!("{} min", amount / 60),
        3_600..=86_399 => format!("{} h", amount / 3_600),
        _ => format!("{} d", amount / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// An absolute time as shown: `2026-12-01 10:00:03 UTC`.
pub(super) fn absolute(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time shown relative, with the absolute time on hover (tables).
pub(super) fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) title=(absolute(at)) { (relative(at, now)) }
    }
}

/// A time shown absolute and relative (details).
pub(super) fn when_long(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (absolute(at)) } " "
        span class="muted" { "(" (relative(at, now)) ")" }
    }
}

/// A duration as people read it: `850 ms`, `3.2 s`, `4 min 10 s`, `2 h 5 min`.
pub(super) fn duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {} min", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// A JSON value, pretty-printed; collapsed when long.
pub(super) fn json_block(label: &str, value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    let long = text.len() > COLLAPSE_JSON_ABOVE;
    html! {
        details class="json" open[!long] {
            summary { (label) @if long { " (" (text.len()) " bytes)" } }
            pre { code { (text) } }
        }
    }
}

/// `text` as one URL path segment: unreserved characters kept, every other byte escaped, so a
/// task or queue name with `/`, `?` or `#` in it still names itself.
pub(super) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A query string from name/value pairs, escaped.
pub(super) fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// A run id shortened for tables (the full id is in the link and on hover).
pub(super) fn short_id(id: uuid::Uuid) -> String {
    let text = id.to_string();
    format!("…{}", &text[text.len() - 8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_as_people_say_them() {
        let now = Utc::now();
        assert_eq!(relative(now, now), "just now");
        assert_eq!(
            relative(now - chrono::Duration::seconds(42), now),
            "42 s ago"
        );
        assert_eq!(
            relative(now - chrono::Duration::minutes(3), now),
            "3 min ago"
        );
        assert_eq!(relative(now + chrono::Duration::hours(2), now), "in 2 h");
        assert_eq!(relative(now - chrono::Duration::days(3), now), "3 d ago");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(chrono::Duration::milliseconds(850)), "850 ms");
        assert_eq!(duration(chrono::Duration::milliseconds(3_240)), "3.2 s");
        assert_eq!(duration(chrono::Duration::seconds(250)), "4 min 10 s");
        assert_eq!(duration(chrono::Duration::minutes(125)), "2 h 5 min");
    }

    #[test]
    fn names_become_single_path_segments() {
        assert_eq!(segment("schedule-task"), "schedule-task");
        assert_eq!(segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
    }

    #[test]
    fn json_is_escaped_when_shown() {
        let shown = json_block(
            "payload",
            &serde_json::json!({"x": "</pre><script>alert(1)</script>"}),
        )
        .into_string();
        assert!(!shown.contains("<script>"), "{shown}");
        assert!(shown.contains("&lt;script&gt;"), "{shown}");
    }
}
