//! Errors the emulator answers with, in Alibaba's JSON error shape.

use super::assumptions as a;

/// One gateway or service error. `Display` is the `Message` field; it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Terminal: malformed or incomplete `Authorization` / signed-header set.
    #[error("The request signature does not conform to Aliyun standards. {0}")]
    IncompleteSignature(String),
    /// Terminal: algorithm other than ACS3-HMAC-SHA256.
    #[error("Specified signature method is not valid.")]
    InvalidSignatureMethod,
    /// Terminal: the HMAC did not match.
    #[error("Specified signature does not match our calculation.")]
    SignatureDoesNotMatch,
    /// Terminal: body hash header differs from the body (A3).
    #[error("{}", a::PAYLOAD_HASH_MISMATCH_MESSAGE)]
    PayloadHashMismatch,
    /// Terminal: unknown access key id.
    #[error("Specified access key is not found.")]
    AccessKeyNotFound,
    /// Terminal: `x-acs-date` outside the window.
    #[error("Specified time stamp or date value is expired.")]
    TimeStampExpired,
    /// Terminal: `x-acs-date` does not parse.
    #[error("Specified time stamp or date value is not well formatted.")]
    TimeStampFormat,
    /// Terminal: replayed nonce.
    #[error("Specified signature nonce was used already.")]
    SignatureNonceUsed,
    /// Terminal: STS key without token (A4).
    #[error("{}", a::MISSING_SECURITY_TOKEN_MESSAGE)]
    MissingSecurityToken,
    /// Terminal: token does not belong to the key (A4).
    #[error("{}", a::TOKEN_MISMATCH_MESSAGE)]
    SecurityTokenMismatch,
    /// Terminal until the caller refreshes its credentials (A4).
    #[error("{}", a::TOKEN_EXPIRED_MESSAGE)]
    SecurityTokenExpired,
    /// Terminal: unknown action, version, method or path (A6).
    #[error("Specified api is not found, please check your url and method.")]
    InvalidApi,
    /// Terminal: `Missing{param}`.
    #[error("{0} is mandatory for this action.")]
    Missing(&'static str),
    /// Terminal: `InvalidParameter` with the parameter name and why.
    #[error("Specified parameter {0} is not valid. {1}")]
    InvalidParameter(String, String),
    /// Terminal: STS `InvalidParameter.{param}` (A18).
    #[error("Specified parameter {0} is not valid. {1}")]
    StsInvalidParameter(&'static str, String),
    /// Terminal: A7.
    #[error("{}", a::NOT_FOUND_MESSAGE)]
    NotFound,
    /// Terminal: A7.
    #[error("{}", a::ALREADY_EXISTS_MESSAGE)]
    AlreadyExists,
    /// Any code with its status and message: throttling, an internal failure, or an error a
    /// fault rule injects (A21). `retry_after_ms` becomes `x-acs-retry-after`.
    #[error("{message}")]
    Injected {
        code: String,
        status: u16,
        message: String,
        retry_after_ms: Option<u64>,
    },
}

impl ApiError {
    /// An error answering a known code (A21) with its status and message; an unknown code
    /// answers 500 with the generic message.
    pub fn known(code: &str, retry_after_ms: Option<u64>) -> Self {
        let (status, message) =
            a::known_error(code).unwrap_or_else(|| (500, a::generic_error_message(code)));
        Self::Injected {
            code: code.to_string(),
            status,
            message,
            retry_after_ms,
        }
    }

    /// `InternalError` (500).
    pub fn internal() -> Self {
        Self::known(a::INTERNAL_ERROR_CODE, None)
    }

    /// The `Code` field.
    pub fn code(&self) -> String {
        match self {
            Self::IncompleteSignature(_) => "IncompleteSignature".into(),
            Self::InvalidSignatureMethod => "InvalidSignatureMethod".into(),
            Self::SignatureDoesNotMatch => "SignatureDoesNotMatch".into(),
            Self::PayloadHashMismatch => a::PAYLOAD_HASH_MISMATCH_CODE.into(),
            Self::AccessKeyNotFound => "InvalidAccessKeyId.NotFound".into(),
            Self::TimeStampExpired => "InvalidTimeStamp.Expired".into(),
            Self::TimeStampFormat => "InvalidTimeStamp.Format".into(),
            Self::SignatureNonceUsed => "SignatureNonceUsed".into(),
            Self::MissingSecurityToken => "MissingSecurityToken".into(),
            Self::SecurityTokenMismatch => "InvalidSecurityToken.MismatchWithAccessKey".into(),
            Self::SecurityTokenExpired => "InvalidSecurityToken.Expired".into(),
            Self::InvalidApi => "InvalidApi.NotFound".into(),
            Self::Missing(p) => format!("Missing{p}"),
            Self::InvalidParameter(..) => a::INVALID_PARAMETER_CODE.into(),
            Self::StsInvalidParameter(p, _) => format!("InvalidParameter.{p}"),
            Self::NotFound => a::NOT_FOUND_CODE.into(),
            Self::AlreadyExists => a::ALREADY_EXISTS_CODE.into(),
            Self::Injected { code, .. } => code.clone(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::AccessKeyNotFound | Self::InvalidApi => 404,
            Self::NotFound => a::NOT_FOUND_STATUS,
            Self::AlreadyExists => a::ALREADY_EXISTS_STATUS,
            Self::Injected { status, .. } => *status,
            _ => 400,
        }
    }

    /// Whether a client may retry the same request (reference section 7.4): throttling codes,
    /// `ServiceUnavailable`, `InternalError`, any 5xx or 429, and any answer with
    /// `x-acs-retry-after` (the SDK treats those as throttling).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Injected {
                code,
                status,
                retry_after_ms,
                ..
            } => {
                code.contains("Throttling")
                    || code == "ServiceUnavailable"
                    || code == a::INTERNAL_ERROR_CODE
                    || *status >= 500
                    || *status == 429
                    || retry_after_ms.is_some_and(|ms| ms > 0)
            }
            _ => false,
        }
    }

    /// Value for `x-acs-retry-after`, if any.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::Injected { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }
}

