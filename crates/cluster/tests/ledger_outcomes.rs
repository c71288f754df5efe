//! Outcomes the real ledger makes, every error text it can produce among them, cross the wire
//! unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use paycore_cluster::wire::{decode_reply, decode_submission, encode_reply, encode_submission};
use paycore_engine::{Reply, Submission};
use paycore_ledger::fx::{Quote, Rate};
use paycore_ledger::{
    AccountId, BatchEnd, BatchId, BatchItem, BatchStep, CaptureMethod, Command, CommandError, Currency, NewAccount,
    NewPayment, NewTransfer, Outcome, Overdraft, PaymentId, QuoteId, RefundId, Request, State, TenantId, TransferId,
    TransferOp,
};
use paycore_ledger::{AccountStatus, AccountUpdate, Change, Velocity, AMOUNT_MAX};
use std::collections::BTreeSet;

const TENANT: TenantId = TenantId(1);

fn account(id: u128, currency: &str, overdraft: Overdraft, reference: Option<&str>) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId(id),
        currency: Currency::from_code(currency).unwrap(),
        overdraft,
        reference: reference.map(str::to_owned),
        metadata: Some(r#"{"owner":"Zoë"}"#.into()),
    })
}

fn payment(id: u128, payer: u128, payee: u128, amount: u64, expires_in_seconds: u64) -> Command {
    Command::CreatePayment(NewPayment {
        id: PaymentId(id),
        payer: Some(AccountId(payer)),
        payee: AccountId(payee),
        amount,
        currency: Currency::from_code("EUR").unwrap(),
        capture_method: CaptureMethod::Manual,
        expires_in_seconds,
        description: Some("order 42".into()),
        fx_quote: None,
        merchant: None,
    })
}

fn fx_payment(id: u128, payer: u128, payee: u128, amount: u64, quote: u128) -> Command {
    let Command::CreatePayment(new) = payment(id, payer, payee, amount, 3_600) else { unreachable!() };
    Command::CreatePayment(NewPayment { fx_quote: Some(QuoteId(quote)), ..new })
}

/// The same payment without a payer (scan to pay).
fn scan_to_pay(command: Command) -> Command {
    let Command::CreatePayment(new) = command else { unreachable!() };
    Command::CreatePayment(NewPayment { payer: None, ..new })
}

/// A quote of 50.00 EUR → 54.21 USD (or the other way round), 0.13 of fee, open for an hour.
fn quote(id: u128, from: &str, to: &str) -> Quote {
    let now = common::NOW_MS * 1_000_000;
    Quote {
        id: QuoteId(id),
        tenant: TENANT,
        from: Currency::from_code(from).unwrap(),
        to: Currency::from_code(to).unwrap(),
        rate: Rate::parse("1.0842").unwrap(),
        source_amount: 5_000,
        target_amount: 5_421,
        fee: 13,
        created_at: now,
        expires_at: now + 3_600 * 1_000_000_000,
        used_by: None,
    }
}

fn update(account: u128, update: AccountUpdate) -> Command {
    Command::UpdateAccount { account: AccountId(account), update, actor: "key_Zoë".into() }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u64) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(debit),
            credit_account: AccountId(credit),
            amount,
            currency: Currency::from_code("EUR").unwrap(),
            hold: None,
        },
    }
}

