//! The store on one DynamoDB-shaped table (docs/design.md): the data model,
//! the placement transaction, settlement's conditional writes, refunds, the
//! outbox and the ledger. It runs on DynamoDB through the SDK and, as the
//! embedded store, on the in-memory table: the same code, the same
//! conditions.
//!
//! - `placement`: the one transaction per order, and resolving lost replies;
//! - `pool_cache`: what this process believes each coin's pool is, behind
//!   a per-coin lane;
//! - `shards`: how many shards a coin's pool has, growing and folding back;
//! - `sweep`: the reconciler's sweep, which batches what quiet shards hold;
//! - `batches`: claims, fenced leases, settling and refusing;
//! - `refunds`: crediting a refused batch's orders, chunk by chunk;
//! - `cancel`: taking a pending order out of its pool, its cost back;
//! - `wait`: the operator's bound on a pooled order's wait (top-up, refund);
//! - `accounts`: balances, opening accounts, deposits;
//! - `ledger`: reading everything back for the audit;
//! - `item`: keys and the mapping between domain types and items.

mod accounts;
mod batches;
mod cancel;
pub mod item;
mod ledger;
mod orders;
mod placement;
mod pool_cache;
mod refunds;
pub mod schema;
mod shards;
mod stats;
mod sweep;
pub mod table;
#[cfg(test)]
pub(crate) mod testing;
mod wait;

pub use self::wait::PoolSummary;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use self::stats::StoreStats;
pub use self::stats::StoreStatsSnapshot;
use self::table::memory::MemoryTable;
use self::table::sdk::SdkTable;
use self::table::{Reason, Table, TableError, Transacted, Write};
use crate::ports::{Clock, InfraError, SystemClock};

/// Attempts of one write before giving up (answering "busy" for an order).
const MAX_ATTEMPTS: u32 = 12;
/// An order keeps trying through contention this long (and at least
/// `MAX_ATTEMPTS` times) before it is answered busy: one customer's burst of
/// orders queues on their account item, which admits one transaction after
/// another, and drains in about this long.
const BUSY_AFTER: Duration = Duration::from_secs(2);

/// How a coin's pool spreads over shards when processes contend for it
/// (docs/design.md, "Scale"). With one shard it is one pool item, as a
/// single writer always has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSharding {
    /// At most this many shards per coin; 1 keeps every coin on one item.
    pub max_shards: u32,
    /// How often a process reads how many shards a coin has.
    pub count_every: Duration,
    /// Most shards left behind that one batch takes along.
    pub carry_at_most: usize,
    /// The count halves once per this long since it last grew: shards
    /// nobody collides for any more fold back.
    pub shrink_after: Duration,
    /// Conflicts one order meets, moving each time, before it grows the
    /// count. The count halves every `shrink_after` and grows by one such
    /// order: so it settles where orders meet this many conflicts in a row
    /// about once per `shrink_after`, that is, where a few per cent of
    /// transactions collide.
    pub grow_after: u32,
    /// Money the sweep has seen waiting on a shard in use this long it
    /// batches with the fullest shards (see `sweep`).
    pub sweep_aged_after: Duration,
}

impl Default for PoolSharding {
    fn default() -> Self {
        PoolSharding {
            max_shards: 1024,
            count_every: Duration::from_secs(1),
            carry_at_most: 8,
            shrink_after: Duration::from_secs(2),
            sweep_aged_after: Duration::from_millis(100),
            grow_after: 2,
        }
    }
}

impl PoolSharding {
    /// One pool item per coin, whatever the contention.
    pub fn off() -> PoolSharding {
        PoolSharding { max_shards: 1, ..PoolSharding::default() }
    }
}

pub struct DynamoStore {
    table: Arc<dyn Table>,
    pools: pool_cache::PoolCache,
    /// Shards above a settled count that held money at the sweep's last full
    /// read of the coin: the record read, the shards, when.
    #[allow(clippy::type_complexity)]
    swept_above:
        Mutex<std::collections::HashMap<crate::domain::Coin, (shards::ShardCount, Vec<u32>, tokio::time::Instant)>>,
    /// When the sweep first saw each shard's pool hold money (its `seq`).
    swept_seen: Mutex<std::collections::HashMap<(crate::domain::Coin, u32), (u64, tokio::time::Instant)>>,
    /// Each coin's shard count as the sweep last read it, and when.
    swept_counts: Mutex<std::collections::HashMap<crate::domain::Coin, (shards::ShardCount, tokio::time::Instant)>>,
    stats: StoreStats,
    sharding: PoolSharding,
    /// When pools are written and judged idle.
    clock: Arc<dyn Clock>,
    /// Backoff jitter and shard choices; seeded in simulations so that they
    /// replay exactly.
    jitter: Mutex<StdRng>,
}

