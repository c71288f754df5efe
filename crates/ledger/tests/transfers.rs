//! Transfers: result codes and their precedence, single-phase and two-phase transfers, expiry,
//! linked chains, overdraft limits and overflow. One script per behaviour (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::check;
use paycore_ledger::{ResultCode, TransferId, TransferKind, AMOUNT_MAX};

#[test]
fn result_codes_are_named_and_ordered() {
    for code in ResultCode::ALL {
        assert_eq!(ResultCode::parse(code.as_str()), Some(code));
    }
    assert_eq!(ResultCode::ALL[0], ResultCode::Ok);
    assert_eq!(ResultCode::ALL.last(), Some(&ResultCode::AmountExceedsRefundable));
    assert!(ResultCode::Exists.is_success() && ResultCode::Ok.is_success());
    assert!(ResultCode::ALL[2..].iter().all(|c| *c == ResultCode::Exists || !c.is_success()));
    for kind in [
        TransferKind::Single,
        TransferKind::Pending,
        TransferKind::PostPending,
        TransferKind::VoidPending,
        TransferKind::ExpirePending,
    ] {
        assert_eq!(TransferKind::parse(kind.as_str()), Some(kind));
    }
}

#[test]
fn single_phase_moves_money() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 100 => ok
        move 2 a b 30 => ok
        = w:-100 a:70 b:30
        ",
    );
}

#[test]
fn checks_without_lookup_come_first() {
    check(
        "
        account w USD unlimited
        account a USD
        move 1 w a 0 => invalid_amount
        move 2 w a 9223372036854775808 => invalid_amount
        move 3 a a 0 => invalid_amount              # invalid_amount beats same_account
        move 4 zz zz 5 => same_account              # same_account beats account_not_found
        move 5 a a 5 hold=0 => same_account         # same_account beats invalid_timeout
        move 6 w a 0 hold=0 => invalid_amount       # invalid_amount beats invalid_timeout
        move 7 w a 5 hold=0 => invalid_timeout
        move 8 w a 5 hold=31622401 => invalid_timeout
        move 9 zz a 5 hold=0 => invalid_timeout     # invalid_timeout beats account_not_found
        move 10 w a 5 hold=31622400 => ok           # the maximum is allowed
        move 10 w a 5 hold=0 => invalid_timeout     # invalid_timeout beats exists
        post 11 999 0 => invalid_amount             # invalid_amount beats pending_not_found
        post 12 10 9223372036854775808 => invalid_amount
        post 13 10 0 => invalid_amount
        = w:0/5/0 a:0/0/5
        ",
    );
}

#[test]
fn exists_and_exists_with_different_fields() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        account e EUR
        move 1 w a 100 => ok
        move 1 w a 100 => exists
        move 1 w a 101 => exists_with_different_fields
        move 1 w b 100 => exists_with_different_fields
        move 1 a w 100 => exists_with_different_fields
        move 1 w a 100 hold => exists_with_different_fields
        move 1 w a 100 EUR => exists_with_different_fields
        move 1 w zz 100 => exists_with_different_fields     # beats account_not_found
        move 1 w e 100 => exists_with_different_fields      # beats currency_mismatch
        post 1 77 => exists_with_different_fields           # beats pending_not_found
        void 1 77 => exists_with_different_fields
        = w:-100 a:100 b:0
        move 2 a b 100 => ok
        move 2 a b 100 => exists            # a retry after the balance changed: not insufficient_funds
        = a:0 b:100
        restart
        move 1 w a 100 => exists            # stored transfers are found after a restart (prefetch)
        move 2 a b 100 => exists
        = w:-100 a:0 b:100
        ",
    );
}

#[test]
fn exists_within_one_request_and_one_batch() {
    check(
        "
        account w USD unlimited
        account a USD
        [
          move 1 w a 5 => ok
          move 1 w a 5 => exists
          move 1 w a 6 => exists_with_different_fields
        ]
        {
          move 2 w a 7 => ok
          move 2 w a 7 => exists
        }
        = a:12
        ",
    );
}

