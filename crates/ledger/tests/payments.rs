//! Real-time payments: create, confirm, capture, cancel, expiry and refunds, through the same
//! script helper as the transfers (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check, Sim, START};
use paycore_ledger::*;

/// The id the scripts give to the n-th payment name they mention (from 0).
fn payment_id(n: u128) -> PaymentId {
    PaymentId(0xbabe_0000 + n)
}

/// The hold (manual capture) or the transfer (automatic) that confirming a payment makes.
fn confirm_transfer(sim: &Sim, payment: PaymentId) -> TransferId {
    sim.store.payments[&payment].transfer.expect("a confirmed payment names its transfer")
}

const SETUP: &str = "
    account w USD unlimited
    account a USD
    account b USD
    account c USD
    account e EUR
    account x USD tenant=2
    move 1 w a 100 => ok
";

fn script(body: &str) -> String {
    format!("{SETUP}\n{body}")
}

#[test]
fn create_checks_its_fields() {
    check(&script(
        "
        pay P zz b 100 => err:account_not_found(payer_account)
        pay P a zz 100 => err:account_not_found(payee_account)
        pay P zz zz 100 => err:account_not_found(payer_account)
        pay P a x 100 => err:account_not_found(payee_account)      # another tenant's account
        pay P x b 100 => err:account_not_found(payer_account)
        pay P a b 100 as=2 => err:account_not_found(payer_account)
        pay P a e 100 => err:currency_mismatch(payee_account)
        pay P e b 100 USD => err:currency_mismatch(payer_account)
        pay P a a 100 => err:same_account
        pay P a b 0 => err:invalid_field(amount)
        pay P a b 9223372036854775808 => err:invalid_field(amount)
        pay P a b 100 expires=0 => err:invalid_field(expires_in_seconds)
        pay P a b 100 expires=31622401 => err:invalid_field(expires_in_seconds)
        pay P a b 100 expires=31622400 => requires_confirmation
        pay P a b 100 => err:already_exists
        confirm Q => err:payment_not_found
        confirm P as=2 => err:payment_not_found
        cancel P as=2 => err:payment_not_found
        capture P as=2 => err:payment_not_found
        refund P R as=2 => err:payment_not_found
        = a:100 b:0
        ",
    ));
}

#[test]
fn automatic_confirm_moves_the_money() {
    let sim = check(&script(
        "
        pay P a b 60 => requires_confirmation
        = a:100 b:0                                  # creating moves nothing
        payment P requires_confirmation captured=0
        confirm P => succeeded
        = a:40 b:60
        payment P succeeded captured=60 refunded=0
        confirm P => err:unexpected_state(succeeded)
        capture P => err:unexpected_state(succeeded)
        cancel P => err:unexpected_state(succeeded)
        = a:40 b:60
        ",
    ));
    let t = &sim.store.transfers[&confirm_transfer(&sim, payment_id(0))];
    assert_eq!((t.kind, t.amount), (TransferKind::Single, 60));
}

#[test]
fn confirm_without_funds_fails_and_moves_nothing() {
    let sim = check(&script(
        "
        pay P a b 101 => requires_confirmation
        confirm P => failed(insufficient_funds)
        = a:100 b:0
        payment P failed captured=0
        confirm P => err:unexpected_state(failed)
        capture P => err:unexpected_state(failed)
        refund P R => err:unexpected_state(failed)
        ",
    ));
    assert_eq!(sim.store.payments[&payment_id(0)].transfer, None);
    assert_eq!(sim.store.payments[&payment_id(0)].failure_code, Some(ResultCode::InsufficientFunds));
}

#[test]
fn confirm_twice_in_one_batch() {
    check(&script(
        "
        pay P a b 10 => requires_confirmation
        {
          confirm P => succeeded
          confirm P => err:unexpected_state(succeeded)
        }
        = a:90 b:10
        ",
    ));
}

