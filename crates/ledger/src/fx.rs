//! Foreign exchange: exchange rates as exact decimals, the conversion of amounts between two
//! currencies' minor units, the fee, and the quote that fixes all three for a payment.
//!
//! **The rounding rule** (one rule, in the platform's favour): a conversion never gives away a
//! minor unit of the platform's liquidity account.
//!
//! - From a fixed source amount, what leaves the liquidity account in the target currency is
//!   the *floor* of the exact product: `target = ⌊source × rate × 10^(e_target − e_source)⌋`.
//! - From a fixed target amount, what the payer must pay in is the *ceiling* of the exact
//!   quotient: `source = ⌈target ÷ rate ÷ 10^(e_target − e_source)⌉`.
//! - The fee, in basis points of the source amount, is the *ceiling*:
//!   `fee = ⌈source × bps ÷ 10 000⌉` (a fee of 0 bps is 0).
//!
//! Here `e` is a currency's number of minor-unit digits (USD 2, JPY 0, KWD 3). The arithmetic is
//! integer-exact: a rate is an integer mantissa and a decimal scale (at most 12 significant
//! digits and 12 decimals, so every product fits in 128 bits), never a float. `10000 × 1.0001` is `10001`, exactly.

use crate::{Currency, PaymentId, TenantId, AMOUNT_MAX};
use std::fmt;

/// The most significant digits a rate may have.
pub const RATE_DIGITS_MAX: u32 = 12;
/// The most digits after the decimal point a rate may have.
pub const RATE_SCALE_MAX: u32 = 12;
/// The most basis points a fee may be: 10 000 bps is 100 %.
pub const FEE_BPS_MAX: u32 = 10_000;
/// The longest a quote may be locked: one hour.
pub const LOCK_SECONDS_MAX: u64 = 3600;

/// An exchange rate, greater than zero: `mantissa × 10^-scale` units of the quote currency for
/// one unit of the base currency. Parsed exactly from its decimal text and kept in a canonical
/// form (no trailing zeros after the point), so that one rate has one text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    mantissa: u64,
    scale: u32,
}

/// Why a text is not a rate.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RateError {
    #[error(
        "a rate is a decimal number such as \"1.0842\": digits with at most one decimal point, no sign, no exponent"
    )]
    Syntax,
    #[error("a rate must be greater than zero")]
    Zero,
    #[error("a rate has at most 12 significant digits")]
    TooManyDigits,
    #[error("a rate has at most 12 digits after the decimal point")]
    TooManyDecimals,
}

impl Rate {
    /// Parses a rate: ASCII digits with at most one `.`, at least one digit on each side of
    /// it, greater than zero, at most [`RATE_DIGITS_MAX`] significant digits and
    /// [`RATE_SCALE_MAX`] decimals (trailing zeros after the point do not count).
    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || (text.contains('.') && fraction.is_empty()) {
            return Err(RateError::Syntax);
        }
        let fraction = fraction.trim_end_matches('0');
        let significant = format!("{whole}{fraction}");
        let significant = significant.trim_start_matches('0');
        if significant.is_empty() {
            return Err(RateError::Zero);
        }
        if significant.len() > RATE_DIGITS_MAX as usize {
            return Err(RateError::TooManyDigits);
        }
        let scale = u32::try_from(fraction.len()).map_err(|_| RateError::TooManyDecimals)?;
        if scale > RATE_SCALE_MAX {
            return Err(RateError::TooManyDecimals);
        }
        // At most 12 digits: fits in a u64.
        let mantissa = significant.parse::<u64>().map_err(|_| RateError::TooManyDigits)?;
        Ok(Rate { mantissa, scale })
    }

    pub fn mantissa(self) -> u64 {
        self.mantissa
    }

    pub fn scale(self) -> u32 {
        self.scale
    }
}

