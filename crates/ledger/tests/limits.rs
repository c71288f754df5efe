//! Account status and limits, decided inside the batch: `max_payment`, `daily_outflow` (per
//! UTC day of the engine's clock), `velocity` (debits per rolling window), `frozen` and
//! `closed`; their place in the result codes' precedence; the history they need surviving a
//! restart; and a property test that no sequence of debits passes a daily limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check, move_of, usd, Sim, SECOND, START};
use paycore_ledger::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const DAY: u64 = 86_400;

#[test]
fn a_daily_outflow_limit_passes_equal_and_refuses_above_until_the_next_utc_day() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 5000 => ok
        update a daily=1000 => ok
        move 2 a b 600 => ok
        move 3 a b 400 => ok              # equal to the limit passes
        move 4 a b 1 => limit_exceeded
        move 5 w a 10 => ok               # credits do not count
        restart                           # the day's outflow is rebuilt from the transfers
        move 6 a b 1 => limit_exceeded
        skip 86400                        # the next UTC day
        move 7 a b 1000 => ok
        move 8 a b 1 => limit_exceeded
        update a daily=none => ok         # null removes the limit
        move 9 a b 1 => ok
        = a:3009 b:2001
        ",
    );
}

#[test]
fn max_payment_refuses_a_single_debit_above_it() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 5000 => ok
        update a max=500 => ok
        move 2 a b 501 => limit_exceeded
        move 3 a b 500 => ok
        move 4 a b 500 => ok              # no daily limit: only each debit is bounded
        = a:4000 b:1000
        ",
    );
}

#[test]
fn a_limit_set_during_the_day_counts_the_debits_made_before_it() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 5000 => ok
        move 2 a b 700 => ok
        update a daily=1000 => ok         # loads today's debits of a
        move 3 a b 301 => limit_exceeded
        {
          move 4 a b 100 => ok
          update a daily=900 => ok        # counts the debit of this same batch too
          move 5 a b 101 => limit_exceeded
          move 6 a b 100 => ok
        }
        = a:4100 b:900
        ",
    );
}

#[test]
fn velocity_counts_debits_in_a_rolling_window() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 5000 => ok
        update a velocity=2/60 => ok
        move 2 a b 1 => ok
        move 3 a b 1 => ok
        move 4 a b 1 => velocity_exceeded
        move 5 w a 1 => ok                # credits do not count
        restart                           # the window is rebuilt from the transfers
        move 6 a b 1 => velocity_exceeded
        skip 61
        move 7 a b 1 => ok
        move 8 a b 1 => ok
        move 9 a b 1 => velocity_exceeded
        = a:4997 b:4
        ",
    );
}

#[test]
fn a_frozen_account_takes_credits_and_gives_nothing_but_its_holds_back() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 500 => ok
        move 2 a b 100 hold => ok
        move 3 a b 100 hold => ok
        update a status=frozen => ok
        move 4 a b 1 => account_frozen
        move 5 w a 7 => ok                 # credits pass
        post 6 2 => account_frozen         # a post is a debit
        void 7 3 => ok                     # a void releases the hold
        pay P a b 10 => requires_confirmation
        confirm P => err:rejected(account_frozen)
        payment P requires_confirmation    # refused, not failed: it may be confirmed later
        update a status=active => ok
        confirm P => succeeded
        post 8 2 => ok
        = a:397 b:110
        ",
    );
}

#[test]
fn only_an_empty_account_closes_and_a_closed_account_takes_nothing() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 10 => ok
        update a status=closed => err:account_not_empty
        move 2 a b 5 hold => ok
        move 3 a w 5 => ok
        update a status=closed => err:account_not_empty   # a hold is open
        void 4 2 => ok
        move 5 a w 5 => ok
        update a status=closed => ok                      # zero balance (debits = credits)
        move 6 w a 1 => account_closed                    # no credits
        move 7 a b 1 => account_closed
        update a status=active => err:rejected(account_closed)
        update a max=5 => err:rejected(account_closed)
        = a:0 b:0
        ",
    );
}

#[test]
fn the_new_codes_take_their_place_in_the_precedence() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        account e EUR
        move 1 w a 100 => ok
        update a daily=50 velocity=1/60 => ok
        move 2 a b 200 => limit_exceeded       # before insufficient_funds
        move 3 a b 50 => ok
        move 4 a b 200 => limit_exceeded       # before velocity_exceeded
        move 5 a b 1 => limit_exceeded         # the day's 50 is spent
        update a daily=none => ok
        move 6 a b 1000 => velocity_exceeded   # before insufficient_funds
        update a status=frozen => ok
        move 7 a e 1 => currency_mismatch      # before account_frozen
        move 8 a b 1000 => account_frozen      # before the limits and the funds
        update b status=closed => err:account_not_empty
        move 9 b w 50 => ok
        update b status=closed => ok
        move 10 a b 1 => account_closed        # before account_frozen
        move 10 w a 1 => ok
        move 10 w a 1 => exists                # the id first
        ",
    );
}

