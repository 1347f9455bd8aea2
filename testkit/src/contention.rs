//! A contention model of DynamoDB around the in-memory table, in virtual
//! time, to measure placement designs by what DynamoDB does under load
//! rather than by what an emulator does (the emulators serialize every
//! request and never report a conflict or a throttle).
//!
//! The rules, from DynamoDB's documentation:
//!
//! - **Transactions hold their items.** "If an item is modified outside of a
//!   transaction while the transaction is in progress, the transaction is
//!   cancelled"; "a `TransactWriteItems` request … is rejected (conflict) if
//!   another transaction … is in progress on one of its items"
//!   (Amazon DynamoDB Developer Guide, *Transaction conflict handling in
//!   DynamoDB*). Modelled as: a transaction holds every item it writes or
//!   checks for [`ContentionRules::hold`] (10 ms by default); another
//!   transaction touching a held item is cancelled with
//!   `TransactionConflict` on that item; a single-item write on a held item
//!   is rejected (`TransactionConflictException`), nothing applied.
//! - **Single-item writes do not conflict with each other**: "DynamoDB
//!   processes … writes to an item in the order they are received"
//!   (*Working with items: UpdateItem*, atomic counters). Modelled as:
//!   applied in order after [`ContentionRules::plain_latency`].
//! - **A partition takes at most 1,000 write units per second**, one write
//!   unit per 1 KB written, two for a transactional write
//!   (*Partitions and data distribution*; *Read/write capacity mode*;
//!   *Managing capacity for transactions*). Modelled per partition key (a
//!   hot key cannot be split further) as a bucket of 1,000 units refilled
//!   continuously; a request that would overdraw it is throttled
//!   (`ThrottlingError` in a transaction's cancellation reasons,
//!   `ProvisionedThroughputExceeded` for a single write), nothing applied.
//!   Every item here is under 1 KB.
//! - Reads neither hold nor conflict; they take [`ContentionRules::read_latency`].
//!
//! Time is tokio's clock: under a paused runtime (`start_paused`) it is
//! virtual, so this 2-core machine does not bound what is measured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use shared::adapters::dynamodb::table::memory::MemoryTable;
use shared::adapters::dynamodb::table::{
    Changes, Cond, ConditionFailed, Item, Page, Query, Reason, Table, TableError, Transacted, Write,
};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct ContentionRules {
    /// How long a transaction holds its items (and takes).
    pub hold: Duration,
    /// How long a single-item write takes.
    pub plain_latency: Duration,
    /// How long a read takes.
    pub read_latency: Duration,
    /// Write units a partition takes per second.
    pub partition_write_units: u64,
}

impl Default for ContentionRules {
    fn default() -> Self {
        ContentionRules {
            hold: Duration::from_millis(10),
            plain_latency: Duration::from_millis(5),
            read_latency: Duration::from_millis(3),
            partition_write_units: 1000,
        }
    }
}

/// What the model saw.
#[derive(Debug, Default)]
pub struct ContentionStats {
    pub requests: AtomicU64,
    pub transactions: AtomicU64,
    pub conflicts: AtomicU64,
    pub throttles: AtomicU64,
}

pub(crate) type Key = (String, String);

/// A partition's write units, in thousandths, refilled continuously.
struct Bucket {
    milli_units: u64,
    at: Instant,
}

#[derive(Default)]
struct State {
    held: HashMap<Key, Instant>,
    buckets: HashMap<String, Bucket>,
}

pub struct ContendedTable {
    inner: Arc<MemoryTable>,
    rules: ContentionRules,
    state: Mutex<State>,
    pub stats: ContentionStats,
}

pub(crate) fn key_of(item: &Item) -> Key {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    };
    (text("PK"), text("SK"))
}

pub(crate) fn write_key(write: &Write) -> Key {
    match write {
        Write::Put { item, .. } => key_of(item),
        Write::Update { key, .. } | Write::Check { key, .. } => key_of(key),
    }
}

impl ContendedTable {
    pub fn new(inner: Arc<MemoryTable>, rules: ContentionRules) -> ContendedTable {
        ContendedTable { inner, rules, state: Mutex::default(), stats: ContentionStats::default() }
    }

    /// Takes `units` from the partition's bucket, or says it is throttled.
    fn spend(&self, state: &mut State, partition: &str, units: u64, now: Instant) -> bool {
        let capacity = self.rules.partition_write_units * 1000;
        let bucket = state.buckets.entry(partition.to_owned()).or_insert(Bucket { milli_units: capacity, at: now });
        let refill = now.duration_since(bucket.at).as_millis() as u64 * self.rules.partition_write_units;
        bucket.milli_units = (bucket.milli_units + refill).min(capacity);
        bucket.at = now;
        if bucket.milli_units < units * 1000 {
            return false;
        }
        bucket.milli_units -= units * 1000;
        true
    }

    /// The checks of a single-item write: not held, not over the partition.
    fn admit_single(&self, key: &Key) -> Result<(), TableError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        if state.held.get(key).is_some_and(|until| *until > now) {
            self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
            return Err(TableError::Failed {
                operation: "single write",
                source: "TransactionConflictException: a transaction holds the item (model)".into(),
            });
        }
        if !self.spend(&mut state, &key.0, 1, now) {
            self.stats.throttles.fetch_add(1, Ordering::Relaxed);
            return Err(TableError::Throttled {
                operation: "single write",
                source: "ProvisionedThroughputExceeded: the partition is over 1,000 write units per second (model)"
                    .into(),
            });
        }
        Ok(())
    }

    async fn read<T>(&self, read: impl Future<Output = T>) -> T {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.rules.read_latency).await;
        read.await
    }
}

