//! The store on one DynamoDB-shaped table (docs/design.md): the data model,
//! the placement transaction, settlement's conditional writes, refunds, the
//! outbox and the ledger. It runs on DynamoDB through the SDK and, as the
//! embedded store, on the in-memory table: the same code, the same
//! conditions.
//!
//! - `placement`: the one transaction per order, and resolving lost replies;
//! - `lanes`: a process's turns on each coin's pool, and what it knows of it;
//! - `pools`: the pools' items, and the conditional writes that close,
//!   move and top up shards exactly once (the `Pools` port);
//! - `cancel`: taking a pending order out of its pool, its cost back;
//! - `orders`: reading orders back, and finding the batch of a pooled one;
//! - `batches`: claims, fenced leases, settling and refusing; the outbox;
//! - `refunds`: crediting a refused batch's orders, chunk by chunk;
//! - `accounts`: balances, opening accounts, deposits;
//! - `ledger`: reading everything back for the audit;
//! - `item`: keys and the mapping between domain types and items.
//!
//! What decides is elsewhere: where an order goes, which shards close
//! together and when, what a top-up pays are `domain::pooling`'s rules,
//! run by `crate::pooling` (the reconciler's sweep and bounded wait).

mod accounts;
mod batches;
mod cancel;
pub mod item;
mod lanes;
mod ledger;
mod orders;
mod placement;
mod pools;
mod refunds;
pub mod schema;
mod stats;
pub mod table;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use self::stats::StoreStats;
pub use self::stats::StoreStatsSnapshot;
use self::table::memory::MemoryTable;
use self::table::sdk::SdkTable;
use self::table::{Reason, Table, TableError, Transacted, Write};
use crate::domain::ShardRules;
use crate::ports::{Clock, InfraError, SystemClock};

/// Attempts of one write before giving up (answering "busy" for an order).
const MAX_ATTEMPTS: u32 = 12;
/// An order keeps trying through contention this long (and at least
/// `MAX_ATTEMPTS` times) before it is answered busy: one customer's burst of
/// orders queues on their account item, which admits one transaction after
/// another, and drains in about this long.
const BUSY_AFTER: Duration = Duration::from_secs(2);

pub struct DynamoStore {
    table: Arc<dyn Table>,
    lanes: lanes::Lanes,
    stats: StoreStats,
    shard_rules: ShardRules,
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
            lanes: lanes::Lanes::default(),
            stats: StoreStats::default(),
            shard_rules: ShardRules::default(),
            clock: Arc::new(SystemClock),
            jitter: Mutex::new(StdRng::from_os_rng()),
        }
    }

    /// Makes the backoff jitter and shard choices a function of `seed`
    /// (simulations).
    pub fn with_jitter_seed(self, seed: u64) -> DynamoStore {
        DynamoStore { jitter: Mutex::new(StdRng::seed_from_u64(seed)), ..self }
    }

    /// How coins' shard counts move (at most `max` shards: 1 keeps every
    /// coin on one pool item).
    pub fn with_shard_rules(self, shard_rules: ShardRules) -> DynamoStore {
        DynamoStore { shard_rules, ..self }
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
        self.transact_within(operation, token, writes, MAX_ATTEMPTS).await
    }

    /// [`Self::transact_idempotent`], trying through contention `attempts`
    /// times: then the last cancellation is the answer (its reasons say
    /// which item was held).
    async fn transact_within(
        &self,
        operation: &'static str,
        token: &str,
        writes: &[Write],
        attempts: u32,
    ) -> Result<Transacted, InfraError> {
        let mut last: Option<InfraError> = None;
        // One token for every attempt and resend of this logical write (its
        // callers make it, and may write it as a mark): DynamoDB answers a
        // token it committed within ten minutes with "done" and applies
        // nothing again, so a commit whose reply was lost is never mistaken
        // for someone else's write. (Where the token is forgotten, the mark
        // tells the callers the write was theirs.)
        for attempt in 1..=attempts {
            for resend in 0..3 {
                StoreStats::count(&self.stats.transactions);
                match self.table.transact(writes.to_vec(), token).await {
                    Ok(Transacted::Cancelled(reasons)) if contended(&reasons) && attempt == attempts => {
                        StoreStats::count(&self.stats.conflicts);
                        return Ok(Transacted::Cancelled(reasons));
                    }
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
