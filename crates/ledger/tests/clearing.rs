//! Clearing windows in the state machine: what a close counts, where its boundary falls within
//! a batch, and the figures it reports, against a model store that loads what `prefetch` asks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{eur, move_of, usd, Store, START};
use paycore_ledger::*;
use proptest::prelude::*;

const T1: TenantId = TenantId(1);
const T2: TenantId = TenantId(2);

/// A state and the store it commits to, with the windows closed so far.
struct Ledger {
    state: State,
    store: Store,
    windows: Vec<ClearingWindow>,
    now: u64,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger { state: State::default(), store: Store::default(), windows: Vec::new(), now: START }
    }

    /// Runs one batch as the engine does: prefetch, load from the model, execute, commit.
    fn batch(&mut self, requests: &[Request]) -> Vec<Outcome> {
        let wanted = self.state.prefetch(requests);
        let transfers =
            wanted.transfers.iter().filter_map(|id| self.store.transfers.get(id).cloned()).collect::<Vec<_>>();
        let holds = wanted.holds.iter().filter_map(|id| self.store.holds.get(id).cloned()).collect::<Vec<_>>();
        self.state.insert_prefetched(transfers, holds, Vec::new());
        let open = wanted
            .clearing
            .iter()
            .map(|(tenant, currency, _)| self.open_window(*tenant, *currency))
            .collect::<Vec<_>>();
        let ids = wanted
            .clearing
            .iter()
            .filter(|(_, _, id)| self.windows.iter().any(|w| w.id == *id))
            .map(|(_, _, id)| *id)
            .collect::<Vec<_>>();
        self.state.insert_clearing(open, ids);
        self.now += 1_000_000;
        let outcomes = self.state.execute(requests, self.now);
        let changes = self.state.take_changes();
        self.store.apply(&changes);
        self.windows.extend(changes.clearing_windows.iter().cloned());
        self.state.check_invariants().unwrap();
        outcomes
    }

    /// What a store answers for the open window: recomputed from the stored transfers.
    fn open_window(&self, tenant: TenantId, currency: Currency) -> OpenWindow {
        let last = self.windows.iter().rev().find(|w| w.tenant == tenant && w.currency == currency);
        let opened_at = last.map_or(0, |w| w.closed_at);
        let mut moved: std::collections::BTreeMap<AccountId, (u64, u64)> = Default::default();
        for t in self.store.transfers.values() {
            if t.tenant == tenant
                && t.currency == currency
                && t.timestamp > opened_at
                && matches!(t.kind, TransferKind::Single | TransferKind::PostPending)
            {
                moved.entry(t.debit_account).or_default().0 += t.amount;
                moved.entry(t.credit_account).or_default().1 += t.amount;
            }
        }
        OpenWindow {
            tenant,
            currency,
            sequence: last.map_or(1, |w| w.sequence + 1),
            opened_at,
            moved: moved.into_iter().map(|(a, (d, c))| (a, d, c)).collect(),
        }
    }

    fn open_accounts(&mut self, tenant: TenantId, currency: Currency, ids: &[u128]) {
        let requests: Vec<Request> = ids
            .iter()
            .map(|id| Request {
                tenant,
                command: Command::CreateAccount(NewAccount {
                    id: AccountId(*id),
                    currency,
                    overdraft: Overdraft::Unlimited,
                    reference: None,
                    metadata: None,
                }),
            })
            .collect();
        for outcome in self.batch(&requests) {
            assert!(matches!(outcome, Outcome::Account(Ok(_))), "{outcome:?}");
        }
    }
}

fn pay(tenant: TenantId, id: u128, debit: u128, credit: u128, amount: u64, currency: Currency) -> Request {
    Request { tenant, command: Command::Transfer(move_of(id, debit, credit, amount, currency, None)) }
}

fn hold(tenant: TenantId, id: u128, debit: u128, credit: u128, amount: u64) -> Request {
    Request {
        tenant,
        command: Command::Transfer(move_of(id, debit, credit, amount, usd(), Some(Hold { timeout_seconds: None }))),
    }
}

