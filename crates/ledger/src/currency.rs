//! ISO 4217 currencies and their minor units.

use std::fmt;

/// An ISO 4217 currency: its alphabetic code and the number of digits after the decimal point
/// in its minor unit (EUR 2, JPY 0, KWD 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    index: u16,
}

/// Active ISO 4217 codes (list one, 2024 amendment) with their minor units. Funds codes and
/// precious metals without a minor unit (XAU, XDR, ...) are left out: nobody pays a payroll in
/// them, and a ledger amount must have a defined smallest unit.
const TABLE: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

impl Currency {
    /// Looks a currency up by its three-letter code. Codes are upper case, as ISO 4217 writes
    /// them; `"eur"` is not accepted, so that one currency has one spelling everywhere.
    pub fn from_code(code: &str) -> Option<Currency> {
        let key = packed(code)?;
        let index = PACKED.binary_search(&key).ok()?;
        Some(Currency { index: u16::try_from(index).ok()? })
    }

    /// The position of this currency in the table, stable for a given release; stores keep the
    /// code, not this number.
    pub fn code(self) -> &'static str {
        TABLE[usize::from(self.index)].0
    }

    /// Digits after the decimal point in the minor unit.
    pub fn minor_units(self) -> u8 {
        TABLE[usize::from(self.index)].1
    }

    /// Every currency paycore knows, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        (0..TABLE.len()).filter_map(|i| Some(Currency { index: u16::try_from(i).ok()? }))
    }
}

/// A three-byte code as one number that sorts as the code does. `None` for any other length.
fn packed(code: &str) -> Option<u32> {
    let [a, b, c] = <[u8; 3]>::try_from(code.as_bytes()).ok()?;
    Some(u32::from_be_bytes([0, a, b, c]))
}

/// The codes of [`TABLE`], packed, in the same order: a lookup searches these integers instead
/// of following each entry's `&str` and comparing text (decoding a bulk message looks up every
/// transfer's currency; over the table it was a third of the decoding).
const PACKED: [u32; TABLE.len()] = {
    let mut packed = [0; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        let code = TABLE[i].0.as_bytes();
        packed[i] = u32::from_be_bytes([0, code[0], code[1], code[2]]);
        i += 1;
    }
    packed
};

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(TABLE.iter().zip(PACKED).all(|((code, _), key)| code.len() == 3 && packed(code) == Some(key)));
    }

    #[test]
    fn lookups() {
        for (code, units) in [("EUR", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4), ("USD", 2)] {
            let c = Currency::from_code(code).unwrap();
            assert_eq!((c.code(), c.minor_units()), (code, units));
        }
        for bad in ["", "eur", "XXX", "EURO", "XAU"] {
            assert_eq!(Currency::from_code(bad), None, "{bad}");
        }
    }
}
