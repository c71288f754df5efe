//! Cross-currency payments in the state machine: the use of a quote (once, before it expires,
//! in its tenant, for its currencies and amount), the linked transfers through the FX accounts,
//! manual capture at the quoted amounts, cancel and expiry of both holds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paycore_ledger::fx::{self, fee_revenue_account, liquidity_account, Quote, Rate};
use paycore_ledger::*;

const T: TenantId = TenantId(7);
const OTHER: TenantId = TenantId(8);
const SECOND: u64 = 1_000_000_000;
const NOW: u64 = 1_700_000_000 * SECOND;
const PAYER: AccountId = AccountId(1);
const PAYEE: AccountId = AccountId(2);
const PAYEE_USD: AccountId = AccountId(3);

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn account(id: AccountId, tenant: TenantId, currency: &str, credits: u64) -> Account {
    Account {
        id,
        tenant,
        currency: c(currency),
        overdraft: Overdraft::Limit(0),
        reference: None,
        metadata: None,
        balances: Balances { credits_posted: credits, ..Balances::default() },
        created_at: 1,
        status: AccountStatus::Active,
        limits: Limits::default(),
    }
}

/// A USD payer with 1 000.00 (balanced by a funding account), a EUR payee, a USD payee.
fn state() -> State {
    let funding = Account {
        overdraft: Overdraft::Unlimited,
        balances: Balances { debits_posted: 100_000, ..Balances::default() },
        ..account(AccountId(99), T, "USD", 0)
    };
    State::recover(
        [funding, account(PAYER, T, "USD", 100_000), account(PAYEE, T, "EUR", 0), account(PAYEE_USD, T, "USD", 0)],
        [],
        [],
        0,
    )
}

/// 100.00 USD → 92.34 EUR at 0.9234, fee 0.25 USD, locked for a minute.
fn quote(id: u128) -> Quote {
    Quote {
        id: QuoteId(id),
        tenant: T,
        from: c("USD"),
        to: c("EUR"),
        rate: Rate::parse("0.9234").unwrap(),
        source_amount: 10_000,
        target_amount: 9_234,
        fee: 25,
        created_at: NOW,
        expires_at: NOW + 60 * SECOND,
        used_by: None,
    }
}

fn new_payment(id: u128, quote: Option<u128>, manual: bool) -> NewPayment {
    NewPayment {
        id: PaymentId(id),
        payer: Some(PAYER),
        payee: PAYEE,
        amount: 10_000,
        currency: c("USD"),
        capture_method: if manual { CaptureMethod::Manual } else { CaptureMethod::Automatic },
        expires_in_seconds: 600,
        description: None,
        fx_quote: quote.map(QuoteId),
        merchant: None,
    }
}

/// Runs one command as tenant `T` at `now`, after loading `quotes` as the engine would.
fn run(state: &mut State, command: Command, quotes: &[Quote], now: u64) -> (Outcome, ChangeSet) {
    let requests = [Request { tenant: T, command }];
    let wanted = state.prefetch(&requests);
    state.insert_prefetched_quotes(quotes.iter().filter(|q| wanted.quotes.contains(&q.id)).cloned());
    let outcome = state.execute(&requests, now).remove(0);
    state.check_invariants().unwrap();
    (outcome, state.take_changes())
}

fn balance(state: &State, id: AccountId) -> i128 {
    let b = state.account(id).unwrap().balances;
    i128::from(b.credits_posted) - i128::from(b.debits_posted)
}

fn pending(state: &State, id: AccountId) -> (u64, u64) {
    let b = state.account(id).unwrap().balances;
    (b.debits_pending, b.credits_pending)
}

fn payment(outcome: Outcome) -> Result<Payment, CommandError> {
    match outcome {
        Outcome::Payment(p) => p,
        other => panic!("not a payment outcome: {other:?}"),
    }
}

