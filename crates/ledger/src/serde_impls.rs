//! Serialize and Deserialize for the types whose derive would not keep their invariants
//! (feature `serde`, for the cluster's wire format). Decoding goes through the same checks as
//! the rest of the ledger: a currency through the ISO 4217 table, an amount through
//! [`Amount::new`], a balance counter against [`AMOUNT_MAX`], a [`CommandError`]'s texts
//! through the ledger's own set. Anything else is a decode error, never a panic.
//!
//! Ids are their 16 bytes, big-endian, as one byte string (17 bytes in postcard; a varint of a
//! time-ordered id would take 18 or 19). A currency is its three-letter code, so that a
//! currency added to the table between two releases does not shift the meaning of the others.

use crate::fx::Rate;
use crate::payment::PaymentStatus;
use crate::transfer::ResultCode;
use crate::{
    AccountId, Amount, BatchId, ClearingWindowId, CommandError, Currency, DeliveryId, EventId, LimitBreach, PaymentId,
    QuoteId, RefundId, TenantId, TransferId, WebhookEndpointId, AMOUNT_MAX,
};
use serde::de::{Error as _, Unexpected};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! id_bytes {
    ($($name:ident),+) => {$(
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0.to_be_bytes())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_bytes(IdBytes).map($name)
            }
        }
    )+};
}

/// An id's 16 bytes: one slice each way. A `[u8; 16]` is 16 elements, each pushed and read on
/// its own; with it, encoding a bulk submission took several times as long.
struct IdBytes;

impl serde::de::Visitor<'_> for IdBytes {
    type Value = u128;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the 16 bytes of an id")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<u128, E> {
        <[u8; 16]>::try_from(bytes).map(u128::from_be_bytes).map_err(|_| E::invalid_length(bytes.len(), &self))
    }
}

id_bytes!(
    TenantId,
    AccountId,
    TransferId,
    PaymentId,
    RefundId,
    BatchId,
    WebhookEndpointId,
    EventId,
    DeliveryId,
    QuoteId,
    ClearingWindowId
);

/// A rate is its canonical text, decoded through [`Rate::parse`]: a decoded rate has the same
/// bounds (greater than zero, at most 12 significant digits and 12 decimals) as a parsed one.
impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Rate::parse(&text).map_err(|_| D::Error::invalid_value(Unexpected::Str(&text), &"an exchange rate"))
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Every code of the table is three ASCII letters (`currency::tests`).
        let code = <[u8; 3]>::try_from(self.code().as_bytes())
            .map_err(|_| serde::ser::Error::custom("a currency code is not three bytes"))?;
        code.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = <[u8; 3]>::deserialize(deserializer)?;
        std::str::from_utf8(&code)
            .ok()
            .and_then(Currency::from_code)
            .ok_or_else(|| D::Error::invalid_value(Unexpected::Bytes(&code), &"an ISO 4217 code paycore knows"))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let minor = u64::deserialize(deserializer)?;
        Amount::new(minor).ok_or_else(|| {
            D::Error::invalid_value(Unexpected::Unsigned(minor), &"an amount between 1 and 9223372036854775807")
        })
    }
}

/// A balance counter, which never passes [`AMOUNT_MAX`].
pub(crate) fn counter<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = u64::deserialize(deserializer)?;
    if value > AMOUNT_MAX {
        return Err(D::Error::invalid_value(Unexpected::Unsigned(value), &"a balance counter of at most i64::MAX"));
    }
    Ok(value)
}

/// A signed balance or net of a clearing position, which never passes ±[`AMOUNT_MAX`].
pub(crate) fn signed<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let value = i64::deserialize(deserializer)?;
    if value == i64::MIN {
        return Err(D::Error::invalid_value(Unexpected::Signed(value), &"a balance of at most ±i64::MAX"));
    }
    Ok(value)
}

/// A field name a [`CommandError`] can carry.
struct Param(&'static str);

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CommandError::known_param(&text)
            .map(Param)
            .ok_or_else(|| D::Error::invalid_value(Unexpected::Str(&text), &"a field name the ledger's errors carry"))
    }
}

/// A message of [`CommandError::InvalidField`].
struct Message(&'static str);

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CommandError::known_message(&text)
            .map(Message)
            .ok_or_else(|| D::Error::invalid_value(Unexpected::Str(&text), &"a message the ledger's errors carry"))
    }
}

