//! A tenant learns nothing of another tenant's transfers, even by reusing their ids.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::eur;
use paycore_ledger::{
    AccountId, Command, NewAccount, NewTransfer, Outcome, Overdraft, Request, ResultCode, State, TenantId, Transfer,
    TransferId,
};

/// Runs one command, with every transfer made so far loaded as the engine would load it.
fn run(state: &mut State, stored: &mut Vec<Transfer>, tenant: u128, command: Command) -> Outcome {
    state.insert_prefetched(stored.clone(), [], []);
    let outcome = state.execute(&[Request { tenant: TenantId(tenant), command }], 1_000).remove(0);
    stored.extend(state.take_changes().transfers);
    outcome
}

/// A move of `amount` EUR cents.
fn move_of(id: u128, debit: u128, credit: u128, amount: u64) -> NewTransfer {
    common::move_of(id, debit, credit, amount, eur(), None)
}

#[test]
fn another_tenants_transfer_id_is_never_exists() {
    let eur = eur();
    let mut state = State::default();
    let stored = &mut Vec::new();
    for (tenant, id) in [(1, 10), (1, 11), (2, 20), (2, 21)] {
        let open = NewAccount {
            id: AccountId(id),
            currency: eur,
            overdraft: Overdraft::Unlimited,
            reference: None,
            metadata: None,
        };
        run(&mut state, stored, tenant, Command::CreateAccount(open));
    }
    let mv = |debit, credit| move_of(99, debit, credit, 5);
    assert_eq!(
        run(&mut state, stored, 1, Command::Transfers(vec![mv(10, 11)])),
        Outcome::Transfers(vec![ResultCode::Ok])
    );
    // Tenant 2, the same id, its own accounts, or even tenant 1's: never `exists`.
    for (debit, credit) in [(20, 21), (10, 11)] {
        let outcome = run(&mut state, stored, 2, Command::Transfers(vec![mv(debit, credit)]));
        assert_eq!(outcome, Outcome::Transfers(vec![ResultCode::ExistsWithDifferentFields]));
    }
    assert_eq!(
        run(&mut state, stored, 1, Command::Transfers(vec![mv(10, 11)])),
        Outcome::Transfers(vec![ResultCode::Exists])
    );
    state.check_invariants().unwrap();
}

/// The single form answers with the transfer as committed, or with the one that existed; never
/// with another tenant's.
#[test]
fn a_single_transfer_answers_with_the_stored_transfer() {
    let eur = eur();
    let mut state = State::default();
    let stored = &mut Vec::new();
    for (tenant, id, overdraft) in
        [(1, 10, Overdraft::Unlimited), (1, 11, Overdraft::Limit(0)), (2, 20, Overdraft::Limit(0))]
    {
        let open = NewAccount { id: AccountId(id), currency: eur, overdraft, reference: None, metadata: None };
        run(&mut state, stored, tenant, Command::CreateAccount(open));
    }
    let first = run(&mut state, stored, 1, Command::Transfer(move_of(7, 10, 11, 5)));
    let committed = stored.last().cloned().unwrap();
    assert_eq!((committed.id, committed.amount), (TransferId(7), 5));
    assert_eq!(first, Outcome::Transfer { code: ResultCode::Ok, transfer: Some(committed.clone()), limit: None });

    // Again in a later batch (loaded from the store), then twice in one batch: the first one,
    // with its own timestamp.
    let again = run(&mut state, stored, 1, Command::Transfer(move_of(7, 10, 11, 5)));
    assert_eq!(again, Outcome::Transfer { code: ResultCode::Exists, transfer: Some(committed.clone()), limit: None });
    let request = |command| Request { tenant: TenantId(1), command };
    let both = state.execute(
        &[request(Command::Transfer(move_of(8, 10, 11, 3))), request(Command::Transfer(move_of(8, 10, 11, 3)))],
        2_000,
    );
    let made = state.take_changes().transfers;
    assert_eq!(made.len(), 1);
    assert_eq!(both[0], Outcome::Transfer { code: ResultCode::Ok, transfer: Some(made[0].clone()), limit: None });
    assert_eq!(both[1], Outcome::Transfer { code: ResultCode::Exists, transfer: Some(made[0].clone()), limit: None });
    stored.extend(made);

    // Refused: no transfer. Another tenant's id: refused, and its transfer stays unknown.
    let refused = run(&mut state, stored, 1, Command::Transfer(move_of(9, 11, 10, 1_000)));
    assert_eq!(refused, Outcome::Transfer { code: ResultCode::InsufficientFunds, transfer: None, limit: None });
    let other = run(&mut state, stored, 2, Command::Transfer(move_of(7, 10, 11, 5)));
    assert_eq!(other, Outcome::Transfer { code: ResultCode::ExistsWithDifferentFields, transfer: None, limit: None });
    state.check_invariants().unwrap();
}