#[test]
fn an_automatic_payment_moves_the_quoted_amounts_through_the_liquidity_accounts() {
    let mut s = state();
    let (created, changes) = run(&mut s, Command::CreatePayment(new_payment(1, Some(5), false)), &[quote(5)], NOW);
    let created = payment(created).unwrap();
    let fx = created.fx.clone().unwrap();
    assert_eq!((fx.quote, fx.target_amount, fx.fee, fx.target_currency), (QuoteId(5), 9_234, 25, c("EUR")));
    assert_eq!(changes.quotes_used, vec![(QuoteId(5), PaymentId(1))]);
    // The three FX accounts are opened with the payment.
    let opened: Vec<_> = changes.new_accounts.iter().map(|a| a.id).collect();
    assert_eq!(
        opened,
        vec![liquidity_account(T, c("USD")), liquidity_account(T, c("EUR")), fee_revenue_account(T, c("USD"))]
    );

    let (confirmed, changes) = run(&mut s, Command::ConfirmPayment(PaymentId(1)), &[], NOW + SECOND);
    assert_eq!(payment(confirmed).unwrap().status, PaymentStatus::Succeeded);
    assert_eq!(changes.transfers.len(), 3);
    assert_eq!(balance(&s, PAYER), 100_000 - 10_000 - 25);
    assert_eq!(balance(&s, liquidity_account(T, c("USD"))), 10_000);
    assert_eq!(balance(&s, fee_revenue_account(T, c("USD"))), 25);
    assert_eq!(balance(&s, liquidity_account(T, c("EUR"))), -9_234);
    assert_eq!(balance(&s, PAYEE), 9_234);
}

#[test]
fn a_payer_short_of_the_fee_moves_nothing() {
    let mut s = state();
    let mut q = quote(5);
    q.source_amount = 100_000; // all the payer has, and the fee on top
    q.target_amount = 92_340;
    q.fee = 250;
    let new = NewPayment { amount: 100_000, ..new_payment(1, Some(5), false) };
    payment(run(&mut s, Command::CreatePayment(new), &[q], NOW).0).unwrap();
    let (confirmed, changes) = run(&mut s, Command::ConfirmPayment(PaymentId(1)), &[], NOW);
    let failed = payment(confirmed).unwrap();
    assert_eq!((failed.status, failed.failure_code), (PaymentStatus::Failed, Some(ResultCode::InsufficientFunds)));
    assert!(changes.transfers.is_empty());
    assert_eq!(balance(&s, PAYER), 100_000);
    assert_eq!(balance(&s, liquidity_account(T, c("USD"))), 0);
    assert_eq!(balance(&s, PAYEE), 0);
}

#[test]
fn a_held_payment_is_captured_at_the_quoted_amounts() {
    let mut s = state();
    payment(run(&mut s, Command::CreatePayment(new_payment(1, Some(5), true)), &[quote(5)], NOW).0).unwrap();
    let (held, _) = run(&mut s, Command::ConfirmPayment(PaymentId(1)), &[], NOW);
    assert_eq!(payment(held).unwrap().status, PaymentStatus::RequiresCapture);
    assert_eq!(pending(&s, PAYER), (10_025, 0));
    assert_eq!(pending(&s, liquidity_account(T, c("USD"))), (0, 10_000));
    assert_eq!(balance(&s, PAYEE), 0);

    let partial = Command::CapturePayment { payment: PaymentId(1), amount: Some(5_000) };
    let (refused, _) = run(&mut s, partial, &[], NOW);
    assert!(matches!(payment(refused), Err(CommandError::InvalidField { param: "amount", .. })));

    let capture = Command::CapturePayment { payment: PaymentId(1), amount: None };
    let (captured, changes) = run(&mut s, capture, &[], NOW + 30 * SECOND);
    let captured = payment(captured).unwrap();
    assert_eq!((captured.status, captured.amount_captured), (PaymentStatus::Succeeded, 10_000));
    assert_eq!(changes.transfers.len(), 3);
    assert_eq!(pending(&s, PAYER), (0, 0));
    assert_eq!(balance(&s, PAYER), 100_000 - 10_025);
    assert_eq!(balance(&s, fee_revenue_account(T, c("USD"))), 25);
    assert_eq!(balance(&s, liquidity_account(T, c("EUR"))), -9_234);
    assert_eq!(balance(&s, PAYEE), 9_234);

    // A refund is refused, with nothing moved (the finished payment is loaded, as the engine
    // would).
    s.insert_prefetched([], [], [captured]);
    let refund = Command::RefundPayment { payment: PaymentId(1), refund: RefundId(1), amount: None, reason: None };
    let (refused, changes) = run(&mut s, refund, &[], NOW + 31 * SECOND);
    assert!(matches!(refused, Outcome::Refund(Err(CommandError::InvalidField { param: "payment", .. }))));
    assert!(changes.transfers.is_empty());
}