#[test]
fn a_failed_linked_chain_gives_back_what_it_counted() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 5000 => ok
        update a daily=1000 velocity=2/60 => ok
        [
          move 2 a b 600 linked => linked_event_failed
          move 3 b w 999 => insufficient_funds
        ]
        move 4 a b 1000 => ok
        move 5 a b 1 => limit_exceeded
        = a:4000 b:1000
        ",
    );
}

#[test]
fn holds_count_when_placed_and_their_post_does_not_count_again() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 5000 => ok
        update a daily=1000 => ok
        move 2 a b 800 hold => ok
        move 3 a b 201 => limit_exceeded
        post 4 2 => ok                 # counted when held
        move 5 a b 200 => ok
        pay P a b 1 manual => requires_confirmation
        confirm P => err:limit_exceeded(daily_outflow,1000,1,0)
        = a:4000 b:1000
        ",
    );
}

#[test]
fn a_payment_over_a_limit_is_refused_with_the_details_and_stays_confirmable() {
    let sim = check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 5000 => ok
        update a daily=1000 => ok
        pay P a b 600 => requires_confirmation
        pay Q a b 600 => requires_confirmation
        confirm P => succeeded
        confirm Q => err:limit_exceeded(daily_outflow,1000,600,400)
        payment Q requires_confirmation
        update a daily=1200 => ok
        confirm Q => succeeded
        refund Q R 600 => succeeded     # the payee has no limits
        ",
    );
    let audit: Vec<&AuditRecord> = sim.history.iter().flat_map(|c| &c.audit).collect();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].before, r#"{"limits":{"daily_outflow":1000}}"#);
    assert_eq!(audit[1].after, r#"{"limits":{"daily_outflow":1200}}"#);
    assert_eq!(audit[1].actor, "key_test");
    assert!(audit[0].at < audit[1].at);
}

#[test]
fn a_single_transfer_reports_which_limit_and_what_is_left() {
    let mut sim = Sim::default();
    let t1 = TenantId(1);
    let open = |id: u128, overdraft| Request {
        tenant: t1,
        command: Command::CreateAccount(NewAccount {
            id: AccountId(id),
            currency: usd(),
            overdraft,
            reference: None,
            metadata: None,
        }),
    };
    sim.run(&[open(1, Overdraft::Unlimited), open(2, Overdraft::Limit(0)), open(3, Overdraft::Limit(0))]);
    sim.run(&[Request { tenant: t1, command: Command::Transfer(move_of(10, 1, 2, 1000, usd(), None)) }]);
    let update =
        AccountUpdate { max_payment: Change::Set(300), daily_outflow: Change::Set(500), ..AccountUpdate::default() };
    let out = sim.run(&[Request {
        tenant: t1,
        command: Command::UpdateAccount { account: AccountId(2), update, actor: "key_x".into() },
    }]);
    assert!(matches!(&out[0], Outcome::AccountUpdated(Ok(a)) if a.limits.daily_outflow == Some(500)));
    let transfer =
        |id, amount| Request { tenant: t1, command: Command::Transfer(move_of(id, 2, 3, amount, usd(), None)) };
    let out = sim.run(&[transfer(11, 301), transfer(12, 300), transfer(13, 201)]);
    let breach = |limit, value, requested, remaining| {
        Some(LimitBreach { account: AccountId(2), limit, value, requested, remaining })
    };
    assert_eq!(
        out[0],
        Outcome::Transfer {
            code: ResultCode::LimitExceeded,
            transfer: None,
            limit: breach(LimitKind::MaxPayment, 300, 301, 300)
        }
    );
    assert!(matches!(&out[1], Outcome::Transfer { code: ResultCode::Ok, limit: None, .. }));
    assert_eq!(
        out[2],
        Outcome::Transfer {
            code: ResultCode::LimitExceeded,
            transfer: None,
            limit: breach(LimitKind::DailyOutflow, 500, 201, 200)
        }
    );
    // Another tenant cannot see or change the account.
    let foreign = Request {
        tenant: TenantId(2),
        command: Command::UpdateAccount {
            account: AccountId(2),
            update: AccountUpdate { status: Some(AccountStatus::Frozen), ..AccountUpdate::default() },
            actor: "key_y".into(),
        },
    };
    assert_eq!(sim.run(&[foreign])[0], Outcome::AccountUpdated(Err(CommandError::AccountNotFound { param: "id" })));
    assert_eq!(sim.state.account(AccountId(2)).unwrap().status, AccountStatus::Active);
}

