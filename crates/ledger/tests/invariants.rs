//! What every batch must leave true, and the `ChangeSet` contract with the store.
//!
//! The property tests run random sequences of commands (accounts with random overdraft limits,
//! moves, holds, posts, voids, linked chains, payments, refunds, time steps, restarts) in random
//! batches through the simulated engine of `common` and check, after every batch: the state's
//! invariants, no limited account below its limit, each batch's transfers match its results;
//! and at the end: balances recomputed from the stored transfers, the posted volume, recovery
//! from the store, and that a replay (with or without restarts) gives identical outcomes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_same_state, eur, move_of, usd, Sim, SECOND};
use paycore_ledger::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::collections::{BTreeMap, BTreeSet, HashMap};

const T1: TenantId = TenantId(1);

fn open(id: u128, overdraft: Overdraft, metadata: Option<&str>) -> Request {
    Request {
        tenant: T1,
        command: Command::CreateAccount(NewAccount {
            id: AccountId(id),
            currency: usd(),
            overdraft,
            reference: None,
            metadata: metadata.map(str::to_owned),
        }),
    }
}

fn mv(id: u128, debit: u128, credit: u128, amount: u64, hold: Option<Hold>, linked: bool) -> NewTransfer {
    NewTransfer { linked, ..move_of(id, debit, credit, amount, usd(), hold) }
}

fn transfers(list: Vec<NewTransfer>) -> Request {
    Request { tenant: T1, command: Command::Transfers(list) }
}

fn ids(changes: &ChangeSet) -> Vec<u128> {
    changes.transfers.iter().map(|t| t.id.0).collect()
}

fn balance_ids(changes: &ChangeSet) -> BTreeSet<u128> {
    changes.balances.iter().map(|(id, _)| id.0).collect()
}

