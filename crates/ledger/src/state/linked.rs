//! Lists of transfers and linked chains: a chain succeeds or fails as one, so everything it
//! changed is saved in an undo log and restored when one of its transfers fails.
//!
//! The rollback asserts, step by step, that what it restores or removes is there and in the
//! state the chain left it in (as TigerBeetle does): an undo log that does not match the state
//! is a broken invariant, and the engine answers the batch 503 and rebuilds from the store
//! rather than commit a state nobody can vouch for.

use super::limits::Outflow;
use super::{Deadline, State};
use crate::account::Balances;
use crate::transfer::{HoldRecord, HoldStatus, NewTransfer, ResultCode};
use crate::{AccountId, TenantId, TransferId};

/// Values saved before a linked chain changed them, to undo the chain if it fails.
#[derive(Default)]
pub(super) struct Undo {
    /// Each account the chain changed, with its balances before the first change.
    accounts: Vec<(AccountId, Balances)>,
    /// Each hold the chain placed (`None`: it did not exist) or resolved (the pending hold).
    holds: Vec<(TransferId, Option<HoldRecord>)>,
    /// How many transfers the batch had made when the chain started.
    transfers_len: usize,
    /// Each limited account's outflow before the chain's first debit from it.
    outflows: Vec<(AccountId, Outflow)>,
}

impl Undo {
    /// An empty log for a chain that starts when the batch has made `transfers_len` transfers.
    pub(super) fn starting_at(transfers_len: usize) -> Undo {
        Undo { transfers_len, ..Undo::default() }
    }

    /// Saves an account's balances before the chain's first change to them.
    pub(super) fn save_account(&mut self, id: AccountId, balances: Balances) {
        if !self.accounts.iter().any(|(a, _)| *a == id) {
            self.accounts.push((id, balances));
        }
    }

    /// Saves a limited account's outflow before the chain's first debit from it.
    pub(super) fn save_outflow(&mut self, id: AccountId, outflow: Outflow) {
        if !self.outflows.iter().any(|(a, _)| *a == id) {
            self.outflows.push((id, outflow));
        }
    }

    /// Saves a hold as it was before the chain's first change to it.
    pub(super) fn save_hold(&mut self, id: TransferId, previous: Option<HoldRecord>) {
        if !self.holds.iter().any(|(h, _)| *h == id) {
            self.holds.push((id, previous));
        }
    }
}

impl State {
    pub(super) fn transfers(&mut self, tenant: TenantId, transfers: &[NewTransfer], now: u64) -> Vec<ResultCode> {
        let mut results = vec![ResultCode::Ok; transfers.len()];
        let mut chain_start: Option<usize> = None;
        let mut chain_failed = false;
        for (i, transfer) in transfers.iter().enumerate() {
            if chain_start.is_none() && transfer.linked {
                chain_start = Some(i);
                chain_failed = false;
                self.undo = Some(Undo::starting_at(self.changes.transfers.len()));
            }
            let open_at_end = transfer.linked && i + 1 == transfers.len();
            results[i] = if chain_failed {
                ResultCode::LinkedEventFailed
            } else if open_at_end {
                ResultCode::LinkedEventChainOpen
            } else {
                self.apply(tenant, transfer, now, None)
            };
            if let Some(start) = chain_start {
                if !chain_failed && !results[i].is_success() {
                    chain_failed = true;
                    self.rollback();
                    for r in &mut results[start..i] {
                        *r = ResultCode::LinkedEventFailed;
                    }
                }
                if !transfer.linked {
                    chain_start = None;
                    chain_failed = false;
                    self.undo = None;
                }
            }
        }
        self.undo = None;
        results
    }

    /// Undoes everything the current chain changed. Panics if the undo log does not match the
    /// state (see the module's documentation).
    pub(super) fn rollback(&mut self) {
        let undo = self.undo.take();
        assert!(undo.is_some(), "rollback outside a linked chain: there is no undo log");
        let Some(undo) = undo else { return };
        assert!(
            undo.transfers_len <= self.changes.transfers.len(),
            "rollback: the chain started after transfer {} but the batch has made only {}",
            undo.transfers_len,
            self.changes.transfers.len()
        );
        for (id, balances) in undo.accounts {
            self.restore_account(id, balances);
        }
        for (id, outflow) in undo.outflows {
            self.restore_outflow(id, outflow);
        }
        for (id, saved) in undo.holds.into_iter().rev() {
            self.restore_hold(id, saved, undo.transfers_len);
        }
        for (position, t) in self.changes.transfers.drain(undo.transfers_len..).enumerate() {
            let index = self.new_transfers.remove(&t.id);
            assert!(
                index == Some(undo.transfers_len + position),
                "rollback: transfer {} made by the chain is not indexed at its place ({index:?})",
                t.id
            );
        }
        // An empty undo keeps collecting for the rest of the (failed) chain, which applies
        // nothing more.
        self.undo = Some(Undo::starting_at(self.changes.transfers.len()));
    }

