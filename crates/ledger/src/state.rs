//! The state machine: `State::execute(requests, now) -> outcomes`, deterministic and pure.

use crate::account::{Account, Balances, Overdraft};
use crate::batch::{item_state, BatchEnd, BatchItem, BatchItemResult, BatchStep};
use crate::payment::{
    CaptureMethod, Payment, PaymentStatus, Refund, RefundStatus, TAG_CANCEL, TAG_CAPTURE, TAG_CONFIRM, TAG_EXPIRE,
    TAG_REFUND,
};
use crate::transfer::{HoldRecord, HoldStatus, NewTransfer, ResultCode, Transfer, TransferKind, TransferOp};
use crate::{AccountId, BatchId, Currency, PaymentId, RefundId, TenantId, TransferId, AMOUNT_MAX};
use std::collections::BTreeSet;

/// The state's maps are keyed by ids, most of them 128-bit and many chosen by clients. std's
/// SipHash was two thirds of `execute` (callgrind, crates/bench/NOTES.md); foldhash is several
/// times faster and still seeded per process, so colliding ids cannot be computed in advance.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// The longest a hold or an unconfirmed payment may wait: one year.
pub const TIMEOUT_MAX_SECONDS: u64 = 366 * 24 * 3600;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A request to open an account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewAccount {
    pub id: AccountId,
    pub currency: Currency,
    pub overdraft: Overdraft,
    pub reference: Option<String>,
    /// Opaque to the ledger (JSON text for the API).
    pub metadata: Option<String>,
}

/// A request to create a payment order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewPayment {
    pub id: PaymentId,
    pub payer: AccountId,
    pub payee: AccountId,
    pub amount: u64,
    pub currency: Currency,
    pub capture_method: CaptureMethod,
    pub expires_in_seconds: u64,
    pub description: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    CreateAccount(NewAccount),
    /// One transfer, answered with the transfer itself (the API's single form).
    Transfer(NewTransfer),
    /// Up to a few thousand transfers; linked chains end at the end of the list.
    Transfers(Vec<NewTransfer>),
    CreatePayment(NewPayment),
    ConfirmPayment(PaymentId),
    /// Capture all of a held payment, or `amount` of it.
    CapturePayment {
        payment: PaymentId,
        amount: Option<u64>,
    },
    CancelPayment(PaymentId),
    /// Refund all that is left to refund, or `amount`.
    RefundPayment {
        payment: PaymentId,
        refund: RefundId,
        amount: Option<u64>,
    },
    /// A chunk of a batch's items, in one step (outcome: one result code per item).
    BatchItems {
        batch: BatchId,
        step: BatchStep,
        items: Vec<BatchItem>,
    },
    /// The end of a batch, committed after its last item.
    EndBatch {
        batch: BatchId,
        end: BatchEnd,
    },
}

/// A command and the tenant on whose behalf it runs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    pub tenant: TenantId,
    pub command: Command,
}

/// Why a command other than a transfer was refused. Nothing changed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CommandError {
    /// The account named by the field does not exist in this tenant.
    AccountNotFound {
        param: &'static str,
    },
    /// The account named by the field has another currency.
    CurrencyMismatch {
        param: &'static str,
    },
    SameAccount,
    /// Another account of this tenant has this reference.
    ReferenceTaken,
    /// An object with this id exists already.
    AlreadyExists,
    PaymentNotFound,
    /// The payment is not in a status that allows the operation.
    UnexpectedState {
        status: PaymentStatus,
    },
    /// More than the payment allows (capture above the amount, refund above what is left).
    AmountTooLarge {
        max: u64,
    },
    /// A field is out of its range.
    InvalidField {
        param: &'static str,
        message: &'static str,
    },
    /// The ledger refused the transfer the operation needs.
    Rejected(ResultCode),
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    Account(Result<Account, CommandError>),
    /// The result of one transfer and, when it is a success (`ok`, `exists`), the transfer as
    /// stored: the new one, or the one that existed with this id.
    Transfer {
        code: ResultCode,
        transfer: Option<Transfer>,
    },
    Transfers(Vec<ResultCode>),
    Payment(Result<Payment, CommandError>),
    Refund(Result<(Refund, Payment), CommandError>),
    /// The batch's end is recorded.
    BatchEnded,
}

/// Everything one `execute` changed, as final values, for the store to write in one
/// transaction.
#[derive(Clone, Debug, Default)]
pub struct ChangeSet {
    pub transfers: Vec<Transfer>,
    /// Accounts opened in this batch (written whole).
    pub new_accounts: Vec<Account>,
    /// Accounts whose balances changed (including new ones).
    pub balances: Vec<(AccountId, Balances)>,
    pub holds: Vec<HoldRecord>,
    pub payments: Vec<Payment>,
    pub refunds: Vec<Refund>,
    pub batch_items: Vec<BatchItemResult>,
    pub batch_ends: Vec<(BatchId, BatchEnd)>,
    /// Webhook events of payments (tenant, type, payment id), in the order they happened,
    /// for the store to write to its outbox in the same transaction.
    pub events: Vec<(TenantId, &'static str, u128)>,
    pub last_timestamp: u64,
}

/// What the engine must load from storage before executing a batch: objects that are not kept
/// in memory (resolved holds, finished payments, stored transfers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefetch {
    pub transfers: Vec<TransferId>,
    pub holds: Vec<TransferId>,
    pub payments: Vec<PaymentId>,
}

impl ChangeSet {
    /// Whether the batch changed nothing that needs writing.
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
            && self.new_accounts.is_empty()
            && self.balances.is_empty()
            && self.holds.is_empty()
            && self.payments.is_empty()
            && self.refunds.is_empty()
            && self.batch_items.is_empty()
            && self.batch_ends.is_empty()
            && self.events.is_empty()
    }
}

