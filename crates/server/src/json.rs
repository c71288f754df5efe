//! Parsing request bodies: JSON through `serde_path_to_error`, so that every error names the
//! field at fault by its JSON path, and the field types that refuse what money must not be
//! (floats, negative numbers, strings, out-of-range integers, ids of the wrong kind).
//!
//! **No key twice.** A body whose object gives a key twice (`{"amount":1,"amount":100000}`),
//! at any depth, is refused with 400 `parameter_invalid` naming the key's path: `serde_json`
//! keeps the last value, a proxy or an auditor may keep the first. The check costs nothing on
//! the way a valid body takes, because every body is read into types that refuse a repeated
//! key by themselves: structs derived by serde (a repeated field is an error), [`unique_map`]
//! for maps, [`parse_object`] where a body must be looked at as JSON first. A body type must
//! never hold a plain map or a `serde_json::Value` (they keep the last value silently).

use crate::error::ApiError;
use paycore_formats::strict_json::{UniqueMap, UniqueValue};
use paycore_ledger::{AccountId, Currency, Overdraft, PaymentId, TransferId, AMOUNT_MAX};
use serde::de::{self, DeserializeOwned, Deserializer, Unexpected, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

/// Parses a JSON body into `T`. An empty body counts as `{}`.
///
/// A body that parses is parsed once, by `serde_json` alone: tracking the path costs an
/// allocation per key and is only needed to name the field of an error, so a body that does
/// not parse is parsed again with `serde_path_to_error`. Tracking the path changes nothing
/// of what parses, so the value and every error are the same as with one tracked pass.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = object_body(body)?;
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(to_api_error)?;
    deserializer.end().map_err(|e| ApiError::bad_request("invalid_json", format!("Invalid JSON: {e}.")))?;
    Ok(value)
}

/// `body` parsed into `T` if it parses, without tracking the path; `None` otherwise (parse it
/// again, another way, to get the error). The same value as [`parse`] when that succeeds.
pub fn parse_valid<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(object_body(body).ok()?).ok()
}

/// The body to parse: itself if it is an object, `{}` if it is empty.
fn object_body(body: &[u8]) -> Result<&[u8], ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Ok(b"{}".as_slice()),
        Some(b'{') => Ok(body),
        // Serde would read a struct from an array of its fields: a body must be an object.
        Some(_) => Err(ApiError::bad_request("invalid_json", "The body must be a JSON object.")),
    }
}

/// Parses a JSON body into a value, refusing a repeated key at any depth (for bodies whose
/// shape depends on their content; then [`parse_value`]).
pub fn parse_object(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    parse::<UniqueValue>(body).map(|unique| unique.0)
}

/// A map field of a body (`metadata`) that refuses a repeated key: for
/// `#[serde(default, deserialize_with = "json::unique_map")]` on an `Option<BTreeMap<String, V>>`.
pub fn unique_map<'de, D, V>(deserializer: D) -> Result<Option<BTreeMap<String, V>>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    Option::<UniqueMap<V>>::deserialize(deserializer).map(|map| map.map(|unique| unique.0))
}

/// Parses an already parsed JSON value into `T` (for bodies whose shape depends on their
/// content).
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(to_api_error)
}

fn to_api_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let parent = (path != ".").then_some(path);
    let inner = error.into_inner();
    if let (Some(param), true) = (&parent, inner.to_string().starts_with("number out of range")) {
        return ApiError::invalid(
            param.clone(),
            format!("Invalid value for `{param}`: the number is out of range; amounts are integers from 1 to 9223372036854775807."),
        );
    }
    if !inner.is_data() {
        return ApiError::bad_request("invalid_json", format!("Invalid JSON: {inner}."));
    }
    let full = inner.to_string();
    let message = match full.rfind(" at line ") {
        Some(at) => &full[..at],
        None => full.as_str(),
    };
    let join = |field: &str| match &parent {
        Some(parent) => format!("{parent}.{field}"),
        None => field.to_owned(),
    };
    if let Some(field) = quoted_after(message, "missing field `") {
        return ApiError::missing(join(field));
    }
    if let Some(field) = paycore_formats::strict_json::duplicate_key(message) {
        let param = join(field);
        return ApiError::invalid(param.clone(), format!("`{param}` appears more than once."));
    }
    if let Some(field) = quoted_after(message, "unknown field `") {
        // The path of an unknown field already ends with the field.
        let param = parent.clone().unwrap_or_else(|| field.to_owned());
        return ApiError::bad_request("unknown_parameter", format!("Received unknown parameter `{param}`: {message}."))
            .param(param);
    }
    match parent {
        Some(param) => ApiError::invalid(param.clone(), format!("Invalid value for `{param}`: {message}.")),
        None => ApiError::bad_request("invalid_json", format!("The body must be a JSON object: {message}.")),
    }
}

