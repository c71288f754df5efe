//! Scan to pay: a payment made without a payer, paid by the one `ScanPayment` command that
//! binds the payer and confirms (see `common` for the script language).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::check;
use paycore_ledger::*;

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

/// The id the scripts give to the n-th payment name they mention (from 0).
fn payment_id(n: u128) -> PaymentId {
    PaymentId(0xbabe_0000 + n)
}

#[test]
fn a_scan_binds_the_payer_and_pays() {
    let sim = check(&script(
        "
        pay P - b 60 => requires_confirmation
        payment P requires_confirmation
        confirm P => err:payer_required             # only a scan names the payer
        = a:100 b:0
        scan P a => succeeded
        = a:40 b:60
        payment P succeeded captured=60
        scan P a => err:unexpected_state(succeeded)
        scan P c => err:unexpected_state(succeeded)
        restart
        refund P R 10 => succeeded                   # back to the payer the scan bound
        = a:50 b:50
        ",
    ));
    assert_eq!(sim.store.payments[&payment_id(0)].payer, Some(account_id(1)));
}

/// The id the scripts give to the n-th account name they mention (from 0: w, a, b...).
fn account_id(n: u128) -> AccountId {
    AccountId(0xacc0_0000 + n)
}

#[test]
fn a_refused_scan_leaves_the_payment_open_and_unbound() {
    let sim = check(&script(
        "
        pay P - b 101 => requires_confirmation
        scan P a => err:rejected(insufficient_funds) # not the shop's failure: nothing moves
        = a:100 b:0
        payment P requires_confirmation
        scan P e => err:currency_mismatch(payer_account)
        scan P zz => err:account_not_found(payer_account)
        scan P x => err:account_not_found(payer_account)   # another tenant's account
        scan P b => err:same_account
        = a:100 b:0
        restart
        scan P w => succeeded                        # another payer may still pay
        = w:-201 a:100 b:101
        ",
    ));
    assert_eq!(sim.store.payments[&payment_id(0)].payer, Some(account_id(0)));
}

#[test]
fn two_scans_in_one_batch_exactly_one_wins() {
    check(&script(
        "
        pay P - b 30 => requires_confirmation
        {
          scan P a => succeeded
          scan P c => err:unexpected_state(succeeded)
        }
        = a:70 b:30 c:0
        ",
    ));
}

#[test]
fn an_expired_code_pays_nothing() {
    check(&script(
        "
        pay P - b 10 expires=60 => requires_confirmation
        skip 61                                      # no batch ran at the deadline:
        scan P a => err:unexpected_state(expired)    # the scan's batch expires it first
        payment P expired
        = a:100 b:0
        ",
    ));
}

#[test]
fn another_tenant_cannot_scan() {
    check(&script(
        "
        pay P - b 10 => requires_confirmation
        scan P x as=2 => err:payment_not_found
        payment P requires_confirmation
        ",
    ));
}

#[test]
fn a_payment_made_with_a_payer_is_scanned_by_that_payer_only() {
    check(&script(
        "
        pay P a b 10 => requires_confirmation
        scan P c => err:payer_mismatch
        scan P a => succeeded
        = a:90 b:10
        ",
    ));
}

#[test]
fn a_manual_capture_payment_is_held_by_the_scan() {
    check(&script(
        "
        pay P - b 70 manual => requires_confirmation
        scan P a => requires_capture
        = a:100/70/0 b:0/0/70
        restart
        capture P 50 => succeeded
        = a:50 b:50
        ",
    ));
}

#[test]
fn a_payment_without_a_payer_may_take_a_quote() {
    let mut state = State::default();
    let eur = Currency::from_code("EUR").unwrap();
    let request = |command| Request { tenant: TenantId(1), command };
    let account = |id| {
        request(Command::CreateAccount(NewAccount {
            id: AccountId(id),
            currency: eur,
            overdraft: Overdraft::Limit(0),
            reference: None,
            metadata: None,
        }))
    };
    let pay = request(Command::CreatePayment(NewPayment {
        id: PaymentId(9),
        payer: None,
        payee: AccountId(2),
        amount: 100,
        currency: eur,
        capture_method: CaptureMethod::Automatic,
        expires_in_seconds: 60,
        description: None,
        fx_quote: Some(QuoteId(5)),
        merchant: None,
    }));
    let outcomes = state.execute(&[account(2), pay], 1_000);
    // Refused only because there is no such quote: the payer is the scan's to name.
    assert!(matches!(&outcomes[1], Outcome::Payment(Err(CommandError::QuoteNotFound))), "{:?}", outcomes[1]);
}
