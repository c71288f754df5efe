//! An offline check of a store, from one consistent snapshot of it: every account's balances
//! equal what its transfers add up to, balances sum to zero per currency, every payment's
//! status matches its transfers, and no batch item was paid twice.
//!
//! The checks are written once, over [`Snapshot`]; each backend only reads its rows in the
//! orders asked for (see [`Verify`]), so `paycore verify` runs unchanged on every store.

use crate::{BatchItemRow, Result};
use paycore_ledger::{
    Account, AccountId, Balances, BatchId, CaptureMethod, Currency, ItemStatus, Payment, PaymentStatus, Refund,
    RefundStatus, Transfer, TransferId, TransferKind,
};
use std::collections::HashMap;

/// What the check found. Empty `problems` means every invariant holds.
#[derive(Debug, Default)]
pub struct Report {
    pub accounts: u64,
    pub transfers: u64,
    pub payments: u64,
    pub batch_items: u64,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, text: String) {
        // Enough to act on; a broken store could otherwise print millions of lines.
        if self.problems.len() < PROBLEMS_MAX {
            self.problems.push(text);
        }
    }
}

/// The most problems a report lists.
const PROBLEMS_MAX: usize = 1000;
/// Batch items read at a time.
const ITEMS_PER_READ: usize = 65_536;

/// One consistent snapshot of everything a store holds, read in the orders the checks need.
pub trait Snapshot {
    /// The timestamp the stored account balances are valid at: the transfers after it are
    /// replayed on them to get the balances now (0 when every transfer is to be replayed).
    fn balances_through(&mut self) -> Result<u64>;
    /// Every transfer, in timestamp order.
    fn transfers(&mut self, each: &mut dyn FnMut(Transfer)) -> Result<()>;
    /// Every account, with its balances as stored.
    fn accounts(&mut self) -> Result<Vec<Account>>;
    fn refunds(&mut self, each: &mut dyn FnMut(Refund)) -> Result<()>;
    fn payments(&mut self, each: &mut dyn FnMut(Payment)) -> Result<()>;
    /// Every batch's id, in id order.
    fn batches(&mut self) -> Result<Vec<BatchId>>;
    /// A batch's items after `after`, in index order, with their derived status.
    fn batch_items(&mut self, batch: BatchId, after: Option<u64>, limit: usize) -> Result<Vec<BatchItemRow>>;
    /// Every interest-bearing account's terms and accrual (`account_interest`).
    fn interest_accounts(&mut self) -> Result<Vec<crate::InterestRecord>>;
}

/// A store that can be checked: it runs a check over one snapshot of itself.
pub trait Verify: Send + Sync {
    fn with_snapshot(&self, check: &mut dyn FnMut(&mut dyn Snapshot) -> Result<Report>) -> Result<Report>;
}

/// Runs every check over one snapshot of `store`.
pub fn verify(store: &dyn Verify) -> Result<Report> {
    store.with_snapshot(&mut check)
}

/// A stored transfer, as the payment and batch checks need it.
struct Stored {
    kind: TransferKind,
    amount: u64,
}

/// What replaying every transfer found.
#[derive(Default)]
struct Replayed {
    /// Each account's balances as its transfers add them up.
    computed: HashMap<AccountId, Balances>,
    /// Every transfer, for the payment and batch checks.
    transfers: HashMap<TransferId, Stored>,
    /// Each resolved hold: the kind and amount of the transfer that resolved it.
    resolved: HashMap<TransferId, (TransferKind, u64)>,
    /// The transfers after the stored balances' timestamp, with the amount of the hold each
    /// resolves (0 for none).
    tail: Vec<(Transfer, u64)>,
}

fn check(snapshot: &mut dyn Snapshot) -> Result<Report> {
    let mut report = Report::default();
    let through = snapshot.balances_through()?;
    let replayed = replay_transfers(snapshot, through, &mut report)?;
    check_balances(snapshot, replayed.computed, &replayed.tail, &mut report)?;
    check_payments(snapshot, &replayed.transfers, &replayed.resolved, &mut report)?;
    check_batches(snapshot, &replayed.transfers, &replayed.resolved, &mut report)?;
    check_interest(snapshot, &mut report)?;
    Ok(report)
}

