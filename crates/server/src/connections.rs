//! The accept loop: how connections come in, how long they may take, how many there may be,
//! and how they end when the service stops.
//!
//! `axum::serve` never closes a connection by itself: an idle keep-alive socket or a request
//! head sent a byte at a time holds a file descriptor for as long as the client wishes, and
//! keeps a graceful shutdown waiting. So the server runs its own loop over hyper's HTTP/1.1
//! connection ([`serve`]):
//!
//! - **Caps.** At most [`Limits::max_connections`] connections are open at once, and at most
//!   [`Limits::max_connections_per_ip`] from one client address. A connection over either is
//!   accepted, answered 503 `too_many_connections` (if the socket takes the bytes at once) and
//!   closed, so that the listen backlog never fills up with connections nobody serves.
//! - **Timeouts** (a watchdog per connection, [`Watchdog`]; one timer each, woken only at its
//!   deadline): between requests, a connection that sends nothing for
//!   [`Limits::keep_alive_timeout`] is closed; once a request head has begun, it must be
//!   complete within [`Limits::header_read_timeout`]. A TLS handshake has the header timeout
//!   too. While a request is served the watchdog waits; its body has its own deadline
//!   (`body_read_timeout`, [`crate::body_deadline`]).
//! - **Accept errors** (`EMFILE` when the process is out of file descriptors) are logged and the
//!   loop waits a little before accepting again, rather than spinning on the error.
//! - **Drain.** When `shutdown` completes the loop stops accepting, asks every connection to
//!   end after its request in flight (idle ones close at once), and waits for them up to
//!   [`Limits::shutdown_timeout`]; the connections still open then are dropped.
//! - **Lingering close.** When a connection ends, its write side is shut down first (the
//!   client reads the answer and then end-of-file) and what the client still sends is read and
//!   thrown away, until its end-of-file, for at most [`LINGER`] and [`LINGER_BYTES`]. Closing a
//!   socket with unread bytes in it makes the kernel answer with a reset, and a client still
//!   sending a body the server refused (413 from its `Content-Length`) would then lose the
//!   answer it had not read yet: it would see a broken connection instead of the 413.
//! - **TLS** ([`Tls`], optional): rustls, from a PEM certificate chain and key.

use crate::error::{ApiError, ErrorType};
use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::rustls;

/// The wait after an accept error before the next accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long an ending connection reads (and discards) what its client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// How much an ending connection reads (and discards) at most.
const LINGER_BYTES: usize = 64 << 20;

/// What a connection may take and how many there may be (`Config`'s settings of the same names).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub shutdown_timeout: Duration,
}

/// The limits `config` sets.
pub fn limits(config: &crate::Config) -> Limits {
    Limits {
        header_read_timeout: config.header_read_timeout,
        keep_alive_timeout: config.keep_alive_timeout,
        max_connections: config.max_connections.max(1),
        max_connections_per_ip: config.max_connections_per_ip.max(1),
        shutdown_timeout: config.shutdown_timeout,
    }
}

/// The API's TLS: a rustls acceptor made from a certificate chain and its key.
#[derive(Clone)]
pub struct Tls(tokio_rustls::TlsAcceptor);

impl Tls {
    /// Reads the PEM files `cert` (the chain, leaf first) and `key` (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", cert.display()))?;
        if chain.is_empty() {
            anyhow::bail!("--tls-cert {}: no certificate in the file", cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", key.display()))?;
        // ring, as async-nats already builds rustls: its provider has no post-quantum key
        // exchange (hence the deprecation); aws-lc-rs would add a C library to the build. A
        // deployment that needs post-quantum TLS terminates it in a proxy.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| anyhow::anyhow!("--tls-cert and --tls-key do not make a certificate: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains (see the module's
/// docs). Returns once every connection has ended or was dropped.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let (draining, drained) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // The most connections open at once, for the log line at the drain.
    let mut peak = 0;
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors (or another resource): accepting again at once would
                // fail again at once. Connections that end meanwhile free what is missing.
                tracing::warn!(%error, "accept failed; pausing before the next accept");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (permit, entry) = match admit(&open, &per_ip, address.ip(), &limits) {
            Ok(admitted) => admitted,
            Err(_) => {
                // Connections whose clients just closed them may not have ended yet: their
                // end-of-file is seen at the next poll of the I/O driver, which `yield_now`
                // waits for. One more look, then the refusal.
                tokio::task::yield_now().await;
                match admit(&open, &per_ip, address.ip(), &limits) {
                    Ok(admitted) => admitted,
                    Err(message) => {
                        refuse(stream, message);
                        continue;
                    }
                }
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            // One small request and answer at a time on each connection: Nagle's algorithm
            // would only hold back the last segment of an answer.
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        peak = peak.max(limits.max_connections - open.available_permits());
        let (router, tls, drained) = (router.clone(), tls.clone(), drained.clone());
        connections.spawn(async move {
            match tls {
                None => connection(stream, router, limits, drained).await,
                Some(Tls(acceptor)) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, router, limits, drained).await,
                        Ok(Err(error)) => tracing::debug!(%address, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%address, "TLS handshake timed out"),
                    }
                }
            }
            drop((permit, entry));
        });
    }
    drop(listener);
    let _ = draining.send(true);
    let open = connections.len();
    tracing::info!(open, peak, "stopped accepting; draining the open connections");
    if tokio::time::timeout(limits.shutdown_timeout, async { while connections.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            left = connections.len(),
            timeout = ?limits.shutdown_timeout,
            "connections still open at the end of the drain; dropped"
        );
        connections.shutdown().await;
    }
}

