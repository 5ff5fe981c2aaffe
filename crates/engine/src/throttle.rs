//! A rows-per-second limit shared by all copy workers (a token bucket with one
//! second of burst).

use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex;

#[derive(Debug)]
pub struct Throttle {
    rows_per_second: u64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// `0` means unthrottled.
    pub fn new(rows_per_second: u64) -> Throttle {
        Throttle { rows_per_second, state: Mutex::new((rows_per_second as f64, Instant::now())) }
    }

    /// Waits until `rows` more rows may be written.
    pub async fn acquire(&self, rows: u64) {
        if self.rows_per_second == 0 || rows == 0 {
            return;
        }
        let rate = self.rows_per_second as f64;
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            let (tokens, last) = *s;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
            let left = tokens - rows as f64;
            *s = (left, now);
            if left < 0.0 { Duration::from_secs_f64(-left / rate) } else { Duration::ZERO }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_the_rate() {
        let t = Throttle::new(1000);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            t.acquire(1000).await;
        }
        // 1000 rows of burst, then 4000 rows at 1000/s
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(3900) && waited < Duration::from_millis(4500), "{waited:?}");
    }
}
