//! A coin's pool over shards: how many there are (`COIN#{coin}` /
//! `SHARDS`), growing when processes keep colliding on one; and the sweep
//! that batches what idle shards hold once nobody writes them (the
//! reconciler's).

use time::OffsetDateTime;
use tokio::time::Instant;

use super::item::{self, Item, get_u64, ms, n, n_int, parse_shard_partition, pool_key, shards_grown, shards_key};
use super::pool_cache::{CachedPool, Turn};
use super::stats::StoreStats;
use super::table::{Changes, Cond};
use super::{DynamoStore, infra};
use crate::domain::{Coin, PoolState};
use crate::ports::InfraError;

/// Keys one `BatchGetItem` reads at most.
const BATCH_GET_KEYS: usize = 100;

/// A shard's pool item as read, with when it was last written.
pub(super) fn cached_of(found: &Item) -> Result<CachedPool, InfraError> {
    let state = item::pool_of(found).map_err(infra("read pool"))?;
    let written_at = item::time_of_ms_opt(found, "updated_ms").map_err(infra("read pool"))?;
    Ok(CachedPool { state, exists: true, written_at })
}

/// The changes that close a pool as `state` and the condition that it still
/// is exactly that (its totals are what the batch takes).
pub(super) fn close_pool(state: &PoolState, now: OffsetDateTime) -> (Changes, Cond) {
    let zero = || n_int(0u64);
    let changes = Changes::new()
        .set("usd", zero())
        .set("qty", zero())
        .set("count", zero())
        .set("seq", n_int(state.seq + 1))
        .set("updated_ms", ms(now));
    let condition = Cond::eq("seq", n_int(state.seq))
        .and(Cond::eq("count", n_int(state.count)))
        .and(Cond::eq("usd", n(state.usd.value())))
        .and(Cond::eq("qty", n(state.qty)));
    (changes, condition)
}

/// A coin's shard count as recorded (`COIN#{coin}` / `SHARDS`): what it
/// last grew to, and when. It halves every `shrink_after` since, without
/// anyone writing: once processes stop colliding, the coin comes back to
/// one pool (and one pool's exact timing) in a few halvings. `high` is the
/// most shards the coin has had: a shard above today's count may still hold
/// orders, so the sweep reads up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ShardCount {
    grown_to: u32,
    /// When it grew, in ms since the epoch as written (`grown_ms`).
    grown_ms: Option<i64>,
    pub(super) high: u32,
    exists: bool,
}

impl ShardCount {
    fn of(found: Option<&Item>) -> Result<ShardCount, InfraError> {
        let Some(found) = found else {
            return Ok(ShardCount { grown_to: 1, grown_ms: None, high: 1, exists: false });
        };
        let read = |name: &str| -> Result<Option<u64>, InfraError> {
            if !found.contains_key(name) {
                return Ok(None);
            }
            get_u64(found, name).map(Some).map_err(infra("read shard count"))
        };
        let grown_to = u32::try_from(read("count")?.unwrap_or(1)).unwrap_or(u32::MAX).max(1);
        let grown_ms = read("grown_ms")?.and_then(|ms| i64::try_from(ms).ok());
        let high = u32::try_from(read("high")?.unwrap_or(0)).unwrap_or(u32::MAX).max(grown_to);
        Ok(ShardCount { grown_to, grown_ms, high, exists: true })
    }

