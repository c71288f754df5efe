//! What the store's tests share: opening a store, driving it with the real ledger state
//! machine, and the fixtures (EUR, a move).
//!
//! Every place these tests open a store is [`open_store`], through `paycore_store::open`, the
//! one way in: what only SQLite has is tested beside its code (`src/sqlite/tests.rs`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use paycore_ledger::{
    AccountId, Command, Currency, Hold, NewTransfer, Outcome, State, TenantId, TransferId, TransferOp,
};
use paycore_store::{ApiStore, Opened, Store};
use std::path::Path;
use std::sync::Arc;

/// The tenant `step` runs as.
pub const TENANT: TenantId = TenantId(1);

/// Opens (creating it if needed) the store of the data folder `dir`: the engine's side and
/// the API's.
pub fn open_store(dir: &Path) -> paycore_store::Result<(Box<dyn Store>, Arc<dyn ApiStore>)> {
    let Opened { store, api } = paycore_store::open(dir)?;
    Ok((store, api))
}

/// Executes `commands` for [`TENANT`] as one batch, as the engine does (prefetch, load,
/// execute), and commits the result.
pub fn step(state: &mut State, store: &mut dyn Store, now: u64, commands: Vec<Command>) -> Vec<Outcome> {
    let (outcomes, committed) = paycore_store::testing::step(state, store, TENANT, now, commands);
    committed.unwrap();
    outcomes
}

pub fn eur() -> Currency {
    Currency::from_code("EUR").unwrap()
}

/// An unlinked EUR move of `amount` from `debit` to `credit`, held when `hold` is given.
pub fn mv(id: u128, debit: u128, credit: u128, amount: u64, hold: Option<Hold>) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(debit),
            credit_account: AccountId(credit),
            amount,
            currency: eur(),
            hold,
        },
    }
}
