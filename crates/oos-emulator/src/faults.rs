//! Fault injection: added latency, a per-account QPS limit, and rules that answer an error code,
//! reset the connection or stall, randomly (`rate`) or for the next N matching requests
//! (`remaining`).

use super::assumptions as a;
use super::error::ApiError;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The whole fault configuration, as served at `GET /faults` and accepted by `POST /faults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Added to every request on the API listener before it is handled.
    pub latency_ms: u64,
    /// Requests per second per account (owner); more answer `Throttling.User`.
    pub qps_limit: Option<u32>,
    /// `x-acs-retry-after` sent with QPS throttling answers.
    pub qps_retry_after_ms: Option<u64>,
    /// Evaluated in order; the first rule that fires wins.
    pub rules: Vec<FaultRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer `code` instead of handling the request.
    Error,
    /// Close the connection with a TCP reset instead of answering.
    Reset,
    /// Hold the request for `stall_ms`, then go on normally.
    Stall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub kind: FaultKind,
    /// For `error`: any Alibaba error code (A21), e.g. `Throttling.User`, `ServiceUnavailable`,
    /// `Forbidden.RAM`. A known code brings its HTTP status and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For `error`: the HTTP status (400–599); overrides a known code's, required for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// For `error`: the `Message`; default the known code's message, else a generic text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Only requests for this action (an OOS action name or `AssumeRoleWithOIDC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Probability 0..=1 that a matching request fires the rule.
    #[serde(default = "one")]
    pub rate: f64,
    /// Fire for at most this many more requests (deterministic "next N" when rate is 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// For `stall`: how long (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_ms: Option<u64>,
    /// For `error`: send `x-acs-retry-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Apply after the action has run (its change is kept): a lost response.
    #[serde(default)]
    pub after_commit: bool,
}

fn one() -> f64 {
    1.0
}

impl FaultRule {
    pub fn error(code: &str) -> Self {
        Self {
            code: Some(code.to_string()),
            ..Self::of(FaultKind::Error)
        }
    }

    pub fn reset() -> Self {
        Self::of(FaultKind::Reset)
    }

    pub fn stall(ms: u64) -> Self {
        Self {
            stall_ms: Some(ms),
            ..Self::of(FaultKind::Stall)
        }
    }

    fn of(kind: FaultKind) -> Self {
        Self {
            kind,
            code: None,
            http_status: None,
            message: None,
            action: None,
            rate: 1.0,
            remaining: None,
            stall_ms: None,
            retry_after_ms: None,
            after_commit: false,
        }
    }

    /// Limit to the next `n` matching requests.
    pub fn times(mut self, n: u64) -> Self {
        self.remaining = Some(n);
        self
    }

    pub fn for_action(mut self, action: &str) -> Self {
        self.action = Some(action.to_string());
        self
    }

    pub fn with_rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    pub fn after_commit(mut self) -> Self {
        self.after_commit = true;
        self
    }

    /// For `error`: answer this HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// For `error`: answer this `Message`.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// For `error`: send `x-acs-retry-after` with this many milliseconds.
    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// The answer of an `error` rule (A21), or why the rule cannot give one.
    pub fn api_error(&self) -> Result<ApiError, String> {
        let code = self
            .code
            .as_deref()
            .ok_or("code is required for kind error")?;
        if !a::error_code_is_valid(code) {
            return Err(format!(
                "code must be 1-{} characters of letters, digits, '.', '_' or '-'",
                a::ERROR_CODE_MAX_LEN
            ));
        }
        let known = a::known_error(code);
        let status = match (self.http_status, &known) {
            (Some(s), _) => s,
            (None, Some((s, _))) => *s,
            (None, None) => {
                return Err(format!(
                    "http_status is required for {code}, which is not a known code"
                ));
            }
        };
        if !(a::INJECTED_STATUS_MIN..=a::INJECTED_STATUS_MAX).contains(&status) {
            return Err(format!(
                "http_status must be within {}..={}",
                a::INJECTED_STATUS_MIN,
                a::INJECTED_STATUS_MAX
            ));
        }
        let message = match (&self.message, known) {
            (Some(m), _) if m.trim().is_empty() => return Err("message must not be empty".into()),
            (Some(m), _) => m.clone(),
            (None, Some((_, m))) => m,
            (None, None) => a::generic_error_message(code),
        };
        Ok(ApiError::Injected {
            code: code.to_string(),
            status,
            message,
            retry_after_ms: self.retry_after_ms,
        })
    }
}

