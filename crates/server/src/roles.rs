//! What a process does in cluster mode: `api` (the HTTP API, submitting through the queue),
//! `engine` (leads or stands by for each partition; serves only `/healthz` and `/metrics`),
//! or `all` (both; without a queue, today's single process).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use paycore_cluster::{EngineNode, EngineNodeConfig, QueueConfig};
use paycore_engine::EngineMetrics;
use std::sync::Arc;

/// A process's part in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API only: stateless, any number of them.
    Api,
    /// Engines only: one leader per partition among the engine processes.
    Engine,
    /// Both (the embedded default).
    All,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Engine => "engine",
            Role::All => "all",
        }
    }
}

/// Cluster mode's settings: where the queue is.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub queue: QueueConfig,
    /// The partition count asked for; `None` takes the one recorded (1 for a new cluster).
    pub partitions: Option<u32>,
    /// The partitions this process's engines try to lead first (all when empty).
    pub preferred: Vec<u32>,
}

/// The partition count recorded in the store (recording `requested` for a new cluster).
pub fn partitions(store: &str, requested: Option<u32>) -> anyhow::Result<u32> {
    Ok(paycore_store::cluster_partitions(store, requested)?)
}

/// An API node's partition count. With `--partitions`, as an engine's ([`partitions`]: the
/// recorded one, or `requested` recorded for a new cluster). Without, the recorded one,
/// waiting (every `poll`) until there is one: an API node started beside engines that ask for
/// `--partitions 2` must not create the cluster first with one partition, which would refuse
/// them (`this cluster was created with 1 partition`), as the README's cluster section, its
/// processes started at once, did.
pub fn api_partitions(store: &str, requested: Option<u32>, poll: std::time::Duration) -> anyhow::Result<u32> {
    if requested.is_some() {
        return partitions(store, requested);
    }
    let started = std::time::Instant::now();
    let mut told = None;
    loop {
        if let Some(count) = paycore_store::recorded_cluster_partitions(store)? {
            if told.is_some() {
                tracing::info!(partitions = count, "the cluster's partition count is recorded; the API starts");
            }
            return Ok(count);
        }
        if told.is_none_or(|at: std::time::Instant| at.elapsed() >= API_WAIT_REPEAT) {
            tracing::warn!(
                waited_s = started.elapsed().as_secs(),
                "no partition count recorded yet: waiting for an engine (serve --role engine --partitions N) to create the cluster, or give this API node --partitions"
            );
            told = Some(std::time::Instant::now());
        }
        std::thread::sleep(poll);
    }
}

/// How often an API node waiting for the partition count looks again.
pub const API_WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// How often an API node waiting for the partition count says so again.
const API_WAIT_REPEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts this process's engines: one leader-or-standby task per partition.
pub fn start_engines(
    store: &str,
    queue: QueueConfig,
    renderer: paycore_engine::Renderer,
    metrics: EngineMetrics,
    queue_capacity: usize,
    preferred: Vec<u32>,
) -> EngineNode {
    EngineNode::start(EngineNodeConfig { store: store.to_owned(), queue, renderer, metrics, queue_capacity, preferred })
}

/// An engine process's health: `{"status":"ok","role":"engine","leader":…,"partitions":[…]}`.
pub fn engine_health(node: &EngineNode) -> crate::routes::Health {
    let partitions = node.leading();
    crate::routes::Health {
        status: "ok",
        role: Role::Engine.as_str(),
        leader: Some(!partitions.is_empty()),
        partitions: Some(partitions),
    }
}

struct EngineProcess {
    node: EngineNode,
    metrics: crate::metrics::Metrics,
    /// One pooled connection for `/metrics`' read of the store's lag.
    reader: Arc<dyn paycore_store::Reader>,
}

/// The router of an `--role engine` process: `/healthz` and `/metrics`.
fn engine_router(process: Arc<EngineProcess>) -> Router {
    Router::new()
        .route("/healthz", get(|State(p): State<Arc<EngineProcess>>| async move { Json(engine_health(&p.node)) }))
        .route(
            "/metrics",
            get(|State(p): State<Arc<EngineProcess>>| async move {
                let text = p.metrics.scrape(crate::metrics::read_lag(p.reader.clone()).await, 0);
                ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                    .into_response()
            }),
        )
        .fallback(crate::routes::not_found)
        .with_state(process)
}

/// Runs an `--role engine` process until `shutdown`: its engines, and `/healthz` and `/metrics`
/// on `listener`.
pub async fn serve_engine(
    store: String,
    cluster: Cluster,
    queue_capacity: usize,
    limits: crate::connections::Limits,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let requested = cluster.partitions;
    let url = store.clone();
    let count = tokio::task::spawn_blocking(move || partitions(&url, requested)).await??;
    let mut queue = cluster.queue;
    queue.partitions = count;
    let engine_metrics = EngineMetrics::default();
    let renderer = Arc::new(crate::Renderer);
    let render: paycore_engine::Renderer = Arc::new(move |outcome| renderer.render(outcome));
    let url = store.clone();
    let options = paycore_store::Options { reader_connections_max: 1 };
    let reader: Arc<dyn paycore_store::Reader> =
        tokio::task::spawn_blocking(move || paycore_store::open_api(&url, &options)).await??;
    let node = start_engines(&store, queue, render, engine_metrics.clone(), queue_capacity, cluster.preferred);
    tracing::info!(partitions = count, "engine process started; leading or standing by for every partition");
    let process = Arc::new(EngineProcess { node, metrics: crate::metrics::Metrics::new(&engine_metrics), reader });
    crate::connections::serve(listener, engine_router(process.clone()), limits, None, shutdown).await;
    // Each engine answers what it pulled and commits; its store's connection closes with it,
    // and with it the partition's advisory lock: a standby takes over at its next poll, without
    // waiting for a lock to lapse.
    process.node.stop().await;
    tracing::info!("engines stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{api_partitions, partitions};
    use paycore_store::testing::TestDatabase;
    use std::time::Duration;

    /// The README's cluster section starts two engines (`--partitions 2`) and two API nodes at
    /// once: an API node that got there first recorded a cluster of one partition, and both
    /// engines were refused. An API node now waits for the count the engines record.
    #[test]
    fn an_api_node_waits_for_the_engines_partition_count_and_records_none() {
        let Some(database) = TestDatabase::create("an_api_node_waits_for_the_engines_partition_count") else {
            return;
        };
        let url = database.url().to_owned();
        let api = {
            let url = url.clone();
            std::thread::spawn(move || api_partitions(&url, None, Duration::from_millis(10)))
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!api.is_finished(), "the API node did not wait for a recorded count");
        assert_eq!(partitions(&url, Some(2)).unwrap(), 2, "the engine's count is the cluster's");
        assert_eq!(api.join().unwrap().unwrap(), 2);
        // Once recorded, an API node reads it at once; one given --partitions is checked.
        assert_eq!(api_partitions(&url, None, Duration::from_millis(10)).unwrap(), 2);
        let refused = api_partitions(&url, Some(3), Duration::from_millis(10)).unwrap_err().to_string();
        assert!(refused.contains("created with 2 partitions"), "{refused}");
    }
}
