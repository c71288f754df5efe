//! Tenants, API keys and webhooks in PostgreSQL (see [`crate::admin`]).

use super::codec::{all, corrupt, get, id, id_bytes, int, opt_uint, parsed, uint};
use super::reader::PostgresReader;
use crate::admin::{AdminStore, Attempt, Delivery, OutboxEvent, RateBucket, RateGrant, TenantRecord, WebhookEndpoint};
use crate::{ApiKeyRecord, Result};
use paycore_ledger::{EventKind, TenantId, WebhookEndpointId};
use postgres::Row;

/// An endpoint's event types as stored: their names, separated by spaces.
fn event_names(events: &[EventKind]) -> String {
    events.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(" ")
}

fn endpoint_from(row: &Row) -> Result<WebhookEndpoint> {
    let events: &str = get(row, "events")?;
    Ok(WebhookEndpoint {
        id: WebhookEndpointId(id(row, "id")?),
        tenant: TenantId(id(row, "tenant")?),
        url: get(row, "url")?,
        events: events
            .split_whitespace()
            .map(|name| EventKind::parse(name).ok_or_else(|| corrupt("events", &format!("unknown event {name:?}"))))
            .collect::<Result<_>>()?,
        secret: get(row, "secret")?,
        created_at: uint(row, "created_at")?,
    })
}

pub(super) fn delivery_from(row: &Row) -> Result<Delivery> {
    let status: Option<i32> = get(row, "last_status")?;
    let attempts: i32 = get(row, "attempts")?;
    Ok(Delivery {
        id: uint(row, "id")?,
        endpoint: WebhookEndpointId(id(row, "endpoint")?),
        tenant: TenantId(id(row, "tenant")?),
        seq: uint(row, "seq")?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: opt_uint(row, "next_attempt_at")?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: get(row, "last_error")?,
        delivered_at: opt_uint(row, "delivered_at")?,
        created_at: uint(row, "created_at")?,
    })
}

fn event_from(row: &Row) -> Result<OutboxEvent> {
    Ok(OutboxEvent {
        seq: uint(row, "seq")?,
        tenant: TenantId(id(row, "tenant")?),
        kind: parsed(row, "type", EventKind::parse)?,
        object: id(row, "object")?,
        created_at: uint(row, "created_at")?,
    })
}