#[test]
fn funds_cover_only_some_payments() {
    check(&script(
        "
        pay P1 a b 30 => requires_confirmation
        pay P2 a b 30 => requires_confirmation
        pay P3 a c 30 => requires_confirmation
        pay P4 a c 30 => requires_confirmation
        pay P5 a b 10 => requires_confirmation
        {
          confirm P1 => succeeded
          confirm P2 => succeeded
          confirm P3 => succeeded
          confirm P4 => failed(insufficient_funds)
          confirm P5 => succeeded
        }
        = a:0 b:70 c:30
        ",
    ));
}

#[test]
fn manual_capture_holds_then_captures_part() {
    let sim = check(&script(
        "
        pay P a b 80 manual => requires_confirmation
        confirm P => requires_capture
        = a:100/80/0 b:0/0/80
        move 2 a c 21 => insufficient_funds          # the hold counts
        capture P 81 => err:amount_too_large(80)
        capture P 0 => err:invalid_field(amount)
        capture P 50 => succeeded
        = a:50 b:50
        payment P succeeded captured=50
        capture P => err:unexpected_state(succeeded)
        cancel P => err:unexpected_state(succeeded)
        refund P R1 51 => err:amount_too_large(50)  # refunds are bounded by what was captured
        refund P R1 => succeeded
        = a:100 b:0
        payment P succeeded captured=50 refunded=50
        ",
    ));
    let hold = confirm_transfer(&sim, payment_id(0));
    assert_eq!(sim.store.holds[&hold].status, HoldStatus::Posted);
    assert_eq!(sim.store.holds[&hold].payment, Some(payment_id(0)));
}

#[test]
fn manual_capture_of_everything() {
    check(&script(
        "
        pay P a b 80 manual => requires_confirmation
        confirm P => requires_capture
        capture P => succeeded
        = a:20 b:80
        payment P succeeded captured=80
        ",
    ));
}

#[test]
fn cancel_voids_the_hold() {
    let sim = check(&script(
        "
        pay P a b 80 manual => requires_confirmation
        capture P => err:unexpected_state(requires_confirmation)
        confirm P => requires_capture
        cancel P => cancelled
        = a:100 b:0
        payment P cancelled captured=0
        capture P => err:unexpected_state(cancelled)
        confirm P => err:unexpected_state(cancelled)
        pay Q a b 10 => requires_confirmation
        cancel Q => cancelled                        # before confirmation: nothing to release
        confirm Q => err:unexpected_state(cancelled)
        wait 7200                                    # a cancelled payment does not expire
        payment Q cancelled
        payment P cancelled
        ",
    ));
    let hold = confirm_transfer(&sim, payment_id(0));
    assert_eq!(sim.store.holds[&hold].status, HoldStatus::Voided);
}

#[test]
fn unconfirmed_payment_expires() {
    check(&script(
        "
        pay P a b 10 expires=60 => requires_confirmation
        wait 59
        payment P requires_confirmation
        wait 2
        payment P expired
        confirm P => err:unexpected_state(expired)
        cancel P => err:unexpected_state(expired)
        = a:100 b:0
        ",
    ));
}

#[test]
fn held_payment_expires_and_releases_the_funds() {
    let sim = check(&script(
        "
        pay P a b 70 manual expires=60 => requires_confirmation
        confirm P => requires_capture
        wait 59
        = a:100/70/0 b:0/0/70
        wait 2
        payment P expired captured=0
        = a:100 b:0
        capture P => err:unexpected_state(expired)
        cancel P => err:unexpected_state(expired)
        move 2 a c 100 => ok
        ",
    ));
    let hold = confirm_transfer(&sim, payment_id(0));
    assert_eq!(sim.store.holds[&hold].status, HoldStatus::Expired);
    let expiry: Vec<_> = sim.store.transfers.values().filter(|t| t.kind == TransferKind::ExpirePending).collect();
    assert_eq!(expiry.len(), 1);
    assert_eq!((expiry[0].pending_id, expiry[0].amount), (Some(hold), 70));
}

