//! The OpenAPI document, generated from the handlers' annotations and the request and response
//! types.

use crate::{metrics, routes};
use axum::Json;
use paycore_ledger::interest::{Compounding, DayCount, Posting, QUOTE_DAYS_MAX};
use paycore_ledger::{BatchFormat, BatchMode, ItemStatus, OnInvalid, BATCH_EVENTS_MAX};
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "paycore", description = "A double-entry ledger, real-time payments and batch payments. Amounts are integers in the currency's minor unit; errors have one shape, `{\"error\":{\"type\",\"code\",\"message\",\"param\"}}`."),
    paths(
        routes::accounts::create,
        routes::accounts::retrieve,
        routes::accounts::transfers,
        routes::accounts::update,
        routes::accounts::audit,
        routes::statements::statement,
        routes::transfers::create,
        routes::payments::create,
        routes::payments::retrieve,
        routes::payments::list,
        routes::payments::confirm,
        routes::payments::capture,
        routes::payments::cancel,
        routes::payments::refund,
        routes::payments::refunds,
        routes::payments::qr,
        routes::payments::scan,
        routes::batches::create,
        routes::batches::retrieve,
        routes::batches::list,
        routes::batches::items,
        routes::batches::report,
        routes::batches::cancel,
        routes::clearing::close,
        routes::clearing::list,
        routes::clearing::retrieve,
        routes::admin::create_tenant,
        routes::admin::create_key,
        routes::admin::revoke_key,
        routes::admin::rotate_key,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::delete,
        routes::webhooks::deliveries,
        routes::webhooks::replay,
        routes::fx::set_rate,
        routes::fx::rates,
        routes::fx::create_quote,
        routes::fx::quote,
        routes::fx::set_settings,
        routes::fx::settings,
        routes::fx::accounts,
        routes::interest::quote,
        routes::interest::put,
        routes::interest::get,
        routes::interest::delete,
        routes::interest::run,
        routes::healthz,
        metrics::scrape,
        document,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::ErrorDetail,
        crate::error::ErrorType,
        crate::error::LimitDetail,
        routes::accounts::UpdateLimits,
        routes::batches::BatchItemsBody,
        routes::batches::BatchItemParam,
        routes::fx::FxAccountJson,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("sk_…").build()),
        );
    }
}

/// The served document: [`openapi`] made to say what the handlers do where the annotations of
/// each handler cannot say it once for all (found by schemathesis, `fuzz/schemathesis.sh`): a
/// secured operation may answer 401, one that takes a body, a query or headers may answer 400
/// (and 413 with a body), an `Idempotency-Key` may be refused with 422; and the request fields
/// and query parameters get the bounds the parsers enforce. (JSON Schema keywords such as
/// `propertyNames` have no place in utoipa's types, hence a patch of the JSON.)
pub fn document_json() -> serde_json::Value {
    let mut document = serde_json::to_value(openapi()).unwrap_or_default();
    conform(&mut document);
    document
}

const ACCOUNT_ID: &str = "^acct_[0-7][0-9abcdefghjkmnpqrstvwxyz]{25}$";
const TRANSFER_ID: &str = "^tr_[0-7][0-9abcdefghjkmnpqrstvwxyz]{25}$";
const CLEARING_WINDOW_ID: &str = "^cw_[0-7][0-9abcdefghjkmnpqrstvwxyz]{25}$";
/// An interest rate: a fraction per year in decimal text (`ledger::interest::parse_rate`).
const RATE: &str = "^[0-9]{1,3}(\\.[0-9]{1,12})?$";

/// What utoipa's annotations cannot say, patched into the generated document: the bounds and
/// patterns the server enforces, and the error answers every operation of a kind can give.
fn conform(document: &mut Value) {
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (_, operation) in item.iter_mut() {
                if let Some(operation) = operation.as_object_mut() {
                    conform_operation(path, operation);
                }
            }
        }
    }
    if let Some(schemas) = document.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for (name, schema) in schemas.iter_mut() {
            conform_schema(name, schema);
        }
    }
}

