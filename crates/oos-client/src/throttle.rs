//! Process-wide throttle gate: one gate per (AccessKeyId, action), shared by every clone of an
//! [`OosClient`](crate::OosClient) (and by `with_credentials` clones).
//!
//! A throttled answer closes the gate of its key until `now + x-acs-retry-after` when the
//! service sent one, else until `now + min(max, base·2^level)` with equal jitter (uniform in
//! the upper half). `level` grows only for a throttled answer to a request sent after the gate
//! last closed, so one wave of concurrent throttled answers raises it once; any success for the
//! key resets it to 0. When the gate reopens after a throttle, exactly one attempt (the probe)
//! goes through; the other waiters keep waiting for its answer: throttled again closes the gate
//! with the next level, anything else opens it for everybody. So the number of attempts made
//! while a key is throttled grows with the logarithm of the throttled time, whatever the number
//! of concurrent callers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long the gate of a throttled key stays closed when the answer carries no
/// `x-acs-retry-after`: `min(max, base·2^level)`, equal jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottlePolicy {
    pub base: Duration,
    pub max: Duration,
}

impl Default for ThrottlePolicy {
    /// 1 s, doubling up to 30 s.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl ThrottlePolicy {
    /// Equal jitter: uniform in `[d/2, d]` with `d = min(max, base·2^level)`.
    pub fn closed_for(&self, level: u32) -> Duration {
        let d = self
            .base
            .saturating_mul(1u32 << level.min(20))
            .min(self.max);
        d / 2 + (d / 2).mul_f64(rand::random::<f64>())
    }
}

/// How an attempt that passed the gate ended, as far as the gate is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    /// A success answer.
    Success,
    /// A throttling answer, with the service's `x-acs-retry-after` if any.
    Throttled(Option<Duration>),
    /// Any other error answer: the key is not throttled.
    OtherAnswer,
    /// No answer (transport error, timeout, cancelled): tells nothing.
    NoAnswer,
}

#[derive(Debug, Default)]
struct KeyState {
    /// Closed while `now < closed_until`.
    closed_until: Option<Instant>,
    /// When the gate last closed.
    closed_at: Option<Instant>,
    level: u32,
    /// Closed since the last answer that was not throttled: reopening lets one probe through.
    half_open: bool,
    probing: bool,
}

#[derive(Debug, Default)]
struct KeyGate {
    state: Mutex<KeyState>,
    changed: Notify,
}

