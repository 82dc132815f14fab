//! Trace context carried from a trigger into its run.
//!
//! A run keeps the W3C `traceparent` of whatever triggered it: the `traceparent` option of a
//! trigger, the `traceparent` header of an HTTP trigger, or, for a trigger made from Rust, the
//! current span's context as the app's [`TracePropagator`] reads it. When a worker starts an
//! attempt, the propagator links the attempt's span to that context, so a trace exporter shows
//! the run under the request that triggered it. Kiln depends on no tracing backend: the app's
//! propagator does the conversion (docs/observability.md shows one for OpenTelemetry).

use std::sync::OnceLock;

/// Connects Kiln to the app's trace context, in both directions.
pub trait TracePropagator: Send + Sync + 'static {
    /// The W3C `traceparent` of the current span, or `None` outside a trace. Kiln stores it with
    /// every run triggered from Rust that does not set one itself. A value that is not a valid
    /// `traceparent` is ignored.
    fn current(&self) -> Option<String>;

    /// Links `span` (the span of a run's attempt, before its body starts) to the context stored
    /// with the run: in OpenTelemetry terms, sets it as the span's parent.
    fn attach(&self, span: &tracing::Span, traceparent: &str);
}

static PROPAGATOR: OnceLock<Box<dyn TracePropagator>> = OnceLock::new();

/// Installs the process's propagator (used by the client for triggers and by the worker for
/// attempts). Returns false, and changes nothing, when one was installed already.
pub fn set_trace_propagator(propagator: impl TracePropagator) -> bool {
    PROPAGATOR.set(Box::new(propagator)).is_ok()
}

/// The current span's `traceparent` by the installed propagator, when there is one and it gives
/// a valid value.
pub fn current_traceparent() -> Option<String> {
    PROPAGATOR
        .get()?
        .current()
        .filter(|value| is_valid_traceparent(value))
}

/// Links a run attempt's span to the run's stored `traceparent`, through the installed
/// propagator (without one, the span only carries it as its `traceparent` field).
pub fn attach_traceparent(span: &tracing::Span, traceparent: &str) {
    if let Some(propagator) = PROPAGATOR.get() {
        propagator.attach(span, traceparent);
    }
}

/// True for a W3C `traceparent` Kiln stores: `version-traceid-parentid-flags` in lowercase hex
/// (2-32-16-2 digits), version not `ff`, trace and parent ids not all zeros. The database checks
/// the same rule for every trigger path.
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if hex(version, 2) && *version != "ff" && hex(trace, 32) && nonzero(trace)
            && hex(parent, 16) && nonzero(parent) && hex(flags, 2))
}

#[cfg(test)]
mod tests {
    use super::is_valid_traceparent;

    #[test]
    fn traceparents_follow_the_w3c_format() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?} accepted");
        }
    }
}