#[test]
fn the_ledgers_own_outcomes_round_trip() {
    let (a, b, world, dollars, p, batch) = (10, 11, 12, 13, 50, BatchId(60));
    let commands = vec![
        account(a, "EUR", Overdraft::Limit(0), Some("DE89370400440532013000")),
        account(b, "EUR", Overdraft::Limit(100), None),
        account(world, "EUR", Overdraft::Unlimited, None),
        account(dollars, "USD", Overdraft::Limit(0), None),
        account(14, "EUR", Overdraft::Limit(u64::MAX), None),
        account(15, "EUR", Overdraft::Limit(0), Some("DE89370400440532013000")),
        account(a, "EUR", Overdraft::Limit(0), None),
        Command::Transfer(transfer(100, world, a, 100_000)),
        Command::Transfers(vec![transfer(101, a, b, 10), transfer(102, a, b, 1 << 40), transfer(103, a, a, 1)]),
        payment(40, a, b, 0, 60),
        payment(41, a, b, 500, 0),
        payment(42, 99, b, 500, 60),
        payment(43, a, dollars, 500, 60),
        payment(44, a, a, 500, 60),
        payment(p, a, b, 5_000, 3_600),
        payment(p, a, b, 5_000, 3_600),
        Command::ConfirmPayment(PaymentId(p)),
        Command::CapturePayment { payment: PaymentId(p), amount: Some(0) },
        Command::CapturePayment { payment: PaymentId(p), amount: Some(9_999) },
        Command::CapturePayment { payment: PaymentId(p), amount: Some(4_000) },
        Command::CancelPayment(PaymentId(p)),
        Command::ConfirmPayment(PaymentId(77)),
        Command::RefundPayment { payment: PaymentId(p), refund: RefundId(70), amount: Some(0), reason: None },
        Command::RefundPayment {
            payment: PaymentId(p),
            refund: RefundId(71),
            amount: Some(1_500),
            reason: Some("damaged".into()),
        },
        fx_payment(80, a, dollars, 5_000, 91),
        fx_payment(80, a, dollars, 4_000, 90),
        fx_payment(80, a, dollars, 5_000, 99),
        fx_payment(80, a, dollars, 5_000, 90),
        fx_payment(81, a, dollars, 5_000, 90),
        Command::ConfirmPayment(PaymentId(80)),
        scan_to_pay(fx_payment(82, a, dollars, 5_000, 91)),
        scan_to_pay(payment(83, a, b, 500, 60)),
        Command::ConfirmPayment(PaymentId(83)),
        Command::ScanPayment { payment: PaymentId(83), payer: AccountId(a) },
        Command::CapturePayment { payment: PaymentId(80), amount: Some(100) },
        Command::CapturePayment { payment: PaymentId(80), amount: None },
        Command::RefundPayment { payment: PaymentId(80), refund: RefundId(72), amount: None, reason: None },
        Command::BatchItems {
            batch,
            step: BatchStep::Pay,
            items: (0..3)
                .map(|index| BatchItem {
                    index,
                    payer: AccountId(world),
                    payee: AccountId(b),
                    amount: 250,
                    currency: Currency::from_code("EUR").unwrap(),
                    fx: None,
                    refund: None,
                })
                .collect(),
        },
        Command::EndBatch { batch, end: BatchEnd::Completed },
        update(99, AccountUpdate { status: Some(AccountStatus::Frozen), ..AccountUpdate::default() }),
        update(a, AccountUpdate { max_payment: Change::Set(AMOUNT_MAX + 1), ..AccountUpdate::default() }),
        update(a, AccountUpdate { daily_outflow: Change::Set(u64::MAX), ..AccountUpdate::default() }),
        update(
            a,
            AccountUpdate {
                velocity: Change::Set(Velocity { count: 0, window_seconds: 60 }),
                ..AccountUpdate::default()
            },
        ),
        update(
            a,
            AccountUpdate {
                velocity: Change::Set(Velocity { count: 5, window_seconds: 0 }),
                ..AccountUpdate::default()
            },
        ),
        update(a, AccountUpdate { status: Some(AccountStatus::Closed), ..AccountUpdate::default() }),
        update(
            a,
            AccountUpdate { daily_outflow: Change::Set(10), max_payment: Change::Remove, ..AccountUpdate::default() },
        ),
        payment(45, a, b, 500, 60),
        Command::ConfirmPayment(PaymentId(45)),
    ];
    let mut state = State::recover([], [], [], 0);
    state.insert_prefetched_quotes([quote(90, "EUR", "USD"), quote(91, "USD", "EUR")]);
    let mut now = common::NOW_MS * 1_000_000;
    let (mut params, mut messages, mut variants) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for command in commands {
        let request = Request { tenant: TENANT, command };
        let submission = Submission { request: request.clone(), idempotency: None };
        assert_eq!(decode_submission(&encode_submission(&submission)).unwrap(), submission);
        now += 1_000_000;
        let outcome = state.execute(&[request], now).pop().unwrap();
        let error = match &outcome {
            Outcome::Account(Err(e))
            | Outcome::Payment(Err(e))
            | Outcome::Refund(Err(e))
            | Outcome::AccountUpdated(Err(e)) => Some(e.clone()),
            _ => None,
        };
        match error {
            Some(CommandError::AccountNotFound { param } | CommandError::CurrencyMismatch { param }) => {
                params.insert(param);
            }
            Some(CommandError::InvalidField { param, message }) => {
                params.insert(param);
                messages.insert(message);
            }
            _ => {}
        }
        variants.insert(format!("{:?}", outcome).split(['(', ' ', '{']).next().unwrap().to_owned());
        let reply = Ok(Reply::Done(outcome));
        assert_eq!(decode_reply(&encode_reply(&reply)).unwrap(), reply);
    }
    // Every text the ledger makes came out of it here, and the strategies know them all.
    assert_eq!(params, common::PARAMS.into_iter().collect());
    assert_eq!(messages, common::MESSAGES.into_iter().collect());
    assert_eq!(variants.len(), 7, "{variants:?}");
}
