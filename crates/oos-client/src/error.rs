//! Client errors, each classed retryable or terminal (see [`OosError::is_retryable`]).

use std::time::Duration;

/// A credential problem. `transient` is set by the provider when a later attempt may succeed
/// (STS unreachable, STS 5xx/throttling); everything else (missing variables, bad file,
/// rejected OIDC token) is terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsError {
    pub message: String,
    pub transient: bool,
}

impl std::fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Errors of the OOS client. No variant ever carries a secret or the query string of a
/// request: messages from the service are scrubbed before they are stored (see `client.rs`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum OosError {
    /// The service answered 4xx/5xx. Retryable for throttling, `ServiceUnavailable`,
    /// `InternalError`, 5xx, 429 or a valid `x-acs-retry-after`; terminal otherwise.
    #[error("OOS API error {code} (HTTP {status}): {message}{}", request_id.as_deref().map(|r| format!(" [RequestId {r}]")).unwrap_or_default())]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        host_id: Option<String>,
        recommend: Option<String>,
        retry_after: Option<Duration>,
    },
    /// Connect error, reset, broken body: retryable.
    #[error("transport error: {0}")]
    Transport(String),
    /// The per-attempt timeout elapsed: retryable.
    #[error("request timed out")]
    Timeout,
    /// Credentials could not be obtained: terminal unless `transient`.
    #[error("credentials: {0}")]
    Credentials(CredentialsError),
    /// A success response we cannot parse: terminal.
    #[error("cannot decode response: {0}")]
    Decode(String),
    /// The caller asked for something that cannot be sent (bad region, empty name): terminal.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Client configuration (endpoint URL, HTTP client construction): terminal.
    #[error("client configuration: {0}")]
    Config(String),
}

impl OosError {
    pub fn credentials(message: impl Into<String>) -> Self {
        Self::Credentials(CredentialsError {
            message: message.into(),
            transient: false,
        })
    }

    pub fn credentials_transient(message: impl Into<String>) -> Self {
        Self::Credentials(CredentialsError {
            message: message.into(),
            transient: true,
        })
    }

    /// Whether the same request may succeed later (section 7.4 of the protocol notes).
    pub fn is_retryable(&self) -> bool {
        match self {
            OosError::Api {
                status,
                code,
                retry_after,
                ..
            } => {
                code.contains("Throttling")
                    || code.starts_with("ServiceUnavailable")
                    || code.starts_with("InternalError")
                    || *status >= 500
                    || *status == 429
                    // The SDK treats any error carrying a valid retry-after as throttling.
                    || retry_after.is_some()
            }
            OosError::Transport(_) | OosError::Timeout => true,
            OosError::Credentials(e) => e.transient,
            OosError::Decode(_) | OosError::InvalidRequest(_) | OosError::Config(_) => false,
        }
    }

