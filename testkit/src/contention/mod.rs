//! A contention model of DynamoDB around the in-memory table, in virtual
//! time, to measure designs by what DynamoDB does under load rather than by
//! what an emulator does (the emulators serialize every request and never
//! report a conflict or a throttle).
//!
//! The rules, each from DynamoDB's documentation (`docs/scale.md` has them
//! with their figures, and what the model leaves out):
//!
//! - **Transactions hold their items.** "If an item is modified outside of a
//!   transaction while the transaction is in progress, the transaction is
//!   cancelled"; a `TransactWriteItems` "is rejected (conflict) if another
//!   transaction … is in progress on one of its items" (*Transaction
//!   conflict handling in DynamoDB*). Modelled as: a transaction holds every
//!   item it writes or checks for as long as it takes; another transaction
//!   touching a held item is cancelled with `TransactionConflict` on that
//!   item; a single-item write on a held item is rejected
//!   (`TransactionConflictException`), nothing applied.
//! - **Single-item writes do not conflict with each other**: "DynamoDB
//!   processes … writes to an item in the order they are received"
//!   (*UpdateItem*, atomic counters). Applied in order.
//! - **Latency has a spread and a tail**: each kind of request takes a
//!   log-normal time ([`rules::Latency`]; the figures are assumptions,
//!   stated there).
//! - **Throughput per partition**: 1,000 write units and 3,000 read units a
//!   second per partition key (a hot key cannot be split further), a
//!   request that would overdraw them is throttled, nothing applied.
//! - **Global secondary indexes**: every table write that adds, moves,
//!   removes or (projection permitting) changes an index entry writes the
//!   index (units by [`units::index_writes`]); each index partition key
//!   takes 1,000 write units a second, and an index over it throttles the
//!   table write that would write it.
//! - **Throughput per table**: the table's warm throughput (write and read
//!   units a second, each index as much again for its own writes); over
//!   it, throttled.
//! - **What is billed**: write units by item size, twice in a transaction;
//!   read units by size and consistency; a write whose condition failed is
//!   billed; a cancelled transaction is billed as if it had written
//!   (whether AWS bills one cancelled by a conflict is not published, so
//!   the model assumes the worse); a throttled request is not billed.
//!
//! Time is tokio's clock: under a paused runtime (`start_paused`) it is
//! virtual, so this 2-core machine does not bound what is measured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod ledger;
pub mod rules;
pub mod units;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use rand::SeedableRng;
use rand::rngs::StdRng;
use shared::adapters::dynamodb::table::expr::{apply, holds};
use shared::adapters::dynamodb::table::memory::MemoryTable;
use shared::adapters::dynamodb::table::{
    Changes, Cond, ConditionFailed, Item, Page, Query, Reason, Table, TableError, Transacted, Write,
};
use tokio::time::Instant;

pub use self::ledger::{Kind, Ledger, Limit};
pub use self::rules::{ContentionRules, Latency};
use self::units::{IndexWrite, ReadKind, index_writes, item_size, read_half_units, write_units};

/// What the model saw, in total (the ledger has it by kind of request).
#[derive(Debug, Default)]
pub struct ContentionStats {
    pub requests: AtomicU64,
    pub transactions: AtomicU64,
    pub conflicts: AtomicU64,
    pub throttles: AtomicU64,
}

pub(crate) type Key = (String, String);

/// Units, in thousandths, refilled continuously; may run into debt (a read
/// is priced once it is read), which the next requests wait out.
struct Bucket {
    milli_units: i64,
    at: Instant,
}

#[derive(Default)]
struct Buckets(HashMap<String, Bucket>);

impl Buckets {
    fn level(&mut self, name: &str, per_second: u64, now: Instant) -> &mut Bucket {
        let capacity = per_second as i64 * 1000;
        let bucket = self.0.entry(name.to_owned()).or_insert(Bucket { milli_units: capacity, at: now });
        let refill = now.duration_since(bucket.at).as_micros() as i64 * per_second as i64 / 1000;
        bucket.milli_units = (bucket.milli_units + refill).min(capacity);
        bucket.at = now;
        bucket
    }