/// The name between backquotes after `prefix`, as serde writes field names.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    Some(&rest[..rest.find('`')?])
}

/// An amount in minor units: a JSON integer from 1 to 9223372036854775807.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount(pub u64);

impl Amount {
    /// `v` if it is an amount: the ledger's own bound, one rule, in `paycore_ledger::Amount::new`.
    pub fn of(v: u64) -> Option<Amount> {
        paycore_ledger::Amount::new(v).map(|amount| Amount(amount.get()))
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor;
        impl Visitor<'_> for AmountVisitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer number of minor units from 1 to 9223372036854775807")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                Amount::of(v).ok_or_else(|| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
                Err(E::invalid_type(Unexpected::Float(v), &self))
            }
        }
        deserializer.deserialize_any(AmountVisitor)
    }
}

/// A count of seconds: a JSON integer from 1 to `max` (checked by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl Seconds {
    /// `v` if it is a count of seconds (not 0; the caller checks the upper bound).
    pub fn of(v: u64) -> Option<Seconds> {
        (v > 0).then_some(Seconds(v))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive integer number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Seconds::of(v).ok_or_else(|| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Err(E::invalid_type(Unexpected::Float(v), &self))
            }
        }
        deserializer.deserialize_any(SecondsVisitor)
    }
}

/// An overdraft limit: a JSON integer from 0 to 9223372036854775807, or `"unlimited"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverdraftLimit(pub Overdraft);