    /// The count at `now`: halved once per `shrink_after` since it grew.
    /// (A count written before it decayed, with no `grown_ms`, is taken as
    /// long since grown.)
    pub(super) fn at(&self, now: OffsetDateTime, shrink_after: std::time::Duration, max: u32) -> u32 {
        let since_ms = match self.grown_ms {
            Some(grown) => i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX) - grown,
            None => i64::MAX,
        };
        let every_ms = i64::try_from(shrink_after.as_millis()).unwrap_or(i64::MAX).max(1);
        let halvings = u32::try_from((since_ms.max(0) / every_ms).min(31)).unwrap_or(31);
        (self.grown_to >> halvings).clamp(1, max.max(1))
    }

    /// When the count in force fell to `count` or below, in ms since the
    /// epoch: `None` if it has not (it never grew, or grew to no more).
    pub(super) fn fell_to_ms(&self, count: u32, shrink_after: std::time::Duration) -> Option<i64> {
        let grown = self.grown_ms?;
        let halvings = (0..32).find(|h| (self.grown_to >> h).max(1) <= count.max(1))?;
        let every_ms = i64::try_from(shrink_after.as_millis()).unwrap_or(i64::MAX);
        Some(grown.saturating_add(every_ms.saturating_mul(i64::from(halvings))))
    }

    /// The changes that record the count as grown to `count` at `fell_ms`,
    /// when it fell there: the count in force is the same from then on, and
    /// `high` (no less than it) comes down to it.
    pub(super) fn settled_at(&self, count: u32, fell_ms: i64) -> Changes {
        Changes::new()
            .set("count", n_int(count))
            .set("grown_ms", n_int(u64::try_from(fell_ms).unwrap_or(0)))
            .set("high", n_int(count))
    }

    /// The condition that the record is still as read.
    pub(super) fn unchanged(&self) -> Cond {
        if !self.exists {
            return Cond::not_exists("PK");
        }
        let grown = match self.grown_ms {
            Some(ms) => Cond::eq("grown_ms", n_int(u64::try_from(ms).unwrap_or(0))),
            None => Cond::not_exists("grown_ms"),
        };
        Cond::eq("count", n_int(self.grown_to)).and(grown)
    }
}

impl DynamoStore {
    pub(super) async fn read_shard_count(&self, coin: &Coin) -> Result<ShardCount, InfraError> {
        StoreStats::count(&self.stats.shard_reads);
        ShardCount::of(self.table.get(shards_key(coin)).await?.as_ref())
    }

    /// How many shards the coin's pool has now, from a recent read.
    pub(super) async fn shard_count(&self, turn: &mut Turn, coin: &Coin) -> Result<u32, InfraError> {
        if self.sharding.max_shards <= 1 {
            return Ok(1);
        }
        let record = match turn.shard_count {
            Some((record, at)) if at.elapsed() < self.sharding.count_every => record,
            _ => {
                let record = self.read_shard_count(coin).await?;
                turn.shard_count = Some((record, Instant::now()));
                record
            }
        };
        Ok(record.at(self.clock.now(), self.sharding.shrink_after, self.sharding.max_shards))
    }

    /// The shard count, read again unless it was just read: a collision
    /// says others may have grown it.
    pub(super) async fn fresh_shard_count(&self, turn: &mut Turn, coin: &Coin) -> Result<u32, InfraError> {
        if turn.shard_count.is_some_and(|(_, at)| at.elapsed() >= self.sharding.count_every / 20) {
            turn.shard_count = None;
        }
        self.shard_count(turn, coin).await
    }

    /// Grows the coin's shard count from `seen` (once per count, whoever
    /// asks first): processes keep colliding on the shards there are.
    pub(super) async fn grow_shards(&self, turn: &mut Turn, coin: &Coin, seen: u32) -> Result<u32, InfraError> {
        // Quickly while there are few shards: a burst of new processes
        // collides until there are about as many as writers.
        let factor = if seen < 64 { 4 } else { 2 };
        let wanted = seen.saturating_mul(factor).min(self.sharding.max_shards);
        if wanted <= seen {
            return Ok(seen);
        }
        let now = self.clock.now();
        let record = match turn.shard_count {
            Some((record, _)) => record,
            None => self.read_shard_count(coin).await?,
        };
        let grown = ShardCount {
            grown_to: wanted,
            grown_ms: i64::try_from(now.unix_timestamp_nanos() / 1_000_000).ok(),
            high: record.high.max(wanted),
            exists: true,
        };
        let changes = shards_grown(grown.grown_to, grown.high, now);
        StoreStats::count(&self.stats.shard_reads);
        let written = match self.table.update(shards_key(coin), changes, Some(record.unchanged())).await {
            // Held by a sweep's transaction, or throttled: no growth this
            // time; the next collision asks again.
            Err(error) if error.is_throttled() => {
                return Ok(record.at(now, self.sharding.shrink_after, self.sharding.max_shards));
            }
            written => written?,
        };
        let record = match written {
            Ok(_) => {
                StoreStats::count(&self.stats.shards_grown);
                grown
            }
            // Someone changed it first (grew it, most likely): theirs stands.
            Err(Some(current)) => ShardCount::of(Some(&current))?,
            Err(None) => self.read_shard_count(coin).await?,
        };
        turn.shard_count = Some((record, Instant::now()));
        Ok(record.at(now, self.sharding.shrink_after, self.sharding.max_shards))
    }