fn limit_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl AdminStore for PostgresReader {
    fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&id_bytes(key.tenant.0), &int(key.created_at)],
            )?;
            tx.execute(
                "INSERT INTO api_keys (id, tenant, hash, scopes, created_at, revoked, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &key.id,
                    &id_bytes(key.tenant.0),
                    &key.hash,
                    &key.scopes.join(" "),
                    &int(key.created_at),
                    &key.revoked,
                    &key.expires_at.map(int),
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn insert_tenant(&self, t: &TenantRecord) -> Result<()> {
        self.with(|client| {
            client.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
                &[&id_bytes(t.id.0), &t.name, &int(t.created_at)],
            )?;
            Ok(())
        })
    }

    fn tenant(&self, tenant: TenantId) -> Result<Option<TenantRecord>> {
        self.with(|client| {
            let Some(row) = client.query_opt("SELECT * FROM tenants WHERE id = $1", &[&id_bytes(tenant.0)])? else {
                return Ok(None);
            };
            Ok(Some(TenantRecord {
                id: TenantId(id(&row, "id")?),
                name: get(&row, "name")?,
                created_at: uint(&row, "created_at")?,
            }))
        })
    }

    fn end_console_session(&self, id: &[u8; 16], expires_at: u64) -> Result<()> {
        self.with(|client| {
            client.execute(
                "INSERT INTO console_sessions_ended (id, expires_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&id.as_slice(), &int(expires_at)],
            )?;
            Ok(())
        })
    }

    fn console_session_ended(&self, id: &[u8; 16]) -> Result<bool> {
        self.with(|client| {
            Ok(client.query_opt("SELECT 1 FROM console_sessions_ended WHERE id = $1", &[&id.as_slice()])?.is_some())
        })
    }

    fn revoke_api_key(&self, key: &str) -> Result<Option<[u8; 32]>> {
        self.with(|client| {
            let row = client.query_opt("UPDATE api_keys SET revoked = true WHERE id = $1 RETURNING hash", &[&key])?;
            row.map(|row| super::codec::hash(&row, "hash")).transpose()
        })
    }

    fn rotate_api_key(&self, id: &str, hash: &[u8; 32], now: u64, previous_until: u64) -> Result<Option<ApiKeyRecord>> {
        self.with(|client| {
            let row = client.query_opt(
                "UPDATE api_keys SET hash = $2,
                     previous_hash = CASE WHEN previous_expires_at > $4 THEN previous_hash ELSE hash END,
                     previous_expires_at = LEAST($3, COALESCE(expires_at, $3))
                 WHERE id = $1 AND NOT revoked
                 RETURNING *",
                &[&id, &hash.as_slice(), &int(previous_until), &int(now)],
            )?;
            row.map(|row| super::reader::api_key_from(&row, None)).transpose()
        })
    }

    fn take_rate_tokens(
        &self,
        key: &str,
        now: u64,
        rate: u32,
        burst: u32,
        want: u32,
        returned: u32,
    ) -> Result<RateGrant> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            // The row exists before it is locked, so that two nodes' first takes serialize.
            tx.execute(
                "INSERT INTO rate_limits (key, micro_tokens, refilled_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                &[&key, &int(u64::from(burst).saturating_mul(crate::admin::MICRO_TOKENS)), &int(now)],
            )?;
            let row = tx.query_one("SELECT micro_tokens, refilled_at FROM rate_limits WHERE key = $1 FOR UPDATE", &[&key])?;
            let stored = RateBucket { micro_tokens: uint(&row, "micro_tokens")?, refilled_at: uint(&row, "refilled_at")? };
            let (grant, bucket) = crate::admin::take_tokens(Some(stored), now, rate, burst, want, returned);
            tx.execute(
                "UPDATE rate_limits SET micro_tokens = $2, refilled_at = $3 WHERE key = $1",
                &[&key, &int(bucket.micro_tokens), &int(bucket.refilled_at)],
            )?;
            tx.commit()?;
            Ok(grant)
        })
    }

    fn insert_webhook_endpoint(&self, e: &WebhookEndpoint) -> Result<()> {
        self.with(|client| {
            client.execute(
                "INSERT INTO webhook_endpoints (id, tenant, url, events, secret, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &id_bytes(e.id.0),
                    &id_bytes(e.tenant.0),
                    &e.url,
                    &event_names(&e.events),
                    &e.secret,
                    &int(e.created_at),
                ],
            )?;
            Ok(())
        })
    }

    fn webhook_endpoints(&self, tenant: TenantId) -> Result<Vec<WebhookEndpoint>> {
        self.with(|client| {
            let rows = client.query(
                "SELECT * FROM webhook_endpoints WHERE tenant = $1 AND NOT deleted ORDER BY created_at DESC",
                &[&id_bytes(tenant.0)],
            )?;
            all(&rows, endpoint_from)
        })
    }

    fn webhook_endpoint(&self, tenant: TenantId, endpoint: WebhookEndpointId) -> Result<Option<WebhookEndpoint>> {
        self.with(|client| {
            client
                .query_opt(
                    "SELECT * FROM webhook_endpoints WHERE id = $1 AND tenant = $2 AND NOT deleted",
                    &[&id_bytes(endpoint.0), &id_bytes(tenant.0)],
                )?
                .map(|row| endpoint_from(&row))
                .transpose()
        })
    }

    fn delete_webhook_endpoint(&self, tenant: TenantId, endpoint: WebhookEndpointId) -> Result<bool> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            let n = tx.execute(
                "UPDATE webhook_endpoints SET deleted = true WHERE id = $1 AND tenant = $2 AND NOT deleted",
                &[&id_bytes(endpoint.0), &id_bytes(tenant.0)],
            )?;
            tx.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = NULL, last_error = 'endpoint deleted'
                 WHERE endpoint = $1 AND next_attempt_at IS NOT NULL",
                &[&id_bytes(endpoint.0)],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn fan_out(&self, now: u64, limit: usize) -> Result<usize> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            // The cursor's row lock makes fan-outs of several nodes take turns; the outbox's
            // writers commit in `seq` order (see the migration), so no event is passed over.
            let cursor: i64 =
                tx.query_one("SELECT value FROM meta WHERE key = 'webhook_outbox_seq' FOR UPDATE", &[])?.try_get(0)?;
            let row = tx.query_one(
                "SELECT count(*), max(seq) FROM (SELECT seq FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2) e",
                &[&cursor, &limit_sql(limit)],
            )?;
            let (taken, last): (i64, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
            let Some(last) = last else { return Ok(0) };
            // Deliveries in event order, then endpoint order, as one statement.
            tx.execute(
                "INSERT INTO webhook_deliveries (endpoint, tenant, seq, next_attempt_at, created_at)
                 SELECT e.id, o.tenant, o.seq, $3, $3 FROM outbox o
                 JOIN webhook_endpoints e ON e.tenant = o.tenant AND NOT e.deleted
                     AND o.type = ANY (string_to_array(e.events, ' '))
                 WHERE o.seq > $1 AND o.seq <= $2
                 ORDER BY o.seq, e.id
                 ON CONFLICT (endpoint, seq) DO NOTHING",
                &[&cursor, &last, &int(now)],
            )?;
            tx.execute("UPDATE meta SET value = $1 WHERE key = 'webhook_outbox_seq'", &[&last])?;
            tx.commit()?;
            Ok(usize::try_from(taken).unwrap_or(0))
        })
    }

    fn due_deliveries(
        &self,
        now: u64,
        claimed_until: u64,
        limit: usize,
        skip: &[WebhookEndpointId],
    ) -> Result<Vec<Delivery>> {
        self.with(|client| super::leases::due_deliveries(client, now, claimed_until, limit, skip))
    }

    fn outbox_event(&self, seq: u64) -> Result<Option<OutboxEvent>> {
        self.with(|client| {
            client
                .query_opt("SELECT * FROM outbox WHERE seq = $1", &[&int(seq)])?
                .map(|row| event_from(&row))
                .transpose()
        })
    }

    fn record_attempt(&self, delivery: u64, a: &Attempt) -> Result<()> {
        self.with(|client| {
            client.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $2,
                     last_status = $3, last_error = $4, claimed_until = NULL,
                     delivered_at = CASE WHEN $5 THEN $6 ELSE delivered_at END
                 WHERE id = $1",
                &[
                    &int(delivery),
                    &a.next_attempt_at.map(int),
                    &a.status.map(i32::from),
                    &a.error,
                    &a.delivered,
                    &int(a.at),
                ],
            )?;
            Ok(())
        })
    }

    fn deliveries(&self, endpoint: WebhookEndpointId, before: Option<u64>, limit: usize) -> Result<Vec<Delivery>> {
        self.with(|client| {
            let rows = client.query(
                "SELECT * FROM webhook_deliveries WHERE endpoint = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                &[&id_bytes(endpoint.0), &before.map_or(i64::MAX, int), &limit_sql(limit)],
            )?;
            all(&rows, delivery_from)
        })
    }

    fn delivery(&self, tenant: TenantId, delivery: u64) -> Result<Option<Delivery>> {
        self.with(|client| {
            client
                .query_opt(
                    "SELECT * FROM webhook_deliveries WHERE id = $1 AND tenant = $2",
                    &[&int(delivery), &id_bytes(tenant.0)],
                )?
                .map(|row| delivery_from(&row))
                .transpose()
        })
    }

    fn replay_delivery(&self, tenant: TenantId, delivery: u64, now: u64) -> Result<bool> {
        self.with(|client| {
            let n = client.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = $3
                 WHERE id = $1 AND tenant = $2
                   AND endpoint IN (SELECT id FROM webhook_endpoints WHERE NOT deleted)",
                &[&int(delivery), &id_bytes(tenant.0), &int(now)],
            )?;
            Ok(n == 1)
        })
    }
}
