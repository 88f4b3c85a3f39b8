//! Reconcile errors, each classed retryable (back off and try again) or terminal (Stalled; wait
//! for a change to the object or its Secrets).
//!
//! Conditions and events carry [`Error::reason`] and [`Error::condition_message`], which are
//! stable: the same failure gives the same text on every attempt, so a retry never rewrites
//! status. Per-request details (RequestId, the service's message) go to the log line only.

use oos_client::error::OosError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kubernetes API failure (apiserver down, conflict, timeout): retryable.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An OOS call failed; classification comes from the client.
    #[error("{action}: {source}")]
    Oos {
        action: &'static str,
        #[source]
        source: Box<OosError>,
    },
    /// A referenced Secret or key is missing: waits for the Secret watch, no retry storm.
    #[error("Secret {namespace}/{name} {problem}")]
    SecretMissing {
        namespace: String,
        name: String,
        problem: String,
    },
    /// A referenced Secret key still holds the placeholder `remote export` wrote: terminal until
    /// the Secret changes (its watch wakes the object).
    #[error(
        "Secret {namespace}/{name} key {key:?} still holds the export placeholder; put the real value in it"
    )]
    SecretPlaceholder {
        namespace: String,
        name: String,
        key: String,
    },
    /// A referenced Secret value can never be sent (not UTF-8, too long, a control or invisible
    /// character): terminal until the Secret changes (its watch wakes the object).
    #[error("Secret {namespace}/{name} key {key:?} {problem}")]
    SecretInvalid {
        namespace: String,
        name: String,
        key: String,
        problem: String,
    },
    /// The spec cannot be turned into a request (should have been caught at admission): terminal.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// Deletion cannot go on without a human (credentials gone, paused): terminal until the
    /// object or its Secrets change.
    #[error("{message}")]
    DeletionBlocked {
        reason: &'static str,
        message: String,
    },
    /// Deletion found no remote, but a Create whose answer was lost may still be committed by
    /// the service: the object is kept until `until` (then looked at again, after `wait`), so
    /// that what the Create makes is deleted rather than leaked. Retryable.
    #[error(
        "deletion waits until {until} for a Create whose answer was lost: the service may still complete it, and what it makes is then deleted"
    )]
    CreateInFlight {
        until: String,
        wait: std::time::Duration,
    },
    /// The finalizer helper failed around our reconcile.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Wraps an OOS error with the action that failed.
pub fn oos(action: &'static str) -> impl FnOnce(OosError) -> Error {
    move |source| Error::Oos {
        action,
        source: Box::new(source),
    }
}

impl Error {
    /// The error our reconcile returned, through the finalizer helper's wrapper.
    fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(f) => match f.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.inner(),
                _ => self,
            },
            other => other,
        }
    }

    /// Whether retrying later may succeed without any change to the object or its Secrets.
    pub fn is_retryable(&self) -> bool {
        match self.inner() {
            Error::Kube(_) | Error::Finalizer(_) | Error::CreateInFlight { .. } => true,
            Error::Oos { source, .. } => source.is_retryable(),
            Error::SecretMissing { .. }
            | Error::SecretPlaceholder { .. }
            | Error::SecretInvalid { .. }
            | Error::InvalidSpec(_)
            | Error::DeletionBlocked { .. } => false,
        }
    }

    /// Terminal: nothing but a change of the object, its Secrets or the credentials helps.
    pub fn awaits_change(&self) -> bool {
        !self.is_retryable() && self.retry_after().is_none()
    }

    /// When to look again, for an error that knows it (rather than the exponential backoff).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self.inner() {
            Error::CreateInFlight { wait, .. } => Some(*wait),
            _ => None,
        }
    }

    /// The OOS error code, when OOS answered one.
    pub fn code(&self) -> Option<&str> {
        match self.inner() {
            Error::Oos { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The OOS RequestId of the failed request (for the log line, never for status).
    pub fn request_id(&self) -> Option<&str> {
        match self.inner() {
            Error::Oos { source, .. } => source.request_id(),
            _ => None,
        }
    }

    /// Condition reason (CamelCase, a small fixed set).
    pub fn reason(&self) -> &'static str {
        match self.inner() {
            Error::Kube(_) => "KubernetesError",
            Error::Oos { source, .. } => oos_reason(source),
            Error::SecretMissing { .. } => "SecretNotFound",
            Error::SecretPlaceholder { .. } => "SecretPlaceholder",
            Error::SecretInvalid { .. } => "SecretInvalid",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::DeletionBlocked { reason, .. } => reason,
            Error::CreateInFlight { .. } => "CreateInFlight",
            Error::Finalizer(_) => "FinalizerError",
        }
    }

    /// Condition and event message: stable across attempts (no RequestId, no timestamps).
    pub fn condition_message(&self) -> String {
        match self.inner() {
            Error::Kube(kube::Error::Api(status)) => format!(
                "Kubernetes API request failed (HTTP {}, {})",
                status.code, status.reason
            ),
            Error::Kube(_) => "Kubernetes API unreachable".to_string(),
            Error::Oos { action, source } => oos_message(action, source),
            other => other.to_string(),
        }
    }
}

fn oos_reason(e: &OosError) -> &'static str {
    match e {
        OosError::Api { code, .. }
            if code.starts_with("InvalidAccessKeyId")
                || code.contains("Signature")
                || code.contains("SecurityToken") =>
        {
            "InvalidCredentials"
        }
        OosError::Api { code, .. } if code.starts_with("Forbidden") || code == "NoPermission" => {
            "Forbidden"
        }
        OosError::Api { code, .. } if code.contains("Throttling") => "Throttled",
        OosError::Api { code, .. }
            if code.starts_with("Invalid") || code.starts_with("Missing") =>
        {
            "InvalidParameter"
        }
        OosError::Credentials(_) => "CredentialsUnavailable",
        // Refused by the client before sending (e.g. too large for any gateway).
        OosError::InvalidRequest(_) => "InvalidParameter",
        _ if e.is_retryable() => "RemoteUnavailable",
        _ => "RemoteError",
    }
}

