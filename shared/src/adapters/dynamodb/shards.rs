//! A coin's pool over shards: how many there are (`COIN#{coin}` /
//! `SHARDS`), growing when processes keep colliding on one; and the sweep
//! that batches what idle shards hold once nobody writes them (the
//! reconciler's).

use time::OffsetDateTime;
use tokio::time::Instant;

use super::item::{
    self, Item, batch_item, get_u64, ms, n, n_int, parse_shard_partition, pool_batch_key, pool_key, s, shards_key,
};
use super::pool_cache::{CachedPool, Turn};
use super::stats::StoreStats;
use super::table::{Changes, Cond, Transacted, Write};
use super::{DynamoStore, infra, unexpected};
use crate::domain::{Absorbed, Batch, BatchId, BatchQuantity, BatchTotals, Coin, PoolId, PoolState, Usd};
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

impl DynamoStore {
    /// How many shards the coin's pool has, as recently read.
    pub(super) async fn shard_count(&self, turn: &mut Turn, coin: &Coin) -> Result<u32, InfraError> {
        if self.sharding.max_shards <= 1 {
            return Ok(1);
        }
        if let Some((count, at)) = turn.shard_count
            && at.elapsed() < self.sharding.count_every
        {
            return Ok(count);
        }
        StoreStats::count(&self.stats.shard_reads);
        let count = match self.table.get(shards_key(coin)).await? {
            Some(found) => u32::try_from(get_u64(&found, "count").map_err(infra("read shard count"))?).unwrap_or(1),
            None => 1,
        };
        let count = count.clamp(1, self.sharding.max_shards);
        turn.shard_count = Some((count, Instant::now()));
        Ok(count)
    }

    /// The shard count, read again unless it was just read: a collision
    /// says others may have grown it.
    pub(super) async fn fresh_shard_count(&self, turn: &mut Turn, coin: &Coin) -> Result<u32, InfraError> {
        if let Some((count, at)) = turn.shard_count
            && at.elapsed() < self.sharding.count_every / 20
        {
            return Ok(count);
        }
        turn.shard_count = None;
        self.shard_count(turn, coin).await
    }