impl Prefetch {
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty() && self.holds.is_empty() && self.payments.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Deadline {
    Hold(TransferId),
    Payment(PaymentId),
}

/// Values saved before a linked chain changed them, to undo the chain if it fails.
#[derive(Default)]
struct Undo {
    accounts: Vec<(AccountId, Balances)>,
    holds: Vec<(TransferId, Option<HoldRecord>)>,
    transfers_len: usize,
}

/// The ledger in memory: all accounts, open holds and open payments; a cache of the stored
/// objects a batch needs; and the changes of the batch being executed.
#[derive(Default)]
pub struct State {
    accounts: HashMap<AccountId, Account>,
    /// One reference names at most one account per currency (a multi-currency IBAN is one
    /// ledger account per currency).
    references: HashMap<(TenantId, String, Currency), AccountId>,
    /// Holds: every open one, plus resolved ones loaded or resolved in this batch.
    holds: HashMap<TransferId, HoldRecord>,
    /// Payments: every open one, plus finished ones loaded or finished in this batch.
    payments: HashMap<PaymentId, Payment>,
    /// Stored transfers loaded for this batch (for `exists`).
    stored_transfers: HashMap<TransferId, Transfer>,
    deadlines: BTreeSet<(u64, Deadline)>,
    last_timestamp: u64,
    /// The highest transfer id in the store, when known: no stored transfer has a greater id,
    /// so `prefetch` need not ask the store about those (server-made ids and well-made client
    /// ids are time-ordered, so nearly every new id is above it). `None`: ask about every id.
    stored_transfer_id_max: Option<TransferId>,
    /// The same for payments: a payment id above it is not stored, finished or open.
    stored_payment_id_max: Option<PaymentId>,