    /// `EntityNotExists.*` (the emulator answers `EntityNotExists.ChatConfiguration`, HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.code()
            .is_some_and(|c| c.starts_with("EntityNotExists"))
    }

    /// `EntityAlreadyExists.*` (the emulator answers `EntityAlreadyExists.ChatConfiguration`, 409).
    pub fn is_already_exists(&self) -> bool {
        self.code()
            .is_some_and(|c| c.starts_with("EntityAlreadyExists"))
    }

    /// The service error code, for API errors only.
    pub fn code(&self) -> Option<&str> {
        match self {
            OosError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The service request id, for API errors only (useful in status conditions and support tickets).
    pub fn request_id(&self) -> Option<&str> {
        match self {
            OosError::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// A throttling answer: a code containing `Throttling`, HTTP 429, or a valid
    /// `x-acs-retry-after` (the SDK's rule). Closes the throttle gate of its key.
    pub fn is_throttling(&self) -> bool {
        match self {
            OosError::Api {
                status,
                code,
                retry_after,
                ..
            } => code.contains("Throttling") || *status == 429 || retry_after.is_some(),
            _ => false,
        }
    }

    /// The service's `x-acs-retry-after`, for API errors that carried a valid one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OosError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True when the service may have executed the request although it did not say so: no
    /// answer (transport error, timeout) or a 5xx that is not throttling (a gateway or the
    /// service may fail after the write committed).
    pub(crate) fn is_ambiguous(&self) -> bool {
        match self {
            OosError::Transport(_) | OosError::Timeout => true,
            OosError::Api { status, .. } => *status >= 500 && !self.is_throttling(),
            _ => false,
        }
    }
}

/// The first of `names` present in `obj` as a JSON string.
pub(crate) fn json_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    names: &[&str],
) -> Option<String> {
    names
        .iter()
        .find_map(|n| obj.get(*n))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// `Code`/`code` and `Message`/`message` of an Alibaba error body, if it is JSON.
pub(crate) fn error_code_message(body: &[u8]) -> (String, String) {
    let obj = serde_json::from_slice::<serde_json::Value>(body).ok();
    let obj = obj.as_ref().and_then(|v| v.as_object());
    match obj {
        Some(o) => (
            json_field(o, &["Code", "code"]).unwrap_or_else(|| "Unknown".into()),
            json_field(o, &["Message", "message"]).unwrap_or_default(),
        ),
        None => (
            "Unknown".into(),
            format!("non-JSON error body ({} bytes)", body.len()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> OosError {
        OosError::Api {
            status,
            code: code.into(),
            message: "m".into(),
            request_id: Some("RID".into()),
            host_id: None,
            recommend: None,
            retry_after: None,
        }
    }

    #[test]
    fn classification() {
        for (status, code) in [
            (400, "Throttling"),
            (400, "Throttling.User"),
            (400, "Throttling.Api"),
            (400, "Rejected.Throttling"),
            (503, "ServiceUnavailable"),
            (500, "InternalError"),
            (502, "Whatever"),
            (429, "TooMany"),
        ] {
            assert!(api(status, code).is_retryable(), "{code} should retry");
        }
        for (status, code) in [
            (400, "IncompleteSignature"),
            (400, "SignatureDoesNotMatch"),
            (404, "InvalidAccessKeyId.NotFound"),
            (400, "InvalidTimeStamp.Expired"),
            (400, "SignatureNonceUsed"),
            (400, "InvalidSecurityToken.Expired"),
            (400, "MissingName"),
            (400, "InvalidParameter"),
            (403, "Forbidden.RAM"),
            (404, "EntityNotExists.ChatConfiguration"),
            (409, "EntityAlreadyExists.ChatConfiguration"),
        ] {
            assert!(
                !api(status, code).is_retryable(),
                "{code} should be terminal"
            );
        }
        let mut throttled = api(400, "SomethingElse");
        if let OosError::Api { retry_after, .. } = &mut throttled {
            *retry_after = Some(Duration::from_millis(5));
        }
        assert!(throttled.is_retryable());
        assert!(OosError::Transport("reset".into()).is_retryable());
        assert!(OosError::Timeout.is_retryable());
        assert!(!OosError::Decode("x".into()).is_retryable());
        assert!(!OosError::credentials("x").is_retryable());
        assert!(OosError::credentials_transient("x").is_retryable());
    }

    #[test]
    fn throttling_and_ambiguity() {
        for (status, code) in [
            (400, "Throttling.User"),
            (429, "TooMany"),
            (503, "Throttling"),
        ] {
            let e = api(status, code);
            assert!(e.is_throttling() && !e.is_ambiguous(), "{code}");
        }
        let mut ra = api(400, "Whatever");
        if let OosError::Api { retry_after, .. } = &mut ra {
            *retry_after = Some(Duration::from_millis(5));
        }
        assert!(ra.is_throttling());
        assert_eq!(ra.retry_after(), Some(Duration::from_millis(5)));
        // A 5xx that is not throttling may have committed.
        for (status, code) in [
            (500, "InternalError"),
            (502, "Unknown"),
            (503, "ServiceUnavailable"),
        ] {
            let e = api(status, code);
            assert!(e.is_ambiguous() && !e.is_throttling(), "{code}");
        }
        assert!(OosError::Timeout.is_ambiguous());
        assert!(OosError::Transport("reset".into()).is_ambiguous());
        assert!(!api(409, "EntityAlreadyExists.ChatConfiguration").is_ambiguous());
        assert!(!api(400, "InvalidParameter").is_throttling());
    }

    #[test]
    fn not_found_and_exists() {
        let nf = api(404, "EntityNotExists.ChatConfiguration");
        assert!(nf.is_not_found() && !nf.is_already_exists());
        let ae = api(409, "EntityAlreadyExists.ChatConfiguration");
        assert!(ae.is_already_exists() && !ae.is_not_found());
        assert_eq!(ae.code(), Some("EntityAlreadyExists.ChatConfiguration"));
        assert!(!OosError::Timeout.is_not_found());
        assert_eq!(OosError::Timeout.code(), None);
        assert!(nf.to_string().contains("RequestId RID"));
    }
}