impl FaultConfig {
    /// Reject settings that cannot be applied.
    pub fn validate(&self) -> Result<(), String> {
        if self.qps_limit == Some(0) {
            return Err("qps_limit must be at least 1".into());
        }
        for (i, r) in self.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&r.rate) {
                return Err(format!("rules[{i}].rate must be within 0..=1"));
            }
            if r.kind == FaultKind::Error {
                r.api_error().map_err(|e| format!("rules[{i}]: {e}"))?;
            } else if r.code.is_some() || r.http_status.is_some() || r.message.is_some() {
                return Err(format!(
                    "rules[{i}]: code, http_status and message are only for kind error"
                ));
            }
        }
        Ok(())
    }
}

/// What the server should do for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Error(ApiError),
    Reset,
    Stall(Duration),
}

/// Shared, mutable fault state. Cloning gives another handle on the same state.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultState>>,
}

#[derive(Default)]
struct FaultState {
    config: FaultConfig,
    windows: HashMap<String, (u64, u32)>,
}

impl Faults {
    /// Current settings (rules show their `remaining` counts).
    pub fn get(&self) -> FaultConfig {
        self.inner.lock().expect("faults lock").config.clone()
    }

    /// Replace all settings.
    pub fn set(&self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        let mut s = self.inner.lock().expect("faults lock");
        s.config = config;
        s.windows.clear();
        Ok(())
    }

    /// Remove every fault.
    pub fn clear(&self) {
        self.set(FaultConfig::default()).expect("default is valid");
    }

    pub fn set_latency(&self, latency: Duration) {
        self.inner.lock().expect("faults lock").config.latency_ms = latency.as_millis() as u64;
    }

    pub fn set_qps_limit(&self, limit: Option<u32>) -> Result<(), String> {
        let mut c = self.get();
        c.qps_limit = limit;
        self.set(c)
    }