/// Interest: each row belongs to an account of its tenant and currency; what was posted is
/// the rounded cumulative exact interest (`ledger::interest`: a run posts whole periods, so
/// after every run `posted = round(exact)`); nothing is negative and nothing compounded that
/// was not accrued; the batch that last posted is stored.
fn check_interest(snapshot: &mut dyn Snapshot, report: &mut Report) -> Result<()> {
    let rows = snapshot.interest_accounts()?;
    if rows.is_empty() {
        return Ok(());
    }
    let accounts: HashMap<AccountId, Account> = snapshot.accounts()?.into_iter().map(|a| (a.id, a)).collect();
    let batches: std::collections::HashSet<BatchId> = snapshot.batches()?.into_iter().collect();
    for row in rows {
        let id = row.account;
        match accounts.get(&id) {
            Some(a) if a.tenant == row.tenant && a.currency == row.currency => {}
            _ => report.problem(format!("{id}: bears interest but is no {} account of its tenant", row.currency)),
        }
        for (side, accrued) in [("credit", row.accrual.credit), ("debit", row.accrual.debit)] {
            match paycore_ledger::interest::round_minor(accrued.exact) {
                Ok(rounded) if rounded == accrued.posted => {}
                _ => report.problem(format!(
                    "{id}: {side} interest posted {} but the exact cumulative interest {} rounds otherwise",
                    accrued.posted, accrued.exact
                )),
            }
            if accrued.compounded.is_sign_negative() || accrued.compounded > accrued.exact {
                report.problem(format!(
                    "{id}: {side} interest compounded {} of {} accrued",
                    accrued.compounded, accrued.exact
                ));
            }
        }
        if row.accrued_through < row.since.previous() {
            report.problem(format!(
                "{id}: accrued through {} before its terms began on {}",
                row.accrued_through, row.since
            ));
        }
        if let Some(batch) = row.last_batch.filter(|b| !batches.contains(b)) {
            report.problem(format!("{id}: its interest was last posted by {batch}, which is not stored"));
        }
    }
    Ok(())
}

/// Adds up every transfer's effect on its accounts, and notes what the later checks need.
fn replay_transfers(snapshot: &mut dyn Snapshot, through: u64, report: &mut Report) -> Result<Replayed> {
    let mut r = Replayed::default();
    let add = |counter: &mut u64, by: u128| *counter = u64::try_from(u128::from(*counter) + by).unwrap_or(u64::MAX);
    snapshot.transfers(&mut |t| {
        report.transfers += 1;
        let amount = u128::from(t.amount);
        if t.timestamp > through {
            let held = t.pending_id.and_then(|p| r.transfers.get(&p)).map_or(0, |hold| hold.amount);
            r.tail.push((t.clone(), held));
        }
        match t.kind {
            TransferKind::Single => {
                add(&mut r.computed.entry(t.debit_account).or_default().debits_posted, amount);
                add(&mut r.computed.entry(t.credit_account).or_default().credits_posted, amount);
            }
            TransferKind::Pending => {
                add(&mut r.computed.entry(t.debit_account).or_default().debits_pending, amount);
                add(&mut r.computed.entry(t.credit_account).or_default().credits_pending, amount);
            }
            TransferKind::PostPending | TransferKind::VoidPending | TransferKind::ExpirePending => {
                let Some(pending) = t.pending_id.and_then(|p| r.transfers.get(&p)) else {
                    report.problem(format!("{}: resolves a hold that does not exist before it", t.id));
                    return;
                };
                let held = pending.amount;
                if let Some((previous, _)) = t.pending_id.and_then(|p| r.resolved.insert(p, (t.kind, t.amount))) {
                    report.problem(format!("{}: resolves a hold already resolved by a {:?}", t.id, previous));
                }
                let posted = if t.kind == TransferKind::PostPending { amount } else { 0 };
                let debit = r.computed.entry(t.debit_account).or_default();
                debit.debits_pending = debit.debits_pending.wrapping_sub(held);
                add(&mut debit.debits_posted, posted);
                let credit = r.computed.entry(t.credit_account).or_default();
                credit.credits_pending = credit.credits_pending.wrapping_sub(held);
                add(&mut credit.credits_posted, posted);
            }
        }
        if r.transfers.insert(t.id, Stored { kind: t.kind, amount: t.amount }).is_some() {
            report.problem(format!("{}: stored twice", t.id));
        }
    })?;
    Ok(r)
}