/// [`CommandError`] as decoded: the same variants in the same order (its Serialize is
/// derived), with the texts looked up. A derived Deserialize cannot give `&'static str`
/// fields without borrowing the input for `'static`.
#[derive(Deserialize)]
#[serde(rename = "CommandError")]
enum DecodedCommandError {
    AccountNotFound { param: Param },
    CurrencyMismatch { param: Param },
    SameAccount,
    ReferenceTaken,
    AlreadyExists,
    PaymentNotFound,
    UnexpectedState { status: PaymentStatus },
    AmountTooLarge { max: u64 },
    InvalidField { param: Param, message: Message },
    Rejected(ResultCode),
    QuoteNotFound,
    QuoteExpired,
    LimitExceeded(LimitBreach),
    AccountNotEmpty,
    WindowEmpty,
    PayerRequired,
    PayerMismatch,
}

impl<'de> Deserialize<'de> for CommandError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match DecodedCommandError::deserialize(deserializer)? {
            DecodedCommandError::AccountNotFound { param } => CommandError::AccountNotFound { param: param.0 },
            DecodedCommandError::CurrencyMismatch { param } => CommandError::CurrencyMismatch { param: param.0 },
            DecodedCommandError::SameAccount => CommandError::SameAccount,
            DecodedCommandError::ReferenceTaken => CommandError::ReferenceTaken,
            DecodedCommandError::AlreadyExists => CommandError::AlreadyExists,
            DecodedCommandError::PaymentNotFound => CommandError::PaymentNotFound,
            DecodedCommandError::UnexpectedState { status } => CommandError::UnexpectedState { status },
            DecodedCommandError::AmountTooLarge { max } => CommandError::AmountTooLarge { max },
            DecodedCommandError::InvalidField { param, message } => {
                CommandError::InvalidField { param: param.0, message: message.0 }
            }
            DecodedCommandError::Rejected(code) => CommandError::Rejected(code),
            DecodedCommandError::QuoteNotFound => CommandError::QuoteNotFound,
            DecodedCommandError::QuoteExpired => CommandError::QuoteExpired,
            DecodedCommandError::LimitExceeded(breach) => CommandError::LimitExceeded(breach),
            DecodedCommandError::AccountNotEmpty => CommandError::AccountNotEmpty,
            DecodedCommandError::WindowEmpty => CommandError::WindowEmpty,
            DecodedCommandError::PayerRequired => CommandError::PayerRequired,
            DecodedCommandError::PayerMismatch => CommandError::PayerMismatch,
        })
    }
}

/// Does not compile until a variant added to [`CommandError`] is added to
/// [`DecodedCommandError`] too (at the same place: the order is the format, and the round-trip
/// tests of `paycore-cluster` check every variant).
#[allow(dead_code)]
fn decoded_shape(error: &CommandError) -> DecodedCommandError {
    match *error {
        CommandError::AccountNotFound { param } => DecodedCommandError::AccountNotFound { param: Param(param) },
        CommandError::CurrencyMismatch { param } => DecodedCommandError::CurrencyMismatch { param: Param(param) },
        CommandError::SameAccount => DecodedCommandError::SameAccount,
        CommandError::ReferenceTaken => DecodedCommandError::ReferenceTaken,
        CommandError::AlreadyExists => DecodedCommandError::AlreadyExists,
        CommandError::PaymentNotFound => DecodedCommandError::PaymentNotFound,
        CommandError::UnexpectedState { status } => DecodedCommandError::UnexpectedState { status },
        CommandError::AmountTooLarge { max } => DecodedCommandError::AmountTooLarge { max },
        CommandError::InvalidField { param, message } => {
            DecodedCommandError::InvalidField { param: Param(param), message: Message(message) }
        }
        CommandError::Rejected(code) => DecodedCommandError::Rejected(code),
        CommandError::QuoteNotFound => DecodedCommandError::QuoteNotFound,
        CommandError::QuoteExpired => DecodedCommandError::QuoteExpired,
        CommandError::LimitExceeded(breach) => DecodedCommandError::LimitExceeded(breach),
        CommandError::AccountNotEmpty => DecodedCommandError::AccountNotEmpty,
        CommandError::WindowEmpty => DecodedCommandError::WindowEmpty,
        CommandError::PayerRequired => DecodedCommandError::PayerRequired,
        CommandError::PayerMismatch => DecodedCommandError::PayerMismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_the_ledger_makes_is_known_and_nothing_else() {
        assert_eq!(CommandError::known_param("payer_account"), Some("payer_account"));
        assert_eq!(CommandError::known_param("overdraft_limit"), Some("overdraft_limit"));
        assert_eq!(CommandError::known_param("amount must be greater than zero"), None);
        assert_eq!(
            CommandError::known_message("amount must be greater than zero"),
            Some("amount must be greater than zero")
        );
        assert_eq!(CommandError::known_message("amount"), None);
        assert_eq!(CommandError::known_param(""), None);
    }
}
