//! What the store did, for the performance report and tests.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(super) struct StoreStats {
    pub orders_placed: AtomicU64,
    pub transactions: AtomicU64,
    pub placement_transactions: AtomicU64,
    pub conflicts: AtomicU64,
    pub throttled: AtomicU64,
    pub stale_pool_retries: AtomicU64,
    pub pool_reads: AtomicU64,
    pub shard_reads: AtomicU64,
    pub sweep_requests: AtomicU64,
    pub shards_grown: AtomicU64,
    pub lost_replies: AtomicU64,
    pub busy: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStatsSnapshot {
    pub orders_placed: u64,
    /// Transactions sent, resends included.
    pub transactions: u64,
    /// Of those, placements' (not refunds', deposits', accounts').
    pub placement_transactions: u64,
    /// Transactions cancelled by `TransactionConflict`.
    pub conflicts: u64,
    /// Requests or transactions refused for throughput.
    pub throttled: u64,
    /// Placements retried because the pool had moved.
    pub stale_pool_retries: u64,
    pub pool_reads: u64,
    /// Placements' reads of a coin's shard count and views of its shards,
    /// and their growths of the count.
    pub shard_reads: u64,
    /// The sweep's reads of counts and pools and its writes of counts.
    pub sweep_requests: u64,
    /// Times this process grew a coin's shard count.
    pub shards_grown: u64,
    /// Writes whose outcome was unknown (no reply, a 5xx) and was resolved
    /// by resending or reading back.
    pub lost_replies: u64,
    /// Orders answered "busy".
    pub busy: u64,
}

impl StoreStats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StoreStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStatsSnapshot {
            orders_placed: get(&self.orders_placed),
            transactions: get(&self.transactions),
            placement_transactions: get(&self.placement_transactions),
            conflicts: get(&self.conflicts),
            throttled: get(&self.throttled),
            stale_pool_retries: get(&self.stale_pool_retries),
            pool_reads: get(&self.pool_reads),
            shard_reads: get(&self.shard_reads),
            sweep_requests: get(&self.sweep_requests),
            shards_grown: get(&self.shards_grown),
            lost_replies: get(&self.lost_replies),
            busy: get(&self.busy),
        }
    }
}
