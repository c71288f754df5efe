//! Amounts in minor units, and exact conversion from and to decimal text.

use crate::Currency;
use std::fmt;

/// The largest amount, and the largest value any balance counter may reach: `i64::MAX` minor
/// units, so that every amount and every balance fits the signed 64-bit integers of SQL stores
/// and JSON readers, and `credits - debits` never overflows.
pub const AMOUNT_MAX: u64 = i64::MAX as u64;

/// A positive number of minor units (cents, yen, fils), at most [`AMOUNT_MAX`].
/// No `Default`, no float conversion, checked arithmetic only.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Amount(u64);

impl Amount {
    /// `None` for zero and for values above [`AMOUNT_MAX`].
    pub fn new(minor: u64) -> Option<Amount> {
        (minor > 0 && minor <= AMOUNT_MAX).then_some(Amount(minor))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        Amount::new(self.0.checked_add(other.0)?)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a decimal text is not an amount of a currency.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a decimal number (digits, with at most one '.')")]
    Syntax(String),
    #[error("amount {text:?} has {found} decimals but {currency} allows {allowed}")]
    TooManyDecimals { text: String, currency: Currency, found: usize, allowed: u8 },
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount {0:?} is too large (at most 9223372036854775807 minor units)")]
    TooLarge(String),
}

/// Parses a decimal amount in major units ("1234.50") into minor units of `currency`, exactly.
///
/// Accepted: ASCII digits with at most one '.', at least one digit before it
/// (".5" and "5." are rejected as likely typos), no sign, no exponent, no thousands separators,
/// at most as many decimals as the currency has (trailing zeros beyond that are also
/// rejected: "10.500" in EUR is ambiguous input, not a rounding opportunity). Zero is rejected.
pub fn parse_amount(text: &str, currency: Currency) -> Result<Amount, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let syntax = || AmountError::Syntax(text.to_owned());
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(syntax());
    }
    let fraction = fraction.unwrap_or("");
    let allowed = currency.minor_units();
    if fraction.len() > usize::from(allowed) {
        return Err(AmountError::TooManyDecimals { text: text.to_owned(), currency, found: fraction.len(), allowed });
    }
    let too_large = || AmountError::TooLarge(text.to_owned());
    let mut minor: u64 = 0;
    let padding = usize::from(allowed) - fraction.len();
    for b in whole.bytes().chain(fraction.bytes()).chain(std::iter::repeat_n(b'0', padding)) {
        minor = minor.checked_mul(10).and_then(|m| m.checked_add(u64::from(b - b'0'))).ok_or_else(too_large)?;
    }
    if minor == 0 {
        return Err(AmountError::NotPositive);
    }
    Amount::new(minor).ok_or_else(too_large)
}

/// Formats minor units as a decimal in major units with exactly the currency's decimals:
/// 123450 EUR is "1234.50", 500 JPY is "500", 1 KWD is "0.001".
pub fn format_amount(minor: u64, currency: Currency) -> String {
    let units = currency.minor_units();
    if units == 0 {
        return minor.to_string();
    }
    // One allocation: reports write this for every item of a batch.
    let scale = 10u64.pow(u32::from(units));
    format!("{}.{:0width$}", minor / scale, minor % scale, width = usize::from(units))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn parses_exactly() {
        let cases = [
            ("1234.50", "EUR", 123450),
            ("1234.5", "EUR", 123450),
            ("1234", "EUR", 123400),
            ("0.01", "EUR", 1),
            ("500", "JPY", 500),
            ("0.001", "KWD", 1),
            ("1.234", "KWD", 1234),
            ("007.10", "USD", 710),
            ("92233720368547758.07", "USD", AMOUNT_MAX),
        ];
        for (text, code, minor) in cases {
            assert_eq!(parse_amount(text, cur(code)).map(Amount::get), Ok(minor), "{text} {code}");
        }
    }

    #[test]
    fn rejects_with_reason() {
        let eur = cur("EUR");
        let err = |t: &str, c: Currency| parse_amount(t, c).unwrap_err();
        assert_eq!(err("", eur), AmountError::Empty);
        for bad in ["-1", "+1", "1e3", "1,00", ".5", "5.", "1.2.3", " 1", "1 ", "١", "0x10", "NaN"] {
            assert!(matches!(err(bad, eur), AmountError::Syntax(_)), "{bad}");
        }
        assert!(matches!(err("1.005", eur), AmountError::TooManyDecimals { found: 3, allowed: 2, .. }));
        assert!(matches!(err("1.0", cur("JPY")), AmountError::TooManyDecimals { .. }));
        assert_eq!(err("0.00", eur), AmountError::NotPositive);
        assert!(matches!(err("92233720368547758.08", eur), AmountError::TooLarge(_)));
        assert!(matches!(err("99999999999999999999999", eur), AmountError::TooLarge(_)));
    }

    #[test]
    fn formats() {
        assert_eq!(format_amount(123450, cur("EUR")), "1234.50");
        assert_eq!(format_amount(5, cur("EUR")), "0.05");
        assert_eq!(format_amount(0, cur("EUR")), "0.00");
        assert_eq!(format_amount(500, cur("JPY")), "500");
        assert_eq!(format_amount(1, cur("KWD")), "0.001");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(minor in 1..=AMOUNT_MAX, index in 0usize..150) {
            let currency = Currency::all().nth(index % Currency::all().count()).unwrap();
            let text = format_amount(minor, currency);
            prop_assert_eq!(parse_amount(&text, currency).map(Amount::get), Ok(minor));
        }
    }
}
