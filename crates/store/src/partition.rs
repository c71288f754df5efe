//! Tenant partitions of a cluster: which partition a tenant belongs to, and what leading one
//! hands the engine.
//!
//! A cluster's writes scale out by partition: every tenant belongs to exactly one, and each
//! partition has one leader engine, the only process that commits its tenants' money. The
//! number of partitions is fixed when the cluster is created ([`crate::cluster_partitions`])
//! and recorded in the store; [`partition_of`] then maps a tenant to its partition, the same
//! way in every process and every version.

use crate::{ApiStore, Store};
use paycore_ledger::TenantId;
use std::sync::Arc;

/// The most partitions a cluster may have: far more engines than one database can feed, and
/// few enough that every partition's leader lock has a key of its own (see the PostgreSQL
/// store's `open`).
pub const PARTITIONS_MAX: u32 = 1024;

/// The partition of `tenant` in a cluster of `partitions` partitions (`0..partitions`).
///
/// The hash is FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over the
/// tenant id's 16 big-endian bytes, reduced modulo `partitions`. It is part of the stored
/// format: a cluster's tenants are where this function says, so it must never change (the
/// tests pin it with fixed vectors). `partitions` 0 is taken as 1.
pub fn partition_of(tenant: TenantId, partitions: u32) -> u32 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let hash =
        tenant.0.to_be_bytes().iter().fold(OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME));
    let partition = hash % u64::from(partitions.max(1));
    // Below `partitions`, so it fits.
    u32::try_from(partition).unwrap_or(0)
}

/// The engine's writer for one partition, held as long as this value lives: no other process
/// commits for the partition's tenants meanwhile (see [`crate::open_partition`]).
pub struct Leader {
    /// The engine's side: it recovers only the partition's tenants, and every commit checks
    /// in its own transaction that `epoch` is still the partition's (else
    /// [`crate::StoreError::Fenced`], and nothing of the batch is written).
    pub store: Box<dyn Store>,
    /// The API's side of the same store (reads, batch records, tenants and webhooks), for
    /// whatever else the engine's process serves.
    pub api: Arc<dyn ApiStore>,
    /// The partition led.
    pub partition: u32,
    /// How many partitions the cluster has.
    pub partitions: u32,
    /// The partition's fencing epoch this leader took: one more than any earlier leader's.
    pub epoch: u64,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("partition", &self.partition)
            .field("partitions", &self.partitions)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash is stored format: these values must never change.
    #[test]
    fn partition_of_is_pinned_by_fixed_vectors() {
        let cases: &[(u128, u32, u32)] = &[
            (0, 2, 1),
            (0, 3, 0),
            (0, 16, 5),
            (0, 1024, 101),
            (1, 2, 0),
            (1, 3, 2),
            (1, 1024, 690),
            (2, 16, 15),
            (0xdead_beef, 1024, 899),
            (u128::MAX, 1024, 85),
            (0x0123_4567_89ab_cdef_0123_4567_89ab_cdef, 1024, 165),
            (0x0123_4567_89ab_cdef_0123_4567_89ab_cdef, 16, 5),
        ];
        for &(tenant, partitions, expected) in cases {
            assert_eq!(partition_of(TenantId(tenant), partitions), expected, "tenant {tenant:#x} of {partitions}");
        }
    }

    #[test]
    fn one_partition_or_none_holds_every_tenant() {
        for tenant in [0, 1, 7, u128::MAX] {
            assert_eq!(partition_of(TenantId(tenant), 1), 0);
            assert_eq!(partition_of(TenantId(tenant), 0), 0);
        }
    }

    #[test]
    fn tenants_spread_over_partitions() {
        let mut counts = [0u32; 4];
        for tenant in 0..4000u128 {
            counts[partition_of(TenantId(tenant), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
