//! Five-field cron patterns evaluated in an IANA timezone, with defined behaviour across daylight
//! saving changes.
//!
//! Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC), day of week
//! (0-7 or SUN-SAT, 0 and 7 are Sunday). Each field takes `*`, a value, a range `a-b`, a step
//! `*/n`, `a-b/n` or `a/n`, and comma-separated lists of those. When both day fields are
//! restricted, a day matches if either matches (as in Vixie cron). `@hourly`, `@daily`
//! (`@midnight`), `@weekly`, `@monthly` and `@yearly` (`@annually`) are accepted too.
//!
//! Daylight saving:
//! - a local time skipped by a spring-forward change fires once, shifted forward by the gap
//!   (a 02:30 daily job fires at 03:30 on that day), unless the hour field is `*`: such a job
//!   simply has no tick in the skipped hour;
//! - a local time repeated by a fall-back change fires once, at its first occurrence, unless the
//!   hour field is `*`: such a job fires in both occurrences, as the hours really pass.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
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

/// One parsed field: a bit per allowed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    /// The field was `*` (or `?`): every value.
    any: bool,
}

impl Field {
    fn has(self, value: u32) -> bool {
        self.bits & (1u64 << value) != 0
    }
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// The longest stretch searched for a next tick: a pattern such as "0 0 29 2 *" (29 February)
/// may wait up to eight years for its next tick.
const SEARCH_YEARS: i32 = 9;

/// A parsed cron schedule in a timezone.
#[derive(Clone, PartialEq, Eq)]
pub struct CronSchedule {
    pattern: String,
    timezone: Tz,
    minutes: Field,
    hours: Field,
    days_of_month: Field,
    months: Field,
    days_of_week: Field,
}

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
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(fail(format!(
                    "unknown shorthand {trimmed}: use @yearly, @monthly, @weekly, @daily or @hourly"
                )))
            }
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            let hint = if fields.len() == 6 {
                " (Kiln's patterns have no seconds field)"
            } else {
                ""
            };
            return Err(fail(format!(
                "it has {} field{}; a cron pattern has five: minute hour day-of-month month day-of-week{hint}",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            )));
        }
        let minutes = parse_field(fields[0], &MINUTE).map_err(fail)?;
        let hours = parse_field(fields[1], &HOUR).map_err(fail)?;
        let days_of_month = parse_field(fields[2], &DAY_OF_MONTH).map_err(fail)?;
        let months = parse_field(fields[3], &MONTH).map_err(fail)?;
        let mut days_of_week = parse_field(fields[4], &DAY_OF_WEEK).map_err(fail)?;
        if days_of_week.has(7) {
            days_of_week.bits = (days_of_week.bits | 1) & !(1 << 7);
        }
        let schedule = Self {
            pattern: trimmed.to_owned(),
            timezone,
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
        };
        if days_of_week.any && !schedule.some_month_has_a_matching_day() {
            return Err(fail(format!(
                "day-of-month \"{}\" never occurs in month \"{}\"",
                fields[2], fields[3]
            )));
        }
        Ok(schedule)
    }

    fn some_month_has_a_matching_day(&self) -> bool {
        // Longest length of each month (February in a leap year).
        const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12u32).any(|m| {
            self.months.has(m) && (1..=LONGEST[m as usize - 1]).any(|d| self.days_of_month.has(d))
        })
    }

    /// The pattern as given (trimmed).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The timezone the pattern is evaluated in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The first tick strictly after `after`, or `None` if there is none in the next years.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Local wall-clock times are visited in order; around a fall-back change one local time
        // maps to two instants, so the search starts a little before `after` and keeps the
        // smallest instant past it among candidates up to a few hours past the first one found.
        let start_local = after.with_timezone(&self.timezone).naive_local() - Duration::hours(3);
        let mut local = start_local.with_second(0)?.with_nanosecond(0)?;
        let limit = local + Duration::days(366 * i64::from(SEARCH_YEARS));
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        while local <= limit {
            if let Some((_, found_local)) = best {
                if local > found_local + Duration::hours(3) {
                    break;
                }
            }
            match self.next_local_match(local, limit) {
                None => break,
                Some(candidate) => {
                    for instant in self.instants(candidate) {
                        if instant > after && best.is_none_or(|(b, _)| instant < b) {
                            best = Some((instant, best.map_or(candidate, |(_, l)| l)));
                        }
                    }
                    local = candidate + Duration::minutes(1);
                }
            }
        }
        best.map(|(instant, _)| instant)
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
    /// only the most recent missed tick; the search looks back in growing windows, so a long
    /// outage of a frequent schedule costs a few steps, not one per missed tick.
    pub fn last_at_or_before(
        &self,
        at: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        for window in [Duration::hours(2), Duration::days(2), Duration::days(64)] {
            let from = (at - window).max(since);
            if let Some(last) = self.last_in(from, at) {
                return Some(last);
            }
            if from == since {
                return None;
            }
        }
        self.last_in(since, at)
    }

    /// The latest tick in `(from, at]`, walking forward from `from`.
    fn last_in(&self, from: DateTime<Utc>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut last = None;
        let mut cursor = from;
        while let Some(next) = self.next_after(cursor) {
            if next > at {
                break;
            }
            last = Some(next);
            cursor = next;
        }
        last
    }

    /// The instants a matching local time stands for, per the daylight saving rules above.
    fn instants(&self, local: NaiveDateTime) -> Vec<DateTime<Utc>> {
        match self.timezone.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            chrono::LocalResult::Ambiguous(first, second) => {
                if self.hours.any {
                    vec![first.with_timezone(&Utc), second.with_timezone(&Utc)]
                } else {
                    vec![first.with_timezone(&Utc)]
                }
            }
            chrono::LocalResult::None => {
                if self.hours.any {
                    return Vec::new();
                }
                // Skipped by a spring-forward change: read it with the offset in force before
                // the change, which lands the same distance past the change.
                let before = local - Duration::hours(3);
                match self.timezone.from_local_datetime(&before) {
                    chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                        let offset = t.naive_local() - t.naive_utc();
                        vec![Utc.from_utc_datetime(&(local - offset))]
                    }
                    chrono::LocalResult::None => Vec::new(),
                }
            }
        }
    }

    /// The first local time at or after `from` that matches the fields, skipping whole days,
    /// hours and months that cannot match.
    fn next_local_match(&self, from: NaiveDateTime, limit: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = from;
        while t <= limit {
            let date = t.date();
            if !self.months.has(date.month()) {
                t = first_of_next_month(date)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.day_matches(date) {
                t = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.hours.has(t.hour()) {
                t = t.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if !self.minutes.has(t.minute()) {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days_of_month.has(date.day());
        let dow = self.days_of_week.has(date.weekday().num_days_from_sunday());
        match (self.days_of_month.any, self.days_of_week.any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

fn parse_field(text: &str, spec: &FieldSpec) -> Result<Field, String> {
    let name = spec.name;
    if text == "*" || text == "?" {
        let mut bits = 0u64;
        for v in spec.min..=spec.max {
            bits |= 1 << v;
        }
        return Ok(Field { bits, any: true });
    }
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(format!("{name} field \"{text}\" has an empty list item"));
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| {
                    format!("{name} field \"{text}\": step \"{step}\" is not a positive number")
                })?;
                if step == 0 {
                    return Err(format!(
                        "{name} field \"{text}\": a step must be at least 1"
                    ));
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let (low, high) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, spec, text)?, value(b, spec, text)?);
            if a > b {
                return Err(format!(
                    "{name} field \"{text}\": range {a}-{b} runs backwards (write the smaller value first)"
                ));
            }
            (a, b)
        } else {
            let a = value(range, spec, text)?;
            // "a/n" means from a to the end of the range in steps of n.
            (a, if step.is_some() { spec.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(Field { bits, any: false })
}

fn value(text: &str, spec: &FieldSpec, field: &str) -> Result<u32, String> {
    let name = spec.name;
    if let Some(i) = spec.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32 + if spec.min == 1 { 1 } else { 0 });
    }
    let v: u32 = text.parse().map_err(|_| {
        let names = if spec.names.is_empty() {
            String::new()
        } else {
            format!(
                " or a name ({}-{})",
                spec.names[0],
                spec.names[spec.names.len() - 1]
            )
        };
        format!("{name} field \"{field}\": \"{text}\" is not a number{names}",)
    })?;
    if v < spec.min || v > spec.max {
        return Err(format!(
            "{name} field \"{field}\": {v} is out of range {}-{}",
            spec.min, spec.max
        ));
    }
    Ok(v)
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
            ("61 * * * *", "minute field \"61\": 61 is out of range 0-59"),
            ("* * * *", "it has 4 fields; a cron pattern has five"),
            ("0 * * * * *", "no seconds field"),
            ("*/0 * * * *", "a step must be at least 1"),
            ("5-1 * * * *", "runs backwards"),
            (
                "0 0 * FOO *",
                "month field \"FOO\": \"FOO\" is not a number or a name (JAN-DEC)",
            ),
            (
                "0 0 31 2 *",
                "day-of-month \"31\" never occurs in month \"2\"",
            ),
            ("@often", "unknown shorthand @often"),
            ("0 24 * * *", "hour field \"24\": 24 is out of range 0-23"),
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

    #[test]
    fn berlin_daily_0230_fires_once_on_both_change_days() {
        // Spring forward: 2026-03-29 02:00 CET -> 03:00 CEST; 02:30 does not exist.
        let spring = ticks(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-27T12:00:00Z",
            "2026-03-31T12:00:00Z",
        );
        assert_eq!(
            spring,
            vec![
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:30:00Z"), // shifted to 03:30 CEST
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
                utc("2026-03-31T00:30:00Z"),
            ]
        );
        // Fall back: 2026-10-25 03:00 CEST -> 02:00 CET; 02:30 happens twice.
        let fall = ticks(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-23T12:00:00Z",
            "2026-10-27T12:00:00Z",
        );
        assert_eq!(
            fall,
            vec![
                utc("2026-10-24T00:30:00Z"), // 02:30 CEST
                utc("2026-10-25T00:30:00Z"), // first 02:30 (CEST) only
                utc("2026-10-26T01:30:00Z"), // 02:30 CET
                utc("2026-10-27T01:30:00Z"),
            ]
        );
    }

    #[test]
    fn new_york_daily_jobs_across_both_changes() {
        // Spring forward: 2026-03-08 02:00 EST -> 03:00 EDT.
        let spring = ticks(
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T00:00:00Z",
            "2026-03-09T23:00:00Z",
        );
        assert_eq!(
            spring,
            vec![
                utc("2026-03-07T07:30:00Z"), // 02:30 EST
                utc("2026-03-08T07:30:00Z"), // shifted to 03:30 EDT
                utc("2026-03-09T06:30:00Z"), // 02:30 EDT
            ]
        );
        // Fall back: 2026-11-01 02:00 EDT -> 01:00 EST; 01:00-01:59 happens twice.
        let fall = ticks(
            "30 2 * * *",
            "America/New_York",
            "2026-10-31T00:00:00Z",
            "2026-11-02T23:00:00Z",
        );
        assert_eq!(
            fall,
            vec![
                utc("2026-10-31T06:30:00Z"),
                utc("2026-11-01T07:30:00Z"), // 02:30 EST, once
                utc("2026-11-02T07:30:00Z"),
            ]
        );
        let repeated_hour = ticks(
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T00:00:00Z",
            "2026-11-01T23:00:00Z",
        );
        assert_eq!(repeated_hour, vec![utc("2026-11-01T05:30:00Z")]); // first 01:30 (EDT)
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
