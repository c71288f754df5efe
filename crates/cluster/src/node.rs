//! The engines of one process: for each partition, wait to lead it (a standby), then run an
//! engine on it until the lead is lost or the process stops.

use crate::consumer::consume;
use crate::queue::QueueConfig;
use paycore_engine::{EngineConfig, EngineMetrics, Renderer, SystemClock};
use paycore_store::StoreError;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often a standby tries to take a partition's lock, for the partitions it prefers.
const STANDBY_POLL: Duration = Duration::from_millis(250);
/// The same for the others: an engine lets the engine that prefers a partition take it first,
/// and takes it over when it stays without a leader.
const STANDBY_POLL_OTHERS: Duration = Duration::from_secs(2);
/// How often a process that leads a partition it did not name looks for an engine that named
/// it and stands by (a `paycore_store::PartitionWish`): one query for all its partitions.
const WISH_CHECK: Duration = Duration::from_secs(1);
/// Such a leader hands the partition over once it has led it this long and seen the wish in
/// two checks in a row: an engine that prefers the partition but cannot keep it (its NATS
/// down) then costs a handover every few seconds, not a partition without a leader.
const HANDOVER_AFTER: Duration = Duration::from_secs(5);

/// What an engine process needs.
pub struct EngineNodeConfig {
    /// The PostgreSQL store's URL.
    pub store: String,
    pub queue: QueueConfig,
    /// Turns outcomes into the saved responses of idempotency keys (the API's renderer).
    pub renderer: Renderer,
    pub metrics: EngineMetrics,
    /// Submissions an engine holds in memory beyond those in its batch.
    pub queue_capacity: usize,
    /// The partitions this process tries to lead first (all when empty): with two engines and
    /// two partitions, `0` on one and `1` on the other spreads the writes over both.
    pub preferred: Vec<u32>,
}

/// The partitions this process leads, and the tasks that lead or wait for them.
pub struct EngineNode {
    leading: Arc<Mutex<BTreeSet<u32>>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The partitions some engine that named them waits to lead, as last seen.
type Wished = watch::Receiver<BTreeSet<u32>>;

impl EngineNode {
    /// Starts one leader-or-standby task per partition of the cluster.
    pub fn start(config: EngineNodeConfig) -> EngineNode {
        let config = Arc::new(config);
        let leading = Arc::new(Mutex::new(BTreeSet::new()));
        let (stop, stopped) = watch::channel(false);
        let (wishes, wished) = watch::channel(BTreeSet::new());
        let mut tasks: Vec<_> = (0..config.queue.partitions)
            .map(|partition| {
                let partition = Partition {
                    number: partition,
                    config: config.clone(),
                    leading: leading.clone(),
                    wished: wished.clone(),
                };
                tokio::spawn(partition.run(stopped.clone()))
            })
            .collect();
        tasks.push(tokio::spawn(watch_wishes(config, leading.clone(), wishes, stopped)));
        EngineNode { leading, stop, tasks: Mutex::new(tasks) }
    }

    /// The partitions led now, in order.
    pub fn leading(&self) -> Vec<u32> {
        self.leading.lock().map(|set| set.iter().copied().collect()).unwrap_or_default()
    }

    /// Stops every engine once it has answered what it took, and waits for them.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = self.tasks.lock().map(|mut tasks| std::mem::take(&mut *tasks)).unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
    }
}

struct Partition {
    number: u32,
    config: Arc<EngineNodeConfig>,
    leading: Arc<Mutex<BTreeSet<u32>>>,
    wished: Wished,
}

/// Every [`WISH_CHECK`] while this process leads a partition it did not name, reads which
/// partitions an engine that named them waits for, on a connection of its own (opened when
/// first needed, kept, dropped after a failure), and tells the partitions' tasks.
async fn watch_wishes(
    config: Arc<EngineNodeConfig>,
    leading: Arc<Mutex<BTreeSet<u32>>>,
    wishes: watch::Sender<BTreeSet<u32>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connection: Option<paycore_store::PartitionWishes> = None;
    while !*stop.borrow() {
        tokio::select! {
            () = tokio::time::sleep(WISH_CHECK) => {}
            _ = stop.changed() => break,
        }
        let unnamed = leading.lock().map(|led| led.iter().any(|p| !config.preferred.contains(p))).unwrap_or(false);
        if !unnamed {
            continue;
        }
        let url = config.store.clone();
        let asked = tokio::task::spawn_blocking(move || {
            let mut wishes = match connection {
                Some(wishes) => wishes,
                None => paycore_store::PartitionWishes::connect(&url)?,
            };
            let wished = wishes.wished()?;
            Ok::<_, StoreError>((wishes, wished))
        })
        .await;
        match asked {
            Ok(Ok((kept, wished))) => {
                connection = Some(kept);
                wishes.send_replace(wished.into_iter().collect());
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read which partitions other engines wait for");
                connection = None;
            }
            Err(error) => {
                tracing::warn!(%error, "reading which partitions other engines wait for failed");
                connection = None;
            }
        }
    }
    off_runtime_drop(connection);
}

impl Partition {
    /// Whether this process leads the partition by choice: it prefers it, or prefers none.
    fn preferred(&self) -> bool {
        self.config.preferred.is_empty() || self.config.preferred.contains(&self.number)
    }

