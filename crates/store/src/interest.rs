//! Interest-bearing accounts: their terms and accrual state (table `account_interest`), the
//! daily closing balances a run accrues on, and the one transaction that creates a run's batch
//! and advances every account's accrual with it — the [`InterestStore`] contract and the
//! backend-neutral rules (row encoding, closing balances from the stored transfers).
//!
//! **Exactly once.** A run computes, per account, the postings of the periods after its
//! `accrued_through`, then [`InterestStore::create_interest_run`] writes the batch (status
//! `processing`, its items and totals) and each account's new accrual in one transaction,
//! each account's row only if its `accrued_through` is still what the run read: a second run
//! racing the first finds it moved and is refused as a whole ([`StoreError::Conflict`]). The
//! money then moves through the engine as any batch's items do: an item's transfer id derives
//! from the batch id and its index, so a runner killed half way and resumed pays each once.

use crate::batches::{BatchItemRow, BatchRecord, BatchTotal};
use crate::{Result, StoreError};
use paycore_ledger::interest::{Accrual, Accrued, Compounding, Date, DayCount, Decimal, Posting, Terms};
use paycore_ledger::{AccountId, BatchId, Currency, TenantId, Transfer, TransferKind};
use std::collections::{HashMap, HashSet};

/// An account's interest terms and where its accrual stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterestRecord {
    pub account: AccountId,
    pub tenant: TenantId,
    pub currency: Currency,
    pub terms: Terms,
    /// The first day the terms accrued on (the day they were first set).
    pub since: Date,
    /// The last day accrued and posted; a run starts the day after.
    pub accrued_through: Date,
    pub accrual: Accrual,
    /// The batch that last posted this account's interest.
    pub last_batch: Option<BatchId>,
    pub updated_at: u64,
}

/// A run's new accrual for one account, written only if its `accrued_through` is still `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterestAdvance {
    pub account: AccountId,
    pub from: Date,
    pub accrued_through: Date,
    pub accrual: Accrual,
}

/// Everything one run writes, in one transaction.
#[derive(Clone, Debug)]
pub struct InterestRun<'a> {
    /// `processing`, format `interest`, with `total` and `validated_at` set.
    pub batch: &'a BatchRecord,
    pub items: &'a [BatchItemRow],
    pub totals: &'a [BatchTotal],
    pub advances: &'a [InterestAdvance],
}

/// Posted balances now, and what moved on each day since a date, read in one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalanceHistory {
    pub balances: HashMap<AccountId, i64>,
    /// Per account and day (days since the epoch), the net posted change of that day.
    pub moves: HashMap<(AccountId, i32), i64>,
}

impl BalanceHistory {
    /// The account's posted balance at the end of `day`: its balance now minus everything
    /// that moved on later days (of those the history was read from).
    pub fn closing(&self, account: AccountId, day: Date) -> i64 {
        let now = self.balances.get(&account).copied().unwrap_or(0);
        let later: i64 =
            self.moves.iter().filter(|((a, d), _)| *a == account && *d > day.days()).map(|(_, delta)| *delta).sum();
        now.saturating_sub(later)
    }

    /// Adds the stored transfers' posted movements of `accounts` (by day) to the history,
    /// leaving out those whose other side is in `exclude` (the interest accounts: interest
    /// posted after its period is counted from its period's end, by the accrual itself).
    pub fn add_transfers<'a>(
        &mut self,
        transfers: impl IntoIterator<Item = &'a Transfer>,
        accounts: &HashSet<AccountId>,
        exclude: &HashSet<AccountId>,
    ) {
        for t in transfers {
            if !matches!(t.kind, TransferKind::Single | TransferKind::PostPending) {
                continue;
            }
            let amount = i64::try_from(t.amount).unwrap_or(i64::MAX);
            let day = Date::of_instant(t.timestamp).days();
            if accounts.contains(&t.credit_account) && !exclude.contains(&t.debit_account) {
                let e = self.moves.entry((t.credit_account, day)).or_insert(0);
                *e = e.saturating_add(amount);
            }
            if accounts.contains(&t.debit_account) && !exclude.contains(&t.credit_account) {
                let e = self.moves.entry((t.debit_account, day)).or_insert(0);
                *e = e.saturating_sub(amount);
            }
        }
    }
}

