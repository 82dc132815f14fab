//! Five-field cron patterns evaluated in an IANA timezone, parsed and evaluated by the `croner`
//! crate (which follows POSIX/Vixie cron), wrapped with Kiln's errors and its search for the next
//! tick across daylight saving changes.
//!
//! Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC), day of week
//! (0-7 or SUN-SAT, 0 and 7 are Sunday). Each field takes `*`, a value, a range `a-b`, a step
//! `*/n`, `a-b/n` or `a/n`, and comma-separated lists of those; croner's `L`, `#` and `W` work
//! too. When both day fields are restricted, a day matches if either matches (as in Vixie cron).
//! `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly` and `@yearly` (`@annually`) are
//! accepted. There is no seconds field.
//!
//! Daylight saving, as Vixie cron does it: a pattern whose minute and hour are single values is a
//! fixed-time job; any other is an interval job.
//! - Spring forward: a fixed time in the skipped hour fires once, right after the change (a 02:30
//!   daily job fires at 03:00 on that day); an interval job has no ticks in the skipped hour (it is
//!   never shifted into extra runs: `*/20 2 * * *` does not fire on that day).
//! - Fall back: a fixed time in the repeated hour fires once, at its first occurrence; an interval
//!   job fires in both occurrences, as the hours really pass (an hourly job fires 25 times that
//!   day).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Offset, SubsecRound, Utc};
use chrono_tz::Tz;

/// Why a cron pattern or timezone was refused. The message shows the pattern and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The pattern does not parse.
    #[error("invalid cron pattern \"{pattern}\": {problem}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The timezone is not an IANA name.
    #[error(
        "unknown timezone \"{0}\": use an IANA name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\""
    )]
    Timezone(String),
}

/// A parsed cron pattern with its timezone.
#[derive(Clone)]
pub struct CronSchedule {
    pattern: String,
    timezone: Tz,
    cron: croner::Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.timezone == other.timezone
    }
}

impl Eq for CronSchedule {}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CronSchedule({:?} in {})",
            self.pattern,
            self.timezone.name()
        )
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.pattern, self.timezone.name())
    }
}

/// Checks that `timezone` is an IANA name and returns its canonical spelling.
pub fn parse_timezone(timezone: &str) -> Result<Tz, CronError> {
    Tz::from_str(timezone.trim()).map_err(|_| CronError::Timezone(timezone.to_owned()))
}

/// How far around a daylight saving change the next tick is searched among candidates whose
/// order in wall-clock time differs from their order in real time.
const AROUND_A_CHANGE: Duration = Duration::hours(3);

impl CronSchedule {
    /// Parses a five-field pattern, evaluated in `timezone` (UTC when `None`).
    pub fn parse(pattern: &str, timezone: Option<&str>) -> Result<Self, CronError> {
        let timezone = match timezone {
            Some(tz) => parse_timezone(tz)?,
            None => Tz::UTC,
        };
        let fail = |problem: String| CronError::Pattern {
            pattern: pattern.to_owned(),
            problem,
        };
        let trimmed = pattern.trim();
        if trimmed.starts_with('@')
            && !matches!(
                trimmed.to_ascii_lowercase().as_str(),
                "@yearly"
                    | "@annually"
                    | "@monthly"
                    | "@weekly"
                    | "@daily"
                    | "@midnight"
                    | "@hourly"
            )
        {
            return Err(fail(format!(
                "unknown shorthand {trimmed}: use @yearly, @monthly, @weekly, @daily or @hourly"
            )));
        }
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && fields != 5 {
            let hint = if fields == 6 {
                " (Kiln's patterns have no seconds field)"
            } else {
                ""
            };
            return Err(fail(format!(
                "it has {fields} field{}; a cron pattern has five: minute hour day-of-month month day-of-week{hint}",
                if fields == 1 { "" } else { "s" }
            )));
        }
        let cron = parser()
            .parse(trimmed)
            .map_err(|e| fail(describe(trimmed, &e)))?;
        let schedule = Self {
            pattern: trimmed.to_owned(),
            timezone,
            cron,
        };
        // A pattern that never fires (31 February) is refused now, not discovered at run time.
        if schedule.next_after(Utc::now()).is_none() {
            return Err(fail("it never fires (no such date)".to_owned()));
        }
        Ok(schedule)
    }