#[async_trait]
impl Table for ContendedTable {
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
        self.read(self.inner.get(key)).await
    }

    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        self.read(self.inner.get_many(keys)).await
    }

    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
        self.admit_single(&key_of(&item))?;
        tokio::time::sleep(self.rules.plain_latency).await;
        self.inner.put(item, condition).await
    }

    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError> {
        self.admit_single(&key_of(&key))?;
        tokio::time::sleep(self.rules.plain_latency).await;
        self.inner.update(key, changes, condition).await
    }

    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        let keys: Vec<Key> = writes.iter().map(write_key).collect();
        let now = Instant::now();
        let until = now + self.rules.hold;
        {
            let mut state = self.state.lock().unwrap();
            let held: Vec<bool> = keys.iter().map(|k| state.held.get(k).is_some_and(|t| *t > now)).collect();
            if held.iter().any(|h| *h) {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                if std::env::var("CONTENTION_DEBUG").is_ok() {
                    let which: Vec<String> =
                        keys.iter().zip(&held).filter(|(_, h)| **h).map(|(k, _)| format!("{}/{}", k.0, k.1)).collect();
                    eprintln!("conflict on {which:?}");
                }
                let reasons = held.iter().map(|h| if *h { Reason::Conflict } else { Reason::None }).collect();
                return Ok(Transacted::Cancelled(reasons));
            }
            // Two write units per item written, per partition.
            let mut units: HashMap<&str, u64> = HashMap::new();
            for (write, key) in writes.iter().zip(&keys) {
                if !matches!(write, Write::Check { .. }) {
                    *units.entry(key.0.as_str()).or_default() += 2;
                }
            }
            let mut throttled: Vec<&str> = Vec::new();
            for (partition, cost) in &units {
                if !self.spend(&mut state, partition, *cost, now) {
                    throttled.push(partition);
                }
            }
            if !throttled.is_empty() {
                self.stats.throttles.fetch_add(1, Ordering::Relaxed);
                let reasons = keys
                    .iter()
                    .map(|k| if throttled.contains(&k.0.as_str()) { Reason::Throttled } else { Reason::None })
                    .collect();
                return Ok(Transacted::Cancelled(reasons));
            }
            for key in &keys {
                state.held.insert(key.clone(), until);
            }
        }
        tokio::time::sleep(self.rules.hold).await;
        let result = self.inner.transact(writes, token).await;
        let mut state = self.state.lock().unwrap();
        for key in &keys {
            if state.held.get(key) == Some(&until) {
                state.held.remove(key);
            }
        }
        result
    }

    async fn query(&self, query: Query) -> Result<Page, TableError> {
        self.read(self.inner.query(query)).await
    }

    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
        self.read(self.inner.scan(start)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_contract::{order, usd};
    use shared::adapters::dynamodb::DynamoStore;
    use shared::adapters::dynamodb::item::{account_key, n_int};
    use shared::audit::audit;
    use shared::domain::UserId;
    use shared::ports::{Accounts, LedgerRecords, Orders, PlaceError};

    fn table() -> Arc<ContendedTable> {
        Arc::new(ContendedTable::new(Arc::new(MemoryTable::new()), ContentionRules::default()))
    }

    /// The rule the whole model is for: while a transaction holds an item,
    /// another transaction on it is cancelled, and a plain write refused.
    #[tokio::test(start_paused = true)]
    async fn a_held_item_cancels_other_transactions_and_refuses_plain_writes() {
        let model = table();
        let key = account_key(&UserId::parse("alice").unwrap());
        let add = || Write::Update { key: key.clone(), changes: Changes::new().add("n", n_int(1u64)), condition: None };
        let first = {
            let model = Arc::clone(&model);
            let add = add();
            tokio::spawn(async move { model.transact(vec![add], "first").await })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        let second = model.transact(vec![add()], "second").await.unwrap();
        let plain = model.update(key.clone(), Changes::new().add("n", n_int(1u64)), None).await;

        assert!(matches!(first.await.unwrap().unwrap(), Transacted::Committed));
        assert!(matches!(second, Transacted::Cancelled(ref reasons) if reasons == &[Reason::Conflict]), "{second:?}");
        assert!(plain.is_err(), "{plain:?}");
        // Once the hold is over, the item takes writes again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(model.transact(vec![add()], "third").await.unwrap(), Transacted::Committed));
    }

    /// One customer placing 128 small orders at once through 8 processes:
    /// every transaction debits the same account item, which admits one
    /// after another. They queue; none is answered busy, each is debited
    /// once.
    #[tokio::test(start_paused = true)]
    async fn one_customers_burst_over_many_processes_queues_on_the_account_and_is_not_refused() {
        let model = table();
        let processes: Vec<Arc<DynamoStore>> =
            (0..8).map(|i| Arc::new(DynamoStore::on(model.clone()).with_jitter_seed(i))).collect();
        processes[0].open_account(&UserId::parse("alice").unwrap(), usd("1000")).await.unwrap();
        let orders: Vec<_> = (0..128)
            .map(|i| {
                let store = Arc::clone(&processes[i % 8]);
                tokio::spawn(async move { store.place_order(order("alice", "0.5"), usd("10")).await })
            })
            .collect();
        let mut busy = 0;
        for placed in orders {
            match placed.await.unwrap() {
                Ok(_) => {}
                Err(PlaceError::Busy) => busy += 1,
                Err(error) => panic!("{error}"),
            }
        }
        assert_eq!(busy, 0, "orders answered busy");
        let report = audit(&processes[0].ledger().await.unwrap(), usd("10"));
        assert!(report.is_clean(), "{report}");
        assert!(model.stats.conflicts.load(Ordering::Relaxed) > 0, "the burst never contended: it proves nothing");
    }
}
