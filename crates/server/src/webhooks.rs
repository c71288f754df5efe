//! Webhook delivery: a worker task reads the outbox in order, fans each event out to the
//! subscribed endpoints of its tenant (rows of `webhook_deliveries`), claims the due deliveries
//! (no other worker, on this node or another, attempts them meanwhile) and POSTs each, signed
//! with the endpoint's secret. Failures are retried with exponential
//! backoff; the attempt state is stored, so retries continue across restarts. Delivery is at
//! least once: receivers deduplicate by the event's `id`.
//!
//! Attempts run concurrently, at most [`IN_FLIGHT_MAX`] at once and one per endpoint at a
//! time (so each endpoint still gets its events in order), so a slow endpoint holds up only
//! its own deliveries. The client speaks HTTPS (rustls, the web PKI roots and the operator's
//! `--webhook-ca`), follows no redirect, uses no proxy, and connects only to public addresses
//! unless `--webhook-allow-private` ([`crate::ssrf`]).
//!
//! The signature header is `Paycore-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
//! HMAC-SHA256 with the endpoint's secret (the whole `whsec_…` string, as bytes) over
//! `"<t>.<body>"`.

use crate::render::{rfc3339, PaymentJson};
use crate::routes::batches::BatchJson;
use crate::ssrf::Guard;
use crate::AppState;
use hmac::{Hmac, Mac};
use paycore_ledger::WebhookEndpointId;
use paycore_ledger::{BatchId, EventId, EventKind, PaymentId};
use paycore_store::{Attempt, Delivery, OutboxEvent, Reader, WebhookEndpoint};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Paycore-Signature";
/// How long one attempt may take before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// After this long since the event, a failing delivery is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);
/// Deliveries the worker holds at once (claimed, waiting or in flight).
const HELD_MAX: usize = 256;
/// Deliveries claimed by one look at the store; the worker looks again at once while a look
/// takes this many.
const CLAIM_MAX: usize = 32;
/// Deliveries of one endpoint the worker holds before it claims no more of them: a slow
/// endpoint's backlog does not take the places of the other endpoints' deliveries.
const ENDPOINT_HELD_MAX: usize = 32;
/// Attempts in flight at once, over all endpoints.
pub const IN_FLIGHT_MAX: usize = 16;
/// Attempts in flight at once to one endpoint: one, so that each endpoint gets its events in
/// the order they happened (a retry can still come after a later event).
const ENDPOINT_IN_FLIGHT_MAX: usize = 1;
/// How long the deliveries the worker claims stay its own: no other worker (on this node or
/// another) attempts them meanwhile. The worker starts no attempt that could outlast its claim;
/// the rows it leaves, and those of a worker that died, are due again when the claim lapses.
const ROUND_CLAIM: Duration = Duration::from_secs(60);
/// Events fanned out per round. Fanning out is a write transaction on the main database, which
/// the engine then waits for: under a steady stream of payments, rounds of 100 events meant
/// ~100 such transactions a second (with an fsync each) and commit stalls of tens of ms.
const FAN_OUT_SIZE: usize = 10_000;
/// How long the worker waits between two looks at the store when there is nothing to do.
const IDLE: Duration = Duration::from_millis(100);

/// HMAC-SHA256 (RFC 2104) of `message` with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { unreachable!("HMAC accepts every key length") };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The `Paycore-Signature` value for `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    let mut signed = format!("{unix_seconds}.").into_bytes();
    signed.extend_from_slice(body);
    let mac = hmac_sha256(secret.as_bytes(), &signed);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

/// The wait before the attempt after `attempts` failed ones: `base` doubling, at most
/// [`RETRY_MAX`].
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(RETRY_MAX).min(RETRY_MAX)
}

/// What the deliveries go out with: the HTTP client and the address guard that registrations
/// share with it.
pub struct Outbound {
    client: reqwest::Client,
    /// Checks registrations; the client resolves names through a clone of it.
    pub guard: Guard,
}