    /// The pattern as given (trimmed).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The timezone the pattern is evaluated in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The first tick strictly after `after`, or `None` if there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ticks fall on whole minutes; croner keeps the fraction of the time it starts from.
        let after = after.trunc_subsecs(0);
        let offset_at = |t: DateTime<Utc>| t.with_timezone(&self.timezone).offset().fix();
        if offset_at(after - AROUND_A_CHANGE) == offset_at(after + AROUND_A_CHANGE) {
            // No change near `after`: wall-clock order is real-time order.
            return self
                .cron
                .find_next_occurrence(&after.with_timezone(&self.timezone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc));
        }
        // Near a change, croner yields both occurrences of a repeated time one after the other
        // (01:00 EDT, 01:00 EST, 01:01 EDT, ...): take the earliest candidate past `after`.
        let start = (after - AROUND_A_CHANGE).with_timezone(&self.timezone);
        let mut best: Option<DateTime<Utc>> = None;
        for candidate in self.cron.iter_after(start) {
            let candidate = candidate.with_timezone(&Utc);
            if best.is_some_and(|b| candidate > b + AROUND_A_CHANGE) {
                break;
            }
            if candidate > after && best.is_none_or(|b| candidate < b) {
                best = Some(candidate);
            }
        }
        best
    }

    /// The next `n` ticks strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::with_capacity(n);
        let mut at = after;
        while ticks.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    ticks.push(next);
                    at = next;
                }
                None => break,
            }
        }
        ticks
    }

    /// The latest tick at or before `at` and after `since`, if any. Used after downtime, to fire
    /// only the most recent missed tick.
    pub fn last_at_or_before(
        &self,
        at: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        // croner's backward search finds the neighbourhood fast, however long ago; near a
        // daylight saving change its answer can be off, so the ticks are walked forward from a
        // little before it with `next_after`, the one rule for what a tick is.
        let near = self
            .cron
            .find_previous_occurrence(&at.trunc_subsecs(0).with_timezone(&self.timezone), true)
            .ok()?
            .with_timezone(&Utc);
        let mut cursor = near.min(at) - AROUND_A_CHANGE;
        let mut last = None;
        while let Some(next) = self.next_after(cursor) {
            if next > at {
                break;
            }
            last = Some(next);
            cursor = next;
        }
        last.filter(|t| *t > since)
    }
}

/// `text` with its first letter in lower case (croner's messages are sentences; Kiln's go after
/// a colon).
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// croner's parser for Kiln's patterns: five fields, no seconds, no year.
fn parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
}

/// The fields of a pattern, with what each allows.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
];