impl fmt::Display for Rate {
    /// The canonical text: `1.0842`, `82.42135`, `0.79`, `150`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return f.write_str(&digits);
        }
        if digits.len() > scale {
            let (whole, fraction) = digits.split_at(digits.len() - scale);
            write!(f, "{whole}.{fraction}")
        } else {
            write!(f, "0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a conversion has no result.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ConversionError {
    /// The converted amount rounds to zero minor units.
    #[error("the converted amount is less than one minor unit")]
    TooSmall,
    /// The converted amount (or the source plus the fee) is above the largest amount.
    #[error("the converted amount is above the largest amount")]
    TooLarge,
}

/// `10^exponent`, if it fits.
fn pow10(exponent: u32) -> Option<u128> {
    10u128.checked_pow(exponent)
}

/// The fraction `numerator / denominator` such that `target = source × numerator / denominator`
/// exactly, in minor units.
fn ratio(rate: Rate, from: Currency, to: Currency) -> Option<(u128, u128)> {
    let (e_from, e_to) = (u32::from(from.minor_units()), u32::from(to.minor_units()));
    let numerator = u128::from(rate.mantissa).checked_mul(pow10(e_to.saturating_sub(e_from))?)?;
    let denominator = pow10(rate.scale)?.checked_mul(pow10(e_from.saturating_sub(e_to))?)?;
    Some((numerator, denominator))
}

fn amount(value: u128) -> Result<u64, ConversionError> {
    match u64::try_from(value) {
        Ok(0) => Err(ConversionError::TooSmall),
        Ok(v) if v <= AMOUNT_MAX => Ok(v),
        _ => Err(ConversionError::TooLarge),
    }
}

/// The target amount for `source` minor units of `from` at `rate` (units of `to` per unit of
/// `from`): the floor of the exact value, in `to`'s minor units.
pub fn convert_source(source: u64, rate: Rate, from: Currency, to: Currency) -> Result<u64, ConversionError> {
    let (numerator, denominator) = ratio(rate, from, to).ok_or(ConversionError::TooLarge)?;
    let product = u128::from(source).checked_mul(numerator).ok_or(ConversionError::TooLarge)?;
    amount(product / denominator)
}

/// The source amount that buys `target` minor units of `to`: the ceiling of the exact value, in
/// `from`'s minor units (so that [`convert_source`] of it gives at least `target`).
pub fn source_for_target(target: u64, rate: Rate, from: Currency, to: Currency) -> Result<u64, ConversionError> {
    let (numerator, denominator) = ratio(rate, from, to).ok_or(ConversionError::TooLarge)?;
    let scaled = u128::from(target).checked_mul(denominator).ok_or(ConversionError::TooLarge)?;
    amount(scaled.div_ceil(numerator))
}

/// The fee of `bps` basis points on `source`: the ceiling, in the source currency's minor units
/// (0 for 0 bps). `bps` is at most [`FEE_BPS_MAX`], so the fee is at most the source.
pub fn fee(source: u64, bps: u32) -> u64 {
    let exact = (u128::from(source) * u128::from(bps.min(FEE_BPS_MAX))).div_ceil(10_000);
    // At most `source`, itself a u64.
    u64::try_from(exact).unwrap_or(source)
}

/// A quote: a rate locked until `expires_at` for one conversion, with both amounts and the fee
/// fixed. A payment that names it moves exactly these amounts, whatever the rate is by then.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Quote {
    pub id: QuoteId,
    pub tenant: TenantId,
    pub from: Currency,
    pub to: Currency,
    pub rate: Rate,
    /// What the payer pays, in `from`'s minor units (the fee comes on top).
    pub source_amount: u64,
    /// What the payee receives, in `to`'s minor units.
    pub target_amount: u64,
    /// Charged on top of `source_amount`, in `from`'s minor units, to the fee revenue account.
    pub fee: u64,
    pub created_at: u64,
    /// A payment must be created with it before this instant (nanoseconds).
    pub expires_at: u64,
    /// The payment that used it: a quote is used once.
    pub used_by: Option<PaymentId>,
}

/// Which amount of a quote request is fixed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fixed {
    Source(u64),
    Target(u64),
}

/// The amounts of a quote: `(source, target, fee)`, by the rounding rule of this module. The
/// source plus the fee must also be an amount.
pub fn quote_amounts(
    fixed: Fixed,
    rate: Rate,
    from: Currency,
    to: Currency,
    fee_bps: u32,
) -> Result<(u64, u64, u64), ConversionError> {
    let (source, target) = match fixed {
        Fixed::Source(source) => {
            if source == 0 {
                return Err(ConversionError::TooSmall);
            }
            (source, convert_source(source, rate, from, to)?)
        }
        Fixed::Target(target) => {
            if target == 0 {
                return Err(ConversionError::TooSmall);
            }
            (source_for_target(target, rate, from, to)?, target)
        }
    };
    let fee = fee(source, fee_bps);
    if source.checked_add(fee).is_none_or(|total| total > AMOUNT_MAX) {
        return Err(ConversionError::TooLarge);
    }
    Ok((source, target, fee))
}

