//! An offline check of a store, from one consistent snapshot of it: every account's balances
//! equal what its transfers add up to, balances sum to zero per currency, every payment's
//! status matches its transfers, no batch item was paid twice, every cross-currency payment
//! and the quote it used name each other with the same amounts (and, once it succeeded, its fee
//! and payee transfers carry them), and accounts kept their status and limits (a closed account
//! is empty and moved nothing after it closed, every debit made under a daily limit kept its
//! UTC day within it, settings changed only by audited updates).
//!
//! The checks are written once, over [`Snapshot`]; each backend only reads its rows in the
//! orders asked for (see [`Verify`]), so `paycore verify` runs unchanged on every store.

use crate::{BatchItemRow, Result};
use paycore_ledger::fx::{batch_item_fx_transfers, payment_fx_transfers, source_for_target, Quote};
use paycore_ledger::{
    Account, AccountId, AccountStatus, AuditRecord, Balances, BatchId, CaptureMethod, ClearingWindow, Currency, ItemFx,
    ItemStatus, Limits, Payment, PaymentId, PaymentStatus, QuoteId, Refund, RefundStatus, Side, TenantId, Transfer,
    TransferId, TransferKind, AMOUNT_MAX, VELOCITY_COUNT_MAX, VELOCITY_WINDOW_SECONDS_MAX,
};
use std::collections::HashMap;

/// The shards of the accounts whose stored balances a store may write at different times
/// (the embedded store checkpoints one shard at a time, so that no commit writes every
/// account's row at once). The embedded store keys `accounts` by the shard (SQLite migration
/// 0025 computes it in SQL from the id's last nibbles): changing the shards, or
/// [`balance_shard`], needs a migration that rewrites that column, or every lookup by id
/// misses (`the_accounts_rebuild_keys_each_account_by_its_balance_shard` fails first).
pub const BALANCE_SHARDS: usize = 16;

/// The shard of [`BALANCE_SHARDS`] an account's stored balances belong to (ids end in random
/// bits, so the shards are of about one size).
pub fn balance_shard(id: AccountId) -> usize {
    // Truncations meant: both halves of the id are mixed, and the remainder is below 16.
    #[allow(clippy::cast_possible_truncation)]
    let mixed = (id.0 as u64) ^ ((id.0 >> 64) as u64);
    #[allow(clippy::cast_possible_truncation)]
    let shard = (mixed % BALANCE_SHARDS as u64) as usize;
    shard
}

/// The timestamps the stored balances are valid at: an account's stored balances add up its
/// transfers up to the timestamp of its shard, and the transfers after it are replayed on them
/// to get the balances now (0: every transfer is replayed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Through(Vec<u64>);

impl Through {
    /// Every account's balances valid at `timestamp`.
    pub fn all(timestamp: u64) -> Through {
        Through(vec![timestamp])
    }

    /// One timestamp per shard of [`BALANCE_SHARDS`].
    pub fn shards(timestamps: [u64; BALANCE_SHARDS]) -> Through {
        Through(timestamps.to_vec())
    }

    /// The timestamp `account`'s stored balances are valid at.
    pub fn of(&self, account: AccountId) -> u64 {
        match self.0.as_slice() {
            [one] => *one,
            shards => shards[balance_shard(account) % shards.len()],
        }
    }

    /// The earliest: no stored balance misses a transfer at or before it.
    pub fn earliest(&self) -> u64 {
        self.0.iter().copied().min().unwrap_or(0)
    }
}