#[test]
fn exists_for_holds_posts_and_voids() {
    check(
        "
        account w USD unlimited
        account a USD
        move 10 w a 50 hold=60 => ok
        move 10 w a 50 hold=60 => exists
        move 10 w a 50 hold => exists               # the timeout is not compared
        move 10 w a 50 => exists_with_different_fields
        post 11 10 => ok
        move 10 w a 50 hold => exists               # the posted hold is still found
        post 11 10 => exists                        # exists beats pending_already_posted
        post 11 10 50 => exists
        post 11 10 20 => exists_with_different_fields
        void 11 10 => exists_with_different_fields
        post 11 12 => exists_with_different_fields
        move 11 w a 50 => exists_with_different_fields
        = w:-50 a:50
        move 20 w a 30 hold => ok
        void 21 20 => ok
        void 21 20 => exists
        post 21 20 => exists_with_different_fields
        wait 60
        restart
        post 11 10 => exists
        void 21 20 => exists
        = w:-50 a:50
        ",
    );
}

#[test]
fn accounts_of_another_tenant_are_not_found() {
    check(
        "
        account w USD unlimited
        account a USD
        account x USD tenant=2
        account xw USD unlimited tenant=2
        move 1 w a 100 => ok
        move 2 xw x 100 as=2 => ok
        move 3 a x 10 => account_not_found
        move 4 x a 10 => account_not_found
        move 5 w a 10 as=2 => account_not_found
        move 6 a a 10 as=2 => same_account          # same_account beats account_not_found
        move 7 a zz 10 => account_not_found
        move 8 zz a 10 => account_not_found
        move 9 w a 10 hold => ok
        post 10 9 as=2 => pending_not_found          # a hold of another tenant
        void 10 9 as=2 => pending_not_found
        post 10 9 => ok
        = w:-110 a:110 x:100 xw:-100
        ",
    );
}

#[test]
fn account_creation_errors() {
    check(
        "
        account a USD ref=IBAN1
        account a USD => err:already_exists
        account a2 USD ref=IBAN1 => err:reference_taken
        account a3 USD ref=IBAN1 tenant=2           # references are unique per tenant
        account m USD limit=9223372036854775807
        account m2 USD limit=9223372036854775808 => err:invalid_field(overdraft_limit)
        ",
    );
}

#[test]
fn currency_mismatch() {
    check(
        "
        account w USD unlimited
        account e EUR
        account e2 EUR
        move 1 w e 5 => currency_mismatch
        move 2 e w 5 USD => currency_mismatch
        move 3 e e2 5 USD => currency_mismatch      # beats insufficient_funds
        move 4 e zz 5 USD => account_not_found      # account_not_found beats currency_mismatch
        move 5 e e2 5 => insufficient_funds
        = w:0 e:0 e2:0
        ",
    );
}

#[test]
fn pending_codes_and_their_order() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 100 => ok
        post 2 99 => pending_not_found
        void 2 99 => pending_not_found
        post 2 1 => pending_not_found               # a single-phase transfer is not a hold
        move 3 a b 60 hold => ok
        post 4 3 61 => amount_exceeds_pending
        post 4 3 => ok
        post 5 3 => pending_already_posted
        void 5 3 => pending_already_posted
        post 5 3 1000 => pending_already_posted      # beats amount_exceeds_pending
        move 6 a b 10 hold => ok
        void 7 6 => ok
        void 8 6 => pending_already_voided
        post 8 6 => pending_already_voided
        post 8 6 1000 => pending_already_voided
        move 9 a b 10 hold=5 => ok
        wait 5
        post 10 9 => pending_expired
        void 10 9 => pending_expired
        post 10 9 1000 => pending_expired            # beats amount_exceeds_pending
        hold 3 posted
        hold 6 voided
        hold 9 expired
        = w:-100 a:40 b:60
        ",
    );
}

#[test]
fn holds_count_against_available() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 100 => ok
        move 2 a b 60 hold => ok
        = a:100/60/0 b:0/0/60
        move 3 a b 41 => insufficient_funds
        move 4 a b 41 hold => insufficient_funds
        move 5 a b 40 => ok
        = a:60/60/0 b:40/0/60
        post 6 2 => ok
        = a:0 b:100
        ",
    );
}

