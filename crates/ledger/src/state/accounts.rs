//! Opening accounts, and the per-tenant lookup every other command goes through.

use super::{CommandError, NewAccount, State};
use crate::account::{Account, Balances, Overdraft};
use crate::limits::{
    changed_fields_json, AccountStatus, AccountUpdate, AuditRecord, Change, Limits, VELOCITY_COUNT_MAX,
    VELOCITY_WINDOW_SECONDS_MAX,
};
use crate::transfer::ResultCode;
use crate::{AccountId, TenantId, AMOUNT_MAX};

const OVERDRAFT_LIMIT: &str = "overdraft_limit";
const OVERDRAFT_LIMIT_RANGE: &str = "overdraft_limit must be at most 9223372036854775807";
const ID: &str = "id";
const MAX_PAYMENT: &str = "limits.max_payment";
const DAILY_OUTFLOW: &str = "limits.daily_outflow";
const VELOCITY_COUNT: &str = "limits.velocity.count";
const VELOCITY_WINDOW: &str = "limits.velocity.window_seconds";
const AMOUNT_LIMIT_RANGE: &str = "a limit must be between 0 and 9223372036854775807";
const VELOCITY_COUNT_RANGE: &str = "limits.velocity.count must be between 1 and 10000";
const VELOCITY_WINDOW_RANGE: &str = "limits.velocity.window_seconds must be between 1 and 86400";
/// The fields and messages the errors made here carry: every one is a constant above, so
/// [`CommandError::known_param`] and [`CommandError::known_message`] know all of them.
pub(super) const PARAMS: &[&str] = &[OVERDRAFT_LIMIT, ID, MAX_PAYMENT, DAILY_OUTFLOW, VELOCITY_COUNT, VELOCITY_WINDOW];
pub(super) const MESSAGES: &[&str] =
    &[OVERDRAFT_LIMIT_RANGE, AMOUNT_LIMIT_RANGE, VELOCITY_COUNT_RANGE, VELOCITY_WINDOW_RANGE];

/// Checks the values an update sets (the API checks them too, naming the same fields).
fn check_update(update: &AccountUpdate) -> Result<(), CommandError> {
    for (param, change) in [(MAX_PAYMENT, update.max_payment), (DAILY_OUTFLOW, update.daily_outflow)] {
        if let Change::Set(value) = change {
            if value > AMOUNT_MAX {
                return Err(CommandError::InvalidField { param, message: AMOUNT_LIMIT_RANGE });
            }
        }
    }
    if let Change::Set(velocity) = update.velocity {
        if velocity.count == 0 || velocity.count > VELOCITY_COUNT_MAX {
            return Err(CommandError::InvalidField { param: VELOCITY_COUNT, message: VELOCITY_COUNT_RANGE });
        }
        if velocity.window_seconds == 0 || velocity.window_seconds > VELOCITY_WINDOW_SECONDS_MAX {
            return Err(CommandError::InvalidField { param: VELOCITY_WINDOW, message: VELOCITY_WINDOW_RANGE });
        }
    }
    Ok(())
}

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
            status: AccountStatus::Active,
            limits: Limits::default(),
        };
        self.accounts.insert(account.id, account.clone());
        self.changes.new_accounts.push(account.clone());
        Ok(account)
    }

    /// Changes an account's status or limits and records who changed what, when. A closed
    /// account cannot change; an account can be closed only with zero balances and no holds
    /// (no pending counters). An update that names nothing changes nothing and is not audited.
    pub(super) fn update_account(
        &mut self,
        tenant: TenantId,
        id: AccountId,
        update: &AccountUpdate,
        actor: &str,
        now: u64,
    ) -> Result<Account, CommandError> {
        check_update(update)?;
        let account = self.tenant_account(tenant, id).ok_or(CommandError::AccountNotFound { param: ID })?;
        if account.status == AccountStatus::Closed {
            return Err(CommandError::Rejected(ResultCode::AccountClosed));
        }
        if update.status.is_none() && !update.touches_limits() {
            return Ok(account.clone());
        }
        let status = update.status.unwrap_or(account.status);
        let limits = Limits {
            max_payment: update.max_payment.apply(account.limits.max_payment),
            daily_outflow: update.daily_outflow.apply(account.limits.daily_outflow),
            velocity: update.velocity.apply(account.limits.velocity),
        };
        if status == AccountStatus::Closed && account.balances != Balances::default() {
            let b = account.balances;
            // Only a balance of zero with nothing pending: equal debits and credits close too.
            if b.posted() != 0 || b.debits_pending != 0 || b.credits_pending != 0 {
                return Err(CommandError::AccountNotEmpty);
            }
        }
        let before = changed_fields_json(update, account.status, &account.limits);
        let after = changed_fields_json(update, status, &limits);
        let at = self.tick(now);
        let Some(account) = self.accounts.get_mut(&id) else { return Err(CommandError::AccountNotFound { param: ID }) };
        account.status = status;
        account.limits = limits;
        let updated = account.clone();
        if update.touches_limits() {
            self.rebuild_outflow(id);
        }
        self.changes.updated_accounts.push(updated.clone());
        self.changes.audit.push(AuditRecord { tenant, account: id, actor: actor.to_owned(), at, before, after });
        Ok(updated)
    }

    /// The account, if it exists and belongs to `tenant`.
    pub(super) fn tenant_account(&self, tenant: TenantId, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id).filter(|a| a.tenant == tenant)
    }
}
