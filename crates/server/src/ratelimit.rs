//! Rate limiting per API key: a token bucket per key, refilled at `rate` tokens a second up to
//! `burst`. A request takes one token; without one it is refused with 429 `rate_limited` and
//! `Retry-After`. Counting is in integer micro-tokens: no floats. Every authenticated response
//! says where its key stands, in the headers of the IETF draft (httpapi-ratelimit-headers):
//! `RateLimit-Limit` (the burst), `RateLimit-Remaining` (whole requests left now) and
//! `RateLimit-Reset` (seconds until the bucket is full again).
//!
//! With the embedded store the bucket lives in this process. On PostgreSQL (one process, or
//! cluster mode's API nodes) every node draws on one bucket per key, stored in the database
//! (`AdminStore::take_rate_tokens`): a node takes a *lease* of up to a tenth of a second's
//! worth of tokens in one transaction and spends it in memory, so the hot path touches the
//! database at most about ten times a second per key and node. Tokens leave the shared bucket
//! before they are spent, so all nodes together never admit more than one bucket allows; the
//! tokens a node leased and did not spend within [`LEASE_LIFETIME`] stop counting there (so
//! that a node's leftovers never add to a later second's budget of its own) and go back to the
//! shared bucket with its next lease of the key, up to the burst. So the limit is reached, not
//! approached from below, however many nodes share it: when the leftovers were dropped, each
//! node drew a lease every 250 ms, and three nodes at 333 requests a second each, 1 000 in all,
//! drew 1 200 tokens a second from a bucket refilled with 1 000. A node takes one lease of a
//! key at a time, however many requests find the last one spent.

use crate::error::{ApiError, ErrorType};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use paycore_store::{AdminStore, MICRO_TOKENS};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MICRO: u128 = MICRO_TOKENS as u128;

/// A lease's tokens not spent within this are given up (so that a node's leftovers never add
/// to a later second's budget).
pub const LEASE_LIFETIME: Duration = Duration::from_millis(250);
/// A lease is this fraction of a second's rate (at least one token, at most the burst).
pub const LEASES_PER_SECOND: u32 = 10;

/// Where a key stands after a request: the `RateLimit-*` headers' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The bucket's size (`RateLimit-Limit`).
    pub limit: u32,
    /// Whole requests left now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the bucket is full again (`RateLimit-Reset`).
    pub reset_seconds: u64,
    /// Whether this request got a token.
    pub allowed: bool,
    /// When refused: seconds until a token is there (`Retry-After`, at least 1).
    pub retry_after_seconds: u64,
}

impl Quota {
    /// `Ok` if the request got a token, else 429 `rate_limited`.
    pub fn into_result(self, rate: u32) -> Result<Quota, ApiError> {
        if self.allowed {
            return Ok(self);
        }
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimitError,
            "rate_limited",
            format!(
                "Too many requests for this API key: the limit rate_limit_per_second is {rate} (burst {}). Retry after the time in Retry-After.",
                self.limit
            ),
        );
        error.retry_after = true;
        Err(error)
    }
}

struct Bucket {
    /// Micro-tokens left.
    tokens: u128,
    refilled: Instant,
}

/// Tokens a node took from the shared bucket and has not spent yet.
struct Lease {
    tokens: u32,
    taken: Instant,
    /// The shared bucket's micro-tokens left after the take (for the headers).
    shared_left: u64,
    /// A take that found the shared bucket empty: until then, this node refuses the key's
    /// requests without asking the store again.
    empty_until: Option<Instant>,
}