#[test]
fn batch_items_get_the_same_codes() {
    let mut sim = Sim::default();
    let t1 = TenantId(1);
    let open = |id: u128, overdraft| Request {
        tenant: t1,
        command: Command::CreateAccount(NewAccount {
            id: AccountId(id),
            currency: usd(),
            overdraft,
            reference: None,
            metadata: None,
        }),
    };
    sim.run(&[
        open(1, Overdraft::Unlimited),
        open(2, Overdraft::Limit(0)),
        open(3, Overdraft::Limit(0)),
        open(4, Overdraft::Limit(0)),
    ]);
    sim.run(&[Request { tenant: t1, command: Command::Transfer(move_of(10, 1, 2, 1000, usd(), None)) }]);
    let update = |account, update| Request {
        tenant: t1,
        command: Command::UpdateAccount { account: AccountId(account), update, actor: "k".into() },
    };
    sim.run(&[
        update(2, AccountUpdate { daily_outflow: Change::Set(250), ..AccountUpdate::default() }),
        update(4, AccountUpdate { status: Some(AccountStatus::Closed), ..AccountUpdate::default() }),
    ]);
    let item = |index, payee, amount| BatchItem {
        index,
        payer: AccountId(2),
        payee: AccountId(payee),
        amount,
        currency: usd(),
        fx: None,
        refund: None,
    };
    let out = sim.run(&[Request {
        tenant: t1,
        command: Command::BatchItems {
            batch: BatchId(7),
            step: BatchStep::Pay,
            items: vec![item(0, 3, 100), item(1, 3, 100), item(2, 3, 100), item(3, 4, 10), item(4, 3, 50)],
        },
    }]);
    assert_eq!(
        out[0],
        Outcome::Transfers(vec![
            ResultCode::Ok,
            ResultCode::Ok,
            ResultCode::LimitExceeded,
            ResultCode::AccountClosed,
            ResultCode::Ok
        ])
    );
}

#[derive(Clone, Debug)]
enum Step {
    Debit(u64),
    Advance(u64),
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u64..=400).prop_map(Step::Debit),
        2 => (0u64..=6 * 3600).prop_map(Step::Advance),
        1 => Just(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Whatever the debits, the waits and the restarts: per UTC day the debits that passed
    /// never add up past the limit, and a debit is refused only when it would pass it (equal
    /// passes).
    #[test]
    fn no_sequence_of_debits_passes_a_daily_limit(limit in 1u64..=1000, steps in prop::collection::vec(step(), 1..80)) {
        let t1 = TenantId(1);
        let mut sim = Sim::default();
        let open = |id: u128, overdraft| Request {
            tenant: t1,
            command: Command::CreateAccount(NewAccount { id: AccountId(id), currency: usd(), overdraft, reference: None, metadata: None }),
        };
        sim.run(&[open(1, Overdraft::Unlimited), open(2, Overdraft::Unlimited)]);
        let update = AccountUpdate { daily_outflow: Change::Set(limit), ..AccountUpdate::default() };
        sim.run(&[Request { tenant: t1, command: Command::UpdateAccount { account: AccountId(1), update, actor: "k".into() } }]);
        let mut spent: std::collections::BTreeMap<u64, u64> = Default::default();
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Debit(amount) => {
                    let id = 100 + i as u128;
                    let out = sim.run(&[Request { tenant: t1, command: Command::Transfer(move_of(id, 1, 2, *amount, usd(), None)) }]);
                    let Outcome::Transfer { code, transfer, .. } = &out[0] else { panic!("{out:?}") };
                    match code {
                        ResultCode::Ok => {
                            let t = transfer.as_ref().unwrap();
                            let day = spent.entry(t.timestamp / (DAY * SECOND)).or_default();
                            *day += amount;
                            prop_assert!(*day <= limit, "day total {} past {limit}", *day);
                        }
                        ResultCode::LimitExceeded => {
                            let day = spent.get(&(sim.now / (DAY * SECOND))).copied().unwrap_or(0);
                            prop_assert!(day + amount > limit, "refused {amount} with {day} of {limit} spent");
                        }
                        other => prop_assert!(false, "unexpected {other:?}"),
                    }
                }
                Step::Advance(seconds) => sim.now += seconds * SECOND,
                Step::Restart => sim.restart(),
            }
        }
        prop_assert!(sim.now >= START);
    }
}
