//! RFC 7807 problem responses. Every refusal of the KBS is one of these; no
//! handler returns a bare 500 for bad input.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A refusal: HTTP status, a short machine-readable kind and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short kind, e.g. `NonceMismatch` (also the last path segment of `type`).
    pub kind: &'static str,
    /// Human-readable reason.
    pub detail: String,
}

impl Problem {
    /// Build a problem.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }
    /// 400.
    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }
    /// 401.
    pub fn unauthorized(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, kind, detail)
    }
    /// 403.
    pub fn forbidden(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, detail)
    }
    /// 404.
    pub fn not_found(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, kind, detail)
    }
    /// 500, for failures of the KBS itself (storage), never for bad input.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", detail)
    }
    /// 503: the KBS is at a bound (connections, replay cache); retry later.
    pub fn unavailable(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, detail)
    }
    /// 429: this client exceeded its request rate.
    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "RateLimited", detail)
    }

    /// The problem `type`: the KBS protocol's own error type where it
    /// defines one for this refusal (Trustee's
    /// `https://github.com/confidential-containers/kbs/errors/<Type>`), ours
    /// (`tag:cloister,2026:kbs/errors/<kind>`) where it does not.
    pub fn type_uri(&self) -> String {
        match spec_type(self.kind) {
            Some(t) => format!("{SPEC_ERROR_PREFIX}{t}"),
            None => format!("tag:cloister,2026:kbs/errors/{}", self.kind),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "type": self.type_uri(),
            "title": self.kind,
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
    }
}

/// Prefix of the KBS protocol's error types.
pub const SPEC_ERROR_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors/";

/// The protocol's error type for one of our kinds, where one exists.
pub fn spec_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "MissingCookie" => "MissingCookie",
        "InvalidSession" => "InvalidCookie",
        "ExpiredSession" => "ExpiredCookie",
        "NotAttested" => "UnAuthenticatedCookie",
        "AttestationFailed" => "VerificationFailed",
        "InvalidToken" => "JWTVerificationFailed",
        "AdminUnauthorized" | "AdminDisabled" => "FailedAuthentication",
        _ => return None,
    })
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            self.body().to_string(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_types_where_the_protocol_has_them() {
        let p = Problem::unauthorized("AttestationFailed", "x");
        assert_eq!(
            p.body()["type"],
            "https://github.com/confidential-containers/kbs/errors/VerificationFailed"
        );
        assert_eq!(p.body()["title"], "AttestationFailed");
        let p = Problem::unauthorized("MissingCookie", "x");
        assert!(p.type_uri().ends_with("/errors/MissingCookie"));
        let p = Problem::unauthorized("InvalidSession", "x");
        assert!(p.type_uri().ends_with("/errors/InvalidCookie"));
        // No protocol type: ours.
        let p = Problem::bad_request("BadResourcePath", "x");
        assert_eq!(p.type_uri(), "tag:cloister,2026:kbs/errors/BadResourcePath");
    }
}