impl Outbound {
    /// The client of `config`: HTTPS with the web PKI roots and `webhook_ca`'s certificates, no
    /// redirects, no proxy, names resolved through the guard. Fails on a CA file without a
    /// certificate.
    pub fn new(config: &crate::Config) -> anyhow::Result<Outbound> {
        let guard = Guard::new(config.webhook_resolver.0.clone(), config.webhook_allow_private);
        let mut builder = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_built_in_webpki_certs(true)
            .dns_resolver(Arc::new(guard.clone()));
        if let Some(path) = &config.webhook_ca {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("--webhook-ca {}: cannot read it: {e}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("--webhook-ca {}: not PEM certificates: {e}", path.display()))?;
            if certificates.is_empty() {
                anyhow::bail!("--webhook-ca {}: no certificate in it", path.display());
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(Outbound { client: builder.build()?, guard })
    }
}

/// Runs until the service stops: claims due deliveries while it holds fewer than
/// [`HELD_MAX`], starts each as soon as the limits allow, and records each attempt as it ends.
pub async fn run(state: Arc<AppState>) {
    let mut worker = Worker::default();
    let mut next_look = Instant::now();
    while !state.stopping.load(Ordering::Relaxed) {
        if Instant::now() >= next_look {
            let busy = match worker.look(&state).await {
                Ok(busy) => busy,
                Err(error) => {
                    tracing::warn!(%error, "webhook delivery round failed; retrying");
                    false
                }
            };
            next_look = if busy { Instant::now() } else { Instant::now() + IDLE };
        }
        worker.start(&state);
        tokio::select! {
            Some(done) = worker.flights.join_next(), if !worker.flights.is_empty() => worker.landed(done),
            () = tokio::time::sleep_until(next_look) => {}
        }
    }
}

/// The deliveries a worker holds: claimed and waiting for their endpoint or a free slot, or
/// in flight.
#[derive(Default)]
struct Worker {
    /// Claimed, not started, oldest event first, each with the end of its claim.
    waiting: VecDeque<(Delivery, u64)>,
    /// The attempts in flight; each ends with its endpoint.
    flights: JoinSet<(WebhookEndpointId, anyhow::Result<()>)>,
    /// Attempts in flight per endpoint.
    busy: HashMap<WebhookEndpointId, usize>,
}

impl Worker {
    /// Fans out new events and claims due deliveries up to [`HELD_MAX`] held; `true` if there
    /// is more to take at once.
    async fn look(&mut self, state: &Arc<AppState>) -> anyhow::Result<bool> {
        let admin = state.admin.clone();
        let now = crate::ids::now_ns();
        let claimed_until = now.saturating_add(nanos(ROUND_CLAIM));
        let room = HELD_MAX.saturating_sub(self.waiting.len() + self.flights.len()).min(CLAIM_MAX);
        let skip = self.endpoints_held_full();
        let (fanned, due) = tokio::task::spawn_blocking(move || -> paycore_store::Result<_> {
            let fanned = admin.fan_out(now, FAN_OUT_SIZE)?;
            let due = if room > 0 { admin.due_deliveries(now, claimed_until, room, &skip)? } else { Vec::new() };
            Ok((fanned, due))
        })
        .await??;
        let full = room > 0 && due.len() == room;
        self.waiting.extend(due.into_iter().map(|d| (d, claimed_until)));
        // A partial fan-out caught up: the next look waits for IDLE, so that events are fanned
        // out in groups rather than one write transaction per handful of events.
        Ok(fanned == FAN_OUT_SIZE || full)
    }

    /// The endpoints of which the worker holds [`ENDPOINT_HELD_MAX`] deliveries or more.
    fn endpoints_held_full(&self) -> Vec<WebhookEndpointId> {
        let mut held = self.busy.clone();
        for (delivery, _) in &self.waiting {
            *held.entry(delivery.endpoint).or_default() += 1;
        }
        held.into_iter().filter(|(_, count)| *count >= ENDPOINT_HELD_MAX).map(|(endpoint, _)| endpoint).collect()
    }

    /// Starts every waiting delivery that the limits allow, oldest first; drops those whose
    /// claim would end before their attempt could (they are due again when it lapses).
    fn start(&mut self, state: &Arc<AppState>) {
        let now = crate::ids::now_ns();
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        while let Some((delivery, claimed_until)) = self.waiting.pop_front() {
            if now.saturating_add(nanos(ATTEMPT_TIMEOUT)) >= claimed_until {
                continue;
            }
            let busy = self.busy.get(&delivery.endpoint).copied().unwrap_or(0);
            if self.flights.len() >= IN_FLIGHT_MAX || busy >= ENDPOINT_IN_FLIGHT_MAX {
                kept.push_back((delivery, claimed_until));
                continue;
            }
            *self.busy.entry(delivery.endpoint).or_default() += 1;
            let state = state.clone();
            self.flights.spawn(async move { (delivery.endpoint, attempt(&state, &delivery).await) });
        }
        self.waiting = kept;
    }

    /// An attempt ended: its endpoint has a slot free.
    fn landed(&mut self, done: Result<(WebhookEndpointId, anyhow::Result<()>), tokio::task::JoinError>) {
        match done {
            Ok((endpoint, result)) => {
                if let Some(busy) = self.busy.get_mut(&endpoint) {
                    *busy = busy.saturating_sub(1);
                    if *busy == 0 {
                        self.busy.remove(&endpoint);
                    }
                }
                if let Err(error) = result {
                    tracing::warn!(%error, "a webhook attempt was not recorded; it is due again when its claim lapses");
                }
            }
            // Only a panic gets here (the set is never aborted while the worker runs): the
            // endpoint is unknown, so every count is rebuilt from the attempts still running.
            Err(error) => {
                tracing::error!(%error, "a webhook attempt panicked");
                self.busy.clear();
            }
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One attempt of one delivery, recorded.
async fn attempt(state: &Arc<AppState>, delivery: &Delivery) -> anyhow::Result<()> {
    let admin = state.admin.clone();
    let reader = state.reader.clone();
    let batches = state.batches.clone();
    let (seq, tenant, endpoint_id) = (delivery.seq, delivery.tenant, delivery.endpoint);
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let Some(event) = admin.outbox_event(seq)? else { return Ok(None) };
        let Some(endpoint) = admin.webhook_endpoint(tenant, endpoint_id)? else { return Ok(None) };
        let body = payload(&event, reader.as_ref(), batches.as_ref())?;
        Ok(Some((endpoint, body)))
    })
    .await??;
    let now = crate::ids::now_ns();
    let result = match &loaded {
        Some((endpoint, body)) => post(&state.webhook, endpoint, body).await,
        None => Err((None, "the event or the endpoint is gone".to_owned())),
    };
    let record = outcome(state, delivery, now, result, loaded.is_none());
    let admin = state.admin.clone();
    let id = delivery.id;
    tokio::task::spawn_blocking(move || admin.record_attempt(id, &record)).await??;
    Ok(())
}

/// Sends one signed POST; `Ok(status)` on a 2xx answer. A redirect is a failed attempt (not
/// followed: its target could be anywhere).
async fn post(outbound: &Outbound, endpoint: &WebhookEndpoint, body: &[u8]) -> Result<u16, (Option<u16>, String)> {
    let url = reqwest::Url::parse(&endpoint.url).map_err(|e| (None, format!("the URL does not parse: {e}")))?;
    // reqwest connects to an IP literal without asking the resolver: check it here.
    outbound.guard.check_literal(&url).map_err(|e| (None, format!("refused: {e}")))?;
    let unix = crate::ids::now_ns() / 1_000_000_000;
    let response = outbound
        .client
        .post(url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, signature(&endpoint.secret, unix, body))
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| (None, format!("request failed: {}", chain(&e))))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else if status.is_redirection() {
        Err((Some(status.as_u16()), format!("the endpoint answered {} (a redirect, not followed)", status.as_u16())))
    } else {
        Err((Some(status.as_u16()), format!("the endpoint answered {}", status.as_u16())))
    }
}

/// An error and its causes, `: `-separated (reqwest's own message names none of them: the
/// refused address or the certificate problem is in a source).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// What to record after an attempt: delivered, retry later, or give up.
fn outcome(
    state: &AppState,
    d: &Delivery,
    now: u64,
    result: Result<u16, (Option<u16>, String)>,
    gone: bool,
) -> Attempt {
    match result {
        Ok(status) => Attempt { at: now, status: Some(status), error: None, delivered: true, next_attempt_at: None },
        Err((status, error)) => {
            let wait = backoff(state.webhook_retry_min, d.attempts);
            let next = now.saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
            let deadline = d.created_at.saturating_add(u64::try_from(GIVE_UP_AFTER.as_nanos()).unwrap_or(u64::MAX));
            let next_attempt_at = (!gone && next <= deadline).then_some(next);
            Attempt { at: now, status, error: Some(error), delivered: false, next_attempt_at }
        }
    }
}

/// The event as sent: `{id, object, type, created_at, data: {object}}`, with the object read
/// from the store now and rendered as the API renders it.
fn payload(
    event: &OutboxEvent,
    reader: &dyn Reader,
    batches: &dyn paycore_store::BatchStore,
) -> anyhow::Result<Vec<u8>> {
    let object = if event.kind == EventKind::BatchItemReturned {
        let link = batches.return_link(event.tenant, paycore_ledger::TransferId(event.object))?;
        link.map(|l| returned_item(&l))
    } else if event.kind.is_payment() {
        let payment = reader.payment(event.tenant, PaymentId(event.object))?;
        payment.map(|p| serde_json::to_value(PaymentJson::new(&p))).transpose()?
    } else {
        let batch = batches.batch(event.tenant, BatchId(event.object))?;
        match batch {
            Some(b) => Some(serde_json::to_value(BatchJson::new(&b, &batches.batch_totals(b.id)?))?),
            None => None,
        }
    };
    let body = serde_json::json!({
        "id": EventId(u128::from(event.seq)).to_string(),
        "object": "event",
        "type": event.kind.as_str(),
        "created_at": rfc3339(event.created_at),
        "data": {"object": object},
    });
    Ok(serde_json::to_vec(&body)?)
}

/// The object of a `batch_item.returned` event: the original item, its return and the amount
/// the return moved back.
fn returned_item(link: &paycore_store::ItemLink) -> serde_json::Value {
    serde_json::json!({
        "object": "batch_item_return",
        "batch": link.original_batch.to_string(),
        "index": link.original_index,
        "reason_code": link.code,
        "reason": paycore_formats::return_reason_description(&link.code),
        "amount": link.amount,
        "currency": link.currency.code(),
        "return_batch": link.batch.to_string(),
        "return_index": link.index,
        "reversal": link.reversal().to_string(),
    })
}

/// A new endpoint secret: `whsec_` and 32 letters and digits from the operating system's
/// generator.
pub fn generate_secret() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    let body: String = rand::rngs::OsRng.sample_iter(&Alphanumeric).take(32).map(char::from).collect();
    format!("whsec_{body}")
}

/// Starts the worker as a task of the current runtime.
pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(state))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(base, 0), Duration::from_secs(1));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 12), RETRY_MAX);
        assert_eq!(backoff(base, 500), RETRY_MAX);
    }
}