#[test]
fn partial_post_releases_the_rest() {
    let sim = check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 100 => ok
        move 2 a b 30 hold => ok
        post 3 2 20 => ok
        = a:80 b:20
        hold 2 posted
        move 4 a b 80 => ok                         # the 10 not posted is available again
        = a:0 b:100
        ",
    );
    let post = &sim.store.transfers[&TransferId(3)];
    assert_eq!((post.kind, post.amount, post.pending_id), (TransferKind::PostPending, 20, Some(TransferId(2))));
}

#[test]
fn void_releases_the_hold() {
    let sim = check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 100 => ok
        move 2 a b 70 hold=60 => ok
        void 3 2 => ok
        = a:100 b:0
        hold 2 voided
        wait 120                                    # a voided hold does not expire again
        hold 2 voided
        = a:100 b:0
        ",
    );
    let void = &sim.store.transfers[&TransferId(3)];
    assert_eq!((void.kind, void.amount), (TransferKind::VoidPending, 70));
    assert!(sim.store.transfers.values().all(|t| t.kind != TransferKind::ExpirePending));
}

#[test]
fn holds_expire_at_their_timeout() {
    let sim = check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 100 => ok
        move 2 a b 30 hold=60 => ok
        move 3 a b 20 hold => ok                    # no timeout: held until posted or voided
        wait 59
        = a:100/50/0 b:0/0/50
        hold 2 pending
        wait 1                                      # exactly at the timeout
        hold 2 expired
        = a:100/20/0 b:0/0/20
        post 4 2 => pending_expired
        void 4 2 => pending_expired
        wait 31622400
        hold 3 pending
        post 5 3 => ok
        = a:80 b:20
        ",
    );
    let expiry: Vec<_> = sim.store.transfers.values().filter(|t| t.kind == TransferKind::ExpirePending).collect();
    assert_eq!(expiry.len(), 1);
    assert_eq!((expiry[0].pending_id, expiry[0].amount), (Some(TransferId(2)), 30));
}

#[test]
fn expiry_runs_before_the_requests_of_a_batch() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 100 => ok
        move 2 a b 100 hold=10 => ok
        skip 10                                     # no empty batch in between
        {
          post 3 2 => pending_expired
          move 4 a b 100 => ok                      # the released funds are available
        }
        = a:0 b:100
        ",
    );
}

#[test]
fn holds_expire_after_a_restart() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 100 => ok
        move 2 a b 30 hold=60 => ok
        restart
        = a:100/30/0 b:0/0/30
        wait 60
        hold 2 expired
        = a:100 b:0
        restart
        post 3 2 => pending_expired                 # the resolved hold is loaded by prefetch
        ",
    );
}

#[test]
fn linked_chain_fails_as_one() {
    let sim = check(
        "
        account w USD unlimited
        account a USD
        account b USD
        account c USD
        move 1 w a 100 => ok
        [
          move 2 a b 50 linked => linked_event_failed
          move 3 a c 40 hold=60 linked => linked_event_failed
          move 4 b c 1000 linked => insufficient_funds
          move 5 a c 10 => linked_event_failed
        ]
        = w:-100 a:100 b:0 c:0
        move 2 a b 50 => ok                         # ids of a failed chain are free again
        move 3 a c 40 hold=60 => ok
        = a:50/40/0 b:50 c:0/0/40
        ",
    );
    assert!(!sim.store.transfers.contains_key(&TransferId(5)));
}

#[test]
fn linked_chain_rollback_restores_holds() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        move 1 w a 100 => ok
        move 2 a b 60 hold=60 => ok
        [
          post 3 2 linked => linked_event_failed
          move 4 a b 41 => insufficient_funds       # after the post only 40 is left
        ]
        = a:100/60/0 b:0/0/60
        hold 2 pending
        [
          void 5 2 linked => linked_event_failed
          move 6 zz b 1 => account_not_found
        ]
        hold 2 pending
        = a:100/60/0 b:0/0/60
        wait 60                                     # the restored hold still expires
        hold 2 expired
        = a:100 b:0
        ",
    );
}