#[test]
fn cancel_and_expiry_release_both_holds() {
    let mut s = state();
    for id in [1, 2] {
        let new = new_payment(id, Some(id + 10), true);
        payment(run(&mut s, Command::CreatePayment(new), &[quote(id + 10)], NOW).0).unwrap();
        payment(run(&mut s, Command::ConfirmPayment(PaymentId(id)), &[], NOW).0).unwrap();
    }
    assert_eq!(pending(&s, PAYER), (20_050, 0));
    let (cancelled, changes) = run(&mut s, Command::CancelPayment(PaymentId(1)), &[], NOW + SECOND);
    assert_eq!(payment(cancelled).unwrap().status, PaymentStatus::Cancelled);
    assert_eq!(changes.transfers.len(), 2);
    assert_eq!(pending(&s, PAYER), (10_025, 0));

    // The payment's deadline passes: both its holds expire, and it expires once.
    let (_, changes) = run(&mut s, Command::Transfers(vec![]), &[], NOW + 601 * SECOND);
    assert_eq!(pending(&s, PAYER), (0, 0));
    assert_eq!(pending(&s, fee_revenue_account(T, c("USD"))), (0, 0));
    assert_eq!(s.payment(PaymentId(2)).map(|p| p.status), None, "a finished payment leaves memory");
    assert_eq!(changes.payments.iter().filter(|p| p.id == PaymentId(2)).count(), 1);
    assert_eq!(changes.payments[0].status, PaymentStatus::Expired);
    assert_eq!(changes.events.len(), 1);
    assert_eq!(balance(&s, PAYER), 100_000);
}

#[test]
fn a_quote_is_used_once_before_it_expires() {
    let mut s = state();
    let q = quote(5);
    // Two payments with one quote in one batch: the second finds it used.
    let requests = [
        Request { tenant: T, command: Command::CreatePayment(new_payment(1, Some(5), false)) },
        Request { tenant: T, command: Command::CreatePayment(new_payment(2, Some(5), false)) },
    ];
    s.insert_prefetched_quotes([q.clone()]);
    let outcomes = s.execute(&requests, NOW);
    assert!(matches!(&outcomes[0], Outcome::Payment(Ok(_))));
    assert_eq!(outcomes[1], Outcome::Payment(Err(CommandError::QuoteExpired)));
    assert_eq!(s.take_changes().quotes_used, vec![(QuoteId(5), PaymentId(1))]);

    // In a later batch, the store's row says it is used.
    let used = Quote { used_by: Some(PaymentId(1)), ..q.clone() };
    let (outcome, _) = run(&mut s, Command::CreatePayment(new_payment(3, Some(5), false)), &[used], NOW);
    assert_eq!(payment(outcome), Err(CommandError::QuoteExpired));

    // At its expiry instant, a quote is no longer usable.
    let late = quote(6);
    let (outcome, changes) =
        run(&mut s, Command::CreatePayment(new_payment(4, Some(6), false)), &[late], NOW + 60 * SECOND);
    assert_eq!(payment(outcome), Err(CommandError::QuoteExpired));
    assert!(changes.quotes_used.is_empty() && changes.payments.is_empty());
}

#[test]
fn a_quote_must_match_its_tenant_currencies_and_amount() {
    let mut s = state();
    let mut cases: Vec<(NewPayment, Quote, CommandError)> = vec![
        (new_payment(1, Some(5), false), Quote { tenant: OTHER, ..quote(5) }, CommandError::QuoteNotFound),
        (
            NewPayment { payee: PAYEE_USD, ..new_payment(1, Some(5), false) },
            quote(5),
            CommandError::CurrencyMismatch { param: "payee_account" },
        ),
        (
            new_payment(1, Some(5), false),
            Quote { from: c("GBP"), ..quote(5) },
            CommandError::CurrencyMismatch { param: "currency" },
        ),
        (
            NewPayment { amount: 10_001, ..new_payment(1, Some(5), false) },
            quote(5),
            CommandError::InvalidField { param: "amount", message: "amount must equal the quote's source_amount" },
        ),
    ];
    // Without a quote, two currencies are a mismatch, never a silent 1:1.
    cases.push((new_payment(1, None, false), quote(5), CommandError::CurrencyMismatch { param: "payee_account" }));
    for (new, q, error) in cases {
        let (outcome, changes) = run(&mut s, Command::CreatePayment(new), &[q], NOW);
        assert_eq!(payment(outcome), Err(error));
        assert!(changes.quotes_used.is_empty() && changes.new_accounts.is_empty());
    }
    // Not loaded (no such quote in the store).
    let (outcome, _) = run(&mut s, Command::CreatePayment(new_payment(1, Some(9), false)), &[], NOW);
    assert_eq!(payment(outcome), Err(CommandError::QuoteNotFound));
}