    /// Whether this process named the partition among those it prefers: then it wishes to
    /// lead it while it stands by, and a leader that did not name it hands it over.
    fn named(&self) -> bool {
        self.config.preferred.contains(&self.number)
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let preferred = self.preferred();
        let poll = if preferred { STANDBY_POLL } else { STANDBY_POLL_OTHERS };
        let mut wish: Option<paycore_store::PartitionWish> = None;
        if !preferred {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
        let mut standby_said = false;
        while !*stop.borrow() {
            let (url, number) = (self.config.store.clone(), self.number);
            let opened = tokio::task::spawn_blocking(move || {
                paycore_store::open_partition(&url, number, &paycore_store::Options::default())
            })
            .await
            .unwrap_or_else(|e| Err(StoreError::Internal(format!("the leader election task failed: {e}"))));
            match opened {
                Ok(leader) => {
                    standby_said = false;
                    off_runtime_drop(wish.take());
                    self.lead(leader, &mut stop).await;
                }
                Err(StoreError::InUse(_)) => {
                    if !standby_said {
                        tracing::info!(partition = self.number, "standby: another engine leads the partition");
                        standby_said = true;
                    }
                    if self.named() && wish.is_none() {
                        wish = self.wish().await;
                    }
                }
                Err(error) => tracing::warn!(partition = self.number, %error, "cannot try to lead the partition"),
            }
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
        off_runtime_drop(wish);
    }

    /// Takes this process's wish to lead the partition (`None`, logged, when it cannot).
    async fn wish(&self) -> Option<paycore_store::PartitionWish> {
        let (url, number) = (self.config.store.clone(), self.number);
        match tokio::task::spawn_blocking(move || paycore_store::wish_to_lead(&url, number)).await {
            Ok(Ok(wish)) => {
                tracing::info!(partition = number, "waiting to lead the partition this engine prefers");
                Some(wish)
            }
            Ok(Err(error)) => {
                tracing::warn!(partition = number, %error, "cannot record the wish to lead the partition");
                None
            }
            Err(error) => {
                tracing::warn!(partition = number, %error, "the wish to lead the partition failed");
                None
            }
        }
    }

    /// Runs the partition's engine until it ends (the lead was lost) or the process stops.
    async fn lead(&self, leader: paycore_store::Leader, stop: &mut watch::Receiver<bool>) {
        let number = self.number;
        let epoch = leader.epoch;
        let config = &self.config;
        let (queue, consumption) = match consume(&config.queue, number, config.queue_capacity).await {
            Ok(consumed) => consumed,
            Err(error) => {
                // Dropping the leader releases the lock: another engine may do better. Its store
                // closes its blocking connection on a thread of its own (dropped here on the
                // runtime's, that connection's close panicked, seen in CI, and ended this
                // partition's task for good: `postgres::commit::EngineClient`).
                tracing::error!(partition = number, %error, "cannot consume the partition's queue; giving up the lead");
                drop(leader);
                return;
            }
        };
        let (renderer, metrics) = (config.renderer.clone(), config.metrics.clone());
        let started = tokio::task::spawn_blocking(move || {
            paycore_engine::start(
                leader.store,
                Box::new(queue),
                Arc::new(SystemClock),
                renderer,
                metrics,
                EngineConfig::default(),
            )
        })
        .await;
        let thread = match started {
            Ok(Ok(thread)) => thread,
            Ok(Err(error)) => {
                tracing::error!(partition = number, %error, "cannot recover the partition's state; giving up the lead");
                return;
            }
            Err(error) => {
                tracing::error!(partition = number, %error, "the engine's start failed; giving up the lead");
                return;
            }
        };
        self.set_leading(true);
        tracing::info!(partition = number, epoch, "leading the partition");
        let led_since = tokio::time::Instant::now();
        let mut ended = tokio::task::spawn_blocking(move || thread.join());
        // A leader that did not name the partition watches for one that did.
        let watch_wishes = !self.named();
        let mut seen = 0u32;
        loop {
            tokio::select! {
                joined = &mut ended => {
                    tracing::warn!(partition = number, ?joined, "the partition's engine stopped; back to standby");
                    break;
                }
                _ = stop.changed() => {
                    // No more pulls: the engine answers what it holds, then its queue closes.
                    drop(consumption);
                    let joined = ended.await;
                    tracing::info!(partition = number, ?joined, "the partition's engine stopped");
                    break;
                }
                () = tokio::time::sleep(WISH_CHECK), if watch_wishes => {
                    seen = if self.wished.borrow().contains(&number) { seen + 1 } else { 0 };
                    if seen >= 2 && led_since.elapsed() >= HANDOVER_AFTER {
                        // As a drain: the engine answers what it holds, its connection (with
                        // the partition's lock) closes, and this task stands by for 2 s
                        // while the engine that prefers the partition polls every 250 ms.
                        tracing::info!(partition = number, "an engine that prefers the partition stands by: handing it over");
                        drop(consumption);
                        let joined = ended.await;
                        tracing::info!(partition = number, ?joined, "the partition's engine stopped; handed over");
                        break;
                    }
                }
            }
        }
        self.set_leading(false);
    }

    fn set_leading(&self, leading: bool) {
        if let Ok(mut set) = self.leading.lock() {
            if leading {
                set.insert(self.number);
            } else {
                set.remove(&self.number);
            }
        }
    }
}

/// Drops `value` (a blocking PostgreSQL connection) on a blocking thread: closed on a thread
/// that drives async tasks, such a connection panics.
fn off_runtime_drop<T: Send + 'static>(value: Option<T>) {
    if let Some(value) = value {
        drop(tokio::task::spawn_blocking(move || drop(value)));
    }
}
