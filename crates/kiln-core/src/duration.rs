//! Human-written durations ("500ms", "30s", "5m", "1h30m", "2d", "1w"), parsed in `const` context so a
//! task definition with a bad duration fails to compile.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// The string is empty.
    Empty,
    /// A unit is not one of ms, s, m, h, d, w.
    UnknownUnit,
    /// A number has no unit after it, or a unit has no number before it.
    MissingPart,
    /// The value does not fit in a `Duration` of milliseconds.
    Overflow,
}

impl DurationError {
    /// A sentence describing the problem.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Empty => "it is empty",
            Self::UnknownUnit => "it uses a unit other than ms, s, m, h, d, w",
            Self::MissingPart => "each number needs a unit and each unit a number",
            Self::Overflow => "it is too large",
        }
    }
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration such as `"500ms"`, `"30s"`, `"5m"`, `"1h30m"` or `"2d"`.
pub const fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let mut number: u64 = 0;
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            number = match number.checked_mul(10) {
                Some(n) => match n.checked_add((bytes[i] - b'0') as u64) {
                    Some(n) => n,
                    None => return Err(DurationError::Overflow),
                },
                None => return Err(DurationError::Overflow),
            };
            i += 1;
        }
        if i == start {
            return Err(DurationError::MissingPart);
        }
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_len = i - unit_start;
        if unit_len == 0 {
            return Err(DurationError::MissingPart);
        }
        let first = bytes[unit_start];
        let second = if unit_len > 1 {
            bytes[unit_start + 1]
        } else {
            0
        };
        let unit_ms: u64 = match (unit_len, first, second) {
            (2, b'm', b's') => 1,
            (1, b's', _) => 1_000,
            (1, b'm', _) => 60_000,
            (1, b'h', _) => 3_600_000,
            (1, b'd', _) => 86_400_000,
            (1, b'w', _) => 604_800_000,
            _ => return Err(DurationError::UnknownUnit),
        };
        total_ms = match number.checked_mul(unit_ms) {
            Some(part) => match total_ms.checked_add(part) {
                Some(t) => t,
                None => return Err(DurationError::Overflow),
            },
            None => return Err(DurationError::Overflow),
        };
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1w2d"), Ok(Duration::from_secs(9 * 86_400)));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("5"), Err(DurationError::MissingPart));
        assert_eq!(parse_duration("m"), Err(DurationError::MissingPart));
        assert_eq!(parse_duration("5 minutes"), Err(DurationError::MissingPart));
        assert_eq!(parse_duration("5min"), Err(DurationError::UnknownUnit));
        assert_eq!(parse_duration("5y"), Err(DurationError::UnknownUnit));
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow)
        );
    }
}