/// The buckets (or leases) of every key seen, by key id; one entry per key, so memory grows
/// with keys only.
pub struct RateLimiter {
    /// Tokens a second; 0 turns limiting off.
    rate: u32,
    burst: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// The store of the shared buckets (PostgreSQL); `None`: buckets in this process.
    shared: Option<Arc<dyn AdminStore>>,
    leases: Mutex<HashMap<String, Lease>>,
    /// Per key, held while a new lease is taken ([`RateLimiter::lease`]).
    leasing: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl RateLimiter {
    /// Buckets in this process.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
            shared: None,
            leases: Mutex::new(HashMap::new()),
            leasing: Mutex::new(HashMap::new()),
        }
    }

    /// One bucket per key for every node on `store`, taken from in leases.
    pub fn shared(rate: u32, burst: u32, store: Arc<dyn AdminStore>) -> RateLimiter {
        RateLimiter { shared: Some(store), ..RateLimiter::new(rate, burst) }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Whether limiting is on at all.
    pub fn enabled(&self) -> bool {
        self.rate > 0
    }

    /// Takes a token for the key `key` at `now` without blocking: the quota, or `None` when a
    /// shared limiter needs a new lease ([`RateLimiter::lease`], blocking).
    pub fn check(&self, key: &str, now: Instant) -> Option<Quota> {
        if !self.enabled() {
            return Some(self.unlimited());
        }
        if self.shared.is_some() {
            return self.spend_lease(key, now);
        }
        let capacity = u128::from(self.burst) * MICRO;
        let Ok(mut buckets) = self.buckets.lock() else { return Some(self.unlimited()) };
        let bucket = match buckets.get_mut(key) {
            Some(bucket) => bucket,
            None => buckets.entry(key.to_owned()).or_insert(Bucket { tokens: capacity, refilled: now }),
        };
        let elapsed = now.saturating_duration_since(bucket.refilled).as_nanos();
        // rate tokens a second = rate * 10^6 micro-tokens per 10^9 ns.
        let refill = elapsed * u128::from(self.rate) / 1_000;
        bucket.tokens = bucket.tokens.saturating_add(refill).min(capacity);
        bucket.refilled = now;
        let allowed = bucket.tokens >= MICRO;
        if allowed {
            bucket.tokens -= MICRO;
        }
        Some(self.quota(bucket.tokens, allowed))
    }

    /// A shared limiter's lease, spent in memory; `None` when it is empty or too old.
    fn spend_lease(&self, key: &str, now: Instant) -> Option<Quota> {
        let mut leases = self.leases.lock().ok()?;
        let lease = leases.get_mut(key)?;
        if lease.empty_until.is_some_and(|until| now < until) {
            return Some(self.quota(u128::from(lease.shared_left), false));
        }
        if lease.tokens == 0 || now.saturating_duration_since(lease.taken) >= LEASE_LIFETIME {
            return None;
        }
        lease.tokens -= 1;
        let left = u128::from(lease.shared_left) + u128::from(lease.tokens) * MICRO;
        Some(self.quota(left, true))
    }

    /// Takes a new lease for `key` from the shared bucket at `now_ns` (the wall clock every
    /// node shares) and a token of it; blocking (a store transaction).
    ///
    /// One lease at a time per key: the requests that find the lease spent while another one
    /// takes the next wait for it and spend from it. When each took a lease of its own, and
    /// each replaced the one before, a burst of concurrent requests drew a lease apiece from
    /// the shared bucket and all but one were lost: a walkthrough of the README's cluster at
    /// 600 requests a second, against 1 000 allowed, saw one in twenty refused.
    pub fn lease(&self, key: &str, now: Instant, now_ns: u64) -> Result<Quota, ApiError> {
        let Some(store) = &self.shared else {
            return Ok(self.check(key, now).unwrap_or_else(|| self.unlimited()));
        };
        let one = self
            .leasing
            .lock()
            .map_err(|_| ApiError::internal("The rate limit check failed."))?
            .entry(key.to_owned())
            .or_default()
            .clone();
        let _leasing = one.lock().map_err(|_| ApiError::internal("The rate limit check failed."))?;
        if let Some(quota) = self.spend_lease(key, now) {
            return Ok(quota);
        }
        // The lease before, spent or expired: what is left of it goes back.
        let returned =
            self.leases.lock().ok().and_then(|mut leases| leases.remove(key)).map_or(0, |lease| lease.tokens);
        let want = (self.rate / LEASES_PER_SECOND).clamp(1, self.burst);
        let grant = store.take_rate_tokens(key, now_ns, self.rate, self.burst, want, returned)?;
        let Some(tokens) = grant.granted.checked_sub(1) else {
            // Empty: the key's requests here are refused without a store transaction each
            // until a lease's worth could have come in (at most a lease's lifetime). Asking for
            // every one, one at a time, queued them: a key sent 1 200 a second against 1 000
            // answered its requests' p99 in 300-400 ms.
            let refill = Duration::from_nanos(u64::from(want) * 1_000_000_000 / u64::from(self.rate.max(1)));
            if let Ok(mut leases) = self.leases.lock() {
                let empty_until = Some(now + refill.min(LEASE_LIFETIME));
                let lease = Lease { tokens: 0, taken: now, shared_left: grant.left_micro_tokens, empty_until };
                leases.insert(key.to_owned(), lease);
            }
            return Ok(self.quota(u128::from(grant.left_micro_tokens), false));
        };
        if let Ok(mut leases) = self.leases.lock() {
            let lease = Lease { tokens, taken: now, shared_left: grant.left_micro_tokens, empty_until: None };
            leases.insert(key.to_owned(), lease);
        }
        Ok(self.quota(u128::from(grant.left_micro_tokens) + u128::from(tokens) * MICRO, true))
    }

    fn quota(&self, left: u128, allowed: bool) -> Quota {
        let rate = u128::from(self.rate.max(1));
        let capacity = u128::from(self.burst) * MICRO;
        // Micro-tokens come in at rate * 10^6 a second: whole seconds, rounded up.
        let seconds = |missing: u128| u64::try_from(missing.div_ceil(rate * MICRO)).unwrap_or(u64::MAX);
        Quota {
            limit: self.burst,
            remaining: u32::try_from(left / MICRO).unwrap_or(u32::MAX).min(self.burst),
            reset_seconds: seconds(capacity.saturating_sub(left)),
            allowed,
            retry_after_seconds: seconds(MICRO.saturating_sub(left)).max(1),
        }
    }

    fn unlimited(&self) -> Quota {
        Quota { limit: self.burst, remaining: self.burst, reset_seconds: 0, allowed: true, retry_after_seconds: 0 }
    }
}

