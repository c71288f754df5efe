//! The HTTP API of paycore (axum): authentication, strict JSON parsing with errors that name
//! the field, idempotency keys, the routes, metrics and the OpenAPI document.
//!
//! Handlers are thin: parse, build a ledger [`Request`](paycore_ledger::Request), submit it to
//! the engine, render the outcome. Reads go straight to the store's [`Reader`].

mod auth;
mod body_deadline;
mod config;
mod connections;
mod console;
mod error;
mod idempotency;
mod ids;
mod jobs;
mod json;
mod metrics;
mod openapi;
mod protocol;
mod qr;
mod ratelimit;
mod reads;
mod render;
mod reports;
mod request_id;
mod retention;
mod roles;
mod routes;
pub mod ssrf;
mod webhooks;

pub use auth::{hash_key, insert_key, insert_key_for, Secret};
pub use config::{parse_window, Config, ManualClock, ServiceClock};
pub use connections::Tls;
pub use error::{ApiError, ErrorType};
pub use paycore_cluster::QueueConfig;
pub use render::Renderer;
pub use request_id::WithRequestId;
pub use roles::{Cluster, Role};
pub use webhooks::{hmac_sha256, signature, SIGNATURE_HEADER};

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use paycore_engine::{EngineConfig, EngineHandle, EngineMetrics};
use paycore_store::{AdminStore, BatchStore, FxStore, InterestStore, Reader, RetentionStore};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What every handler shares.
pub struct AppState {
    pub reader: Arc<dyn Reader>,
    /// The point reads of the write path, on a thread of their own.
    pub point_reads: reads::PointReads,
    pub engine: EngineHandle,
    pub renderer: Arc<Renderer>,
    pub keys: Arc<auth::KeyCache>,
    pub metrics: metrics::Metrics,
    pub max_body_bytes: usize,
    pub batches: Arc<dyn BatchStore>,
    /// Tenants, key revocation and webhooks.
    pub admin: Arc<dyn AdminStore>,
    /// FX rates, the tenant's fee and quotes.
    pub fx: Arc<dyn FxStore>,
    /// The wait before the first retry of a failed webhook delivery; it doubles per attempt.
    pub webhook_retry_min: std::time::Duration,
    /// The webhook client and the address guard of registrations.
    pub webhook: Arc<webhooks::Outbound>,
    /// Batch files with more items are rejected with `too_many_lines`.
    pub max_batch_lines: u64,
    /// The per-key token buckets.
    pub rate: ratelimit::RateLimiter,
    pub max_batch_bytes: u64,
    pub jobs: jobs::Jobs,
    /// The reports written while their batches run, in the data folder: with the embedded
    /// store only. On a shared store (PostgreSQL) every report is written on request from the
    /// store, so that any process serving the API can answer it.
    pub reports: Option<Arc<reports::ReportFiles>>,
    /// Set when the service stops: batch jobs return at their next step and resume under
    /// the next claim, on any node.
    pub stopping: Arc<AtomicBool>,
    /// What this process does (`/healthz` says it).
    pub role: Role,
    /// Cluster mode with `Role::All`: this process's engines.
    pub node: Option<Arc<paycore_cluster::EngineNode>>,
    /// Interest terms and runs.
    pub interest: Arc<dyn InterestStore>,
    /// What "today" is for interest runs (`Config::clock`), and the pruner's now.
    pub clock: Arc<dyn paycore_engine::Clock>,
    /// The pruner's store, windows and interval (`retention`).
    pub retainer: Arc<dyn RetentionStore>,
    pub retention: paycore_store::Retention,
    pub retention_interval: std::time::Duration,
    /// A request body not in full by then is cut off with 408 (`body_deadline`).
    pub body_read_timeout: std::time::Duration,
    /// The operator console's session keys (`console::Sessions`).
    pub console: console::Sessions,
}