/// The API's writes and reads of interest terms and runs.
pub trait InterestStore: Send + Sync {
    /// Sets an account's terms: a new row as given, or, for an account that has terms
    /// already, the new terms on the stored row, whose accrual goes on from where it stands
    /// (the new terms apply from the first day not yet accrued). Returns the row as stored.
    fn set_interest(&self, record: &InterestRecord) -> Result<InterestRecord>;
    /// Removes an account's terms (it accrues no more); false if it had none.
    fn remove_interest(&self, tenant: TenantId, account: AccountId) -> Result<bool>;
    fn interest(&self, tenant: TenantId, account: AccountId) -> Result<Option<InterestRecord>>;
    /// Every interest-bearing account of the tenant, by account id.
    fn interest_accounts(&self, tenant: TenantId) -> Result<Vec<InterestRecord>>;
    /// The posted balances of `accounts` now and their daily movements after the end of
    /// `after`, in one consistent snapshot, leaving out transfers with `exclude`.
    fn balance_history(
        &self,
        tenant: TenantId,
        accounts: &[AccountId],
        exclude: &[AccountId],
        after: Date,
    ) -> Result<BalanceHistory>;
    /// Writes a run (see the module docs): all of it, or nothing and
    /// [`StoreError::Conflict`] when an account's accrual moved since it was read.
    fn create_interest_run(&self, run: &InterestRun<'_>) -> Result<()>;
}

/// An [`InterestRecord`] as its columns hold it (dates as day numbers, decimals as text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InterestColumns {
    pub account: [u8; 16],
    pub tenant: [u8; 16],
    pub currency: String,
    pub annual_rate: String,
    pub day_count: String,
    pub compounding: String,
    pub posting: String,
    pub min_balance: i64,
    pub debit_rate: Option<String>,
    pub since: i64,
    pub accrued_through: i64,
    pub credit_exact: String,
    pub credit_compounded: String,
    pub credit_posted: i64,
    pub debit_exact: String,
    pub debit_compounded: String,
    pub debit_posted: i64,
    pub last_batch: Option<[u8; 16]>,
    pub updated_at: i64,
}

/// The columns of `account_interest`, in the order of [`InterestColumns`].
pub(crate) const INTEREST_COLUMNS: &str = "account, tenant, currency, annual_rate, day_count, compounding, posting,
    min_balance, debit_rate, since, accrued_through, credit_exact, credit_compounded, credit_posted,
    debit_exact, debit_compounded, debit_posted, last_batch, updated_at";

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl InterestColumns {
    pub fn encode(r: &InterestRecord) -> InterestColumns {
        InterestColumns {
            account: r.account.0.to_be_bytes(),
            tenant: r.tenant.0.to_be_bytes(),
            currency: r.currency.code().to_owned(),
            annual_rate: r.terms.annual_rate.to_string(),
            day_count: r.terms.day_count.as_str().to_owned(),
            compounding: r.terms.compounding.as_str().to_owned(),
            posting: r.terms.posting.as_str().to_owned(),
            min_balance: signed(r.terms.min_balance),
            debit_rate: r.terms.debit_rate.map(|d| d.to_string()),
            since: i64::from(r.since.days()),
            accrued_through: i64::from(r.accrued_through.days()),
            credit_exact: r.accrual.credit.exact.to_string(),
            credit_compounded: r.accrual.credit.compounded.to_string(),
            credit_posted: signed(r.accrual.credit.posted),
            debit_exact: r.accrual.debit.exact.to_string(),
            debit_compounded: r.accrual.debit.compounded.to_string(),
            debit_posted: signed(r.accrual.debit.posted),
            last_batch: r.last_batch.map(|b| b.0.to_be_bytes()),
            updated_at: signed(r.updated_at),
        }
    }

    pub fn decode(self) -> Result<InterestRecord> {
        let bad = |what: &str| StoreError::Corrupt(format!("account_interest: {what}"));
        let decimal = |text: &str, what: &str| text.parse::<Decimal>().map_err(|_| bad(what));
        let day = |n: i64, what: &str| i32::try_from(n).map(Date::from_days).map_err(|_| bad(what));
        let unsigned = |n: i64, what: &str| u64::try_from(n).map_err(|_| bad(what));
        let accrued = |exact: &str, compounded: &str, posted: i64| -> Result<Accrued> {
            Ok(Accrued {
                exact: decimal(exact, "exact interest")?,
                compounded: decimal(compounded, "compounded interest")?,
                posted: unsigned(posted, "posted interest")?,
            })
        };
        Ok(InterestRecord {
            account: AccountId(u128::from_be_bytes(self.account)),
            tenant: TenantId(u128::from_be_bytes(self.tenant)),
            currency: Currency::from_code(&self.currency).ok_or_else(|| bad("currency"))?,
            terms: Terms {
                annual_rate: decimal(&self.annual_rate, "annual_rate")?,
                day_count: DayCount::parse(&self.day_count).ok_or_else(|| bad("day_count"))?,
                compounding: Compounding::parse(&self.compounding).ok_or_else(|| bad("compounding"))?,
                posting: Posting::parse(&self.posting).ok_or_else(|| bad("posting"))?,
                min_balance: unsigned(self.min_balance, "min_balance")?,
                debit_rate: self.debit_rate.as_deref().map(|d| decimal(d, "debit_rate")).transpose()?,
            },
            since: day(self.since, "since")?,
            accrued_through: day(self.accrued_through, "accrued_through")?,
            accrual: Accrual {
                credit: accrued(&self.credit_exact, &self.credit_compounded, self.credit_posted)?,
                debit: accrued(&self.debit_exact, &self.debit_compounded, self.debit_posted)?,
            },
            last_batch: self.last_batch.map(|b| BatchId(u128::from_be_bytes(b))),
            updated_at: unsigned(self.updated_at, "updated_at")?,
        })
    }
}