#[test]
fn capture_in_the_batch_where_the_payment_expires() {
    check(&script(
        "
        pay P a b 70 manual expires=60 => requires_confirmation
        confirm P => requires_capture
        skip 61
        capture P => err:unexpected_state(expired)   # expiry runs first in a batch
        = a:100 b:0
        ",
    ));
}

#[test]
fn payments_expire_after_a_restart() {
    check(&script(
        "
        pay P a b 10 expires=60 => requires_confirmation
        pay Q a b 70 manual expires=60 => requires_confirmation
        confirm Q => requires_capture
        restart
        = a:100/70/0 b:0/0/70
        wait 61
        payment P expired
        payment Q expired
        = a:100 b:0
        ",
    ));
}

#[test]
fn capture_after_a_restart() {
    check(&script(
        "
        pay Q a b 70 manual => requires_confirmation
        confirm Q => requires_capture
        restart
        capture Q 20 => succeeded
        = a:80 b:20
        restart
        refund Q R 5 => succeeded                    # the finished payment is prefetched
        = a:85 b:15
        payment Q succeeded captured=20 refunded=5
        ",
    ));
}

#[test]
fn refunds_partial_total_and_beyond() {
    let sim = check(&script(
        "
        pay P a b 100 => requires_confirmation
        refund P R0 => err:unexpected_state(requires_confirmation)
        confirm P => succeeded
        refund P R1 30 => succeeded
        = a:30 b:70
        refund P R2 71 => err:amount_too_large(70)
        refund P R2 0 => err:invalid_field(amount)
        refund P R3 => succeeded                     # all that is left: 70
        payment P succeeded captured=100 refunded=100
        refund P R4 => err:amount_too_large(0)
        refund P R4 1 => err:amount_too_large(0)
        = a:100 b:0
        ",
    ));
    let refunds: Vec<(u64, RefundStatus)> = sim.store.refunds.iter().map(|r| (r.amount, r.status)).collect();
    assert_eq!(refunds, [(30, RefundStatus::Succeeded), (70, RefundStatus::Succeeded)]);
    for r in &sim.store.refunds {
        let t = &sim.store.transfers[&r.transfer];
        assert_eq!(
            (t.debit_account, t.credit_account, t.amount),
            (sim.store.payments[&r.payment].payee, sim.store.payments[&r.payment].payer.unwrap(), r.amount)
        );
    }
}

#[test]
fn refund_fails_when_the_payee_spent_the_money() {
    let sim = check(&script(
        "
        pay P a b 100 => requires_confirmation
        confirm P => succeeded
        move 2 b c 60 => ok
        refund P R1 50 => failed(insufficient_funds)
        payment P succeeded captured=100 refunded=0
        = a:0 b:40 c:60
        refund P R2 40 => succeeded
        payment P succeeded captured=100 refunded=40
        = a:40 b:0 c:60
        ",
    ));
    let failed = &sim.store.refunds[0];
    assert_eq!((failed.status, failed.failure_code), (RefundStatus::Failed, Some(ResultCode::InsufficientFunds)));
    assert!(!sim.store.transfers.contains_key(&failed.transfer), "a failed refund makes no transfer");
}

