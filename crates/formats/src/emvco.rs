//! EMVCo merchant-presented QR payloads ("EMV QR Code Specification for Payment Systems,
//! Merchant-Presented Mode"): what a shop's till shows and a payer's app scans.
//!
//! A payload is a string of data objects, each a two-digit id, a two-digit length and that many
//! characters of value, ending with the CRC in id 63. paycore writes, in this order:
//!
//! | id | value |
//! |---|---|
//! | 00 | payload format indicator, `01` |
//! | 01 | point of initiation, `12`: dynamic, the code is for one payment |
//! | 26 | merchant account information: sub-id 00 the globally unique identifier [`GUID`], sub-id 01 the paycore payment id (`pay_…`) |
//! | 52 | merchant category code (ISO 18245, four digits) |
//! | 53 | currency, ISO 4217 numeric (three digits) |
//! | 54 | amount, decimal with the currency's minor units (`12.50`, `1250` for JPY), exact from the integer ([`paycore_ledger::format_amount`]) |
//! | 58 | country, ISO 3166-1 alpha-2 |
//! | 59 | merchant name, at most 25 characters |
//! | 60 | merchant city, at most 15 characters |
//! | 63 | CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF) of the whole payload up to and including `6304`, four upper-case hex digits |
//!
//! [`decode`] reads any well-formed payload (ids in any order, other templates, unknown ids),
//! checks the CRC first and then the fields paycore needs; it never panics, whatever the input.
//! Payloads are ASCII (paycore accepts printable ASCII in names; the spec's alternate-language
//! template 64 is not written).

use std::fmt::Write as _;

/// The globally unique identifier of paycore's merchant account information template.
pub const GUID: &str = "io.paycore";
/// The template id paycore writes its merchant account information in (26–51 are for payment
/// networks' templates).
pub const TEMPLATE_ID: u8 = 26;
/// The longest payload: the spec's limit of 512 characters.
pub const PAYLOAD_LEN_MAX: usize = 512;
pub const MERCHANT_NAME_LEN_MAX: usize = 25;
pub const MERCHANT_CITY_LEN_MAX: usize = 15;

/// The fields of a dynamic merchant-presented payload for one paycore payment. The texts are
/// as they appear in the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The paycore payment id, in its text form.
    pub payment: String,
    /// Four digits (ISO 18245).
    pub category_code: String,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// Decimal text with the currency's minor units (`12.50`).
    pub amount: String,
    /// Two upper-case letters.
    pub country: String,
    pub merchant_name: String,
    pub merchant_city: String,
}

/// Why a text is not a paycore payload. `tag` is the two-digit data object id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    #[error("the payload is empty")]
    Empty,
    #[error("the payload is longer than {PAYLOAD_LEN_MAX} characters")]
    TooLong,
    #[error("the payload has a character that is not printable ASCII")]
    NotAscii,
    #[error("the payload is not a list of EMVCo data objects (at character {at})")]
    Malformed { at: usize },
    #[error("the payload does not end with its CRC (data object 63, four hex digits)")]
    CrcMissing,
    #[error("the payload's CRC is {found}, but its content gives {computed}: it was changed or misread")]
    CrcMismatch { found: String, computed: String },
    #[error("data object {tag} appears twice")]
    Duplicate { tag: String },
    #[error("data object {tag} is missing")]
    Missing { tag: String },
    #[error("data object {tag} is invalid: {reason}")]
    Invalid { tag: String, reason: &'static str },
    #[error("the payload names no paycore payment (no template with identifier {GUID})")]
    NotPaycore,
}

impl QrError {
    /// A stable code for the API: `qr_crc_mismatch` for a changed or misread code, `qr_invalid`
    /// for anything else that is not a paycore payload.
    pub fn code(&self) -> &'static str {
        match self {
            QrError::CrcMismatch { .. } | QrError::CrcMissing => "qr_crc_mismatch",
            _ => "qr_invalid",
        }
    }
}

/// CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

fn push_object(out: &mut String, tag: u8, value: &str) {
    // Values are at most 99 characters: the callers' fields are bounded well below.
    let _ = write!(out, "{tag:02}{:02}{value}", value.len());
}

