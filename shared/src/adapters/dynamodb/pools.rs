//! The pools as stored, and the writes that make pooling's decisions stick
//! (`domain::pooling` decides them; `crate::pooling` and `placement` run
//! them).
//!
//! A shard's open pool is one item, `COIN#{coin}[#{shard}]` / `POOL`: its
//! totals, its `version` (every write adds one), `seq` (how many pools it
//! closed) and one attribute per member order. Each write is conditioned so
//! that it happens once and takes exactly what was decided:
//!
//! - a join adds to the totals and its member, if the shard stays under
//!   the minimum (`placement`);
//! - a close takes the members it read out of the shard (their totals
//!   with them) and puts the record of what it took (`CLOSED#{ms}#{seq}`:
//!   the batch and the members), if every one of them is still there and
//!   the shard closed no pool since (`seq`): a cancel or another close since
//!   then fails it, and nothing is written, while orders that joined since
//!   stay in the shard (it stays under the minimum: each joined under it).
//!   A pool of more members than one expression names is closed whole
//!   instead: put back empty, on the version read;
//! - a move of crumbs adds one shard's members to another and puts the
//!   first back empty, each at the version read, and records each moved
//!   order's new shard on the order;
//! - a cancel removes its member, if it is still there (`cancel`).

use async_trait::async_trait;
use time::OffsetDateTime;

use super::item::{
    self, COINS_PK, Item, account_key, batch_item, closed_pool_item, emptied_pool_item, get_s, member_attribute, n,
    n_int, order_item, order_key, pool_key, shard_count_of, shard_count_unchanged, shards_key, shards_record,
};
use super::stats::StoreStats;
use super::table::{Changes, Cond, Query, Reason, Transacted, Write};
use super::{DynamoStore, infra, unexpected};
use crate::domain::{
    Batch, BatchId, BatchTotals, Coin, Member, Membership, NewOrder, Order, PoolId, Quantity, ShardCount, ShardPool,
    Usd,
};
use crate::ports::{CancelError, Canceled, Closing, InfraError, Pools, TopUp};

/// Keys one `BatchGetItem` reads at most.
const BATCH_GET_KEYS: usize = 100;

/// The condition that a shard is still exactly as read.
pub(super) fn unchanged(pool: &ShardPool) -> Cond {
    match pool.version {
        0 => Cond::not_exists(item::PK),
        version => Cond::eq("version", n_int(version)),
    }
}

/// Members a close takes out of its shard by name, at most: each is named
/// twice (removed, and checked to be there) in expressions DynamoDB caps at
/// 4 KB. A pool of more is closed whole.
const NAMED_CLOSE: usize = 40;

/// The write that takes `pool`'s members (as read) out of its shard: by
/// name, orders that joined since staying; or, a pool of many members, the
/// shard put back empty on its version.
fn take_members(coin: &Coin, pool: &ShardPool, now: OffsetDateTime) -> Write {
    if pool.members.len() > NAMED_CLOSE || pool.members.is_empty() {
        return Write::Put { item: emptied_pool_item(coin, pool, pool.seq + 1, now), condition: Some(unchanged(pool)) };
    }
    let mut changes = Changes::new()
        .add("usd", n(-pool.usd.value()))
        .add("qty", n(-pool.qty))
        .add("count", n(-rust_decimal::Decimal::from(pool.count)))
        .add("version", n_int(1u64))
        .add("seq", n_int(1u64))
        .set("updated_ms", item::ms(now));
    let mut condition = match pool.seq {
        0 => Cond::not_exists("seq").or(Cond::eq("seq", n_int(0u64))),
        seq => Cond::eq("seq", n_int(seq)),
    };
    for member in &pool.members {
        changes = changes.remove(member_attribute(member.order));
        condition = condition.and(Cond::exists(member_attribute(member.order)));
    }
    Write::Update { key: pool_key(coin, pool.shard), changes, condition: Some(condition) }
}