/// The whole API as a router.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(metrics::scrape))
        .route("/openapi.json", get(openapi::document))
        .route("/v1/accounts", post(routes::accounts::create))
        .route("/v1/accounts/{id}", get(routes::accounts::retrieve).patch(routes::accounts::update))
        .route("/v1/accounts/{id}/transfers", get(routes::accounts::transfers))
        .route("/v1/accounts/{id}/audit", get(routes::accounts::audit))
        .route("/v1/accounts/{id}/statement", get(routes::statements::statement))
        .route(
            "/v1/accounts/{id}/interest",
            put(routes::interest::put).get(routes::interest::get).delete(routes::interest::delete),
        )
        .route("/v1/interest/quote", get(routes::interest::quote))
        .route("/v1/interest/runs", post(routes::interest::run))
        .route("/v1/transfers", post(routes::transfers::create))
        .route("/v1/payments", post(routes::payments::create).get(routes::payments::list))
        .route("/v1/payments/{id}", get(routes::payments::retrieve))
        .route("/v1/payments/{id}/confirm", post(routes::payments::confirm))
        .route("/v1/payments/scan", post(routes::payments::scan))
        .route("/v1/payments/{id}/qr", get(routes::payments::qr))
        .route("/v1/payments/{id}/capture", post(routes::payments::capture))
        .route("/v1/payments/{id}/cancel", post(routes::payments::cancel))
        .route("/v1/payments/{id}/refunds", post(routes::payments::refund).get(routes::payments::refunds))
        .route("/v1/batches", post(routes::batches::create).get(routes::batches::list))
        .route("/v1/batches/{id}", get(routes::batches::retrieve))
        .route("/v1/batches/{id}/items", get(routes::batches::items))
        .route("/v1/batches/{id}/report", get(routes::batches::report))
        .route("/v1/batches/{id}/cancel", post(routes::batches::cancel))
        .route("/v1/fx/rates", post(routes::fx::set_rate).get(routes::fx::rates))
        .route("/v1/fx/quotes", post(routes::fx::create_quote))
        .route("/v1/fx/quotes/{id}", get(routes::fx::quote))
        .route("/v1/fx/settings", post(routes::fx::set_settings).get(routes::fx::settings))
        .route("/v1/fx/accounts", get(routes::fx::accounts))
        .route("/v1/clearing/windows", get(routes::clearing::list))
        .route("/v1/clearing/windows/close", post(routes::clearing::close))
        .route("/v1/clearing/windows/{id}", get(routes::clearing::retrieve))
        .route("/v1/tenants", post(routes::admin::create_tenant))
        .route("/v1/api_keys", post(routes::admin::create_key))
        .route("/v1/api_keys/{id}", delete(routes::admin::revoke_key))
        .route("/v1/api_keys/{id}/rotate", post(routes::admin::rotate_key))
        .route("/v1/webhook_endpoints", post(routes::webhooks::create).get(routes::webhooks::list))
        .route("/v1/webhook_endpoints/{id}", delete(routes::webhooks::delete))
        .route("/v1/webhook_endpoints/{id}/deliveries", get(routes::webhooks::deliveries))
        .route("/v1/webhook_deliveries/{id}/replay", post(routes::webhooks::replay))
        .nest("/console", console::router())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), body_deadline::layer))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(limit))
        // `RateLimit-*` on every response whose key took a token (`ratelimit`).
        .layer(axum::middleware::from_fn(ratelimit::headers))
        // Outermost: every response, the layers' own included, carries the request id, and
        // the HTTP layer's own errors get the JSON shape (`protocol::guard`, run inside it).
        .layer(axum::middleware::from_fn(protocol::layer))
        .with_state(state)
}

/// A started service: the engine runs, the router is not served yet.
pub struct Service {
    pub state: Arc<AppState>,
    engines: Engines,
    limits: connections::Limits,
}

/// Where a service's engine runs.
enum Engines {
    /// On a thread of this process, fed by the in-process queue (the embedded default, and
    /// one process on PostgreSQL).
    Local(std::thread::JoinHandle<paycore_engine::Stopped>),
    /// Cluster mode: other processes' (`--role api`), or this process's own as well, leading
    /// or standing by for each partition (`--role all`).
    Cluster(Option<Arc<paycore_cluster::EngineNode>>),
}

/// The store's location: the `postgres://` URL of `--store`, else the data folder.
fn store_location(config: &Config) -> anyhow::Result<&Path> {
    Ok(match &config.store {
        Some(url) => match paycore_store::Location::parse(Path::new(url)) {
            paycore_store::Location::Postgres(_) => Path::new(url),
            paycore_store::Location::Folder(_) => {
                anyhow::bail!("the store must be a postgres:// URL (the embedded store lives in the data folder)")
            }
        },
        None => config.data_dir.as_path(),
    })
}