impl DynamoStore {
    /// The store on a DynamoDB table.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore::on(Arc::new(SdkTable::new(client, table)))
    }

    /// The embedded store: an in-memory table of its own.
    pub fn in_memory() -> DynamoStore {
        DynamoStore::on(Arc::new(MemoryTable::new()))
    }

    /// The store on any table: several stores on one table are several
    /// processes (each with its own pool cache) sharing it.
    pub fn on(table: Arc<dyn Table>) -> DynamoStore {
        DynamoStore {
            table,
            pools: pool_cache::PoolCache::default(),
            swept_counts: Mutex::default(),
            swept_seen: Mutex::default(),
            swept_above: Mutex::default(),
            stats: StoreStats::default(),
            sharding: PoolSharding::default(),
            clock: Arc::new(SystemClock),
            jitter: Mutex::new(StdRng::from_os_rng()),
        }
    }

    /// Makes the backoff jitter and shard choices a function of `seed`
    /// (simulations).
    pub fn with_jitter_seed(self, seed: u64) -> DynamoStore {
        DynamoStore { jitter: Mutex::new(StdRng::seed_from_u64(seed)), ..self }
    }

    pub fn with_pool_sharding(self, sharding: PoolSharding) -> DynamoStore {
        DynamoStore { sharding, ..self }
    }

    pub fn with_clock(self, clock: Arc<dyn Clock>) -> DynamoStore {
        DynamoStore { clock, ..self }
    }

    /// A number in `0..n` from the store's own randomness.
    fn random_below(&self, n: u32) -> u32 {
        self.jitter.lock().map(|mut rng| rng.random_range(0..n.max(1))).unwrap_or(0)
    }

    pub fn stats(&self) -> StoreStatsSnapshot {
        self.stats.snapshot()
    }

    pub fn table(&self) -> &Arc<dyn Table> {
        &self.table
    }

    /// Sends a transaction whose writes are all conditioned so that applying
    /// it twice is impossible (the second is cancelled), until it gets an
    /// answer: a lost reply is resent with the same token, contention and
    /// throttling are retried. `Cancelled` only for a failed condition.
    async fn transact_idempotent(
        &self,
        operation: &'static str,
        token: &str,
        writes: &[Write],
    ) -> Result<Transacted, InfraError> {
        let mut last: Option<InfraError> = None;
        // One token for every attempt and resend of this logical write (its
        // callers make it, and may write it as a mark): DynamoDB answers a
        // token it committed within ten minutes with "done" and applies
        // nothing again, so a commit whose reply was lost is never mistaken
        // for someone else's write. (Where the token is forgotten, the mark
        // tells the callers the write was theirs.)
        for attempt in 1..=MAX_ATTEMPTS {
            for resend in 0..3 {
                StoreStats::count(&self.stats.transactions);
                match self.table.transact(writes.to_vec(), token).await {
                    Ok(Transacted::Cancelled(reasons)) if contended(&reasons) => {
                        StoreStats::count(&self.stats.conflicts);
                        last = Some(InfraError::new(operation, unexpected(&reasons)));
                        break;
                    }
                    Ok(answer) => return Ok(answer),
                    Err(error @ TableError::Throttled { .. }) => {
                        StoreStats::count(&self.stats.throttled);
                        last = Some(error.into());
                        break;
                    }
                    Err(error @ TableError::Failed { .. }) if resend == 0 => return Err(error.into()),
                    // No answer: resend it as it was.
                    Err(error) => {
                        StoreStats::count(&self.stats.lost_replies);
                        last = Some(error.into());
                        self.backoff(resend + 1).await;
                    }
                }
            }
            self.backoff(attempt).await;
        }
        Err(last.unwrap_or_else(|| InfraError::new(operation, "no attempt was made")))
    }

    /// Waits before attempt `attempt + 1`: full jitter over an exponential
    /// ceiling, 5 ms, 10 ms, … up to 200 ms.
    async fn backoff(&self, attempt: u32) {
        let ceiling = 5u64.saturating_mul(1 << attempt.min(6)).min(200);
        let millis = self.jitter.lock().map(|mut rng| rng.random_range(0..=ceiling)).unwrap_or(ceiling);
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
}

fn infra<E>(operation: &'static str) -> impl FnOnce(E) -> InfraError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |error| InfraError::new(operation, error)
}

/// Whether a cancelled transaction is worth trying again as it is: another
/// transaction held one of its items, or a partition was over its
/// throughput.
fn contended(reasons: &[Reason]) -> bool {
    reasons.iter().any(|r| matches!(r, Reason::Conflict | Reason::Throttled))
}

/// The reasons of a cancellation nobody expected, for the error.
fn unexpected(reasons: &[Reason]) -> String {
    format!("transaction cancelled: {reasons:?}")
}