/// A permit under the global cap and an entry under the per-address one, or why not.
fn admit(
    open: &Arc<Semaphore>,
    per_ip: &Arc<PerIp>,
    ip: IpAddr,
    limits: &Limits,
) -> Result<(tokio::sync::OwnedSemaphorePermit, PerIpEntry), &'static str> {
    let Ok(permit) = open.clone().try_acquire_owned() else {
        return Err("The server has as many connections open as it serves (max_connections).");
    };
    let Some(entry) = per_ip.enter(ip, limits.max_connections_per_ip) else {
        return Err("This address has as many connections open as one address may (max_connections_per_ip).");
    };
    Ok((permit, entry))
}

/// Answers a connection over a cap, if its socket takes the answer at once, and closes it.
fn refuse(stream: TcpStream, message: &str) {
    let mut error =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorType::ApiError, "too_many_connections", message);
    error.retry_after = true;
    let body = error.body();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut answer = head.into_bytes();
    answer.extend_from_slice(&body);
    let _ = stream.try_write(&answer);
}

/// Serves one connection until it ends, its watchdog closes it, or the drain ends it.
async fn connection<S>(stream: S, router: Router, limits: Limits, mut draining: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watchdog = Arc::new(Watchdog::new());
    let io = TokioIo::new(Watched { inner: stream, watchdog: watchdog.clone() });
    let service = {
        let (service, watchdog) = (hyper_util::service::TowerToHyperService::new(router), watchdog.clone());
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let serving = Serving::begin(&watchdog);
            let answer = hyper::service::Service::call(&service, request);
            // Boxed: the connection is polled without pinning it, so that its socket can be
            // taken back at its end (see `linger`), which needs every part of it `Unpin`.
            Box::pin(async move {
                let answer = answer.await;
                drop(serving);
                answer
            })
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    // The watchdog keeps the time; hyper's own header timer would also end idle keep-alive
    // connections at the header timeout, with no way to tell the two apart.
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(None).keep_alive(true);
    let mut conn = http.serve_connection(io, service);
    let mut asked_to_end = *draining.borrow();
    if asked_to_end {
        Pin::new(&mut conn).graceful_shutdown();
    }
    loop {
        tokio::select! {
            ended = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "connection ended with an error");
                }
                linger(conn.into_parts().io.into_inner().inner).await;
                return;
            }
            cut = watchdog.expired(&limits) => {
                tracing::debug!(reason = cut, "connection closed by its watchdog");
                return;
            }
            changed = draining.changed(), if !asked_to_end => {
                if changed.is_err() || *draining.borrow() {
                    asked_to_end = true;
                    Pin::new(&mut conn).graceful_shutdown();
                }
            }
        }
    }
}

/// Ends a connection whose last answer is written: shuts its write side down, then reads and
/// discards what the client still sends until its end-of-file, [`LINGER`] or [`LINGER_BYTES`]
/// (see the module's docs). A client that closed first costs one read that returns at once.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + LINGER;
    if !matches!(tokio::time::timeout_at(deadline, stream.shutdown()).await, Ok(Ok(()))) {
        return;
    }
    // On the heap, and only here: an array would add its 4 KiB to every connection's task.
    let mut sink = vec![0; 4096];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(read)) if read > 0 => discarded += read,
            _ => return,
        }
    }
}

/// Connections open per client address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    /// Counts one more connection from `ip`, unless it has `max` already.
    fn enter(self: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<PerIpEntry> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PerIpEntry { map: self.clone(), ip })
    }
}

/// One connection counted in [`PerIp`]; dropping it uncounts it.
struct PerIpEntry {
    map: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for PerIpEntry {
    fn drop(&mut self) {
        let mut open = self.map.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a connection is doing, for its deadlines. Times are milliseconds since `epoch`, plus
/// one (0: never).
struct Watchdog {
    epoch: Instant,
    /// Requests being served (their handler has not answered yet).
    serving: AtomicUsize,
    /// The last time anything was written, or a request was answered: the idle time counts
    /// from there.
    idle_since: AtomicU64,
    /// When the first byte of the next request head was read, while no request was served.
    head_since: AtomicU64,
}

impl Watchdog {
    fn new() -> Watchdog {
        Watchdog {
            epoch: Instant::now(),
            serving: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            head_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn at(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_millis(stamp.saturating_sub(1))
    }

    fn read(&self) {
        if self.serving.load(Ordering::Acquire) == 0 && self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since.store(self.now(), Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
    }

    /// Completes when the connection has passed one of its deadlines; says which.
    async fn expired(&self, limits: &Limits) -> &'static str {
        loop {
            let (deadline, reason) = if self.serving.load(Ordering::Acquire) > 0 {
                // A request is served: look again later (its body has a deadline of its own).
                (Instant::now() + limits.keep_alive_timeout.min(limits.header_read_timeout), "")
            } else {
                match self.head_since.load(Ordering::Relaxed) {
                    0 => (
                        self.at(self.idle_since.load(Ordering::Relaxed)) + limits.keep_alive_timeout,
                        "keep_alive_timeout",
                    ),
                    since => (self.at(since) + limits.header_read_timeout, "header_read_timeout"),
                }
            };
            if !reason.is_empty() && deadline <= Instant::now() {
                return reason;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A request being served, counted in its connection's [`Watchdog`].
struct Serving(Arc<Watchdog>);

impl Serving {
    fn begin(watchdog: &Arc<Watchdog>) -> Serving {
        watchdog.serving.fetch_add(1, Ordering::AcqRel);
        watchdog.head_since.store(0, Ordering::Relaxed);
        Serving(watchdog.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.serving.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's stream, telling its [`Watchdog`] when bytes pass.
struct Watched<S> {
    inner: S,
    watchdog: Arc<Watchdog>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watchdog.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.watchdog.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.watchdog.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