/// What the check found. Empty `problems` means every invariant holds.
#[derive(Debug, Default)]
pub struct Report {
    pub accounts: u64,
    pub transfers: u64,
    pub payments: u64,
    pub batch_items: u64,
    pub quotes: u64,
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
    /// The timestamps the stored account balances are valid at: the transfers after them are
    /// replayed on them to get the balances now.
    fn balances_through(&mut self) -> Result<Through>;
    /// Every transfer, in timestamp order.
    fn transfers(&mut self, each: &mut dyn FnMut(Transfer)) -> Result<()>;
    /// Every account, with its balances as stored.
    fn accounts(&mut self) -> Result<Vec<Account>>;
    fn refunds(&mut self, each: &mut dyn FnMut(Refund)) -> Result<()>;
    fn payments(&mut self, each: &mut dyn FnMut(Payment)) -> Result<()>;
    /// Every FX quote.
    fn quotes(&mut self, each: &mut dyn FnMut(Quote)) -> Result<()>;
    /// Every batch's id, in id order.
    fn batches(&mut self) -> Result<Vec<BatchId>>;
    /// A batch's items after `after`, in index order, with their derived status.
    fn batch_items(&mut self, batch: BatchId, after: Option<u64>, limit: usize) -> Result<Vec<BatchItemRow>>;
    /// The quotes a batch locked at validation.
    fn batch_quotes(&mut self, batch: BatchId) -> Result<Vec<Quote>>;
    /// The payer sides of a batch's cross-currency items, by index.
    fn batch_item_fx(&mut self, batch: BatchId) -> Result<Vec<(u64, ItemFx)>>;
    /// Every account audit row, by account and time.
    fn audit(&mut self) -> Result<Vec<AuditRecord>>;
    /// Every closed clearing window with its positions, by tenant, currency and sequence.
    fn clearing_windows(&mut self, each: &mut dyn FnMut(ClearingWindow)) -> Result<()>;
    /// Every interest-bearing account's terms and accrual (`account_interest`).
    fn interest_accounts(&mut self) -> Result<Vec<crate::InterestRecord>>;
    /// What is wrong with what the store derives off the commit in this snapshot: PostgreSQL's
    /// `account_runs` checked against `transfers`, and each partition's history watermark and
    /// balances checkpoint against its clock. SQLite's `history.db` is a file of its own,
    /// rebuilt when in doubt, and not checked.
    fn derived_problems(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
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
    /// For a payment's confirming transfer: the payer it must debit.
    debit: AccountId,
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
    let mut settings = check_settings(snapshot, &mut report)?;
    let through = snapshot.balances_through()?;
    let replayed = replay_transfers(snapshot, through.earliest(), &mut settings, &mut report)?;
    check_balances(snapshot, replayed.computed, &replayed.tail, &through, &mut report)?;
    check_payments(snapshot, &replayed.transfers, &replayed.resolved, &mut report)?;
    check_batches(snapshot, &replayed.transfers, &replayed.resolved, &mut report)?;
    check_quotes(snapshot, &replayed.transfers, &replayed.resolved, &mut report)?;
    check_clearing(snapshot, &mut report)?;
    check_interest(snapshot, &mut report)?;
    for problem in snapshot.derived_problems()? {
        report.problem(problem);
    }
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
fn replay_transfers(
    snapshot: &mut dyn Snapshot,
    through: u64,
    settings: &mut Settings,
    report: &mut Report,
) -> Result<Replayed> {
    let mut r = Replayed::default();
    let add = |counter: &mut u64, by: u128| *counter = u64::try_from(u128::from(*counter) + by).unwrap_or(u64::MAX);
    snapshot.transfers(&mut |t| {
        report.transfers += 1;
        settings.check_transfer(&t, report);
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
        if r.transfers.insert(t.id, Stored { kind: t.kind, amount: t.amount, debit: t.debit_account }).is_some() {
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
    through: &Through,
    report: &mut Report,
) -> Result<()> {
    let mut accounts: HashMap<AccountId, Account> = snapshot.accounts()?.into_iter().map(|a| (a.id, a)).collect();
    for (t, held) in tail {
        // Each side on its account's stored balances, if they were written before it.
        for (side, id) in [(Side::Debit, t.debit_account), (Side::Credit, t.credit_account)] {
            if t.timestamp <= through.of(id) {
                continue;
            }
            if let Some(account) = accounts.get_mut(&id) {
                if t.replay_side(*held, side, &mut account.balances).is_none() {
                    report.problem(format!("{}: replayed on the stored balances, takes one out of range", t.id));
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
        if account.status == AccountStatus::Closed
            && (stored.posted() != 0 || stored.debits_pending != 0 || stored.credits_pending != 0)
        {
            report.problem(format!("{}: closed but its balances are {stored:?}", account.id));
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
        // Scan to pay: only the scan that binds a payer moves money, so a payment without one
        // has no transfer and never failed or succeeded; one with a transfer debited its payer.
        let confirm = p.transfer.and_then(|id| transfers.get(&id));
        match (p.payer, confirm) {
            (None, _)
                if p.transfer.is_some()
                    || !matches!(
                        p.status,
                        PaymentStatus::RequiresConfirmation | PaymentStatus::Cancelled | PaymentStatus::Expired
                    ) =>
            {
                report.problem(format!("{}: has no payer but is {} or names a transfer", p.id, p.status.as_str()));
            }
            (Some(payer), Some(t)) if t.debit != payer => {
                report.problem(format!("{}: its transfer debits {}, not its payer {payer}", p.id, t.debit));
            }
            _ => {}
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

/// Every used quote and the payment that used it agree (tenant, currencies, rate, amounts, fee);
/// a cross-currency payment's quote names it; a succeeded one's fee (and, with automatic capture,
/// payee) transfer exists with the quoted amount.
fn check_quotes(
    snapshot: &mut dyn Snapshot,
    transfers: &HashMap<TransferId, Stored>,
    resolved: &HashMap<TransferId, (TransferKind, u64)>,
    report: &mut Report,
) -> Result<()> {
    let mut quotes: HashMap<QuoteId, Quote> = HashMap::new();
    snapshot.quotes(&mut |q| {
        report.quotes += 1;
        quotes.insert(q.id, q);
    })?;
    let mut users: HashMap<QuoteId, PaymentId> = HashMap::new();
    snapshot.payments(&mut |p| {
        let Some(fx) = &p.fx else { return };
        users.insert(fx.quote, p.id);
        let Some(q) = quotes.get(&fx.quote) else {
            return report.problem(format!("{}: names quote {} that is not stored", p.id, fx.quote));
        };
        let same = q.tenant == p.tenant
            && q.used_by == Some(p.id)
            && q.from == p.currency
            && q.to == fx.target_currency
            && q.rate == fx.rate
            && q.source_amount == p.amount
            && q.target_amount == fx.target_amount
            && q.fee == fx.fee;
        if !same {
            report.problem(format!("{}: does not match its quote {}", p.id, q.id));
        }
        if p.status != PaymentStatus::Succeeded {
            return;
        }
        let Some(confirm) = p.transfer else { return };
        let (target, fee) = payment_fx_transfers(confirm);
        let fee_moved = match p.capture_method {
            CaptureMethod::Automatic => transfers.get(&fee).map(|t| (t.kind, t.amount)),
            CaptureMethod::Manual => resolved.get(&fee).copied(),
        };
        let fee_kind = match p.capture_method {
            CaptureMethod::Automatic => TransferKind::Single,
            CaptureMethod::Manual => TransferKind::PostPending,
        };
        if fx.fee > 0 && fee_moved != Some((fee_kind, fx.fee)) {
            report.problem(format!("{}: its fee of {} did not move", p.id, fx.fee));
        }
        let paid_out = transfers.get(&target).map(|t| (t.kind, t.amount));
        if p.capture_method == CaptureMethod::Automatic && paid_out != Some((TransferKind::Single, fx.target_amount)) {
            report.problem(format!("{}: its payee was not paid {}", p.id, fx.target_amount));
        }
    })?;
    for q in quotes.values() {
        if let Some(payment) = q.used_by {
            if users.get(&q.id) != Some(&payment) {
                report.problem(format!("{}: used by {payment}, which does not name it", q.id));
            }
        }
    }
    Ok(())
}

fn check_batches(
    snapshot: &mut dyn Snapshot,
    transfers: &HashMap<TransferId, Stored>,
    resolved: &HashMap<TransferId, (TransferKind, u64)>,
    report: &mut Report,
) -> Result<()> {
    for batch in snapshot.batches()? {
        let quotes = snapshot.batch_quotes(batch)?;
        let mut fx: HashMap<u64, ItemFx> =
            if quotes.is_empty() { HashMap::new() } else { snapshot.batch_item_fx(batch)?.into_iter().collect() };
        // Per quote: the sums of its items' source amounts, amounts and fees.
        let mut sums: HashMap<QuoteId, (u128, u128, u128)> = HashMap::new();
        let mut after = None;
        loop {
            // Statuses as the API derives them from the item rows and the result runs.
            let items = snapshot.batch_items(batch, after, ITEMS_PER_READ)?;
            let Some(last) = items.last() else { break };
            after = Some(last.index);
            for item in &items {
                check_item(batch, item.index, item.status, transfers, resolved, report);
                if let Some(side) = fx.remove(&item.index) {
                    let legs = FxLegs { batch, quotes: &quotes, transfers, resolved };
                    if let Some(quote) = legs.check(item, &side, report) {
                        let sum = sums.entry(quote).or_default();
                        sum.0 += u128::from(side.source_amount);
                        sum.1 += u128::from(item.amount.unwrap_or(0));
                        sum.2 += u128::from(side.fee);
                    }
                }
            }
        }
        for index in fx.keys() {
            report.problem(format!("{batch} item {index}: has an FX side but no item row"));
        }
        for q in &quotes {
            let sum = sums.get(&q.id).copied().unwrap_or_default();
            let quoted = (u128::from(q.source_amount), u128::from(q.target_amount), u128::from(q.fee));
            if sum != quoted {
                report.problem(format!(
                    "{batch}: its quote {} says {quoted:?} (source, target, fee), its items add up to {sum:?}",
                    q.id
                ));
            }
        }
    }
    Ok(())
}

/// What checking a cross-currency batch item's legs needs.
struct FxLegs<'a> {
    batch: BatchId,
    quotes: &'a [Quote],
    transfers: &'a HashMap<TransferId, Stored>,
    resolved: &'a HashMap<TransferId, (TransferKind, u64)>,
}

impl FxLegs<'_> {
    /// Checks a cross-currency item against its batch's quote (its pair, the ceiling of its
    /// amount at the quote's rate) and its legs against its status: a succeeded item paid
    /// its source amount, its fee and its payee exactly; any other paid no payee. The quote it
    /// counts towards, if it names one of the batch's.
    fn check(&self, item: &BatchItemRow, side: &ItemFx, report: &mut Report) -> Option<QuoteId> {
        let (batch, index) = (self.batch, item.index);
        let Some(q) = self.quotes.iter().find(|q| q.id == side.quote) else {
            report.problem(format!("{batch} item {index}: names quote {}, not one of its batch", side.quote));
            return None;
        };
        let amount = item.amount.unwrap_or(0);
        let priced = source_for_target(amount, q.rate, q.from, q.to).ok();
        if item.currency != Some(q.to) || priced != Some(side.source_amount) {
            report.problem(format!(
                "{batch} item {index}: {amount} {} does not cost {} {} at its quote's rate {}",
                item.currency.map_or("(no currency)", |c| c.code()),
                side.source_amount,
                q.from,
                q.rate
            ));
        }
        let paid = self.batch.item_transfer(index);
        let (target, fee) = batch_item_fx_transfers(batch, index);
        let amount_of = |id: &TransferId| self.transfers.get(id).map(|t| t.amount);
        // What a leg moved: a single transfer's amount, or a hold's once posted in full.
        let posted = |id: &TransferId| match self.transfers.get(id).map(|t| t.kind) {
            Some(TransferKind::Single) => amount_of(id),
            Some(TransferKind::Pending) => {
                self.resolved.get(id).filter(|(kind, _)| *kind == TransferKind::PostPending).and(amount_of(id))
            }
            _ => None,
        };
        let paid_out = posted(&target);
        if item.status == ItemStatus::Succeeded {
            if posted(&paid) != Some(side.source_amount) {
                report.problem(format!("{batch} item {index}: its payer did not pay {}", side.source_amount));
            }
            if side.fee > 0 && posted(&fee) != Some(side.fee) {
                report.problem(format!("{batch} item {index}: its fee of {} did not move", side.fee));
            }
            if paid_out != Some(amount) {
                report.problem(format!("{batch} item {index}: its payee was not paid {amount}"));
            }
        } else if paid_out.is_some() {
            report.problem(format!("{batch} item {index}: is {} but its payee was paid", item.status));
        }
        Some(q.id)
    }
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
        // A returned item was paid; its return is an item of its own batch that paid it back.
        ItemStatus::Succeeded | ItemStatus::Returned => moved,
        ItemStatus::Held => held,
        ItemStatus::Pending | ItemStatus::Invalid | ItemStatus::Failed | ItemStatus::Voided | ItemStatus::Cancelled => {
            !moved && !held
        }
    };
    if !consistent {
        report.problem(format!("{batch} item {index}: status {status} does not match its transfers"));
    }
}

/// A UTC day in nanoseconds.
const DAY_NANOS: u64 = 86_400 * 1_000_000_000;

/// What the transfer pass checks of the accounts' settings: closed accounts moved nothing after
/// they closed, and the debits made under an account's current daily limit kept their UTC
/// day's running total within it.
#[derive(Default)]
struct Settings {
    /// Closed accounts, with the time of the update that closed them.
    closed_at: HashMap<AccountId, u64>,
    /// Accounts with a daily limit: the limit, when it was last set, and the running total of
    /// the current day (day, total).
    daily: HashMap<AccountId, (u64, u64, (u64, u64))>,
}

impl Settings {
    fn check_transfer(&mut self, t: &Transfer, report: &mut Report) {
        for account in [t.debit_account, t.credit_account] {
            if self.closed_at.get(&account).is_some_and(|&at| t.timestamp > at) {
                report.problem(format!("{}: moves money of {account}, closed before it", t.id));
            }
        }
        if !matches!(t.kind, TransferKind::Single | TransferKind::Pending) {
            return;
        }
        if let Some((limit, since, (day, total))) = self.daily.get_mut(&t.debit_account) {
            let today = t.timestamp / DAY_NANOS;
            if *day != today {
                *day = today;
                *total = 0;
            }
            *total = total.saturating_add(t.amount);
            if t.timestamp > *since && *total > *limit {
                report.problem(format!(
                    "{}: takes {}'s outflow of its UTC day to {total}, past its daily limit of {limit}",
                    t.id, t.debit_account
                ));
            }
        }
    }
}

/// Checks the accounts' settings against their audit: every audit row names an account of its
/// tenant; an account whose status or limits are not the defaults has an audit row; limits are
/// in range. Returns what the transfer pass checks.
fn check_settings(snapshot: &mut dyn Snapshot, report: &mut Report) -> Result<Settings> {
    let accounts: HashMap<AccountId, Account> = snapshot.accounts()?.into_iter().map(|a| (a.id, a)).collect();
    let mut audited: HashMap<AccountId, Vec<AuditRecord>> = HashMap::new();
    for row in snapshot.audit()? {
        match accounts.get(&row.account) {
            None => report.problem(format!("audit row at {} names {}, which is not an account", row.at, row.account)),
            Some(a) if a.tenant != row.tenant => {
                report.problem(format!("audit row at {} of {}: another tenant's", row.at, row.account))
            }
            Some(_) => audited.entry(row.account).or_default().push(row),
        }
    }
    let mut settings = Settings::default();
    for account in accounts.values() {
        let rows = audited.get(&account.id).map_or(&[][..], Vec::as_slice);
        let changed = account.status != AccountStatus::Active || account.limits != Limits::default();
        if changed && rows.is_empty() {
            report.problem(format!("{}: status or limits changed without an audit row", account.id));
        }
        let limits = account.limits;
        let too_large = |v: Option<u64>| v.is_some_and(|v| v > AMOUNT_MAX);
        let velocity_bad = limits.velocity.is_some_and(|v| {
            v.count == 0
                || v.count > VELOCITY_COUNT_MAX
                || v.window_seconds == 0
                || v.window_seconds > VELOCITY_WINDOW_SECONDS_MAX
        });
        if too_large(limits.max_payment) || too_large(limits.daily_outflow) || velocity_bad {
            report.problem(format!("{}: limits out of range: {limits:?}", account.id));
        }
        // The last update that named a field is when its current value was set.
        let last = |needle: &str| rows.iter().rev().find(|r| r.after.contains(needle)).map(|r| r.at);
        if account.status == AccountStatus::Closed {
            match last("\"status\":\"closed\"") {
                Some(at) => {
                    settings.closed_at.insert(account.id, at);
                }
                None => report.problem(format!("{}: closed, but no audit row closes it", account.id)),
            }
        }
        if let Some(limit) = limits.daily_outflow {
            let since = last("\"daily_outflow\":").unwrap_or(0);
            settings.daily.insert(account.id, (limit, since, (0, 0)));
        }
    }
    Ok(settings)
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
