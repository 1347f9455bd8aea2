//! The reconciler's sweep: what quiet shards hold (shards nobody wrote for
//! a while: their writers are gone, or idle) goes into batches as soon as
//! it reaches the minimum together, however many shards that takes.
//!
//! - Quiet shards that one transaction can close (48 at most: two writes
//!   each, the shard and its pointer, within a transaction's 100) and that
//!   reach the minimum: one batch, the fullest first.
//! - More than that: a batch that gathers over several transactions. The
//!   first closes 48 shards into a `FORMING` batch and records it on the
//!   coin (`COIN#{coin}` / `FORMING`); each next one closes more into it,
//!   conditioned on the batch's exact totals; the one that brings it to the
//!   minimum makes it `READY`. A sweep that stops half way leaves the
//!   record: the next one goes on.
//! - Quiet money left under the minimum while shards in use hold more: the
//!   top-up closes both together.
//!
//! Every shard is closed on its exact state, so a shard someone wrote since
//! it was read fails the transaction and is left to its writer.

use time::OffsetDateTime;
use tokio::time::Instant;

use super::item::{self, Item, batch_item, forming_key, get_s, n, n_int, pool_batch_key, pools_text, s, shards_key};
use super::pool_cache::CachedPool;
use super::shards::{ShardCount, close_pool};
use super::stats::StoreStats;
use super::table::{Changes, Cond, Reason, Transacted, Write};
use super::{DynamoStore, infra, unexpected};
use crate::domain::{Absorbed, Batch, BatchId, BatchQuantity, BatchStatus, BatchTotals, Coin, PoolId, Usd, exact_sum};
use crate::ports::InfraError;

/// Shards one sweep transaction closes at most: two writes each (the pool
/// and its batch pointer), and the batch, the coin's forming record and a
/// check of its shard count, within a transaction's 100.
pub(super) const SHARDS_PER_BATCH: usize = 48;
/// Shards in use a sweep considers for topping up idle money, the fullest.
const TOP_UP_CANDIDATES: usize = 16;
/// Reads and tries a top-up gets, each on a fresh read of its shards.
const TOP_UP_ATTEMPTS: u32 = 5;
/// How long after the count fell below a shard nobody can write it any
/// more: processes read the count every second and move off a shard above
/// it, an order retries for seconds, and a request signed longer ago than
/// five minutes is refused by DynamoDB (Signature Version 4). After that,
/// shards above the count that the sweep finds empty stay empty, and the
/// sweep stops reading them (`high` comes down): a coin that was hot once
/// is not read at every sweep for ever.
const HIGH_SETTLES_AFTER: time::Duration = time::Duration::minutes(6);
/// How often a sweep reads every shard of a coin whose shards above the
/// count nobody can write any more (see `read_swept_shards`).
const FULL_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The writes that close `shards`, each on its exact state, into `batch`:
/// the pool reset and its pointer to the batch.
pub(super) fn close_into(coin: &Coin, shards: &[Absorbed], batch: BatchId, now: OffsetDateTime) -> Vec<Write> {
    let mut writes = Vec::with_capacity(shards.len() * 2);
    for shard in shards {
        let (changes, condition) = close_pool(&shard.state, now);
        writes.push(Write::Update { key: item::pool_key(coin, shard.shard), changes, condition: Some(condition) });
        let mut pointer = pool_batch_key(coin, PoolId { shard: shard.shard, seq: shard.state.seq });
        pointer.insert("batch_id".into(), s(batch.to_string()));
        writes.push(Write::Put { item: pointer, condition: Some(Cond::not_exists("PK")) });
    }
    writes
}