    fn can(&mut self, name: &str, per_second: u64, units: u64, now: Instant) -> bool {
        self.level(name, per_second, now).milli_units >= units as i64 * 1000
    }

    fn spend(&mut self, name: &str, per_second: u64, milli_units: u64, now: Instant) {
        self.level(name, per_second, now).milli_units -= milli_units as i64;
    }
}

struct State {
    held: HashMap<Key, Instant>,
    buckets: Buckets,
    rng: StdRng,
}

/// A handle on the model: handles made by [`ContendedTable::observer`]
/// share the table, its holds and its budgets, and keep ledgers of their
/// own (so a load tool can tell the placement path's requests from the
/// sweep's). `stats` counts every handle's requests.
pub struct ContendedTable {
    inner: Arc<MemoryTable>,
    rules: ContentionRules,
    state: Arc<Mutex<State>>,
    pub stats: Arc<ContentionStats>,
    ledger: Mutex<Ledger>,
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

/// One write as it would go: its item before and after, and the index
/// writes it makes. (Judged on the item as it is when the request arrives:
/// a write that lands later may find it changed, and cost a little more or
/// less.)
struct Planned {
    key: Key,
    before: Option<Item>,
    after: Option<Item>,
    condition_holds: bool,
    index: Vec<IndexWrite>,
}

const TABLE_WRITES: &str = "table#write";
const TABLE_READS: &str = "table#read";

impl ContendedTable {
    pub fn new(inner: Arc<MemoryTable>, rules: ContentionRules) -> ContendedTable {
        let state = State { held: HashMap::new(), buckets: Buckets::default(), rng: StdRng::seed_from_u64(rules.seed) };
        ContendedTable {
            inner,
            rules,
            state: Arc::new(Mutex::new(state)),
            stats: Arc::default(),
            ledger: Mutex::default(),
        }
    }

    /// Another handle on the same model, with a ledger of its own.
    pub fn observer(&self) -> ContendedTable {
        ContendedTable {
            inner: Arc::clone(&self.inner),
            rules: self.rules,
            state: Arc::clone(&self.state),
            stats: Arc::clone(&self.stats),
            ledger: Mutex::default(),
        }
    }

    /// The table underneath, for what a run sets up before it starts (it
    /// costs nothing and takes no time).
    pub fn underlying(&self) -> &Arc<MemoryTable> {
        &self.inner
    }

    pub fn rules(&self) -> &ContentionRules {
        &self.rules
    }

    /// What it has seen so far, by kind of request.
    pub fn ledger(&self) -> Ledger {
        self.ledger.lock().unwrap().clone()
    }

    fn note(&self, kind: Kind, f: impl FnOnce(&mut ledger::Counts)) {
        f(self.ledger.lock().unwrap().entry(kind));
    }

    async fn plan(&self, write: &Write) -> Planned {
        let key = write_key(write);
        let before = self.inner.get(HashMap::from([
            ("PK".to_owned(), AttributeValue::S(key.0.clone())),
            ("SK".to_owned(), AttributeValue::S(key.1.clone())),
        ]));
        let before = before.await.ok().flatten();
        let (condition, after) = match write {
            Write::Put { item, condition } => (condition.as_ref(), Some(item.clone())),
            Write::Update { key: key_item, changes, condition } => {
                let base = before.clone().unwrap_or_else(|| key_item.clone());
                (condition.as_ref(), apply(changes, base).ok())
            }
            Write::Check { condition, .. } => (Some(condition), None),
        };
        let condition_holds = condition.is_none_or(|c| holds(c, before.as_ref()));
        let index =
            if condition_holds && after.is_some() { index_writes(before.as_ref(), after.as_ref()) } else { Vec::new() };
        Planned { key, before, after, condition_holds, index }
    }

