//! An offline check of a store, from one consistent snapshot of it: every account's balances
//! equal what its transfers add up to, balances sum to zero per currency, every payment's
//! status matches its transfers, and no batch item was paid twice.
//!
//! The checks are written once, over [`Snapshot`]; each backend only reads its rows in the
//! orders asked for (see [`Verify`]), so `paycore verify` runs unchanged on every store.

use crate::{BatchItemRow, Result};
use paycore_ledger::{
    Account, AccountId, Balances, BatchId, CaptureMethod, ClearingWindow, Currency, ItemStatus, Payment, PaymentStatus,
    Refund, RefundStatus, TenantId, Transfer, TransferId, TransferKind,
};
use std::collections::HashMap;

/// What the check found. Empty `problems` means every invariant holds.
#[derive(Debug, Default)]
pub struct Report {
    pub accounts: u64,
    pub transfers: u64,
    pub payments: u64,
    pub batch_items: u64,
    pub clearing_windows: u64,
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
    /// Every closed clearing window with its positions, by tenant, currency and sequence.
    fn clearing_windows(&mut self, each: &mut dyn FnMut(ClearingWindow)) -> Result<()>;
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
    check_clearing(snapshot, &mut report)?;
    Ok(report)
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

/// Clearing windows: each one's figures agree with themselves (nets sum to zero, the gross
/// volume is the debits, `net = credits - debits`, `closing = opening + net`), a tenant's
/// windows in a currency follow each other (sequence 1, 2, …, each opening at the previous
/// close, each account opening at its previous closing), and every position is what the posted
/// transfers of its window add up to: the windows hold every posted transfer up to the last
/// close once, and nothing else. A second pass over the transfers, made only when there are
/// windows; memory grows with the positions, not the transfers.
fn check_clearing(snapshot: &mut dyn Snapshot, report: &mut Report) -> Result<()> {
    let mut windows: Vec<ClearingWindow> = Vec::new();
    snapshot.clearing_windows(&mut |w| windows.push(w))?;
    report.clearing_windows = u64::try_from(windows.len()).unwrap_or(u64::MAX);
    if windows.is_empty() {
        return Ok(());
    }
    // Each chain of windows on its own, and the close instants of each, to place transfers.
    let mut closes: HashMap<(TenantId, Currency), Vec<(u64, usize)>> = HashMap::new();
    let mut closing: HashMap<AccountId, i64> = HashMap::new();
    for (index, w) in windows.iter().enumerate() {
        let chain = closes.entry((w.tenant, w.currency)).or_default();
        let (sequence, opened_at) = chain.last().map_or((1, 0), |&(at, i)| (windows[i].sequence + 1, at));
        if w.sequence != sequence || w.opened_at != opened_at || w.closed_at <= w.opened_at {
            report.problem(format!(
                "clearing window {} ({} {}): sequence {} opened at {}, expected sequence {sequence} opened at {opened_at}",
                w.id, w.tenant, w.currency, w.sequence, w.opened_at
            ));
        }
        chain.push((w.closed_at, index));
        let net: i128 = w.positions.iter().map(|p| i128::from(p.net)).sum();
        let debits: u128 = w.positions.iter().map(|p| u128::from(p.debits)).sum();
        if net != 0 || debits != u128::from(w.gross_volume) {
            report.problem(format!(
                "clearing window {}: nets sum to {net}, debits to {debits}, gross volume {}",
                w.id, w.gross_volume
            ));
        }
        for p in &w.positions {
            let opening = closing.get(&p.account).copied().unwrap_or(0);
            let consistent = i128::from(p.net) == i128::from(p.credits) - i128::from(p.debits)
                && i128::from(p.closing) == i128::from(p.opening) + i128::from(p.net)
                && p.opening == opening;
            if !consistent {
                report.problem(format!(
                    "clearing window {}, account {}: opening {} debits {} credits {} net {} closing {} \
                     (the account closed its last window at {opening})",
                    w.id, p.account, p.opening, p.debits, p.credits, p.net, p.closing
                ));
            }
            closing.insert(p.account, p.closing);
        }
    }
    // The posted transfers, added up per window and account.
    let mut sums: HashMap<(usize, AccountId), (u128, u128)> = HashMap::new();
    snapshot.transfers(&mut |t| {
        if !crate::clearing::POSTED_KINDS.contains(&t.kind) {
            return;
        }
        let Some(chain) = closes.get(&(t.tenant, t.currency)) else { return };
        // The first window that closed at or after the transfer; none: the open window.
        let at = chain.partition_point(|&(closed_at, _)| closed_at < t.timestamp);
        if let Some(&(_, index)) = chain.get(at) {
            sums.entry((index, t.debit_account)).or_default().0 += u128::from(t.amount);
            sums.entry((index, t.credit_account)).or_default().1 += u128::from(t.amount);
        }
    })?;
    for (index, w) in windows.iter().enumerate() {
        for p in &w.positions {
            let found = sums.remove(&(index, p.account)).unwrap_or_default();
            if found != (u128::from(p.debits), u128::from(p.credits)) {
                report.problem(format!(
                    "clearing window {}, account {}: debits/credits {}/{} but its transfers add up to {}/{}",
                    w.id, p.account, p.debits, p.credits, found.0, found.1
                ));
            }
        }
    }
    for ((index, account), (debits, credits)) in sums {
        report.problem(format!(
            "clearing window {}: account {account} moved {debits}/{credits} in it but has no position",
            windows[index].id
        ));
    }
    Ok(())
}
