//! Checks a response against the OpenAPI document: the route and status must be documented, and
//! the body must match the documented schema. Objects are closed: a field the document does not
//! name is an error, so the document cannot fall behind what the server sends.

use axum::http::{Method, StatusCode};
use serde_json::Value;

/// Panics naming the first difference between the response and the document.
pub fn check_response(doc: &Value, method: &Method, uri: &str, status: StatusCode, body: &Value) {
    let path = uri.split('?').next().unwrap_or(uri);
    let (template, operation) = find_operation(doc, method, path)
        .unwrap_or_else(|| panic!("{method} {path} is not in the OpenAPI document"));
    let responses = &operation["responses"];
    let response = responses.get(status.as_str()).unwrap_or_else(|| {
        panic!("{method} {template} answered {status}, which the document does not list: {body}")
    });
    match response.pointer("/content/application~1json/schema") {
        Some(schema) => {
            if let Err(e) = validate(doc, schema, body, "body") {
                panic!("{method} {template} {status}: {e}\nbody: {body}");
            }
        }
        None => assert!(
            body.is_null(),
            "{method} {template} {status} documents no body but sent {body}"
        ),
    }
}

fn find_operation<'a>(doc: &'a Value, method: &Method, path: &str) -> Option<(&'a str, &'a Value)> {
    let wanted: Vec<&str> = path.trim_matches('/').split('/').collect();
    doc["paths"]
        .as_object()?
        .iter()
        .find_map(|(template, item)| {
            let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
            let matches = parts.len() == wanted.len()
                && parts
                    .iter()
                    .zip(&wanted)
                    .all(|(p, w)| (p.starts_with('{') && p.ends_with('}')) || p == w);
            let operation = item.get(method.as_str().to_lowercase())?;
            matches.then_some((template.as_str(), operation))
        })
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("unresolved {reference}")),
            )
        }
        None => schema,
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "number" => value.is_number(),
        other => panic!("unknown schema type {other}"),
    }
}

/// Validates `value` against `schema`; `at` names where, for the error.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let passing = options
            .iter()
            .filter(|s| validate(doc, s, value, at).is_ok())
            .count();
        if passing != 1 {
            return Err(format!(
                "{at}: matches {passing} of the oneOf alternatives, not 1"
            ));
        }
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        if !options.iter().any(|s| validate(doc, s, value, at).is_ok()) {
            return Err(format!("{at}: matches none of the anyOf alternatives"));
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            validate(doc, part, value, at)?;
        }
    }
    match schema.get("type") {
        Some(Value::String(name)) if !type_matches(name, value) => {
            return Err(format!("{at}: expected {name}, got {value}"));
        }
        Some(Value::Array(names))
            if !names
                .iter()
                .filter_map(Value::as_str)
                .any(|n| type_matches(n, value)) =>
        {
            return Err(format!("{at}: expected one of {names:?}, got {value}"));
        }
        _ => {}
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        if !choices.contains(value) {
            return Err(format!("{at}: {value} is not one of {choices:?}"));
        }
    }
    if let (Some(format), Some(text)) =
        (schema.get("format").and_then(Value::as_str), value.as_str())
    {
        let ok = match format {
            "uuid" => text.parse::<uuid::Uuid>().is_ok(),
            "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: {text:?} is not a {format}"));
        }
    }
    if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64) {
        if value.as_f64().is_some_and(|v| v < minimum) {
            return Err(format!("{at}: {value} is below the minimum {minimum}"));
        }
    }
    if let Value::Object(fields) = value {
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !fields.contains_key(required) {
                    return Err(format!("{at}: required field {required:?} is missing"));
                }
            }
            let open = schema
                .get("additionalProperties")
                .is_some_and(|a| a != &Value::Bool(false));
            for (name, field) in fields {
                match properties.get(name) {
                    Some(property) => validate(doc, property, field, &format!("{at}.{name}"))?,
                    None if open => {}
                    None => return Err(format!("{at}: field {name:?} is not in the document")),
                }
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(doc, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}
