//! IBAN (ISO 13616) and BIC (ISO 9362) checks for the accounts and agents a file names.

/// IBAN length per country, from the SWIFT IBAN Registry (release 100, 2025), with the
/// territories that use their country's format (the registry lists them under it: Åland under
/// Finland, the French overseas departments and collectivities under France, the Crown
/// Dependencies under the United Kingdom).
#[rustfmt::skip]
const LENGTHS: &[(&str, usize)] = &[
    ("AD", 24), ("AE", 23), ("AL", 28), ("AT", 20), ("AX", 18), ("AZ", 28), ("BA", 20), ("BE", 16),
    ("BG", 22), ("BH", 22), ("BI", 27), ("BL", 27), ("BR", 29), ("BY", 28), ("CH", 21), ("CR", 22),
    ("CY", 28), ("CZ", 24), ("DE", 22), ("DJ", 27), ("DK", 18), ("DO", 28), ("EE", 20), ("EG", 29),
    ("ES", 24), ("FI", 18), ("FK", 18), ("FO", 18), ("FR", 27), ("GB", 22), ("GE", 22), ("GF", 27),
    ("GG", 22), ("GI", 23), ("GL", 18), ("GP", 27), ("GR", 27), ("GT", 28), ("HN", 28), ("HR", 21),
    ("HU", 28), ("IE", 22), ("IL", 23), ("IM", 22), ("IQ", 23), ("IS", 26), ("IT", 27), ("JE", 22),
    ("JO", 30), ("KW", 30), ("KZ", 20), ("LB", 28), ("LC", 32), ("LI", 21), ("LT", 20), ("LU", 20),
    ("LV", 21), ("LY", 25), ("MC", 27), ("MD", 24), ("ME", 22), ("MF", 27), ("MK", 19), ("MN", 20),
    ("MQ", 27), ("MR", 27), ("MT", 31), ("MU", 30), ("NC", 27), ("NI", 28), ("NL", 18), ("NO", 15),
    ("OM", 23), ("PF", 27), ("PK", 24), ("PL", 28), ("PM", 27), ("PS", 29), ("PT", 25), ("QA", 29),
    ("RE", 27), ("RO", 24), ("RS", 22), ("RU", 33), ("SA", 24), ("SC", 31), ("SD", 18), ("SE", 24),
    ("SI", 19), ("SK", 24), ("SM", 27), ("SO", 23), ("ST", 25), ("SV", 28), ("TF", 27), ("TL", 23),
    ("TN", 24), ("TR", 26), ("UA", 29), ("VA", 22), ("VG", 24), ("WF", 27), ("XK", 20), ("YE", 30),
    ("YT", 27),
];

/// Checks an IBAN written without spaces: `Err` says why it is not one, naming the value.
pub fn check_iban(iban: &str) -> Result<(), String> {
    iban_problem(iban).map_or(Ok(()), Err)
}

/// Why a text is not a valid IBAN, as a sentence naming the value.
pub(crate) fn iban_problem(iban: &str) -> Option<String> {
    let bytes = iban.as_bytes();
    let shape = bytes.len() >= 5
        && bytes.len() <= 34
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2..4].iter().all(u8::is_ascii_digit)
        && bytes[4..].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !shape {
        return Some(format!(
            "IBAN {iban:?} is not an IBAN: expected a country code, two check digits, then up to 30 letters and digits, without spaces"
        ));
    }
    let country = iban.get(..2).unwrap_or("");
    let Some(&(_, length)) = LENGTHS.iter().find(|(code, _)| *code == country) else {
        return Some(format!("IBAN {iban:?} starts with {country:?}, which is not a country of the IBAN registry"));
    };
    if bytes.len() != length {
        return Some(format!("IBAN {iban:?} has {} characters, but {country} IBANs have {length}", bytes.len()));
    }
    let remainder = mod97(iban);
    if remainder != 1 {
        return Some(format!(
            "IBAN {iban:?} fails its check digits (ISO 7064 mod 97 gives {remainder}, not 1): a character is wrong or two are swapped"
        ));
    }
    None
}

/// The ISO 7064 MOD 97-10 remainder of an IBAN of ASCII letters and digits: the first four
/// characters moved to the end, letters as two digits (A = 10 … Z = 35).
fn mod97(iban: &str) -> u32 {
    let (head, tail) = iban.split_at(4.min(iban.len()));
    let mut remainder: u32 = 0;
    for b in tail.bytes().chain(head.bytes()) {
        remainder = if b.is_ascii_digit() {
            (remainder * 10 + u32::from(b - b'0')) % 97
        } else {
            (remainder * 100 + u32::from(b.to_ascii_uppercase() - b'A') + 10) % 97
        };
    }
    remainder
}

/// Whether a text is a BIC: 4 letters or digits for the party, 2 letters for the country, 2
/// letters or digits for the location, and an optional branch of 3 (ISO 9362:2014, the
/// `BICFIDec2014Identifier` pattern).
pub fn is_bic(bic: &str) -> bool {
    let bytes = bic.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    (bytes.len() == 8 || bytes.len() == 11)
        && bytes[..4].iter().all(alphanumeric)
        && bytes[4..6].iter().all(u8::is_ascii_uppercase)
        && bytes[6..].iter().all(alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_examples_are_valid() {
        for iban in [
            "DE89370400440532013000",
            "GB29NWBK60161331926819",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "BE68539007547034",
            "CH9300762011623852957",
            "NO9386011117947",
            "LC55HEMM000100010012001200023015",
            "RU0204452560040702810412345678901",
        ] {
            assert_eq!(iban_problem(iban), None, "{iban}");
        }
    }

    #[test]
    fn problems_name_what_is_wrong() {
        assert_eq!(
            iban_problem("DE89370400440532013001").as_deref(),
            Some("IBAN \"DE89370400440532013001\" fails its check digits (ISO 7064 mod 97 gives 28, not 1): a character is wrong or two are swapped")
        );
        assert_eq!(
            iban_problem("DE8937040044053201300").as_deref(),
            Some("IBAN \"DE8937040044053201300\" has 21 characters, but DE IBANs have 22")
        );
        assert_eq!(
            iban_problem("ZZ89370400440532013000").as_deref(),
            Some("IBAN \"ZZ89370400440532013000\" starts with \"ZZ\", which is not a country of the IBAN registry")
        );
        assert!(iban_problem("DE89 3704 0044 0532 0130 00").is_some_and(|m| m.contains("without spaces")));
        assert!(iban_problem("de89370400440532013000").is_some());
        assert!(iban_problem("").is_some());
    }

    #[test]
    fn bics() {
        for good in ["DEUTDEFF", "DEUTDEFF500", "HYVEDEMMXXX", "1234DEFF", "NWBKGB2L"] {
            assert!(is_bic(good), "{good}");
        }
        for bad in ["ABCDEFGHIJ", "DEUTDEF", "DEUTDEFF50", "DEUT1EFF", "deutdeff", "DEUTDEFF5000", ""] {
            assert!(!is_bic(bad), "{bad}");
        }
    }
}