impl<'de> Deserialize<'de> for OverdraftLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OverdraftVisitor;
        impl Visitor<'_> for OverdraftVisitor {
            type Value = OverdraftLimit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer from 0 to 9223372036854775807, or \"unlimited\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OverdraftLimit, E> {
                if v > AMOUNT_MAX {
                    return Err(E::invalid_value(Unexpected::Unsigned(v), &self));
                }
                Ok(OverdraftLimit(Overdraft::Limit(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OverdraftLimit, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<OverdraftLimit, E> {
                Err(E::invalid_type(Unexpected::Float(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OverdraftLimit, E> {
                if v == "unlimited" {
                    Ok(OverdraftLimit(Overdraft::Unlimited))
                } else {
                    Err(E::invalid_value(Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_any(OverdraftVisitor)
    }
}

/// An id type with a text prefix, for error messages.
pub trait Prefixed: FromStr {
    const EXAMPLE: &'static str;
}

impl Prefixed for AccountId {
    const EXAMPLE: &'static str = "an account id like \"acct_01j9z6m5v8k3q2w1x0y9z8a7b6\"";
}
impl Prefixed for TransferId {
    const EXAMPLE: &'static str = "a transfer id like \"tr_01j9z6m5v8k3q2w1x0y9z8a7b6\"";
}
impl Prefixed for paycore_ledger::QuoteId {
    const EXAMPLE: &'static str = "an FX quote id like \"fxq_01j9z6m5v8k3q2w1x0y9z8a7b6\"";
}
impl Prefixed for PaymentId {
    const EXAMPLE: &'static str = "a payment id like \"pay_01j9z6m5v8k3q2w1x0y9z8a7b6\"";
}

/// An id in a body: a string with the right prefix and 26 base32 digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Id<T>(pub T);

impl<'de, T: Prefixed> Deserialize<'de> for Id<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor<T>(PhantomData<T>);
        impl<T: Prefixed> Visitor<'_> for IdVisitor<T> {
            type Value = Id<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXAMPLE)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id<T>, E> {
                v.parse().map(Id).map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_str(IdVisitor(PhantomData))
    }
}

/// A currency field as given: looked up while it is parsed, so that a known code costs no
/// allocation (every item of a bulk request has one); an unknown one is kept as text, to be
/// named in the error by the caller, who knows the field's path ([`unknown_currency`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CurrencyText {
    Known(Currency),
    Unknown(String),
}

impl CurrencyText {
    /// The currency `code` names, or the code as text.
    pub fn of(code: &str) -> CurrencyText {
        Currency::from_code(code).map_or_else(|| CurrencyText::Unknown(code.to_owned()), CurrencyText::Known)
    }

    /// The currency, or the error naming `param` (built only for an unknown code).
    pub fn currency(self, param: impl FnOnce() -> String) -> Result<Currency, ApiError> {
        match self {
            CurrencyText::Known(currency) => Ok(currency),
            CurrencyText::Unknown(code) => Err(unknown_currency(&code, &param())),
        }
    }
}

impl<'de> Deserialize<'de> for CurrencyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CurrencyVisitor;
        impl Visitor<'_> for CurrencyVisitor {
            type Value = CurrencyText;
            // What a `String` field expects: the messages of a non-string value are unchanged.
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CurrencyText, E> {
                Ok(CurrencyText::of(v))
            }
        }
        deserializer.deserialize_str(CurrencyVisitor)
    }
}

/// Looks up an ISO 4217 code; `param` names the field for the error.
pub fn currency(code: &str, param: &str) -> Result<Currency, ApiError> {
    Currency::from_code(code).ok_or_else(|| unknown_currency(code, param))
}

/// The error for a currency code `Currency::from_code` does not know.
pub fn unknown_currency(code: &str, param: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_currency",
        format!("`{param}` must be an upper-case ISO 4217 currency code such as \"EUR\"; got {code:?}."),
    )
    .param(param)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        amount: Amount,
        account: Option<Id<AccountId>>,
        items: Option<Vec<Item>>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        amount: Amount,
    }

    fn error(body: &str) -> (String, Option<String>) {
        let e = parse::<Body>(body.as_bytes()).unwrap_err();
        (e.code, e.param)
    }

    fn check(body: &str, code: &str, param: Option<&str>) {
        assert_eq!(error(body), (code.to_owned(), param.map(str::to_owned)), "{body}");
    }

    #[test]
    fn amounts_are_positive_integers() {
        assert_eq!(parse::<Body>(br#"{"amount":9223372036854775807}"#).unwrap().amount, Amount(AMOUNT_MAX));
        for bad in [
            "10.5",
            "-1",
            "0",
            "\"ten\"",
            "1e3",
            "1e30",
            "9223372036854775808",
            "99999999999999999999999",
            "null",
            "true",
        ] {
            check(&format!(r#"{{"amount":{bad}}}"#), "parameter_invalid", Some("amount"));
        }
    }

    #[test]
    fn errors_name_the_field() {
        check(r#"{}"#, "parameter_missing", Some("amount"));
        check(r#""#, "parameter_missing", Some("amount"));
        check(r#"{"amount":1,"x":2}"#, "unknown_parameter", Some("x"));
        check(r#"{"amount":1,"items":[{"amount":1},{"amount":1.5}]}"#, "parameter_invalid", Some("items[1].amount"));
        check(r#"{"amount":1,"items":[{"amount":1},{}]}"#, "parameter_missing", Some("items[1].amount"));
        check(r#"{"amount":1,"items":[{"amount":1,"y":1}]}"#, "unknown_parameter", Some("items[0].y"));
        check(r#"{"amount":1,"account":"pay_00000000000000000000000000"}"#, "parameter_invalid", Some("account"));
        check(r#"{"amount":1,"#, "invalid_json", None);
        check(r#"{"amount":1} x"#, "invalid_json", None);
        check(r#"[1]"#, "invalid_json", None);
        check(r#" [1, null]"#, "invalid_json", None);
        check(r#"{"amount":1,"amount":2}"#, "parameter_invalid", Some("amount"));
        check(&format!(r#"{{"amount":{}}}"#, "9".repeat(400)), "parameter_invalid", Some("amount"));
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct WithMetadata {
        amount: Amount,
        #[serde(default, deserialize_with = "unique_map")]
        metadata: Option<BTreeMap<String, String>>,
    }

    #[test]
    fn a_key_given_twice_is_refused_naming_its_path() {
        let error = parse::<WithMetadata>(br#"{"amount":1,"metadata":{"a":"1","b":"2","a":"3"}}"#).unwrap_err();
        assert_eq!((error.code.as_str(), error.param.as_deref()), ("parameter_invalid", Some("metadata.a")));
        assert_eq!(error.message, "`metadata.a` appears more than once.");
        let error = parse::<WithMetadata>(br#"{"amount":1,"amount":100000}"#).unwrap_err();
        assert_eq!((error.code.as_str(), error.param.as_deref()), ("parameter_invalid", Some("amount")));
        let parsed = parse::<WithMetadata>(br#"{"amount":1,"metadata":{"a":"1","b":"2"}}"#).unwrap();
        assert_eq!(parsed.metadata.unwrap().len(), 2);
        assert!(parse::<WithMetadata>(br#"{"amount":1}"#).unwrap().metadata.is_none());

        for (body, param) in [
            (r#"{"amount":1,"amount":100000}"#, "amount"),
            (r#"{"transfers":[{"amount":1},{"amount":1,"amount":100000}]}"#, "transfers[1].amount"),
            (r#"{"transfers":[],"transfers":[{"amount":5}]}"#, "transfers"),
            (r#"{"a":{"b":[{"c":{"d":1,"d":2}}]}}"#, "a.b[0].c.d"),
        ] {
            let error = parse_object(body.as_bytes()).unwrap_err();
            assert_eq!((error.code.as_str(), error.param.as_deref()), ("parameter_invalid", Some(param)), "{body}");
        }
        assert_eq!(parse_object(br#"{"a":{"a":1},"b":{"a":1}}"#).unwrap()["b"]["a"], 1);
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        let e = parse::<Body>(b"{\n\"amount\": }").unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
    }
}