/// Opens the store, makes the first API key if there is none, and starts the engine: on a
/// thread of its own, or, in cluster mode (`config.cluster`), connects to the queue and, with
/// `Role::All`, starts this process's engines. Blocking (the store's calls are; the PostgreSQL
/// client's panic on a thread that drives async tasks): call it through `spawn_blocking`, as
/// [`run`] does (cluster mode needs the runtime's context, which such a thread has).
pub fn start(config: &Config) -> anyhow::Result<Service> {
    std::fs::create_dir_all(&config.data_dir)?;
    let location = store_location(config)?;
    let options = paycore_store::Options { reader_connections_max: config.store_connections_max };
    let renderer = Arc::new(Renderer);
    let engine_metrics = EngineMetrics::default();
    let render = renderer.clone();
    let render: paycore_engine::Renderer = Arc::new(move |outcome| render.render(outcome));
    let (api, engine, engines) = match (&config.cluster, config.role) {
        (_, Role::Engine) => anyhow::bail!("an engine process serves no API: see roles::serve_engine"),
        (None, Role::Api) => {
            anyhow::bail!("--role api needs a queue (--queue nats://…): its engines are other processes")
        }
        (None, Role::All) => {
            let paycore_store::Opened { store, api } = paycore_store::open_with(location, &options)?;
            let (submitter, queue) = paycore_engine::channel(config.queue_capacity);
            let thread = paycore_engine::start(
                store,
                Box::new(queue),
                config.clock.0.clone(),
                render,
                engine_metrics.clone(),
                EngineConfig::default(),
            )?;
            (api, EngineHandle::new(Arc::new(submitter)), Engines::Local(thread))
        }
        (Some(cluster), role) => {
            let Some(url) = config.store.as_deref() else {
                anyhow::bail!("cluster mode (--queue) needs the PostgreSQL store: --store postgres://…");
            };
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| anyhow::anyhow!("cluster mode starts from a thread of the runtime (spawn_blocking)"))?;
            let mut queue = cluster.queue.clone();
            queue.partitions = match role {
                Role::Api => roles::api_partitions(url, cluster.partitions, roles::API_WAIT_POLL)?,
                Role::All | Role::Engine => roles::partitions(url, cluster.partitions)?,
            };
            let api = paycore_store::open_api(url, &options)?;
            let submitter =
                runtime.block_on(paycore_cluster::NatsSubmitter::connect(queue.clone(), config.queue_capacity))?;
            let node = (role == Role::All).then(|| {
                let _entered = runtime.enter();
                Arc::new(roles::start_engines(
                    url,
                    queue,
                    render,
                    engine_metrics.clone(),
                    config.queue_capacity,
                    cluster.preferred.clone(),
                ))
            });
            (api, EngineHandle::new(Arc::new(submitter)), Engines::Cluster(node))
        }
    };
    let interest: Arc<dyn InterestStore> = api.clone();
    let retainer: Arc<dyn RetentionStore> = api.clone();
    let (reader, batches, fx): (Arc<dyn Reader>, Arc<dyn BatchStore>, Arc<dyn FxStore>) =
        (api.clone(), api.clone(), api.clone());
    let admin: Arc<dyn AdminStore> = api;
    auth::bootstrap(reader.as_ref(), admin.as_ref(), &config.data_dir, config.api_key.clone())?;
    let reports = match config.store {
        Some(_) => None,
        None => Some(Arc::new(reports::ReportFiles::open(&config.data_dir)?)),
    };
    let point_reads = reads::PointReads::start(reader.clone())?;
    let node = match &engines {
        Engines::Cluster(node) => node.clone(),
        Engines::Local(_) => None,
    };
    let (rate, burst) = (config.rate_limit_per_second, config.rate_limit_burst);
    let rate = match config.store {
        // PostgreSQL: every process serving the API draws on one bucket per key.
        Some(_) => ratelimit::RateLimiter::shared(rate, burst, admin.clone()),
        None => ratelimit::RateLimiter::new(rate, burst),
    };
    let state = Arc::new(AppState {
        reader,
        point_reads,
        engine,
        renderer,
        keys: Arc::new(auth::KeyCache::new()),
        metrics: metrics::Metrics::new(&engine_metrics),
        max_body_bytes: config.max_body_bytes,
        batches,
        admin,
        fx,
        webhook_retry_min: config.webhook_retry_min,
        webhook: Arc::new(webhooks::Outbound::new(config)?),
        max_batch_lines: config.max_batch_lines,
        rate,
        max_batch_bytes: config.max_batch_bytes,
        jobs: jobs::Jobs::new(
            config.node_id.clone(),
            config.batch_lease,
            config.max_concurrent_validations,
            config.max_queued_validations,
        ),
        reports,
        stopping: Arc::new(AtomicBool::new(false)),
        role: config.role,
        node,
        interest,
        clock: config.clock.0.clone(),
        retainer,
        retention: config.retention,
        retention_interval: config.retention_interval,
        body_read_timeout: config.body_read_timeout,
        console: console::Sessions::new(config.console_secret.as_ref(), config.console_secure_cookies),
    });
    Ok(Service { state, engines, limits: connections::limits(config) })
}

