//! The state machine: `State::execute(requests, now) -> outcomes`, deterministic and pure.
//!
//! This module holds the state itself and the loop of `execute`; each kind of work has a file:
//! `request` (what comes in and goes out), `prefetch` (what to load first), `accounts`,
//! `transfers` (moves and holds and their resolution), `linked` (chains and their undo log),
//! `payments`, `batch_items`, `changes` (the change set handed to the store) and `invariants`
//! (double entry after every batch, and the full check).

mod accounts;
mod batch_items;
mod changes;
mod clearing;
pub(crate) mod fx;
mod invariants;
mod limits;
mod linked;
mod payments;
mod prefetch;
mod request;
mod transfers;

pub use changes::ChangeSet;
pub use fx::{batch_item_fx_transfers, payment_fx_transfers};
pub use prefetch::Prefetch;
pub use request::{Command, CommandError, NewAccount, NewPayment, Outcome, Request};

use crate::account::{Account, Balances};
use crate::clearing::OpenWindow;
use crate::fx::Quote;
use crate::limits::LimitBreach;
use crate::payment::{Payment, PaymentStatus};
use crate::transfer::HoldRecord;
use crate::{AccountId, ClearingWindowId, Currency, PaymentId, QuoteId, TenantId, Transfer, TransferId};
use limits::Outflow;
use linked::Undo;
use payments::RefundOrder;
use std::collections::BTreeSet;

/// The state's maps are keyed by ids, most of them 128-bit and many chosen by clients. std's
/// SipHash was two thirds of `execute` (callgrind, crates/bench/NOTES.md); foldhash is several
/// times faster and still seeded per process, so colliding ids cannot be computed in advance.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// The most ledger events in one engine batch (one `execute`, one commit): a bulk transfer
/// request counts each transfer, a chunk of batch items each item. So it is also the most
/// transfers in one bulk request and the most items the batch runner sends at once. The number
/// is TigerBeetle's: a 1 MiB message less its 256-byte header holds 8 190 events of 128 bytes.
/// It bounds the work and memory of one commit, and so the wait it adds to the real-time
/// requests that share it.
pub const BATCH_EVENTS_MAX: usize = 8190;

/// The longest a hold or an unconfirmed payment may wait: one year.
pub const TIMEOUT_MAX_SECONDS: u64 = 366 * 24 * 3600;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Deadline {
    Hold(TransferId),
    Payment(PaymentId),
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
    /// FX quotes loaded for this batch (and those it used). Dropped after it.
    quotes: HashMap<QuoteId, Quote>,
    deadlines: BTreeSet<(u64, Deadline)>,
    last_timestamp: u64,
    /// The highest transfer id in the store, when known: no stored transfer has a greater id,
    /// so `prefetch` need not ask the store about those (server-made ids and well-made client
    /// ids are time-ordered, so nearly every new id is above it). `None`: ask about every id.
    stored_transfer_id_max: Option<TransferId>,
    /// The same for payments: a payment id above it is not stored, finished or open.
    stored_payment_id_max: Option<PaymentId>,
    /// Recent debits of every account with a `daily_outflow` or `velocity` limit (and of no
    /// other account): see `limits`.
    outflows: HashMap<AccountId, Outflow>,

    // The batch in progress.
    changes: ChangeSet,
    new_transfers: HashMap<TransferId, usize>,
    before: HashMap<AccountId, (Currency, Balances)>,
    touched_holds: Vec<TransferId>,
    touched_payments: Vec<PaymentId>,
    undo: Option<Undo>,
    /// Debits loaded from the store for this batch (or for recovery), by debit account:
    /// (timestamp, amount).
    debit_history: HashMap<AccountId, Vec<(u64, u64)>>,
    /// The details of the last `limit_exceeded`, for the outcome that reports it.
    last_breach: Option<LimitBreach>,
    /// The open clearing windows this batch closes, as loaded (then as left by a close in
    /// this batch), and the ids of closed windows that exist already.
    open_windows: HashMap<(TenantId, Currency), OpenWindow>,
    stored_window_ids: HashSet<ClearingWindowId>,
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

    /// When the next hold or payment expires, if any: the engine runs an empty batch then.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
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

    fn execute_one(&mut self, request: &Request, now: u64) -> Outcome {
        let tenant = request.tenant;
        match &request.command {
            Command::CreateAccount(new) => Outcome::Account(self.create_account(tenant, new, now)),
            Command::Transfer(t) => {
                self.last_breach = None;
                let code = self.transfers(tenant, std::slice::from_ref(t), now)[0];
                let transfer = if code.is_success() { self.find_transfer(t.id).cloned() } else { None };
                let limit = if code == crate::ResultCode::LimitExceeded { self.last_breach.take() } else { None };
                Outcome::Transfer { code, transfer, limit }
            }
            Command::Transfers(transfers) => Outcome::Transfers(self.transfers(tenant, transfers, now)),
            Command::CreatePayment(new) => Outcome::Payment(self.create_payment(tenant, new, now)),
            Command::ConfirmPayment(id) => Outcome::Payment(self.confirm(tenant, *id, now)),
            Command::CapturePayment { payment, amount } => {
                Outcome::Payment(self.capture(tenant, *payment, *amount, now))
            }
            Command::CancelPayment(id) => Outcome::Payment(self.cancel(tenant, *id, now)),
            Command::RefundPayment { payment, refund, amount, reason } => {
                let transfer = TransferId(refund.derive_at(crate::payment::TAG_REFUND, now));
                let order = RefundOrder {
                    payment: *payment,
                    refund: *refund,
                    transfer,
                    amount: *amount,
                    reason: reason.as_deref(),
                };
                Outcome::Refund(self.refund(tenant, order, now))
            }
            Command::BatchItems { batch, step, items } => {
                Outcome::Transfers(self.batch_items(tenant, *batch, *step, items, now))
            }
            Command::EndBatch { batch, end } => {
                self.changes.batch_ends.push((*batch, *end));
                Outcome::BatchEnded
            }
            Command::UpdateAccount { account, update, actor } => {
                Outcome::AccountUpdated(self.update_account(tenant, *account, update, actor, now))
            }
            Command::CloseClearingWindow { window, currency } => {
                Outcome::ClearingWindow(self.close_clearing_window(tenant, *window, *currency, now))
            }
            Command::ScanPayment { payment, payer } => Outcome::Payment(self.scan(tenant, *payment, *payer, now)),
        }
    }

    /// The next timestamp: the clock, or one more than the last if the clock has not moved
    /// on (or went back), so that timestamps are unique and increasing.
    fn tick(&mut self, now: u64) -> u64 {
        self.last_timestamp = now.max(self.last_timestamp.saturating_add(1));
        self.last_timestamp
    }
}
