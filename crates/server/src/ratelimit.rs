//! Rate limiting per API key: a token bucket per key, refilled at `rate` tokens a second up to
//! `burst`. A request takes one token; without one it is refused with 429 `rate_limited` and
//! `Retry-After`. Counting is in integer micro-tokens: no floats.

use crate::error::{ApiError, ErrorType};
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

const MICRO: u128 = 1_000_000;

struct Bucket {
    /// Micro-tokens left.
    tokens: u128,
    refilled: Instant,
}

/// The buckets of every key seen; one entry per key, so memory grows with keys only.
pub struct RateLimiter {
    /// Tokens a second; 0 turns limiting off.
    rate: u32,
    burst: u32,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter { rate, burst: burst.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key` at `now`, or refuses with 429 `rate_limited`.
    pub fn check(&self, key: &[u8; 32], now: Instant) -> Result<(), ApiError> {
        if self.rate == 0 {
            return Ok(());
        }
        let capacity = u128::from(self.burst) * MICRO;
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let bucket = buckets.entry(*key).or_insert(Bucket { tokens: capacity, refilled: now });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_nanos();
        // rate tokens a second = rate * 10^6 micro-tokens per 10^9 ns.
        let refill = elapsed * u128::from(self.rate) / 1_000;
        bucket.tokens = bucket.tokens.saturating_add(refill).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= MICRO {
            bucket.tokens -= MICRO;
            return Ok(());
        }
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimitError,
            "rate_limited",
            format!(
                "Too many requests for this API key: the limit rate_limit_per_second is {} (burst {}). Retry after the time in Retry-After.",
                self.rate, self.burst
            ),
        );
        error.retry_after = true;
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(10, 20);
        let key = [7u8; 32];
        let start = Instant::now();
        for _ in 0..20 {
            assert!(limiter.check(&key, start).is_ok());
        }
        let refused = limiter.check(&key, start).err().map(|e| (e.status, e.code));
        assert_eq!(refused, Some((StatusCode::TOO_MANY_REQUESTS, "rate_limited".to_owned())));
        assert!(limiter.check(&[8u8; 32], start).is_ok(), "other keys have their own bucket");
        assert!(limiter.check(&key, start + Duration::from_millis(100)).is_ok());
        assert!(limiter.check(&key, start + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn zero_turns_it_off() {
        let limiter = RateLimiter::new(0, 0);
        for _ in 0..10_000 {
            assert!(limiter.check(&[1u8; 32], Instant::now()).is_ok());
        }
    }
}
