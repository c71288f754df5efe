//! An offline check of a data folder, from one consistent snapshot of the store: every
//! account's balances equal what its transfers add up to, balances sum to zero per currency,
//! every payment's status matches its transfers, and no batch item was paid twice.

use crate::sqlite::{account_from, blob_id, SqliteReader};
use crate::Result;
use paycore_ledger::{
    Account, AccountId, Balances, BatchId, CaptureMethod, Currency, PaymentStatus, RefundStatus, TransferId,
    TransferKind,
};
use rusqlite::Connection;
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
        // Enough to act on; a broken folder could otherwise print millions of lines.
        if self.problems.len() < 1000 {
            self.problems.push(text);
        }
    }
}

/// Runs every check.
pub fn verify(reader: &SqliteReader) -> Result<Report> {
    reader.with(|conn| {
        conn.execute_batch("BEGIN")?;
        let report = check(conn);
        conn.execute_batch("COMMIT")?;
        report
    })
}

struct Stored {
    kind: TransferKind,
    amount: u64,
}

fn check(conn: &Connection) -> Result<Report> {
    let mut report = Report::default();
    let mut computed: HashMap<AccountId, Balances> = HashMap::new();
    // Every transfer, for the payment and batch checks (id → kind, amount, pending id).
    let mut transfers: HashMap<TransferId, Stored> = HashMap::new();
    let mut resolved: HashMap<TransferId, (TransferKind, u64)> = HashMap::new();
    // The stored balances are valid at `through`; the transfers after it (with the amount of
    // the hold each resolves) bring them up to now.
    let through = crate::sqlite::balances_through(conn)?;
    let mut tail: Vec<(paycore_ledger::Transfer, u64)> = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT * FROM transfers ORDER BY timestamp")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let t = crate::sqlite::transfer_from(row)?;
            report.transfers += 1;
            let amount = u128::from(t.amount);
            let add =
                |counter: &mut u64, by: u128| *counter = u64::try_from(u128::from(*counter) + by).unwrap_or(u64::MAX);
            if i64::try_from(t.timestamp).map_or(true, |ts| ts > through) {
                let held = t.pending_id.and_then(|p| transfers.get(&p)).map_or(0, |hold| hold.amount);
                tail.push((t.clone(), held));
            }
            match t.kind {
                TransferKind::Single => {
                    add(&mut computed.entry(t.debit_account).or_default().debits_posted, amount);
                    add(&mut computed.entry(t.credit_account).or_default().credits_posted, amount);
                }
                TransferKind::Pending => {
                    add(&mut computed.entry(t.debit_account).or_default().debits_pending, amount);
                    add(&mut computed.entry(t.credit_account).or_default().credits_pending, amount);
                }
                TransferKind::PostPending | TransferKind::VoidPending | TransferKind::ExpirePending => {
                    let Some(pending) = t.pending_id.and_then(|p| transfers.get(&p)) else {
                        report.problem(format!("{}: resolves a hold that does not exist before it", t.id));
                        continue;
                    };
                    let held = pending.amount;
                    if let Some((previous, _)) = t.pending_id.and_then(|p| resolved.insert(p, (t.kind, t.amount))) {
                        report.problem(format!("{}: resolves a hold already resolved by a {:?}", t.id, previous));
                    }
                    let posted = if t.kind == TransferKind::PostPending { amount } else { 0 };
                    let debit = computed.entry(t.debit_account).or_default();
                    debit.debits_pending = debit.debits_pending.wrapping_sub(held);
                    add(&mut debit.debits_posted, posted);
                    let credit = computed.entry(t.credit_account).or_default();
                    credit.credits_pending = credit.credits_pending.wrapping_sub(held);
                    add(&mut credit.credits_posted, posted);
                }
            }
            if transfers.insert(t.id, Stored { kind: t.kind, amount: t.amount }).is_some() {
                report.problem(format!("{}: stored twice", t.id));
            }
        }
    }

    let mut sums: HashMap<Currency, (i128, i128)> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT * FROM accounts")?;
        let mut accounts: HashMap<AccountId, Account> =
            stmt.query_map([], account_from)?.map(|a| a.map(|a| (a.id, a))).collect::<rusqlite::Result<_>>()?;
        for (t, held) in &tail {
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
    }
    for (id, _) in computed {
        report.problem(format!("{id}: has transfers but is not an account"));
    }
    for (currency, (posted, pending)) in sums {
        if posted != 0 || pending != 0 {
            report.problem(format!("{currency}: balances sum to {posted} posted and {pending} pending, not zero"));
        }
    }

    check_payments(conn, &transfers, &resolved, &mut report)?;
    check_batches(conn, &transfers, &resolved, &mut report)?;
    Ok(report)
}