    /// Append a rule.
    pub fn add_rule(&self, rule: FaultRule) -> Result<(), String> {
        let mut c = self.get();
        c.rules.push(rule);
        self.set(c)
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.inner.lock().expect("faults lock").config.latency_ms)
    }

    /// The QPS limit for `owner`, counting this request when it is admitted.
    pub(crate) fn admit(&self, owner: &str, now_secs: u64) -> Result<(), ApiError> {
        let mut s = self.inner.lock().expect("faults lock");
        let Some(limit) = s.config.qps_limit else {
            return Ok(());
        };
        let retry_after_ms = s.config.qps_retry_after_ms;
        let w = s.windows.entry(owner.to_string()).or_insert((now_secs, 0));
        if w.0 != now_secs {
            *w = (now_secs, 0);
        }
        if w.1 >= limit {
            return Err(ApiError::known(a::THROTTLING_USER_CODE, retry_after_ms));
        }
        w.1 += 1;
        Ok(())
    }

    /// The first rule that fires for `action` in the given phase, if any.
    pub(crate) fn pick(&self, action: &str, after_commit: bool) -> Option<Fault> {
        let mut s = self.inner.lock().expect("faults lock");
        let mut rng = rand::rng();
        for r in s.config.rules.iter_mut() {
            if r.after_commit != after_commit
                || r.remaining == Some(0)
                || r.action.as_deref().is_some_and(|x| x != action)
            {
                continue;
            }
            if r.rate < 1.0 && rng.random::<f64>() >= r.rate {
                continue;
            }
            if let Some(n) = r.remaining.as_mut() {
                *n -= 1;
            }
            return Some(match r.kind {
                // Rules were validated when set.
                FaultKind::Error => {
                    Fault::Error(r.api_error().unwrap_or_else(|_| ApiError::internal()))
                }
                FaultKind::Reset => Fault::Reset,
                FaultKind::Stall => {
                    Fault::Stall(Duration::from_millis(r.stall_ms.unwrap_or(30_000)))
                }
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_n_rules_are_deterministic_and_filtered() {
        let f = Faults::default();
        f.add_rule(
            FaultRule::error("ServiceUnavailable")
                .for_action("GetChatConfiguration")
                .times(2),
        )
        .unwrap();
        assert_eq!(f.pick("ListChatConfigurations", false), None);
        for _ in 0..2 {
            assert!(
                matches!(f.pick("GetChatConfiguration", false), Some(Fault::Error(e)) if e.status() == 503)
            );
        }
        assert_eq!(f.pick("GetChatConfiguration", false), None);
        assert_eq!(f.get().rules[0].remaining, Some(0));
    }

    #[test]
    fn rate_zero_never_fires_and_validation() {
        let f = Faults::default();
        f.add_rule(FaultRule::reset().with_rate(0.0)).unwrap();
        assert!((0..100).all(|_| f.pick("GetChatConfiguration", false).is_none()));
        // An unknown code needs a status (A21).
        assert!(f.add_rule(FaultRule::error("NoSuchCode")).is_err());
        assert!(f.add_rule(FaultRule::reset().with_rate(1.5)).is_err());
        let parsed: FaultConfig =
            serde_json::from_str(r#"{"latency_ms":5,"rules":[{"kind":"stall","stall_ms":10}]}"#)
                .unwrap();
        assert_eq!(parsed.rules[0], FaultRule::stall(10));
        assert!(serde_json::from_str::<FaultConfig>(r#"{"latency":5}"#).is_err());
    }

    #[test]
    fn qps_window_per_owner() {
        let f = Faults::default();
        f.set_qps_limit(Some(2)).unwrap();
        assert!(f.admit("a", 10).is_ok());
        assert!(f.admit("a", 10).is_ok());
        assert_eq!(f.admit("a", 10).unwrap_err().code(), "Throttling.User");
        assert!(f.admit("b", 10).is_ok());
        assert!(f.admit("a", 11).is_ok());
    }

    fn answer(rule: FaultRule) -> (String, u16, String) {
        let e = rule.api_error().unwrap();
        (e.code(), e.status(), e.to_string())
    }

    /// A21: any code can be injected; known codes bring their status and message.
    #[test]
    fn any_code_with_its_status() {
        for (code, status) in [
            ("Forbidden.RAM", 403),
            ("NoPermission", 403),
            ("InvalidParameter", 400),
            ("InvalidAccessKeyId.NotFound", 404),
            ("SignatureDoesNotMatch", 400),
            ("EntityNotExists.ChatConfiguration", 404),
            ("EntityAlreadyExists.ChatConfiguration", 409),
            ("Throttling.User", 400),
            ("Throttling", 400),
            ("ServiceUnavailable", 503),
            ("InternalError", 500),
            ("MissingName", 400),
        ] {
            let (c, s, m) = answer(FaultRule::error(code));
            assert_eq!((c.as_str(), s), (code, status));
            assert!(!m.is_empty() && !m.contains(code), "{code}: {m}");
        }
        assert_eq!(
            answer(FaultRule::error("Forbidden.RAM")).2,
            "User not authorized to operate on the specified resource, or this API doesn't support RAM."
        );
        assert_eq!(
            answer(FaultRule::error("MissingType")).2,
            "Type is mandatory for this action."
        );
        // Overrides, and an unknown code with a status and the generic message.
        let (c, s, m) = answer(
            FaultRule::error("ServiceUnavailable")
                .with_status(502)
                .with_message("Bad gateway."),
        );
        assert_eq!(
            (c.as_str(), s, m.as_str()),
            ("ServiceUnavailable", 502, "Bad gateway.")
        );
        let (c, s, m) =
            answer(FaultRule::error("QuotaExceeded.ChatConfiguration").with_status(429));
        assert_eq!((c.as_str(), s), ("QuotaExceeded.ChatConfiguration", 429));
        assert_eq!(
            m,
            "The request processing has failed with error QuotaExceeded.ChatConfiguration."
        );
    }

    #[test]
    fn error_rule_validation() {
        let f = Faults::default();
        for bad in [
            FaultRule::error("Unknown.Code"),
            FaultRule::error("Unknown.Code").with_status(200),
            FaultRule::error("InternalError").with_status(600),
            FaultRule::error("InternalError").with_status(399),
            FaultRule::error("Bad Code").with_status(400),
            FaultRule::error("").with_status(400),
            FaultRule::error(&"X".repeat(65)).with_status(400),
            FaultRule::error("InternalError").with_message(" "),
            FaultRule::reset().with_status(500),
            FaultRule::stall(1).with_message("x"),
        ] {
            assert!(f.add_rule(bad.clone()).is_err(), "{bad:?}");
        }
        let mut no_code = FaultRule::error("x");
        no_code.code = None;
        assert!(f.add_rule(no_code).is_err());
        assert!(f.get().rules.is_empty());
        let parsed: FaultConfig = serde_json::from_str(
            r#"{"rules":[{"kind":"error","code":"Forbidden.RAM"},
                {"kind":"error","code":"Custom","http_status":418,"message":"Teapot."}]}"#,
        )
        .unwrap();
        f.set(parsed.clone()).unwrap();
        assert_eq!(f.get(), parsed);
        // Only the fields that were given are shown back.
        let shown = serde_json::to_value(f.get()).unwrap();
        assert!(shown["rules"][0].get("http_status").is_none());
        assert_eq!(shown["rules"][1]["http_status"], 418);
        let Some(Fault::Error(e)) = f.pick("GetChatConfiguration", false) else {
            panic!("rule fires");
        };
        assert_eq!((e.code().as_str(), e.status()), ("Forbidden.RAM", 403));
    }
}
