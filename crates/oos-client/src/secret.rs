//! A string that never shows up in `Debug`/`Display` output (logs, error messages, panics).

use serde::{Deserialize, Serialize};

/// Text printed instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// A secret value (AccessKeySecret, STS token, OIDC token, DingTalk ClientSecret, AesKey).
///
/// `Debug` and `Display` print `<redacted>`; the value is only reachable through [`expose`].
/// Serde is transparent on purpose: the value has to reach the wire (JSON `Configuration`).
///
/// [`expose`]: SecretString::expose
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = SecretString::from("hunter2-very-secret".to_string());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(
            format!("{:#?}", Some(s.clone())),
            "Some(\n    <redacted>,\n)"
        );
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn serde_is_transparent() {
        let s = SecretString::from("abc");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"abc\"");
        let back: SecretString = serde_json::from_str("\"xyz\"").unwrap();
        assert_eq!(back.expose(), "xyz");
        assert_ne!(back, s);
    }
}
