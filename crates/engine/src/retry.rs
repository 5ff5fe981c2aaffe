//! The retry policy: transient errors (connection lost, server restarting, deadlock,
//! lock wait timeout) are retried with exponential backoff; everything else stops.
//!
//! Used as an explicit loop, so the retried code can own its connections:
//! ```ignore
//! let mut backoff = policy.backoff();
//! let rows = loop {
//!     match read().await {
//!         Ok(rows) => break rows,
//!         Err(e) => backoff.retry_after("read chunk", e).await?, // sleeps, or gives up
//!     }
//! };
//! ```

use std::time::{Duration, Instant};

use pontoon_core::{Error, Result};

/// How long and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Give up when the next attempt would start later than this after the first.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    /// Long enough to ride out a server restart.
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            give_up_after: Duration::from_secs(180),
        }
    }
}

impl RetryPolicy {
    /// Starts counting attempts of one operation.
    pub fn backoff(&self) -> Backoff {
        Backoff { policy: *self, start: Instant::now(), delay: self.first_delay, attempts: 0 }
    }
}

/// The retry state of one operation.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    start: Instant,
    delay: Duration,
    attempts: u32,
}

impl Backoff {
    /// Called after a failed attempt: sleeps and returns `Ok` when the error is
    /// transient and time is left, otherwise returns the error.
    pub async fn retry_after(&mut self, what: &str, e: Error) -> Result<()> {
        if !e.is_transient() || self.start.elapsed() + self.delay >= self.policy.give_up_after {
            return Err(e);
        }
        self.attempts += 1;
        tracing::warn!(error = %e, attempt = self.attempts, delay_ms = self.delay.as_millis() as u64, "{what}: transient error, retrying");
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.policy.max_delay);
        Ok(())
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pontoon_core::ErrorKind;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            give_up_after: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn retries_transient_errors_then_gives_up() {
        let mut b = quick().backoff();
        for _ in 0..3 {
            b.retry_after("t", Error::new(ErrorKind::Transient, "reset")).await.unwrap();
        }
        assert_eq!(b.attempts(), 3);
        let mut given_up = false;
        for _ in 0..1000 {
            if b.retry_after("t", Error::new(ErrorKind::Transient, "reset")).await.is_err() {
                given_up = true;
                break;
            }
        }
        assert!(given_up, "gives up after give_up_after");
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let mut b = quick().backoff();
        let e = b.retry_after("t", Error::new(ErrorKind::ValueRange, "too long")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueRange);
        assert_eq!(b.attempts(), 0);
    }
}
