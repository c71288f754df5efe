//! Transfers, the requests that make them, and their result codes.

use crate::account::counter_plus;
use crate::{AccountId, Balances, Currency, PaymentId, TenantId, TransferId};

/// What a stored transfer did. Stored transfers are immutable.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TransferKind {
    /// Moved money at once (single phase).
    Single,
    /// Placed a hold: the amount is counted as pending on both accounts.
    Pending,
    /// Posted (part of) a hold; the rest of the hold is released.
    PostPending,
    /// Released a hold without moving money.
    VoidPending,
    /// Released a hold whose timeout passed; made by the engine, not by a client.
    ExpirePending,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Single => "single",
            TransferKind::Pending => "pending",
            TransferKind::PostPending => "post_pending",
            TransferKind::VoidPending => "void_pending",
            TransferKind::ExpirePending => "expire_pending",
        }
    }

    pub fn parse(text: &str) -> Option<TransferKind> {
        [
            TransferKind::Single,
            TransferKind::Pending,
            TransferKind::PostPending,
            TransferKind::VoidPending,
            TransferKind::ExpirePending,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// A transfer as stored: one debit and one credit of the same amount and currency.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Transfer {
    pub id: TransferId,
    pub tenant: TenantId,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    /// For a post, the amount posted; for a void or an expiry, the amount released.
    pub amount: u64,
    pub currency: Currency,
    pub kind: TransferKind,
    /// The hold a post, void or expiry resolves.
    pub pending_id: Option<TransferId>,
    /// For a hold: when it expires unless posted or voided first (nanoseconds since the epoch).
    pub expires_at: Option<u64>,
    /// Unique and strictly increasing across the ledger: the engine's clock at execution.
    pub timestamp: u64,
}

impl Transfer {
    /// Replays this stored transfer on the balances of its two accounts, as the state machine
    /// applied it: a single transfer moves posted money, a hold moves pending money, and a post,
    /// void or expiry releases the whole hold (`held`, the amount of the pending transfer it
    /// resolves) and posts its own amount if it is a post. A store uses it to bring balances
    /// written some batches ago up to date from the transfers since. `None` if a counter would
    /// leave `0..=AMOUNT_MAX`: the stored data is not what the state machine wrote.
    pub fn replay(&self, held: u64, debit: &mut Balances, credit: &mut Balances) -> Option<()> {
        self.replay_side(held, Side::Debit, debit)?;
        self.replay_side(held, Side::Credit, credit)
    }

    /// [`Transfer::replay`] on one side's balances only: a store whose accounts' balances were
    /// written at different times replays a transfer on the side written before it.
    pub fn replay_side(&self, held: u64, side: Side, balances: &mut Balances) -> Option<()> {
        let (posted, pending) = match side {
            Side::Debit => (&mut balances.debits_posted, &mut balances.debits_pending),
            Side::Credit => (&mut balances.credits_posted, &mut balances.credits_pending),
        };
        match self.kind {
            TransferKind::Single => *posted = counter_plus(*posted, self.amount)?,
            TransferKind::Pending => *pending = counter_plus(*pending, self.amount)?,
            TransferKind::PostPending | TransferKind::VoidPending | TransferKind::ExpirePending => {
                *pending = pending.checked_sub(held)?;
                if self.kind == TransferKind::PostPending {
                    *posted = counter_plus(*posted, self.amount)?;
                }
            }
        }
        Some(())
    }
}

/// A side of a transfer: the account it debits or the one it credits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    Debit,
    Credit,
}

/// What a client asks for.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TransferOp {
    /// Move `amount` at once, or, with `hold`, place a hold of it.
    Move { debit_account: AccountId, credit_account: AccountId, amount: u64, currency: Currency, hold: Option<Hold> },
    /// Post a hold: all of it, or `amount` of it (the rest is released).
    Post { pending_id: TransferId, amount: Option<u64> },
    /// Release a hold.
    Void { pending_id: TransferId },
}

/// A hold's options.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Hold {
    /// Seconds until the hold is released by itself; `None` holds until posted or voided.
    pub timeout_seconds: Option<u64>,
}

/// One transfer request. Requests with `linked` set form a chain with the request after them:
/// the chain succeeds or fails as one.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NewTransfer {
    pub id: TransferId,
    pub linked: bool,
    pub op: TransferOp,
}

