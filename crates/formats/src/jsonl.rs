//! JSON lines input: one JSON object per line.

use crate::common::{self, Collector, Lines};
use crate::{Diagnostic, FatalError, Item, ParseOptions};
use paycore_ledger::{Amount, AMOUNT_MAX};
use serde_json::{Map, Value};
use std::io::BufRead;

pub(crate) fn parse<R: BufRead>(input: R, options: &ParseOptions, out: &mut Collector<'_>) -> Result<(), FatalError> {
    let mut lines = Lines::new(input);
    while let Some((line, bytes)) = lines.next_line()? {
        if bytes.trim_ascii().is_empty() {
            continue;
        }
        match record(bytes, options, line) {
            Ok(item) => out.accept(item),
            Err(diagnostic) => out.reject(diagnostic),
        }
    }
    Ok(())
}

/// Validates one line.
fn record(bytes: &[u8], options: &ParseOptions, line: u64) -> Result<Item, Diagnostic> {
    let location = common::line_location(line);
    let syntax = |message: String| Diagnostic {
        line,
        location: location.clone(),
        field: None,
        code: "syntax",
        message,
        adjustment: None,
    };
    let value = crate::strict_json::from_slice(bytes).map_err(|e| invalid_json(&e, line, &location))?;
    let Value::Object(object) = value else {
        return Err(syntax("the line is not a JSON object; expected {\"payee\": ..., \"amount\": ...}".to_owned()));
    };
    let text = |name: &str| string(&object, name, line, &location);
    let payee = text("payee")?.ok_or_else(|| missing(line, &location, "payee"))?;
    let currency = match text("currency")? {
        Some(code) => common::currency(code, "currency", line, &location)?,
        None => options.default_currency.ok_or_else(|| {
            common::diagnostic(
                line,
                &location,
                "currency",
                "missing_field",
                "currency is missing: the object has no currency and the batch has no default currency".to_owned(),
            )
        })?,
    };
    let amount = match (object.get("amount"), object.get("amount_minor")) {
        (Some(_), Some(_)) => Err(common::diagnostic(
            line,
            &location,
            "amount",
            "invalid_amount",
            "both amount and amount_minor are given; give exactly one".to_owned(),
        )),
        (Some(Value::String(text)), None) => common::amount(text.trim(), currency, "amount", line, &location),
        (Some(other), None) => Err(common::diagnostic(
            line,
            &location,
            "amount",
            "invalid_amount",
            format!("amount is {other}, but it must be a string holding a decimal such as \"12.50\" (or use amount_minor for an integer of minor units)"),
        )),
        (None, Some(value)) => amount_minor(value, line, &location),
        (None, None) => Err(missing(line, &location, "amount")),
    }?;
    Ok(Item {
        index: 0,
        line,
        location: location.clone(),
        payer: text("payer")?.map(str::to_owned).or_else(|| options.default_payer.clone()),
        payee: payee.to_owned(),
        amount,
        currency,
        reference: text("reference")?.map(str::to_owned),
        instruction_id: None,
        remittance: None,
        payment_information_id: None,
    })
}

/// An optional string field; `null` and `""` count as absent.
fn string<'v>(
    object: &'v Map<String, Value>,
    name: &str,
    line: u64,
    location: &str,
) -> Result<Option<&'v str>, Diagnostic> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.trim()).filter(|t| !t.is_empty())),
        Some(other) => Err(common::diagnostic(
            line,
            location,
            name,
            "syntax",
            format!("{name} is {other}, but it must be a string"),
        )),
    }
}

fn amount_minor(value: &Value, line: u64, location: &str) -> Result<Amount, Diagnostic> {
    let problem = |code, message| Err(common::diagnostic(line, location, "amount_minor", code, message));
    match value {
        Value::Number(n) if n.as_u64() == Some(0) || n.as_i64().is_some_and(|v| v < 0) => {
            problem("amount_not_positive", format!("amount_minor is {n}; amounts must be greater than zero"))
        }
        Value::Number(n) => match n.as_u64().and_then(Amount::new) {
            Some(amount) => Ok(amount),
            None if n.as_u64().is_some() => {
                problem("invalid_amount", format!("amount_minor {n} is too large; at most {AMOUNT_MAX}"))
            }
            None => problem(
                "invalid_amount",
                format!("amount_minor is {n}, but it must be an integer number of minor units"),
            ),
        },
        other => problem(
            "invalid_amount",
            format!("amount_minor is {other}, but it must be an integer number of minor units"),
        ),
    }
}

/// The diagnostic for a line that does not parse: `duplicate_key` naming the key for an object
/// that gives a key twice (readers disagree on which one counts), `syntax` for the rest.
fn invalid_json(error: &serde_json::Error, line: u64, location: &str) -> Diagnostic {
    let message = error.to_string();
    match crate::strict_json::duplicate_key(&message) {
        Some(key) => common::diagnostic(
            line,
            location,
            key,
            "duplicate_key",
            format!("line {line} gives the key {key:?} more than once; each key may appear only once"),
        ),
        None => Diagnostic {
            line,
            location: location.to_owned(),
            field: None,
            code: "syntax",
            message: format!("the line is not valid JSON: {message}"),
            adjustment: None,
        },
    }
}

fn missing(line: u64, location: &str, name: &str) -> Diagnostic {
    common::diagnostic(line, location, name, "missing_field", format!("{name} is missing; every line needs one"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_makes_the_line_invalid_naming_the_key() {
        let options = ParseOptions::default();
        for (text, key) in [
            (r#"{"payee":"DE1","amount_minor":1,"amount_minor":700,"currency":"EUR"}"#, "amount_minor"),
            (r#"{"payee":"DE1","payee":"DE2","amount_minor":1,"currency":"EUR"}"#, "payee"),
            (r#"{"payee":"DE1","amount_minor":1,"currency":"EUR","extra":{"a":1,"a":2}}"#, "a"),
        ] {
            let diagnostic = record(text.as_bytes(), &options, 7).unwrap_err();
            assert_eq!(diagnostic.code, "duplicate_key", "{text}");
            assert_eq!(diagnostic.field.as_deref(), Some(key), "{text}");
            assert_eq!((diagnostic.line, diagnostic.location.as_str()), (7, "line 7"));
            assert_eq!(
                diagnostic.message,
                format!("line 7 gives the key \"{key}\" more than once; each key may appear only once")
            );
        }
        // The same line with the key once is paid what it says.
        let item = record(br#"{"payee":"DE1","amount_minor":700,"currency":"EUR"}"#, &options, 7).unwrap();
        assert_eq!(item.amount.get(), 700);
        let broken = record(br#"{"payee":"DE1","#, &options, 7).unwrap_err();
        assert_eq!(broken.code, "syntax");
    }
}
