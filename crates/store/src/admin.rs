//! Tenants, API keys and webhooks: what is not money, written outside the engine's batches.
//!
//! Webhook delivery works from the `outbox` (written in the engine's commits): the worker
//! fans each new event out to the subscribed endpoints of its tenant as rows of
//! `webhook_deliveries`, then claims the due rows (`claimed_until`: no other worker takes them
//! meanwhile), attempts each and records the attempt. The attempt state lives in the table, so
//! retries continue across restarts, and any node may deliver any row.

use crate::{ApiKeyRecord, Result};
use paycore_ledger::{EventKind, TenantId, WebhookEndpointId};

/// One million micro-tokens are one request of a rate limit.
pub const MICRO_TOKENS: u64 = 1_000_000;

/// A key's shared rate-limit bucket as stored (`rate_limits`): micro-tokens left as of
/// `refilled_at` (ns since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateBucket {
    pub micro_tokens: u64,
    pub refilled_at: u64,
}

/// What [`AdminStore::take_rate_tokens`] gave: whole tokens (requests), and the micro-tokens
/// the bucket has left for everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateGrant {
    pub granted: u32,
    pub left_micro_tokens: u64,
}

/// The token-bucket rule both backends apply to a stored bucket (`None`: a key's first use,
/// a full bucket): refill at `rate` tokens a second up to `burst`, put back the `returned`
/// tokens of an earlier grant that were not spent (up to `burst` too), then take up to `want`
/// whole tokens. Exact integer arithmetic in micro-tokens; a clock that went back refills
/// nothing.
pub fn take_tokens(
    bucket: Option<RateBucket>,
    now: u64,
    rate: u32,
    burst: u32,
    want: u32,
    returned: u32,
) -> (RateGrant, RateBucket) {
    let capacity = u128::from(burst) * u128::from(MICRO_TOKENS);
    let (tokens, refilled_at) = match bucket {
        None => (capacity, now),
        Some(bucket) => {
            let elapsed = u128::from(now.saturating_sub(bucket.refilled_at));
            // `rate` tokens a second: rate * 10^6 micro-tokens per 10^9 ns.
            let refill = elapsed * u128::from(rate) / 1_000;
            (u128::from(bucket.micro_tokens).saturating_add(refill).min(capacity), bucket.refilled_at.max(now))
        }
    };
    let tokens = (tokens + u128::from(returned) * u128::from(MICRO_TOKENS)).min(capacity);
    let whole = tokens / u128::from(MICRO_TOKENS);
    let granted = u32::try_from(whole.min(u128::from(want))).unwrap_or(want);
    let left = tokens - u128::from(granted) * u128::from(MICRO_TOKENS);
    let left = u64::try_from(left).unwrap_or(u64::MAX);
    (RateGrant { granted, left_micro_tokens: left }, RateBucket { micro_tokens: left, refilled_at })
}

/// A tenant as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: Option<String>,
    pub created_at: u64,
}

/// A webhook endpoint. `secret` signs the deliveries; its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub tenant: TenantId,
    pub url: String,
    pub events: Vec<EventKind>,
    pub secret: String,
    pub created_at: u64,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"…")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// An event of the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    pub seq: u64,
    pub tenant: TenantId,
    pub kind: EventKind,
    pub object: u128,
    pub created_at: u64,
}

/// The delivery of one event to one endpoint, and where its attempts stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: u64,
    pub endpoint: WebhookEndpointId,
    pub tenant: TenantId,
    pub seq: u64,
    pub attempts: u32,
    /// When the next attempt is due; `None` once delivered or given up.
    pub next_attempt_at: Option<u64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<u64>,
    pub created_at: u64,
}

/// The result of one delivery attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub delivered: bool,
    /// When to try again; `None` when delivered or given up.
    pub next_attempt_at: Option<u64>,
}