#[test]
fn change_sets_list_exactly_what_the_batch_changed() {
    let mut sim = Sim::default();
    let (w, a, b) = (1, 2, 3);
    sim.run(&[
        open(w, Overdraft::Unlimited, None),
        open(a, Overdraft::Limit(0), Some("{\"k\":1}")),
        open(b, Overdraft::Limit(0), None),
    ]);
    let c = sim.history.last().unwrap();
    assert_eq!(c.new_accounts.iter().map(|a| a.id.0).collect::<Vec<_>>(), [w, a, b]);
    let metadata: Vec<_> = c.new_accounts.iter().map(|a| a.metadata.clone()).collect();
    assert_eq!(metadata, [None, Some("{\"k\":1}".to_owned()), None]);
    assert!(c.balances.is_empty() && c.transfers.is_empty() && c.holds.is_empty());

    // Moves, a hold and a rejection.
    sim.run(&[
        transfers(vec![mv(10, w, a, 100, None, false)]),
        transfers(vec![
            mv(11, a, b, 30, Some(Hold { timeout_seconds: Some(60) }), false),
            mv(12, w, b, 0, None, false),
        ]),
    ]);
    let c = sim.history.last().unwrap();
    assert_eq!(ids(c), [10, 11]);
    assert_eq!(balance_ids(c), BTreeSet::from([w, a, b]));
    for (id, balances) in &c.balances {
        assert_eq!(*balances, sim.balances(*id));
    }
    assert_eq!(c.holds.len(), 1);
    assert_eq!((c.holds[0].transfer.id.0, c.holds[0].status), (11, HoldStatus::Pending));
    assert!(c.new_accounts.is_empty() && c.payments.is_empty() && c.refunds.is_empty());
    assert_eq!(c.last_timestamp, sim.state.last_timestamp());
    assert_eq!(c.last_timestamp, c.transfers[1].timestamp);

    // Only rejections: nothing.
    sim.run(&[transfers(vec![mv(13, a, b, 1000, None, false)])]);
    let c = sim.history.last().unwrap();
    assert!(c.transfers.is_empty() && c.balances.is_empty() && c.holds.is_empty());

    // A linked chain that fails: nothing either.
    sim.run(&[transfers(vec![mv(14, w, a, 1, None, true), mv(15, a, b, 1000, None, false)])]);
    let c = sim.history.last().unwrap();
    assert!(c.transfers.is_empty(), "{:?}", c.transfers);
    assert!(c.balances.is_empty(), "a rolled-back chain changed no balance: {:?}", c.balances);

    // A post and the hold's new status, once.
    sim.run(&[transfers(vec![NewTransfer {
        id: TransferId(16),
        linked: false,
        op: TransferOp::Post { pending_id: TransferId(11), amount: Some(10) },
    }])]);
    let c = sim.history.last().unwrap();
    assert_eq!(ids(c), [16]);
    assert_eq!(balance_ids(c), BTreeSet::from([a, b]));
    assert_eq!(c.holds.iter().map(|h| (h.transfer.id.0, h.status)).collect::<Vec<_>>(), [(11, HoldStatus::Posted)]);
    assert!(sim.state.hold(TransferId(11)).is_none(), "a resolved hold leaves memory");

    // A payment created and confirmed in one batch is written once, with its final status.
    let pay = PaymentId(20);
    let new = NewPayment {
        id: pay,
        payer: Some(AccountId(a)),
        payee: AccountId(b),
        amount: 40,
        currency: usd(),
        capture_method: CaptureMethod::Manual,
        expires_in_seconds: 30,
        description: None,
        fx_quote: None,
        merchant: None,
    };
    sim.run(&[
        Request { tenant: T1, command: Command::CreatePayment(new) },
        Request { tenant: T1, command: Command::ConfirmPayment(pay) },
    ]);
    let c = sim.history.last().unwrap();
    assert_eq!(c.payments.len(), 1);
    assert_eq!(c.payments[0].status, PaymentStatus::RequiresCapture);
    let hold = c.payments[0].transfer.unwrap();
    assert_eq!(ids(c), [hold.0]);
    assert_eq!(
        c.holds.iter().map(|h| (h.transfer.id, h.status, h.payment)).collect::<Vec<_>>(),
        [(hold, HoldStatus::Pending, Some(pay))]
    );
    assert_eq!(balance_ids(c), BTreeSet::from([a, b]));

    // Expiry: the expire transfer, the hold, the payment and both balances.
    sim.wait(31); // the payment expires 30 s after its creation timestamp, a few ns after `now`
    let c = sim.history.last().unwrap();
    assert_eq!(c.transfers.len(), 1);
    assert_eq!(
        (c.transfers[0].kind, c.transfers[0].pending_id, c.transfers[0].amount),
        (TransferKind::ExpirePending, Some(hold), 40)
    );
    assert_eq!(c.holds.iter().map(|h| (h.transfer.id, h.status)).collect::<Vec<_>>(), [(hold, HoldStatus::Expired)]);
    assert_eq!(c.payments.iter().map(|p| (p.id, p.status)).collect::<Vec<_>>(), [(pay, PaymentStatus::Expired)]);
    assert_eq!(balance_ids(c), BTreeSet::from([a, b]));
    assert!(sim.state.payment(pay).is_none());

    // A refund: the refund, the payment's new refunded amount, one transfer.
    let pay = PaymentId(21);
    let new = NewPayment { id: pay, capture_method: CaptureMethod::Automatic, ..new_payment(a, b, 50) };
    sim.run(&[
        Request { tenant: T1, command: Command::CreatePayment(new) },
        Request { tenant: T1, command: Command::ConfirmPayment(pay) },
    ]);
    sim.run(&[Request {
        tenant: T1,
        command: Command::RefundPayment { payment: pay, refund: RefundId(1), amount: Some(5), reason: None },
    }]);
    let c = sim.history.last().unwrap();
    assert_eq!(c.refunds.len(), 1);
    assert_eq!(c.payments.iter().map(|p| (p.id, p.amount_refunded)).collect::<Vec<_>>(), [(pay, 5)]);
    assert_eq!(ids(c), [c.refunds[0].transfer.0]);
    assert_eq!(balance_ids(c), BTreeSet::from([a, b]));
}

fn new_payment(payer: u128, payee: u128, amount: u64) -> NewPayment {
    NewPayment {
        id: PaymentId(0),
        payer: Some(AccountId(payer)),
        payee: AccountId(payee),
        amount,
        currency: usd(),
        capture_method: CaptureMethod::Automatic,
        expires_in_seconds: 60,
        description: None,
        fx_quote: None,
        merchant: None,
    }
}