/// The result of one transfer request. Rejections are results, not errors.
///
/// Precedence: when several apply, the first in [`ResultCode::ALL`] is reported (variants are
/// added at the end of the enum; `ALL` gives each its place). Checks that need no lookup come
/// first, then the id (so a retry of a request that succeeded reports `Exists` even if the
/// balance has changed since), then the accounts (`account_closed`, `account_frozen` with
/// them) or the hold, then the amounts (`limit_exceeded` and `velocity_exceeded` before
/// `insufficient_funds`). A post resolves its hold first, so the hold's codes come before
/// `account_frozen` there.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ResultCode {
    Ok,
    /// Another request of the same linked chain failed, so this one was not applied.
    LinkedEventFailed,
    /// The last request of the batch has `linked` set: the chain is never closed.
    LinkedEventChainOpen,
    /// Zero, or more than `AMOUNT_MAX`.
    InvalidAmount,
    /// Debit and credit account are the same.
    SameAccount,
    /// A hold's timeout is zero or longer than the maximum.
    InvalidTimeout,
    /// A transfer with this id exists with other fields.
    ExistsWithDifferentFields,
    /// A transfer with this id and these fields exists: the request was applied before.
    Exists,
    /// The debit or credit account does not exist (in this tenant).
    AccountNotFound,
    /// An account's currency differs from the transfer's.
    CurrencyMismatch,
    /// The hold to post or void does not exist (in this tenant).
    PendingNotFound,
    PendingAlreadyPosted,
    PendingAlreadyVoided,
    PendingExpired,
    /// A post asks for more than the hold.
    AmountExceedsPending,
    /// A balance counter would pass `AMOUNT_MAX`.
    Overflow,
    /// The debit account would go past its overdraft limit.
    InsufficientFunds,
    /// The debit would pass one of the debit account's limits (`max_payment`, `daily_outflow`).
    LimitExceeded,
    /// The debit account has made as many debits as its velocity limit allows in its window.
    VelocityExceeded,
    /// The debit account is frozen: it accepts credits only.
    AccountFrozen,
    /// The debit or credit account is closed.
    AccountClosed,
    /// A batch refund's payment does not exist (in this tenant).
    PaymentNotFound,
    /// A batch refund's payment cannot be refunded: not `succeeded`, or cross-currency.
    PaymentNotRefundable,
    /// A batch refund asks for more than is left to refund on its payment.
    AmountExceedsRefundable,
}

impl ResultCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultCode::Ok => "ok",
            ResultCode::LinkedEventFailed => "linked_event_failed",
            ResultCode::LinkedEventChainOpen => "linked_event_chain_open",
            ResultCode::InvalidAmount => "invalid_amount",
            ResultCode::SameAccount => "same_account",
            ResultCode::InvalidTimeout => "invalid_timeout",
            ResultCode::ExistsWithDifferentFields => "exists_with_different_fields",
            ResultCode::Exists => "exists",
            ResultCode::AccountNotFound => "account_not_found",
            ResultCode::CurrencyMismatch => "currency_mismatch",
            ResultCode::PendingNotFound => "pending_not_found",
            ResultCode::PendingAlreadyPosted => "pending_already_posted",
            ResultCode::PendingAlreadyVoided => "pending_already_voided",
            ResultCode::PendingExpired => "pending_expired",
            ResultCode::AmountExceedsPending => "amount_exceeds_pending",
            ResultCode::Overflow => "overflow",
            ResultCode::InsufficientFunds => "insufficient_funds",
            ResultCode::LimitExceeded => "limit_exceeded",
            ResultCode::VelocityExceeded => "velocity_exceeded",
            ResultCode::AccountFrozen => "account_frozen",
            ResultCode::AccountClosed => "account_closed",
            ResultCode::PaymentNotFound => "payment_not_found",
            ResultCode::PaymentNotRefundable => "payment_not_refundable",
            ResultCode::AmountExceedsRefundable => "amount_exceeds_refundable",
        }
    }

    /// Every code, in precedence order (for documentation and the API schema).
    pub const ALL: [ResultCode; 24] = [
        ResultCode::Ok,
        ResultCode::LinkedEventFailed,
        ResultCode::LinkedEventChainOpen,
        ResultCode::InvalidAmount,
        ResultCode::SameAccount,
        ResultCode::InvalidTimeout,
        ResultCode::ExistsWithDifferentFields,
        ResultCode::Exists,
        ResultCode::AccountNotFound,
        ResultCode::CurrencyMismatch,
        ResultCode::AccountClosed,
        ResultCode::AccountFrozen,
        ResultCode::PendingNotFound,
        ResultCode::PendingAlreadyPosted,
        ResultCode::PendingAlreadyVoided,
        ResultCode::PendingExpired,
        ResultCode::AmountExceedsPending,
        ResultCode::Overflow,
        ResultCode::LimitExceeded,
        ResultCode::VelocityExceeded,
        ResultCode::InsufficientFunds,
        ResultCode::PaymentNotFound,
        ResultCode::PaymentNotRefundable,
        ResultCode::AmountExceedsRefundable,
    ];

    pub fn parse(text: &str) -> Option<ResultCode> {
        ResultCode::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// `Ok` and `Exists` both mean the transfer is in the ledger.
    pub fn is_success(self) -> bool {
        matches!(self, ResultCode::Ok | ResultCode::Exists)
    }
}

/// The state of a hold (a pending transfer).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum HoldStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Pending => "pending",
            HoldStatus::Posted => "posted",
            HoldStatus::Voided => "voided",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<HoldStatus> {
        [HoldStatus::Pending, HoldStatus::Posted, HoldStatus::Voided, HoldStatus::Expired]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A hold and what became of it. The pending transfer itself is immutable; its status lives
/// here.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HoldRecord {
    pub transfer: Transfer,
    pub status: HoldStatus,
    /// The payment whose funds this hold reserves, if any: its status follows the hold's.
    pub payment: Option<PaymentId>,
}