/// An operation's parameters, and the error answers it can give that it does not list.
fn conform_operation(path: &str, operation: &mut serde_json::Map<String, Value>) {
    let secured = operation.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    let body = operation.contains_key("requestBody");
    let mut input = body;
    let mut idempotent = false;
    if let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
        for parameter in parameters {
            input |= parameter["in"].as_str() != Some("path");
            idempotent |= conform_parameter(path, parameter);
        }
    }
    let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { return };
    if path.ends_with("/report") {
        // `?format=pain.002` answers XML.
        if let Some(content) =
            responses.get_mut("200").and_then(|r| r.get_mut("content")).and_then(Value::as_object_mut)
        {
            content.insert("application/xml".to_owned(), json!({"schema": {"type": "string"}}));
        }
    }
    let errors = [
        (secured, "401", "`unauthorized`: no valid API key"),
        (input, "400", "Invalid parameter, query or header"),
        (body, "413", "`body_too_large`: the body is over the size limit"),
        (idempotent, "422", "`idempotency_key_reused`: the key was used with another request"),
    ];
    for (applies, status, description) in errors {
        if applies && !responses.contains_key(status) {
            responses.insert(status.to_owned(), error_response(description));
        }
    }
}

/// A parameter's bounds and allowed values; true when it is the `Idempotency-Key` header.
fn conform_parameter(path: &str, parameter: &mut Value) -> bool {
    let name = parameter["name"].as_str().unwrap_or("").to_owned();
    let place = parameter["in"].as_str().unwrap_or("").to_owned();
    let schema = &mut parameter["schema"];
    match (place.as_str(), name.as_str()) {
        ("header", "Idempotency-Key") => {
            bounds(schema, json!({"pattern": "^[!-~]([ -~]{0,253}[!-~])?$"}));
            return true;
        }
        ("query", "limit") => {
            let max = if path.ends_with("/items") { 1000 } else { 100 };
            bounds(schema, json!({"minimum": 1, "maximum": max}));
        }
        ("query", "starting_after") if path.starts_with("/v1/accounts/") => {
            bounds(schema, json!({"pattern": TRANSFER_ID}));
        }
        ("query", "starting_after") if path.starts_with("/v1/clearing/") => {
            bounds(schema, json!({"pattern": CLEARING_WINDOW_ID}));
        }
        ("query", "format") if path.starts_with("/v1/clearing/") => schema["enum"] = json!(["json", "csv", null]),
        ("query", "format") if path == "/v1/batches" => {
            // An interest run's batches are made by `POST /v1/interest/runs`, never uploaded.
            let uploaded = BatchFormat::ALL.iter().filter(|f| **f != BatchFormat::Interest);
            schema["enum"] = names_or_null(uploaded.map(|v| v.as_str()));
        }
        ("query", "format") if path.ends_with("/statement") => {
            schema["enum"] = json!(["json", "csv", "camt.053", "camt.053.001.08", null]);
        }
        ("query", "from" | "to") if path.ends_with("/statement") => bounds(
            schema,
            json!({"pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2}))?$"}),
        ),
        ("query", "format") => schema["enum"] = json!(["csv", "pain.002", "nacha", null]),
        ("query", "version") => schema["enum"] = json!(["001.001.03", "001.001.10", "001.001.11", null]),
        ("query", "mode") => schema["enum"] = names_or_null(BatchMode::ALL.iter().map(|v| v.as_str())),
        ("query", "on_invalid") => schema["enum"] = names_or_null(OnInvalid::ALL.iter().map(|v| v.as_str())),
        ("query", "status") => {
            // The API folds `voided` and `cancelled` into `failed`.
            let listed =
                [ItemStatus::Invalid, ItemStatus::Pending, ItemStatus::Held, ItemStatus::Succeeded, ItemStatus::Failed];
            schema["enum"] = names_or_null(listed.iter().map(|v| v.as_str()));
        }
        ("query", "currency") => currency_enum(schema),
        ("query", "annual_rate") => bounds(schema, json!({"pattern": RATE})),
        ("query", "principal") => bounds(schema, json!({"minimum": 0, "maximum": 9_223_372_036_854_775_807_u64})),
        ("query", "days") => bounds(schema, json!({"minimum": 0, "maximum": QUOTE_DAYS_MAX})),
        ("query", "day_count") => schema["enum"] = names_or_null(DayCount::ALL.iter().map(|v| v.as_str())),
        ("query", "compounding") => schema["enum"] = names_or_null(Compounding::ALL.iter().map(|v| v.as_str())),
        ("query", "payer") => bounds(schema, json!({"minLength": 1, "pattern": "^\\S(.*\\S)?$"})),
        ("query", "expected_total") => bounds(schema, json!({"pattern": "^[0-9]+(\\.[0-9]+)?$"})),
        _ => {}
    }
    false
}