    // The batch in progress.
    changes: ChangeSet,
    new_transfers: HashMap<TransferId, usize>,
    before: HashMap<AccountId, (Currency, Balances)>,
    touched_holds: Vec<TransferId>,
    touched_payments: Vec<PaymentId>,
    undo: Option<Undo>,
}

impl State {
    /// Rebuilds the state from what the store holds: every account, every open hold and every
    /// open payment, and the last timestamp used.
    pub fn recover(
        accounts: impl IntoIterator<Item = Account>,
        open_holds: impl IntoIterator<Item = HoldRecord>,
        open_payments: impl IntoIterator<Item = Payment>,
        last_timestamp: u64,
    ) -> State {
        let mut state = State { last_timestamp, ..State::default() };
        for account in accounts {
            if let Some(reference) = &account.reference {
                state.references.insert((account.tenant, reference.clone(), account.currency), account.id);
            }
            state.accounts.insert(account.id, account);
        }
        for hold in open_holds {
            if let Some(at) = hold.transfer.expires_at {
                state.deadlines.insert((at, Deadline::Hold(hold.transfer.id)));
            }
            state.holds.insert(hold.transfer.id, hold);
        }
        for payment in open_payments {
            if payment.status == PaymentStatus::RequiresConfirmation {
                state.deadlines.insert((payment.expires_at, Deadline::Payment(payment.id)));
            }
            state.payments.insert(payment.id, payment);
        }
        state
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    pub fn account_by_reference(&self, tenant: TenantId, reference: &str, currency: Currency) -> Option<&Account> {
        self.accounts.get(self.references.get(&(tenant, reference.to_owned(), currency))?)
    }

    pub fn payment(&self, id: PaymentId) -> Option<&Payment> {
        self.payments.get(&id)
    }

    pub fn hold(&self, id: TransferId) -> Option<&HoldRecord> {
        self.holds.get(&id)
    }

    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    /// Tells the state that no stored transfer has an id above `max` (`None`: the store holds
    /// no transfer), so that `prefetch` skips ids that cannot be stored. The store's primary key
    /// still refuses a duplicate id if this were wrong: the commit would fail, never apply twice.
    pub fn set_stored_transfer_id_max(&mut self, max: Option<TransferId>) {
        self.stored_transfer_id_max = Some(max.unwrap_or(TransferId(0)));
    }

    /// Tells the state that no stored payment has an id above `max` (`None`: no payment is
    /// stored), so that `prefetch` does not look for a new payment's id in the store. Unlike a
    /// transfer's, a payment's row is written by upsert: this must be exact, and is (every
    /// payment is made by `execute`, which raises it in `take_changes`).
    pub fn set_stored_payment_id_max(&mut self, max: Option<PaymentId>) {
        self.stored_payment_id_max = Some(max.unwrap_or(PaymentId(0)));
    }

    /// Whether a transfer with this id may be in the store.
    fn may_be_stored(&self, id: TransferId) -> bool {
        self.stored_transfer_id_max.is_none_or(|max| id <= max)
    }

    /// When the next hold or payment expires, if any: the engine runs an empty batch then.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The stored objects these requests refer to that are not in memory.
    pub fn prefetch(&self, requests: &[Request]) -> Prefetch {
        let mut wanted = Prefetch::default();
        for request in requests {
            match &request.command {
                Command::Transfer(t) => self.prefetch_transfers(std::slice::from_ref(t), &mut wanted),
                Command::Transfers(transfers) => self.prefetch_transfers(transfers, &mut wanted),
                Command::RefundPayment { payment, .. }
                | Command::ConfirmPayment(payment)
                | Command::CapturePayment { payment, .. }
                | Command::CancelPayment(payment) => {
                    if !self.payments.contains_key(payment) {
                        wanted.payments.push(*payment);
                    }
                }
                Command::BatchItems { batch, step, items } => {
                    for item in items {
                        let id = match step {
                            BatchStep::Pay | BatchStep::Hold => batch.item_transfer(item.index),
                            BatchStep::Post => batch.item_resolution(item.index, true),
                            BatchStep::Void => batch.item_resolution(item.index, false),
                        };
                        if self.may_be_stored(id) {
                            wanted.transfers.push(id);
                        }
                        if matches!(step, BatchStep::Post | BatchStep::Void) {
                            let hold = batch.item_transfer(item.index);
                            if !self.holds.contains_key(&hold) {
                                wanted.holds.push(hold);
                            }
                        }
                    }
                }
                // A finished payment is not in memory: load it, or its id would be taken again.
                Command::CreatePayment(new) => {
                    let may_be_stored = self.stored_payment_id_max.is_none_or(|max| new.id <= max);
                    if may_be_stored && !self.payments.contains_key(&new.id) {
                        wanted.payments.push(new.id);
                    }
                }
                Command::CreateAccount(_) | Command::EndBatch { .. } => {}
            }
        }
        wanted
    }

    /// Adds objects loaded from storage for the next batch. They are dropped again after it.
    pub fn insert_prefetched(
        &mut self,
        transfers: impl IntoIterator<Item = Transfer>,
        holds: impl IntoIterator<Item = HoldRecord>,
        payments: impl IntoIterator<Item = Payment>,
    ) {
        self.stored_transfers.extend(transfers.into_iter().map(|t| (t.id, t)));
        for hold in holds {
            self.holds.entry(hold.transfer.id).or_insert(hold);
        }
        for payment in payments {
            self.payments.entry(payment.id).or_insert(payment);
        }
    }

    /// Executes a batch of requests at instant `now` (nanoseconds since the epoch): first the
    /// expiry of every hold and payment whose deadline has passed, then each request in order.
    /// Returns one outcome per request; the changes wait in [`State::take_changes`].
    ///
    /// Panics if the batch broke double entry (per currency, debits and credits moved by
    /// different totals): the state can no longer be trusted, so the process stops and
    /// recovers from the store rather than commit it.
    pub fn execute(&mut self, requests: &[Request], now: u64) -> Vec<Outcome> {
        self.expire_due(now);
        let outcomes = requests.iter().map(|r| self.execute_one(r, now)).collect();
        self.assert_double_entry();
        outcomes
    }

    /// The changes of the last `execute`, and the end of that batch: objects that are no longer
    /// open leave memory.
    pub fn take_changes(&mut self) -> ChangeSet {
        let mut changes = std::mem::take(&mut self.changes);
        let mut seen = HashSet::default();
        for (id, (_, before)) in &self.before {
            // A rolled-back linked chain leaves balances as they were: nothing to write.
            if let Some(account) = self.accounts.get(id).filter(|a| a.balances != *before) {
                changes.balances.push((*id, account.balances));
            }
        }
        // In id order, so that the same batch always writes the same bytes in the same order.
        changes.balances.sort_unstable_by_key(|(id, _)| *id);
        for id in self.touched_holds.drain(..) {
            if seen.insert(id.0) {
                if let Some(hold) = self.holds.get(&id) {
                    changes.holds.push(hold.clone());
                }
            }
        }
        seen.clear();
        for id in self.touched_payments.drain(..) {
            if seen.insert(id.0) {
                if let Some(payment) = self.payments.get(&id) {
                    changes.payments.push(payment.clone());
                }
            }
        }
        changes.last_timestamp = self.last_timestamp;
        if let Some(max) = &mut self.stored_transfer_id_max {
            if let Some(highest) = changes.transfers.iter().map(|t| t.id).max() {
                *max = (*max).max(highest);
            }
        }
        if let Some(max) = &mut self.stored_payment_id_max {
            if let Some(highest) = changes.payments.iter().map(|p| p.id).max() {
                *max = (*max).max(highest);
            }
        }
        self.before.clear();
        self.new_transfers.clear();
        self.stored_transfers.clear();
        self.holds.retain(|_, h| h.status == HoldStatus::Pending);
        self.payments.retain(|_, p| p.status.is_open());
        changes
    }

    /// Checks every invariant over the whole state (slow: for tests and `verify`):
    /// per currency, posted and pending balances sum to zero; every account's pending counters
    /// equal the sum of its open holds; no counter passes `AMOUNT_MAX`.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut sums: HashMap<Currency, (i128, i128)> = HashMap::default();
        let mut pending: HashMap<AccountId, (u128, u128)> = HashMap::default();
        for hold in self.holds.values().filter(|h| h.status == HoldStatus::Pending) {
            let t = &hold.transfer;
            pending.entry(t.debit_account).or_default().0 += u128::from(t.amount);
            pending.entry(t.credit_account).or_default().1 += u128::from(t.amount);
        }
        for account in self.accounts.values() {
            let b = account.balances;
            if !b.within_bounds() {
                return Err(format!("{} has a counter above the maximum", account.id));
            }
            let sum = sums.entry(account.currency).or_default();
            sum.0 += i128::from(b.credits_posted) - i128::from(b.debits_posted);
            sum.1 += i128::from(b.credits_pending) - i128::from(b.debits_pending);
            let (held_debits, held_credits) = pending.get(&account.id).copied().unwrap_or_default();
            if (u128::from(b.debits_pending), u128::from(b.credits_pending)) != (held_debits, held_credits) {
                return Err(format!(
                    "{}: pending debits/credits {}/{} but open holds add up to {held_debits}/{held_credits}",
                    account.id, b.debits_pending, b.credits_pending
                ));
            }
        }
        for (currency, (posted, pending)) in sums {
            if posted != 0 || pending != 0 {
                return Err(format!("{currency}: balances sum to {posted} posted, {pending} pending"));
            }
        }
        Ok(())
    }

