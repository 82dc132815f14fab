//! The API's one error shape, `{"error": {"code", "message"}}`, and the one place where error
//! codes become HTTP statuses.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_client::{ClientError, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to an API caller. Its message never holds SQL, a stack or a secret.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong and what to do.
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What failed.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `invalid_request`, `invalid_option`, `invalid_payload`, `payload_too_large`, `not_found`,
    /// `conflict`, `unauthorized`, `forbidden`, `timeout`, `unavailable`, `internal`.
    pub code: String,
    /// What went wrong, and what to do.
    pub message: String,
}

/// The one place where error codes become HTTP statuses.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::InvalidOption | ErrorCode::InvalidPayload => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        let code = error.code();
        let message = match &error {
            // The database's own text may quote statements or rows: it goes to the server's
            // log, and the caller learns only what failed.
            ClientError::Store(_) | ClientError::Connect { .. } => {
                tracing::error!(error = %error, "request failed in the database");
                match code {
                    ErrorCode::Unavailable => {
                        "the database cannot be reached; try again shortly".to_owned()
                    }
                    _ => "the database refused the request; the server's log has the details"
                        .to_owned(),
                }
            }
            _ if code == ErrorCode::InvalidOption => with_api_option_names(&error.to_string()),
            _ => error.to_string(),
        };
        Self { code, message }
    }
}

/// Trigger options as the API spells them, beside the names the database's validator uses.
const API_OPTION_NAMES: [(&str, &str); 6] = [
    ("idempotency_key_ttl", "idempotencyKeyTtl"),
    ("idempotency_key", "idempotencyKey"),
    ("concurrency_key", "concurrencyKey"),
    ("max_attempts", "maxAttempts"),
    ("max_duration", "maxDuration"),
    ("allow_unregistered", "allowUnregistered"),
];

/// The validator's message with option names spelled as API callers write them (`maxAttempts`
/// for `max_attempts`), replacing whole words only.
fn with_api_option_names(message: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while let Some(c) = rest.chars().next() {
        let boundary_before = !out.chars().next_back().is_some_and(is_word);
        if boundary_before {
            for (snake, camel) in API_OPTION_NAMES {
                if let Some(after) = rest.strip_prefix(snake) {
                    if !after.chars().next().is_some_and(is_word) {
                        out.push_str(camel);
                        rest = after;
                        continue 'scan;
                    }
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn option_names_are_respelled_as_whole_words_only() {
        assert_eq!(
            super::with_api_option_names(
                "max_attempts must be from 1; concurrency_key is 300 bytes; my_max_attempts stays"
            ),
            "maxAttempts must be from 1; concurrencyKey is 300 bytes; my_max_attempts stays"
        );
        assert_eq!(
            super::with_api_option_names("idempotency_key_ttl and idempotency_key"),
            "idempotencyKeyTtl and idempotencyKey"
        );
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
            },
        };
        (status_of(self.code), axum::Json(body)).into_response()
    }
}

/// A JSON request body: malformed JSON or a field of the wrong type is a 400 naming the field's
/// path; a body over the route's limit is a 413.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        Ok(Self(parse_body(&bytes)?))
    }
}

/// A JSON request body that may be left out (an empty body, or `null`, reads as
/// `T::default()`).
#[derive(Debug)]
pub(crate) struct ApiJsonOrDefault<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJsonOrDefault<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        let text = String::from_utf8_lossy(&bytes);
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(Self(T::default()));
        }
        Ok(Self(parse_body(&bytes)?))
    }
}

/// The body's bytes; over the route's limit, a 413 in the API's error shape.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(e)
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the request body is larger than this server accepts (see the server's \
                     --max-body setting)",
                )
            }
            other => ApiError::new(ErrorCode::InvalidRequest, other.body_text()),
        })
}

/// Parses JSON, naming the path of a field that does not fit.
fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("the request body is not valid: {inner}")
        } else {
            format!("the request body is not valid at {path}: {inner}")
        };
        ApiError::new(ErrorCode::InvalidRequest, message)
    })
}

/// Refuses a URL holding `\u0000` (Postgres cannot store it), before it reaches the database.
fn refuse_nul(parts: &axum::http::request::Parts) -> Result<(), ApiError> {
    if parts.uri.to_string().contains("%00") {
        return Err(ApiError::new(
            ErrorCode::InvalidOption,
            "the URL holds the character \\u0000, which Kiln cannot store: remove it",
        ));
    }
    Ok(())
}

/// Defines an extractor over axum's `$inner` that refuses `\u0000` in the URL and answers a
/// value that does not parse with a 400 in the API's error shape.
macro_rules! url_extractor {
    ($(#[$doc:meta])* $name:ident, $inner:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name<T>(pub(crate) T);

        impl<S, T> axum::extract::FromRequestParts<S> for $name<T>
        where
            S: Send + Sync,
            T: DeserializeOwned + Send,
        {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, ApiError> {
                refuse_nul(parts)?;
                axum::extract::$inner::<T>::from_request_parts(parts, state)
                    .await
                    .map(|value| Self(value.0))
                    .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))
            }
        }
    };
}

url_extractor!(
    /// A path parameter; one that does not parse (a run id that is not a UUID) is a 400.
    ApiPath,
    Path
);
url_extractor!(
    /// Query parameters; one that does not parse is a 400 naming it.
    ApiQuery,
    Query
);
