//! Interest: exact decimal arithmetic for accrual, posting and what-if quotes. Pure: balances
//! and dates come in, amounts in minor units go out; no clock, no I/O.
//!
//! # The rules
//!
//! - **Decimals, never floats.** Rates and accrued interest are [`Decimal`] (`rust_decimal`: a
//!   96-bit integer and a scale, 28 significant digits). Amounts are minor units throughout, so
//!   the interest of a day is `base × rate ÷ days_in_year` minor units, kept unrounded.
//! - **A rate is a fraction per year in decimal text**: `"0.035"` is 3.5 % a year. At most
//!   [`RATE_DECIMALS_MAX`] decimals, between 0 and [`RATE_MAX`]; no sign, no exponent, no `%`.
//! - **Day counts**: Act/365 divides a day's interest by 365, Act/360 by 360, every day of
//!   every year (leap years included: Act/365 "fixed").
//! - **Each day earns on its closing balance.** A day whose closing balance is below the
//!   account's `min_balance` earns no credit interest. A day that closes below zero is charged
//!   the `debit_rate` on the overdrawn amount, if the account has one.
//! - **Compounding on unrounded amounts.** The base a day earns on is its closing balance, less
//!   the interest already posted into it, plus the exact interest compounded so far:
//!   `daily` compounds every day, `monthly` at the end of each calendar month (a quote, which
//!   has no calendar, compounds every 30 days), `none` never (simple interest on the
//!   principal). So posting (and its rounding) never changes what is earned.
//! - **Posting**: what is posted at the end of a period is `round(cumulative exact interest) −
//!   already posted`, rounded half-even (banker's rounding, `MidpointNearestEven`) to a whole
//!   minor unit. The posted total is always the rounded exact total: no per-day drift.

use crate::{Currency, UnknownName};
use rust_decimal::prelude::ToPrimitive;
pub use rust_decimal::Decimal;
use rust_decimal::RoundingStrategy;
use std::fmt;

/// The highest annual rate: 1, that is 100 % a year.
pub const RATE_MAX: Decimal = Decimal::ONE;
/// The most decimals a rate may have.
pub const RATE_DECIMALS_MAX: usize = 12;
/// The most days a quote covers: ten years.
pub const QUOTE_DAYS_MAX: u32 = 3660;

crate::vocabulary::vocabulary! {
    /// How many days a year has, for a day's share of the annual rate.
    DayCount {
        /// A day earns rate ÷ 365.
        Act365 = "act/365",
        /// A day earns rate ÷ 360.
        Act360 = "act/360",
    }
}

crate::vocabulary::vocabulary! {
    /// When accrued interest starts to earn interest itself.
    Compounding {
        /// Every day.
        Daily = "daily",
        /// At the end of every calendar month.
        Monthly = "monthly",
        /// Never: simple interest on the principal.
        None = "none",
    }
}

crate::vocabulary::vocabulary! {
    /// How often accrued interest is paid into (or charged to) the account.
    Posting {
        /// Every day.
        Daily = "daily",
        /// At the end of every calendar month.
        Monthly = "monthly",
    }
}

impl DayCount {
    fn days_in_year(self) -> Decimal {
        match self {
            DayCount::Act365 => Decimal::from(365),
            DayCount::Act360 => Decimal::from(360),
        }
    }
}

/// An account's interest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    /// Paid on positive balances, a fraction per year (0.035 is 3.5 %).
    pub annual_rate: Decimal,
    pub day_count: DayCount,
    pub compounding: Compounding,
    pub posting: Posting,
    /// A day closing below this many minor units earns no credit interest.
    pub min_balance: u64,
    /// Charged on negative balances (a credit line), a fraction per year; `None`: nothing.
    pub debit_rate: Option<Decimal>,
}

/// Why interest could not be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterestError {
    #[error("rate {0:?} is not a decimal fraction per year such as \"0.035\" (digits, at most one '.', at most 12 decimals)")]
    RateSyntax(String),
    #[error("rate {0:?} is above 1 (100 % a year)")]
    RateTooLarge(String),
    #[error("the interest is too large to compute exactly")]
    Overflow,
}

