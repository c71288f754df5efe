//! The ledger: money, accounts, transfers, payments, and the deterministic state machine that
//! applies them. Pure and synchronous: no I/O, no clock, no randomness, no serialization.
//! Time comes in as an argument; everything that reaches storage leaves as a [`ChangeSet`].
//!
//! Feature `serde` (off by default) gives [`Request`], [`Outcome`] and every type they reach
//! `Serialize` and `Deserialize`, for the cluster's wire format; decoding checks what the types
//! promise (known currencies, amounts and counters in range, the ledger's own error texts).

mod account;
mod batch;
mod clearing;
mod currency;
pub mod fx;
mod ids;
pub mod interest;
mod limits;
mod money;
mod payment;
#[cfg(feature = "serde")]
mod serde_impls;
mod state;
mod transfer;
mod vocabulary;

pub use account::{Account, Balances, Overdraft};
pub use batch::{BatchEnd, BatchItem, BatchItemResult, BatchItemState, BatchStep, ItemFx, ItemRefund};
pub use clearing::{ClearingPosition, ClearingWindow, OpenWindow};
pub use currency::Currency;
pub use ids::{
    time_ordered, AccountId, BatchId, ClearingWindowId, DeliveryId, EventId, IdError, PaymentId, QuoteId, RefundId,
    TenantId, TransferId, WebhookEndpointId,
};
pub use limits::{
    AccountStatus, AccountUpdate, AuditRecord, Change, LimitBreach, LimitKind, Limits, Velocity, VELOCITY_COUNT_MAX,
    VELOCITY_WINDOW_SECONDS_MAX,
};
pub use money::{format_amount, parse_amount, Amount, AmountError, AMOUNT_MAX};
pub use payment::{
    CaptureMethod, Merchant, Payment, PaymentFx, PaymentStatus, Refund, RefundStatus, REFUND_REASON_CHARS_MAX,
};
pub use state::{
    ChangeSet, Command, CommandError, NewAccount, NewPayment, Outcome, Prefetch, Request, State, BATCH_EVENTS_MAX,
    TIMEOUT_MAX_SECONDS,
};
pub use transfer::{Hold, HoldRecord, HoldStatus, NewTransfer, ResultCode, Side, Transfer, TransferKind, TransferOp};
pub use vocabulary::{BatchFormat, BatchMode, BatchStatus, EventKind, ItemStatus, OnInvalid, UnknownName};