mod properties {
    //! Any sequence of cross-currency payments, confirmations, captures, cancels and expiries
    //! keeps the books balanced in each currency, and the payee side never holds more than the
    //! quotes of the payments that succeeded.

    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Create { source: u64, fee: u64, manual: bool },
        Confirm(usize),
        Capture(usize),
        Cancel(usize),
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u64..60_000, 0u64..500, any::<bool>()).prop_map(|(source, fee, manual)| Step::Create {
                source,
                fee,
                manual
            }),
            (0usize..8).prop_map(Step::Confirm),
            (0usize..8).prop_map(Step::Capture),
            (0usize..8).prop_map(Step::Cancel),
            (1u64..400).prop_map(Step::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn books_balance_and_payees_get_exactly_what_succeeded(steps in proptest::collection::vec(step(), 1..30)) {
            let mut s = state();
            let mut now = NOW;
            let mut created: Vec<PaymentId> = Vec::new();
            let mut quoted: std::collections::HashMap<PaymentId, u64> = std::collections::HashMap::new();
            for (n, st) in steps.into_iter().enumerate() {
                let n = n as u128 + 1;
                let command = match st {
                    Step::Create { source, fee, manual } => {
                        let q = Quote {
                            source_amount: source,
                            target_amount: convert_target(source),
                            fee,
                            expires_at: now + 60 * SECOND,
                            ..quote(n)
                        };
                        quoted.insert(PaymentId(n), q.target_amount);
                        let new = NewPayment { amount: source, ..new_payment(n, Some(n), manual) };
                        let (outcome, _) = run(&mut s, Command::CreatePayment(new), &[q], now);
                        if matches!(outcome, Outcome::Payment(Ok(_))) {
                            created.push(PaymentId(n));
                        }
                        continue;
                    }
                    Step::Confirm(i) => match created.get(i) { Some(p) => Command::ConfirmPayment(*p), None => continue },
                    Step::Capture(i) => match created.get(i) {
                        Some(p) => Command::CapturePayment { payment: *p, amount: None },
                        None => continue,
                    },
                    Step::Cancel(i) => match created.get(i) { Some(p) => Command::CancelPayment(*p), None => continue },
                    Step::Wait(seconds) => {
                        now += seconds * SECOND;
                        Command::Transfers(vec![])
                    }
                };
                // A finished payment leaves memory: a later step on it is `payment_not_found`,
                // which changes nothing.
                let (_, changes) = run(&mut s, command, &[], now);
                for p in changes.payments {
                    if p.status == PaymentStatus::Succeeded {
                        prop_assert_eq!(p.fx.as_ref().map(|fx| fx.target_amount), quoted.get(&p.id).copied());
                    }
                }
            }
            // Per currency the books balance (`execute` asserts it); the payee holds what the
            // EUR liquidity account paid out, and USD went from the payer to liquidity and fees.
            let eur_liquidity = liquidity_account(T, c("EUR"));
            let payee = balance(&s, PAYEE);
            if s.account(eur_liquidity).is_some() {
                prop_assert_eq!(payee, -balance(&s, eur_liquidity));
            } else {
                prop_assert_eq!(payee, 0);
            }
            let usd_in = [liquidity_account(T, c("USD")), fee_revenue_account(T, c("USD"))]
                .iter()
                .filter(|id| s.account(**id).is_some())
                .map(|id| balance(&s, *id))
                .sum::<i128>();
            prop_assert_eq!(100_000 - balance(&s, PAYER), usd_in);
            s.check_invariants().unwrap();
        }
    }

    /// 0.9234 of the source, floored.
    fn convert_target(source: u64) -> u64 {
        paycore_ledger::fx::convert_source(source, Rate::parse("0.9234").unwrap(), c("USD"), c("EUR")).unwrap_or(1)
    }
}