fn check_payments(
    conn: &Connection,
    transfers: &HashMap<TransferId, Stored>,
    resolved: &HashMap<TransferId, (TransferKind, u64)>,
    report: &mut Report,
) -> Result<()> {
    let mut refunded: HashMap<u128, u64> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT * FROM refunds")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let r = crate::sqlite::refund_from(row)?;
            let exists =
                transfers.get(&r.transfer).is_some_and(|t| t.kind == TransferKind::Single && t.amount == r.amount);
            match r.status {
                RefundStatus::Succeeded if !exists => {
                    report.problem(format!("{}: succeeded without its transfer", r.id))
                }
                RefundStatus::Failed if transfers.contains_key(&r.transfer) => {
                    report.problem(format!("{}: failed but its transfer exists", r.id))
                }
                RefundStatus::Succeeded => *refunded.entry(r.payment.0).or_default() += r.amount,
                RefundStatus::Failed => {}
            }
        }
    }
    let mut stmt = conn.prepare("SELECT * FROM payments")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let p = crate::sqlite::payment_from(row)?;
        report.payments += 1;
        let confirm = p.transfer.and_then(|id| transfers.get(&id).map(|t| (id, t)));
        let resolution = p.transfer.and_then(|id| resolved.get(&id)).copied();
        let hold_fate = resolution.map(|(kind, _)| kind);
        let consistent = match (p.status, p.capture_method, confirm) {
            (PaymentStatus::RequiresConfirmation | PaymentStatus::Failed, _, None) => true,
            (PaymentStatus::Cancelled | PaymentStatus::Expired, _, None) => true,
            (PaymentStatus::Succeeded, CaptureMethod::Automatic, Some((_, t))) => {
                t.kind == TransferKind::Single && t.amount == p.amount_captured
            }
            (PaymentStatus::Succeeded, CaptureMethod::Manual, Some((_, t))) => {
                t.kind == TransferKind::Pending && resolution == Some((TransferKind::PostPending, p.amount_captured))
            }
            (PaymentStatus::RequiresCapture, _, Some((_, t))) => t.kind == TransferKind::Pending && hold_fate.is_none(),
            (PaymentStatus::Cancelled, _, Some((_, t))) => {
                t.kind == TransferKind::Pending && hold_fate == Some(TransferKind::VoidPending)
            }
            (PaymentStatus::Expired, _, Some((_, t))) => {
                t.kind == TransferKind::Pending && hold_fate == Some(TransferKind::ExpirePending)
            }
            _ => false,
        };
        if !consistent {
            report.problem(format!("{}: status {} does not match its transfers", p.id, p.status.as_str()));
        }
        let refunds = refunded.get(&p.id.0).copied().unwrap_or(0);
        if refunds != p.amount_refunded || p.amount_refunded > p.amount_captured {
            report.problem(format!(
                "{}: amount_refunded {} but succeeded refunds add up to {refunds} (captured {})",
                p.id, p.amount_refunded, p.amount_captured
            ));
        }
    }
    Ok(())
}

fn check_batches(
    conn: &Connection,
    transfers: &HashMap<TransferId, Stored>,
    resolved: &HashMap<TransferId, (TransferKind, u64)>,
    report: &mut Report,
) -> Result<()> {
    let batches: Vec<u128> = conn
        .prepare("SELECT id FROM batches ORDER BY id")?
        .query_map([], |row| blob_id(row, "id"))?
        .collect::<rusqlite::Result<_>>()?;
    for batch in batches.into_iter().map(BatchId) {
        let mut after = None;
        loop {
            // Statuses as the API derives them from the item rows and the result runs.
            let items: Vec<crate::BatchItemRow> = crate::batches::list_items(conn, batch, &[], after, 65_536)?;
            let Some(last) = items.last() else { break };
            after = Some(last.index);
            for item in &items {
                check_item(batch, item.index, &item.status, transfers, resolved, report);
            }
        }
    }
    Ok(())
}

fn check_item(
    batch: BatchId,
    index: u64,
    status: &str,
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
        "succeeded" => moved,
        "held" => held,
        "pending" | "invalid" | "failed" | "voided" | "cancelled" => !moved && !held,
        _ => false,
    };
    if !consistent {
        report.problem(format!("{batch} item {index}: status {status} does not match its transfers"));
    }
}