impl DynamoStore {
    /// Batches what the coin's quiet shards hold (see the module), reading
    /// every shard the coin has had (`high`): a process that went away may
    /// have left orders above today's count. Returns the batches made
    /// `READY` (they go to the settle queue).
    pub(super) async fn sweep(
        &self,
        coin: &Coin,
        minimum: Usd,
        quiet_for: time::Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<BatchId>, InfraError> {
        let record = self.swept_count(coin).await?;
        // One shard is one pool: the order that reaches the minimum closes it.
        if record.high <= 1 {
            return Ok(Vec::new());
        }
        let pools = self.read_swept_shards(coin, record, now).await?;
        let forming = self.forming_batch(coin).await?;
        if forming.is_none() {
            self.lower_high(coin, record, &pools, now).await?;
        }
        let quiet = |pool: &CachedPool| pool.written_at.is_none_or(|at| at <= now - quiet_for);
        let mut idle: Vec<Absorbed> = pools.iter().filter(|(_, pool)| quiet(pool)).filter_map(holding).collect();
        let mut written: Vec<Absorbed> = pools.iter().filter(|(_, pool)| !quiet(pool)).filter_map(holding).collect();
        largest_first(&mut idle);
        largest_first(&mut written);

        let mut formed = Vec::new();
        if let Some(batch) = forming {
            match self.gather(coin, batch, &mut idle, minimum, now).await? {
                Some(id) => formed.push(id),
                // Still under the minimum, or a shard moved: the next sweep goes on.
                None => return Ok(formed),
            }
        }
        loop {
            if let Some(group) = take_minimum(idle.iter(), minimum) {
                idle.drain(..group.len());
                match self.close_shards(coin, &group, now).await? {
                    Some(batch) => formed.push(batch),
                    // One of them moved: it is not idle after all; the rest may still be.
                    None => return Ok(formed),
                }
            } else if sum(&idle) >= minimum {
                // More quiet shards reach the minimum together than one
                // transaction closes: a batch gathered over several.
                let first: Vec<Absorbed> = idle.drain(..SHARDS_PER_BATCH.min(idle.len())).collect();
                let Some(batch) = self.start_forming(coin, &first, record, now).await? else { return Ok(formed) };
                match self.gather(coin, batch, &mut idle, minimum, now).await? {
                    Some(id) => formed.push(id),
                    None => return Ok(formed),
                }
            } else {
                break;
            }
        }
        // Quiet money under the minimum while shards in use hold more: both
        // together (the writers of those lose one race, and decide again).
        // Half a batch's room for the idle ones, the largest; what does not
        // fit waits for the next sweep.
        let aged = self.aged(coin, &idle, &written);
        if !idle.is_empty() {
            let fullest: Vec<Absorbed> = written.iter().take(TOP_UP_CANDIDATES).copied().collect();
            idle.truncate(SHARDS_PER_BATCH / 2);
            if let Some(batch) = self.top_up(coin, idle, fullest, minimum, now).await? {
                formed.push(batch);
            }
        }
        // Under load no shard is quiet, yet an order waits on its shard until
        // that shard's own writers bring it to the minimum, while the coin
        // holds far more. Money this sweep has seen waiting on a shard in use
        // for `sweep_aged_after` is late: it is batched with other shards.
        let (late, partners): (Vec<Absorbed>, Vec<Absorbed>) =
            written.into_iter().partition(|shard| aged.contains(&shard.shard));
        formed.extend(self.batch_late(coin, late, partners, minimum, now).await?);
        Ok(formed)
    }

    /// Late money (see `aged`), the fullest first, in disjoint groups that
    /// reach the minimum with other late shards or the fullest in use; each
    /// group read again and closed on what was read, all groups at once (a
    /// window of two requests: its writers change a shard in use every few
    /// tens of milliseconds).
    async fn batch_late(
        &self,
        coin: &Coin,
        mut late: Vec<Absorbed>,
        mut partners: Vec<Absorbed>,
        minimum: Usd,
        now: OffsetDateTime,
    ) -> Result<Vec<BatchId>, InfraError> {
        let mut groups: Vec<Vec<Absorbed>> = Vec::new();
        while !late.is_empty() {
            let mut group = vec![late.remove(0)];
            let mut usd = group[0].state.usd;
            while usd < minimum && group.len() < SHARDS_PER_BATCH {
                let next = if late.is_empty() {
                    if partners.is_empty() {
                        break;
                    }
                    partners.remove(0)
                } else {
                    late.remove(0)
                };
                // A sum that cannot be held exactly closes nothing.
                let Some(more) = usd.checked_add(next.state.usd) else { break };
                usd = more;
                group.push(next);
            }
            if usd < minimum {
                break;
            }
            groups.push(group);
        }
        let closed = futures::future::join_all(groups.iter().map(|group| self.close_fresh(coin, group, minimum, now)));
        let mut formed = Vec::new();
        for result in closed.await {
            formed.extend(result?);
        }
        Ok(formed)
    }

    /// Reads `group` again and closes what it holds, if that still reaches
    /// the minimum; a lost race is tried once more.
    async fn close_fresh(
        &self,
        coin: &Coin,
        group: &[Absorbed],
        minimum: Usd,
        now: OffsetDateTime,
    ) -> Result<Option<BatchId>, InfraError> {
        let shards: Vec<u32> = group.iter().map(|a| a.shard).collect();
        for _ in 0..2 {
            let fresh: Vec<Absorbed> = self.read_shards(coin, &shards).await?.iter().filter_map(holding).collect();
            if sum(&fresh) < minimum {
                return Ok(None);
            }
            if let Some(batch) = self.close_shards(coin, &fresh, now).await? {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    /// The shards in use whose pool this sweeper has seen holding money for
    /// `sweep_aged_after` or more (the same pool: its `seq` unchanged). The
    /// sweeper remembers when it first saw each pool hold money.
    fn aged(&self, coin: &Coin, idle: &[Absorbed], written: &[Absorbed]) -> Vec<u32> {
        let Ok(mut seen) = self.swept_seen.lock() else { return Vec::new() };
        let now = Instant::now();
        let holding: Vec<&Absorbed> = idle.iter().chain(written).collect();
        seen.retain(|(c, shard), _| c != coin || holding.iter().any(|h| h.shard == *shard));
        let mut aged = Vec::new();
        for shard in written {
            let first = seen.entry((coin.clone(), shard.shard)).or_insert((shard.state.seq, now));
            if first.0 != shard.state.seq {
                *first = (shard.state.seq, now);
            }
            if now.duration_since(first.1) >= self.sharding.sweep_aged_after {
                aged.push(shard.shard);
            }
        }
        aged
    }

    /// The shards a sweep reads: every one up to `high`; but once nobody can
    /// write those above the count any more (`HIGH_SETTLES_AFTER`), only the
    /// count's and those above it that held money at the last full read
    /// (they can only be emptied since), with a full read every
    /// `FULL_READ_EVERY`. So money left above the count (under the minimum,
    /// it may wait long) does not make every sweep read every shard.
    async fn read_swept_shards(
        &self,
        coin: &Coin,
        record: ShardCount,
        now: OffsetDateTime,
    ) -> Result<Vec<(u32, CachedPool)>, InfraError> {
        let count = record.at(now, self.sharding.shrink_after, self.sharding.max_shards);
        let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let settled = record
            .fell_to_ms(count, self.sharding.shrink_after)
            .is_some_and(|fell| now_ms - fell >= HIGH_SETTLES_AFTER.whole_milliseconds() as i64);
        let known = self.swept_above.lock().ok().and_then(|above| above.get(coin).cloned());
        if settled
            && let Some((read_for, holding, at)) = known
            && read_for == record
            && at.elapsed() < FULL_READ_EVERY
        {
            let shards: Vec<u32> = (0..count.min(record.high)).chain(holding).collect();
            return self.read_shards(coin, &shards).await;
        }
        let all: Vec<u32> = (0..record.high).collect();
        let pools = self.read_shards(coin, &all).await?;
        if settled && let Ok(mut above) = self.swept_above.lock() {
            let holding = pools.iter().filter(|(shard, pool)| *shard >= count && pool.state.count > 0).map(|(s, _)| *s);
            above.insert(coin.clone(), (record, holding.collect(), Instant::now()));
        }
        Ok(pools)
    }

    /// The coin's shard count for a sweep: read at most once per
    /// `count_every` (a coin that never grew costs that one read).
    async fn swept_count(&self, coin: &Coin) -> Result<ShardCount, InfraError> {
        let cached = self.swept_counts.lock().ok().and_then(|counts| counts.get(coin).copied());
        if let Some((record, at)) = cached
            && at.elapsed() < self.sharding.count_every
        {
            return Ok(record);
        }
        let record = self.read_shard_count(coin).await?;
        if let Ok(mut counts) = self.swept_counts.lock() {
            counts.insert(coin.clone(), (record, Instant::now()));
        }
        Ok(record)
    }

    /// Brings `high` down to the count in force, once the count has been
    /// there for `HIGH_SETTLES_AFTER` and every shard above it is empty (as
    /// just read): nobody writes them any more. Conditioned on the record
    /// as read (a growth meanwhile wins) and on no batch forming (whose
    /// shards the sweep must go on reading).
    async fn lower_high(
        &self,
        coin: &Coin,
        record: ShardCount,
        pools: &[(u32, CachedPool)],
        now: OffsetDateTime,
    ) -> Result<(), InfraError> {
        let count = record.at(now, self.sharding.shrink_after, self.sharding.max_shards);
        if record.high <= count {
            return Ok(());
        }
        let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let Some(fell_ms) = record.fell_to_ms(count, self.sharding.shrink_after) else { return Ok(()) };
        let settled = now_ms - fell_ms >= HIGH_SETTLES_AFTER.whole_milliseconds() as i64;
        let empty_above = pools.iter().filter(|(shard, _)| *shard >= count).all(|(_, pool)| pool.state.count == 0);
        if !settled || !empty_above {
            return Ok(());
        }
        let writes = vec![
            Write::Update {
                key: shards_key(coin),
                changes: record.settled_at(count, fell_ms),
                condition: Some(record.unchanged().and(Cond::eq("high", n_int(record.high)))),
            },
            Write::Check { key: forming_key(coin), condition: Cond::not_exists("batch_id") },
        ];
        StoreStats::count(&self.stats.shard_reads);
        let token = ulid::Ulid::new().to_string();
        if matches!(self.transact_idempotent("lower shard high", &token, &writes).await?, Transacted::Committed)
            && let Ok(mut counts) = self.swept_counts.lock()
        {
            counts.remove(coin);
        }
        Ok(())
    }

    /// The batch the coin is gathering, if one is.
    pub(super) async fn forming_batch(&self, coin: &Coin) -> Result<Option<Batch>, InfraError> {
        let Some(record) = self.table.get(forming_key(coin)).await? else { return Ok(None) };
        let Ok(id) = get_s(&record, "batch_id") else { return Ok(None) };
        let id = BatchId::parse(id).map_err(infra("read forming batch"))?;
        Ok(self.read_batch(id).await?.filter(|batch| batch.status == BatchStatus::Forming))
    }

    /// Closes `first` (more shards than one batch transaction takes, the
    /// fullest) into a new `FORMING` batch, recorded on the coin. `None` if
    /// one of them moved, another batch is forming, or `high` changed.
    async fn start_forming(
        &self,
        coin: &Coin,
        first: &[Absorbed],
        record: ShardCount,
        now: OffsetDateTime,
    ) -> Result<Option<Batch>, InfraError> {
        let Some(totals) = totals_of(first) else { return Ok(None) };
        let batch = Batch::forming(coin, pools_of(first), totals, now);
        let mut writes = close_into(coin, first, batch.id, now);
        writes.push(Write::Put { item: batch_item(&batch), condition: Some(Cond::not_exists("PK")) });
        writes.push(Write::Update {
            key: forming_key(coin),
            changes: Changes::new().set("batch_id", s(batch.id.to_string())),
            condition: Some(Cond::not_exists("batch_id")),
        });
        // The sweep that brings `high` down checks there is no batch forming;
        // this checks `high` is still what it read.
        writes.push(Write::Check { key: shards_key(coin), condition: Cond::eq("high", n_int(record.high)) });
        let put = writes.len() - 3;
        Ok(self.sweep_transaction(&writes, put, &|found| is_batch(found, batch.id)).await?.then_some(batch))
    }

    /// Closes more quiet shards into the forming `batch`, the fullest first,
    /// a transaction's worth at a time, until it reaches the minimum (it is
    /// `READY`: its id) or they run out (`None`, it waits for more).
    async fn gather(
        &self,
        coin: &Coin,
        mut batch: Batch,
        idle: &mut Vec<Absorbed>,
        minimum: Usd,
        now: OffsetDateTime,
    ) -> Result<Option<BatchId>, InfraError> {
        loop {
            let mut group = Vec::new();
            let mut usd = batch.usd;
            for shard in idle.iter().take(SHARDS_PER_BATCH) {
                if usd >= minimum {
                    break;
                }
                usd = usd.checked_add(shard.state.usd).ok_or_else(|| InfraError::new("sweep pools", "overflow"))?;
                group.push(*shard);
            }
            if group.is_empty() {
                return Ok(None);
            }
            idle.drain(..group.len());
            let Some(added) = totals_of(&group) else { return Ok(None) };
            let ready = usd >= minimum;
            let mut writes = close_into(coin, &group, batch.id, now);
            let mut pools = batch.pools.clone();
            pools.extend(pools_of(&group));
            let mut changes = Changes::new()
                .add("usd", n(added.usd.value()))
                .add("qty", n(added.qty.value()))
                .add("count", n_int(added.count))
                .set("pools", s(pools_text(&pools)))
                .remove("seq");
            if ready {
                changes = changes.set("status", s(BatchStatus::Ready.as_str()));
            }
            // On its exact totals: each gathering transaction follows the last.
            let exact = Cond::eq("status", s(BatchStatus::Forming.as_str()))
                .and(Cond::eq("usd", n(batch.usd.value())))
                .and(Cond::eq("count", n_int(batch.count)));
            writes.push(Write::Update { key: item::batch_key(batch.id), changes, condition: Some(exact) });
            let appended = writes.len() - 1;
            let (usd_after, count_after) = (usd, batch.count.saturating_add(added.count));
            let ours = |found: &Item| {
                item::batch_of(found).is_ok_and(|b| {
                    b.usd == usd_after && b.count == count_after && pools.iter().all(|p| b.pools.contains(p))
                })
            };
            if ready {
                writes.push(Write::Update {
                    key: forming_key(coin),
                    changes: Changes::new().remove("batch_id"),
                    condition: Some(Cond::eq("batch_id", s(batch.id.to_string()))),
                });
            }
            if !self.sweep_transaction(&writes, appended, &ours).await? {
                return Ok(None);
            }
            if ready {
                return Ok(Some(batch.id));
            }
            let (Some(usd), Some(qty), Some(count)) = (
                batch.usd.checked_add(added.usd),
                BatchQuantity::from_decimal(batch.qty.value() + added.qty.value()),
                batch.count.checked_add(added.count),
            ) else {
                return Ok(None);
            };
            (batch.usd, batch.qty, batch.count, batch.pools) = (usd, qty, count, pools);
        }
    }

    /// Closes `idle` shards with enough of the `written` ones to reach the
    /// minimum. Under steady load a shard in use changes every few
    /// milliseconds, and the read of every shard above is long done: so each
    /// attempt reads just these shards again and closes them on what it
    /// read, a window of two requests, and a lost race is tried again.
    async fn top_up(
        &self,
        coin: &Coin,
        mut idle: Vec<Absorbed>,
        mut written: Vec<Absorbed>,
        minimum: Usd,
        now: OffsetDateTime,
    ) -> Result<Option<BatchId>, InfraError> {
        for attempt in 1..=TOP_UP_ATTEMPTS {
            if attempt > 1 {
                let shards: Vec<u32> = idle.iter().chain(&written).map(|a| a.shard).collect();
                let fresh = self.read_shards(coin, &shards).await?;
                let state = |absorbed: &Absorbed| {
                    fresh.iter().find(|(shard, _)| *shard == absorbed.shard).map(|(_, pool)| *pool)
                };
                // An idle shard written meanwhile is not idle: its writer closes it.
                idle.retain_mut(|absorbed| match state(absorbed) {
                    Some(pool) if pool.exists && pool.state.count > 0 && pool.state.seq == absorbed.state.seq => {
                        absorbed.state = pool.state;
                        true
                    }
                    _ => false,
                });
                written = fresh
                    .iter()
                    .filter(|(shard, _)| written.iter().any(|w| w.shard == *shard))
                    .filter_map(holding)
                    .collect();
                largest_first(&mut written);
            }
            if idle.is_empty() {
                return Ok(None);
            }
            let Some(group) = take_minimum(idle.iter().chain(&written), minimum) else { return Ok(None) };
            if let Some(batch) = self.close_shards(coin, &group, now).await? {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    /// One transaction closing `group`'s pools, each exactly as read, into
    /// a new `READY` batch. `None` when one of them changed meanwhile.
    async fn close_shards(
        &self,
        coin: &Coin,
        group: &[Absorbed],
        now: OffsetDateTime,
    ) -> Result<Option<BatchId>, InfraError> {
        let Some(totals) = totals_of(group) else { return Ok(None) };
        let batch = Batch::ready(coin, pools_of(group), totals, now);
        let mut writes = close_into(coin, group, batch.id, now);
        writes.push(Write::Put { item: batch_item(&batch), condition: Some(Cond::not_exists("PK")) });
        let put = writes.len() - 1;
        Ok(self.sweep_transaction(&writes, put, &|found| is_batch(found, batch.id)).await?.then_some(batch.id))
    }

    /// Sends one of the sweep's transactions: `false` when a condition
    /// failed (a shard moved, the coin's records changed). The write at
    /// `batch` is the batch's: if its condition failed on an item that
    /// `ours` recognizes, an earlier send of this very transaction committed
    /// (its reply was lost, and DynamoDB forgot the token), and it is done:
    /// the batch must be queued, not taken for a lost race.
    async fn sweep_transaction(
        &self,
        writes: &[Write],
        batch: usize,
        ours: &(dyn Fn(&Item) -> bool + Sync),
    ) -> Result<bool, InfraError> {
        let token = ulid::Ulid::new().to_string();
        match self.transact_idempotent("sweep pools", &token, writes).await? {
            Transacted::Committed => Ok(true),
            Transacted::Cancelled(reasons) => match reasons.get(batch) {
                Some(Reason::ConditionFailed(Some(found))) if ours(found) => Ok(true),
                _ if reasons.iter().any(|r| matches!(r, Reason::ConditionFailed(_))) => Ok(false),
                _ => Err(InfraError::new("sweep pools", unexpected(&reasons))),
            },
        }
    }
}

/// A shard's open pool as a sweep may close it, if it holds orders.
pub(super) fn holding((shard, pool): &(u32, CachedPool)) -> Option<Absorbed> {
    (pool.exists && pool.state.count > 0).then_some(Absorbed { shard: *shard, state: pool.state })
}

/// The fullest first; ties by shard, so every sweep orders them alike.
pub(super) fn largest_first(shards: &mut [Absorbed]) {
    shards.sort_by(|a, b| b.state.usd.cmp(&a.state.usd).then(a.shard.cmp(&b.shard)));
}

fn sum(shards: &[Absorbed]) -> Usd {
    shards.iter().fold(Usd::ZERO, |total, shard| total.checked_add(shard.state.usd).unwrap_or(total))
}

/// The first of `shards` that together hold `minimum`, as many as one batch
/// may close at most; `None` when they do not reach it.
pub(super) fn take_minimum<'a>(shards: impl Iterator<Item = &'a Absorbed>, minimum: Usd) -> Option<Vec<Absorbed>> {
    let mut usd = Usd::ZERO;
    let mut group = Vec::new();
    for shard in shards.take(SHARDS_PER_BATCH) {
        usd = usd.checked_add(shard.state.usd)?;
        group.push(*shard);
        if usd >= minimum {
            return Some(group);
        }
    }
    None
}

/// Whether `found` is the batch `id` (a batch id is fresh: if it exists,
/// this sweep wrote it).
fn is_batch(found: &Item, id: BatchId) -> bool {
    item::get_s(found, "batch_id").is_ok_and(|found| found == id.to_string())
}

fn pools_of(group: &[Absorbed]) -> Vec<PoolId> {
    group.iter().map(|s| PoolId { shard: s.shard, seq: s.state.seq }).collect()
}

/// What closing these pools gathers.
pub(super) fn totals_of(group: &[Absorbed]) -> Option<BatchTotals> {
    let usd = group.iter().try_fold(Usd::ZERO, |sum, s| sum.checked_add(s.state.usd))?;
    let qty = group.iter().try_fold(rust_decimal::Decimal::ZERO, |sum, s| exact_sum(sum, s.state.qty))?;
    let count = group.iter().try_fold(0u32, |sum, s| sum.checked_add(s.state.count))?;
    Some(BatchTotals { usd, qty: BatchQuantity::from_decimal(qty)?, count })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use time::OffsetDateTime;

    use super::*;
    use crate::adapters::dynamodb::item::shards_grown;
    use crate::adapters::dynamodb::table::memory::MemoryTable;
    use crate::adapters::dynamodb::table::{ConditionFailed, Item, Page, Query, Table, TableError};
    use crate::adapters::dynamodb::testing::{order_at, usd};
    use crate::audit::audit;
    use crate::domain::{OrderStatus, UserId};
    use crate::ports::{Accounts, Clock, LedgerRecords, Orders, Outbox, Placed};

    struct SetClock(Mutex<OffsetDateTime>);

    impl Clock for SetClock {
        fn now(&self) -> OffsetDateTime {
            *self.0.lock().unwrap()
        }
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    /// `shards` processes, each of which placed one $0.20 order on a shard
    /// of its own and went quiet (Lambda instances nobody calls again).
    async fn crumbs(shards: u32) -> (Arc<dyn Table>, Vec<Placed>) {
        crumbs_of(shards, "0.05").await
    }

    /// The same, each order of `amount` ABAN at $4.
    async fn crumbs_of(shards: u32, amount: &str) -> (Arc<dyn Table>, Vec<Placed>) {
        let table: Arc<dyn Table> = Arc::new(MemoryTable::new());
        let clock: Arc<dyn Clock> = Arc::new(SetClock(Mutex::new(t0())));
        let coin = Coin::from_trusted("ABAN");
        table.update(shards_key(&coin), shards_grown(128, 128, t0()), None).await.unwrap().unwrap();
        let admin = DynamoStore::on(Arc::clone(&table));
        admin.open_account(&UserId::parse("alice").unwrap(), usd("1000")).await.unwrap();
        let mut placed = Vec::new();
        for shard in 0..shards {
            let process = DynamoStore::on(Arc::clone(&table)).with_clock(Arc::clone(&clock));
            {
                let mut turn = process.pools.enter(&coin).await;
                process.shard_count(&mut turn, &coin).await.unwrap();
                turn.home = shard;
            }
            placed.push(process.place(order_at("alice", amount, t0()), usd("10")).await.unwrap());
        }
        (table, placed)
    }

    async fn assert_audit_clean(store: &DynamoStore) {
        let report = audit(&store.ledger().await.unwrap(), usd("10"));
        assert!(report.is_clean(), "{report}");
    }

    fn a_second_later() -> OffsetDateTime {
        t0() + time::Duration::seconds(1)
    }

    /// A coin taken off the price list keeps its pending money: the sweep
    /// takes its coins from the table (every coin that had a pool), not
    /// from the prices.
    #[tokio::test]
    async fn a_coin_taken_off_the_price_list_is_still_swept() {
        use crate::reconcile::{PoolSweep, Reconciler};
        let (table, placed) = crumbs_of(3, "1").await;
        assert!(placed.iter().all(|p| p.formed.is_none()), "$4 on each of three shards");
        let store = Arc::new(DynamoStore::on(table));
        assert_eq!(store.pooled_coins().await.unwrap(), vec![Coin::from_trusted("ABAN")]);
        let (queue, _delivered) = crate::adapters::memory_queue::memory_queue();
        let policy = crate::domain::ResendPolicy {
            ready_after: time::Duration::minutes(1),
            backoff: time::Duration::minutes(1),
            backoff_cap: time::Duration::minutes(10),
            max_attempts: 5,
        };
        let priced_now = PoolSweep {
            coins: vec![Coin::from_trusted("BTC")],
            minimum: usd("10"),
            quiet_for: time::Duration::milliseconds(500),
            every: std::time::Duration::from_secs(1),
        };
        let clock = Arc::new(SetClock(Mutex::new(a_second_later())));
        let reconciler = Reconciler::new(store.clone(), Arc::new(queue), clock, policy).sweeping(priced_now);
        assert_eq!(reconciler.sweep().await.swept.len(), 1, "ABAN's $12 on three quiet shards");
        assert_audit_clean(&store).await;
    }

    /// A hundred quiet shards of $0.20: $20 the coin holds, more shards than
    /// one transaction closes for the minimum. They end in two batches of
    /// $10, fifty shards each, each gathered over two transactions.
    #[tokio::test]
    async fn a_hundred_quiet_shards_of_twenty_cents_end_in_batches() {
        let (table, placed) = crumbs(100).await;
        assert!(placed.iter().all(|p| p.formed.is_none()));
        let sweeper = DynamoStore::on(table);
        let coin = Coin::from_trusted("ABAN");

        let formed =
            sweeper.sweep_pools(&coin, usd("10"), time::Duration::milliseconds(500), a_second_later()).await.unwrap();

        assert_eq!(formed.len(), 2, "$20 in $0.20 crumbs is two batches");
        for id in &formed {
            let batch = sweeper.read_batch(*id).await.unwrap().unwrap();
            assert_eq!(
                (batch.status, batch.usd, batch.count, batch.pools.len()),
                (BatchStatus::Ready, usd("10"), 50, 50)
            );
        }
        let ledger = sweeper.ledger().await.unwrap();
        assert!(ledger.pools.iter().all(|p| p.state.count == 0), "nothing left pending");
        assert_audit_clean(&sweeper).await;
    }

    /// A table whose transactions fail once `allowed` of them went through:
    /// a sweep that stops half way (its Lambda timed out, say).
    struct StopsAfter {
        inner: Arc<dyn Table>,
        allowed: Mutex<u32>,
    }

    #[async_trait::async_trait]
    impl Table for StopsAfter {
        async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
            self.inner.get(key).await
        }
        async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
            self.inner.get_many(keys).await
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
            {
                let mut allowed = self.allowed.lock().unwrap();
                if *allowed == 0 {
                    return Err(TableError::Failed { operation: "transact", source: "the sweep stopped here".into() });
                }
                *allowed -= 1;
            }
            self.inner.transact(writes, token).await
        }
        async fn query(&self, query: Query) -> Result<Page, TableError> {
            self.inner.query(query).await
        }
        async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
            self.inner.scan(start).await
        }
    }

    /// A table that applies the first `lose` transactions and loses their
    /// replies: the sender cannot tell they committed.
    struct LosesReplies {
        inner: Arc<dyn Table>,
        lose: Mutex<u32>,
    }

    #[async_trait::async_trait]
    impl Table for LosesReplies {
        async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
            self.inner.get(key).await
        }
        async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
            self.inner.get_many(keys).await
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
            let result = self.inner.transact(writes, token).await;
            let mut lose = self.lose.lock().unwrap();
            if *lose == 0 {
                return result;
            }
            *lose -= 1;
            Err(TableError::Ambiguous { operation: "transact", source: "the reply was lost".into() })
        }
        async fn query(&self, query: Query) -> Result<Page, TableError> {
            self.inner.query(query).await
        }
        async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
            self.inner.scan(start).await
        }
    }

    /// A sweep whose batch committed but every send of it lost its reply
    /// (the next attempt goes with a new token and finds its own batch):
    /// the batch is reported formed, so it is queued at once, not left for
    /// the reconciler's minute.
    #[tokio::test]
    async fn a_swept_batch_whose_replies_were_lost_is_still_reported_formed() {
        for (shards, amount) in [(3, "1"), (60, "0.05")] {
            let (table, _) = crumbs_of(shards, amount).await;
            let lossy = DynamoStore::on(Arc::new(LosesReplies { inner: Arc::clone(&table), lose: Mutex::new(4) }));
            let coin = Coin::from_trusted("ABAN");

            let formed =
                lossy.sweep_pools(&coin, usd("10"), time::Duration::milliseconds(500), a_second_later()).await.unwrap();

            assert_eq!(formed.len(), 1, "{shards} shards: the batch committed, yet was not reported");
            let batch = lossy.read_batch(formed[0]).await.unwrap().unwrap();
            assert_eq!(batch.status, BatchStatus::Ready);
            assert_audit_clean(&DynamoStore::on(table)).await;
        }
    }

    /// A sweep that stops after the first of a batch's transactions leaves
    /// it `FORMING`, recorded on the coin: its orders are pending, the
    /// ledger is exact, and the next sweep finishes it.
    #[tokio::test]
    async fn a_batch_left_forming_is_finished_by_the_next_sweep() {
        let (table, placed) = crumbs(60).await;
        let coin = Coin::from_trusted("ABAN");
        let stopping = DynamoStore::on(Arc::new(StopsAfter { inner: Arc::clone(&table), allowed: Mutex::new(1) }));
        let quiet = time::Duration::milliseconds(500);
        assert!(stopping.sweep_pools(&coin, usd("10"), quiet, a_second_later()).await.is_err());

        let store = DynamoStore::on(table);
        let forming = store.forming_batch(&coin).await.unwrap().expect("a batch forming");
        assert_eq!((forming.usd, forming.count), (usd("9.6"), 48));
        let alice = UserId::parse("alice").unwrap();
        let first = store.order(&alice, placed[0].order.order.id).await.unwrap().unwrap();
        assert_eq!((first.status, first.batch_id), (OrderStatus::Pending, None), "in a batch still forming");
        // Pending, yet its pool is closed: it cannot be canceled.
        match store.cancel_order(&alice, first.order.id).await {
            Err(crate::ports::CancelError::NotPending(view)) => assert_eq!(view.status, OrderStatus::Pending),
            other => panic!("canceled an order of a batch forming: {other:?}"),
        }
        let report = audit(&store.ledger().await.unwrap(), usd("10"));
        assert!(report.is_clean(), "{report}");
        assert_eq!(
            (report.pending_orders, report.pending_usd.value()),
            (60, Some(usd("12").value())),
            "the forming batch is pending"
        );

        let formed = store.sweep_pools(&coin, usd("10"), quiet, a_second_later()).await.unwrap();

        assert_eq!(formed, vec![forming.id]);
        let batch = store.read_batch(forming.id).await.unwrap().unwrap();
        assert_eq!((batch.status, batch.usd, batch.count), (BatchStatus::Ready, usd("10"), 50));
        assert!(store.forming_batch(&coin).await.unwrap().is_none());
        let first = store.order(&alice, placed[0].order.order.id).await.unwrap().unwrap();
        assert_eq!((first.status, first.batch_id), (OrderStatus::Settling, Some(forming.id)));
        assert_audit_clean(&store).await;
    }

    /// Once a coin's count has folded back and stayed there long enough
    /// that nobody can write the shards above it, and they are empty, the
    /// sweep stops reading them; not before, and not while one holds money.
    #[tokio::test]
    async fn the_sweep_stops_reading_shards_nobody_can_write_any_more() {
        let coin = Coin::from_trusted("ABAN");
        let quiet = time::Duration::milliseconds(500);
        // The count folded back to one shard 14 s after it grew.
        let soon = t0() + time::Duration::minutes(1);
        let later = t0() + time::Duration::minutes(10);
        let high = |store: DynamoStore, at: OffsetDateTime| async move {
            store.sweep_pools(&Coin::from_trusted("ABAN"), usd("10"), quiet, at).await.unwrap();
            store.read_shard_count(&Coin::from_trusted("ABAN")).await.unwrap().high
        };

        // Only shard 0 holds money.
        let (table, _) = crumbs(1).await;
        assert_eq!(high(DynamoStore::on(Arc::clone(&table)), soon).await, 128, "a request sent before may still land");
        assert_eq!(high(DynamoStore::on(Arc::clone(&table)), later).await, 1, "empty above the count, and settled");

        // Shards 1 and 2 hold $0.20 each.
        let (table, _) = crumbs(3).await;
        assert_eq!(high(DynamoStore::on(Arc::clone(&table)), later).await, 128, "shards above the count hold money");
        // $9.40 more on shard 0: the quiet shards hold the minimum together,
        // the sweep batches them, and the one after stops reading above.
        let placed =
            DynamoStore::on(Arc::clone(&table)).place(order_at("alice", "2.35", later), usd("10")).await.unwrap();
        assert!(placed.formed.is_none());
        let sweeper = DynamoStore::on(Arc::clone(&table));
        let formed = sweeper.sweep_pools(&coin, usd("10"), quiet, later + time::Duration::seconds(1)).await.unwrap();
        assert_eq!(formed.len(), 1);
        assert_eq!(high(DynamoStore::on(Arc::clone(&table)), later + time::Duration::seconds(2)).await, 1);
        assert_audit_clean(&DynamoStore::on(table)).await;
    }

    /// A table that counts the keys read by `BatchGetItem`.
    struct CountsKeys {
        inner: Arc<dyn Table>,
        keys: Mutex<usize>,
    }

    #[async_trait::async_trait]
    impl Table for CountsKeys {
        async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
            self.inner.get(key).await
        }
        async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
            *self.keys.lock().unwrap() += keys.len();
            self.inner.get_many(keys).await
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

    /// Money left above a settled count (under the minimum: it may wait
    /// long) keeps `high` up, but a sweep then reads the count's shards and
    /// those few, not every shard the coin ever had; every minute, all.
    #[tokio::test]
    async fn money_left_above_the_count_does_not_make_every_sweep_read_every_shard() {
        let (table, _) = crumbs(3).await;
        let counting = Arc::new(CountsKeys { inner: table, keys: Mutex::new(0) });
        let sweeper = DynamoStore::on(counting.clone());
        let coin = Coin::from_trusted("ABAN");
        let later = t0() + time::Duration::minutes(10);
        let mut read = Vec::new();
        for tick in 0..3 {
            let before = *counting.keys.lock().unwrap();
            let at = later + time::Duration::milliseconds(250 * tick);
            sweeper.sweep_pools(&coin, usd("10"), time::Duration::milliseconds(500), at).await.unwrap();
            read.push(*counting.keys.lock().unwrap() - before);
        }
        assert_eq!(read, vec![128, 3, 3], "every shard once, then the count's (one) and the two holding money");
        assert_eq!(sweeper.read_shard_count(&coin).await.unwrap().high, 128);
    }
}
