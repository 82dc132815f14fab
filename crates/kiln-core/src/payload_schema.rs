//! `payload_schema: true` in `task!`: the payload type's JSON Schema, from `schemars` (the
//! `schema` feature).

/// The JSON Schema of `T` (draft 2020-12).
#[cfg(feature = "schema")]
#[doc(hidden)]
pub fn schema_for<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a JSON Schema serializes")
}

/// Without the `schema` feature, `payload_schema: true` cannot compile; this says why.
#[cfg(not(feature = "schema"))]
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`payload_schema: true` needs Kiln's `schema` feature",
    note = "enable it (`kiln = {{ version = \"...\", features = [\"schema\"] }}`) and derive `schemars::JsonSchema` on the payload type"
)]
pub trait SchemaFeatureOff {}

/// Without the `schema` feature, `payload_schema: true` cannot compile.
#[cfg(not(feature = "schema"))]
#[doc(hidden)]
pub fn schema_for<T: SchemaFeatureOff>() -> serde_json::Value {
    serde_json::Value::Null
}