/// A USD → EUR batch item of `amount` EUR cents at 0.9234 with a 25 bps fee, as validation
/// fixes it.
fn fx_item(index: u64, amount: u64) -> BatchItem {
    let (source_amount, fee) =
        fx::batch_item_fx(amount, Rate::parse("0.9234").unwrap(), c("USD"), c("EUR"), 25).unwrap();
    BatchItem {
        index,
        payer: PAYER,
        payee: PAYEE,
        amount,
        currency: c("EUR"),
        fx: Some(ItemFx { quote: QuoteId(77), source_amount, fee }),
        refund: None,
    }
}

/// [`run`], with the transfers committed before loaded as the engine loads them from the store
/// (the state keeps none in memory), and this run's added to them.
fn run_stored(state: &mut State, stored: &mut Vec<Transfer>, command: Command, now: u64) -> (Outcome, ChangeSet) {
    let requests = [Request { tenant: T, command: command.clone() }];
    let wanted = state.prefetch(&requests);
    state.insert_prefetched(stored.iter().filter(|t| wanted.transfers.contains(&t.id)).cloned(), [], []);
    let (outcome, changes) = run(state, command, &[], now);
    stored.extend(changes.transfers.iter().cloned());
    (outcome, changes)
}

fn items(batch: BatchId, step: BatchStep, items: Vec<BatchItem>) -> Command {
    Command::BatchItems { batch, step, items }
}

fn codes(outcome: Outcome) -> Vec<ResultCode> {
    match outcome {
        Outcome::Transfers(codes) => codes,
        other => panic!("not transfer codes: {other:?}"),
    }
}

#[test]
fn a_cross_currency_batch_item_pays_its_three_legs_once() {
    // 92.34 EUR at 0.9234 is exactly 100.00 USD; 25 bps of it is 0.25. 10.00 EUR costs
    // ⌈10.8295…⌉ = 10.83 USD and ⌈0.027075⌉ = 0.03 of fee.
    assert_eq!(fx_item(0, 9_234).fx.map(|f| (f.source_amount, f.fee)), Some((10_000, 25)));
    assert_eq!(fx_item(1, 1_000).fx.map(|f| (f.source_amount, f.fee)), Some((1_083, 3)));
    let (mut s, mut stored) = (state(), Vec::new());
    let batch = BatchId(0x1234 << 80);
    let command = items(batch, BatchStep::Pay, vec![fx_item(0, 9_234), fx_item(1, 1_000)]);
    let (outcome, changes) = run_stored(&mut s, &mut stored, command.clone(), NOW);
    assert_eq!(codes(outcome), vec![ResultCode::Ok, ResultCode::Ok]);
    assert_eq!(changes.transfers.len(), 6);
    assert_eq!(changes.batch_items.len(), 2);
    assert_eq!(balance(&s, PAYER), 100_000 - 10_000 - 25 - 1_083 - 3);
    assert_eq!(balance(&s, liquidity_account(T, c("USD"))), 11_083);
    assert_eq!(balance(&s, fee_revenue_account(T, c("USD"))), 28);
    assert_eq!(balance(&s, liquidity_account(T, c("EUR"))), -10_234);
    assert_eq!(balance(&s, PAYEE), 10_234);
    // The legs have the ids `paycore verify` looks for.
    let (target, fee) = fx::batch_item_fx_transfers(batch, 1);
    let ids: Vec<_> = changes.transfers.iter().map(|t| t.id).collect();
    assert!(ids.contains(&batch.item_transfer(1)) && ids.contains(&target) && ids.contains(&fee));

    // Sent again (a resumed run): every item exists, nothing moves, nothing is recorded.
    let (outcome, changes) = run_stored(&mut s, &mut stored, command, NOW + SECOND);
    assert_eq!(codes(outcome), vec![ResultCode::Exists, ResultCode::Exists]);
    assert!(changes.transfers.is_empty() && changes.batch_items.is_empty());
    assert_eq!(balance(&s, PAYEE), 10_234);
}

#[test]
fn a_cross_currency_item_short_of_its_fee_moves_no_leg() {
    let mut s = state();
    let batch = BatchId(0x1235 << 80);
    // 92 340 EUR cents cost exactly the payer's 1 000.00 USD, and the fee is on top.
    let (outcome, changes) = run(&mut s, items(batch, BatchStep::Pay, vec![fx_item(0, 92_340)]), &[], NOW);
    assert_eq!(codes(outcome), vec![ResultCode::InsufficientFunds]);
    assert!(changes.transfers.is_empty());
    assert_eq!(changes.batch_items[0].state, BatchItemState::Failed);
    assert_eq!(balance(&s, PAYER), 100_000);
    assert_eq!(balance(&s, liquidity_account(T, c("EUR"))), 0);
    assert_eq!(balance(&s, PAYEE), 0);
}

