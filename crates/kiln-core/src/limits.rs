//! Limits on what a run carries. The authority is the database: every trigger (Rust, CLI, HTTP,
//! SQL) goes through `kiln.trigger_runs`, which checks sizes, lengths, counts and ranges against
//! the one row of `kiln.limits` (whose defaults are the constants here). What Rust checks before
//! sending is what Postgres cannot even receive: a string holding `\u0000` (not storable in
//! `jsonb` or `text`), named by its path.

/// Default largest payload, metadata or output, as stored `jsonb`: 4 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Default longest concurrency key, idempotency key or tag, in bytes (Postgres indexes them; a btree
/// entry must stay well under a page).
pub const MAX_KEY_BYTES: usize = 255;

/// Default longest duration a trigger option (delay, ttl, priority, idempotency key ttl, max duration)
/// may take: ten years.
pub const MAX_OPTION_DURATION: std::time::Duration =
    std::time::Duration::from_secs(10 * 365 * 24 * 3600);
/// Default most attempts a run may be given.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1_000;

/// Why a JSON value cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Larger than allowed.
    #[error("{field} is {bytes} bytes of JSON, over the limit of {max} bytes: store large data elsewhere and pass a reference")]
    TooLarge {
        /// Which field (`payload`, `metadata`).
        field: String,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Holds a character Postgres cannot store.
    #[error("{path} holds the character \\u0000, which PostgreSQL cannot store: remove it or encode the value (e.g. base64)")]
    Nul {
        /// Where, e.g. `payload.events[3].title`.
        path: String,
    },
}

/// Checks that `value` (named `field`) fits in `max` bytes of JSON and holds no `\u0000` in
/// any string or key.
pub fn check_json(field: &str, value: &serde_json::Value, max: usize) -> Result<(), LimitError> {
    find_nul(value, field.to_owned())?;
    let bytes = json_size(value);
    if bytes > max {
        return Err(LimitError::TooLarge {
            field: field.to_owned(),
            bytes,
            max,
        });
    }
    Ok(())
}

/// Checks that a string holds no `\u0000`, which Postgres cannot store.
pub fn check_storable(field: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!(
            "{field} holds the character \\u0000, which PostgreSQL cannot store"
        ));
    }
    Ok(())
}

/// Checks a key or tag: at most [`MAX_KEY_BYTES`] and no `\u0000`.
pub fn check_key(field: &str, value: &str) -> Result<(), String> {
    check_storable(field, value)?;
    if value.len() > MAX_KEY_BYTES {
        return Err(format!(
            "{field} is {} bytes, over the limit of {MAX_KEY_BYTES}: use a shorter key (a hash of it, say)",
            value.len()
        ));
    }
    Ok(())
}

fn find_nul(value: &serde_json::Value, path: String) -> Result<(), LimitError> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Err(LimitError::Nul { path }),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| find_nul(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            let child = format!("{path}.{key}");
            if key.contains('\0') {
                return Err(LimitError::Nul { path: child });
            }
            find_nul(item, child)
        }),
        _ => Ok(()),
    }
}

/// Bytes of `value` serialized as compact JSON, counted without building the string.
fn json_size(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("a JSON value always serializes");
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nul_is_found_with_its_path() {
        let value = json!({"ws_id": "w1", "events": [{"title": "ok"}, {"title": "a\u{0}b"}]});
        assert_eq!(
            check_json("payload", &value, MAX_PAYLOAD_BYTES),
            Err(LimitError::Nul {
                path: "payload.events[1].title".into()
            })
        );
        let key = json!({"a\u{0}": 1});
        assert!(matches!(
            check_json("metadata", &key, 100),
            Err(LimitError::Nul { .. })
        ));
    }

    #[test]
    fn size_is_the_compact_json_length() {
        let value = json!({"s": "x".repeat(100)});
        assert_eq!(json_size(&value), 100 + r#"{"s":""}"#.len());
        assert!(matches!(
            check_json("payload", &value, 50),
            Err(LimitError::TooLarge {
                bytes: 108,
                max: 50,
                ..
            })
        ));
        assert!(check_json("payload", &value, 108).is_ok());
    }

    #[test]
    fn keys_are_bounded() {
        assert!(check_key("tag", &"t".repeat(255)).is_ok());
        assert!(check_key("tag", &"t".repeat(256))
            .unwrap_err()
            .contains("over the limit"));
        assert!(check_key("tag", "a\u{0}").is_err());
    }
}