    /// Write units of one planned write (`Check`: none).
    fn billed(planned: &Planned, transactional: bool) -> u64 {
        match &planned.after {
            None => 0,
            Some(after) => write_units(planned.before.as_ref(), Some(after), transactional),
        }
    }

    /// Whether the partitions, the indexes and the table can take these
    /// writes now; the limit that cannot, if one.
    fn admit_writes(&self, state: &mut State, planned: &[Planned], transactional: bool, now: Instant) -> Option<Limit> {
        let rules = &self.rules;
        let mut per_partition: HashMap<&str, u64> = HashMap::new();
        let mut per_index: HashMap<&str, u64> = HashMap::new();
        let mut per_index_table: HashMap<&str, u64> = HashMap::new();
        let mut table = 0;
        for p in planned {
            let units = Self::billed(p, transactional);
            *per_partition.entry(p.key.0.as_str()).or_default() += units;
            table += units;
            for write in &p.index {
                *per_index.entry(write.partition.as_str()).or_default() += write.units;
                let index = write.partition.split('#').next().unwrap_or_default();
                *per_index_table.entry(index).or_default() += write.units;
            }
        }
        let buckets = &mut state.buckets;
        if per_partition
            .iter()
            .any(|(pk, units)| !buckets.can(&format!("w#{pk}"), rules.partition_write_units, *units, now))
        {
            return Some(Limit::PartitionWrite);
        }
        if per_index
            .iter()
            .any(|(pk, units)| !buckets.can(&format!("i#{pk}"), rules.index_partition_write_units, *units, now))
        {
            return Some(Limit::IndexPartitionWrite);
        }
        if !buckets.can(TABLE_WRITES, rules.table_write_units, table, now)
            || per_index_table
                .iter()
                .any(|(index, units)| !buckets.can(&format!("t#{index}"), rules.table_write_units, *units, now))
        {
            return Some(Limit::TableWrite);
        }
        for (pk, units) in per_partition {
            buckets.spend(&format!("w#{pk}"), rules.partition_write_units, units * 1000, now);
        }
        for (pk, units) in per_index {
            buckets.spend(&format!("i#{pk}"), rules.index_partition_write_units, units * 1000, now);
        }
        for (index, units) in per_index_table {
            buckets.spend(&format!("t#{index}"), rules.table_write_units, units * 1000, now);
        }
        buckets.spend(TABLE_WRITES, rules.table_write_units, table * 1000, now);
        None
    }

    /// Whether a read of partition `pk` may start now (at least one unit in
    /// its partition's and the table's budgets).
    fn admit_read(&self, state: &mut State, pk: &str, now: Instant) -> bool {
        let rules = &self.rules;
        state.buckets.can(&format!("r#{pk}"), rules.partition_read_units, 1, now)
            && state.buckets.can(TABLE_READS, rules.table_read_units, 1, now)
    }

    fn spend_read(&self, pk: &str, half_units: u64) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let rules = self.rules;
        state.buckets.spend(&format!("r#{pk}"), rules.partition_read_units, half_units * 500, now);
        state.buckets.spend(TABLE_READS, rules.table_read_units, half_units * 500, now);
    }

    fn draw(&self, latency: Latency) -> Duration {
        latency.sample(&mut self.state.lock().unwrap().rng)
    }