    fn execute_one(&mut self, request: &Request, now: u64) -> Outcome {
        let tenant = request.tenant;
        match &request.command {
            Command::CreateAccount(new) => Outcome::Account(self.create_account(tenant, new, now)),
            Command::Transfer(t) => {
                let code = self.transfers(tenant, std::slice::from_ref(t), now)[0];
                let transfer = if code.is_success() { self.find_transfer(t.id).cloned() } else { None };
                Outcome::Transfer { code, transfer }
            }
            Command::Transfers(transfers) => Outcome::Transfers(self.transfers(tenant, transfers, now)),
            Command::CreatePayment(new) => Outcome::Payment(self.create_payment(tenant, new, now)),
            Command::ConfirmPayment(id) => Outcome::Payment(self.confirm(tenant, *id, now)),
            Command::CapturePayment { payment, amount } => {
                Outcome::Payment(self.capture(tenant, *payment, *amount, now))
            }
            Command::CancelPayment(id) => Outcome::Payment(self.cancel(tenant, *id, now)),
            Command::RefundPayment { payment, refund, amount } => {
                Outcome::Refund(self.refund(tenant, *payment, *refund, *amount, now))
            }
            Command::BatchItems { batch, step, items } => {
                Outcome::Transfers(self.batch_items(tenant, *batch, *step, items, now))
            }
            Command::EndBatch { batch, end } => {
                self.changes.batch_ends.push((*batch, *end));
                Outcome::BatchEnded
            }
        }
    }

    /// The next timestamp: the clock, or one more than the last if the clock has not moved
    /// on (or went back), so that timestamps are unique and increasing.
    fn tick(&mut self, now: u64) -> u64 {
        self.last_timestamp = now.max(self.last_timestamp.saturating_add(1));
        self.last_timestamp
    }

    // Accounts.

    fn create_account(&mut self, tenant: TenantId, new: &NewAccount, now: u64) -> Result<Account, CommandError> {
        if let Overdraft::Limit(limit) = new.overdraft {
            if limit > AMOUNT_MAX {
                return Err(CommandError::InvalidField {
                    param: "overdraft_limit",
                    message: "overdraft_limit must be at most 9223372036854775807",
                });
            }
        }
        if self.accounts.contains_key(&new.id) {
            return Err(CommandError::AlreadyExists);
        }
        if let Some(reference) = &new.reference {
            if self.references.contains_key(&(tenant, reference.clone(), new.currency)) {
                return Err(CommandError::ReferenceTaken);
            }
            self.references.insert((tenant, reference.clone(), new.currency), new.id);
        }
        let account = Account {
            id: new.id,
            tenant,
            currency: new.currency,
            overdraft: new.overdraft,
            reference: new.reference.clone(),
            metadata: new.metadata.clone(),
            balances: Balances::default(),
            created_at: self.tick(now),
        };
        self.accounts.insert(account.id, account.clone());
        self.changes.new_accounts.push(account.clone());
        Ok(account)
    }

    /// The account, if it exists and belongs to `tenant`.
    fn tenant_account(&self, tenant: TenantId, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id).filter(|a| a.tenant == tenant)
    }

    /// Changes an account's balances, remembering the values before (for the double-entry
    /// check at the end of the batch, and to undo a failed linked chain).
    fn update_balances(&mut self, id: AccountId, change: impl FnOnce(&mut Balances)) {
        let Some(account) = self.accounts.get_mut(&id) else { return };
        self.before.entry(id).or_insert((account.currency, account.balances));
        if let Some(undo) = &mut self.undo {
            if !undo.accounts.iter().any(|(a, _)| *a == id) {
                undo.accounts.push((id, account.balances));
            }
        }
        change(&mut account.balances);
    }

    fn assert_double_entry(&self) {
        let mut moved: HashMap<Currency, [i128; 4]> = HashMap::default();
        for (id, (currency, before)) in &self.before {
            let Some(after) = self.accounts.get(id).map(|a| a.balances) else { continue };
            let delta = |a: u64, b: u64| i128::from(a) - i128::from(b);
            let m = moved.entry(*currency).or_default();
            m[0] += delta(after.debits_posted, before.debits_posted);
            m[1] += delta(after.credits_posted, before.credits_posted);
            m[2] += delta(after.debits_pending, before.debits_pending);
            m[3] += delta(after.credits_pending, before.credits_pending);
            assert!(after.within_bounds(), "{id}: balance counter above AMOUNT_MAX");
        }
        for (currency, m) in moved {
            assert!(
                m[0] == m[1] && m[2] == m[3],
                "double entry broken in {currency}: debits/credits moved posted {}/{}, pending {}/{}",
                m[0],
                m[1],
                m[2],
                m[3]
            );
        }
    }

    // Transfers.

    fn transfers(&mut self, tenant: TenantId, transfers: &[NewTransfer], now: u64) -> Vec<ResultCode> {
        let mut results = vec![ResultCode::Ok; transfers.len()];
        let mut chain_start: Option<usize> = None;
        let mut chain_failed = false;
        for (i, transfer) in transfers.iter().enumerate() {
            if chain_start.is_none() && transfer.linked {
                chain_start = Some(i);
                chain_failed = false;
                self.undo = Some(Undo { transfers_len: self.changes.transfers.len(), ..Undo::default() });
            }
            let open_at_end = transfer.linked && i + 1 == transfers.len();
            results[i] = if chain_failed {
                ResultCode::LinkedEventFailed
            } else if open_at_end {
                ResultCode::LinkedEventChainOpen
            } else {
                self.apply(tenant, transfer, now, None)
            };
            if let Some(start) = chain_start {
                if !chain_failed && !results[i].is_success() {
                    chain_failed = true;
                    self.rollback();
                    for r in &mut results[start..i] {
                        *r = ResultCode::LinkedEventFailed;
                    }
                }
                if !transfer.linked {
                    chain_start = None;
                    chain_failed = false;
                    self.undo = None;
                }
            }
        }
        self.undo = None;
        results
    }