/// Compares each account's stored balances (brought up to now by the tail) with what its
/// transfers add up to, and checks that every currency's balances sum to zero.
fn check_balances(
    snapshot: &mut dyn Snapshot,
    mut computed: HashMap<AccountId, Balances>,
    tail: &[(Transfer, u64)],
    report: &mut Report,
) -> Result<()> {
    let mut accounts: HashMap<AccountId, Account> = snapshot.accounts()?.into_iter().map(|a| (a.id, a)).collect();
    for (t, held) in tail {
        let stored = |id| accounts.get(&id).map(|a: &Account| a.balances);
        if let (Some(mut debit), Some(mut credit)) = (stored(t.debit_account), stored(t.credit_account)) {
            if t.replay(*held, &mut debit, &mut credit).is_none() {
                report.problem(format!("{}: replayed on the stored balances, takes one out of range", t.id));
            }
            for (id, balances) in [(t.debit_account, debit), (t.credit_account, credit)] {
                if let Some(account) = accounts.get_mut(&id) {
                    account.balances = balances;
                }
            }
        }
    }
    let mut accounts: Vec<Account> = accounts.into_values().collect();
    accounts.sort_unstable_by_key(|a| a.id);
    let mut sums: HashMap<Currency, (i128, i128)> = HashMap::new();
    for account in accounts {
        report.accounts += 1;
        let stored = account.balances;
        let expected = computed.remove(&account.id).unwrap_or_default();
        if stored != expected {
            report.problem(format!(
                "{}: stored balances {stored:?} but its transfers add up to {expected:?}",
                account.id
            ));
        }
        if let Some(available) = stored.available(account.overdraft) {
            if available < 0 {
                report.problem(format!("{}: available balance {available} is below zero", account.id));
            }
        }
        let sum = sums.entry(account.currency).or_default();
        sum.0 += i128::from(stored.credits_posted) - i128::from(stored.debits_posted);
        sum.1 += i128::from(stored.credits_pending) - i128::from(stored.debits_pending);
    }
    for (id, _) in computed {
        report.problem(format!("{id}: has transfers but is not an account"));
    }
    for (currency, (posted, pending)) in sums {
        if posted != 0 || pending != 0 {
            report.problem(format!("{currency}: balances sum to {posted} posted and {pending} pending, not zero"));
        }
    }
    Ok(())
}

fn check_payments(
    snapshot: &mut dyn Snapshot,
    transfers: &HashMap<TransferId, Stored>,
    resolved: &HashMap<TransferId, (TransferKind, u64)>,
    report: &mut Report,
) -> Result<()> {
    let mut refunded: HashMap<u128, u64> = HashMap::new();
    snapshot.refunds(&mut |r| {
        let exists = transfers.get(&r.transfer).is_some_and(|t| t.kind == TransferKind::Single && t.amount == r.amount);
        match r.status {
            RefundStatus::Succeeded if !exists => report.problem(format!("{}: succeeded without its transfer", r.id)),
            RefundStatus::Failed if transfers.contains_key(&r.transfer) => {
                report.problem(format!("{}: failed but its transfer exists", r.id))
            }
            RefundStatus::Succeeded => *refunded.entry(r.payment.0).or_default() += r.amount,
            RefundStatus::Failed => {}
        }
    })?;
    snapshot.payments(&mut |p| {
        report.payments += 1;
        if !payment_matches_transfers(&p, transfers, resolved) {
            report.problem(format!("{}: status {} does not match its transfers", p.id, p.status.as_str()));
        }
        let refunds = refunded.get(&p.id.0).copied().unwrap_or(0);
        if refunds != p.amount_refunded || p.amount_refunded > p.amount_captured {
            report.problem(format!(
                "{}: amount_refunded {} but succeeded refunds add up to {refunds} (captured {})",
                p.id, p.amount_refunded, p.amount_captured
            ));
        }
    })
}