    /// Another shard to place on: the coin's shards are `0..count`.
    pub(super) fn pick_shard(&self, count: u32, not: u32) -> u32 {
        if count <= 1 {
            return 0;
        }
        let pick = self.random_below(count - 1);
        if pick >= not { pick + 1 } else { pick }
    }

    /// Reads the pools of `shards` (all of them, in as few requests as may).
    pub(super) async fn read_shards(&self, coin: &Coin, shards: &[u32]) -> Result<Vec<(u32, CachedPool)>, InfraError> {
        // One `BatchGetItem` per hundred shards, all at once.
        let reads = shards
            .chunks(BATCH_GET_KEYS)
            .map(|chunk| self.table.get_many(chunk.iter().map(|shard| pool_key(coin, *shard)).collect()));
        let mut seen: Vec<(u32, CachedPool)> = Vec::with_capacity(shards.len());
        for items in futures::future::join_all(reads).await {
            for item in &items? {
                let pk = item::get_s(item, item::PK).map_err(infra("read pool"))?;
                if let Some((_, shard)) = parse_shard_partition(pk) {
                    seen.push((shard, cached_of(item)?));
                }
            }
        }
        Ok(shards
            .iter()
            .map(|shard| (*shard, seen.iter().find(|(s, _)| s == shard).map(|(_, p)| *p).unwrap_or_default()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rust_decimal::Decimal;
    use time::OffsetDateTime;

    use super::*;
    use crate::adapters::dynamodb::PoolSharding;
    use crate::adapters::dynamodb::sweep::{SHARDS_PER_BATCH, take_minimum};
    use crate::adapters::dynamodb::table::{ConditionFailed, Item, Page, Query, Table, TableError};
    use crate::adapters::dynamodb::table::{Transacted, Write};
    use crate::adapters::dynamodb::testing::{order_at as order, usd};
    use crate::audit::audit;
    use crate::domain::Absorbed;
    use crate::domain::UserId;
    use crate::ports::{Accounts, Clock, LedgerRecords, Outbox};

    fn at_ms(ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
    }

    #[test]
    fn the_count_halves_once_per_period_since_it_grew() {
        let record = ShardCount { grown_to: 1024, grown_ms: Some(1_000_000), high: 1024, exists: true };
        let every = Duration::from_secs(2);
        let count_at = |ms: i64| record.at(at_ms(ms), every, 1024);
        assert_eq!(count_at(1_000_000), 1024);
        assert_eq!(count_at(1_001_999), 1024);
        assert_eq!(count_at(1_002_000), 512);
        assert_eq!(count_at(1_007_999), 128);
        assert_eq!(count_at(1_020_000), 1);
        assert_eq!(count_at(9_000_000_000), 1);
        // Another process's clock a little behind the one that grew it.
        assert_eq!(count_at(999_990), 1024);
        assert_eq!(record.at(at_ms(1_000_000), every, 256), 256, "capped at the configured most");
        let never_dated = ShardCount { grown_ms: None, ..record };
        assert_eq!(never_dated.at(at_ms(1_000_000), every, 1024), 1, "an undated count is long since grown");
    }

    #[test]
    fn a_sweep_group_is_the_fewest_shards_that_reach_the_minimum_and_fits_one_transaction() {
        let shard = |shard: u32, dollars: &str| Absorbed {
            shard,
            state: PoolState { seq: 0, usd: usd(dollars), qty: Decimal::ONE, count: 1 },
        };
        let shards = [shard(3, "6"), shard(1, "4"), shard(2, "1")];
        let group = take_minimum(shards.iter(), usd("10")).unwrap();
        assert_eq!(group.iter().map(|s| s.shard).collect::<Vec<_>>(), vec![3, 1]);
        assert!(take_minimum(shards.iter(), usd("12")).is_none());
        // Fifty shards of $0.20 do not fit one transaction: the sweep gathers
        // them over several (`sweep::tests`), never leaves them.
        let crumbs: Vec<Absorbed> = (0..60).map(|i| shard(i, "0.2")).collect();
        assert!(take_minimum(crumbs.iter(), usd("10")).is_none());
        assert_eq!(take_minimum(crumbs.iter(), usd("9.6")).map(|g| g.len()), Some(SHARDS_PER_BATCH));
    }

    struct SetClock(Mutex<OffsetDateTime>);

    impl SetClock {
        fn set(&self, to: OffsetDateTime) {
            *self.0.lock().unwrap() = to;
        }
    }

    impl Clock for SetClock {
        fn now(&self) -> OffsetDateTime {
            *self.0.lock().unwrap()
        }
    }

    async fn processes(count: usize, clock: &Arc<SetClock>) -> Vec<DynamoStore> {
        let table: Arc<dyn crate::adapters::dynamodb::table::Table> =
            Arc::new(crate::adapters::dynamodb::table::memory::MemoryTable::new());
        let stores: Vec<DynamoStore> = (0..count)
            .map(|i| {
                DynamoStore::on(Arc::clone(&table))
                    .with_clock(Arc::clone(clock) as Arc<dyn Clock>)
                    .with_jitter_seed(i as u64)
            })
            .collect();
        stores[0].open_account(&UserId::parse("alice").unwrap(), usd("1000")).await.unwrap();
        stores
    }

    async fn assert_audit_clean(store: &DynamoStore) {
        let report = audit(&store.ledger().await.unwrap(), usd("10"));
        assert!(report.is_clean(), "{report}");
    }

    /// Two processes on a coin of 4 shards: the first placed one $2 order
    /// on its shard and went quiet; the second is busy placing on another
    /// (it looks at no other shard). The clock is 30 s later.
    struct QuietAndBusy {
        t0: OffsetDateTime,
        coin: Coin,
        stores: Vec<DynamoStore>,
        lone: crate::ports::Placed,
        quiet_shard: u32,
        busy_shard: u32,
    }

    async fn quiet_and_busy() -> QuietAndBusy {
        let t0 = at_ms(1_700_000_000_000);
        let clock = Arc::new(SetClock(Mutex::new(t0)));
        let stores = processes(2, &clock).await;
        let coin = Coin::from_trusted("ABAN");
        stores[0].table.update(shards_key(&coin), shards_grown(4, 4, t0), None).await.unwrap().unwrap();
        let lone = stores[0].place(order("alice", "0.5", t0), usd("10")).await.unwrap(); // $2
        let quiet_shard = stores[0].pools.enter(&coin).await.home;
        clock.set(t0 + time::Duration::seconds(1));
        let busy_shard = {
            let mut turn = stores[1].pools.enter(&coin).await;
            stores[1].shard_count(&mut turn, &coin).await.unwrap();
            turn.home = (quiet_shard + 1) % 4;
            turn.last_placed = Some(Instant::now());
            turn.home
        };
        clock.set(t0 + time::Duration::seconds(30));
        QuietAndBusy { t0, coin, stores, lone, quiet_shard, busy_shard }
    }

    /// A process gone quiet (a Lambda instance nobody calls any more) left
    /// one small order on its shard, while a busy one keeps the shard it
    /// writes under the minimum: the sweep takes the quiet shard with the
    /// fullest written one.
    #[tokio::test]
    async fn an_order_left_alone_on_a_quiet_shard_is_swept_with_a_shard_in_use() {
        let QuietAndBusy { t0, coin, stores, lone, quiet_shard, busy_shard } = quiet_and_busy().await;
        for _ in 0..2 {
            let placed = stores[1].place(order("alice", "1", t0), usd("10")).await.unwrap(); // $8
            assert_eq!(placed.formed, None);
        }

        let now = t0 + time::Duration::seconds(35);
        let formed = stores[1].sweep_pools(&coin, usd("10"), time::Duration::seconds(10), now).await.unwrap();

        assert_eq!(formed.len(), 1, "the quiet $2 and the $8 in use are the minimum together");
        let batch = stores[1].read_batch(formed[0]).await.unwrap().unwrap();
        let mut pools: Vec<u32> = batch.pools.iter().map(|p| p.shard).collect();
        pools.sort_unstable();
        let mut expected = vec![quiet_shard, busy_shard];
        expected.sort_unstable();
        assert_eq!((pools, batch.usd, batch.count), (expected, usd("10"), 3));
        let alice = UserId::parse("alice").unwrap();
        let order = stores[1].order_view(&alice, lone.order.order.id).await.unwrap().unwrap();
        assert_eq!(order.batch_id, Some(batch.id));
        assert_audit_clean(&stores[0]).await;
    }

    /// A table whose `get_many` lets `hook` write after it answers, the
    /// first `times` reads: a shard in use changes between a read and the
    /// write that follows it, as under steady load.
    struct WritesAfterReads {
        inner: Arc<dyn Table>,
        times: Mutex<u32>,
        hook: Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>,
    }

    #[async_trait::async_trait]
    impl Table for WritesAfterReads {
        async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
            self.inner.get(key).await
        }
        async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
            let items = self.inner.get_many(keys).await?;
            let fire = {
                let mut times = self.times.lock().unwrap();
                let fire = *times > 0;
                *times = times.saturating_sub(1);
                fire
            };
            if fire {
                (self.hook)().await;
            }
            Ok(items)
        }
        async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
            self.inner.put(item, condition).await
        }
        async fn update(
            &self,
            key: Item,
            changes: Changes,
            condition: Option<Cond>,
        ) -> Result<Result<Item, ConditionFailed>, TableError> {
            self.inner.update(key, changes, condition).await
        }
        async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
            self.inner.transact(writes, token).await
        }
        async fn query(&self, query: Query) -> Result<Page, TableError> {
            self.inner.query(query).await
        }
        async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
            self.inner.scan(start).await
        }
    }

    /// Under steady load the shard in use changes between the sweep's read
    /// and its write, again and again: the sweep reads the shards it closes
    /// once more and tries again, so the quiet order does not wait for the
    /// load to end.
    #[tokio::test]
    async fn a_quiet_order_is_swept_while_the_shards_in_use_keep_changing() {
        let QuietAndBusy { t0, coin, stores, lone, .. } = quiet_and_busy().await;
        let clock = Arc::clone(&stores[1].clock);
        stores[1].place(order("alice", "2", t0), usd("10")).await.unwrap(); // $8 in use
        let writer = Arc::new(stores.into_iter().nth(1).unwrap());
        let busy = Arc::clone(&writer);
        // Each of the sweep's first three reads is followed by one more
        // $0.40 order on the shard in use.
        let sweeper = DynamoStore::on(Arc::new(WritesAfterReads {
            inner: Arc::clone(&writer.table),
            times: Mutex::new(3),
            hook: Box::new(move || {
                let busy = Arc::clone(&busy);
                Box::pin(async move {
                    let placed = busy.place(order("alice", "0.1", t0), usd("10")).await.unwrap();
                    assert_eq!(placed.formed, None);
                })
            }),
        }))
        .with_clock(clock);

        let now = t0 + time::Duration::seconds(35);
        let formed = sweeper.sweep_pools(&coin, usd("10"), time::Duration::seconds(10), now).await.unwrap();

        assert_eq!(formed.len(), 1, "the quiet $2 waits while the shard in use keeps changing");
        let batch = writer.read_batch(formed[0]).await.unwrap().unwrap();
        assert_eq!((batch.usd, batch.count), (usd("11.2"), 5), "the quiet $2, the $8 and three $0.40");
        let alice = UserId::parse("alice").unwrap();
        let order = writer.order_view(&alice, lone.order.order.id).await.unwrap().unwrap();
        assert_eq!(order.batch_id, Some(batch.id));
        assert_audit_clean(&writer).await;
    }

    /// Eight processes that grew the coin to 64 shards in a burst, then a
    /// trickle: by the time it comes, the count has folded back to one, and
    /// the order that brings the coin to the minimum forms the batch, as with
    /// one pool.
    #[tokio::test]
    async fn after_a_burst_the_count_folds_back_and_a_trickle_batches_at_once() {
        let t0 = at_ms(1_700_000_000_000);
        let clock = Arc::new(SetClock(Mutex::new(t0)));
        let stores = processes(8, &clock).await;
        let coin = Coin::from_trusted("ABAN");
        stores[0].table.update(shards_key(&coin), shards_grown(64, 64, t0), None).await.unwrap().unwrap();
        let shrink_after = PoolSharding::default().shrink_after;

        clock.set(t0 + time::Duration::try_from(shrink_after * 6).unwrap());
        let mut turn = stores[0].pools.enter(&coin).await;
        assert_eq!(stores[0].shard_count(&mut turn, &coin).await.unwrap(), 1);
        drop(turn);

        // $2 a time, round the processes: the fifth crosses.
        for (i, store) in stores.iter().take(5).enumerate() {
            let placed = store.place(order("alice", "0.5", t0), usd("10")).await.unwrap();
            assert_eq!(placed.formed.is_some(), i == 4, "order {i}: {placed:?}");
        }
        assert_audit_clean(&stores[0]).await;
    }
}