    /// Puts back an account's balances from before the chain.
    fn restore_account(&mut self, id: AccountId, balances: Balances) {
        assert!(
            self.before.contains_key(&id),
            "rollback: account {id} changed by the chain is not in the batch's changes"
        );
        let account = self.accounts.get_mut(&id);
        assert!(account.is_some(), "rollback: account {id} changed by the chain is not in memory");
        if let Some(account) = account {
            account.balances = balances;
        }
    }

    /// Puts a hold back as it was before the chain: removes one the chain placed, and makes one
    /// the chain resolved pending again. `transfers_len`: the batch's transfers before the chain.
    fn restore_hold(&mut self, id: TransferId, saved: Option<HoldRecord>, transfers_len: usize) {
        let current = self.holds.remove(&id);
        assert!(current.is_some(), "rollback: hold {id} changed by the chain is not in memory");
        let Some(current) = current else { return };
        if let Some(at) = current.transfer.expires_at {
            let removed = self.deadlines.remove(&(at, Deadline::Hold(id)));
            assert!(
                removed == (current.status == HoldStatus::Pending),
                "rollback: hold {id} is {} but its deadline is {}",
                current.status.as_str(),
                if removed { "set" } else { "not set" }
            );
        }
        match saved {
            // Placed by the chain: its pending transfer is one of the chain's.
            None => assert!(
                self.new_transfers.get(&id).is_some_and(|&index| index >= transfers_len),
                "rollback: hold {id} placed by the chain is not one of the chain's transfers"
            ),
            // Resolved by the chain: it was pending, and is no longer.
            Some(hold) => {
                assert!(
                    hold.status == HoldStatus::Pending && current.status != HoldStatus::Pending,
                    "rollback: hold {id} resolved by the chain was {} and is {}",
                    hold.status.as_str(),
                    current.status.as_str()
                );
                if let Some(at) = hold.transfer.expires_at {
                    let inserted = self.deadlines.insert((at, Deadline::Hold(id)));
                    assert!(inserted, "rollback: hold {id} resolved by the chain still has its deadline");
                }
                self.holds.insert(id, hold);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    //! A broken undo log is simulated by changing the state behind the chain's back between a
    //! transfer and the rollback: each step of the rollback must then stop the batch, naming
    //! what it found missing or out of place.

    use super::*;
    use crate::account::{Account, Overdraft};
    use crate::state::NANOS_PER_SECOND;
    use crate::transfer::{Hold, TransferOp};
    use crate::Currency;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    const TENANT: TenantId = TenantId(1);
    const PAYER: AccountId = AccountId(1);
    const PAYEE: AccountId = AccountId(2);
    const NOW: u64 = 1_700_000_000 * NANOS_PER_SECOND;

    fn account(id: AccountId) -> Account {
        Account {
            id,
            tenant: TENANT,
            currency: Currency::from_code("USD").unwrap(),
            overdraft: Overdraft::Unlimited,
            reference: None,
            metadata: None,
            balances: Balances::default(),
            created_at: 1,
            status: crate::AccountStatus::Active,
            limits: crate::Limits::default(),
        }
    }

    fn transfer(id: u128, op: TransferOp) -> NewTransfer {
        NewTransfer { id: TransferId(id), linked: true, op }
    }

    fn hold(id: u128, timeout_seconds: Option<u64>) -> NewTransfer {
        let hold = Some(Hold { timeout_seconds });
        let currency = Currency::from_code("USD").unwrap();
        transfer(id, TransferOp::Move { debit_account: PAYER, credit_account: PAYEE, amount: 70, currency, hold })
    }

    /// A state with two accounts, in the middle of a chain that placed a hold of 70 (id 10,
    /// expiring in a minute) and moved 30 (id 11).
    fn chain_in_progress() -> State {
        let mut state = State::recover([account(PAYER), account(PAYEE)], [], [], 0);
        state.undo = Some(Undo::starting_at(0));
        assert_eq!(state.apply(TENANT, &hold(10, Some(60)), NOW, None), ResultCode::Ok);
        let currency = Currency::from_code("USD").unwrap();
        let op = TransferOp::Move { debit_account: PAYER, credit_account: PAYEE, amount: 30, currency, hold: None };
        assert_eq!(state.apply(TENANT, &transfer(11, op), NOW, None), ResultCode::Ok);
        state
    }

    /// A later batch, in a chain that voided the hold the first chain placed.
    fn chain_that_voided_the_hold() -> State {
        let mut state = chain_in_progress();
        state.undo = None;
        state.take_changes();
        state.undo = Some(Undo::starting_at(0));
        let void = transfer(12, TransferOp::Void { pending_id: TransferId(10) });
        assert_eq!(state.apply(TENANT, &void, NOW, None), ResultCode::Ok);
        state
    }

    /// Rolls back, and checks that it panicked with a message that contains `expected`.
    fn assert_rollback_panics(mut state: State, expected: &str) {
        let panic = catch_unwind(AssertUnwindSafe(|| state.rollback())).expect_err("the rollback did not panic");
        let message =
            panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()));
        let message = message.unwrap_or_default();
        assert!(message.contains(expected), "{message}");
    }

    #[test]
    fn an_intact_undo_log_puts_everything_back() {
        let mut state = chain_in_progress();
        state.rollback();
        for id in [PAYER, PAYEE] {
            assert_eq!(state.accounts[&id].balances, Balances::default());
        }
        assert!(state.holds.is_empty() && state.deadlines.is_empty());
        assert!(state.changes.transfers.is_empty() && state.new_transfers.is_empty());
    }

    #[test]
    fn a_resolved_hold_is_made_pending_again() {
        let mut state = chain_that_voided_the_hold();
        assert!(state.deadlines.is_empty());
        state.rollback();
        assert_eq!(state.holds[&TransferId(10)].status, HoldStatus::Pending);
        assert_eq!(state.deadlines.len(), 1);
        assert_eq!(state.accounts[&PAYER].balances.debits_pending, 70);
    }

    #[test]
    fn rollback_without_an_undo_log_panics() {
        let mut state = chain_in_progress();
        state.undo = None;
        assert_rollback_panics(state, "rollback outside a linked chain");
    }

    #[test]
    fn rollback_panics_on_an_account_missing_from_memory() {
        let mut state = chain_in_progress();
        state.accounts.remove(&PAYEE);
        assert_rollback_panics(state, &format!("account {PAYEE} changed by the chain is not in memory"));
    }

    #[test]
    fn rollback_panics_on_an_account_missing_from_the_changes() {
        let mut state = chain_in_progress();
        state.before.remove(&PAYER);
        assert_rollback_panics(state, &format!("account {PAYER} changed by the chain is not in the batch's"));
    }

    #[test]
    fn rollback_panics_on_a_hold_missing_from_memory() {
        let mut state = chain_in_progress();
        state.holds.remove(&TransferId(10));
        assert_rollback_panics(state, &format!("hold {} changed by the chain is not in memory", TransferId(10)));
    }

    #[test]
    fn rollback_panics_on_a_pending_hold_without_its_deadline() {
        let mut state = chain_in_progress();
        state.deadlines.clear();
        assert_rollback_panics(state, &format!("hold {} is pending but its deadline is not set", TransferId(10)));
    }

    #[test]
    fn rollback_panics_on_a_resolved_hold_that_is_pending() {
        let mut state = chain_that_voided_the_hold();
        // The hold is pending again behind the chain's back (its deadline too, so that only the
        // status is out of place).
        let hold = state.holds.get_mut(&TransferId(10)).unwrap();
        hold.status = HoldStatus::Pending;
        let at = hold.transfer.expires_at.unwrap();
        state.deadlines.insert((at, Deadline::Hold(TransferId(10))));
        assert_rollback_panics(
            state,
            &format!("hold {} resolved by the chain was pending and is pending", TransferId(10)),
        );
    }

    #[test]
    fn rollback_panics_on_a_placed_hold_that_is_not_the_chains() {
        let mut state = chain_in_progress();
        // The hold's transfer is forgotten by the batch's index (the move stays indexed).
        state.new_transfers.remove(&TransferId(10));
        assert_rollback_panics(
            state,
            &format!("hold {} placed by the chain is not one of the chain's", TransferId(10)),
        );
    }

    #[test]
    fn rollback_panics_on_a_transfer_not_indexed_at_its_place() {
        let mut state = chain_in_progress();
        state.new_transfers.insert(TransferId(11), 0);
        assert_rollback_panics(state, &format!("transfer {} made by the chain is not indexed", TransferId(11)));
    }
}
