//! Real-time payments: a payment order moves through its statuses by way of transfers.

use crate::fx::Rate;
use crate::{AccountId, Currency, PaymentId, QuoteId, RefundId, ResultCode, TenantId, TransferId};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CaptureMethod {
    /// Confirmation moves the money.
    Automatic,
    /// Confirmation holds the money; a capture moves it (all or part), a cancel releases it.
    Manual,
}

impl CaptureMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMethod::Automatic => "automatic",
            CaptureMethod::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<CaptureMethod> {
        [CaptureMethod::Automatic, CaptureMethod::Manual].into_iter().find(|m| m.as_str() == text)
    }
}

/// ```text
/// requires_confirmation ──confirm──▶ succeeded (automatic) ──refunds──▶ (amount_refunded)
///        │        │          └─────▶ failed (failure_code)
///        │        └─confirm──▶ requires_capture (manual) ──capture──▶ succeeded
///        │                              ├──cancel──▶ cancelled
///        │                              └──expires──▶ expired (hold released)
///        ├──cancel──▶ cancelled
///        └──expires──▶ expired
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PaymentStatus {
    RequiresConfirmation,
    RequiresCapture,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::RequiresConfirmation => "requires_confirmation",
            PaymentStatus::RequiresCapture => "requires_capture",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::Expired => "expired",
        }
    }

    pub const ALL: [PaymentStatus; 6] = [
        PaymentStatus::RequiresConfirmation,
        PaymentStatus::RequiresCapture,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Cancelled,
        PaymentStatus::Expired,
    ];

    pub fn parse(text: &str) -> Option<PaymentStatus> {
        PaymentStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the payment can still change status by itself or by confirm/capture/cancel.
    /// (A succeeded payment can still be refunded; that does not change its status.)
    pub fn is_open(self) -> bool {
        matches!(self, PaymentStatus::RequiresConfirmation | PaymentStatus::RequiresCapture)
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Payment {
    pub id: PaymentId,
    pub tenant: TenantId,
    /// `None` until a scan of the payment's QR code names the payer (scan to pay): such a
    /// payment can only be confirmed by that scan.
    pub payer: Option<AccountId>,
    pub payee: AccountId,
    pub amount: u64,
    pub currency: Currency,
    pub capture_method: CaptureMethod,
    pub status: PaymentStatus,
    pub description: Option<String>,
    /// Why confirmation failed: the transfer's result code.
    pub failure_code: Option<ResultCode>,
    pub amount_captured: u64,
    pub amount_refunded: u64,
    /// Confirmation, and for manual capture the capture, must happen before this instant.
    pub expires_at: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// The transfer that confirmation made: the payment itself, or the hold.
    pub transfer: Option<TransferId>,
    /// A cross-currency payment's other side, fixed by its quote: `amount` and `currency` are
    /// what the payer pays (the source), this is what the payee receives and the fee.
    pub fx: Option<PaymentFx>,
    /// The merchant its QR code names (scan to pay). `None` for payments made before paycore
    /// had QR codes.
    pub merchant: Option<Merchant>,
}

/// The merchant a payment's EMVCo QR code names. Opaque to the ledger, like `description`; the
/// API checks the fields (printable ASCII, lengths, codes).
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Merchant {
    /// At most 25 characters (EMVCo tag 59).
    pub name: String,
    /// At most 15 characters (tag 60).
    pub city: String,
    /// ISO 3166-1 alpha-2 (tag 58).
    pub country: String,
    /// ISO 18245 merchant category code, four digits (tag 52).
    pub category_code: String,
}

/// The quoted side of a cross-currency payment.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PaymentFx {
    pub quote: QuoteId,
    pub rate: Rate,
    /// The payee's currency.
    pub target_currency: Currency,
    /// What the payee receives, in the target currency's minor units.
    pub target_amount: u64,
    /// Charged to the payer on top of the amount, in the payment's currency.
    pub fee: u64,
}

/// Tags for the ids of the transfers a payment makes, derived from the payment id so that they
/// are the same on every replay.
pub(crate) const TAG_CONFIRM: u64 = 1;
pub(crate) const TAG_CAPTURE: u64 = 2;
pub(crate) const TAG_CANCEL: u64 = 3;
pub(crate) const TAG_REFUND: u64 = 4;
pub(crate) const TAG_EXPIRE: u64 = 5;
/// A cross-currency payment's other transfers: the payee's side and the fee, derived from the
/// transfer that confirmation made (so a capture or a cancel finds the fee's hold again).
pub(crate) const TAG_FX_TARGET: u64 = 6;
pub(crate) const TAG_FX_FEE: u64 = 7;
pub(crate) const TAG_FX_FEE_RESOLVE: u64 = 8;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RefundStatus {
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<RefundStatus> {
        [RefundStatus::Succeeded, RefundStatus::Failed].into_iter().find(|s| s.as_str() == text)
    }
}

/// The longest reason a refund carries, in characters: pain.001's remittance text's limit,
/// which account statements also keep (a refunds batch item's reason is its remittance text).
/// It bounds a chunk of refund items on the cluster's wire too. The API and the refunds file
/// refuse a longer one.
pub const REFUND_REASON_CHARS_MAX: usize = 140;

#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Refund {
    pub id: RefundId,
    pub tenant: TenantId,
    pub payment: PaymentId,
    pub amount: u64,
    pub currency: Currency,
    pub status: RefundStatus,
    /// Why the refund failed (for example `insufficient_funds` on the payee).
    pub failure_code: Option<ResultCode>,
    pub transfer: TransferId,
    pub created_at: u64,
    /// Free text given with the refund (the API's `reason`, a refunds file's `reason` column).
    pub reason: Option<String>,
}