#[test]
fn recover_from_change_sets_after_a_restart() {
    let mut sim = Sim::default();
    sim.run(&[
        open(1, Overdraft::Unlimited, None),
        open(2, Overdraft::Limit(10), None),
        open(3, Overdraft::Limit(0), None),
    ]);
    sim.run(&[transfers(vec![
        mv(10, 1, 2, 100, None, false),
        mv(11, 2, 3, 50, Some(Hold { timeout_seconds: Some(100) }), false),
        mv(12, 2, 3, 20, Some(Hold { timeout_seconds: None }), false),
    ])]);
    // Rebuild from the change sets alone (not from `sim.store`).
    let mut model = common::Store::default();
    for c in &sim.history {
        model.apply(c);
    }
    let mut recovered = model.recover();
    assert_same_state(&sim.state, &recovered);
    // And the recovered state goes on exactly as the original.
    let next = [transfers(vec![mv(13, 2, 3, 41, None, false), mv(14, 2, 3, 40, None, false)])];
    let later = sim.now + 100 * SECOND; // hold 11 expires: 90 available
    let (x, y) = (sim.state.execute(&next, later), recovered.execute(&next, later));
    assert_eq!(x, y);
    assert_eq!(x, [Outcome::Transfers(vec![ResultCode::Ok, ResultCode::Ok])]);
    assert_eq!(recovered.account(AccountId(2)).unwrap().balances.available(Overdraft::Limit(10)), Some(9));
    let (cx, cy) = (sim.state.take_changes(), recovered.take_changes());
    assert_eq!(cx.transfers, cy.transfers);
    assert_same_state(&sim.state, &recovered);
}

// Property tests.

#[derive(Clone, Debug)]
enum Op {
    Open {
        euro: bool,
        overdraft: Overdraft,
        tenant2: bool,
    },
    /// `credit` indexes the accounts of the debit account's tenant and currency, or with
    /// `anywhere` all accounts. `open` leaves a chain open at the end of the request.
    Move {
        retry: Option<usize>,
        debit: usize,
        credit: usize,
        anywhere: bool,
        amount: u64,
        hold: Option<Hold>,
        linked: bool,
        open: bool,
        join: bool,
        other_tenant: bool,
        other_currency: bool,
    },
    /// `pending` indexes the holds that were made, or with `anywhere` every transfer id.
    Post {
        pending: usize,
        anywhere: bool,
        amount: Option<u64>,
        linked: bool,
        open: bool,
        join: bool,
    },
    Void {
        pending: usize,
        anywhere: bool,
        linked: bool,
        open: bool,
        join: bool,
    },
    Pay {
        payer: usize,
        payee: usize,
        anywhere: bool,
        amount: u64,
        manual: bool,
        expires: u64,
        other_tenant: bool,
    },
    /// Sends an earlier transfer request again, unchanged (unlinked).
    Retry(usize),
    Confirm(usize),
    Capture(usize, Option<u64>),
    Cancel(usize),
    Refund(usize, Option<u64>),
    /// Ends the batch and advances the clock; with `empty`, runs an empty batch after.
    Wait {
        seconds: u64,
        empty: bool,
    },
    EndBatch,
    Restart,
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        20 => 1u64..120,
        1 => Just(0u64),
        1 => Just(AMOUNT_MAX),
        1 => (AMOUNT_MAX - 300)..=AMOUNT_MAX,
    ]
}