#[test]
fn linked_chain_ok() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        [
          move 1 w a 100 linked => ok
          move 2 a b 100 hold linked => ok          # uses what the chain's first leg brought
          post 3 2 60 => ok
        ]
        = w:-100 a:40 b:60
        ",
    );
}

#[test]
fn linked_chain_open_at_the_end() {
    check(
        "
        account w USD unlimited
        account a USD
        [
          move 1 w a 5 => ok
          move 2 w a 5 linked => linked_event_failed
          move 3 w a 5 linked => linked_event_chain_open
        ]
        move 4 w a 5 linked => linked_event_chain_open
        [
          move 5 w a 0 linked => invalid_amount
          move 6 w a 5 linked => linked_event_failed # linked_event_failed beats chain_open
        ]
        = w:-5 a:5
        ",
    );
}

#[test]
fn two_chains_and_unlinked_transfers_in_one_request() {
    check(
        "
        account w USD unlimited
        account a USD
        account b USD
        account c USD
        [
          move 1 w a 5 linked => ok
          move 2 w b 5 => ok
          move 3 a b 1000 linked => insufficient_funds
          move 4 w c 5 => linked_event_failed
          move 5 w c 7 => ok                        # an unlinked transfer after a failed chain
          move 6 w c 1 linked => ok
          move 7 w c 1 => ok
          move 8 w c 2 => ok
        ]
        = w:-21 a:5 b:5 c:11
        ",
    );
}

#[test]
fn failed_chain_frees_duplicate_ids() {
    check(
        "
        account w USD unlimited
        account a USD
        [
          move 1 w a 5 linked => linked_event_failed
          move 1 w a 5 linked => linked_event_failed
          move 2 a w 1000 => insufficient_funds
        ]
        move 1 w a 5 => ok
        = a:5
        ",
    );
}

#[test]
fn overdraft_limits() {
    check(
        "
        account w USD unlimited
        account z USD
        account n USD limit=100
        move 1 z w 1 => insufficient_funds           # limit 0: never below zero
        move 2 n w 100 => ok                         # limit 100: exactly 100 below zero
        move 3 n w 1 => insufficient_funds
        = n:-100 z:0
        move 4 w n 50 => ok
        move 5 n w 51 => insufficient_funds
        move 6 n w 50 => ok
        move 7 w n 100 => ok
        move 8 n w 61 hold => ok
        move 9 n w 40 => insufficient_funds          # available counts the hold
        move 10 n w 39 => ok
        = n:-39/61/0
        void 11 8 => ok
        = n:-39
        ",
    );
}

#[test]
fn unlimited_accounts_never_lack_funds() {
    check(
        "
        account w USD unlimited
        account a USD unlimited
        account b USD
        move 1 w b 9223372036854775806 => ok
        move 2 a b 1 hold => ok
        move 3 w a 1 => ok
        = w:-9223372036854775807 a:1/1/0 b:9223372036854775806/0/1
        ",
    );
}

#[test]
fn overflow_changes_nothing() {
    check(
        "
        account w USD unlimited
        account w2 USD unlimited
        account c USD
        account p USD
        move 1 w c 9223372036854775807 => ok
        move 2 w2 c 1 => overflow                    # c's credit counter is at the maximum
        move 3 p c 1 => overflow                     # overflow beats insufficient_funds
        move 4 w2 c 1 hold => ok                     # the pending counters are apart
        post 5 4 => overflow                         # posting would pass the maximum
        hold 4 pending
        = c:9223372036854775807/0/1 w2:0/1/0
        void 5 4 => ok
        move 6 w w2 1 => overflow                    # w's debit counter is at the maximum
        move 7 c w2 1 => ok
        move 8 w2 c 1 => overflow                    # counters only grow: still at the maximum
        move 9 w2 c 9223372036854775807 hold => ok
        move 10 w2 c 1 hold => overflow              # pending credits at the maximum
        = w:-9223372036854775807 w2:1/9223372036854775807/0 c:9223372036854775806/0/9223372036854775807
        ",
    );
    assert_eq!(AMOUNT_MAX, 9_223_372_036_854_775_807);
}