/// Writes the payload, CRC included. The fields must already be valid (see [`check_merchant`]);
/// a value longer than 99 characters would not fit a data object and is cut.
pub fn encode(payload: &Payload) -> String {
    let mut template = String::new();
    push_object(&mut template, 0, GUID);
    push_object(&mut template, 1, &payload.payment);
    let mut out = String::with_capacity(160);
    push_object(&mut out, 0, "01");
    push_object(&mut out, 1, "12");
    push_object(&mut out, TEMPLATE_ID, &template);
    push_object(&mut out, 52, &payload.category_code);
    push_object(&mut out, 53, &format!("{:03}", payload.currency));
    push_object(&mut out, 54, &payload.amount);
    push_object(&mut out, 58, &payload.country);
    push_object(&mut out, 59, &payload.merchant_name);
    push_object(&mut out, 60, &payload.merchant_city);
    out.push_str("6304");
    let crc = crc16(out.as_bytes());
    let _ = write!(out, "{crc:04X}");
    out
}

/// Checks merchant fields before they go into a payload: the name of the field and why, or
/// `None`. Names and cities are printable ASCII without surrounding spaces.
pub fn check_merchant(
    name: &str,
    city: &str,
    country: &str,
    category_code: &str,
) -> Option<(&'static str, &'static str)> {
    let text_ok = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b)) && s.trim() == s
    };
    if !text_ok(name, MERCHANT_NAME_LEN_MAX) {
        return Some(("name", "must be 1 to 25 printable ASCII characters, without surrounding spaces"));
    }
    if !text_ok(city, MERCHANT_CITY_LEN_MAX) {
        return Some(("city", "must be 1 to 15 printable ASCII characters, without surrounding spaces"));
    }
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Some(("country", "must be an ISO 3166-1 alpha-2 code (two upper-case letters)"));
    }
    if category_code.len() != 4 || !category_code.bytes().all(|b| b.is_ascii_digit()) {
        return Some(("category_code", "must be an ISO 18245 merchant category code (four digits)"));
    }
    None
}

/// One data object: (id, value), and where its id started.
type Object<'a> = (&'a str, &'a str, usize);

/// Splits a run of data objects. `offset` is where `text` starts in the payload, for errors.
fn objects(text: &str, offset: usize) -> Result<Vec<Object<'_>>, QrError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let header = text.get(at..at + 4).ok_or(QrError::Malformed { at: offset + at })?;
        let (tag, len) = header.split_at(2);
        if !header.bytes().all(|b| b.is_ascii_digit()) {
            return Err(QrError::Malformed { at: offset + at });
        }
        let len: usize = len.parse().map_err(|_| QrError::Malformed { at: offset + at })?;
        let value = text.get(at + 4..at + 4 + len).ok_or(QrError::Malformed { at: offset + at })?;
        if len == 0 {
            return Err(QrError::Malformed { at: offset + at });
        }
        if out.iter().any(|(t, _, _): &Object<'_>| *t == tag) {
            return Err(QrError::Duplicate { tag: tag.to_owned() });
        }
        out.push((tag, value, offset + at));
        at += 4 + len;
    }
    Ok(out)
}

fn find<'a>(objects: &[Object<'a>], tag: &str) -> Result<&'a str, QrError> {
    objects
        .iter()
        .find(|(t, _, _)| *t == tag)
        .map(|(_, v, _)| *v)
        .ok_or_else(|| QrError::Missing { tag: tag.to_owned() })
}

fn invalid(tag: &str, reason: &'static str) -> QrError {
    QrError::Invalid { tag: tag.to_owned(), reason }
}