/// The writes that close `pools`, each its members as read, into `batch`
/// (formed at `closed_ms`): each shard's members taken out of it, and the
/// record of what was taken. `closer` is the order that closes them (a
/// crossing order, the house's), a member of the first pool's record.
pub(super) fn close_writes(
    coin: &Coin,
    pools: &[ShardPool],
    batch: BatchId,
    closed_ms: i64,
    now: OffsetDateTime,
    closer: Option<(&Member, Usd, Quantity)>,
) -> Result<Vec<Write>, InfraError> {
    let mut writes = Vec::with_capacity(pools.len() * 2);
    for (index, pool) in pools.iter().enumerate() {
        writes.push(take_members(coin, pool, now));
        let record = closed_pool_item(coin, pool, batch, closed_ms, closer.filter(|_| index == 0))
            .ok_or_else(|| InfraError::new("close pools", "the pool's totals cannot be held exactly"))?;
        writes.push(Write::Put { item: record, condition: Some(Cond::not_exists(item::PK)) });
    }
    Ok(writes)
}

/// The pools `pools` close, as a batch names them.
pub(super) fn pool_ids(pools: &[ShardPool]) -> Vec<PoolId> {
    pools.iter().map(|pool| PoolId { shard: pool.shard, seq: pool.seq }).collect()
}

/// Whether an item a write's condition failed on is that write's own,
/// committed by an earlier send.
type IsOurs<'a> = dyn Fn(&Item) -> bool + Sync + 'a;

/// Whether `found` is the batch `id` (a batch id is fresh: if it exists,
/// this very write made it, in an earlier send whose reply was lost).
fn is_batch(found: &Item, id: BatchId) -> bool {
    get_s(found, "batch_id").is_ok_and(|found| found == id.to_string())
}

impl DynamoStore {
    pub(super) async fn read_shard_count(&self, coin: &Coin) -> Result<ShardCount, InfraError> {
        StoreStats::count(&self.stats.shard_reads);
        self.shard_count_record(coin).await
    }

    async fn shard_count_record(&self, coin: &Coin) -> Result<ShardCount, InfraError> {
        shard_count_of(self.table.get(shards_key(coin)).await?.as_ref()).map_err(infra("read shard count"))
    }

    /// Grows the coin's count from `seen` (the count in force as `read`
    /// gives it), once per count, whoever asks first. The record as it is
    /// afterwards: this process's growth, or whoever's came first.
    pub(super) async fn grow_shards(
        &self,
        coin: &Coin,
        read: &ShardCount,
        seen: u32,
    ) -> Result<ShardCount, InfraError> {
        let Some(grown) = read.grown(seen, self.clock.now(), &self.shard_rules) else { return Ok(*read) };
        StoreStats::count(&self.stats.shard_reads);
        match self.table.update(shards_key(coin), shards_record(&grown), Some(shard_count_unchanged(read))).await {
            Ok(Ok(_)) => {
                StoreStats::count(&self.stats.shards_grown);
                Ok(grown)
            }
            // Someone changed it first (grew it, most likely): theirs stands.
            Ok(Err(Some(current))) => shard_count_of(Some(&current)).map_err(infra("read shard count")),
            Ok(Err(None)) => self.read_shard_count(coin).await,
            // Held by another transaction, or throttled: no growth this time.
            Err(error) if error.is_throttled() => Ok(*read),
            Err(error) => Err(error.into()),
        }
    }

    /// A coin's shard count and its shard 0, in one `BatchGetItem`: what a
    /// process placing the coin for the first time needs.
    pub(super) async fn first_look(&self, coin: &Coin) -> Result<(ShardCount, ShardPool), InfraError> {
        StoreStats::count(&self.stats.pool_reads);
        let found = self.table.get_many(vec![shards_key(coin), pool_key(coin, 0)]).await?;
        let sk = |item: &Item| get_s(item, item::SK).map(str::to_owned).unwrap_or_default();
        let count = found.iter().find(|i| sk(i) == "SHARDS");
        let pool = found.iter().find(|i| sk(i) == "POOL");
        Ok((
            shard_count_of(count).map_err(infra("read shard count"))?,
            item::shard_pool_of(0, pool).map_err(infra("read pool"))?,
        ))
    }

    /// The open pools of `shards`, one `BatchGetItem` per hundred, all at once.
    pub(super) async fn pools_of(&self, coin: &Coin, shards: &[u32]) -> Result<Vec<ShardPool>, InfraError> {
        let reads = shards
            .chunks(BATCH_GET_KEYS)
            .map(|chunk| self.table.get_many(chunk.iter().map(|shard| pool_key(coin, *shard)).collect()));
        let mut found: Vec<(u32, Item)> = Vec::with_capacity(shards.len());
        for items in futures::future::join_all(reads).await {
            for found_item in items? {
                let pk = get_s(&found_item, item::PK).map_err(infra("read pool"))?;
                if let Some((_, shard)) = item::parse_shard_partition(pk) {
                    found.push((shard, found_item));
                }
            }
        }
        shards
            .iter()
            .map(|shard| {
                let stored = found.iter().find(|(s, _)| s == shard).map(|(_, item)| item);
                item::shard_pool_of(*shard, stored).map_err(infra("read pool"))
            })
            .collect()
    }