#[test]
fn finished_payments_are_prefetched() {
    let mut sim = Sim::default();
    let tenant = TenantId(1);
    let usd = common::usd();
    let (w, a, b) = (AccountId(1), AccountId(2), AccountId(3));
    let open = |id, overdraft| Request {
        tenant,
        command: Command::CreateAccount(NewAccount { id, currency: usd, overdraft, reference: None, metadata: None }),
    };
    sim.run(&[open(w, Overdraft::Unlimited), open(a, Overdraft::Limit(0)), open(b, Overdraft::Limit(0))]);
    let pay = PaymentId(7);
    let new = NewPayment {
        id: pay,
        payer: Some(w),
        payee: b,
        amount: 100,
        currency: usd,
        capture_method: CaptureMethod::Automatic,
        expires_in_seconds: 60,
        description: Some("tea".to_owned()),
        fx_quote: None,
        merchant: None,
    };
    sim.run(&[Request { tenant, command: Command::CreatePayment(new) }]);
    sim.run(&[Request { tenant, command: Command::ConfirmPayment(pay) }]);
    assert!(sim.state.payment(pay).is_none(), "a finished payment leaves memory");

    let refund = [Request {
        tenant,
        command: Command::RefundPayment { payment: pay, refund: RefundId(9), amount: Some(10), reason: None },
    }];
    let wanted = sim.state.prefetch(&refund);
    assert_eq!(wanted, Prefetch { payments: vec![pay], ..Prefetch::default() });

    sim.prefetch = false;
    assert_eq!(sim.run(&refund), [Outcome::Refund(Err(CommandError::PaymentNotFound))]);
    sim.prefetch = true;
    let Outcome::Refund(Ok((r, p))) = &sim.run(&refund)[0] else { panic!("refund refused") };
    assert_eq!((r.status, r.amount, p.amount_refunded), (RefundStatus::Succeeded, 10, 10));
    assert_eq!(p.description.as_deref(), Some("tea"));
    assert_eq!(sim.balances(b).posted(), 90);
    assert!(sim.state.payment(pay).is_none(), "and leaves again after the batch");
    assert!(START < p.updated_at);
}

#[test]
fn a_payments_hold_is_not_resolved_by_a_client_transfer() {
    let mut sim = check(&script(
        "
        pay P a b 80 manual => requires_confirmation
        confirm P => requires_capture
        ",
    ));
    let hold = confirm_transfer(&sim, payment_id(0));
    let client = |id: u128, op: TransferOp| Request {
        tenant: TenantId(1),
        command: Command::Transfers(vec![NewTransfer { id: TransferId(id), linked: false, op }]),
    };
    let out = sim.run(&[
        client(50, TransferOp::Post { pending_id: hold, amount: None }),
        client(51, TransferOp::Void { pending_id: hold }),
        client(52, TransferOp::Post { pending_id: hold, amount: Some(0) }),
    ]);
    assert_eq!(
        out,
        [
            Outcome::Transfers(vec![ResultCode::PendingNotFound]),
            Outcome::Transfers(vec![ResultCode::PendingNotFound]),
            Outcome::Transfers(vec![ResultCode::InvalidAmount]),
        ]
    );
    // The payment still owns its hold.
    let out = sim.run(&[Request {
        tenant: TenantId(1),
        command: Command::CapturePayment { payment: payment_id(0), amount: Some(30) },
    }]);
    let [Outcome::Payment(Ok(p))] = &out[..] else { panic!("{out:?}") };
    assert_eq!((p.status, p.amount_captured), (PaymentStatus::Succeeded, 30));
}