    fn rollback(&mut self) {
        let Some(undo) = self.undo.take() else { return };
        for (id, balances) in undo.accounts {
            if let Some(account) = self.accounts.get_mut(&id) {
                account.balances = balances;
            }
        }
        for (id, saved) in undo.holds.into_iter().rev() {
            if let Some(current) = self.holds.remove(&id) {
                if let Some(at) = current.transfer.expires_at {
                    self.deadlines.remove(&(at, Deadline::Hold(id)));
                }
            }
            if let Some(hold) = saved {
                if let (Some(at), HoldStatus::Pending) = (hold.transfer.expires_at, hold.status) {
                    self.deadlines.insert((at, Deadline::Hold(id)));
                }
                self.holds.insert(id, hold);
            }
        }
        for t in self.changes.transfers.drain(undo.transfers_len..) {
            self.new_transfers.remove(&t.id);
        }
        // An empty undo keeps collecting for the rest of the (failed) chain, which applies
        // nothing more.
        self.undo = Some(Undo { transfers_len: self.changes.transfers.len(), ..Undo::default() });
    }

    /// The transfers to load before `transfers` run: those whose id may be stored (to answer
    /// `exists`), and the holds they resolve that are not in memory.
    fn prefetch_transfers(&self, transfers: &[NewTransfer], wanted: &mut Prefetch) {
        for t in transfers {
            if self.may_be_stored(t.id) {
                wanted.transfers.push(t.id);
            }
            if let TransferOp::Post { pending_id, .. } | TransferOp::Void { pending_id } = t.op {
                if !self.holds.contains_key(&pending_id) {
                    wanted.holds.push(pending_id);
                }
            }
        }
    }

    fn find_transfer(&self, id: TransferId) -> Option<&Transfer> {
        match self.new_transfers.get(&id) {
            Some(&i) => self.changes.transfers.get(i),
            None => self.stored_transfers.get(&id).or_else(|| self.holds.get(&id).map(|h| &h.transfer)),
        }
    }

    fn record_transfer(&mut self, transfer: Transfer) {
        self.new_transfers.insert(transfer.id, self.changes.transfers.len());
        self.changes.transfers.push(transfer);
    }

    fn set_hold(&mut self, hold: HoldRecord) {
        let id = hold.transfer.id;
        let previous = self.holds.insert(id, hold.clone());
        if let Some(undo) = &mut self.undo {
            if !undo.holds.iter().any(|(h, _)| *h == id) {
                undo.holds.push((id, previous));
            }
        }
        if let Some(at) = hold.transfer.expires_at {
            if hold.status == HoldStatus::Pending {
                self.deadlines.insert((at, Deadline::Hold(id)));
            } else {
                self.deadlines.remove(&(at, Deadline::Hold(id)));
            }
        }
        self.touched_holds.push(id);
    }

    /// Applies one transfer request; `payment` links a hold to the payment it reserves (and
    /// is the only owner that may post or void a payment's hold).
    fn apply(&mut self, tenant: TenantId, t: &NewTransfer, now: u64, payment: Option<PaymentId>) -> ResultCode {
        match &t.op {
            TransferOp::Move { debit_account, credit_account, amount, currency, hold } => {
                // invalid_amount and same_account come before invalid_timeout (precedence).
                if *amount == 0 || *amount > AMOUNT_MAX {
                    return ResultCode::InvalidAmount;
                }
                if debit_account == credit_account {
                    return ResultCode::SameAccount;
                }
                let expires_at = match hold.map(|h| h.timeout_seconds) {
                    None | Some(None) => None,
                    Some(Some(seconds)) if seconds == 0 || seconds > TIMEOUT_MAX_SECONDS => {
                        return ResultCode::InvalidTimeout
                    }
                    Some(Some(seconds)) => Some(now.saturating_add(seconds * NANOS_PER_SECOND)),
                };
                let mv = Move {
                    id: t.id,
                    debit: *debit_account,
                    credit: *credit_account,
                    amount: *amount,
                    currency: *currency,
                    hold: hold.is_some(),
                    expires_at,
                };
                self.apply_move(tenant, &mv, now, payment)
            }
            TransferOp::Post { pending_id, amount } => {
                self.resolve(tenant, t.id, *pending_id, Resolution::Post(*amount), now, payment)
            }
            TransferOp::Void { pending_id } => self.resolve(tenant, t.id, *pending_id, Resolution::Void, now, payment),
        }
    }