    /// Grows the coin's shard count (once per count, whoever asks first):
    /// processes keep colliding on the shards there are.
    pub(super) async fn grow_shards(&self, turn: &mut Turn, coin: &Coin, seen: u32) -> Result<u32, InfraError> {
        // Quickly while there are few shards: a burst of new processes
        // collides until there are about as many as writers.
        let factor = if seen < 64 { 4 } else { 2 };
        let wanted = seen.saturating_mul(factor).min(self.sharding.max_shards);
        if wanted <= seen {
            return Ok(seen);
        }
        let unchanged = match seen {
            1 => Cond::NotExists("count").or(Cond::eq("count", n_int(1u64))),
            seen => Cond::eq("count", n_int(seen)),
        };
        StoreStats::count(&self.stats.shard_reads);
        let count = match self
            .table
            .update(shards_key(coin), Changes::new().set("count", n_int(wanted)), Some(unchanged))
            .await?
        {
            Ok(_) => {
                StoreStats::count(&self.stats.shards_grown);
                wanted
            }
            // Someone grew it first.
            Err(Some(now)) => u32::try_from(get_u64(&now, "count").map_err(infra("read shard count"))?).unwrap_or(seen),
            Err(None) => seen,
        };
        turn.shard_count = Some((count, Instant::now()));
        Ok(count)
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
    async fn read_shards(&self, coin: &Coin, shards: &[u32]) -> Result<Vec<(u32, CachedPool)>, InfraError> {
        let mut found = Vec::with_capacity(shards.len());
        for chunk in shards.chunks(BATCH_GET_KEYS) {
            let items = self.table.get_many(chunk.iter().map(|shard| pool_key(coin, *shard)).collect()).await?;
            let mut seen: Vec<(u32, CachedPool)> = Vec::with_capacity(chunk.len());
            for item in &items {
                let pk = item::get_s(item, item::PK).map_err(infra("read pool"))?;
                if let Some((_, shard)) = parse_shard_partition(pk) {
                    seen.push((shard, cached_of(item)?));
                }
            }
            for shard in chunk {
                let pool = seen.iter().find(|(s, _)| s == shard).map(|(_, p)| *p).unwrap_or_default();
                found.push((*shard, pool));
            }
        }
        Ok(found)
    }

    /// Batches what the coin's idle shards hold (no write for `quiet_for`),
    /// the largest first, until they hold less than the minimum together;
    /// then lets the shard count shrink to the shards still in use. Returns
    /// the batches formed (`READY`: they go to the settle queue).
    pub(super) async fn sweep(
        &self,
        coin: &Coin,
        minimum: Usd,
        quiet_for: time::Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<BatchId>, InfraError> {
        let count = match self.table.get(shards_key(coin)).await? {
            Some(found) => u32::try_from(get_u64(&found, "count").map_err(infra("read shard count"))?).unwrap_or(1),
            None => 1,
        };
        let all: Vec<u32> = (0..count.max(1)).collect();
        let pools = self.read_shards(coin, &all).await?;
        let quiet = |pool: &CachedPool| pool.written_at.is_none_or(|at| at <= now - quiet_for);
        let mut idle: Vec<Absorbed> = pools
            .iter()
            .filter(|(_, pool)| pool.exists && pool.state.count > 0 && quiet(pool))
            .map(|(shard, pool)| Absorbed { shard: *shard, state: pool.state })
            .collect();
        idle.sort_by(|a, b| b.state.usd.cmp(&a.state.usd).then(a.shard.cmp(&b.shard)));

        let mut formed = Vec::new();
        loop {
            let total = idle.iter().fold(Usd::ZERO, |sum, s| sum + s.state.usd);
            if total < minimum || idle.is_empty() {
                break;
            }
            // The largest first until the minimum: the fewest shards per batch.
            let mut group = Vec::new();
            let mut usd = Usd::ZERO;
            while usd < minimum && !idle.is_empty() {
                let shard = idle.remove(0);
                usd = usd + shard.state.usd;
                group.push(shard);
            }
            match self.close_shards(coin, &group, now).await? {
                Some(batch) => formed.push(batch),
                // One of them moved: it is not idle after all; the rest may still be.
                None => break,
            }
        }

        // The shards in use (holding orders, or written lately) bound the count.
        let in_use = pools
            .iter()
            .filter(|(_, pool)| pool.state.count > 0 || !quiet(pool))
            .map(|(shard, _)| shard + 1)
            .max()
            .unwrap_or(1);
        if in_use < count {
            let shrink = Changes::new().set("count", n_int(in_use));
            self.table.update(shards_key(coin), shrink, Some(Cond::eq("count", n_int(count)))).await?.ok();
        }
        Ok(formed)
    }

    /// One transaction closing `group`'s pools, each exactly as read, into
    /// a new `READY` batch. `None` when one of them changed meanwhile.
    async fn close_shards(
        &self,
        coin: &Coin,
        group: &[Absorbed],
        now: OffsetDateTime,
    ) -> Result<Option<BatchId>, InfraError> {
        let Some(batch) = swept_batch(coin, group, now) else { return Ok(None) };
        let mut writes = Vec::with_capacity(group.len() * 2 + 1);
        for shard in group {
            let (changes, condition) = close_pool(&shard.state, now);
            writes.push(Write::Update { key: pool_key(coin, shard.shard), changes, condition: Some(condition) });
        }
        writes.push(Write::Put { item: batch_item(&batch), condition: Some(Cond::NotExists("PK")) });
        for pool in &batch.pools {
            let mut pointer = pool_batch_key(coin, *pool);
            pointer.insert("batch_id".into(), s(batch.id.to_string()));
            writes.push(Write::Put { item: pointer, condition: Some(Cond::NotExists("PK")) });
        }
        match self.transact_idempotent("sweep pools", &writes).await? {
            Transacted::Committed => Ok(Some(batch.id)),
            Transacted::Cancelled(reasons)
                if reasons.iter().any(|r| matches!(r, super::table::Reason::ConditionFailed(_))) =>
            {
                Ok(None)
            }
            Transacted::Cancelled(reasons) => Err(InfraError::new("sweep pools", unexpected(&reasons))),
        }
    }
}

/// The batch that closing these pools forms.
fn swept_batch(coin: &Coin, group: &[Absorbed], now: OffsetDateTime) -> Option<Batch> {
    let usd = group.iter().try_fold(Usd::ZERO, |sum, s| sum.checked_add(s.state.usd))?;
    let qty = group.iter().try_fold(rust_decimal::Decimal::ZERO, |sum, s| sum.checked_add(s.state.qty))?;
    let count = group.iter().try_fold(0u32, |sum, s| sum.checked_add(s.state.count))?;
    let pools = group.iter().map(|s| PoolId { shard: s.shard, seq: s.state.seq }).collect();
    let totals = BatchTotals { usd, qty: BatchQuantity::from_decimal(qty)?, count };
    Some(Batch::ready(coin, pools, totals, now))
}