fn hold() -> impl Strategy<Value = Option<Hold>> {
    prop_oneof![
        24 => Just(None),
        8 => Just(Some(Hold { timeout_seconds: None })),
        12 => (1u64..60).prop_map(|s| Some(Hold { timeout_seconds: Some(s) })),
        1 => prop_oneof![Just(0u64), Just(TIMEOUT_MAX_SECONDS + 1)].prop_map(|s| Some(Hold { timeout_seconds: Some(s) })),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let index = || 0usize..64;
    let linked = || proptest::bool::weighted(0.25);
    let rare = || proptest::bool::weighted(0.05);
    prop_oneof![
        3 => (any::<bool>(), prop_oneof![Just(Overdraft::Limit(0)), (1u64..200).prop_map(Overdraft::Limit), Just(Overdraft::Unlimited)], proptest::bool::weighted(0.2))
            .prop_map(|(euro, overdraft, tenant2)| Op::Open { euro, overdraft, tenant2 }),
        20 => (proptest::option::weighted(0.1, index()), index(), index(), rare(), amount(), hold(), linked(), rare(), any::<bool>(), rare(), rare())
            .prop_map(|(retry, debit, credit, anywhere, amount, hold, linked, open, join, other_tenant, other_currency)| Op::Move { retry, debit, credit, anywhere, amount, hold, linked, open, join, other_tenant, other_currency }),
        6 => (index(), proptest::bool::weighted(0.15), proptest::option::weighted(0.4, 0u64..130), linked(), rare(), any::<bool>())
            .prop_map(|(pending, anywhere, amount, linked, open, join)| Op::Post { pending, anywhere, amount, linked, open, join }),
        4 => (index(), proptest::bool::weighted(0.15), linked(), rare(), any::<bool>()).prop_map(|(pending, anywhere, linked, open, join)| Op::Void { pending, anywhere, linked, open, join }),
        4 => (index(), index(), rare(), 1u64..120, any::<bool>(), 1u64..90, rare())
            .prop_map(|(payer, payee, anywhere, amount, manual, expires, other_tenant)| Op::Pay { payer, payee, anywhere, amount, manual, expires, other_tenant }),
        3 => index().prop_map(Op::Retry),
        4 => index().prop_map(Op::Confirm),
        2 => (index(), proptest::option::weighted(0.5, 0u64..130)).prop_map(|(p, a)| Op::Capture(p, a)),
        1 => index().prop_map(Op::Cancel),
        3 => (index(), proptest::option::weighted(0.6, 0u64..130)).prop_map(|(p, a)| Op::Refund(p, a)),
        3 => (0u64..40, any::<bool>()).prop_map(|(seconds, empty)| Op::Wait { seconds, empty }),
        4 => Just(Op::EndBatch),
        1 => Just(Op::Restart),
    ]
}

/// Interprets ops into batches on a simulated engine and checks every batch.
struct Runner {
    sim: Sim,
    restarts: bool,
    accounts: Vec<(AccountId, TenantId, Currency)>,
    transfer_ids: Vec<TransferId>,
    /// Holds that were placed (ok), and payments that were created.
    holds: Vec<TransferId>,
    payments: Vec<(PaymentId, TenantId)>,
    /// Every transfer request sent, with its tenant.
    issued: Vec<(TenantId, NewTransfer)>,
    /// Whether the last transfer added may leave its chain open.
    leave_open: bool,
    next_id: u128,
    batch: Vec<Request>,
    log: Vec<Vec<Outcome>>,
}

impl Runner {
    fn new(restarts: bool) -> Runner {
        let mut r = Runner {
            sim: Sim::default(),
            restarts,
            accounts: Vec::new(),
            transfer_ids: Vec::new(),
            holds: Vec::new(),
            payments: Vec::new(),
            leave_open: false,
            issued: Vec::new(),
            next_id: 1000,
            batch: Vec::new(),
            log: Vec::new(),
        };
        // A funding account and a plain one per tenant and currency, so that money flows.
        for tenant2 in [false, true] {
            for euro in [false, true] {
                r.op(&Op::Open { euro, overdraft: Overdraft::Unlimited, tenant2 });
                r.op(&Op::Open { euro, overdraft: Overdraft::Limit(0), tenant2 });
            }
        }
        r.flush();
        r
    }

    fn id(&mut self) -> u128 {
        self.next_id += 1;
        self.next_id
    }

    fn account(&self, i: usize) -> (AccountId, TenantId, Currency) {
        self.accounts[i % self.accounts.len()]
    }

    fn payment(&self, i: usize) -> (PaymentId, TenantId) {
        if self.payments.is_empty() {
            return (PaymentId(7), T1);
        }
        self.payments[i % self.payments.len()]
    }

    /// Another account of the same tenant and currency, or with `anywhere` any account.
    fn peer(&self, of: (AccountId, TenantId, Currency), i: usize, anywhere: bool) -> AccountId {
        let peers: Vec<AccountId> = self
            .accounts
            .iter()
            .filter(|a| anywhere || ((a.1, a.2) == (of.1, of.2) && a.0 != of.0))
            .map(|a| a.0)
            .collect();
        peers.get(i % peers.len().max(1)).copied().unwrap_or(of.0)
    }

    fn pending(&self, i: usize, anywhere: bool) -> TransferId {
        let from = if anywhere || self.holds.is_empty() { &self.transfer_ids } else { &self.holds };
        if from.is_empty() {
            return TransferId(7);
        }
        from[i % from.len()]
    }

    /// Closes the chain at the end of the last request, unless its last transfer asked not to.
    fn close_chain(&mut self) {
        if let Some(Request { command: Command::Transfers(list), .. }) = self.batch.last_mut() {
            if !self.leave_open {
                if let Some(last) = list.last_mut() {
                    last.linked = false;
                }
            }
        }
    }

    /// Adds a transfer to the last request of the batch, or as a new request.
    fn push_transfer(&mut self, tenant: TenantId, transfer: NewTransfer, join: bool, open: bool) {
        self.issued.push((tenant, transfer.clone()));
        if join {
            if let Some(Request { tenant: t, command: Command::Transfers(list) }) = self.batch.last_mut() {
                if *t == tenant {
                    list.push(transfer);
                    self.leave_open = open;
                    return;
                }
            }
        }
        self.close_chain();
        self.batch.push(Request { tenant, command: Command::Transfers(vec![transfer]) });
        self.leave_open = open;
    }

    fn op(&mut self, op: &Op) {
        let other = |t: TenantId| TenantId(3 - t.0);
        if !matches!(op, Op::Move { .. } | Op::Post { .. } | Op::Void { .. }) {
            self.close_chain();
        }
        match *op {
            Op::Open { euro, overdraft, tenant2 } => {
                let id = AccountId(self.id());
                let tenant = if tenant2 { TenantId(2) } else { T1 };
                let currency = if euro { eur() } else { usd() };
                self.accounts.push((id, tenant, currency));
                let new = NewAccount { id, currency, overdraft, reference: None, metadata: None };
                self.batch.push(Request { tenant, command: Command::CreateAccount(new) });
            }
            Op::Move {
                retry,
                debit,
                credit,
                anywhere,
                amount,
                hold,
                linked,
                open,
                join,
                other_tenant,
                other_currency,
            } => {
                let (debit, tenant, currency) = self.account(debit);
                let credit = self.peer((debit, tenant, currency), credit, anywhere);
                let id = match retry {
                    Some(i) if !self.transfer_ids.is_empty() => self.pending(i, true),
                    _ => TransferId(self.id()),
                };
                self.transfer_ids.push(id);
                let currency = if other_currency {
                    if currency == usd() {
                        eur()
                    } else {
                        usd()
                    }
                } else {
                    currency
                };
                let tenant = if other_tenant { other(tenant) } else { tenant };
                let op = TransferOp::Move { debit_account: debit, credit_account: credit, amount, currency, hold };
                self.push_transfer(tenant, NewTransfer { id, linked, op }, join, open);
            }
            Op::Post { pending, anywhere, amount, linked, open, join } => {
                let pending = self.pending(pending, anywhere);
                let id = TransferId(self.id());
                self.transfer_ids.push(id);
                let tenant = self.tenant_of_transfer(pending);
                self.push_transfer(
                    tenant,
                    NewTransfer { id, linked, op: TransferOp::Post { pending_id: pending, amount } },
                    join,
                    open,
                );
            }
            Op::Void { pending, anywhere, linked, open, join } => {
                let pending = self.pending(pending, anywhere);
                let id = TransferId(self.id());
                self.transfer_ids.push(id);
                let tenant = self.tenant_of_transfer(pending);
                self.push_transfer(
                    tenant,
                    NewTransfer { id, linked, op: TransferOp::Void { pending_id: pending } },
                    join,
                    open,
                );
            }
            Op::Pay { payer, payee, anywhere, amount, manual, expires, other_tenant } => {
                let (payer, tenant, currency) = self.account(payer);
                let payee = self.peer((payer, tenant, currency), payee, anywhere);
                let id = PaymentId(self.id());
                let tenant = if other_tenant { other(tenant) } else { tenant };
                let capture_method = if manual { CaptureMethod::Manual } else { CaptureMethod::Automatic };
                let new = NewPayment {
                    id,
                    payer: Some(payer),
                    payee,
                    amount,
                    currency,
                    capture_method,
                    expires_in_seconds: expires,
                    description: None,
                    fx_quote: None,
                    merchant: None,
                };
                self.batch.push(Request { tenant, command: Command::CreatePayment(new) });
            }
            Op::Retry(i) => {
                if !self.issued.is_empty() {
                    let (tenant, mut transfer) = self.issued[i % self.issued.len()].clone();
                    transfer.linked = false;
                    self.push_transfer(tenant, transfer, false, false);
                }
            }
            Op::Confirm(i) => {
                let (id, tenant) = self.payment(i);
                self.batch.push(Request { tenant, command: Command::ConfirmPayment(id) });
            }
            Op::Capture(i, amount) => {
                let (payment, tenant) = self.payment(i);
                self.batch.push(Request { tenant, command: Command::CapturePayment { payment, amount } });
            }
            Op::Cancel(i) => {
                let (id, tenant) = self.payment(i);
                self.batch.push(Request { tenant, command: Command::CancelPayment(id) });
            }
            Op::Refund(i, amount) => {
                let (payment, tenant) = self.payment(i);
                let refund = RefundId(self.id());
                self.batch.push(Request {
                    tenant,
                    command: Command::RefundPayment { payment, refund, amount, reason: None },
                });
            }
            Op::Wait { seconds, empty } => {
                self.flush();
                self.sim.now += seconds * SECOND;
                if empty {
                    self.flush_always();
                }
            }
            Op::EndBatch => self.flush(),
            Op::Restart => {
                self.flush();
                if self.restarts {
                    self.sim.restart();
                }
            }
        }
    }

    /// The tenant that owns a transfer id, as far as the store knows (tenant 1 if unknown).
    fn tenant_of_transfer(&self, id: TransferId) -> TenantId {
        self.sim.store.transfers.get(&id).map_or(T1, |t| t.tenant)
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.flush_always();
        }
    }

    fn flush_always(&mut self) {
        self.close_chain();
        let requests = std::mem::take(&mut self.batch);
        let outcomes = self.sim.run(&requests);
        let changes = self.sim.history.last().unwrap();
        // Every transfer in the change set is accounted for by a result.
        let mut ok_ids = Vec::new();
        let mut made_by_payments = 0;
        for (request, outcome) in requests.iter().zip(&outcomes) {
            match (&request.command, outcome) {
                (Command::Transfers(list), Outcome::Transfers(codes)) => {
                    assert_eq!(list.len(), codes.len());
                    for (t, code) in list.iter().zip(codes) {
                        if *code == ResultCode::Ok {
                            ok_ids.push(t.id);
                            if let TransferOp::Move { hold: Some(_), .. } = t.op {
                                self.holds.push(t.id);
                            }
                        }
                    }
                }
                (Command::CreatePayment(new), Outcome::Payment(Ok(p))) => {
                    assert_eq!((p.id, p.status), (new.id, PaymentStatus::RequiresConfirmation));
                    self.payments.push((p.id, request.tenant));
                }
                (Command::ConfirmPayment(_), Outcome::Payment(Ok(p))) => {
                    // Clients may try to post or void a payment's hold too.
                    self.transfer_ids.extend(p.transfer);
                    made_by_payments += usize::from(p.status != PaymentStatus::Failed);
                    assert_eq!(p.transfer.is_some(), p.status != PaymentStatus::Failed);
                    assert_eq!(p.failure_code.is_some(), p.status == PaymentStatus::Failed);
                }
                (Command::CapturePayment { .. }, Outcome::Payment(Ok(_))) => made_by_payments += 1,
                (Command::CancelPayment(_), Outcome::Payment(Ok(p))) => {
                    made_by_payments += usize::from(p.transfer.is_some())
                }
                (Command::RefundPayment { .. }, Outcome::Refund(Ok((r, p)))) => {
                    made_by_payments += usize::from(r.status == RefundStatus::Succeeded);
                    assert!(p.amount_refunded <= p.amount_captured && p.amount_captured <= p.amount);
                }
                _ => {}
            }
        }
        let expired = changes.transfers.iter().filter(|t| t.kind == TransferKind::ExpirePending).count();
        assert_eq!(
            changes.transfers.len(),
            ok_ids.len() + made_by_payments + expired,
            "transfers {:?}",
            changes.transfers
        );
        let made: BTreeSet<TransferId> = changes.transfers.iter().map(|t| t.id).collect();
        for id in &ok_ids {
            assert!(made.contains(id), "{id} is ok but was not recorded");
        }
        for (id, balances) in &changes.balances {
            assert_eq!(self.sim.state.account(*id).map(|a| a.balances), Some(*balances));
        }
        self.log.push(outcomes);
    }

    fn finish(mut self) -> Runner {
        self.flush();
        self
    }
}