    fn apply_move(&mut self, tenant: TenantId, mv: &Move, now: u64, payment: Option<PaymentId>) -> ResultCode {
        if mv.amount == 0 || mv.amount > AMOUNT_MAX {
            return ResultCode::InvalidAmount;
        }
        if mv.debit == mv.credit {
            return ResultCode::SameAccount;
        }
        let kind = if mv.hold { TransferKind::Pending } else { TransferKind::Single };
        if let Some(existing) = self.find_transfer(mv.id) {
            // Another tenant's transfer is never `exists`: its fields stay unknown.
            let same = existing.tenant == tenant
                && existing.kind == kind
                && existing.debit_account == mv.debit
                && existing.credit_account == mv.credit
                && existing.amount == mv.amount
                && existing.currency == mv.currency;
            return if same { ResultCode::Exists } else { ResultCode::ExistsWithDifferentFields };
        }
        let (Some(debit), Some(credit)) =
            (self.tenant_account(tenant, mv.debit), self.tenant_account(tenant, mv.credit))
        else {
            return ResultCode::AccountNotFound;
        };
        if debit.currency != mv.currency || credit.currency != mv.currency {
            return ResultCode::CurrencyMismatch;
        }
        let (d, c) = (debit.balances, credit.balances);
        let fits = |counter: u64| counter.checked_add(mv.amount).is_some_and(|v| v <= AMOUNT_MAX);
        let no_overflow = if mv.hold {
            fits(d.debits_pending) && fits(c.credits_pending)
        } else {
            fits(d.debits_posted) && fits(c.credits_posted)
        };
        if !no_overflow {
            return ResultCode::Overflow;
        }
        if !debit.can_debit(mv.amount) {
            return ResultCode::InsufficientFunds;
        }
        let amount = mv.amount;
        if mv.hold {
            self.update_balances(mv.debit, |b| b.debits_pending += amount);
            self.update_balances(mv.credit, |b| b.credits_pending += amount);
        } else {
            self.update_balances(mv.debit, |b| b.debits_posted += amount);
            self.update_balances(mv.credit, |b| b.credits_posted += amount);
        }
        let transfer = Transfer {
            id: mv.id,
            tenant,
            debit_account: mv.debit,
            credit_account: mv.credit,
            amount,
            currency: mv.currency,
            kind,
            pending_id: None,
            expires_at: mv.expires_at,
            timestamp: self.tick(now),
        };
        if mv.hold {
            self.set_hold(HoldRecord { transfer: transfer.clone(), status: HoldStatus::Pending, payment });
        }
        self.record_transfer(transfer);
        ResultCode::Ok
    }

    /// Posts, voids or expires a hold. `owner` is the payment on whose behalf (`None` for a
    /// client's transfer): a payment's hold is found only by its payment, so that a client
    /// cannot post or void it behind the payment's back.
    fn resolve(
        &mut self,
        tenant: TenantId,
        id: TransferId,
        pending_id: TransferId,
        how: Resolution,
        now: u64,
        owner: Option<PaymentId>,
    ) -> ResultCode {
        if matches!(how, Resolution::Post(Some(amount)) if amount == 0 || amount > AMOUNT_MAX) {
            return ResultCode::InvalidAmount;
        }
        let kind = match how {
            Resolution::Post(_) => TransferKind::PostPending,
            Resolution::Void => TransferKind::VoidPending,
            Resolution::Expire => TransferKind::ExpirePending,
        };
        if let Some(existing) = self.find_transfer(id) {
            let same_amount = match how {
                Resolution::Post(Some(amount)) => existing.amount == amount,
                _ => true,
            };
            let same = existing.tenant == tenant
                && existing.kind == kind
                && existing.pending_id == Some(pending_id)
                && same_amount;
            return if same { ResultCode::Exists } else { ResultCode::ExistsWithDifferentFields };
        }
        let Some(hold) = self.holds.get(&pending_id).filter(|h| h.transfer.tenant == tenant && h.payment == owner)
        else {
            return ResultCode::PendingNotFound;
        };
        match hold.status {
            HoldStatus::Pending => {}
            HoldStatus::Posted => return ResultCode::PendingAlreadyPosted,
            HoldStatus::Voided => return ResultCode::PendingAlreadyVoided,
            HoldStatus::Expired => return ResultCode::PendingExpired,
        }
        if how != Resolution::Expire && hold.transfer.expires_at.is_some_and(|at| at <= now) {
            return ResultCode::PendingExpired;
        }
        let held = hold.transfer.clone();
        let posted = match how {
            Resolution::Post(amount) => amount.unwrap_or(held.amount),
            Resolution::Void | Resolution::Expire => 0,
        };
        if posted > held.amount {
            return ResultCode::AmountExceedsPending;
        }
        if posted > 0 {
            let (Some(d), Some(c)) = (self.accounts.get(&held.debit_account), self.accounts.get(&held.credit_account))
            else {
                return ResultCode::AccountNotFound;
            };
            let fits = |counter: u64| counter.checked_add(posted).is_some_and(|v| v <= AMOUNT_MAX);
            if !fits(d.balances.debits_posted) || !fits(c.balances.credits_posted) {
                return ResultCode::Overflow;
            }
        }
        let released = held.amount;
        self.update_balances(held.debit_account, |b| {
            b.debits_pending -= released;
            b.debits_posted += posted;
        });
        self.update_balances(held.credit_account, |b| {
            b.credits_pending -= released;
            b.credits_posted += posted;
        });
        let status = match how {
            Resolution::Post(_) => HoldStatus::Posted,
            Resolution::Void => HoldStatus::Voided,
            Resolution::Expire => HoldStatus::Expired,
        };
        let payment = self.holds.get(&pending_id).and_then(|h| h.payment);
        self.set_hold(HoldRecord { transfer: held.clone(), status, payment });
        let timestamp = self.tick(now);
        self.record_transfer(Transfer {
            id,
            tenant,
            debit_account: held.debit_account,
            credit_account: held.credit_account,
            amount: if posted > 0 { posted } else { released },
            currency: held.currency,
            kind,
            pending_id: Some(pending_id),
            expires_at: None,
            timestamp,
        });
        ResultCode::Ok
    }

