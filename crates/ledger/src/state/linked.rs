//! Lists of transfers and linked chains: a chain succeeds or fails as one, so everything it
//! changed is saved in an undo log and restored when one of its transfers fails.

use super::{Deadline, State};
use crate::account::Balances;
use crate::transfer::{HoldRecord, HoldStatus, NewTransfer, ResultCode};
use crate::{AccountId, TenantId, TransferId};

/// Values saved before a linked chain changed them, to undo the chain if it fails.
#[derive(Default)]
pub(super) struct Undo {
    pub(super) accounts: Vec<(AccountId, Balances)>,
    pub(super) holds: Vec<(TransferId, Option<HoldRecord>)>,
    pub(super) transfers_len: usize,
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
                self.undo = Some(Undo { transfers_len: self.changes.transfers.len(), ..Undo::default() });
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

    fn rollback(&mut self) {
        let Some(undo) = self.undo.take() else { return };
        for (id, balances) in undo.accounts {
            if let Some(account) = self.accounts.get_mut(&id) {
                account.balances = balances;
            }
        }
        for (id, saved) in undo.holds.into_iter().rev() {
            if let Some(current) = self.holds.remove(&id) {
                if let Some(at) = current.transfer.expires_at {
                    self.deadlines.remove(&(at, Deadline::Hold(id)));
                }
            }
            if let Some(hold) = saved {
                if let (Some(at), HoldStatus::Pending) = (hold.transfer.expires_at, hold.status) {
                    self.deadlines.insert((at, Deadline::Hold(id)));
                }
                self.holds.insert(id, hold);
            }
        }
        for t in self.changes.transfers.drain(undo.transfers_len..) {
            self.new_transfers.remove(&t.id);
        }
        // An empty undo keeps collecting for the rest of the (failed) chain, which applies
        // nothing more.
        self.undo = Some(Undo { transfers_len: self.changes.transfers.len(), ..Undo::default() });
    }
}
