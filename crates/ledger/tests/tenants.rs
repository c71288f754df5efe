//! A tenant learns nothing of another tenant's transfers, even by reusing their ids.

use paycore_ledger::{
    AccountId, Command, Currency, NewAccount, NewTransfer, Outcome, Overdraft, Request, ResultCode, State, TenantId,
    Transfer, TransferId, TransferOp,
};

/// Runs one command, with every transfer made so far loaded as the engine would load it.
fn run(state: &mut State, stored: &mut Vec<Transfer>, tenant: u128, command: Command) -> Outcome {
    state.insert_prefetched(stored.clone(), [], []);
    let outcome = state.execute(&[Request { tenant: TenantId(tenant), command }], 1_000).remove(0);
    stored.extend(state.take_changes().transfers);
    outcome
}

#[test]
fn another_tenants_transfer_id_is_never_exists() {
    let eur = Currency::from_code("EUR").unwrap();
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
    let mv = |debit, credit| NewTransfer {
        id: TransferId(99),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(debit),
            credit_account: AccountId(credit),
            amount: 5,
            currency: eur,
            hold: None,
        },
    };
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
