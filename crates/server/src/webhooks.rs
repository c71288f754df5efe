//! Webhook delivery: a worker task reads the outbox in order, fans each event out to the
//! subscribed endpoints of its tenant (rows of `webhook_deliveries`), claims the due deliveries
//! (no other worker, on this node or another, attempts them meanwhile) and POSTs each, signed
//! with the endpoint's secret. Failures are retried with exponential
//! backoff; the attempt state is stored, so retries continue across restarts. Delivery is at
//! least once: receivers deduplicate by the event's `id`.
//!
//! The signature header is `Paycore-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
//! HMAC-SHA256 with the endpoint's secret (the whole `whsec_…` string, as bytes) over
//! `"<t>.<body>"`.

use crate::render::{rfc3339, PaymentJson};
use crate::routes::batches::BatchJson;
use crate::AppState;
use paycore_ledger::{BatchId, EventId, EventKind, PaymentId};
use paycore_store::{Attempt, Delivery, OutboxEvent, Reader, WebhookEndpoint};
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Paycore-Signature";
/// How long one attempt may take before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// After this long since the event, a failing delivery is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);
/// Deliveries attempted per round of the worker.
const ROUND_SIZE: usize = 100;
/// How long the deliveries a round claims stay its own: no other worker (on this node or
/// another) attempts them meanwhile. A round starts no attempt that could outlast its claim;
/// the rows it leaves, and those of a worker that died, are due again when the claim lapses.
const ROUND_CLAIM: Duration = Duration::from_secs(60);
/// Events fanned out per round. Fanning out is a write transaction on the main database, which
/// the engine then waits for: under a steady stream of payments, rounds of 100 events meant
/// ~100 such transactions a second (with an fsync each) and commit stalls of tens of ms.
const FAN_OUT_SIZE: usize = 10_000;
/// How long the worker sleeps when there is nothing to do.
const IDLE: Duration = Duration::from_millis(100);

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) of `message` with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&inner_pad).chain_update(message).finalize();
    Sha256::new().chain_update(&outer_pad).chain_update(inner).finalize().into()
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

/// Runs until the service stops.
pub async fn run(state: Arc<AppState>) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhook delivery cannot start: no HTTP client");
            return;
        }
    };
    while !state.stopping.load(Ordering::Relaxed) {
        let busy = match round(&state, &client).await {
            Ok(busy) => busy,
            Err(error) => {
                tracing::warn!(%error, "webhook delivery round failed; retrying");
                false
            }
        };
        if !busy {
            tokio::time::sleep(IDLE).await;
        }
    }
}

/// Fans out new events and attempts the due deliveries; `true` if there was work.
async fn round(state: &Arc<AppState>, client: &reqwest::Client) -> anyhow::Result<bool> {
    let admin = state.admin.clone();
    let now = crate::ids::now_ns();
    let claimed_until = now.saturating_add(nanos(ROUND_CLAIM));
    let (fanned, due) = tokio::task::spawn_blocking(move || -> paycore_store::Result<_> {
        let fanned = admin.fan_out(now, FAN_OUT_SIZE)?;
        Ok((fanned, admin.due_deliveries(now, claimed_until, ROUND_SIZE)?))
    })
    .await??;
    for delivery in &due {
        if state.stopping.load(Ordering::Relaxed) {
            break;
        }
        if crate::ids::now_ns().saturating_add(nanos(ATTEMPT_TIMEOUT)) >= claimed_until {
            break;
        }
        attempt(state, client, delivery).await?;
    }
    // A partial fan-out round caught up: the next one waits for IDLE, so that events are fanned
    // out in groups rather than one write transaction per handful of events.
    Ok(fanned == FAN_OUT_SIZE || !due.is_empty())
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One attempt of one delivery, recorded.
async fn attempt(state: &Arc<AppState>, client: &reqwest::Client, delivery: &Delivery) -> anyhow::Result<()> {
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
        Some((endpoint, body)) => post(client, endpoint, body).await,
        None => Err((None, "the event or the endpoint is gone".to_owned())),
    };
    let record = outcome(state, delivery, now, result, loaded.is_none());
    let admin = state.admin.clone();
    let id = delivery.id;
    tokio::task::spawn_blocking(move || admin.record_attempt(id, &record)).await??;
    Ok(())
}

/// Sends one signed POST; `Ok(status)` on a 2xx answer.
async fn post(client: &reqwest::Client, endpoint: &WebhookEndpoint, body: &[u8]) -> Result<u16, (Option<u16>, String)> {
    let unix = crate::ids::now_ns() / 1_000_000_000;
    let response = client
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, signature(&endpoint.secret, unix, body))
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| (None, format!("request failed: {e}")))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        Err((Some(status), format!("the endpoint answered {status}")))
    }
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