/// The payer's side of one cross-currency batch item of `target` minor units of `to`, at the
/// batch's `rate` for the pair and the tenant's `fee_bps`: `(source, fee)`, each rounded up
/// for the item on its own (the rule of [`quote_amounts`] with the target fixed). The batch's
/// quote for the pair is the sum of its items: so each item's legs are exact integers, the
/// items add up to the quote to the minor unit, and the platform never gives a minor unit away
/// (each item is rounded in its favour; the pair's total may exceed the ceiling of the whole
/// by less than one minor unit per item).
pub fn batch_item_fx(
    target: u64,
    rate: Rate,
    from: Currency,
    to: Currency,
    fee_bps: u32,
) -> Result<(u64, u64), ConversionError> {
    let (source, _, fee) = quote_amounts(Fixed::Target(target), rate, from, to, fee_bps)?;
    Ok((source, fee))
}

/// The tag that derives a batch's quote for a currency pair from the batch id.
const TAG_BATCH_QUOTE: u64 = 3 << 56;

/// The id of `batch`'s quote for the pair `from` → `to`: derived, so that validating the batch
/// again (after a restart) names the same quote.
pub fn batch_quote_id(batch: crate::BatchId, from: Currency, to: Currency) -> QuoteId {
    QuoteId(batch.derive(TAG_BATCH_QUOTE | currency_tag(from) << 24 | currency_tag(to)))
}

pub use crate::ids::QuoteId;
pub use crate::state::{batch_item_fx_transfers, payment_fx_transfers};

/// Tags that derive the ids of the platform's FX accounts from a tenant id and a currency.
const TAG_LIQUIDITY: u64 = 1 << 40;
const TAG_FEE_REVENUE: u64 = 2 << 40;

/// The currency as a number, for deriving ids: its three letters.
fn currency_tag(currency: Currency) -> u64 {
    currency.code().bytes().fold(0u64, |tag, b| (tag << 8) | u64::from(b))
}

/// The tenant's FX liquidity account in `currency`: cross-currency payments pay into it in the
/// source currency and out of it in the target currency. Its id is derived from the tenant and
/// the currency, so it is the same on every node and every replay; the engine opens it on first
/// use, with no overdraft limit (its balance is the platform's position in that currency).
pub fn liquidity_account(tenant: TenantId, currency: Currency) -> crate::AccountId {
    crate::AccountId(tenant.derive(TAG_LIQUIDITY | currency_tag(currency)))
}