/// Balances recomputed from the stored transfers alone.
fn recompute(store: &common::Store) -> HashMap<AccountId, Balances> {
    let mut balances: HashMap<AccountId, Balances> =
        store.accounts.keys().map(|id| (*id, Balances::default())).collect();
    let mut transfers: Vec<&Transfer> = store.transfers.values().collect();
    transfers.sort_by_key(|t| t.timestamp);
    for t in transfers {
        let mut change = |id: AccountId, f: &dyn Fn(&mut Balances)| f(balances.get_mut(&id).unwrap());
        let held = t.pending_id.map(|p| store.transfers[&p].amount);
        match t.kind {
            TransferKind::Single => {
                change(t.debit_account, &|b| b.debits_posted += t.amount);
                change(t.credit_account, &|b| b.credits_posted += t.amount);
            }
            TransferKind::Pending => {
                change(t.debit_account, &|b| b.debits_pending += t.amount);
                change(t.credit_account, &|b| b.credits_pending += t.amount);
            }
            TransferKind::PostPending => {
                let held = held.unwrap();
                assert!(t.amount <= held);
                change(t.debit_account, &|b| {
                    b.debits_pending -= held;
                    b.debits_posted += t.amount;
                });
                change(t.credit_account, &|b| {
                    b.credits_pending -= held;
                    b.credits_posted += t.amount;
                });
            }
            TransferKind::VoidPending | TransferKind::ExpirePending => {
                assert_eq!(Some(t.amount), held);
                change(t.debit_account, &|b| b.debits_pending -= t.amount);
                change(t.credit_account, &|b| b.credits_pending -= t.amount);
            }
        }
    }
    balances
}

