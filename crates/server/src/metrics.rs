//! Prometheus metrics: request latencies by route, the engine's batch and commit metrics, and
//! the engine's queue depth read at scrape time.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paycore_engine::EngineMetrics;
use paycore_store::{Lag, Reader};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// Borrowed for the standard methods: labels are built for every request.
    method: Cow<'static, str>,
    /// The matched route pattern (`/v1/payments/{id}`), never the raw path, so that the label
    /// set stays small.
    route: String,
    /// `2xx`, `4xx`, …
    status: &'static str,
}

/// A partition of the store (`paycore_store::Lag`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: u32,
}

type LagFamily = Family<PartitionLabels, Gauge<f64, AtomicU64>>;

/// What the pruner removed (`crate::retention`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrunedLabels {
    /// `idempotency`, `deliveries`, `outbox`, `batch_files`, `reports`, `console_sessions`.
    kind: &'static str,
}

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    http: HistogramFamily,
    queue_depth: Gauge,
    pruned: Family<PrunedLabels, Counter>,
    history_behind: LagFamily,
    balances_behind: LagFamily,
    /// Held while a scrape sets the lag gauges and encodes them: two scrapes at once would
    /// otherwise encode while the other one has cleared them.
    scraping: std::sync::Mutex<()>,
}

impl Metrics {
    pub fn new(engine: &EngineMetrics) -> Metrics {
        let mut registry = Registry::default();
        let http: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let queue_depth = Gauge::default();
        registry.register(
            "paycore_http_request_duration_seconds",
            "Duration of HTTP requests by method, matched route and status class",
            http.clone(),
        );
        registry.register("paycore_engine_queue_depth", "Requests waiting in the engine's queue", queue_depth.clone());
        let pruned = Family::<PrunedLabels, Counter>::default();
        for kind in ["idempotency", "deliveries", "outbox", "batch_files", "reports", "console_sessions"] {
            drop(pruned.get_or_create(&PrunedLabels { kind }));
        }
        registry.register(
            "paycore_retention_pruned",
            "Records removed by the pruner when their retention window ended, by kind",
            pruned.clone(),
        );
        let history_behind = LagFamily::default();
        registry.register(
            "paycore_store_history_behind_seconds",
            "How far the account history's index is behind its partition's last commit, read at scrape time",
            history_behind.clone(),
        );
        let balances_behind = LagFamily::default();
        registry.register(
            "paycore_store_balances_behind_seconds",
            "How far the stored balances are behind their partition's last commit (reads add the transfers since), \
             read at scrape time",
            balances_behind.clone(),
        );
        engine.register(&mut registry);
        Metrics { registry, http, queue_depth, pruned, history_behind, balances_behind, scraping: Default::default() }
    }

    /// A scrape's text: the store's lag gauges set from what this scrape read, then every
    /// metric, with the queue depth as of now.
    pub fn scrape(&self, lag: paycore_store::Result<Vec<Lag>>, queue_depth: usize) -> String {
        let _one = self.scraping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.set_lag(lag);
        self.encode(queue_depth)
    }

    /// Sets the store's lag gauges from what was read at this scrape. A failed read removes
    /// them, so that a scrape never shows a lag older than itself.
    fn set_lag(&self, lag: paycore_store::Result<Vec<Lag>>) {
        self.history_behind.clear();
        self.balances_behind.clear();
        match lag {
            Ok(partitions) => {
                for lag in partitions {
                    let labels = PartitionLabels { partition: lag.partition };
                    self.history_behind.get_or_create(&labels).set(lag.history_behind().as_secs_f64());
                    self.balances_behind.get_or_create(&labels).set(lag.balances_behind().as_secs_f64());
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the store's lag for /metrics"),
        }
    }

    /// Counts `n` records of `kind` removed by the pruner.
    pub fn count_pruned(&self, kind: &'static str, n: usize) {
        self.pruned.get_or_create(&PrunedLabels { kind }).inc_by(n as u64);
    }

    /// The text exposition of every metric, with the queue depth as of now.
    pub fn encode(&self, queue_depth: usize) -> String {
        self.queue_depth.set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}

/// Middleware: times every request.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let labels = HttpLabels { method, route, status: status_label(response.status()) };
    state.metrics.http.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a label, without allocating for the standard ones.
fn method_label(method: &Method) -> Cow<'static, str> {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    match KNOWN.iter().find(|known| **known == method.as_str()) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

/// `1xx` to `9xx` (a status code is 100 to 999): the status class label.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        6 => "6xx",
        7 => "7xx",
        8 => "8xx",
        _ => "9xx",
    }
}

/// `GET /metrics`
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "application/openmetrics-text")))]
pub async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    let lag = read_lag(state.reader.clone()).await;
    let text = state.metrics.scrape(lag, state.engine.queue_depth());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// The store's [`Reader::lag`], read on a blocking thread.
pub async fn read_lag(reader: Arc<dyn Reader>) -> paycore_store::Result<Vec<Lag>> {
    tokio::task::spawn_blocking(move || reader.lag())
        .await
        .unwrap_or_else(|error| Err(paycore_store::StoreError::Internal(format!("the lag read failed: {error}"))))
}
