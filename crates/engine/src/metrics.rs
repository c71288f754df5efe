//! The engine's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Cheap to clone: every field is a shared handle.
#[derive(Clone)]
pub struct EngineMetrics {
    /// Ledger events per committed batch.
    pub batch_events: Histogram,
    /// Seconds per store commit (the fsync included).
    pub commit_seconds: Histogram,
    /// Seconds from the first request of a batch taken off the queue to its replies.
    pub batch_seconds: Histogram,
    /// Batches that could not be committed or executed; each rebuilt the state from the store.
    pub recoveries: Counter,
    /// Batches committed on the committer thread while the engine thread executed the next.
    pub pipelined: Counter,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            batch_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            recoveries: Counter::default(),
            pipelined: Counter::default(),
        }
    }
}

impl EngineMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("paycore_engine_batch_events", "Ledger events per engine batch", self.batch_events.clone());
        registry.register(
            "paycore_engine_commit_seconds",
            "Duration of one durable store commit",
            self.commit_seconds.clone(),
        );
        registry.register(
            "paycore_engine_batch_seconds",
            "Duration of one engine batch, from collect to reply",
            self.batch_seconds.clone(),
        );
        registry.register(
            "paycore_engine_recoveries",
            "Batches that failed to execute or commit, after which the state was rebuilt from the store",
            self.recoveries.clone(),
        );
        registry.register(
            "paycore_engine_pipelined_batches",
            "Batches committed on the committer thread while the engine thread executed the next",
            self.pipelined.clone(),
        );
    }
}