fn oos_message(action: &str, e: &OosError) -> String {
    match e {
        OosError::Api {
            code,
            message,
            status,
            ..
        } => match oos_reason(e) {
            "InvalidCredentials" => {
                format!("OOS rejected the credentials: {action} answered {code}")
            }
            "Forbidden" => format!(
                "the credentials lack a RAM permission: {action} answered {code}; grant it, then request a reconcile (reconcile.fluxcd.io/requestedAt)"
            ),
            "Throttled" => {
                format!("OOS is throttling: {action} answered {code}; retrying with backoff")
            }
            // The service names the offending parameter, and says it the same way every time.
            "InvalidParameter" => format!(
                "OOS refused the request: {action} answered {code}: {}",
                truncate(message, 300)
            ),
            _ => format!("{action} answered {code} (HTTP {status})"),
        },
        OosError::Timeout => format!("{action} timed out"),
        OosError::Transport(_) => format!("cannot reach OOS ({action}: connection failed)"),
        OosError::Credentials(c) => format!("no usable credentials: {}", truncate(&c.message, 300)),
        OosError::Decode(_) => format!("{action}: cannot decode the OOS response"),
        OosError::InvalidRequest(m) | OosError::Config(m) => format!("{action}: {m}"),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max).collect::<String>() + "…"
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, request_id: &str) -> OosError {
        OosError::Api {
            status: 400,
            code: code.into(),
            message: "Specified parameter RamRole is not valid.".into(),
            request_id: Some(request_id.into()),
            host_id: None,
            recommend: None,
            retry_after: None,
        }
    }

    #[test]
    fn condition_messages_are_stable_across_attempts() {
        for code in [
            "InvalidParameter",
            "SignatureDoesNotMatch",
            "Forbidden.RAM",
            "Throttling.User",
            "InternalError",
        ] {
            let a = oos("CreateChatConfiguration")(api(code, "REQ-1"));
            let b = oos("CreateChatConfiguration")(api(code, "REQ-2"));
            assert_eq!(a.condition_message(), b.condition_message(), "{code}");
            assert!(!a.condition_message().contains("REQ-1"), "{code}");
            assert!(a.condition_message().contains(code), "{code} is named");
            assert_eq!(a.request_id(), Some("REQ-1"));
        }
        let e = oos("CreateChatConfiguration")(api("InvalidParameter", "R"));
        assert_eq!(e.reason(), "InvalidParameter");
        assert!(!e.is_retryable());
        assert!(e.condition_message().contains("RamRole"), "names the field");
        let t = oos("ListChatConfigurations")(api("Throttling.User", "R"));
        assert_eq!((t.reason(), t.is_retryable()), ("Throttled", true));
        let c = oos("ListChatConfigurations")(api("InvalidAccessKeyId.NotFound", "R"));
        assert_eq!(
            (c.reason(), c.is_retryable()),
            ("InvalidCredentials", false)
        );
    }
}