/// croner's error in Kiln's words, naming the field at fault: each field is tried alone (the
/// others `*`), and the first one croner refuses is named with what it allows.
fn describe(pattern: &str, error: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    let said = match error {
        E::EmptyPattern => "it is empty".to_owned(),
        E::InvalidPattern(text) | E::IllegalCharacters(text) | E::ComponentError(text) => {
            text.trim_end_matches('.').to_owned()
        }
        other => other.to_string(),
    };
    let parts: Vec<&str> = pattern.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        return said;
    }
    let parser = parser();
    for (i, (name, allowed)) in FIELDS.iter().enumerate() {
        let alone: Vec<&str> = (0..FIELDS.len())
            .map(|j| if j == i { parts[j] } else { "*" })
            .collect();
        if let Err(e) = parser.parse(&alone.join(" ")) {
            let why = match &e {
                E::InvalidPattern(t) | E::IllegalCharacters(t) | E::ComponentError(t) => {
                    t.trim_end_matches('.').to_owned()
                }
                other => other.to_string(),
            };
            let why = lowercase_first(&why);
            return format!("{name} field \"{}\": {why} (allowed: {allowed})", parts[i]);
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ticks(pattern: &str, tz: &str, from: &str, until: &str) -> Vec<DateTime<Utc>> {
        let schedule = CronSchedule::parse(pattern, Some(tz)).unwrap();
        let (mut at, until) = (utc(from), utc(until));
        let mut out = Vec::new();
        while let Some(next) = schedule.next_after(at) {
            if next > until {
                break;
            }
            out.push(next);
            at = next;
        }
        out
    }

    #[test]
    fn every_minute_and_steps() {
        let s = CronSchedule::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            s.upcoming(utc("2026-01-01T10:07:30Z"), 3),
            vec![
                utc("2026-01-01T10:15:00Z"),
                utc("2026-01-01T10:30:00Z"),
                utc("2026-01-01T10:45:00Z")
            ]
        );
        let s = CronSchedule::parse("* * * * *", None).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T10:07:00Z")),
            Some(utc("2026-01-01T10:08:00Z"))
        );
    }

    #[test]
    fn names_lists_ranges_and_both_day_fields() {
        // 09:00 on weekdays.
        let s = CronSchedule::parse("0 9 * * MON-FRI", None).unwrap();
        // 2026-01-02 is a Friday: next is Monday the 5th.
        assert_eq!(
            s.next_after(utc("2026-01-02T09:00:00Z")),
            Some(utc("2026-01-05T09:00:00Z"))
        );
        // Day-of-month OR day-of-week when both are restricted: the 1st, or any Sunday (7).
        let s = CronSchedule::parse("0 0 1 * 7", None).unwrap();
        assert_eq!(
            s.upcoming(utc("2026-02-27T00:00:00Z"), 2),
            vec![utc("2026-03-01T00:00:00Z"), utc("2026-03-08T00:00:00Z")]
        );
        let s = CronSchedule::parse("30 4 1,15 jan,jul *", None).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-15T04:30:00Z")),
            Some(utc("2026-07-01T04:30:00Z"))
        );
        let s = CronSchedule::parse("@daily", None).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-15T04:30:00Z")),
            Some(utc("2026-01-16T00:00:00Z"))
        );
        // 29 February waits for a leap year.
        let s = CronSchedule::parse("0 0 29 2 *", None).unwrap();
        assert_eq!(
            s.next_after(utc("2026-03-01T00:00:00Z")),
            Some(utc("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        let cases = [
            (
                "61 * * * *",
                "minute field \"61\": number out of bounds (allowed: 0-59)",
            ),
            ("* * * *", "it has 4 fields; a cron pattern has five"),
            ("0 * * * * *", "no seconds field"),
            ("*/0 * * * *", "minute field \"*/0\": step cannot be zero"),
            ("5-1 * * * *", "minute field \"5-1\""),
            ("0 0 * FOO *", "month field \"FOO\""),
            ("0 0 31 2 *", "it never fires"),
            ("@often", "unknown shorthand @often"),
            (
                "0 24 * * *",
                "hour field \"24\": number out of bounds (allowed: 0-23)",
            ),
        ];
        for (pattern, expected) in cases {
            let error = CronSchedule::parse(pattern, None).unwrap_err().to_string();
            assert!(
                error.contains(&format!("\"{pattern}\"")) && error.contains(expected),
                "{pattern}: {error}"
            );
        }
        let error = CronSchedule::parse("0 * * * *", Some("Europe/Berlinn"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown timezone \"Europe/Berlinn\""),
            "{error}"
        );
    }

    // Daylight saving vectors, derived in the style of croner's own DST tests (which use other
    // zones) for the two zones Kiln's users meet most. 2026 changes: Europe/Berlin springs
    // forward on 29 March (02:00 CET -> 03:00 CEST, 01:00Z) and falls back on 25 October
    // (03:00 CEST -> 02:00 CET, 01:00Z); America/New_York on 8 March (02:00 EST -> 03:00 EDT,
    // 07:00Z) and 1 November (02:00 EDT -> 01:00 EST, 06:00Z).

    #[test]
    fn berlin_fixed_time_in_the_gap_fires_once_right_after_the_change() {
        assert_eq!(
            ticks(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-27T12:00:00Z",
                "2026-03-31T12:00:00Z"
            ),
            vec![
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 02:30 does not exist: 03:00 CEST
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
                utc("2026-03-31T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn berlin_interval_job_in_the_gap_is_not_shifted_into_extra_runs() {
        assert_eq!(
            ticks(
                "*/20 2 * * *",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                "2026-03-30T12:00:00Z"
            ),
            vec![
                // Nothing on the 29th: 02:00-02:59 does not exist.
                utc("2026-03-30T00:00:00Z"),
                utc("2026-03-30T00:20:00Z"),
                utc("2026-03-30T00:40:00Z"),
            ]
        );
    }

    #[test]
    fn berlin_repeated_hour_fixed_once_interval_twice() {
        assert_eq!(
            ticks(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-23T12:00:00Z",
                "2026-10-26T12:00:00Z"
            ),
            vec![
                utc("2026-10-24T00:30:00Z"), // 02:30 CEST
                utc("2026-10-25T00:30:00Z"), // the first 02:30 (CEST) only
                utc("2026-10-26T01:30:00Z"), // 02:30 CET
            ]
        );
        assert_eq!(
            ticks(
                "*/30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T12:00:00Z",
                "2026-10-25T12:00:00Z"
            ),
            vec![
                utc("2026-10-25T00:00:00Z"), // 02:00 CEST
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST
                utc("2026-10-25T01:00:00Z"), // 02:00 CET
                utc("2026-10-25T01:30:00Z"), // 02:30 CET
            ]
        );
    }

    #[test]
    fn new_york_fixed_times_across_both_changes() {
        assert_eq!(
            ticks(
                "30 2 * * *",
                "America/New_York",
                "2026-03-07T00:00:00Z",
                "2026-03-09T23:00:00Z"
            ),
            vec![
                utc("2026-03-07T07:30:00Z"), // 02:30 EST
                utc("2026-03-08T07:00:00Z"), // 02:30 does not exist: 03:00 EDT
                utc("2026-03-09T06:30:00Z"), // 02:30 EDT
            ]
        );
        assert_eq!(
            ticks(
                "30 2 * * *",
                "America/New_York",
                "2026-10-31T00:00:00Z",
                "2026-11-02T23:00:00Z"
            ),
            vec![
                utc("2026-10-31T06:30:00Z"),
                utc("2026-11-01T07:30:00Z"), // 02:30 EST: not in the repeated hour
                utc("2026-11-02T07:30:00Z"),
            ]
        );
        assert_eq!(
            ticks(
                "30 1 * * *",
                "America/New_York",
                "2026-11-01T00:00:00Z",
                "2026-11-01T23:00:00Z"
            ),
            vec![utc("2026-11-01T05:30:00Z")], // the first 01:30 (EDT) only
        );
    }

    #[test]
    fn new_york_interval_jobs_across_both_changes() {
        assert_eq!(
            ticks(
                "*/30 1 * * *",
                "America/New_York",
                "2026-11-01T04:00:00Z",
                "2026-11-01T08:00:00Z"
            ),
            vec![
                utc("2026-11-01T05:00:00Z"), // 01:00 EDT
                utc("2026-11-01T05:30:00Z"), // 01:30 EDT
                utc("2026-11-01T06:00:00Z"), // 01:00 EST
                utc("2026-11-01T06:30:00Z"), // 01:30 EST
            ]
        );
        assert_eq!(
            ticks(
                "*/20 2 * * *",
                "America/New_York",
                "2026-03-08T05:00:00Z",
                "2026-03-08T12:00:00Z"
            ),
            Vec::<DateTime<Utc>>::new(),
            "no 02:xx on the spring-forward day, and no run shifted past it"
        );
    }

    #[test]
    fn hourly_jobs_follow_real_hours_across_changes() {
        // Fall-back day in New York has 25 hours: an hourly job fires 25 times.
        let fall = ticks(
            "30 * * * *",
            "America/New_York",
            "2026-11-01T04:00:00Z",
            "2026-11-02T04:59:00Z",
        );
        assert_eq!(fall.len(), 25);
        assert!(fall.windows(2).all(|w| w[1] - w[0] == Duration::hours(1)));
        // Spring-forward day has 23 hours.
        let spring = ticks(
            "30 * * * *",
            "America/New_York",
            "2026-03-08T05:00:00Z",
            "2026-03-09T03:59:00Z",
        );
        assert_eq!(spring.len(), 23);
        assert!(spring.windows(2).all(|w| w[1] - w[0] == Duration::hours(1)));
    }

    #[test]
    fn the_latest_tick_agrees_with_next_after_across_changes() {
        // Spring forward in New York: 02:30 fires at 03:00 EDT (07:00Z) on 8 March.
        let s = CronSchedule::parse("30 2 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            s.last_at_or_before(utc("2026-03-08T09:00:00Z"), utc("2026-03-01T00:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        // Fall back: inside the repeated hour, the newest tick of an interval job is the one
        // that just passed in the second occurrence.
        let s = CronSchedule::parse("*/30 1 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            s.last_at_or_before(utc("2026-11-01T06:40:00Z"), utc("2026-10-01T00:00:00Z")),
            Some(utc("2026-11-01T06:30:00Z")) // 01:30 EST
        );
    }

    #[test]
    fn last_tick_in_a_window() {
        let s = CronSchedule::parse("0 * * * *", None).unwrap();
        assert_eq!(
            s.last_at_or_before(utc("2026-01-01T05:30:00Z"), utc("2026-01-01T01:00:00Z")),
            Some(utc("2026-01-01T05:00:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(utc("2026-01-01T01:30:00Z"), utc("2026-01-01T01:00:00Z")),
            None
        );
        // A year of downtime of an every-minute schedule: the latest missed tick, found fast.
        let s = CronSchedule::parse("* * * * *", None).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            s.last_at_or_before(utc("2027-01-01T05:30:10Z"), utc("2026-01-01T00:00:00Z")),
            Some(utc("2027-01-01T05:30:00Z"))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}

#[cfg(test)]
mod shape_tests {
    use super::CronSchedule;
    use crate::validate_cron_shape;

    #[test]
    fn the_const_shape_check_agrees_with_the_parser_on_common_mistakes() {
        for good in [
            "* * * * *",
            "*/5 9-17 * * MON-FRI",
            "0 0 1 jan,jul *",
            "@hourly",
            "30 2 * * 7",
        ] {
            assert!(validate_cron_shape(good).is_ok(), "{good}");
            assert!(CronSchedule::parse(good, None).is_ok(), "{good}");
        }
        for bad in [
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "* * * *",
            "0 * * * * *",
            "*/0 * * * *",
            "* * * * * ;",
        ] {
            assert!(validate_cron_shape(bad).is_err(), "{bad}");
            assert!(CronSchedule::parse(bad, None).is_err(), "{bad}");
        }
    }
}
