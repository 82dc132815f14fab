//! Checks JSON values against JSON Schemas (draft 2020-12, the keywords `schemars` emits and
//! OpenAPI 3.1 uses): `$ref` within the document, `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `prefixItems`, `enum`, `const`, `oneOf`, `anyOf`, `allOf`,
//! `minimum`, `maximum`, `minLength`, `maxLength`, `minItems`, `maxItems`, and the formats
//! `uuid`, `date-time` and schemars' integer formats. Other keywords are ignored. Kiln uses it to
//! refuse an untyped trigger whose payload cannot decode into the task's payload type, with the
//! path of the field that is wrong.

use serde_json::Value;

/// How strictly objects are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Objects {
    /// As JSON Schema says: fields a schema does not name are allowed unless
    /// `additionalProperties` is false.
    #[default]
    Open,
    /// Fields a schema does not name are refused unless `additionalProperties` allows them (used
    /// to check that a document names every field a server sends).
    Closed,
}

/// Checks `value` against `schema`, whose `$ref`s point into `root` (`#/$defs/...` or
/// `#/components/schemas/...`). The error names the first wrong field by its path from `at`
/// (`payload.ws_id: expected a string, got 42`).
pub fn validate(
    root: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    objects: Objects,
) -> Result<(), String> {
    Checker { root, objects }.check(schema, value, at, 0)
}

/// `$ref` chains and nesting deeper than this are refused (a cyclic schema).
const MAX_DEPTH: usize = 64;

struct Checker<'a> {
    root: &'a Value,
    objects: Objects,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => value.is_number(),
        _ => true,
    }
}

fn article(name: &str) -> String {
    match name {
        "null" => "null".into(),
        "integer" | "object" | "array" => format!("an {name}"),
        other => format!("a {other}"),
    }
}

fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