#[test]
fn atomic_cross_currency_items_hold_then_post_or_void_every_leg() {
    let (mut s, mut stored) = (state(), Vec::new());
    let batch = BatchId(0x1236 << 80);
    let held = vec![fx_item(0, 9_234), fx_item(1, 1_000)];
    let (outcome, changes) = run_stored(&mut s, &mut stored, items(batch, BatchStep::Hold, held.clone()), NOW);
    assert_eq!(codes(outcome), vec![ResultCode::Ok, ResultCode::Ok]);
    assert_eq!(changes.transfers.len(), 6, "the source, fee and payee holds");
    assert_eq!(pending(&s, PAYER), (11_111, 0));
    assert_eq!(pending(&s, liquidity_account(T, c("EUR"))), (10_234, 0));
    assert_eq!(pending(&s, PAYEE), (0, 10_234));
    assert_eq!(balance(&s, PAYEE), 0);

    let (outcome, changes) = run_stored(&mut s, &mut stored, items(batch, BatchStep::Post, held.clone()), NOW + SECOND);
    assert_eq!(codes(outcome), vec![ResultCode::Ok, ResultCode::Ok]);
    assert_eq!(changes.transfers.len(), 6, "three posts per item");
    assert_eq!(pending(&s, PAYER), (0, 0));
    assert_eq!(pending(&s, PAYEE), (0, 0));
    assert_eq!(balance(&s, PAYER), 100_000 - 11_111);
    assert_eq!(balance(&s, liquidity_account(T, c("EUR"))), -10_234);
    assert_eq!(balance(&s, PAYEE), 10_234);
    // Posting again finds the posts.
    let (outcome, changes) = run_stored(&mut s, &mut stored, items(batch, BatchStep::Post, held), NOW + SECOND);
    assert_eq!(codes(outcome), vec![ResultCode::Exists, ResultCode::Exists]);
    assert!(changes.transfers.is_empty());

    let other = BatchId(0x1237 << 80);
    let held = vec![fx_item(0, 9_234)];
    run(&mut s, items(other, BatchStep::Hold, held.clone()), &[], NOW);
    assert_eq!(pending(&s, PAYER), (10_025, 0));
    let (outcome, changes) = run(&mut s, items(other, BatchStep::Void, held), &[], NOW + SECOND);
    assert_eq!(codes(outcome), vec![ResultCode::Ok]);
    assert_eq!(changes.transfers.len(), 3);
    assert_eq!(pending(&s, PAYER), (0, 0));
    assert_eq!(pending(&s, PAYEE), (0, 0));
    assert_eq!(balance(&s, PAYER), 100_000 - 11_111);
    assert_eq!(balance(&s, PAYEE), 10_234);
}

#[test]
fn a_cross_currency_item_between_accounts_of_one_currency_is_refused() {
    let mut s = state();
    let item = BatchItem { payee: PAYEE_USD, currency: c("USD"), ..fx_item(0, 1_000) };
    let (outcome, changes) = run(&mut s, items(BatchId(0x1238 << 80), BatchStep::Pay, vec![item]), &[], NOW);
    assert_eq!(codes(outcome), vec![ResultCode::CurrencyMismatch]);
    assert!(changes.transfers.is_empty());
}

#[test]
fn a_closed_payee_refuses_a_cross_currency_item_at_its_hold() {
    // Refused in the first phase of an atomic batch, never after other items were posted.
    let mut s = state();
    let freeze = AccountUpdate { status: Some(AccountStatus::Closed), ..AccountUpdate::default() };
    run(&mut s, Command::UpdateAccount { account: PAYEE, update: freeze, actor: "test".into() }, &[], NOW);
    let (outcome, changes) =
        run(&mut s, items(BatchId(0x1239 << 80), BatchStep::Hold, vec![fx_item(0, 1_000)]), &[], NOW);
    assert_eq!(codes(outcome), vec![ResultCode::AccountClosed]);
    assert!(changes.transfers.is_empty());
    assert_eq!(pending(&s, PAYER), (0, 0));
    assert_eq!(pending(&s, liquidity_account(T, c("EUR"))), (0, 0));
}