/// The bounds of a request schema's fields, as the server's JSON extraction checks them.
fn conform_schema(name: &str, schema: &mut Value) {
    if name == "BulkTransfers" {
        bounds(&mut schema["properties"]["transfers"], json!({"minItems": 1, "maxItems": BATCH_EVENTS_MAX}));
    }
    let request = matches!(
        name,
        "CreateAccount"
            | "TransferParams"
            | "CreatePayment"
            | "CapturePayment"
            | "CreateRefund"
            | "BatchItemParam"
            | "CloseClearingWindow"
            | "InterestTermsBody"
            | "CreateRun"
    );
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut).filter(|_| request) else {
        return;
    };
    for (field, property) in properties.iter_mut() {
        match field.as_str() {
            "currency" => currency_enum(property),
            "amount" => bounds(property, json!({"minimum": 1, "maximum": 9_223_372_036_854_775_807_u64})),
            "timeout_seconds" | "expires_in_seconds" => bounds(property, json!({"minimum": 1, "maximum": 31_622_400})),
            "debit_account" | "credit_account" | "payer_account" | "payee_account" => {
                bounds(property, json!({"pattern": ACCOUNT_ID}));
            }
            "id" | "post_pending_id" | "void_pending_id" => bounds(property, json!({"pattern": TRANSFER_ID})),
            "reference" if name == "CreateAccount" => bounds(property, json!({"minLength": 1, "maxLength": 128})),
            "description" => bounds(property, json!({"maxLength": 1000})),
            "annual_rate" | "debit_rate" => bounds(property, json!({"pattern": RATE})),
            "day_count" => property["enum"] = names_or_null(DayCount::ALL.iter().map(|v| v.as_str())),
            "compounding" => property["enum"] = names_or_null(Compounding::ALL.iter().map(|v| v.as_str())),
            "posting" => property["enum"] = names_or_null(Posting::ALL.iter().map(|v| v.as_str())),
            "min_balance" => bounds(property, json!({"minimum": 0, "maximum": 9_223_372_036_854_775_807_u64})),
            "through" => bounds(property, json!({"pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"})),
            "payee" => bounds(property, json!({"minLength": 1})),
            "metadata" => bounds(
                property,
                json!({"maxProperties": 50, "propertyNames": {"minLength": 1, "maxLength": 40},
                       "additionalProperties": {"type": "string", "maxLength": 500}}),
            ),
            _ => {}
        }
    }
}

/// A nullable enum of `names`.
fn names_or_null<'a>(names: impl Iterator<Item = &'a str>) -> Value {
    Value::Array(names.map(|name| json!(name)).chain([Value::Null]).collect())
}

/// An error answer with the one error shape.
fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

/// Adds `bounds`' keys to `schema`.
fn bounds(schema: &mut Value, bounds: Value) {
    if let (Some(schema), Value::Object(bounds)) = (schema.as_object_mut(), bounds) {
        for (key, value) in bounds {
            schema.insert(key, value);
        }
    }
}

/// Restricts a currency field to the ISO 4217 codes paycore knows (and null if it may be).
fn currency_enum(schema: &mut Value) {
    let nullable = schema["type"].as_array().is_some_and(|t| t.contains(&json!("null")));
    let mut codes: Vec<Value> = paycore_ledger::Currency::all().map(|c| json!(c.code())).collect();
    if nullable {
        codes.push(Value::Null);
    }
    schema["enum"] = Value::Array(codes);
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub async fn document() -> Json<serde_json::Value> {
    Json(document_json())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn conformance_patches_apply() {
        let document = document_json();
        let cancel = &document["paths"]["/v1/payments/{id}/cancel"]["post"]["responses"];
        assert!(cancel["401"].is_object() && cancel["400"].is_object(), "{cancel}");
        let amount = &document["components"]["schemas"]["TransferParams"]["properties"]["amount"];
        assert_eq!(amount["minimum"], 1, "{amount}");
    }
}