/// Parses a rate: a fraction per year in decimal text, `"0.035"` for 3.5 %.
pub fn parse_rate(text: &str) -> Result<Decimal, InterestError> {
    let syntax = || InterestError::RateSyntax(text.to_owned());
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || whole.len() > 3 || fraction.is_some_and(|f| !digits(f) || f.len() > RATE_DECIMALS_MAX) {
        return Err(syntax());
    }
    let rate: Decimal = text.parse().map_err(|_| syntax())?;
    if rate > RATE_MAX {
        return Err(InterestError::RateTooLarge(text.to_owned()));
    }
    Ok(rate.normalize())
}

/// A calendar day (UTC), as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i32);

const NANOS_PER_DAY: u64 = 86_400_000_000_000;

impl Date {
    pub fn from_days(days: i32) -> Date {
        Date(days)
    }

    pub fn days(self) -> i32 {
        self.0
    }

    /// The day (UTC) that contains this instant, in nanoseconds since the Unix epoch.
    pub fn of_instant(ns: u64) -> Date {
        Date(i32::try_from(ns / NANOS_PER_DAY).unwrap_or(i32::MAX))
    }

    /// The last nanosecond of the day.
    pub fn end_ns(self) -> u64 {
        u64::try_from(i64::from(self.0) + 1).unwrap_or(0).saturating_mul(NANOS_PER_DAY).saturating_sub(1)
    }

    pub fn next(self) -> Date {
        Date(self.0.saturating_add(1))
    }

    pub fn previous(self) -> Date {
        Date(self.0.saturating_sub(1))
    }

    /// The date of a year, month (1–12) and day, if it exists.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || !(1..=9999).contains(&year) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i32::try_from(month).ok()?;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i32::try_from(day).ok()? - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Date(era * 146_097 + doe - 719_468))
    }

    /// Year, month (1–12) and day.
    pub fn ymd(self) -> (i32, u32, u32) {
        // Howard Hinnant's civil_from_days.
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i32::from(month <= 2);
        (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let number = |s: &str| -> Option<u32> { s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())? };
        let year = i32::try_from(number(&text[0..4])?).ok()?;
        Date::from_ymd(year, number(&text[5..7])?, number(&text[8..10])?)
    }

    pub fn is_last_of_month(self) -> bool {
        let (year, month, day) = self.ymd();
        day == days_in_month(year, month)
    }

    /// The last day of this date's month.
    pub fn end_of_month(self) -> Date {
        let (year, month, day) = self.ymd();
        Date(self.0 + i32::try_from(days_in_month(year, month) - day).unwrap_or(0))
    }

    /// The period's name: `YYYY-MM-DD` for a day, `YYYY-MM` for a month.
    pub fn period_name(self, posting: Posting) -> String {
        let (year, month, day) = self.ymd();
        match posting {
            Posting::Daily => format!("{year:04}-{month:02}-{day:02}"),
            Posting::Monthly => format!("{year:04}-{month:02}"),
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.ymd();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// One side of an account's accrual (credit interest paid, or debit interest charged): exact
/// amounts in minor units, never rounded, and what was posted, in whole minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Accrued {
    /// Interest accrued since the terms began, exact.
    pub exact: Decimal,
    /// The part of `exact` that earns interest (as of the last compounding).
    pub compounded: Decimal,
    /// Posted so far: always `round(exact)` as of the last posting.
    pub posted: u64,
}

impl Accrued {
    /// Posts what is due: `round(exact) − posted`, half-even.
    pub fn post(&mut self) -> Result<u64, InterestError> {
        let total = round_minor(self.exact)?;
        let amount = total.checked_sub(self.posted).ok_or(InterestError::Overflow)?;
        self.posted = total;
        Ok(amount)
    }

    /// Compounded but not posted: what the base earns on beyond the balance (negative when
    /// rounding up posted a little more than was compounded).
    fn unposted(&self) -> Result<Decimal, InterestError> {
        self.compounded.checked_sub(Decimal::from(self.posted)).ok_or(InterestError::Overflow)
    }
}

/// An account's accrual: credit interest (paid to it) and debit interest (charged to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Accrual {
    pub credit: Accrued,
    pub debit: Accrued,
}

/// Rounds exact minor units to a whole number, half-even.
pub fn round_minor(exact: Decimal) -> Result<u64, InterestError> {
    exact.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven).to_u64().ok_or(InterestError::Overflow)
}

