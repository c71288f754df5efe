//! 128-bit identifiers with a type prefix in text (`acct_…`, `tr_…`, `pay_…`).
//!
//! The text form is the prefix, an underscore and the 128 bits in 26 lower-case Crockford
//! base32 digits. Ids made by the server are time-ordered (48 bits of milliseconds, then 80
//! random bits, like a ULID) so that stores index them in insertion order. The ledger never makes
//! random ids itself; it only derives ids from others, deterministically.

use std::fmt;
use std::str::FromStr;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const DIGITS: usize = 26;

fn encode(value: u128, out: &mut [u8; DIGITS]) {
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (DIGITS - 1 - i);
        *slot = ALPHABET[((value >> shift) & 31) as usize];
    }
}

/// Each byte's digit value, or `INVALID`: the alphabet in either case, and Crockford's
/// aliases (`o` for 0, `i` and `l` for 1). A table, because every id a request names is
/// decoded on the request's path.
const DIGIT: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut digit: u8 = 0;
    while (digit as usize) < ALPHABET.len() {
        let letter = ALPHABET[digit as usize];
        table[letter as usize] = digit;
        table[letter.to_ascii_uppercase() as usize] = digit;
        digit += 1;
    }
    table[b'o' as usize] = 0;
    table[b'O' as usize] = 0;
    table[b'i' as usize] = 1;
    table[b'I' as usize] = 1;
    table[b'l' as usize] = 1;
    table[b'L' as usize] = 1;
    table
};
const INVALID: u8 = 0xff;

fn decode(text: &str) -> Option<u128> {
    if text.len() != DIGITS {
        return None;
    }
    let mut value: u128 = 0;
    for (i, b) in text.bytes().enumerate() {
        let digit = DIGIT[usize::from(b)];
        if digit == INVALID {
            return None;
        }
        // The first digit carries only 3 bits (26 * 5 = 130).
        if i == 0 && digit > 7 {
            return None;
        }
        value = (value << 5) | u128::from(digit);
    }
    Some(value)
}

/// Mixes 128 bits (a bijection), for deriving one id from another.
fn mix(mut x: u128) -> u128 {
    x ^= x >> 67;
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    x ^= x >> 59;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9_94d0_49bb_1331_11eb);
    x ^ (x >> 71)
}

/// Why a text is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a valid {prefix}_ id")]
pub struct IdError {
    pub prefix: &'static str,
    pub text: String,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u128);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Whether `text` is this id's own text form, as `Display` writes it: not merely a
            /// spelling that reads as it (upper case and Crockford's aliases read as it too).
            /// Without an allocation, for stores that keep the text only when it says more.
            pub fn is_written_as(self, text: &str) -> bool {
                let Some(digits) = text.strip_prefix(concat!($prefix, "_")) else { return false };
                let mut own = [0u8; DIGITS];
                encode(self.0, &mut own);
                digits.as_bytes() == own
            }

            /// An id derived from this one and a tag: the same inputs always give the same id,
            /// different tags give unrelated ids.
            pub fn derive(self, tag: u64) -> u128 {
                mix(self.0 ^ mix(u128::from(tag) ^ 0x5bd1_e995))
            }

            /// [`derive`](Self::derive), made time-ordered: the top 48 bits are the
            /// milliseconds of `now_ns`, the rest the derived bits. The transfers the ledger
            /// makes for a payment, a refund or an expiry then sort after the ones before them,
            /// and the store appends them to its primary key instead of writing a page of it
            /// at random for each. The same id, tag and `now_ns` always give the same id.
            pub fn derive_at(self, tag: u64, now_ns: u64) -> u128 {
                time_ordered(now_ns / 1_000_000, self.derive(tag))
            }
        }

        impl $name {
            /// Appends the text form (what `Display` writes) to `out`, for a caller that
            /// writes many ids into one buffer without a formatter.
            pub fn push_text(self, out: &mut Vec<u8>) {
                let mut digits = [0u8; DIGITS];
                encode(self.0, &mut digits);
                out.extend_from_slice(concat!($prefix, "_").as_bytes());
                out.extend_from_slice(&digits);
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut digits = [0u8; DIGITS];
                encode(self.0, &mut digits);
                f.write_str($prefix)?;
                f.write_str("_")?;
                // The alphabet is ASCII, so this cannot fail.
                f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                text.strip_prefix(concat!($prefix, "_"))
                    .and_then(decode)
                    .map($name)
                    .ok_or_else(|| IdError { prefix: $prefix, text: text.to_owned() })
            }
        }
    };
}