    fn expire_due(&mut self, now: u64) {
        while let Some(&(at, deadline)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match deadline {
                Deadline::Hold(id) => {
                    let Some(hold) = self.holds.get(&id) else { continue };
                    let (tenant, payment) = (hold.transfer.tenant, hold.payment);
                    let code = self.resolve(
                        tenant,
                        TransferId(id.derive_at(TAG_EXPIRE, now)),
                        id,
                        Resolution::Expire,
                        now,
                        payment,
                    );
                    if code == ResultCode::Ok {
                        if let Some(payment) = payment {
                            self.set_payment_status(payment, PaymentStatus::Expired, now);
                        }
                    }
                }
                Deadline::Payment(id) => {
                    if self.payments.get(&id).is_some_and(|p| p.status == PaymentStatus::RequiresConfirmation) {
                        self.set_payment_status(id, PaymentStatus::Expired, now);
                    }
                }
            }
        }
    }

    // Batches.

    fn batch_items(
        &mut self,
        tenant: TenantId,
        batch: BatchId,
        step: BatchStep,
        items: &[BatchItem],
        now: u64,
    ) -> Vec<ResultCode> {
        let mut codes = Vec::with_capacity(items.len());
        for item in items {
            let paid = batch.item_transfer(item.index);
            let op = match step {
                BatchStep::Pay | BatchStep::Hold => TransferOp::Move {
                    debit_account: item.payer,
                    credit_account: item.payee,
                    amount: item.amount,
                    currency: item.currency,
                    hold: (step == BatchStep::Hold).then_some(crate::Hold { timeout_seconds: None }),
                },
                BatchStep::Post => TransferOp::Post { pending_id: paid, amount: None },
                BatchStep::Void => TransferOp::Void { pending_id: paid },
            };
            let id = match step {
                BatchStep::Pay | BatchStep::Hold => paid,
                BatchStep::Post => batch.item_resolution(item.index, true),
                BatchStep::Void => batch.item_resolution(item.index, false),
            };
            let code = self.apply(tenant, &NewTransfer { id, linked: false, op }, now, None);
            codes.push(code);
            // The item's transfer exists: this step already ran for it, and its result was
            // committed with that transfer. Recording it again would count it twice.
            if matches!(code, ResultCode::Exists | ResultCode::ExistsWithDifferentFields) {
                continue;
            }
            self.changes.batch_items.push(BatchItemResult {
                batch,
                index: item.index,
                step,
                state: item_state(step, code),
                code,
            });
        }
        codes
    }

    // Payments.

    fn set_payment_status(&mut self, id: PaymentId, status: PaymentStatus, now: u64) {
        let Some(payment) = self.payments.get_mut(&id) else { return };
        if payment.status == PaymentStatus::RequiresConfirmation {
            self.deadlines.remove(&(payment.expires_at, Deadline::Payment(id)));
        }
        payment.status = status;
        payment.updated_at = now.max(payment.updated_at);
        let tenant = payment.tenant;
        self.touched_payments.push(id);
        if let Some(kind) = payment_event(status) {
            self.changes.events.push((tenant, kind, id.0));
        }
    }

    fn create_payment(&mut self, tenant: TenantId, new: &NewPayment, now: u64) -> Result<Payment, CommandError> {
        if new.amount == 0 || new.amount > AMOUNT_MAX {
            return Err(CommandError::InvalidField {
                param: "amount",
                message: "amount must be between 1 and 9223372036854775807",
            });
        }
        if new.expires_in_seconds == 0 || new.expires_in_seconds > TIMEOUT_MAX_SECONDS {
            return Err(CommandError::InvalidField {
                param: "expires_in_seconds",
                message: "expires_in_seconds must be between 1 and 31622400 (366 days)",
            });
        }
        for (param, id) in [("payer_account", new.payer), ("payee_account", new.payee)] {
            let account = self.tenant_account(tenant, id).ok_or(CommandError::AccountNotFound { param })?;
            if account.currency != new.currency {
                return Err(CommandError::CurrencyMismatch { param });
            }
        }
        if new.payer == new.payee {
            return Err(CommandError::SameAccount);
        }
        if self.payments.contains_key(&new.id) {
            return Err(CommandError::AlreadyExists);
        }
        let created_at = self.tick(now);
        let payment = Payment {
            id: new.id,
            tenant,
            payer: new.payer,
            payee: new.payee,
            amount: new.amount,
            currency: new.currency,
            capture_method: new.capture_method,
            status: PaymentStatus::RequiresConfirmation,
            description: new.description.clone(),
            failure_code: None,
            amount_captured: 0,
            amount_refunded: 0,
            expires_at: created_at.saturating_add(new.expires_in_seconds * NANOS_PER_SECOND),
            created_at,
            updated_at: created_at,
            transfer: None,
        };
        self.deadlines.insert((payment.expires_at, Deadline::Payment(payment.id)));
        self.payments.insert(payment.id, payment.clone());
        self.touched_payments.push(payment.id);
        Ok(payment)
    }

    /// The payment, if it belongs to `tenant` and is in one of `allowed` statuses.
    fn payment_in(&self, tenant: TenantId, id: PaymentId, allowed: &[PaymentStatus]) -> Result<Payment, CommandError> {
        let payment = self.payments.get(&id).filter(|p| p.tenant == tenant).ok_or(CommandError::PaymentNotFound)?;
        if !allowed.contains(&payment.status) {
            return Err(CommandError::UnexpectedState { status: payment.status });
        }
        Ok(payment.clone())
    }

    fn update_payment(&mut self, payment: Payment) -> Payment {
        self.touched_payments.push(payment.id);
        self.payments.insert(payment.id, payment.clone());
        payment
    }