fn resolve(tenant: TenantId, id: u128, pending: u128, post: Option<Option<u64>>) -> Request {
    let op = match post {
        Some(amount) => TransferOp::Post { pending_id: TransferId(pending), amount },
        None => TransferOp::Void { pending_id: TransferId(pending) },
    };
    Request { tenant, command: Command::Transfer(NewTransfer { id: TransferId(id), linked: false, op }) }
}

fn close(tenant: TenantId, id: u128, currency: Currency) -> Request {
    Request { tenant, command: Command::CloseClearingWindow { window: ClearingWindowId(id), currency } }
}

fn closed(outcome: &Outcome) -> ClearingWindow {
    match outcome {
        Outcome::ClearingWindow(Ok(window)) => window.clone(),
        other => panic!("expected a closed window, got {other:?}"),
    }
}

fn refused(outcome: &Outcome) -> CommandError {
    match outcome {
        Outcome::ClearingWindow(Err(e)) => e.clone(),
        other => panic!("expected a refused close, got {other:?}"),
    }
}

/// (account, opening, debits, credits, net, closing) of every position.
fn figures(window: &ClearingWindow) -> Vec<(u128, i64, u64, u64, i64, i64)> {
    window.positions.iter().map(|p| (p.account.0, p.opening, p.debits, p.credits, p.net, p.closing)).collect()
}

#[test]
fn the_example_of_the_issue_nets_to_zero() {
    let mut l = Ledger::new();
    l.open_accounts(T1, usd(), &[0xA, 0xB, 0xC]);
    l.batch(&[pay(T1, 1, 0xA, 0xB, 100, usd())]);
    l.batch(&[pay(T1, 2, 0xB, 0xC, 60, usd())]);
    l.batch(&[pay(T1, 3, 0xC, 0xA, 30, usd())]);
    l.batch(&[pay(T1, 4, 0xA, 0xC, 20, usd())]);
    let window = closed(&l.batch(&[close(T1, 100, usd())])[0]);
    assert_eq!(
        figures(&window),
        vec![(0xA, 0, 120, 30, -90, -90), (0xB, 0, 60, 100, 40, 40), (0xC, 0, 30, 80, 50, 50)]
    );
    assert_eq!((window.sequence, window.opened_at, window.gross_volume), (1, 0, 210));
    assert!(window.closed_at > l.store.transfers.values().map(|t| t.timestamp).max().unwrap());

    // The next window opens with these closing balances.
    l.batch(&[pay(T1, 5, 0xB, 0xA, 40, usd())]);
    let next = closed(&l.batch(&[close(T1, 101, usd())])[0]);
    assert_eq!(figures(&next), vec![(0xA, -90, 0, 40, 40, -50), (0xB, 40, 40, 0, -40, 0)]);
    assert_eq!((next.sequence, next.opened_at, next.gross_volume), (2, window.closed_at, 40));
}

#[test]
fn the_boundary_within_one_batch_is_the_close_itself() {
    let mut l = Ledger::new();
    l.open_accounts(T1, usd(), &[0xA, 0xB]);
    let outcomes = l.batch(&[
        pay(T1, 1, 0xA, 0xB, 7, usd()),
        close(T1, 100, usd()),
        pay(T1, 2, 0xA, 0xB, 5, usd()),
        close(T1, 101, usd()),
        close(T1, 102, usd()),
        pay(T1, 3, 0xB, 0xA, 1, usd()),
    ]);
    let first = closed(&outcomes[1]);
    assert_eq!(figures(&first), vec![(0xA, 0, 7, 0, -7, -7), (0xB, 0, 0, 7, 7, 7)]);
    let second = closed(&outcomes[3]);
    assert_eq!(figures(&second), vec![(0xA, -7, 5, 0, -5, -12), (0xB, 7, 0, 5, 5, 12)]);
    assert_eq!((second.sequence, second.opened_at), (2, first.closed_at));
    assert_eq!(refused(&outcomes[4]), CommandError::WindowEmpty);
    let stamp = |id: u128| l.store.transfers[&TransferId(id)].timestamp;
    assert!(stamp(1) < first.closed_at && first.closed_at < stamp(2) && stamp(2) < second.closed_at);
    assert!(second.closed_at < stamp(3));
    // The transfer after the last close is in the window that is open now, and nowhere else.
    let third = closed(&l.batch(&[close(T1, 103, usd())])[0]);
    assert_eq!(figures(&third), vec![(0xA, -12, 0, 1, 1, -11), (0xB, 12, 1, 0, -1, 11)]);
    assert_eq!(third.sequence, 3);
}