/// The tenant's FX fee revenue account in `currency`, opened like [`liquidity_account`] (it
/// is only ever credited, so it never goes below zero).
pub fn fee_revenue_account(tenant: TenantId, currency: Currency) -> crate::AccountId {
    crate::AccountId(tenant.derive(TAG_FEE_REVENUE | currency_tag(currency)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    fn r(text: &str) -> Rate {
        Rate::parse(text).unwrap()
    }

    #[test]
    fn the_examples_of_the_issue() {
        for (source, rate, from, to, target) in [
            (10_000, "82.42135", "USD", "INR", 824_213),
            (229_019, "0.79", "USD", "GBP", 180_925),
            (10_000, "1.0001", "EUR", "USD", 10_001),
            // 100.00 EUR at 161.23 is 16 123 yen (no minor unit).
            (10_000, "161.23", "EUR", "JPY", 16_123),
            // 100.00 USD at 0.30712 is 30.712 KWD (three decimals).
            (10_000, "0.30712", "USD", "KWD", 30_712),
            // 1 000 yen at 0.00617 is 6.17 EUR.
            (1_000, "0.00617", "JPY", "EUR", 617),
            // 1.234 KWD at 3.2561 is 4.0180274 USD: 4.01.
            (1_234, "3.2561", "KWD", "USD", 401),
        ] {
            assert_eq!(convert_source(source, r(rate), c(from), c(to)), Ok(target), "{source} × {rate}");
        }
    }

    #[test]
    fn a_fixed_target_costs_the_ceiling() {
        // 180 925 pence at 0.79 is 229 018.98… cents: 229 019.
        assert_eq!(source_for_target(180_925, r("0.79"), c("USD"), c("GBP")), Ok(229_019));
        // Exactly divisible: no rounding.
        assert_eq!(source_for_target(10_001, r("1.0001"), c("EUR"), c("USD")), Ok(10_000));
        // 16 123 yen at 161.23 is exactly 100.00 EUR; 16 124 yen needs 100.01.
        assert_eq!(source_for_target(16_123, r("161.23"), c("EUR"), c("JPY")), Ok(10_000));
        assert_eq!(source_for_target(16_124, r("161.23"), c("EUR"), c("JPY")), Ok(10_001));
    }

    #[test]
    fn fees_round_up() {
        assert_eq!(fee(10_000, 0), 0);
        assert_eq!(fee(10_000, 25), 25);
        assert_eq!(fee(10_001, 25), 26); // 25.0025
        assert_eq!(fee(1, 1), 1);
        assert_eq!(fee(AMOUNT_MAX, FEE_BPS_MAX), AMOUNT_MAX);
    }

    #[test]
    fn rates_parse_exactly_or_not_at_all() {
        for (text, canonical) in [
            ("1.0842", "1.0842"),
            ("82.42135", "82.42135"),
            ("0.79", "0.79"),
            ("150", "150"),
            ("150.00", "150"),
            ("007.50", "7.5"),
            ("0.000000000001", "0.000000000001"),
            ("123456789012", "123456789012"),
            ("1234567.89012", "1234567.89012"),
        ] {
            assert_eq!(r(text).to_string(), canonical, "{text}");
        }
        for (text, error) in [
            ("", RateError::Syntax),
            ("1.", RateError::Syntax),
            (".5", RateError::Syntax),
            ("-1.2", RateError::Syntax),
            ("+1.2", RateError::Syntax),
            ("1e3", RateError::Syntax),
            ("1.2.3", RateError::Syntax),
            (" 1.2", RateError::Syntax),
            ("1,2", RateError::Syntax),
            ("0", RateError::Zero),
            ("0.000", RateError::Zero),
            ("1234567890123", RateError::TooManyDigits),
            ("1.23456789012345", RateError::TooManyDigits),
            ("0.0000000000001", RateError::TooManyDecimals),
        ] {
            assert_eq!(Rate::parse(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn conversions_out_of_range_are_errors() {
        assert_eq!(convert_source(1, r("0.5"), c("USD"), c("EUR")), Err(ConversionError::TooSmall));
        assert_eq!(convert_source(AMOUNT_MAX, r("2"), c("USD"), c("EUR")), Err(ConversionError::TooLarge));
        assert_eq!(convert_source(AMOUNT_MAX, r("999999999999"), c("JPY"), c("KWD")), Err(ConversionError::TooLarge));
        assert_eq!(
            source_for_target(AMOUNT_MAX, r("0.000000000001"), c("KWD"), c("JPY")),
            Err(ConversionError::TooLarge)
        );
        assert_eq!(
            quote_amounts(Fixed::Source(AMOUNT_MAX), r("1"), c("USD"), c("EUR"), 1),
            Err(ConversionError::TooLarge)
        );
        assert_eq!(quote_amounts(Fixed::Target(0), r("1"), c("USD"), c("EUR"), 0), Err(ConversionError::TooSmall));
    }

    #[test]
    fn fx_accounts_are_distinct_per_tenant_currency_and_kind() {
        let (a, b) = (TenantId(1), TenantId(2));
        let ids = [
            liquidity_account(a, c("USD")),
            liquidity_account(a, c("EUR")),
            liquidity_account(b, c("USD")),
            fee_revenue_account(a, c("USD")),
        ];
        for (i, x) in ids.iter().enumerate() {
            for y in &ids[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(liquidity_account(a, c("USD")), liquidity_account(a, c("USD")));
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(vec![c("USD"), c("EUR"), c("JPY"), c("KWD"), c("INR"), c("CLF")])
    }

    fn rate() -> impl Strategy<Value = Rate> {
        (1u64..1_000_000_000_000, 0u32..=RATE_SCALE_MAX).prop_map(|(m, s)| {
            Rate::parse(&{
                let rate = Rate { mantissa: m, scale: s };
                rate.to_string()
            })
            .unwrap()
        })
    }

    /// The exact value of `source × rate` in the target's minor units, as a fraction.
    fn exact(source: u64, rate: Rate, from: Currency, to: Currency) -> (u128, u128) {
        let (n, d) = ratio(rate, from, to).unwrap();
        (u128::from(source) * n, d)
    }

    proptest! {
        #[test]
        fn the_target_is_the_largest_integer_not_above_the_exact_value(
            source in 1u64..=AMOUNT_MAX, rate in rate(), from in currency(), to in currency(),
        ) {
            let (n, d) = exact(source, rate, from, to);
            match convert_source(source, rate, from, to) {
                Ok(target) => {
                    // target ≤ exact < target + 1
                    prop_assert!(u128::from(target) * d <= n);
                    prop_assert!(n < (u128::from(target) + 1) * d);
                }
                Err(ConversionError::TooSmall) => prop_assert!(n < d),
                Err(ConversionError::TooLarge) => {
                    prop_assert!(n / d > u128::from(AMOUNT_MAX));
                }
            }
        }

        #[test]
        fn a_fixed_target_is_paid_for_and_never_more_than_one_minor_unit_over(
            target in 1u64..=1_000_000_000_000_000, rate in rate(), from in currency(), to in currency(),
        ) {
            if let Ok(source) = source_for_target(target, rate, from, to) {
                // The source buys at least the target…
                let (n, d) = exact(source, rate, from, to);
                prop_assert!(n >= u128::from(target) * d);
                // …and one minor unit less would not.
                let (n, d) = exact(source - 1, rate, from, to);
                prop_assert!(n < u128::from(target) * d);
            }
        }

        #[test]
        fn round_trips_never_create_money_for_the_payer(
            source in 1u64..=1_000_000_000_000_000, rate in rate(), from in currency(), to in currency(),
        ) {
            // Converting and buying the result back never costs less than was paid.
            if let Ok(target) = convert_source(source, rate, from, to) {
                prop_assert!(source_for_target(target, rate, from, to).is_ok_and(|back| back <= source));
            }
            // Buying a target, then converting what it cost, gives at least the target.
            if let Ok(paid) = source_for_target(source, rate, from, to) {
                if let Ok(got) = convert_source(paid, rate, from, to) {
                    prop_assert!(got >= source);
                }
            }
        }

        #[test]
        fn the_fee_is_the_smallest_integer_not_below_the_exact_fee(
            source in 1u64..=AMOUNT_MAX, bps in 0u32..=FEE_BPS_MAX,
        ) {
            let fee = fee(source, bps);
            let exact = u128::from(source) * u128::from(bps);
            prop_assert!(u128::from(fee) * 10_000 >= exact);
            prop_assert!(fee == 0 || (u128::from(fee) - 1) * 10_000 < exact);
            prop_assert!(fee <= source);
        }

        #[test]
        fn a_batch_quote_is_its_items_and_never_costs_the_platform(
            targets in prop::collection::vec(1u64..=1_000_000_000, 1..20),
            rate in rate(), from in currency(), to in currency(), bps in 0u32..=FEE_BPS_MAX,
        ) {
            let mut sums = (0u128, 0u128, 0u128);
            for &target in &targets {
                let Ok((source, fee)) = batch_item_fx(target, rate, from, to, bps) else { return Ok(()) };
                // Each item's source buys its amount, and one minor unit less would not.
                let (n, d) = exact(source, rate, from, to);
                prop_assert!(n >= u128::from(target) * d);
                let (n, d) = exact(source - 1, rate, from, to);
                prop_assert!(n < u128::from(target) * d);
                prop_assert_eq!(fee, super::fee(source, bps));
                sums = (sums.0 + u128::from(source), sums.1 + u128::from(target), sums.2 + u128::from(fee));
            }
            // The quote (the sums) buys at least its target in one conversion, and costs at
            // most one minor unit per item more than the whole would.
            let (n, d) = ratio(rate, from, to).unwrap();
            prop_assert!(sums.0 * n >= sums.1 * d);
            let whole = (sums.1 * d).div_ceil(n);
            prop_assert!(sums.0 >= whole && sums.0 - whole < targets.len() as u128);
        }

        #[test]
        fn a_rate_prints_as_it_parses(rate in rate()) {
            prop_assert_eq!(Rate::parse(&rate.to_string()), Ok(rate));
        }
    }
}