    async fn read<T>(
        &self,
        kind: Kind,
        partitions: &[String],
        read: impl Future<Output = Result<T, TableError>>,
        price: impl Fn(&T) -> Vec<(String, u64)>,
    ) -> Result<T, TableError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let admitted = {
            let mut state = self.state.lock().unwrap();
            partitions.iter().all(|pk| self.admit_read(&mut state, pk, began))
        };
        if !admitted {
            self.stats.throttles.fetch_add(1, Ordering::Relaxed);
            self.note(kind, |c| c.throttled(Limit::PartitionRead));
            tokio::time::sleep(self.draw(self.rules.refusal)).await;
            return Err(TableError::Throttled {
                operation: "read",
                source: "ProvisionedThroughputExceeded: over the partition's or table's read units (model)".into(),
            });
        }
        tokio::time::sleep(self.draw(self.rules.read)).await;
        let found = read.await?;
        let priced = price(&found);
        let half_units: u64 = priced.iter().map(|(_, h)| h).sum();
        for (pk, half) in &priced {
            self.spend_read(pk, *half);
        }
        let took = began.elapsed();
        self.note(kind, |c| {
            c.requests += 1;
            c.read_half_units += half_units;
            c.time += took;
        });
        Ok(found)
    }

    async fn single_write<T>(
        &self,
        write: Write,
        apply: impl Future<Output = Result<Result<T, ConditionFailed>, TableError>>,
    ) -> Result<Result<T, ConditionFailed>, TableError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let kind = Kind::of_write(&write);
        let planned = self.plan(&write).await;
        let began = Instant::now();
        let refused = {
            let mut state = self.state.lock().unwrap();
            if state.held.get(&planned.key).is_some_and(|until| *until > began) {
                Some(None)
            } else {
                self.admit_writes(&mut state, std::slice::from_ref(&planned), false, began).map(Some)
            }
        };
        match refused {
            None => {}
            Some(None) => {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                self.note(kind, |c| {
                    c.requests += 1;
                    c.conflicts += 1;
                });
                tokio::time::sleep(self.draw(self.rules.refusal)).await;
                return Err(TableError::Throttled {
                    operation: "single write",
                    source: "TransactionConflictException: a transaction holds the item (model)".into(),
                });
            }
            Some(Some(limit)) => {
                self.stats.throttles.fetch_add(1, Ordering::Relaxed);
                self.note(kind, |c| c.throttled(limit));
                tokio::time::sleep(self.draw(self.rules.refusal)).await;
                return Err(TableError::Throttled {
                    operation: "single write",
                    source: format!("ProvisionedThroughputExceeded: {} (model)", limit.describe()).into(),
                });
            }
        }
        tokio::time::sleep(self.draw(self.rules.single_write)).await;
        let result = apply.await;
        let units = Self::billed(&planned, false).max(1);
        let index: u64 = planned.index.iter().map(|w| w.units).sum();
        let failed = matches!(result, Ok(Err(_)));
        let took = began.elapsed();
        self.note(kind, |c| {
            c.requests += 1;
            c.write_units += units;
            c.index_write_units += if failed || !planned.condition_holds { 0 } else { index };
            c.condition_failures += u64::from(failed);
            c.time += took;
        });
        result
    }
}

fn partition_of(key: &Item) -> String {
    key_of(key).0
}