/// `base × rate ÷ days_in_year`, zero for a base that is not positive.
fn day_interest(base: Decimal, rate: Decimal, day_count: DayCount) -> Result<Decimal, InterestError> {
    if base <= Decimal::ZERO {
        return Ok(Decimal::ZERO);
    }
    base.checked_mul(rate).and_then(|x| x.checked_div(day_count.days_in_year())).ok_or(InterestError::Overflow)
}

impl Accrual {
    /// Accrues one day that closed at `closing` minor units (the interest already posted
    /// included); `compound` says whether accrued interest compounds at this day's end.
    pub fn accrue_day(&mut self, terms: &Terms, closing: i64, compound: bool) -> Result<(), InterestError> {
        let overflow = || InterestError::Overflow;
        let (credit_unposted, debit_unposted) = (self.credit.unposted()?, self.debit.unposted()?);
        let base = Decimal::from(closing)
            .checked_add(credit_unposted)
            .and_then(|b| b.checked_sub(debit_unposted))
            .ok_or_else(overflow)?;
        if closing >= 0 && u64::try_from(closing).unwrap_or(0) >= terms.min_balance {
            let earned = day_interest(base, terms.annual_rate, terms.day_count)?;
            self.credit.exact = self.credit.exact.checked_add(earned).ok_or_else(overflow)?;
        } else if closing < 0 {
            if let Some(rate) = terms.debit_rate {
                let charged = day_interest(-base, rate, terms.day_count)?;
                self.debit.exact = self.debit.exact.checked_add(charged).ok_or_else(overflow)?;
            }
        }
        if compound {
            self.credit.compounded = self.credit.exact;
            self.debit.compounded = self.debit.exact;
        }
        Ok(())
    }
}

/// What one posting period of one account posts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodPosting {
    pub first: Date,
    pub last: Date,
    /// Credit interest to pay into the account, minor units.
    pub credit: u64,
    /// Debit interest to charge to the account, minor units.
    pub debit: u64,
}

/// The posting periods that end by `through`, starting the day after `accrued_through`: whole
/// days, or calendar months (the first may start mid-month). A month that has not ended by
/// `through` is left for a later run.
pub fn periods(posting: Posting, accrued_through: Date, through: Date) -> Vec<(Date, Date)> {
    let mut out = Vec::new();
    let mut first = accrued_through.next();
    while first <= through {
        let last = match posting {
            Posting::Daily => first,
            Posting::Monthly => first.end_of_month(),
        };
        if last > through {
            break;
        }
        out.push((first, last));
        first = last.next();
    }
    out
}

/// Accrues and posts every period from the day after `accrued_through` through `through`
/// (see [`periods`]). `closing(day)` is the day's closing balance as stored, which does not hold
/// the interest this call posts (its transfers come later): that is added back day by day.
/// Returns the postings and the last day accrued (`accrued_through` when no period ended).
pub fn accrue_periods(
    terms: &Terms,
    accrual: &mut Accrual,
    accrued_through: Date,
    through: Date,
    closing: impl Fn(Date) -> i64,
) -> Result<(Vec<PeriodPosting>, Date), InterestError> {
    let mut postings = Vec::new();
    let mut last_accrued = accrued_through;
    // Interest posted by this call, not yet in the stored balances: credit minus debit.
    let mut unsettled: i128 = 0;
    for (first, last) in periods(terms.posting, accrued_through, through) {
        let mut day = first;
        while day <= last {
            let compound = match terms.compounding {
                Compounding::Daily => true,
                Compounding::Monthly => day.is_last_of_month(),
                Compounding::None => false,
            };
            let balance = i128::from(closing(day)) + unsettled;
            let balance = i64::try_from(balance).map_err(|_| InterestError::Overflow)?;
            accrual.accrue_day(terms, balance, compound)?;
            day = day.next();
        }
        let credit = accrual.credit.post()?;
        let debit = accrual.debit.post()?;
        unsettled += i128::from(credit) - i128::from(debit);
        postings.push(PeriodPosting { first, last, credit, debit });
        last_accrued = last;
    }
    Ok((postings, last_accrued))
}

/// A what-if: `principal` left for `days` days, nothing posted meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The interest, exact, in minor units.
    pub exact_interest: Decimal,
    /// The interest rounded half-even to a minor unit.
    pub interest: u64,
}

