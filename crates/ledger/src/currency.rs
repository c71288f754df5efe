//! ISO 4217 currencies and their minor units.

use std::fmt;

/// An ISO 4217 currency: its alphabetic code and the number of digits after the decimal point
/// in its minor unit (EUR 2, JPY 0, KWD 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    index: u16,
}

/// Active ISO 4217 codes (list one, 2024 amendment) with their minor units and numeric codes. Funds codes and
/// precious metals without a minor unit (XAU, XDR, ...) are left out: nobody pays a payroll in
/// them, and a ledger amount must have a defined smallest unit.
const TABLE: &[(&str, u8, u16)] = &[
    ("AED", 2, 784),
    ("AFN", 2, 971),
    ("ALL", 2, 8),
    ("AMD", 2, 51),
    ("ANG", 2, 532),
    ("AOA", 2, 973),
    ("ARS", 2, 32),
    ("AUD", 2, 36),
    ("AWG", 2, 533),
    ("AZN", 2, 944),
    ("BAM", 2, 977),
    ("BBD", 2, 52),
    ("BDT", 2, 50),
    ("BGN", 2, 975),
    ("BHD", 3, 48),
    ("BIF", 0, 108),
    ("BMD", 2, 60),
    ("BND", 2, 96),
    ("BOB", 2, 68),
    ("BRL", 2, 986),
    ("BSD", 2, 44),
    ("BTN", 2, 64),
    ("BWP", 2, 72),
    ("BYN", 2, 933),
    ("BZD", 2, 84),
    ("CAD", 2, 124),
    ("CDF", 2, 976),
    ("CHF", 2, 756),
    ("CLF", 4, 990),
    ("CLP", 0, 152),
    ("CNY", 2, 156),
    ("COP", 2, 170),
    ("CRC", 2, 188),
    ("CUP", 2, 192),
    ("CVE", 2, 132),
    ("CZK", 2, 203),
    ("DJF", 0, 262),
    ("DKK", 2, 208),
    ("DOP", 2, 214),
    ("DZD", 2, 12),
    ("EGP", 2, 818),
    ("ERN", 2, 232),
    ("ETB", 2, 230),
    ("EUR", 2, 978),
    ("FJD", 2, 242),
    ("FKP", 2, 238),
    ("GBP", 2, 826),
    ("GEL", 2, 981),
    ("GHS", 2, 936),
    ("GIP", 2, 292),
    ("GMD", 2, 270),
    ("GNF", 0, 324),
    ("GTQ", 2, 320),
    ("GYD", 2, 328),
    ("HKD", 2, 344),
    ("HNL", 2, 340),
    ("HTG", 2, 332),
    ("HUF", 2, 348),
    ("IDR", 2, 360),
    ("ILS", 2, 376),
    ("INR", 2, 356),
    ("IQD", 3, 368),
    ("IRR", 2, 364),
    ("ISK", 0, 352),
    ("JMD", 2, 388),
    ("JOD", 3, 400),
    ("JPY", 0, 392),
    ("KES", 2, 404),
    ("KGS", 2, 417),
    ("KHR", 2, 116),
    ("KMF", 0, 174),
    ("KPW", 2, 408),
    ("KRW", 0, 410),
    ("KWD", 3, 414),
    ("KYD", 2, 136),
    ("KZT", 2, 398),
    ("LAK", 2, 418),
    ("LBP", 2, 422),
    ("LKR", 2, 144),
    ("LRD", 2, 430),
    ("LSL", 2, 426),
    ("LYD", 3, 434),
    ("MAD", 2, 504),
    ("MDL", 2, 498),
    ("MGA", 2, 969),
    ("MKD", 2, 807),
    ("MMK", 2, 104),
    ("MNT", 2, 496),
    ("MOP", 2, 446),
    ("MRU", 2, 929),
    ("MUR", 2, 480),
    ("MVR", 2, 462),
    ("MWK", 2, 454),
    ("MXN", 2, 484),
    ("MYR", 2, 458),
    ("MZN", 2, 943),
    ("NAD", 2, 516),
    ("NGN", 2, 566),
    ("NIO", 2, 558),
    ("NOK", 2, 578),
    ("NPR", 2, 524),
    ("NZD", 2, 554),
    ("OMR", 3, 512),
    ("PAB", 2, 590),
    ("PEN", 2, 604),
    ("PGK", 2, 598),
    ("PHP", 2, 608),
    ("PKR", 2, 586),
    ("PLN", 2, 985),
    ("PYG", 0, 600),
    ("QAR", 2, 634),
    ("RON", 2, 946),
    ("RSD", 2, 941),
    ("RUB", 2, 643),
    ("RWF", 0, 646),
    ("SAR", 2, 682),
    ("SBD", 2, 90),
    ("SCR", 2, 690),
    ("SDG", 2, 938),
    ("SEK", 2, 752),
    ("SGD", 2, 702),
    ("SHP", 2, 654),
    ("SLE", 2, 925),
    ("SOS", 2, 706),
    ("SRD", 2, 968),
    ("SSP", 2, 728),
    ("STN", 2, 930),
    ("SVC", 2, 222),
    ("SYP", 2, 760),
    ("SZL", 2, 748),
    ("THB", 2, 764),
    ("TJS", 2, 972),
    ("TMT", 2, 934),
    ("TND", 3, 788),
    ("TOP", 2, 776),
    ("TRY", 2, 949),
    ("TTD", 2, 780),
    ("TWD", 2, 901),
    ("TZS", 2, 834),
    ("UAH", 2, 980),
    ("UGX", 0, 800),
    ("USD", 2, 840),
    ("UYI", 0, 940),
    ("UYU", 2, 858),
    ("UYW", 4, 927),
    ("UZS", 2, 860),
    ("VED", 2, 926),
    ("VES", 2, 928),
    ("VND", 0, 704),
    ("VUV", 0, 548),
    ("WST", 2, 882),
    ("XAF", 0, 950),
    ("XCD", 2, 951),
    ("XCG", 2, 532),
    ("XOF", 0, 952),
    ("XPF", 0, 953),
    ("YER", 2, 886),
    ("ZAR", 2, 710),
    ("ZMW", 2, 967),
    ("ZWG", 2, 924),
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

    /// The ISO 4217 numeric code (EUR 978, JPY 392), as EMVCo QR payloads carry it (tag 53).
    /// Not unique: XCG took over ANG's 532.
    pub fn numeric(self) -> u16 {
        TABLE[usize::from(self.index)].2
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
        assert!(TABLE.iter().all(|(_, _, numeric)| (1..=999).contains(numeric)));
        assert!(TABLE.iter().zip(PACKED).all(|((code, _, _), key)| code.len() == 3 && packed(code) == Some(key)));
    }

    #[test]
    fn lookups() {
        for (code, units) in [("EUR", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4), ("USD", 2)] {
            let c = Currency::from_code(code).unwrap();
            assert_eq!((c.code(), c.minor_units()), (code, units));
        }
        for (code, numeric) in [("EUR", 978), ("USD", 840), ("JPY", 392), ("GBP", 826), ("ALL", 8), ("KWD", 414)] {
            assert_eq!(Currency::from_code(code).map(Currency::numeric), Some(numeric), "{code}");
        }
        for bad in ["", "eur", "XXX", "EURO", "XAU"] {
            assert_eq!(Currency::from_code(bad), None, "{bad}");
        }
    }
}
