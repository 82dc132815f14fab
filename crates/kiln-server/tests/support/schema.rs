//! Checks a response against the OpenAPI document: the route and status must be documented, and
//! the body must match the documented schema. Objects are closed: a field the document does not
//! name is an error, so the document cannot fall behind what the server sends.

use axum::http::{Method, StatusCode};
use kiln_core::json_schema;
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

/// Validates `value` against `schema` (refs into `doc`), objects closed: a field the document
/// does not name is an error.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    json_schema::validate(doc, schema, value, at, json_schema::Objects::Closed)
}
