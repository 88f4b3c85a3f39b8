//! Client-side token bucket shared by every caller in the process (pass the same `Arc`).
//! One token is taken per HTTP attempt, retries included, so retries cannot amplify a storm.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `qps` tokens per second, at most `burst` (min 1) stored. A non-finite or non-positive
    /// `qps` disables limiting.
    pub fn new(qps: f64, burst: u32) -> Arc<Self> {
        let burst = f64::from(burst.max(1));
        Arc::new(Self {
            qps,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
            }),
        })
    }

    /// No limit at all (tests, one-shot CLI calls).
    pub fn unlimited() -> Arc<Self> {
        Self::new(f64::INFINITY, 1)
    }

    fn limited(&self) -> bool {
        self.qps.is_finite() && self.qps > 0.0
    }

    /// Wait for one token.
    pub async fn acquire(&self) {
        if !self.limited() {
            return;
        }
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
                s.tokens = (s.tokens + elapsed * self.qps).min(self.burst);
                s.last = now;
                if s.tokens >= 1.0 {
                    s.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.tokens) / self.qps)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn burst_then_rate() {
        let b = TokenBucket::new(20.0, 3);
        let start = std::time::Instant::now();
        for _ in 0..3 {
            b.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(40),
            "burst should be immediate"
        );
        for _ in 0..4 {
            b.acquire().await;
        }
        // 4 more tokens at 20/s need at least ~200 ms.
        let e = start.elapsed();
        assert!(e >= Duration::from_millis(190), "too fast: {e:?}");
        assert!(e < Duration::from_secs(2), "too slow: {e:?}");
    }

    #[tokio::test]
    async fn shared_between_tasks() {
        let b = TokenBucket::new(50.0, 1);
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.acquire().await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 1 immediate + 5 at 50/s = ≥ 100 ms whatever the interleaving.
        assert!(start.elapsed() >= Duration::from_millis(95));
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let b = TokenBucket::unlimited();
        let start = std::time::Instant::now();
        for _ in 0..10_000 {
            b.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