    fn confirm(&mut self, tenant: TenantId, id: PaymentId, now: u64) -> Result<Payment, CommandError> {
        let mut payment = self.payment_in(tenant, id, &[PaymentStatus::RequiresConfirmation])?;
        let manual = payment.capture_method == CaptureMethod::Manual;
        let transfer = TransferId(id.derive_at(TAG_CONFIRM, now));
        let mv = Move {
            id: transfer,
            debit: payment.payer,
            credit: payment.payee,
            amount: payment.amount,
            currency: payment.currency,
            hold: manual,
            expires_at: manual.then_some(payment.expires_at),
        };
        let code = self.apply_move(tenant, &mv, now, Some(id));
        self.deadlines.remove(&(payment.expires_at, Deadline::Payment(id)));
        payment.updated_at = now.max(payment.updated_at);
        if code == ResultCode::Ok {
            payment.transfer = Some(transfer);
            if manual {
                payment.status = PaymentStatus::RequiresCapture;
            } else {
                payment.status = PaymentStatus::Succeeded;
                payment.amount_captured = payment.amount;
            }
        } else {
            payment.status = PaymentStatus::Failed;
            payment.failure_code = Some(code);
        }
        if let Some(kind) = payment_event(payment.status) {
            self.changes.events.push((tenant, kind, id.0));
        }
        Ok(self.update_payment(payment))
    }

    fn capture(
        &mut self,
        tenant: TenantId,
        id: PaymentId,
        amount: Option<u64>,
        now: u64,
    ) -> Result<Payment, CommandError> {
        let mut payment = self.payment_in(tenant, id, &[PaymentStatus::RequiresCapture])?;
        let amount = amount.unwrap_or(payment.amount);
        if amount == 0 {
            return Err(CommandError::InvalidField { param: "amount", message: "amount must be greater than zero" });
        }
        if amount > payment.amount {
            return Err(CommandError::AmountTooLarge { max: payment.amount });
        }
        let hold = payment.transfer.ok_or(CommandError::Rejected(ResultCode::PendingNotFound))?;
        let code = self.resolve(
            tenant,
            TransferId(id.derive_at(TAG_CAPTURE, now)),
            hold,
            Resolution::Post(Some(amount)),
            now,
            Some(id),
        );
        if code != ResultCode::Ok {
            return Err(CommandError::Rejected(code));
        }
        payment.status = PaymentStatus::Succeeded;
        payment.amount_captured = amount;
        payment.updated_at = now.max(payment.updated_at);
        self.changes.events.push((tenant, "payment.succeeded", id.0));
        Ok(self.update_payment(payment))
    }

    fn cancel(&mut self, tenant: TenantId, id: PaymentId, now: u64) -> Result<Payment, CommandError> {
        let mut payment =
            self.payment_in(tenant, id, &[PaymentStatus::RequiresConfirmation, PaymentStatus::RequiresCapture])?;
        if payment.status == PaymentStatus::RequiresCapture {
            let hold = payment.transfer.ok_or(CommandError::Rejected(ResultCode::PendingNotFound))?;
            let code =
                self.resolve(tenant, TransferId(id.derive_at(TAG_CANCEL, now)), hold, Resolution::Void, now, Some(id));
            if code != ResultCode::Ok {
                return Err(CommandError::Rejected(code));
            }
        } else {
            self.deadlines.remove(&(payment.expires_at, Deadline::Payment(id)));
        }
        payment.status = PaymentStatus::Cancelled;
        payment.updated_at = now.max(payment.updated_at);
        Ok(self.update_payment(payment))
    }

    fn refund(
        &mut self,
        tenant: TenantId,
        id: PaymentId,
        refund_id: RefundId,
        amount: Option<u64>,
        now: u64,
    ) -> Result<(Refund, Payment), CommandError> {
        let mut payment = self.payment_in(tenant, id, &[PaymentStatus::Succeeded])?;
        let refundable = payment.amount_captured - payment.amount_refunded;
        let amount = amount.unwrap_or(refundable);
        if refundable == 0 {
            return Err(CommandError::AmountTooLarge { max: 0 });
        }
        if amount == 0 {
            return Err(CommandError::InvalidField { param: "amount", message: "amount must be greater than zero" });
        }
        if amount > refundable {
            return Err(CommandError::AmountTooLarge { max: refundable });
        }
        let transfer = TransferId(refund_id.derive_at(TAG_REFUND, now));
        let mv = Move {
            id: transfer,
            debit: payment.payee,
            credit: payment.payer,
            amount,
            currency: payment.currency,
            hold: false,
            expires_at: None,
        };
        let code = self.apply_move(tenant, &mv, now, None);
        let ok = code == ResultCode::Ok;
        if ok {
            payment.amount_refunded += amount;
            payment.updated_at = now.max(payment.updated_at);
            payment = self.update_payment(payment);
            self.changes.events.push((tenant, "payment.refunded", id.0));
        }
        let refund = Refund {
            id: refund_id,
            tenant,
            payment: id,
            amount,
            currency: payment.currency,
            status: if ok { RefundStatus::Succeeded } else { RefundStatus::Failed },
            failure_code: (!ok).then_some(code),
            transfer,
            created_at: self.tick(now),
        };
        self.changes.refunds.push(refund.clone());
        Ok((refund, payment))
    }
}

/// The webhook event a payment's new status gives, if any.
fn payment_event(status: PaymentStatus) -> Option<&'static str> {
    match status {
        PaymentStatus::Succeeded => Some("payment.succeeded"),
        PaymentStatus::Failed => Some("payment.failed"),
        PaymentStatus::RequiresCapture => Some("payment.requires_capture"),
        PaymentStatus::Expired => Some("payment.expired"),
        _ => None,
    }
}

struct Move {
    id: TransferId,
    debit: AccountId,
    credit: AccountId,
    amount: u64,
    currency: Currency,
    hold: bool,
    expires_at: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Resolution {
    Post(Option<u64>),
    Void,
    Expire,
}