#[async_trait]
impl Table for ContendedTable {
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
        let kind = Kind::of_read(&key_of(&key));
        let pk = partition_of(&key);
        self.read(kind, std::slice::from_ref(&pk), self.inner.get(key), |found| {
            vec![(pk.clone(), read_half_units(found.as_ref().map_or(0, item_size), ReadKind::Strong))]
        })
        .await
    }

    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        let kind = keys.first().map_or(Kind::Other, |k| Kind::of_batch_read(&key_of(k)));
        let partitions: Vec<String> = keys.iter().map(partition_of).collect();
        self.read(kind, &partitions, self.inner.get_many(keys.clone()), |found| {
            // Each key is read in its own partition; one that is not there
            // still costs a unit.
            keys.iter()
                .map(|key| {
                    let at = key_of(key);
                    let size = found.iter().find(|item| key_of(item) == at).map_or(0, item_size);
                    (at.0, read_half_units(size, ReadKind::Strong))
                })
                .collect()
        })
        .await
    }

    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
        let write = Write::Put { item: item.clone(), condition: condition.clone() };
        self.single_write(write, self.inner.put(item, condition)).await
    }

    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError> {
        let write = Write::Update { key: key.clone(), changes: changes.clone(), condition: condition.clone() };
        self.single_write(write, self.inner.update(key, changes, condition)).await
    }

    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        let kind = Kind::of_transaction(&writes);
        let mut planned = Vec::with_capacity(writes.len());
        for write in &writes {
            planned.push(self.plan(write).await);
        }
        let billed: u64 = planned.iter().map(|p| Self::billed(p, true)).sum();
        let now = Instant::now();
        let items = writes.len().saturating_sub(3) as f64;
        let took = self.draw(self.rules.transaction).mul_f64(1.0 + self.rules.per_item * items);
        let until = now + took;
        let keys: Vec<Key> = planned.iter().map(|p| p.key.clone()).collect();
        // Refused, and why: items another transaction holds, or a limit.
        let refused: Option<Result<Vec<bool>, Limit>> = {
            let mut state = self.state.lock().unwrap();
            let held: Vec<bool> = keys.iter().map(|k| state.held.get(k).is_some_and(|t| *t > now)).collect();
            if held.iter().any(|h| *h) {
                Some(Ok(held))
            } else if let Some(limit) = self.admit_writes(&mut state, &planned, true, now) {
                Some(Err(limit))
            } else {
                for key in &keys {
                    state.held.insert(key.clone(), until);
                }
                None
            }
        };
        match refused {
            None => {}
            Some(Ok(held)) => {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                if std::env::var("CONTENTION_DEBUG").is_ok() {
                    let which: Vec<String> =
                        keys.iter().zip(&held).filter(|(_, h)| **h).map(|(k, _)| format!("{}/{}", k.0, k.1)).collect();
                    eprintln!("conflict on {which:?}");
                }
                self.note(kind, |c| {
                    c.requests += 1;
                    c.conflicts += 1;
                    c.write_units += billed;
                });
                let reasons = held.iter().map(|h| if *h { Reason::Conflict } else { Reason::None }).collect();
                tokio::time::sleep(self.draw(self.rules.refusal)).await;
                return Ok(Transacted::Cancelled(reasons));
            }
            Some(Err(limit)) => {
                self.stats.throttles.fetch_add(1, Ordering::Relaxed);
                self.note(kind, |c| c.throttled(limit));
                // The index over its limit throttles the table's write, which
                // the caller sees as throttling of that write.
                let reasons = planned.iter().map(|_| Reason::Throttled).collect();
                tokio::time::sleep(self.draw(self.rules.refusal)).await;
                return Ok(Transacted::Cancelled(reasons));
            }
        }
        tokio::time::sleep(took).await;
        let result = self.inner.transact(writes, token).await;
        {
            let mut state = self.state.lock().unwrap();
            for key in &keys {
                if state.held.get(key) == Some(&until) {
                    state.held.remove(key);
                }
            }
        }
        let committed = matches!(result, Ok(Transacted::Committed));
        let index: u64 = planned.iter().flat_map(|p| &p.index).map(|w| w.units).sum();
        self.note(kind, |c| {
            c.requests += 1;
            c.write_units += billed;
            c.index_write_units += if committed { index } else { 0 };
            c.condition_failures += u64::from(matches!(result, Ok(Transacted::Cancelled(_))));
            c.time += took;
        });
        result
    }

    async fn query(&self, query: Query) -> Result<Page, TableError> {
        let kind = Kind::of_query(&query);
        let pk = match query.index {
            Some(index) => format!("{index}#{}", query.partition.1),
            None => query.partition.1.clone(),
        };
        let consistency = ReadKind::Eventual;
        self.read(kind, std::slice::from_ref(&pk), self.inner.query(query), |page| {
            let bytes: u64 = page.items.iter().map(item_size).sum();
            vec![(pk.clone(), read_half_units(bytes, consistency))]
        })
        .await
    }

    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
        self.read(Kind::Scan, &[], self.inner.scan(start), |page| {
            let bytes: u64 = page.items.iter().map(item_size).sum();
            vec![("#scan".to_owned(), read_half_units(bytes, ReadKind::Strong))]
        })
        .await
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
        Arc::new(ContendedTable::new(Arc::new(MemoryTable::new()), ContentionRules::default().fixed()))
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

    fn batch_like(i: usize, open_partition: &str) -> Item {
        let text = |v: String| AttributeValue::S(v);
        HashMap::from([
            ("PK".to_owned(), text(format!("BATCH#{i}"))),
            ("SK".to_owned(), text("BATCH".to_owned())),
            ("GSI1PK".to_owned(), text(open_partition.to_owned())),
            ("GSI1SK".to_owned(), text(format!("{i:08}"))),
        ])
    }

    /// 1,500 new batches a second for three seconds, each written to the open-batches
    /// index: under one index key the index throttles the table's writes;
    /// spread over eight keys, nothing is throttled.
    #[tokio::test(start_paused = true)]
    async fn a_hot_index_key_throttles_the_table_and_spread_keys_do_not() {
        for (keys, throttled_expected) in [(1, true), (8, false)] {
            let model = Arc::new(ContendedTable::new(
                Arc::new(MemoryTable::new()),
                ContentionRules::default().warmed_to(40_000),
            ));
            let puts: Vec<_> = (0..4500)
                .map(|i| {
                    let model = Arc::clone(&model);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_micros(666) * i as u32).await;
                        model.put(batch_like(i, &format!("OPEN#{}", i % keys)), None).await.is_err()
                    })
                })
                .collect();
            let mut throttled = 0;
            for put in puts {
                throttled += usize::from(put.await.unwrap());
            }
            let ledger = model.ledger();
            assert_eq!(throttled > 0, throttled_expected, "{keys} keys: {ledger:?}");
            if throttled_expected {
                assert_eq!(ledger.limits_hit()[0].0, Limit::IndexPartitionWrite);
            }
        }
    }

    /// A table warmed to 100 write units a second takes no more, however
    /// the writes spread over partitions.
    #[tokio::test(start_paused = true)]
    async fn the_table_takes_no_more_than_its_warm_throughput() {
        let model =
            Arc::new(ContendedTable::new(Arc::new(MemoryTable::new()), ContentionRules::default().warmed_to(100)));
        let mut throttled = 0;
        for i in 0..300 {
            let key = account_key(&UserId::parse(&format!("u{i}")).unwrap());
            if model.update(key, Changes::new().add("n", n_int(1u64)), None).await.is_err() {
                throttled += 1;
            }
        }
        assert!(throttled > 0, "300 writes went through a table of 100 units a second");
        assert_eq!(model.ledger().limits_hit()[0].0, Limit::TableWrite);
    }

    /// Units by size and kind: a transaction twice a single write's, a
    /// cancelled one billed, a strong read one unit per 4 KB.
    #[tokio::test(start_paused = true)]
    async fn requests_are_billed_by_kind_and_size() {
        let model = table();
        let key = account_key(&UserId::parse("alice").unwrap());
        let add = |condition: Option<Cond>| Write::Update {
            key: key.clone(),
            changes: Changes::new().add("balance_usd", n_int(5u64)),
            condition,
        };
        model.transact(vec![add(None)], "t1").await.unwrap();
        let cancelled = model.transact(vec![add(Some(Cond::not_exists("PK")))], "t2").await.unwrap();
        assert!(matches!(cancelled, Transacted::Cancelled(_)));
        model.get(key.clone()).await.unwrap();
        let ledger = model.ledger();
        let accounts = ledger.get(Kind::Accounts);
        assert_eq!((accounts.requests, accounts.write_units, accounts.condition_failures), (2, 4, 1), "{ledger:?}");
        assert_eq!(ledger.get(Kind::ReadItem).read_half_units, 2);
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
