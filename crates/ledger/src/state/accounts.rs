//! Opening accounts, and the per-tenant lookup every other command goes through.

use super::{CommandError, NewAccount, State};
use crate::account::{Account, Balances, Overdraft};
use crate::{AccountId, TenantId, AMOUNT_MAX};

const OVERDRAFT_LIMIT: &str = "overdraft_limit";
const OVERDRAFT_LIMIT_RANGE: &str = "overdraft_limit must be at most 9223372036854775807";
/// The fields and messages the errors made here carry: every one is a constant above, so
/// [`CommandError::known_param`] and [`CommandError::known_message`] know all of them.
pub(super) const PARAMS: &[&str] = &[OVERDRAFT_LIMIT];
pub(super) const MESSAGES: &[&str] = &[OVERDRAFT_LIMIT_RANGE];

impl State {
    pub(super) fn create_account(
        &mut self,
        tenant: TenantId,
        new: &NewAccount,
        now: u64,
    ) -> Result<Account, CommandError> {
        if let Overdraft::Limit(limit) = new.overdraft {
            if limit > AMOUNT_MAX {
                return Err(CommandError::InvalidField { param: OVERDRAFT_LIMIT, message: OVERDRAFT_LIMIT_RANGE });
            }
        }
        if self.accounts.contains_key(&new.id) {
            return Err(CommandError::AlreadyExists);
        }
        if let Some(reference) = &new.reference {
            if self.references.contains_key(&(tenant, reference.clone(), new.currency)) {
                return Err(CommandError::ReferenceTaken);
            }
            self.references.insert((tenant, reference.clone(), new.currency), new.id);
        }
        let account = Account {
            id: new.id,
            tenant,
            currency: new.currency,
            overdraft: new.overdraft,
            reference: new.reference.clone(),
            metadata: new.metadata.clone(),
            balances: Balances::default(),
            created_at: self.tick(now),
        };
        self.accounts.insert(account.id, account.clone());
        self.changes.new_accounts.push(account.clone());
        Ok(account)
    }

    /// The account, if it exists and belongs to `tenant`.
    pub(super) fn tenant_account(&self, tenant: TenantId, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id).filter(|a| a.tenant == tenant)
    }
}