/// Whether a payment's status is what its confirming transfer and that hold's fate say.
fn payment_matches_transfers(
    p: &Payment,
    transfers: &HashMap<TransferId, Stored>,
    resolved: &HashMap<TransferId, (TransferKind, u64)>,
) -> bool {
    let confirm = p.transfer.and_then(|id| transfers.get(&id));
    let resolution = p.transfer.and_then(|id| resolved.get(&id)).copied();
    let hold_fate = resolution.map(|(kind, _)| kind);
    match (p.status, p.capture_method, confirm) {
        (PaymentStatus::RequiresConfirmation | PaymentStatus::Failed, _, None) => true,
        (PaymentStatus::Cancelled | PaymentStatus::Expired, _, None) => true,
        (PaymentStatus::Succeeded, CaptureMethod::Automatic, Some(t)) => {
            t.kind == TransferKind::Single && t.amount == p.amount_captured
        }
        (PaymentStatus::Succeeded, CaptureMethod::Manual, Some(t)) => {
            t.kind == TransferKind::Pending && resolution == Some((TransferKind::PostPending, p.amount_captured))
        }
        (PaymentStatus::RequiresCapture, _, Some(t)) => t.kind == TransferKind::Pending && hold_fate.is_none(),
        (PaymentStatus::Cancelled, _, Some(t)) => {
            t.kind == TransferKind::Pending && hold_fate == Some(TransferKind::VoidPending)
        }
        (PaymentStatus::Expired, _, Some(t)) => {
            t.kind == TransferKind::Pending && hold_fate == Some(TransferKind::ExpirePending)
        }
        _ => false,
    }
}

fn check_batches(
    snapshot: &mut dyn Snapshot,
    transfers: &HashMap<TransferId, Stored>,
    resolved: &HashMap<TransferId, (TransferKind, u64)>,
    report: &mut Report,
) -> Result<()> {
    for batch in snapshot.batches()? {
        let mut after = None;
        loop {
            // Statuses as the API derives them from the item rows and the result runs.
            let items = snapshot.batch_items(batch, after, ITEMS_PER_READ)?;
            let Some(last) = items.last() else { break };
            after = Some(last.index);
            for item in &items {
                check_item(batch, item.index, item.status, transfers, resolved, report);
            }
        }
    }
    Ok(())
}

fn check_item(
    batch: BatchId,
    index: u64,
    status: ItemStatus,
    transfers: &HashMap<TransferId, Stored>,
    resolved: &HashMap<TransferId, (TransferKind, u64)>,
    report: &mut Report,
) {
    report.batch_items += 1;
    let paid = transfers.get(&batch.item_transfer(index));
    let moved = match paid.map(|t| t.kind) {
        Some(TransferKind::Single) => true,
        Some(TransferKind::Pending) => {
            resolved.get(&batch.item_transfer(index)).is_some_and(|(kind, _)| *kind == TransferKind::PostPending)
        }
        _ => false,
    };
    let held =
        paid.is_some_and(|t| t.kind == TransferKind::Pending) && !resolved.contains_key(&batch.item_transfer(index));
    let consistent = match status {
        ItemStatus::Succeeded => moved,
        ItemStatus::Held => held,
        ItemStatus::Pending | ItemStatus::Invalid | ItemStatus::Failed | ItemStatus::Voided | ItemStatus::Cancelled => {
            !moved && !held
        }
    };
    if !consistent {
        report.problem(format!("{batch} item {index}: status {status} does not match its transfers"));
    }
}