typed_id!(
    /// A tenant: the owner of every other object.
    TenantId, "ten");
typed_id!(
    /// A ledger account.
    AccountId, "acct");
typed_id!(
    /// A transfer: an immutable movement between two accounts.
    TransferId, "tr");
typed_id!(
    /// A real-time payment order.
    PaymentId, "pay");
typed_id!(
    /// A refund of a payment.
    RefundId, "re");
typed_id!(
    /// A batch of payments (a file or a bulk call).
    BatchId, "bat");
typed_id!(
    /// An FX quote: a rate locked for one cross-currency payment.
    QuoteId, "fxq");
typed_id!(
    /// A webhook endpoint of a tenant.
    WebhookEndpointId, "we");
typed_id!(
    /// An event of the outbox; the number is the event's sequence number.
    EventId, "evt");
typed_id!(
    /// The delivery of one event to one webhook endpoint.
    DeliveryId, "whd");
typed_id!(
    /// A closed clearing (settlement) window of one tenant and currency.
    ClearingWindowId, "cw");

/// Builds a time-ordered id from milliseconds since the epoch and 80 random bits.
pub fn time_ordered(unix_ms: u64, random: u128) -> u128 {
    (u128::from(unix_ms & 0xffff_ffff_ffff) << 80) | (random & ((1u128 << 80) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form() {
        assert_eq!(AccountId(0).to_string(), "acct_00000000000000000000000000");
        assert_eq!(TransferId(u128::MAX).to_string(), "tr_7zzzzzzzzzzzzzzzzzzzzzzzzz");
        assert!("acct_80000000000000000000000000".parse::<AccountId>().is_err());
        assert!("pay_00000000000000000000000000".parse::<AccountId>().is_err());
        assert!("acct_0000000000000000000000000".parse::<AccountId>().is_err());
        assert!("acct_0000000000000000000000000u".parse::<AccountId>().is_err());
        assert!("acct_0000000000000000000000000é".parse::<AccountId>().is_err());
        // Crockford's aliases: o and O read as 0, i, I, l and L as 1.
        assert_eq!("acct_0000000000000000000000000o".parse::<AccountId>(), Ok(AccountId(0)));
        for one in ["i", "I", "l", "L"] {
            assert_eq!(format!("acct_000000000000000000000000{one}{one}").parse::<AccountId>(), Ok(AccountId(33)));
        }
    }

    #[test]
    fn written_as_only_in_its_own_spelling() {
        let id = AccountId(33);
        assert!(id.is_written_as("acct_00000000000000000000000011"));
        for other in [
            "acct_000000000000000000000000ii",
            "ACCT_00000000000000000000000011",
            "acct_00000000000000000000000012",
            "acct_0000000000000000000000011",
            "pay_00000000000000000000000011",
            "",
        ] {
            assert!(!id.is_written_as(other), "{other}");
        }
    }

    #[test]
    fn time_ordered_ids_sort_by_time() {
        assert!(time_ordered(2, 0) > time_ordered(1, u128::MAX));
    }

    proptest! {
        #[test]
        fn round_trips(v: u128) {
            let id = PaymentId(v);
            prop_assert_eq!(id.to_string().parse::<PaymentId>(), Ok(id));
            prop_assert_eq!(id.to_string().to_uppercase().replace("PAY_", "pay_").parse::<PaymentId>(), Ok(id));
        }

        #[test]
        fn derived_at_sorts_by_time_whatever_the_source(v: u128, w: u128, tag: u64, ms in 0u64..1 << 40) {
            let now = ms * 1_000_000;
            prop_assert_eq!(PaymentId(v).derive_at(tag, now), PaymentId(v).derive_at(tag, now + 999_999));
            prop_assert!(PaymentId(v).derive_at(tag, now) < PaymentId(w).derive_at(tag, now + 1_000_000));
            prop_assert_eq!(PaymentId(v).derive_at(tag, now) >> 80, u128::from(ms));
            prop_assert_ne!(PaymentId(v).derive_at(tag, now), PaymentId(v).derive_at(tag ^ 1, now));
        }

        #[test]
        fn derive_is_deterministic_and_tag_sensitive(v: u128, a: u64, b: u64) {
            prop_assume!(a != b);
            prop_assert_eq!(PaymentId(v).derive(a), PaymentId(v).derive(a));
            prop_assert_ne!(PaymentId(v).derive(a), PaymentId(v).derive(b));
        }
    }
}