tokio::task_local! {
    /// The quota of the request being served, set by `Auth` and read by [`headers`].
    static QUOTA: Cell<Option<Quota>>;
}

/// Remembers the request's quota for its response's headers.
pub fn record(quota: Quota) {
    let _ = QUOTA.try_with(|cell| cell.set(Some(quota)));
}

/// The layer that writes `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` on
/// every response whose request took (or was refused) a token, and the exact `Retry-After`
/// of a 429.
pub async fn headers(request: Request, next: Next) -> Response {
    let (mut response, quota) = QUOTA
        .scope(Cell::new(None), async {
            let response = next.run(request).await;
            (response, QUOTA.with(Cell::get))
        })
        .await;
    if let Some(quota) = quota {
        let headers = response.headers_mut();
        headers.insert(HeaderName::from_static("ratelimit-limit"), HeaderValue::from(quota.limit));
        headers.insert(HeaderName::from_static("ratelimit-remaining"), HeaderValue::from(quota.remaining));
        headers.insert(HeaderName::from_static("ratelimit-reset"), HeaderValue::from(quota.reset_seconds));
        if !quota.allowed {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(quota.retry_after_seconds));
        }
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn allowed(limiter: &RateLimiter, key: &str, now: Instant) -> bool {
        limiter.check(key, now).is_some_and(|quota| quota.allowed)
    }

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(10, 20);
        let start = Instant::now();
        for _ in 0..20 {
            assert!(allowed(&limiter, "key_a", start));
        }
        let refused = limiter.check("key_a", start).unwrap();
        assert!(!refused.allowed);
        let error = refused.into_result(10).err().map(|e| (e.status, e.code));
        assert_eq!(error, Some((StatusCode::TOO_MANY_REQUESTS, "rate_limited".to_owned())));
        assert!(allowed(&limiter, "key_b", start), "other keys have their own bucket");
        assert!(allowed(&limiter, "key_a", start + Duration::from_millis(100)));
        assert!(!allowed(&limiter, "key_a", start + Duration::from_millis(100)));
    }

    #[test]
    fn quotas_count_down_and_say_when_to_come_back() {
        let limiter = RateLimiter::new(2, 4);
        let start = Instant::now();
        let quota = limiter.check("key_a", start).unwrap();
        // 3 tokens left; one missing comes in at 2 a second: full again in 1 second (0.5 up).
        assert_eq!(quota, Quota { limit: 4, remaining: 3, reset_seconds: 1, allowed: true, retry_after_seconds: 1 });
        for _ in 0..3 {
            assert!(allowed(&limiter, "key_a", start));
        }
        let refused = limiter.check("key_a", start).unwrap();
        assert_eq!((refused.remaining, refused.reset_seconds, refused.allowed), (0, 2, false));
        assert_eq!(refused.retry_after_seconds, 1);
    }

    /// A PostgreSQL database of the test's own and the shared buckets' store on it (`None`,
    /// said loudly, without a server).
    fn shared_store(test: &str) -> Option<(paycore_store::testing::TestDatabase, Arc<dyn AdminStore>)> {
        let database = paycore_store::testing::TestDatabase::create(test)?;
        let options = paycore_store::Options { reader_connections_max: 16 };
        let store: Arc<dyn AdminStore> = paycore_store::open_api(database.url(), &options).unwrap();
        Some((database, store))
    }

    /// Concurrent requests that find no lease take one between them, not one each.
    #[test]
    fn concurrent_requests_without_a_lease_take_one_lease_between_them() {
        let Some((_database, store)) = shared_store("concurrent_requests_take_one_lease") else { return };
        let (rate, burst) = (1_000, 2_000);
        let limiter = Arc::new(RateLimiter::shared(rate, burst, store.clone()));
        // One instant for all: the shared bucket refills nothing meanwhile.
        let (now, now_ns) = (Instant::now(), 1_000_000_000_000);
        let start = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (limiter, start) = (limiter.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    match limiter.check("key_a", now) {
                        Some(quota) => quota,
                        None => limiter.lease("key_a", now, now_ns).unwrap(),
                    }
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().unwrap().allowed);
        }
        let lease = rate / LEASES_PER_SECOND;
        let left = store.take_rate_tokens("key_a", now_ns, rate, burst, 0, 0).unwrap().left_micro_tokens;
        assert_eq!(left / MICRO_TOKENS, u64::from(burst - lease), "the shared bucket lost more than one lease");

        // The lease expires here with 84 tokens unspent: they go back with the next lease
        // (the same wall clock, so the shared bucket refilled nothing meanwhile).
        let later = now + LEASE_LIFETIME;
        assert!(limiter.check("key_a", later).is_none(), "the lease expired");
        let quota = limiter.lease("key_a", later, now_ns).unwrap();
        assert!(quota.allowed);
        let left = store.take_rate_tokens("key_a", now_ns, rate, burst, 0, 0).unwrap().left_micro_tokens;
        let unspent = lease - 16;
        assert_eq!(left / MICRO_TOKENS, u64::from(burst - lease + unspent - lease), "the unspent tokens came back");
    }

    /// A take that finds the shared bucket empty makes the node refuse the key's requests by
    /// itself until a lease's worth could have come in, then ask again.
    #[test]
    fn an_empty_shared_bucket_is_refused_locally_until_a_lease_could_have_come_in() {
        let Some((_database, store)) = shared_store("an_empty_shared_bucket") else { return };
        // 10 a second, burst 10: a lease is one token, and comes in in 100 ms.
        let limiter = RateLimiter::shared(10, 10, store.clone());
        let (now, now_ns) = (Instant::now(), 1_000_000_000_000);
        let take =
            |at: Instant| limiter.check("key_a", at).unwrap_or_else(|| limiter.lease("key_a", at, now_ns).unwrap());
        assert!((0..10).all(|_| take(now).allowed), "the burst");
        let refused = take(now);
        assert!(!refused.allowed);
        // Refused here, without the store: the bucket was not asked (it would still say 0).
        let local = limiter.check("key_a", now + Duration::from_millis(99)).expect("refused locally");
        assert_eq!((local.allowed, local.retry_after_seconds), (false, 1));
        assert!(limiter.check("key_a", now + Duration::from_millis(100)).is_none(), "asks the store again");
    }

    #[test]
    fn zero_turns_it_off() {
        let limiter = RateLimiter::new(0, 0);
        assert!(!limiter.enabled());
    }
}