impl Checker<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value, depth: usize) -> Result<&'s Value, String> {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) if depth < MAX_DEPTH => {
                let pointer = reference.strip_prefix('#').ok_or_else(|| {
                    format!("the schema refers outside itself ({reference}), which Kiln does not follow")
                })?;
                let target = self
                    .root
                    .pointer(pointer)
                    .ok_or_else(|| format!("the schema refers to {reference}, which it lacks"))?;
                self.resolve(target, depth + 1)
            }
            Some(_) => Err("the schema's references nest too deep".into()),
            None => Ok(schema),
        }
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("{at}: the value nests too deep for its schema"));
        }
        let schema = self.resolve(schema, depth)?;
        match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{at}: no value is allowed here")),
            _ => {}
        }
        self.check_type(schema, value, at)?;
        self.check_combinators(schema, value, at, depth)?;
        if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
            if !choices.contains(value) {
                let names: Vec<String> = choices.iter().map(shown).collect();
                return Err(format!(
                    "{at}: expected one of {}, got {}",
                    names.join(", "),
                    shown(value)
                ));
            }
        }
        if let Some(expected) = schema.get("const") {
            if expected != value {
                return Err(format!(
                    "{at}: expected {}, got {}",
                    shown(expected),
                    shown(value)
                ));
            }
        }
        self.check_bounds(schema, value, at)?;
        match value {
            Value::Object(fields) => self.check_object(schema, fields, at, depth),
            Value::Array(items) => self.check_array(schema, items, at, depth),
            _ => Ok(()),
        }
    }

    fn check_type(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let names: Vec<&str> = match schema.get("type") {
            Some(Value::String(name)) => vec![name.as_str()],
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
            _ => return Ok(()),
        };
        if names.iter().any(|name| type_matches(name, value)) {
            return Ok(());
        }
        let wanted: Vec<String> = names.iter().map(|n| article(n)).collect();
        Err(format!(
            "{at}: expected {}, got {}",
            wanted.join(" or "),
            match value {
                Value::Null => "null".into(),
                other => format!("{} ({})", type_name(other), shown(other)),
            }
        ))
    }

    fn check_combinators(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), String> {
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.check(part, value, at, depth + 1)?;
        }
        if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
            let errors: Vec<String> = options
                .iter()
                .filter_map(|s| self.check(s, value, at, depth + 1).err())
                .collect();
            if errors.len() == options.len() {
                return Err(errors
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| format!("{at}: no alternative matches")));
            }
        }
        if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            let results: Vec<Result<(), String>> = options
                .iter()
                .map(|s| self.check(s, value, at, depth + 1))
                .collect();
            let passing = results.iter().filter(|r| r.is_ok()).count();
            if passing == 0 {
                return Err(results
                    .into_iter()
                    .find_map(Result::err)
                    .unwrap_or_else(|| format!("{at}: no alternative matches")));
            }
            if passing > 1 {
                return Err(format!(
                    "{at}: {} matches {passing} alternatives, not exactly one",
                    shown(value)
                ));
            }
        }
        Ok(())
    }

    fn check_bounds(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let number = |key: &str| schema.get(key).and_then(Value::as_f64);
        let count = |key: &str| schema.get(key).and_then(Value::as_u64);
        if let Some(v) = value.as_f64() {
            let format_min = match schema.get("format").and_then(Value::as_str) {
                Some(f) if f.starts_with("uint") => Some(0.0),
                _ => None,
            };
            if let Some(min) = number("minimum").or(format_min) {
                if v < min {
                    return Err(format!("{at}: {v} is below the minimum {min}"));
                }
            }
            if let Some(max) = number("maximum") {
                if v > max {
                    return Err(format!("{at}: {v} is above the maximum {max}"));
                }
            }
        }
        if let Some(text) = value.as_str() {
            let len = text.chars().count() as u64;
            if count("minLength").is_some_and(|min| len < min) {
                return Err(format!(
                    "{at}: {} is shorter than {} characters",
                    shown(value),
                    count("minLength").unwrap_or(0)
                ));
            }
            if count("maxLength").is_some_and(|max| len > max) {
                return Err(format!(
                    "{at}: the string is longer than {} characters",
                    count("maxLength").unwrap_or(0)
                ));
            }
            let ok = match schema.get("format").and_then(Value::as_str) {
                Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
                Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                _ => true,
            };
            if !ok {
                let format = schema
                    .get("format")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return Err(format!("{at}: {} is not a {format}", shown(value)));
            }
        }
        if let Some(items) = value.as_array() {
            let len = items.len() as u64;
            if count("minItems").is_some_and(|min| len < min) {
                return Err(format!(
                    "{at}: expected at least {} items, got {len}",
                    count("minItems").unwrap_or(0)
                ));
            }
            if count("maxItems").is_some_and(|max| len > max) {
                return Err(format!(
                    "{at}: expected at most {} items, got {len}",
                    count("maxItems").unwrap_or(0)
                ));
            }
        }
        Ok(())
    }

    fn check_object(
        &self,
        schema: &Value,
        fields: &serde_json::Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<(), String> {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(required) {
                return Err(format!("{at}.{required}: this field is required"));
            }
        }
        let additional = schema.get("additionalProperties");
        for (name, field) in fields {
            let path = format!("{at}.{name}");
            match (properties.and_then(|p| p.get(name)), additional) {
                (Some(property), _) => self.check(property, field, &path, depth + 1)?,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{path}: this field is not allowed here"))
                }
                (None, Some(extra)) => self.check(extra, field, &path, depth + 1)?,
                (None, None) if self.objects == Objects::Closed && properties.is_some() => {
                    return Err(format!("{path}: this field is not in the schema"))
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    fn check_array(
        &self,
        schema: &Value,
        items: &[Value],
        at: &str,
        depth: usize,
    ) -> Result<(), String> {
        let prefix = schema
            .get("prefixItems")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{at}[{i}]");
            if let Some(item_schema) = prefix.get(i).or_else(|| schema.get("items")) {
                self.check(item_schema, item, &path, depth + 1)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: &Value, value: Value) -> Result<(), String> {
        validate(schema, schema, &value, "payload", Objects::Open)
    }

    #[test]
    fn wrong_fields_are_named_by_their_path() {
        let schema = json!({
            "type": "object",
            "required": ["ws_id", "events"],
            "properties": {
                "ws_id": {"type": "string"},
                "events": {"type": "array", "items": {"$ref": "#/$defs/Event"}},
                "limit": {"type": ["integer", "null"], "format": "uint32", "minimum": 0}
            },
            "$defs": {"Event": {"type": "object", "required": ["title"],
                                "properties": {"title": {"type": "string"}}}}
        });
        assert_eq!(check(&schema, json!({"ws_id": "w", "events": []})), Ok(()));
        assert_eq!(
            check(&schema, json!({"ws_id": 42, "events": []})).unwrap_err(),
            "payload.ws_id: expected a string, got an integer (42)"
        );
        assert_eq!(
            check(&schema, json!({"events": []})).unwrap_err(),
            "payload.ws_id: this field is required"
        );
        assert_eq!(
            check(
                &schema,
                json!({"ws_id": "w", "events": [{"title": "a"}, {"title": null}]})
            )
            .unwrap_err(),
            "payload.events[1].title: expected a string, got null"
        );
        assert!(
            check(&schema, json!({"ws_id": "w", "events": [], "limit": -1}))
                .unwrap_err()
                .contains("below the minimum")
        );
        assert_eq!(
            check(&schema, json!({"ws_id": "w", "events": [], "limit": null})),
            Ok(())
        );
        assert_eq!(
            check(&schema, json!({"ws_id": "w", "events": [], "extra": 1})),
            Ok(())
        );
    }

    #[test]
    fn enums_alternatives_and_closed_objects() {
        let schema = json!({
            "oneOf": [
                {"type": "string", "enum": ["daily", "hourly"]},
                {"type": "object", "properties": {"every": {"type": "integer"}},
                 "required": ["every"], "additionalProperties": false}
            ]
        });
        assert_eq!(check(&schema, json!("daily")), Ok(()));
        assert_eq!(check(&schema, json!({"every": 5})), Ok(()));
        assert!(check(&schema, json!("weekly"))
            .unwrap_err()
            .contains("expected one of"));
        assert!(check(&schema, json!({"every": 5, "x": 1})).is_err());
        let open = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            validate(&open, &open, &json!({"b": 1}), "body", Objects::Open),
            Ok(())
        );
        assert!(
            validate(&open, &open, &json!({"b": 1}), "body", Objects::Closed)
                .unwrap_err()
                .contains("body.b")
        );
    }

    #[test]
    fn a_cyclic_reference_is_refused_not_followed_forever() {
        let schema = json!({"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}});
        assert!(check(&schema, json!(1)).is_err());
    }
}
