//! Risk controls on an account: its status (`active`, `frozen`, `closed`) and its limits
//! (largest single debit, outflow per UTC day, debits per rolling window), the update that
//! changes them at run time, and the audit record of every change.
//!
//! The values live on [`crate::Account`]; they are decided inside the engine's batch
//! (`state::limits`), never in a check before it.

use crate::{AccountId, TenantId};

/// The most debits a velocity limit may allow per window: the engine keeps at most this many
/// timestamps for the account.
pub const VELOCITY_COUNT_MAX: u32 = 10_000;
/// The longest velocity window: one day (so that recovery reads at most a day of history).
pub const VELOCITY_WINDOW_SECONDS_MAX: u64 = 86_400;

/// What an account may do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AccountStatus {
    /// Debits and credits.
    #[default]
    Active,
    /// Credits only: every debit is refused (`account_frozen`). Voiding or expiring a hold
    /// still releases it; posting one is a debit and is refused.
    Frozen,
    /// Nothing, for good: debits and credits are refused (`account_closed`). Only an account
    /// with zero balances and no holds can be closed, and a closed account cannot change.
    Closed,
}

impl AccountStatus {
    pub const ALL: [AccountStatus; 3] = [AccountStatus::Active, AccountStatus::Frozen, AccountStatus::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<AccountStatus> {
        AccountStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// At most `count` debits in any `window_seconds` (rolling).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Velocity {
    pub count: u32,
    pub window_seconds: u64,
}

/// An account's limits; `None` is no limit. Every debit counts: single transfers, holds
/// (at the time the hold is placed, for its whole amount), payments, refunds paid by the
/// account and batch items. Posting a hold does not count again; voiding or expiring one
/// gives nothing back.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Limits {
    /// The largest single debit, in minor units.
    pub max_payment: Option<u64>,
    /// The most debited per UTC day of the engine's clock, in minor units.
    pub daily_outflow: Option<u64>,
    pub velocity: Option<Velocity>,
}

impl Limits {
    /// Whether the engine must keep recent debits of the account in memory.
    pub fn need_history(&self) -> bool {
        self.daily_outflow.is_some() || self.velocity.is_some()
    }
}

/// Which limit a debit would pass.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LimitKind {
    MaxPayment,
    DailyOutflow,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::MaxPayment => "max_payment",
            LimitKind::DailyOutflow => "daily_outflow",
        }
    }
}

/// Why a debit was refused with `limit_exceeded`: the limit, its value, the amount asked for
/// and what the limit still allows.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LimitBreach {
    pub account: AccountId,
    pub limit: LimitKind,
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub value: u64,
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub requested: u64,
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub remaining: u64,
}

/// A change to one field: keep it (absent in the API's JSON), remove it (`null`) or set it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Change<T> {
    #[default]
    Keep,
    Remove,
    Set(T),
}

impl<T: Copy> Change<T> {
    /// The field's value after the change.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Change::Keep => current,
            Change::Remove => None,
            Change::Set(value) => Some(value),
        }
    }
}

/// What `PATCH /v1/accounts/{id}` changes: every field optional, so that fields can be added
/// later without changing the meaning of a body that lacks them.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AccountUpdate {
    pub status: Option<AccountStatus>,
    pub max_payment: Change<u64>,
    pub daily_outflow: Change<u64>,
    pub velocity: Change<Velocity>,
}

impl AccountUpdate {
    /// Whether the update names a limit.
    pub fn touches_limits(&self) -> bool {
        self.max_payment != Change::Keep || self.daily_outflow != Change::Keep || self.velocity != Change::Keep
    }
}

/// One change of an account's settings: who (the API key's id), when (the engine's batch
/// time, unique across the ledger), and the changed fields before and after, as JSON objects
/// (`{"status":"active"}` → `{"status":"frozen"}`; a removed limit is `null`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuditRecord {
    pub tenant: TenantId,
    pub account: AccountId,
    pub actor: String,
    pub at: u64,
    pub before: String,
    pub after: String,
}

/// The JSON object of the fields `update` changes, with their values in `status` and
/// `limits`. Written by hand: the values are numbers and fixed words, and the ledger has no
/// serializer. Keys in a fixed order, so the same change always gives the same bytes.
pub(crate) fn changed_fields_json(update: &AccountUpdate, status: AccountStatus, limits: &Limits) -> String {
    let mut fields: Vec<String> = Vec::new();
    if update.status.is_some() {
        fields.push(format!("\"status\":\"{}\"", status.as_str()));
    }
    let number = |value: Option<u64>| value.map_or_else(|| "null".to_owned(), |v| v.to_string());
    let mut limit_fields: Vec<String> = Vec::new();
    if update.max_payment != Change::Keep {
        limit_fields.push(format!("\"max_payment\":{}", number(limits.max_payment)));
    }
    if update.daily_outflow != Change::Keep {
        limit_fields.push(format!("\"daily_outflow\":{}", number(limits.daily_outflow)));
    }
    if update.velocity != Change::Keep {
        let velocity = limits.velocity.map_or_else(
            || "null".to_owned(),
            |v| format!("{{\"count\":{},\"window_seconds\":{}}}", v.count, v.window_seconds),
        );
        limit_fields.push(format!("\"velocity\":{velocity}"));
    }
    if !limit_fields.is_empty() {
        fields.push(format!("\"limits\":{{{}}}", limit_fields.join(",")));
    }
    format!("{{{}}}", fields.join(","))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_json_names_only_the_changed_fields() {
        let limits = Limits {
            max_payment: Some(5),
            daily_outflow: None,
            velocity: Some(Velocity { count: 3, window_seconds: 60 }),
        };
        let only_status = AccountUpdate { status: Some(AccountStatus::Frozen), ..AccountUpdate::default() };
        assert_eq!(changed_fields_json(&only_status, AccountStatus::Frozen, &limits), r#"{"status":"frozen"}"#);
        let all = AccountUpdate {
            status: None,
            max_payment: Change::Set(5),
            daily_outflow: Change::Remove,
            velocity: Change::Set(Velocity { count: 3, window_seconds: 60 }),
        };
        assert_eq!(
            changed_fields_json(&all, AccountStatus::Active, &limits),
            r#"{"limits":{"max_payment":5,"daily_outflow":null,"velocity":{"count":3,"window_seconds":60}}}"#
        );
        assert_eq!(changed_fields_json(&AccountUpdate::default(), AccountStatus::Active, &limits), "{}");
    }

    #[test]
    fn statuses_round_trip_their_names() {
        for status in AccountStatus::ALL {
            assert_eq!(AccountStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(AccountStatus::parse("Frozen"), None);
    }
}