impl Quote {
    /// P(t), exact, in the currency's major units (`"1002.88071..."`).
    pub fn exact_amount_text(&self, principal: u64, currency: Currency) -> String {
        major_text(Decimal::from(principal) + self.exact_interest, currency)
    }

    /// The exact interest in the currency's major units.
    pub fn exact_interest_text(&self, currency: Currency) -> String {
        major_text(self.exact_interest, currency)
    }
}

/// Exact minor units as major units, to 12 decimals beyond the currency's, trailing zeros
/// dropped (but never fewer decimals than the currency has).
fn major_text(minor: Decimal, currency: Currency) -> String {
    let units = u32::from(currency.minor_units());
    let mut major = minor;
    if major.set_scale(major.scale() + units).is_err() {
        return minor.to_string();
    }
    let mut shown = major.round_dp_with_strategy(units + 12, RoundingStrategy::MidpointNearestEven).normalize();
    if shown.scale() < units {
        shown.rescale(units);
    }
    shown.to_string()
}

/// The interest on `principal` (minor units) at `annual_rate` for `days` days, as an account
/// with these terms and a constant balance would accrue it (monthly compounding: every 30 days).
pub fn quote(
    principal: u64,
    annual_rate: Decimal,
    days: u32,
    day_count: DayCount,
    compounding: Compounding,
) -> Result<Quote, InterestError> {
    let terms =
        Terms { annual_rate, day_count, compounding, posting: Posting::Monthly, min_balance: 0, debit_rate: None };
    let balance = i64::try_from(principal).map_err(|_| InterestError::Overflow)?;
    let mut accrual = Accrual::default();
    for day in 1..=days {
        let compound = match compounding {
            Compounding::Daily => true,
            Compounding::Monthly => day % 30 == 0,
            Compounding::None => false,
        };
        accrual.accrue_day(&terms, balance, compound)?;
    }
    let exact_interest = accrual.credit.exact;
    Ok(Quote { exact_interest, interest: round_minor(exact_interest)? })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rate(text: &str) -> Decimal {
        parse_rate(text).unwrap()
    }

    fn q(principal: u64, r: &str, days: u32, dc: DayCount, c: Compounding) -> u64 {
        quote(principal, rate(r), days, dc, c).unwrap().interest
    }

    #[test]
    fn the_issue_examples_hold() {
        use Compounding::*;
        use DayCount::*;
        assert_eq!(q(100_000, "0.035", 30, Act365, Daily), 288);
        assert_eq!(q(100_000_000, "0.035", 30, Act365, Daily), 288_072);
        assert_eq!(q(100_000, "0.035", 365, Act365, Daily), 3562);
        assert_eq!(q(1_000_000, "0.05", 31, Act360, None), 4306);
        assert_eq!(q(1_000_000, "0.05", 31, Act365, None), 4247);
        // 36500 × 0.125 ÷ 365 = 12.5 exactly: half-even gives 12.
        assert_eq!(q(36_500, "0.125", 1, Act365, Daily), 12);
        assert_eq!(quote(36_500, rate("0.125"), 1, Act365, Daily).unwrap().exact_interest, Decimal::new(125, 1));
    }

    #[test]
    fn per_day_rounding_would_drift_and_cumulative_rounding_does_not() {
        // Posting every day of 30 still totals the rounded exact interest, 2.88 (per-day
        // rounding of 0.0959… would give 0.10 × 30 = 3.00).
        let terms = Terms {
            annual_rate: rate("0.035"),
            day_count: DayCount::Act365,
            compounding: Compounding::Daily,
            posting: Posting::Daily,
            min_balance: 0,
            debit_rate: None,
        };
        let mut accrual = Accrual::default();
        let start = Date::parse("2026-11-01").unwrap();
        let through = Date::parse("2026-11-30").unwrap();
        let (postings, last) = accrue_periods(&terms, &mut accrual, start.previous(), through, |_| 100_000).unwrap();
        assert_eq!(postings.len(), 30);
        assert_eq!(last, through);
        assert_eq!(postings.iter().map(|p| p.credit).sum::<u64>(), 288);
        assert_eq!(postings[0].credit, 10);
    }

    #[test]
    fn a_day_below_the_minimum_balance_earns_nothing() {
        let terms = Terms {
            annual_rate: rate("0.035"),
            day_count: DayCount::Act365,
            compounding: Compounding::Daily,
            posting: Posting::Daily,
            min_balance: 50_000,
            debit_rate: None,
        };
        let mut accrual = Accrual::default();
        accrual.accrue_day(&terms, 49_999, true).unwrap();
        assert_eq!(accrual.credit.exact, Decimal::ZERO);
        accrual.accrue_day(&terms, 50_000, true).unwrap();
        assert!(accrual.credit.exact > Decimal::ZERO);
    }

    #[test]
    fn a_negative_balance_is_charged_the_debit_rate_only() {
        let terms = Terms {
            annual_rate: rate("0.035"),
            day_count: DayCount::Act365,
            compounding: Compounding::Daily,
            posting: Posting::Monthly,
            min_balance: 0,
            debit_rate: Some(rate("0.1825")),
        };
        let mut accrual = Accrual::default();
        // 100.00 overdrawn at 18.25 % for 30 days, compounded daily: 100 × ((1 + 0.0005)^30 − 1)
        // = 1.5109… → 1.51.
        let start = Date::parse("2026-11-01").unwrap();
        let (postings, _) =
            accrue_periods(&terms, &mut accrual, start.previous(), Date::parse("2026-11-30").unwrap(), |_| -10_000)
                .unwrap();
        assert_eq!(postings, vec![PeriodPosting { first: start, last: start.end_of_month(), credit: 0, debit: 151 }]);
        // Without a debit rate, nothing.
        let mut none = Accrual::default();
        none.accrue_day(&Terms { debit_rate: None, ..terms }, -10_000, true).unwrap();
        assert_eq!(none, Accrual::default());
    }

    #[test]
    fn monthly_periods_post_only_months_that_ended() {
        let d = |s| Date::parse(s).unwrap();
        assert_eq!(
            periods(Posting::Monthly, d("2026-10-14"), d("2026-12-30")),
            vec![(d("2026-10-15"), d("2026-10-31")), (d("2026-11-01"), d("2026-11-30"))]
        );
        assert_eq!(periods(Posting::Monthly, d("2026-11-30"), d("2026-11-30")), vec![]);
        assert_eq!(periods(Posting::Daily, d("2026-11-28"), d("2026-11-30")).len(), 2);
    }

    #[test]
    fn dates_parse_format_and_count() {
        for text in ["1970-01-01", "2024-02-29", "2026-12-31", "2000-03-01", "9999-12-31"] {
            assert_eq!(Date::parse(text).unwrap().to_string(), text);
        }
        for bad in ["2026-02-29", "2026-13-01", "2026-1-01", "2026-01-00", "20260101", "+026-01-01", "2026-01-1a"] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        assert_eq!(Date::parse("1970-01-02").unwrap().days(), 1);
        assert_eq!(Date::of_instant(Date::parse("2026-12-05").unwrap().end_ns()).to_string(), "2026-12-05");
        assert_eq!(Date::of_instant(Date::parse("2026-12-05").unwrap().end_ns() + 1).to_string(), "2026-12-06");
        assert!(Date::parse("2024-02-29").unwrap().is_last_of_month());
        assert_eq!(Date::parse("2024-02-03").unwrap().period_name(Posting::Monthly), "2024-02");
    }

    #[test]
    fn rates_are_decimal_fractions() {
        assert_eq!(rate("0.035"), Decimal::new(35, 3));
        assert_eq!(rate("1"), Decimal::ONE);
        assert_eq!(rate("0"), Decimal::ZERO);
        for bad in ["", ".5", "5.", "-0.1", "3.5%", "1e-2", "0.0000000000001", " 0.1", "0,1", "0.1.2"] {
            assert!(matches!(parse_rate(bad), Err(InterestError::RateSyntax(_))), "{bad}");
        }
        assert_eq!(parse_rate("1.01"), Err(InterestError::RateTooLarge("1.01".into())));
    }

    #[test]
    fn exact_amounts_read_in_major_units() {
        let quote = quote(100_000, rate("0.035"), 30, DayCount::Act365, Compounding::Daily).unwrap();
        assert!(quote.exact_amount_text(100_000, Currency::from_code("USD").unwrap()).starts_with("1002.88071"));
        let tie = super::quote(36_500, rate("0.125"), 1, DayCount::Act365, Compounding::None).unwrap();
        assert_eq!(tie.exact_interest_text(Currency::from_code("USD").unwrap()), "0.125");
        assert_eq!(tie.exact_interest_text(Currency::from_code("JPY").unwrap()), "12.5");
    }

    fn terms_strategy() -> impl Strategy<Value = Terms> {
        (0u64..=200_000, prop::bool::ANY, 0usize..3, prop::bool::ANY, 0u64..1000, prop::option::of(0u64..=300_000))
            .prop_map(|(r, act365, c, daily, min, debit)| Terms {
                annual_rate: Decimal::new(i64::try_from(r).unwrap(), 6),
                day_count: if act365 { DayCount::Act365 } else { DayCount::Act360 },
                compounding: Compounding::ALL[c],
                posting: if daily { Posting::Daily } else { Posting::Monthly },
                min_balance: min,
                debit_rate: debit.map(|d| Decimal::new(i64::try_from(d).unwrap(), 6)),
            })
    }

    proptest! {
        /// However the days are split into runs, what is posted adds up to the rounded exact
        /// total, and equals what one run over all of them posts.
        #[test]
        fn posted_total_is_the_rounded_exact_total_over_any_split(
            terms in terms_strategy(),
            balances in prop::collection::vec(-1_000_000i64..100_000_000, 1..70),
            cuts in prop::collection::vec(0usize..70, 0..5),
        ) {
            let start = Date::parse("2026-01-01").unwrap().previous();
            let days = i32::try_from(balances.len()).unwrap();
            let closing = |d: Date| balances[usize::try_from(d.days() - start.days() - 1).unwrap()];
            let end = Date::from_days(start.days() + days);
            let mut whole = Accrual::default();
            let (all, _) = accrue_periods(&terms, &mut whole, start, end, closing).unwrap();
            let mut split = Accrual::default();
            let mut through = start;
            let mut posted: Vec<PeriodPosting> = Vec::new();
            let mut cuts: Vec<i32> = cuts.into_iter().map(|c| i32::try_from(c).unwrap().min(days)).collect();
            cuts.push(days);
            cuts.sort_unstable();
            for cut in cuts {
                // The stored balances hold what earlier runs posted.
                let settled: i64 = posted.iter().map(|p| i64::try_from(p.credit).unwrap() - i64::try_from(p.debit).unwrap()).sum();
                let stored = |d: Date| closing(d) + settled;
                let (more, last) = accrue_periods(&terms, &mut split, through, Date::from_days(start.days() + cut), stored).unwrap();
                posted.extend(more);
                through = last;
            }
            prop_assert_eq!(&posted, &all);
            prop_assert_eq!(split, whole);
            let credit: u64 = all.iter().map(|p| p.credit).sum();
            let debit: u64 = all.iter().map(|p| p.debit).sum();
            prop_assert_eq!(credit, round_minor(whole.credit.exact).unwrap());
            prop_assert_eq!(debit, round_minor(whole.debit.exact).unwrap());
        }

        /// A positive balance is never charged, a negative one never paid.
        #[test]
        fn interest_has_the_sign_of_the_balance(terms in terms_strategy(), balance in -100_000_000i64..100_000_000, days in 1u32..60) {
            let mut accrual = Accrual::default();
            for _ in 0..days {
                accrual.accrue_day(&terms, balance, true).unwrap();
            }
            prop_assert!(accrual.credit.exact >= Decimal::ZERO && accrual.debit.exact >= Decimal::ZERO);
            if balance >= 0 {
                prop_assert_eq!(accrual.debit.exact, Decimal::ZERO);
            } else {
                prop_assert_eq!(accrual.credit.exact, Decimal::ZERO);
            }
        }

        /// More principal never earns less.
        #[test]
        fn a_quote_is_monotone_in_the_principal(
            a in 0u64..1_000_000_000_000, extra in 0u64..1_000_000_000, r in 0u64..=1_000_000,
            days in 0u32..800, c in 0usize..3, act365 in prop::bool::ANY,
        ) {
            let rate = Decimal::new(i64::try_from(r).unwrap(), 6);
            let dc = if act365 { DayCount::Act365 } else { DayCount::Act360 };
            let small = quote(a, rate, days, dc, Compounding::ALL[c]).unwrap();
            let large = quote(a + extra, rate, days, dc, Compounding::ALL[c]).unwrap();
            prop_assert!(small.exact_interest <= large.exact_interest);
            prop_assert!(small.interest <= large.interest);
        }
    }
}
