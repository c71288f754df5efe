//! Every request body the `api_bodies` fuzz target found a failure with
//! (`fuzz/regressions/api_bodies/`), sent again through the real router, engine and store: none
//! may get a 5xx. A file is one fuzz input: its first byte picks the route (the table below is
//! the fuzz target's), the rest is the body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

const KEY: &str = "sk_fuzz_0123456789abcdefghijklmnopqrstuv";

/// The same table as `fuzz/src/lib.rs`.
const ROUTES: &[&str] = &[
    "/v1/accounts",
    "/v1/transfers",
    "/v1/payments",
    "/v1/batches",
    "/v1/payments/pay_00000000000000000000000000/capture",
    "/v1/payments/pay_00000000000000000000000000/refunds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_bodies() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/api_bodies");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let (service, _data) = common::boot(KEY, |c| c.max_body_bytes = 64 * 1024).await;
    let (base, client) = (service.base, service.http);
    for entry in entries {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        let Some((&route, body)) = input.split_first() else { continue };
        let route = ROUTES[usize::from(route) % ROUTES.len()];
        let response = client
            .post(format!("{base}{route}"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(!status.is_server_error() || status.as_u16() == 503, "{}: {route} answered {status}", path.display());
    }
}