fn run(ops: &[Op], restarts: bool) -> Runner {
    let mut runner = Runner::new(restarts);
    for op in ops {
        runner.op(op);
    }
    runner.finish()
}

fn check_run(ops: &[Op]) {
    let runner = run(ops, true);
    let sim = &runner.sim;
    let store = &sim.store;

    // Balances follow from the transfers.
    let recomputed = recompute(store);
    for account in sim.state.accounts() {
        assert_eq!(recomputed[&account.id], account.balances, "{}", account.id);
    }
    // Per currency, the posted volume is the sum of the single and post transfers.
    let mut volume: BTreeMap<Currency, (u128, u128, u128)> = BTreeMap::new();
    for t in store.transfers.values().filter(|t| matches!(t.kind, TransferKind::Single | TransferKind::PostPending)) {
        volume.entry(t.currency).or_default().0 += u128::from(t.amount);
    }
    for a in sim.state.accounts() {
        let v = volume.entry(a.currency).or_default();
        v.1 += u128::from(a.balances.debits_posted);
        v.2 += u128::from(a.balances.credits_posted);
    }
    for (currency, (moved, debits, credits)) in volume {
        assert_eq!((moved, moved), (debits, credits), "{currency}");
    }
    // Open holds in memory are exactly the pending ones in the store; same for payments.
    let open_holds: BTreeSet<TransferId> =
        store.holds.values().filter(|h| h.status == HoldStatus::Pending).map(|h| h.transfer.id).collect();
    for id in store.holds.keys() {
        assert_eq!(sim.state.hold(*id).is_some(), open_holds.contains(id), "hold {id}");
    }
    for p in store.payments.values() {
        assert_eq!(sim.state.payment(p.id), p.status.is_open().then_some(p));
        if p.status == PaymentStatus::Succeeded {
            assert!(p.amount_refunded <= p.amount_captured);
        }
        if let (Some(hold), CaptureMethod::Manual) = (p.transfer, p.capture_method) {
            let expected = match p.status {
                PaymentStatus::RequiresCapture => HoldStatus::Pending,
                PaymentStatus::Succeeded => HoldStatus::Posted,
                PaymentStatus::Cancelled => HoldStatus::Voided,
                PaymentStatus::Expired => HoldStatus::Expired,
                other => panic!("a manual payment with a hold is {other:?}"),
            };
            assert_eq!(store.holds[&hold].status, expected, "{}", p.id);
        }
    }
    // Recovery from the store gives the same state.
    assert_same_state(&sim.state, &store.recover());
    // Determinism: a replay, and a replay without the restarts, give the same outcomes.
    for restarts in [true, false] {
        let again = run(ops, restarts);
        assert_eq!(runner.log, again.log, "replay (restarts: {restarts})");
        assert_eq!(store.transfers, again.sim.store.transfers);
        assert_same_state(&sim.state, &again.sim.state);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/invariants.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_batches_keep_the_ledger_sound(ops in proptest::collection::vec(op(), 0..200)) {
        check_run(&ops);
    }
}
