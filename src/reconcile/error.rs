//! Reconcile errors, each classed retryable (back off and try again) or terminal (Stalled; wait
//! for a change to the object or its Secrets).

use oos_client::error::OosError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kubernetes API failure (apiserver down, conflict, timeout): retryable.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// OOS call failed; classification comes from the client.
    #[error("{0}")]
    Oos(#[from] OosError),
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
    /// The spec cannot be turned into a request (should have been caught at admission): terminal.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The finalizer helper failed around our reconcile.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Whether retrying later may succeed without any change to the object or its Secrets.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kube(_) => true,
            Error::Oos(e) => e.is_retryable(),
            Error::SecretMissing { .. }
            | Error::SecretPlaceholder { .. }
            | Error::InvalidSpec(_) => false,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_retryable(),
                _ => true,
            },
        }
    }

    /// Condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesError",
            Error::Oos(e) => match e {
                OosError::Api { code, .. }
                    if code.starts_with("InvalidAccessKeyId")
                        || code.contains("Signature")
                        || code.contains("SecurityToken") =>
                {
                    "InvalidCredentials"
                }
                OosError::Api { code, .. }
                    if code.starts_with("Forbidden") || code == "NoPermission" =>
                {
                    "Forbidden"
                }
                OosError::Api { code, .. } if code.contains("Throttling") => "Throttled",
                OosError::Api { code, .. }
                    if code.starts_with("Invalid") || code.starts_with("Missing") =>
                {
                    "InvalidParameter"
                }
                OosError::Credentials(_) => "CredentialsUnavailable",
                _ if e.is_retryable() => "RemoteUnavailable",
                _ => "RemoteError",
            },
            Error::SecretMissing { .. } => "SecretNotFound",
            Error::SecretPlaceholder { .. } => "SecretPlaceholder",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "FinalizerError",
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
