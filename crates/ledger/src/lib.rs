//! The ledger: money, accounts, transfers, payments, and the deterministic state machine that
//! applies them. Pure and synchronous: no I/O, no clock, no randomness, no serialization.
//! Time comes in as an argument; everything that reaches storage leaves as a [`ChangeSet`].

mod currency;
mod ids;
mod money;

pub use currency::Currency;
pub use ids::{time_ordered, AccountId, BatchId, IdError, PaymentId, RefundId, TenantId, TransferId};
pub use money::{format_amount, parse_amount, Amount, AmountError, AMOUNT_MAX};
