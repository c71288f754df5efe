//! Tenants, API keys and webhooks in SQLite (see [`crate::admin`]).

use super::codec::{blob_id, corrupt, id_blob, int, opt_uint, parsed, uint};
use super::reader::SqliteReader;
use crate::admin::{AdminStore, Attempt, Delivery, OutboxEvent, RateBucket, RateGrant, TenantRecord, WebhookEndpoint};
use crate::{ApiKeyRecord, Result};
use paycore_ledger::{EventKind, TenantId, WebhookEndpointId};
use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};

/// An endpoint's event types as stored: their names, separated by spaces.
fn event_names(events: &[EventKind]) -> String {
    events.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(" ")
}

fn endpoint_from(row: &Row) -> rusqlite::Result<WebhookEndpoint> {
    let events: String = row.get("events")?;
    Ok(WebhookEndpoint {
        id: WebhookEndpointId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        url: row.get("url")?,
        events: events
            .split_whitespace()
            .map(|name| EventKind::parse(name).ok_or_else(|| corrupt("events", &format!("unknown event {name:?}"))))
            .collect::<rusqlite::Result<_>>()?,
        secret: row.get("secret")?,
        created_at: uint(row, "created_at")?,
    })
}

pub(super) fn delivery_from(row: &Row) -> rusqlite::Result<Delivery> {
    let status: Option<i64> = row.get("last_status")?;
    let attempts: i64 = row.get("attempts")?;
    Ok(Delivery {
        id: uint(row, "id")?,
        endpoint: WebhookEndpointId(blob_id(row, "endpoint")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        seq: uint(row, "seq")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: opt_uint(row, "next_attempt_at")?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.get("last_error")?,
        delivered_at: opt_uint(row, "delivered_at")?,
        created_at: uint(row, "created_at")?,
    })
}

fn event_from(row: &Row) -> rusqlite::Result<OutboxEvent> {
    Ok(OutboxEvent {
        seq: uint(row, "seq")?,
        tenant: TenantId(blob_id(row, "tenant")?),
        kind: parsed(row, "type", EventKind::parse)?,
        object: blob_id(row, "object")?,
        created_at: uint(row, "created_at")?,
    })
}

impl AdminStore for SqliteReader {
    fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO tenants (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
                params![id_blob(key.tenant.0), int(key.created_at)],
            )?;
            conn.execute(
                "INSERT INTO api_keys (id, tenant, hash, scopes, created_at, revoked, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key.id,
                    id_blob(key.tenant.0),
                    key.hash,
                    key.scopes.join(" "),
                    int(key.created_at),
                    key.revoked,
                    key.expires_at.map(int)
                ],
            )?;
            Ok(())
        })
    }

    fn insert_tenant(&self, t: &TenantRecord) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![id_blob(t.id.0), t.name, int(t.created_at)],
            )?;
            Ok(())
        })
    }

    fn tenant(&self, id: TenantId) -> Result<Option<TenantRecord>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM tenants WHERE id = ?1")?
                .query_row([id_blob(id.0)], |row| {
                    Ok(TenantRecord {
                        id: TenantId(blob_id(row, "id")?),
                        name: row.get("name")?,
                        created_at: uint(row, "created_at")?,
                    })
                })
                .optional()?)
        })
    }

    fn end_console_session(&self, id: &[u8; 16], expires_at: u64) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO console_sessions_ended (id, expires_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
                params![id.as_slice(), int(expires_at)],
            )?;
            Ok(())
        })
    }

    fn console_session_ended(&self, id: &[u8; 16]) -> Result<bool> {
        self.with(|conn| {
            Ok(conn
                .query_row("SELECT 1 FROM console_sessions_ended WHERE id = ?1", [id.as_slice()], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }

    fn revoke_api_key(&self, id: &str) -> Result<Option<[u8; 32]>> {
        self.with(|conn| {
            let hash: Option<[u8; 32]> =
                conn.query_row("SELECT hash FROM api_keys WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            conn.execute("UPDATE api_keys SET revoked = 1 WHERE id = ?1", [id])?;
            Ok(hash)
        })
    }

    fn rotate_api_key(&self, id: &str, hash: &[u8; 32], now: u64, previous_until: u64) -> Result<Option<ApiKeyRecord>> {
        self.with(|conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE api_keys SET hash = ?2,
                     previous_hash = CASE WHEN previous_expires_at > ?4 THEN previous_hash ELSE hash END,
                     previous_expires_at = min(?3, coalesce(expires_at, ?3))
                 WHERE id = ?1 AND revoked = 0",
                params![id, hash, int(previous_until), int(now)],
            )?;
            let record = if changed == 1 {
                tx.query_row("SELECT * FROM api_keys WHERE id = ?1", [id], |row| super::reader::api_key_from(row, None))
                    .optional()?
            } else {
                None
            };
            tx.commit()?;
            Ok(record)
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
        self.with(|conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            let bucket = tx
                .query_row("SELECT micro_tokens, refilled_at FROM rate_limits WHERE key = ?1", [key], |row| {
                    Ok(RateBucket { micro_tokens: uint(row, "micro_tokens")?, refilled_at: uint(row, "refilled_at")? })
                })
                .optional()?;
            let (grant, bucket) = crate::admin::take_tokens(bucket, now, rate, burst, want, returned);
            tx.execute(
                "INSERT INTO rate_limits (key, micro_tokens, refilled_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET micro_tokens = excluded.micro_tokens, refilled_at = excluded.refilled_at",
                params![key, int(bucket.micro_tokens), int(bucket.refilled_at)],
            )?;
            tx.commit()?;
            Ok(grant)
        })
    }

    fn insert_webhook_endpoint(&self, e: &WebhookEndpoint) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO webhook_endpoints (id, tenant, url, events, secret, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id_blob(e.id.0),
                    id_blob(e.tenant.0),
                    e.url,
                    event_names(&e.events),
                    e.secret,
                    int(e.created_at)
                ],
            )?;
            Ok(())
        })
    }

    fn webhook_endpoints(&self, tenant: TenantId) -> Result<Vec<WebhookEndpoint>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT * FROM webhook_endpoints WHERE tenant = ?1 AND deleted = 0 ORDER BY created_at DESC",
                )?
                .query_map([id_blob(tenant.0)], endpoint_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn webhook_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<Option<WebhookEndpoint>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM webhook_endpoints WHERE id = ?1 AND tenant = ?2 AND deleted = 0")?
                .query_row(params![id_blob(id.0), id_blob(tenant.0)], endpoint_from)
                .optional()?)
        })
    }

    fn delete_webhook_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<bool> {
        self.with(|conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE webhook_endpoints SET deleted = 1 WHERE id = ?1 AND tenant = ?2 AND deleted = 0",
                params![id_blob(id.0), id_blob(tenant.0)],
            )?;
            tx.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = NULL, last_error = 'endpoint deleted'
                 WHERE endpoint = ?1 AND next_attempt_at IS NOT NULL",
                [id_blob(id.0)],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn fan_out(&self, now: u64, limit: usize) -> Result<usize> {
        self.with(|conn| {
            // A plain read first: most rounds find nothing new and need no write lock.
            let pending: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox
                     WHERE seq > (SELECT value FROM meta WHERE key = 'webhook_outbox_seq'))",
                [],
                |r| r.get(0),
            )?;
            if !pending {
                return Ok(0);
            }
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            let cursor: i64 =
                tx.query_row("SELECT value FROM meta WHERE key = 'webhook_outbox_seq'", [], |r| r.get(0))?;
            let events = tx
                .prepare_cached("SELECT * FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
                .query_map(params![cursor, i64::try_from(limit).unwrap_or(i64::MAX)], event_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let Some(last) = events.last().map(|e| e.seq) else { return Ok(0) };
            {
                let mut endpoints =
                    tx.prepare_cached("SELECT id, events FROM webhook_endpoints WHERE tenant = ?1 AND deleted = 0")?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO webhook_deliveries (endpoint, tenant, seq, next_attempt_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (endpoint, seq) DO NOTHING",
                )?;
                for event in &events {
                    let subscribed = endpoints
                        .query_map([id_blob(event.tenant.0)], |r| {
                            Ok((r.get::<_, [u8; 16]>(0)?, r.get::<_, String>(1)?))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    for (endpoint, types) in subscribed {
                        if types.split_whitespace().any(|t| t == event.kind.as_str()) {
                            insert.execute(params![endpoint, id_blob(event.tenant.0), int(event.seq), int(now)])?;
                        }
                    }
                }
            }
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'webhook_outbox_seq'", [int(last)])?;
            tx.commit()?;
            Ok(events.len())
        })
    }

    fn due_deliveries(
        &self,
        now: u64,
        claimed_until: u64,
        limit: usize,
        skip: &[WebhookEndpointId],
    ) -> Result<Vec<Delivery>> {
        self.with(|conn| super::leases::due_deliveries(conn, now, claimed_until, limit, skip))
    }

    fn outbox_event(&self, seq: u64) -> Result<Option<OutboxEvent>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM outbox WHERE seq = ?1")?
                .query_row([int(seq)], event_from)
                .optional()?)
        })
    }

    fn record_attempt(&self, delivery: u64, a: &Attempt) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ?2,
                     last_status = ?3, last_error = ?4, claimed_until = NULL,
                     delivered_at = CASE WHEN ?5 THEN ?6 ELSE delivered_at END
                 WHERE id = ?1",
                params![int(delivery), a.next_attempt_at.map(int), a.status, a.error, a.delivered, int(a.at)],
            )?;
            Ok(())
        })
    }

    fn deliveries(&self, endpoint: WebhookEndpointId, before: Option<u64>, limit: usize) -> Result<Vec<Delivery>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT * FROM webhook_deliveries WHERE endpoint = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                )?
                .query_map(
                    params![
                        id_blob(endpoint.0),
                        before.map_or(i64::MAX, int),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    delivery_from,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn delivery(&self, tenant: TenantId, id: u64) -> Result<Option<Delivery>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM webhook_deliveries WHERE id = ?1 AND tenant = ?2")?
                .query_row(params![int(id), id_blob(tenant.0)], delivery_from)
                .optional()?)
        })
    }

    fn replay_delivery(&self, tenant: TenantId, id: u64, now: u64) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = ?3
                 WHERE id = ?1 AND tenant = ?2
                   AND endpoint IN (SELECT id FROM webhook_endpoints WHERE deleted = 0)",
                params![int(id), id_blob(tenant.0), int(now)],
            )?;
            Ok(n == 1)
        })
    }
}