#[test]
fn an_empty_window_is_refused_and_holds_count_only_when_posted() {
    let mut l = Ledger::new();
    l.open_accounts(T1, usd(), &[0xA, 0xB]);
    assert_eq!(refused(&l.batch(&[close(T1, 100, usd())])[0]), CommandError::WindowEmpty);
    // A hold and a void move no posted money.
    l.batch(&[hold(T1, 1, 0xA, 0xB, 50), hold(T1, 2, 0xA, 0xB, 30)]);
    l.batch(&[resolve(T1, 3, 2, None)]);
    assert_eq!(refused(&l.batch(&[close(T1, 101, usd())])[0]), CommandError::WindowEmpty);
    // Its post counts, at the amount posted.
    l.batch(&[resolve(T1, 4, 1, Some(Some(20)))]);
    let window = closed(&l.batch(&[close(T1, 102, usd())])[0]);
    assert_eq!(figures(&window), vec![(0xA, 0, 20, 0, -20, -20), (0xB, 0, 0, 20, 20, 20)]);
    assert_eq!(window.sequence, 1, "a refused close opens no window");
    assert!(l.windows.len() == 1);
}

#[test]
fn tenants_and_currencies_are_kept_apart() {
    let mut l = Ledger::new();
    l.open_accounts(T1, usd(), &[0xA, 0xB]);
    l.open_accounts(T1, eur(), &[0xE1, 0xE2]);
    l.open_accounts(T2, usd(), &[0x2A, 0x2B]);
    l.batch(&[pay(T1, 1, 0xA, 0xB, 10, usd()), pay(T1, 2, 0xE1, 0xE2, 20, eur()), pay(T2, 3, 0x2A, 0x2B, 30, usd())]);
    let outcomes = l.batch(&[close(T1, 100, usd()), close(T2, 101, eur())]);
    assert_eq!(figures(&closed(&outcomes[0])), vec![(0xA, 0, 10, 0, -10, -10), (0xB, 0, 0, 10, 10, 10)]);
    assert_eq!(refused(&outcomes[1]), CommandError::WindowEmpty);
    let eur_window = closed(&l.batch(&[close(T1, 102, eur())])[0]);
    assert_eq!((eur_window.sequence, eur_window.gross_volume), (1, 20));
    let t2 = closed(&l.batch(&[close(T2, 103, usd())])[0]);
    assert_eq!(figures(&t2), vec![(0x2A, 0, 30, 0, -30, -30), (0x2B, 0, 0, 30, 30, 30)]);
    assert_eq!(t2.sequence, 1);
}

#[test]
fn a_window_id_closes_once() {
    let mut l = Ledger::new();
    l.open_accounts(T1, usd(), &[0xA, 0xB]);
    l.batch(&[pay(T1, 1, 0xA, 0xB, 10, usd())]);
    closed(&l.batch(&[close(T1, 100, usd())])[0]);
    l.batch(&[pay(T1, 2, 0xA, 0xB, 10, usd())]);
    assert_eq!(refused(&l.batch(&[close(T1, 100, usd())])[0]), CommandError::AlreadyExists);
    let outcomes = l.batch(&[close(T1, 101, usd()), close(T1, 101, usd())]);
    closed(&outcomes[0]);
    assert_eq!(refused(&outcomes[1]), CommandError::AlreadyExists);
}

#[test]
fn recovery_loses_nothing_of_the_open_window() {
    let mut l = Ledger::new();
    l.open_accounts(T1, usd(), &[0xA, 0xB]);
    l.batch(&[pay(T1, 1, 0xA, 0xB, 10, usd())]);
    // A restart: the state is rebuilt from the store; the window is the store's.
    l.state = State::recover(l.store.accounts.values().cloned(), Vec::new(), Vec::new(), l.store.last_timestamp);
    l.batch(&[pay(T1, 2, 0xB, 0xA, 4, usd())]);
    let window = closed(&l.batch(&[close(T1, 100, usd())])[0]);
    assert_eq!(figures(&window), vec![(0xA, 0, 10, 4, -6, -6), (0xB, 0, 4, 10, 6, 6)]);
}

