//! Helpers shared by the integration tests.
#![allow(dead_code)]

use paycore_formats::{parse, Diagnostic, FatalError, Format, Item, ParseOptions, Summary};
use paycore_ledger::Currency;
use std::io::BufRead;

pub const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/samples");

/// Everything one parse produced.
pub struct Outcome {
    pub items: Vec<Item>,
    pub diagnostics: Vec<Diagnostic>,
    pub result: Result<Summary, FatalError>,
}

impl Outcome {
    pub fn summary(&self) -> &Summary {
        match &self.result {
            Ok(summary) => summary,
            Err(e) => panic!("expected a summary, got the fatal error: {e}"),
        }
    }

    pub fn fatal(&self) -> String {
        match &self.result {
            Ok(_) => panic!("expected a fatal error, got a summary"),
            Err(e) => e.to_string(),
        }
    }

    pub fn codes(&self) -> Vec<&'static str> {
        self.diagnostics.iter().map(|d| d.code).collect()
    }

    pub fn control_messages(&self) -> Vec<String> {
        self.summary().control_errors.iter().map(|d| d.message.clone()).collect()
    }

    /// Totals as (code, minor units), sorted by code.
    pub fn totals(&self) -> Vec<(&'static str, u128)> {
        let mut totals: Vec<_> = self.summary().totals.iter().map(|(c, t)| (c.code(), *t)).collect();
        totals.sort();
        totals
    }
}

pub fn parse_with(format: Format, input: impl BufRead, options: &ParseOptions) -> Outcome {
    let mut items = Vec::new();
    let mut diagnostics = Vec::new();
    let result = parse(format, input, options, &mut |record| match record {
        Ok(item) => items.push(item),
        Err(diagnostic) => diagnostics.push(diagnostic),
    });
    Outcome { items, diagnostics, result }
}

pub fn parse_text(format: Format, text: &str, options: &ParseOptions) -> Outcome {
    parse_with(format, text.as_bytes(), options)
}

pub fn sample(relative: &str) -> Vec<u8> {
    let path = format!("{SAMPLES}/{relative}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

pub fn parse_sample(format: Format, relative: &str, options: &ParseOptions) -> Outcome {
    parse_with(format, sample(relative).as_slice(), options)
}

pub fn currency(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

pub fn eur_options() -> ParseOptions {
    ParseOptions { default_payer: None, default_currency: Some(currency("EUR")) }
}

pub fn funding() -> ParseOptions {
    ParseOptions { default_payer: Some("acct_funding".to_owned()), default_currency: None }
}

/// A valid IBAN: `country`, the check digits ISO 7064 MOD 97-10 gives, then `bban`.
pub fn iban(country: &str, bban: &str) -> String {
    let rearranged = format!("{bban}{country}00");
    let mut remainder: u32 = 0;
    for c in rearranged.chars() {
        let value = c.to_digit(36).unwrap();
        remainder = if value < 10 { (remainder * 10 + value) % 97 } else { (remainder * 100 + value) % 97 };
    }
    format!("{country}{:02}{bban}", 98 - remainder)
}