    /// The shard's pool as a cancellation returned it.
    pub(super) fn pool_returned(shard: u32, found: Option<&Item>) -> Result<ShardPool, InfraError> {
        item::shard_pool_of(shard, found).map_err(infra("read pool"))
    }

    /// Sends one of pooling's transactions (a close, a move, a top-up): a
    /// lost reply is resent with the same token; one held by another
    /// transaction is tried once more (the sweep comes back soon). `Ok(())`
    /// when it committed, the reasons when a condition failed or an item
    /// stayed held; the write at `ours`, when its condition failed on an
    /// item `is_ours` recognises, is this very transaction committed by an
    /// earlier send whose reply was lost (DynamoDB forgot the token).
    async fn pool_transaction(
        &self,
        operation: &'static str,
        writes: &[Write],
        ours: Option<(usize, &IsOurs<'_>)>,
    ) -> Result<Result<(), Vec<Reason>>, InfraError> {
        let token = ulid::Ulid::new().to_string();
        match self.transact_within(operation, &token, writes, 2).await? {
            Transacted::Committed => Ok(Ok(())),
            Transacted::Cancelled(reasons) => {
                if let Some((index, is_ours)) = ours
                    && let Some(Reason::ConditionFailed(Some(found))) = reasons.get(index)
                    && is_ours(found)
                {
                    return Ok(Ok(()));
                }
                if reasons.iter().any(|r| matches!(r, Reason::ConditionFailed(_))) || super::contended(&reasons) {
                    return Ok(Err(reasons));
                }
                Err(InfraError::new(operation, unexpected(&reasons)))
            }
        }
    }
}

#[async_trait]
impl Pools for DynamoStore {
    async fn pooled_coins(&self) -> Result<Vec<Coin>, InfraError> {
        let mut coins = Vec::new();
        let mut start = None;
        loop {
            let query = Query { partition: (item::PK, COINS_PK.to_owned()), start, ..Query::default() };
            let page = self.table.query(query).await?;
            for entry in &page.items {
                let coin = get_s(entry, "coin").map_err(infra("read coin entry"))?;
                coins.push(Coin::from_trusted(coin));
            }
            start = page.next;
            if start.is_none() {
                return Ok(coins);
            }
        }
    }

    async fn shard_count(&self, coin: &Coin) -> Result<ShardCount, InfraError> {
        StoreStats::count(&self.stats.sweep_requests);
        self.shard_count_record(coin).await
    }

    async fn read_pools(&self, coin: &Coin, shards: &[u32]) -> Result<Vec<ShardPool>, InfraError> {
        StoreStats::count(&self.stats.sweep_requests);
        self.pools_of(coin, shards).await
    }

    async fn close(&self, coin: &Coin, pools: &[ShardPool], now: OffsetDateTime) -> Result<Closing, InfraError> {
        let refs: Vec<&ShardPool> = pools.iter().collect();
        let totals = BatchTotals::of(&refs, None).map_err(|e| InfraError::new("close pools", e))?;
        let batch = Batch::ready(coin, pool_ids(pools), totals, now);
        let mut writes = close_writes(coin, pools, batch.id, item::closed_ms(&batch), now, None)?;
        writes.push(Write::Put { item: batch_item(&batch), condition: Some(Cond::not_exists(item::PK)) });
        let is_ours = |found: &Item| is_batch(found, batch.id);
        match self.pool_transaction("close pools", &writes, Some((writes.len() - 1, &is_ours))).await? {
            Ok(()) => Ok(Closing::Formed(batch.id)),
            // `close_writes` writes each pool, then its record.
            Err(reasons) => pools
                .iter()
                .enumerate()
                .map(|(index, pool)| match reasons.get(2 * index) {
                    Some(Reason::ConditionFailed(found)) => Self::pool_returned(pool.shard, found.as_ref()),
                    _ => Ok(pool.clone()),
                })
                .collect::<Result<_, _>>()
                .map(Closing::Moved),
        }
    }