/// A refunds batch's items run the payments' one refund path: the API's rules, a refund
/// recorded with its reason and `payment.refunded`, ids derived from batch and index, so a
/// chunk sent again (a resumed run, a redelivered message) finds each refund made (`exists`)
/// and refunds nothing twice.
#[test]
fn refund_batch_items_refund_once_whatever_is_resent() {
    let mut sim = Sim::default();
    let tenant = TenantId(1);
    let usd = common::usd();
    let (w, a, b) = (AccountId(1), AccountId(2), AccountId(3));
    let open = |id, overdraft| Request {
        tenant,
        command: Command::CreateAccount(NewAccount { id, currency: usd, overdraft, reference: None, metadata: None }),
    };
    sim.run(&[open(w, Overdraft::Unlimited), open(a, Overdraft::Limit(0)), open(b, Overdraft::Limit(0))]);
    let (p1, p2, pending) = (PaymentId(7), PaymentId(8), PaymentId(9));
    for (id, amount) in [(p1, 100), (p2, 50), (pending, 10)] {
        let new = NewPayment {
            id,
            payer: Some(w),
            payee: b,
            amount,
            currency: usd,
            capture_method: CaptureMethod::Automatic,
            expires_in_seconds: 60,
            description: None,
            fx_quote: None,
            merchant: None,
        };
        sim.run(&[Request { tenant, command: Command::CreatePayment(new) }]);
    }
    sim.run(&[Request { tenant, command: Command::ConfirmPayment(p1) }]);
    sim.run(&[Request { tenant, command: Command::ConfirmPayment(p2) }]);
    assert_eq!(sim.balances(b).posted(), 150);

    let batch = BatchId(time_ordered(START / 1_000_000, 5 << 42));
    let refund = |index, payment: u128, amount, reason: Option<&str>| BatchItem {
        index,
        payer: b,
        payee: w,
        amount,
        currency: usd,
        fx: None,
        refund: Some(ItemRefund { payment: PaymentId(payment), reason: reason.map(str::to_owned) }),
    };
    let items = vec![
        refund(0, 7, 30, Some("damaged")),
        refund(1, 7, 80, None),
        refund(2, 999, 5, None),
        refund(3, 8, 50, None),
        refund(4, 9, 10, None),
        refund(5, 7, 0, None),
    ];
    let chunk = |step| [Request { tenant, command: Command::BatchItems { batch, step, items: items.clone() } }];
    use ResultCode::*;
    let first = sim.run(&chunk(BatchStep::Pay));
    let codes = [Ok, AmountExceedsRefundable, PaymentNotFound, Ok, PaymentNotRefundable, InvalidAmount];
    assert_eq!(first, [Outcome::Transfers(codes.to_vec())]);
    let changes = sim.history.last().unwrap();
    let results: Vec<(u64, BatchItemState, ResultCode)> =
        changes.batch_items.iter().map(|r| (r.index, r.state, r.code)).collect();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0], (0, BatchItemState::Succeeded, Ok));
    assert_eq!(results[1], (1, BatchItemState::Failed, AmountExceedsRefundable));
    let refunded: Vec<u128> =
        changes.events.iter().filter(|e| e.1 == EventKind::PaymentRefunded).map(|e| e.2).collect();
    assert_eq!(refunded, [7, 8]);
    // Only the refunds made are recorded, with the ids the batch and index give them.
    let made: Vec<(RefundId, PaymentId, u64, TransferId, Option<&str>)> =
        sim.store.refunds.iter().map(|r| (r.id, r.payment, r.amount, r.transfer, r.reason.as_deref())).collect();
    assert_eq!(
        made,
        [
            (batch.item_refund(0), p1, 30, batch.item_transfer(0), Some("damaged")),
            (batch.item_refund(3), p2, 50, batch.item_transfer(3), None),
        ]
    );
    assert_eq!((sim.store.payments[&p1].amount_refunded, sim.store.payments[&p2].amount_refunded), (30, 50));
    assert_eq!((sim.balances(b).posted(), sim.balances(w).posted()), (70, -70));

    // The same chunk again, after a restart: the refunds made are `exists`, nothing moves.
    sim.restart();
    let again = sim.run(&chunk(BatchStep::Pay));
    let codes = [Exists, AmountExceedsRefundable, PaymentNotFound, Exists, PaymentNotRefundable, InvalidAmount];
    assert_eq!(again, [Outcome::Transfers(codes.to_vec())]);
    let indexes: Vec<u64> = sim.history.last().unwrap().batch_items.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [1, 2, 4, 5], "no second result for a refund made");
    assert_eq!(sim.store.refunds.len(), 2);
    assert_eq!((sim.store.payments[&p1].amount_refunded, sim.store.payments[&p2].amount_refunded), (30, 50));
    assert_eq!(sim.balances(b).posted(), 70);
    // A refund is no hold: an atomic batch's steps refuse refund items.
    let held = sim.run(&[Request {
        tenant,
        command: Command::BatchItems {
            batch: BatchId(batch.0 + (1 << 42)),
            step: BatchStep::Hold,
            items: items.clone(),
        },
    }]);
    assert_eq!(held, [Outcome::Transfers(vec![PaymentNotRefundable; 6])]);
    assert_eq!(sim.balances(b).posted(), 70);
}
