//! What the store's tests share: opening a store, driving it with the real ledger state
//! machine, and the fixtures (EUR, a move).
//!
//! Every place these tests open a store is [`open_store`], so a change of how stores are
//! opened is one change here. It returns the SQLite types: these tests also drive what only
//! SQLite has (the history indexer, the database files, `verify` over the SQLite reader).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use paycore_ledger::{
    AccountId, Command, Currency, Hold, NewTransfer, Request, State, TenantId, TransferId, TransferOp,
};
use paycore_store::sqlite::{SqliteReader, SqliteStore};
use paycore_store::Store;
use std::path::Path;

/// The tenant `step` runs as.
pub const TENANT: TenantId = TenantId(1);

/// Opens (creating it if needed) the store of the data folder `dir`.
pub fn open_store(dir: &Path) -> paycore_store::Result<(SqliteStore, SqliteReader)> {
    paycore_store::sqlite::open(dir)
}

/// Executes `commands` for [`TENANT`] as one batch, as the engine does (prefetch, load,
/// execute), and commits the result.
pub fn step(state: &mut State, store: &mut dyn Store, now: u64, commands: Vec<Command>) {
    let requests: Vec<Request> = commands.into_iter().map(|command| Request { tenant: TENANT, command }).collect();
    let loaded = store.load(&state.prefetch(&requests)).unwrap();
    state.insert_prefetched(loaded.transfers, loaded.holds, loaded.payments);
    state.execute(&requests, now);
    store.commit(&state.take_changes(), &[]).unwrap();
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
