//! Minor units shown as money, per currency: `1 234,56 €`, `$1,234.56`, `¥1,235`. The digits
//! after the separator come from the ledger's currency table (`Currency::minor_units`); how a
//! currency is written (symbol, its side, the separators) from [`style`]. Integers only.

use paycore_ledger::Currency;

/// A no-break space: `1 234,56 €` never wraps between its groups or before its symbol.
const NBSP: char = '\u{a0}';

/// How one currency's amounts are written.
struct Style {
    /// Written before the digits (`$`), else after them with a space (`€`, `CHF`).
    prefix: bool,
    symbol: &'static str,
    group: char,
    decimal: char,
}

fn style(currency: Currency) -> Style {
    let symbol = |prefix, symbol| Style { prefix, symbol, group: ',', decimal: '.' };
    match currency.code() {
        "EUR" => Style { prefix: false, symbol: "€", group: NBSP, decimal: ',' },
        "USD" => symbol(true, "$"),
        "GBP" => symbol(true, "£"),
        "JPY" => symbol(true, "¥"),
        "CNY" => symbol(true, "CN¥"),
        "INR" => symbol(true, "₹"),
        "CHF" => Style { prefix: false, symbol: "CHF", group: '\'', decimal: '.' },
        code => symbol(false, code),
    }
}

/// `minor` units of `currency` as money: `format(123456, EUR)` is `1 234,56 €` (with no-break
/// spaces), `format(-123456, USD)` is `-$1,234.56`, `format(1235, JPY)` is `¥1,235`.
pub fn format(minor: i128, currency: Currency) -> String {
    let style = style(currency);
    let places = usize::from(currency.minor_units());
    let digits = minor.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = places + 1);
    let (whole, fraction) = digits.split_at(digits.len() - places);
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(style.group);
        }
        grouped.push(digit);
    }
    if !fraction.is_empty() {
        grouped.push(style.decimal);
        grouped.push_str(fraction);
    }
    let sign = if minor < 0 { "-" } else { "" };
    if style.prefix {
        format!("{sign}{}{grouped}", style.symbol)
    } else {
        format!("{sign}{grouped}{NBSP}{}", style.symbol)
    }
}

/// [`format`] for a currency given by its code; an unknown code shows the plain number.
pub fn format_code(minor: i128, code: &str) -> String {
    match Currency::from_code(code) {
        Some(currency) => format(minor, currency),
        None => format!("{minor} {code}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(minor: i128, code: &str, shown: &str) {
        let currency = Currency::from_code(code).unwrap();
        assert_eq!(format(minor, currency).replace(NBSP, " "), shown, "{minor} {code}");
    }

    #[test]
    fn the_issues_examples() {
        check(123_456, "EUR", "1 234,56 €");
        check(123_456, "USD", "$1,234.56");
        check(1_235, "JPY", "¥1,235");
    }

    #[test]
    fn groups_signs_and_small_amounts() {
        check(0, "EUR", "0,00 €");
        check(5, "USD", "$0.05");
        check(-123_456, "USD", "-$1,234.56");
        check(-1, "EUR", "-0,01 €");
        check(100_000_000, "USD", "$1,000,000.00");
        check(999, "JPY", "¥999");
        check(1_000, "JPY", "¥1,000");
        // Three minor units (KWD), written with its code.
        check(1_234_567, "KWD", "1,234.567 KWD");
        check(i128::from(i64::MIN), "USD", "-$92,233,720,368,547,758.08");
    }

    #[test]
    fn euros_keep_together_on_one_line() {
        let shown = format(123_456, Currency::from_code("EUR").unwrap());
        assert_eq!(shown, "1\u{a0}234,56\u{a0}€");
        assert_eq!(format_code(1_235, "JPY"), "¥1,235");
        assert_eq!(format_code(7, "XXQ"), "7 XXQ");
    }
}
