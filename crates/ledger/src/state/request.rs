//! What comes into the state machine (`Request`, `Command` and the objects they create) and
//! what goes out (`Outcome`, `CommandError`).

use crate::account::{Account, Overdraft};
use crate::batch::{BatchEnd, BatchItem, BatchStep};
use crate::clearing::ClearingWindow;
use crate::limits::{AccountUpdate, LimitBreach};
use crate::payment::{CaptureMethod, Merchant, Payment, PaymentStatus, Refund};
use crate::transfer::{NewTransfer, ResultCode, Transfer};
use crate::{AccountId, BatchId, ClearingWindowId, Currency, PaymentId, QuoteId, RefundId, TenantId};

/// A request to open an account.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NewAccount {
    pub id: AccountId,
    pub currency: Currency,
    pub overdraft: Overdraft,
    pub reference: Option<String>,
    /// Opaque to the ledger (JSON text for the API).
    pub metadata: Option<String>,
}

/// A request to create a payment order.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NewPayment {
    pub id: PaymentId,
    /// `None`: the payer is whoever scans the payment's QR code ([`Command::ScanPayment`]).
    pub payer: Option<AccountId>,
    pub payee: AccountId,
    pub amount: u64,
    pub currency: Currency,
    pub capture_method: CaptureMethod,
    pub expires_in_seconds: u64,
    pub description: Option<String>,
    /// The quote a cross-currency payment uses: `amount` and `currency` must be its source
    /// side, the payer's account in its source currency, the payee's in its target currency.
    pub fx_quote: Option<QuoteId>,
    /// The merchant the payment's QR code names.
    pub merchant: Option<Merchant>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Command {
    CreateAccount(NewAccount),
    /// One transfer, answered with the transfer itself (the API's single form).
    Transfer(NewTransfer),
    /// Up to a few thousand transfers; linked chains end at the end of the list.
    Transfers(Vec<NewTransfer>),
    CreatePayment(NewPayment),
    ConfirmPayment(PaymentId),
    /// Capture all of a held payment, or `amount` of it.
    CapturePayment {
        payment: PaymentId,
        amount: Option<u64>,
    },
    CancelPayment(PaymentId),
    /// Refund all that is left to refund, or `amount`.
    RefundPayment {
        payment: PaymentId,
        refund: RefundId,
        amount: Option<u64>,
        /// Stored on the refund.
        reason: Option<String>,
    },
    /// A chunk of a batch's items, in one step (outcome: one result code per item).
    BatchItems {
        batch: BatchId,
        step: BatchStep,
        items: Vec<BatchItem>,
    },
    /// The end of a batch, committed after its last item.
    EndBatch {
        batch: BatchId,
        end: BatchEnd,
    },
    /// Changes an account's status or limits (`PATCH /v1/accounts/{id}`), ordered with the
    /// payments around it and audited in the same commit. `actor`: the API key's id.
    UpdateAccount {
        account: AccountId,
        update: AccountUpdate,
        actor: String,
    },
    /// Closes the tenant's open clearing window in `currency` (and opens the next) at the
    /// engine's clock: every posted transfer executed before it is in the closed window, every
    /// one after it in the next. The closed window gets the id `window`.
    CloseClearingWindow {
        window: ClearingWindowId,
        currency: Currency,
    },
    /// Scan to pay: binds `payer` to a payment that requires confirmation and confirms it, in
    /// one step. The payment must have no payer yet, or this one. Any refusal of the transfer
    /// (insufficient funds among them) refuses the scan and leaves the payment as it was, open
    /// to another scan, rather than failing the shop's payment.
    ScanPayment {
        payment: PaymentId,
        payer: AccountId,
    },
}

/// A command and the tenant on whose behalf it runs.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Request {
    pub tenant: TenantId,
    pub command: Command,
}

/// Why a command other than a transfer was refused. Nothing changed.
///
/// Its `Deserialize` is in `serde_impls`: the decoded texts are looked up in the ledger's set.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum CommandError {
    /// The account named by the field does not exist in this tenant.
    AccountNotFound {
        param: &'static str,
    },
    /// The account named by the field has another currency.
    CurrencyMismatch {
        param: &'static str,
    },
    SameAccount,
    /// Another account of this tenant has this reference.
    ReferenceTaken,
    /// An object with this id exists already.
    AlreadyExists,
    PaymentNotFound,
    /// The payment is not in a status that allows the operation.
    UnexpectedState {
        status: PaymentStatus,
    },
    /// More than the payment allows (capture above the amount, refund above what is left).
    AmountTooLarge {
        max: u64,
    },
    /// A field is out of its range.
    InvalidField {
        param: &'static str,
        message: &'static str,
    },
    /// The ledger refused the transfer the operation needs.
    Rejected(ResultCode),
    /// The quote named by `fx_quote` does not exist in this tenant.
    QuoteNotFound,
    /// The quote's lock has passed, or another payment used it.
    QuoteExpired,
    /// The debit the operation needs would pass a limit of the account (`limit_exceeded`).
    LimitExceeded(LimitBreach),
    /// An account can be closed only with zero balances and no holds.
    AccountNotEmpty,
    /// The clearing window to close has no posted transfer: there is nothing to settle.
    WindowEmpty,
    /// The payment has no payer: only a scan of its QR code, which names one, confirms it.
    PayerRequired,
    /// The scan names another payer than the one the payment was made with.
    PayerMismatch,
}

impl CommandError {
    /// The field name among those the ledger's errors carry that equals `text`, as the
    /// `&'static str` the error holds: how a decoded error gets its text back. `None` for any
    /// other text. The set is written once, beside the code that makes the errors.
    pub fn known_param(text: &str) -> Option<&'static str> {
        super::accounts::PARAMS
            .iter()
            .chain(super::payments::PARAMS)
            .chain(super::fx::PARAMS)
            .copied()
            .find(|p| *p == text)
    }

    /// The message among those of the ledger's `InvalidField` errors that equals `text`.
    pub fn known_message(text: &str) -> Option<&'static str> {
        super::accounts::MESSAGES
            .iter()
            .chain(super::payments::MESSAGES)
            .chain(super::fx::MESSAGES)
            .copied()
            .find(|m| *m == text)
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Outcome {
    Account(Result<Account, CommandError>),
    /// The result of one transfer and, when it is a success (`ok`, `exists`), the transfer as
    /// stored: the new one, or the one that existed with this id. With `limit_exceeded`, which
    /// limit and what it still allows.
    Transfer {
        code: ResultCode,
        transfer: Option<Transfer>,
        limit: Option<LimitBreach>,
    },
    Transfers(Vec<ResultCode>),
    Payment(Result<Payment, CommandError>),
    Refund(Result<(Refund, Payment), CommandError>),
    /// The batch's end is recorded.
    BatchEnded,
    /// The account after a `PATCH`.
    AccountUpdated(Result<Account, CommandError>),
    /// The clearing window closed, with its positions.
    ClearingWindow(Result<ClearingWindow, CommandError>),
}