impl Service {
    /// Serves the API on `listener` until `shutdown` completes, then drains: in-flight requests
    /// finish (up to `Config::shutdown_timeout`), batch jobs stop at their next step, and the
    /// engine answers what it took and stops.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.serve_tls(listener, None, shutdown).await
    }

    /// [`Service::serve`], over TLS when `tls` is given.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<Tls>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Service { state, engines, limits } = self;
        let claims = jobs::spawn_claim_loop(state.clone());
        let deliveries = webhooks::spawn(state.clone());
        let pruner = retention::spawn(state.clone());
        let stopping = state.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.store(true, Ordering::Relaxed);
        };
        connections::serve(listener, app(state), limits, tls, shutdown).await;
        tracing::info!("connections closed; waiting for the engine to finish");
        // The worker sees `stopping` at its next round; an attempt in flight is retried at the
        // next start if it is not recorded.
        deliveries.abort();
        // A chunk in flight is one transaction: it commits or not; the next start goes on.
        pruner.abort();
        // The claim loop and every batch job see `stopping` within a tenth of a second; jobs
        // release their leases as they stop, so that another node (or the next start) resumes
        // them at once.
        if let Err(error) = claims.await {
            tracing::error!(%error, "the batch claim loop failed");
        }
        match engines {
            // Every engine handle was in the router's state, dropped with it: the engine
            // thread ends once it has answered what it took.
            Engines::Local(thread) => {
                tokio::task::spawn_blocking(move || thread.join())
                    .await?
                    .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
            }
            // This process's engines answer what they pulled, then stop; what they did not
            // pull stays in the stream for the other engines.
            Engines::Cluster(Some(node)) => node.stop().await,
            Engines::Cluster(None) => {}
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts the service and serves until SIGINT or SIGTERM. Prints one line,
/// `paycore listening on http://ADDR`, to stdout.
pub async fn run(config: Config) -> anyhow::Result<()> {
    if config.role == Role::Engine {
        return run_engine(config).await;
    }
    let service = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || start(&config)).await??
    };
    let tls = match &config.tls {
        Some((cert, key)) => Some(Tls::from_pem_files(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "paycore listening on {scheme}://{address}")?;
        stdout.flush()?;
    }
    let store = if config.store.is_some() { "postgres" } else { "embedded" };
    tracing::info!(%address, data = %config.data_dir.display(), store, scheme, "serving");
    service.serve_tls(listener, tls, shutdown_signal()).await
}

/// An `--role engine` process: its engines, `/healthz` and `/metrics`.
async fn run_engine(config: Config) -> anyhow::Result<()> {
    let (Some(store), Some(cluster)) = (config.store.clone(), config.cluster.clone()) else {
        anyhow::bail!("--role engine needs the PostgreSQL store (--store postgres://…) and a queue (--queue nats://…)");
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "paycore listening on http://{address}")?;
        stdout.flush()?;
    }
    tracing::info!(%address, role = "engine", "serving /healthz and /metrics");
    let limits = connections::limits(&config);
    roles::serve_engine(store, cluster, config.queue_capacity, limits, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