    async fn gather(
        &self,
        coin: &Coin,
        into: &ShardPool,
        from: &[ShardPool],
        now: OffsetDateTime,
    ) -> Result<bool, InfraError> {
        let mut refs: Vec<&ShardPool> = from.iter().collect();
        let moved = BatchTotals::of(&refs, None).map_err(|e| InfraError::new("move pools", e))?;
        refs.push(into);
        // Checked, not written: the target's totals stay exact.
        BatchTotals::of(&refs, None).map_err(|e| InfraError::new("move pools", e))?;
        let mut target = Changes::new()
            .add("usd", n(moved.usd.value()))
            .add("qty", n(moved.qty.value()))
            .add("count", n_int(moved.count))
            .add("version", n_int(1u64))
            .set("updated_ms", item::ms(now));
        let mut writes = Vec::new();
        for pool in from {
            writes.push(Write::Put {
                item: emptied_pool_item(coin, pool, pool.seq, now),
                condition: Some(unchanged(pool)),
            });
            for member in &pool.members {
                target = target.set(member_attribute(member.order), item::member_value(member));
                writes.push(Write::Update {
                    key: order_key(&member.user, member.order),
                    changes: Changes::new().set(item::ORDER_SHARD, n_int(into.shard)),
                    condition: Some(Cond::eq(item::ORDER_SHARD, n_int(pool.shard))),
                });
            }
        }
        writes.insert(
            0,
            Write::Update { key: pool_key(coin, into.shard), changes: target, condition: Some(unchanged(into)) },
        );
        Ok(self.pool_transaction("move pools", &writes, None).await?.is_ok())
    }

    async fn top_up(&self, pools: &[ShardPool], house: &NewOrder, now: OffsetDateTime) -> Result<TopUp, InfraError> {
        let refs: Vec<&ShardPool> = pools.iter().collect();
        let totals = BatchTotals::of(&refs, Some((house.cost, house.amount)))
            .map_err(|e| InfraError::new("top up a pool", e))?;
        let batch = Batch::ready(&house.coin, pool_ids(pools), totals, now);
        let shard = pools.first().map_or(0, |pool| pool.shard);
        let order = Order {
            id: house.id,
            user: house.user.clone(),
            coin: house.coin.clone(),
            amount: house.amount,
            price: house.price,
            cost: house.cost,
            membership: Membership::Pool { shard, formed: Some(batch.id) },
            refunded: false,
            canceled: false,
            created_at: house.created_at,
        };
        let member = Member { order: house.id, user: house.user.clone(), placed: house.created_at };
        const DEBIT: usize = 0;
        const ORDER: usize = 1;
        let mut writes = vec![
            Write::Update {
                key: account_key(&house.user),
                changes: Changes::new().add("balance_usd", n(-house.cost.value())),
                condition: Some(Cond::ge("balance_usd", n(house.cost.value()))),
            },
            Write::Put { item: order_item(&order), condition: Some(Cond::not_exists(item::PK)) },
        ];
        let closer = Some((&member, house.cost, house.amount));
        writes.extend(close_writes(&house.coin, pools, batch.id, item::closed_ms(&batch), now, closer)?);
        writes.push(Write::Put { item: batch_item(&batch), condition: Some(Cond::not_exists(item::PK)) });
        // The house's order id is this top-up's alone: found, it committed.
        let is_ours = |_: &Item| true;
        match self.pool_transaction("top up a pool", &writes, Some((ORDER, &is_ours))).await? {
            Ok(()) => Ok(TopUp::Formed(batch.id)),
            Err(reasons) if matches!(reasons.get(DEBIT), Some(Reason::ConditionFailed(_))) => Ok(TopUp::HouseShort),
            Err(_) => Ok(TopUp::Moved),
        }
    }

    async fn house_balance(&self, house: &crate::domain::UserId) -> Result<Usd, InfraError> {
        crate::ports::Orders::balance(self, house).await
    }

    async fn cancel(&self, member: &Member) -> Result<Canceled, CancelError> {
        self.cancel_order_of(&member.user, member.order).await
    }

    async fn set_shard_count(&self, coin: &Coin, read: &ShardCount, to: &ShardCount) -> Result<bool, InfraError> {
        StoreStats::count(&self.stats.sweep_requests);
        let written = self.table.update(shards_key(coin), shards_record(to), Some(shard_count_unchanged(read)));
        Ok(written.await?.is_ok())
    }
}
