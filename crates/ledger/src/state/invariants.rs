//! The checks that the state is sound: double entry after every batch (a panic), and every
//! invariant over the whole state (for tests and `verify`).

use super::{HashMap, State};
use crate::transfer::HoldStatus;
use crate::{AccountId, Currency};

impl State {
    /// Checks every invariant over the whole state (slow: for tests and `verify`):
    /// per currency, posted and pending balances sum to zero; every account's pending counters
    /// equal the sum of its open holds; no counter passes `AMOUNT_MAX`.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut sums: HashMap<Currency, (i128, i128)> = HashMap::default();
        let mut pending: HashMap<AccountId, (u128, u128)> = HashMap::default();
        for hold in self.holds.values().filter(|h| h.status == HoldStatus::Pending) {
            let t = &hold.transfer;
            pending.entry(t.debit_account).or_default().0 += u128::from(t.amount);
            pending.entry(t.credit_account).or_default().1 += u128::from(t.amount);
        }
        for account in self.accounts.values() {
            let b = account.balances;
            if !b.within_bounds() {
                return Err(format!("{} has a counter above the maximum", account.id));
            }
            let sum = sums.entry(account.currency).or_default();
            sum.0 += i128::from(b.credits_posted) - i128::from(b.debits_posted);
            sum.1 += i128::from(b.credits_pending) - i128::from(b.debits_pending);
            let (held_debits, held_credits) = pending.get(&account.id).copied().unwrap_or_default();
            if (u128::from(b.debits_pending), u128::from(b.credits_pending)) != (held_debits, held_credits) {
                return Err(format!(
                    "{}: pending debits/credits {}/{} but open holds add up to {held_debits}/{held_credits}",
                    account.id, b.debits_pending, b.credits_pending
                ));
            }
        }
        for (currency, (posted, pending)) in sums {
            if posted != 0 || pending != 0 {
                return Err(format!("{currency}: balances sum to {posted} posted, {pending} pending"));
            }
        }
        Ok(())
    }

    pub(super) fn assert_double_entry(&self) {
        let mut moved: HashMap<Currency, [i128; 4]> = HashMap::default();
        for (id, (currency, before)) in &self.before {
            let Some(after) = self.accounts.get(id).map(|a| a.balances) else { continue };
            let delta = |a: u64, b: u64| i128::from(a) - i128::from(b);
            let m = moved.entry(*currency).or_default();
            m[0] += delta(after.debits_posted, before.debits_posted);
            m[1] += delta(after.credits_posted, before.credits_posted);
            m[2] += delta(after.debits_pending, before.debits_pending);
            m[3] += delta(after.credits_pending, before.credits_pending);
            assert!(after.within_bounds(), "{id}: balance counter above AMOUNT_MAX");
        }
        for (currency, m) in moved {
            assert!(
                m[0] == m[1] && m[2] == m[3],
                "double entry broken in {currency}: debits/credits moved posted {}/{}, pending {}/{}",
                m[0],
                m[1],
                m[2],
                m[3]
            );
        }
    }
}