/// Shorthand for `InvalidParameter`.
pub fn invalid(param: impl Into<String>, why: impl Into<String>) -> ApiError {
    ApiError::InvalidParameter(param.into(), why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_statuses_and_classes() {
        let e = ApiError::Missing("Name");
        assert_eq!((e.code().as_str(), e.status()), ("MissingName", 400));
        assert_eq!(e.to_string(), "Name is mandatory for this action.");
        assert_eq!(ApiError::AccessKeyNotFound.status(), 404);
        assert_eq!(ApiError::AlreadyExists.status(), 409);
        let t = ApiError::known("ServiceUnavailable", None);
        assert_eq!(t.status(), 503);
        assert!(t.is_retryable());
        let forbidden = ApiError::known("Forbidden.RAM", None);
        assert_eq!(forbidden.status(), 403);
        assert!(!forbidden.is_retryable());
        assert!(ApiError::known("Throttling.User", None).is_retryable());
        assert_eq!(ApiError::internal().status(), 500);
        assert!(!ApiError::SignatureDoesNotMatch.is_retryable());
        assert_eq!(
            ApiError::StsInvalidParameter("RoleArn", "x".into()).code(),
            "InvalidParameter.RoleArn"
        );
    }

    /// The injection table (A21) gives the same status and message as the emulator's own answers.
    #[test]
    fn known_codes_agree_with_the_emulators_own_errors() {
        for e in [
            ApiError::InvalidSignatureMethod,
            ApiError::SignatureDoesNotMatch,
            ApiError::AccessKeyNotFound,
            ApiError::TimeStampExpired,
            ApiError::TimeStampFormat,
            ApiError::SignatureNonceUsed,
            ApiError::MissingSecurityToken,
            ApiError::SecurityTokenMismatch,
            ApiError::SecurityTokenExpired,
            ApiError::InvalidApi,
            ApiError::Missing("Name"),
            ApiError::NotFound,
            ApiError::AlreadyExists,
        ] {
            let injected = ApiError::known(&e.code(), None);
            assert_eq!(
                (injected.status(), injected.to_string()),
                (e.status(), e.to_string()),
                "{}",
                e.code()
            );
        }
    }
}