/// Tenants, keys and webhooks.
pub trait AdminStore: Send + Sync {
    /// Adds an API key, and its tenant if new.
    fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    fn insert_tenant(&self, tenant: &TenantRecord) -> Result<()>;
    fn tenant(&self, id: TenantId) -> Result<Option<TenantRecord>>;
    /// Revokes a key; returns its hash (to drop it from caches), or `None` if there is no
    /// such key.
    fn revoke_api_key(&self, id: &str) -> Result<Option<[u8; 32]>>;
    /// Gives the key `id` a new secret (`hash`) at `now`; the replaced secret keeps working
    /// until `previous_until` (ns since the epoch, never past the key's own expiry), then
    /// stops. A key has at most two live secrets: while the secret an earlier rotation
    /// replaced is still live, it is the one kept and the current one is dropped — so a
    /// rotation retried after a lost response never cuts off the secret the client still
    /// holds. Returns the key as it now is (with the new hash), or `None` if there is no such
    /// key or it is revoked.
    fn rotate_api_key(&self, id: &str, hash: &[u8; 32], now: u64, previous_until: u64) -> Result<Option<ApiKeyRecord>>;
    /// Puts back the `returned` tokens of the key's last grant that were not spent, and takes
    /// up to `want` from its shared rate-limit bucket at `now` ([`take_tokens`], in one
    /// transaction): how the API nodes of a cluster share one budget per key.
    fn take_rate_tokens(
        &self,
        key: &str,
        now: u64,
        rate: u32,
        burst: u32,
        want: u32,
        returned: u32,
    ) -> Result<RateGrant>;
    fn insert_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()>;
    /// The tenant's endpoints, newest first.
    fn webhook_endpoints(&self, tenant: TenantId) -> Result<Vec<WebhookEndpoint>>;
    fn webhook_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<Option<WebhookEndpoint>>;
    /// Deletes an endpoint and stops its pending deliveries; `false` if there is no such
    /// endpoint.
    fn delete_webhook_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<bool>;
    /// Fans up to `limit` new outbox events out to the subscribed endpoints, due at `now`,
    /// in one transaction; returns how many events were taken. Safe to run on several nodes
    /// at once: the transaction holds the cursor's lock, so the next one starts after it.
    fn fan_out(&self, now: u64, limit: usize) -> Result<usize>;
    /// Claims up to `limit` deliveries due at `now` and not claimed by another worker (or
    /// whose claim lapsed), oldest event first: none of them is returned to another caller
    /// before `claimed_until`, unless [`AdminStore::record_attempt`] sets its next attempt
    /// first. Two workers never get the same row at once (PostgreSQL: `FOR UPDATE SKIP
    /// LOCKED`, the claim written in the same statement). Deliveries to the endpoints of `skip`
    /// are left (the worker already holds enough of theirs: a slow endpoint's backlog must not
    /// take the places of the others' deliveries).
    fn due_deliveries(
        &self,
        now: u64,
        claimed_until: u64,
        limit: usize,
        skip: &[WebhookEndpointId],
    ) -> Result<Vec<Delivery>>;
    fn outbox_event(&self, seq: u64) -> Result<Option<OutboxEvent>>;
    /// Stores an attempt, its next attempt time, and ends the delivery's claim.
    fn record_attempt(&self, delivery: u64, attempt: &Attempt) -> Result<()>;
    /// The endpoint's deliveries, newest first, strictly before `before` (a delivery id).
    fn deliveries(&self, endpoint: WebhookEndpointId, before: Option<u64>, limit: usize) -> Result<Vec<Delivery>>;
    fn delivery(&self, tenant: TenantId, id: u64) -> Result<Option<Delivery>>;
    /// Makes a delivery due again at `now` (attempt count kept); `false` if there is none.
    fn replay_delivery(&self, tenant: TenantId, id: u64, now: u64) -> Result<bool>;
    /// Records that the console session `id` was signed out; its cookie would have expired at
    /// `expires_at` (ns since the epoch), and the record is pruned after that. Repeating it
    /// changes nothing.
    fn end_console_session(&self, id: &[u8; 16], expires_at: u64) -> Result<()>;
    /// Whether the console session `id` was signed out, on any API node.
    fn console_session_ended(&self, id: &[u8; 16]) -> Result<bool>;
}
