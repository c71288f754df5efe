//! The OpenAPI document, generated from the handlers' annotations and the request and response
//! types.

use crate::{metrics, routes};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "paycore", description = "A double-entry ledger, real-time payments and batch payments. Amounts are integers in the currency's minor unit; errors have one shape, `{\"error\":{\"type\",\"code\",\"message\",\"param\"}}`."),
    paths(
        routes::accounts::create,
        routes::accounts::retrieve,
        routes::accounts::transfers,
        routes::transfers::create,
        routes::payments::create,
        routes::payments::retrieve,
        routes::payments::confirm,
        routes::payments::capture,
        routes::payments::cancel,
        routes::payments::refund,
        routes::payments::refunds,
        routes::batches::create,
        routes::batches::retrieve,
        routes::batches::items,
        routes::batches::report,
        routes::batches::cancel,
        routes::healthz,
        metrics::scrape,
        document,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::ErrorDetail,
        crate::error::ErrorType,
        routes::batches::BatchItemsBody,
        routes::batches::BatchItemParam,
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

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