/// Reads a payload: the CRC first (a changed character is `CrcMismatch`), then the structure,
/// then the fields paycore needs. Never panics.
pub fn decode(text: &str) -> Result<Payload, QrError> {
    if text.is_empty() {
        return Err(QrError::Empty);
    }
    if text.len() > PAYLOAD_LEN_MAX {
        return Err(QrError::TooLong);
    }
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(QrError::NotAscii);
    }
    // ASCII from here on: every byte index is a character boundary.
    let body_len = text.len().checked_sub(4).ok_or(QrError::CrcMissing)?;
    let (body, crc_text) = text.split_at(body_len);
    if !body.ends_with("6304") || !crc_text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(QrError::CrcMissing);
    }
    let computed = format!("{:04X}", crc16(body.as_bytes()));
    if crc_text != computed {
        return Err(QrError::CrcMismatch { found: crc_text.to_owned(), computed });
    }
    let all = objects(text, 0)?;
    // The CRC object is the last one (the split above found "6304" where an object starts only
    // if the walk agrees).
    match all.last() {
        Some(("63", _, at)) if *at == body_len - 4 => {}
        _ => return Err(QrError::CrcMissing),
    }
    if all.first().map(|(t, v, _)| (*t, *v)) != Some(("00", "01")) {
        return Err(invalid("00", "the payload must start with format indicator 01"));
    }
    match find(&all, "01") {
        Ok("12") => {}
        Ok("11") => return Err(invalid("01", "a static code (11) names no payment; paycore codes are dynamic (12)")),
        Ok(_) => return Err(invalid("01", "must be 11 or 12")),
        Err(e) => return Err(e),
    }
    let mut payment = None;
    for (tag, value, at) in &all {
        let Ok(id) = tag.parse::<u8>() else { continue };
        if !(26..=51).contains(&id) {
            continue;
        }
        let inner = objects(value, at + 4)?;
        if find(&inner, "00").ok() == Some(GUID) {
            payment = Some(find(&inner, "01").map_err(|_| invalid(tag, "names no payment (sub-id 01)"))?);
            break;
        }
    }
    let payment = payment.ok_or(QrError::NotPaycore)?;
    let category_code = find(&all, "52")?;
    if category_code.len() != 4 || !category_code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("52", "the merchant category code must be four digits"));
    }
    let currency = find(&all, "53")?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("53", "the currency must be an ISO 4217 numeric code (three digits)"));
    }
    let currency: u16 = currency.parse().map_err(|_| invalid("53", "not a number"))?;
    let amount = find(&all, "54")?;
    let digits_dot = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let amount_ok = match amount.split_once('.') {
        Some((w, f)) => digits_dot(w) && f.bytes().all(|b| b.is_ascii_digit()),
        None => digits_dot(amount),
    };
    if !amount_ok {
        return Err(invalid("54", "the amount must be a decimal number (digits and at most one '.')"));
    }
    let country = find(&all, "58")?;
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid("58", "the country must be two upper-case letters"));
    }
    let merchant_name = find(&all, "59")?;
    if merchant_name.len() > MERCHANT_NAME_LEN_MAX {
        return Err(invalid("59", "the merchant name is longer than 25 characters"));
    }
    let merchant_city = find(&all, "60")?;
    if merchant_city.len() > MERCHANT_CITY_LEN_MAX {
        return Err(invalid("60", "the merchant city is longer than 15 characters"));
    }
    Ok(Payload {
        payment: payment.to_owned(),
        category_code: category_code.to_owned(),
        currency,
        amount: amount.to_owned(),
        country: country.to_owned(),
        merchant_name: merchant_name.to_owned(),
        merchant_city: merchant_city.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use paycore_ledger::{format_amount, Currency};
    use proptest::prelude::*;

    fn example() -> Payload {
        Payload {
            payment: "pay_01hx5m3kq0b7c9d2e4f6g8h0jk".to_owned(),
            category_code: "5812".to_owned(),
            currency: 978,
            amount: "12.50".to_owned(),
            country: "FR".to_owned(),
            merchant_name: "Cafe de Flore".to_owned(),
            merchant_city: "Paris".to_owned(),
        }
    }

    #[test]
    fn crc_check_value() {
        // The catalogue's check value of CRC-16/CCITT-FALSE ("123456789").
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn published_payloads_have_their_crc() {
        // PromptPay (Thailand) payloads from dtinth/promptpay-qr's test suite: EMVCo
        // merchant-presented mode, ids not in ascending order, CRC in 63.
        for published in [
            "00020101021229370016A000000677010111011300660000000005802TH530376454044.226304E469",
            "00020101021229370016A0000006770101110113006681234567853037645406100.005802TH6304F142",
            "00020101021129390016A00000067701011103150123456789012345802TH530376463049781",
        ] {
            let (body, crc) = published.split_at(published.len() - 4);
            assert_eq!(format!("{:04X}", crc16(body.as_bytes())), crc, "{published}");
            // Not paycore's (no io.paycore template; one is static), but the CRC passes.
            let refusal = decode(published).unwrap_err();
            assert_eq!(refusal.code(), "qr_invalid", "{published}: {refusal}");
            let dynamic = published.starts_with("000201010212");
            assert!(!dynamic || refusal == QrError::NotPaycore, "{published}: {refusal}");
        }
    }

    /// Appends "6304" and the CRC.
    fn with_crc(body: &str) -> String {
        let body = format!("{body}6304");
        format!("{body}{:04X}", crc16(body.as_bytes()))
    }

    #[test]
    fn encodes_exactly() {
        let body = "000201010212\
                    26480010io.paycore0130pay_01hx5m3kq0b7c9d2e4f6g8h0jk\
                    52045812530397854051\
                    2.505802FR5913Cafe de Flore6005Paris";
        assert_eq!(encode(&example()), with_crc(body));
        assert_eq!(decode(&with_crc(body)), Ok(example()));
    }

    #[test]
    fn amounts_with_the_currencys_decimals() {
        let c = |code| Currency::from_code(code).unwrap();
        assert_eq!(format_amount(1250, c("EUR")), "12.50");
        assert_eq!(format_amount(5, c("EUR")), "0.05");
        assert_eq!(format_amount(1250, c("JPY")), "1250");
        assert_eq!(format_amount(1, c("KWD")), "0.001");
        assert_eq!(format_amount(u64::MAX, c("CLF")), "1844674407370955.1615");
    }

    #[test]
    fn refusals() {
        let good = encode(&example());
        let tag = |t: &str| t.to_owned();
        let cases: Vec<(String, QrError)> = vec![
            (String::new(), QrError::Empty),
            ("0002".into(), QrError::CrcMissing),
            ("\u{e9}".into(), QrError::NotAscii),
            ("x".repeat(513), QrError::TooLong),
            (with_crc("000201010213"), QrError::Invalid { tag: tag("01"), reason: "must be 11 or 12" }),
            (with_crc("000201"), QrError::Missing { tag: tag("01") }),
            (with_crc("000201000212"), QrError::Duplicate { tag: tag("00") }),
            (with_crc("00020101021226"), QrError::Malformed { at: 12 }),
            (
                with_crc("010212000201"),
                QrError::Invalid { tag: tag("00"), reason: "the payload must start with format indicator 01" },
            ),
            (with_crc("000201010212"), QrError::NotPaycore),
            (with_crc("000201010212261400101234567890"), QrError::NotPaycore),
            (with_crc("0002010102122614001Xio.paycore"), QrError::Malformed { at: 16 }),
            (
                good.to_lowercase(),
                QrError::CrcMismatch {
                    found: good[good.len() - 4..].to_lowercase(),
                    computed: format!("{:04X}", crc16(&good.to_lowercase().as_bytes()[..good.len() - 4])),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(decode(&text), Err(want), "{text}");
        }
        let tampered = good.replacen("12.50", "92.50", 1);
        assert!(matches!(decode(&tampered), Err(QrError::CrcMismatch { .. })));
        assert_eq!(decode(&tampered).unwrap_err().code(), "qr_crc_mismatch");
        assert_eq!(QrError::NotPaycore.code(), "qr_invalid");
    }

    #[test]
    fn a_well_formed_payload_with_a_wrong_field_names_it() {
        let mut bad = example();
        bad.country = "fr".to_owned();
        assert_eq!(decode(&encode(&bad)), Err(invalid("58", "the country must be two upper-case letters")));
        bad = example();
        bad.amount = "1.2.3".to_owned();
        assert!(matches!(decode(&encode(&bad)), Err(QrError::Invalid { tag, .. }) if tag == "54"));
        let body = encode(&example()).replacen("010212", "010211", 1);
        let stat = with_crc(&body[..body.len() - 8]);
        assert!(matches!(decode(&stat), Err(QrError::Invalid { tag, .. }) if tag == "01"));
    }

    fn payloads() -> impl Strategy<Value = Payload> {
        (
            "pay_[0-9a-z]{26}",
            "[0-9]{4}",
            1u16..=999,
            "[0-9]{1,12}(\\.[0-9]{1,4})?",
            "[A-Z]{2}",
            "[ -~]{0,25}",
            "[ -~]{0,15}",
        )
            .prop_map(|(payment, category_code, currency, amount, country, merchant_name, merchant_city)| Payload {
                payment,
                category_code,
                currency,
                amount,
                country,
                merchant_name,
                merchant_city,
            })
            .prop_filter("names are not empty", |p| !p.merchant_name.is_empty() && !p.merchant_city.is_empty())
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(payload in payloads()) {
            let text = encode(&payload);
            prop_assert_eq!(decode(&text), Ok(payload));
        }

        #[test]
        fn any_single_changed_character_fails_the_crc(payload in payloads(), index in any::<prop::sample::Index>(), replacement in 0x20u8..0x7f) {
            let text = encode(&payload);
            let i = index.index(text.len());
            let mut bytes = text.clone().into_bytes();
            prop_assume!(bytes[i] != replacement);
            bytes[i] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            let result = decode(&changed);
            prop_assert!(matches!(result, Err(QrError::CrcMismatch { .. }) | Err(QrError::CrcMissing)), "{changed}: {result:?}");
        }

        #[test]
        fn decoding_never_panics(text in "\\PC{0,300}") {
            let _ = decode(&text);
        }

        #[test]
        fn decoding_bytes_near_a_payload_never_panics(payload in payloads(), cut in 0usize..200, junk in "[0-9A-F]{0,8}") {
            let text = encode(&payload);
            let cut = cut.min(text.len());
            let _ = decode(&format!("{}{junk}", &text[..cut]));
        }
    }
}