impl KeyGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Key = (String, &'static str);

/// The gates of one client (and its clones).
#[derive(Debug, Default)]
pub(crate) struct ThrottleGate {
    policy: ThrottlePolicy,
    keys: Mutex<HashMap<Key, Arc<KeyGate>>>,
}

/// Permission to send one attempt. Report how it ended with [`Pass::finish`]; a pass dropped
/// unfinished (cancelled call) counts as [`Outcome::NoAnswer`].
#[derive(Debug)]
pub(crate) struct Pass {
    gate: Arc<KeyGate>,
    policy: ThrottlePolicy,
    probe: bool,
    sent_at: Instant,
    finished: bool,
}

impl ThrottleGate {
    pub(crate) fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            keys: Mutex::default(),
        }
    }

    fn key(&self, access_key_id: &str, action: &'static str) -> Arc<KeyGate> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.entry((access_key_id.to_owned(), action))
            .or_default()
            .clone()
    }

    /// Time until the gate of this key reopens (zero when open).
    pub(crate) fn remaining(&self, access_key_id: &str, action: &'static str) -> Duration {
        let g = self.key(access_key_id, action);
        let s = g.lock();
        s.closed_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    /// Wait until this key's gate lets an attempt through, but not past `deadline`.
    /// Returns the pass and the time spent waiting, or the time waited in vain.
    pub(crate) async fn pass(
        &self,
        access_key_id: &str,
        action: &'static str,
        deadline: Instant,
    ) -> Result<(Pass, Duration), Duration> {
        let gate = self.key(access_key_id, action);
        let started = Instant::now();
        let mut waited = false;
        loop {
            let notified = gate.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so no wake-up is lost in between.
            notified.as_mut().enable();
            let until = {
                let mut s = gate.lock();
                let now = Instant::now();
                match s.closed_until {
                    Some(t) if t > now => Some(t),
                    _ if s.half_open && s.probing => None,
                    _ => {
                        let probe = s.half_open;
                        s.probing |= probe;
                        drop(s);
                        let pass = Pass {
                            gate: gate.clone(),
                            policy: self.policy.clone(),
                            probe,
                            sent_at: now,
                            finished: false,
                        };
                        let wait = if waited {
                            started.elapsed()
                        } else {
                            Duration::ZERO
                        };
                        return Ok((pass, wait));
                    }
                }
            };
            if Instant::now() >= deadline {
                return Err(started.elapsed());
            }
            waited = true;
            let wake = until.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

impl Pass {
    /// Call right before the request goes out (after the token bucket).
    pub(crate) fn mark_sent(&mut self) {
        self.sent_at = Instant::now();
    }

    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.apply(outcome);
    }

    fn apply(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut s = self.gate.lock();
        let now = Instant::now();
        match outcome {
            Outcome::Throttled(retry_after) => {
                let fresh = s.closed_at.is_none_or(|c| self.sent_at > c);
                let until = if fresh {
                    let d = retry_after.unwrap_or_else(|| self.policy.closed_for(s.level));
                    s.level = s.level.saturating_add(1);
                    s.closed_at = Some(now);
                    s.half_open = true;
                    Some(now + d)
                } else {
                    // Part of a wave that already closed the gate; only an explicit
                    // retry-after can keep it closed longer.
                    retry_after.map(|d| now + d)
                };
                if let Some(u) = until {
                    s.closed_until = Some(s.closed_until.map_or(u, |c| c.max(u)));
                }
            }
            Outcome::Success => {
                s.level = 0;
                s.half_open = false;
            }
            Outcome::OtherAnswer => {
                if self.probe {
                    s.half_open = false;
                }
            }
            Outcome::NoAnswer => {}
        }
        if self.probe {
            s.probing = false;
        }
        drop(s);
        self.gate.changed.notify_waiters();
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.apply(Outcome::NoAnswer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ms: u64) -> ThrottlePolicy {
        ThrottlePolicy {
            base: Duration::from_millis(ms),
            max: Duration::from_millis(ms * 8),
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn closed_for_is_bounded_equal_jitter() {
        let p = policy(100);
        for level in 0..40 {
            let cap = Duration::from_millis(100 * (1u64 << level.min(3)));
            for _ in 0..50 {
                let d = p.closed_for(level);
                assert!(d >= cap / 2 && d <= cap, "level {level}: {d:?}");
            }
        }
    }

    #[tokio::test]
    async fn one_wave_raises_the_level_once_and_success_resets() {
        let g = ThrottleGate::new(policy(20));
        let mut passes = Vec::new();
        for _ in 0..5 {
            passes.push(g.pass("ak", "Create", far()).await.unwrap().0);
        }
        for p in passes {
            p.finish(Outcome::Throttled(None));
        }
        let k = g.key("ak", "Create");
        assert_eq!(k.lock().level, 1);
        assert!(g.remaining("ak", "Create") > Duration::ZERO);
        // Other actions and keys are not affected.
        assert_eq!(g.remaining("ak", "Get"), Duration::ZERO);
        assert_eq!(g.remaining("other", "Create"), Duration::ZERO);
        let (p, waited) = g.pass("ak", "Create", far()).await.unwrap();
        assert!(waited >= Duration::from_millis(9), "{waited:?}");
        assert!(p.probe);
        p.finish(Outcome::Throttled(None));
        assert_eq!(k.lock().level, 2);
        let (p, _) = g.pass("ak", "Create", far()).await.unwrap();
        p.finish(Outcome::Success);
        let s = k.lock();
        assert_eq!((s.level, s.half_open, s.probing), (0, false, false));
    }

    #[tokio::test]
    async fn retry_after_wins_and_deadline_is_kept() {
        let g = ThrottleGate::new(policy(1));
        let (p, _) = g.pass("ak", "Get", far()).await.unwrap();
        p.finish(Outcome::Throttled(Some(Duration::from_millis(300))));
        assert!(g.remaining("ak", "Get") > Duration::from_millis(250));
        let started = Instant::now();
        let r = g
            .pass("ak", "Get", Instant::now() + Duration::from_millis(50))
            .await;
        assert!(r.is_err());
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[tokio::test]
    async fn only_one_probe_and_a_dropped_probe_hands_over() {
        let g = Arc::new(ThrottleGate::new(policy(10)));
        let (p, _) = g.pass("ak", "Create", far()).await.unwrap();
        p.finish(Outcome::Throttled(None));
        tokio::time::sleep(Duration::from_millis(15)).await;
        let (probe, _) = g.pass("ak", "Create", far()).await.unwrap();
        assert!(probe.probe);
        // While the probe is out, others wait.
        let g2 = g.clone();
        let waiter =
            tokio::spawn(async move { g2.pass("ak", "Create", far()).await.map(|p| p.0.probe) });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        // The probe is cancelled: the waiter becomes the next probe.
        drop(probe);
        assert!(waiter.await.unwrap().unwrap());
    }
}