#[derive(Clone, Debug)]
enum Step {
    Pay { debit: u8, credit: u8, amount: u64, currency: bool },
    Hold { debit: u8, credit: u8, amount: u64 },
    Post { hold: u8, amount: Option<u64> },
    Close { currency: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..4u8, 0..4u8, 1..1_000_000u64, any::<bool>())
            .prop_map(|(debit, credit, amount, currency)| Step::Pay { debit, credit, amount, currency }),
        1 => (0..4u8, 0..4u8, 1..1_000_000u64).prop_map(|(debit, credit, amount)| Step::Hold { debit, credit, amount }),
        1 => (0..8u8, proptest::option::of(1..1_000_000u64)).prop_map(|(hold, amount)| Step::Post { hold, amount }),
        1 => any::<bool>().prop_map(|currency| Step::Close { currency }),
    ]
}

proptest! {
    /// Whatever the transfers and closes, in batches of any shape: every window nets to zero,
    /// its gross volume is its debits, each position's closing is its opening plus its net and
    /// its opening the account's previous closing; and the windows together hold every posted
    /// transfer exactly once (their volumes add up to all posted money).
    #[test]
    fn windows_partition_the_posted_money(steps in proptest::collection::vec(step(), 1..60), cut in 1..6usize) {
        let mut l = Ledger::new();
        l.open_accounts(T1, usd(), &[0, 1, 2, 3]);
        l.open_accounts(T1, eur(), &[10, 11, 12, 13]);
        let mut next_id = 1000u128;
        let mut holds = Vec::new();
        let requests: Vec<Request> = steps.iter().map(|s| {
            next_id += 1;
            let currency = |eur_: bool| if eur_ { eur() } else { usd() };
            match *s {
                Step::Pay { debit, credit, amount, currency: c } => {
                    let base = if c { 10 } else { 0 };
                    pay(T1, next_id, base + u128::from(debit), base + u128::from(credit), amount, currency(c))
                }
                Step::Hold { debit, credit, amount } => {
                    holds.push(next_id);
                    hold(T1, next_id, u128::from(debit), u128::from(credit), amount)
                }
                Step::Post { hold, amount } => {
                    let pending = holds.get(usize::from(hold) % holds.len().max(1)).copied().unwrap_or(1);
                    resolve(T1, next_id, pending, Some(amount))
                }
                Step::Close { currency: c } => close(T1, next_id, currency(c)),
            }
        }).collect();
        for chunk in requests.chunks(cut) {
            l.batch(chunk);
        }
        l.batch(&[close(T1, 1, usd()), close(T1, 2, eur())]);
        let mut last_closing = std::collections::HashMap::new();
        for w in &l.windows {
            prop_assert_eq!(w.positions.iter().map(|p| i128::from(p.net)).sum::<i128>(), 0);
            prop_assert_eq!(w.positions.iter().map(|p| p.debits).sum::<u64>(), w.gross_volume);
            for p in &w.positions {
                prop_assert_eq!(p.net, p.credits as i64 - p.debits as i64);
                prop_assert_eq!(p.closing, p.opening + p.net);
                prop_assert_eq!(p.opening, last_closing.get(&p.account).copied().unwrap_or(0));
                last_closing.insert(p.account, p.closing);
            }
        }
        for c in [usd(), eur()] {
            let posted: u64 = l.store.transfers.values()
                .filter(|t| t.currency == c && matches!(t.kind, TransferKind::Single | TransferKind::PostPending))
                .map(|t| t.amount).sum();
            let windows: u64 = l.windows.iter().filter(|w| w.currency == c).map(|w| w.gross_volume).sum();
            prop_assert_eq!(posted, windows);
        }
        for account in l.store.accounts.values() {
            prop_assert_eq!(last_closing.get(&account.id).copied().unwrap_or(0), account.balances.posted());
        }
    }
}
