//! Placing an order: one `TransactWriteItems` that records the idempotency
//! key, debits the balance, puts the order, and either puts its own batch
//! or changes its coin's pool (joining it, or closing it into a batch).
//!
//! Closing a pool is conditioned on its exact state (`seq`, `count`, `usd`,
//! `qty`): the batch's totals are the ones the condition proved, never a
//! cache's guess. Joining is conditioned on the pool staying under the
//! minimum. So a batch forms exactly once and holds exactly its orders,
//! however many processes race with however stale caches.
//!
//! A coin's pool may be spread over shards: a process places on its home
//! shard; when another process holds it (`TransactionConflict`) it moves to
//! another, and when that keeps happening the coin gets more shards. A batch
//! may close idle shards along with its own (each on its exact state too).

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{
    Item, ItemError, account_key, balance_of, batch_item, coin_entry, get_decimal, get_s, idempotency_key, ms, n,
    n_int, order_item, order_key, order_of, pool_batch_key, pool_key, s,
};
use super::pool_cache::{CachedPool, Turn};
use super::schema::TTL_ATTRIBUTE;
use super::shards::{cached_of, close_pool};
use super::stats::StoreStats;
use super::sweep::close_into;
use super::table::{Changes, Cond, Reason, TableError, Transacted, Write};
use super::{BUSY_AFTER, DynamoStore, MAX_ATTEMPTS, contended, infra, unexpected};
use crate::domain::{
    Absorbed, Batch, BatchId, BatchStatus, Coin, NewOrder, Order, OrderId, OrderStatus, OrderView, Placement, PoolId,
    Usd, UserId, decide_sharded,
};
use crate::ports::{InfraError, PlaceError, Placed};
use crate::telemetry::ErrorChain;

/// How long idempotency keys are kept (the contract asks for 24 hours).
const KEY_RETENTION: time::Duration = time::Duration::days(7);
/// Resends of a transaction whose reply was lost, with the same token.
const RESENDS: u32 = 3;

/// The writes of one placement transaction, and where each is.
pub(super) struct Plan {
    pub(super) writes: Vec<Write>,
    key: Option<usize>,
    pub(super) debit: usize,
    pub(super) order: usize,
    /// The pool writes: the home shard's first, then the absorbed ones'.
    pub(super) pools: Vec<(usize, u32)>,
    /// What the transaction writes, for the reply once it commits.
    pub(super) written: (Order, Option<Batch>),
}

/// What sending a placement transaction came to.
enum Sent {
    Committed,
    Cancelled(Vec<Reason>),
    /// Over the throughput: nothing changed.
    Throttled,
    /// The reply was lost, and reading back found the order: it committed.
    FoundPlaced,
}

/// Conflicts an order met on its home shard, and times it found the home
/// moved since it was seen.
#[derive(Default)]
struct Progress {
    collisions: u32,
    stale_homes: u32,
}

fn condition_failed(reasons: &[Reason], index: usize) -> Option<Option<&Item>> {
    match reasons.get(index) {
        Some(Reason::ConditionFailed(item)) => Some(item.as_ref()),
        _ => None,
    }
}

impl DynamoStore {
    pub(super) async fn place(&self, new: NewOrder, minimum: Usd) -> Result<Placed, PlaceError> {
        if new.cost >= minimum {
            // Its own batch: it never touches the pool, so neither its lane nor its cache.
            return self.place_with(&new, minimum, None).await;
        }
        let mut turn = self.pools.enter(&new.coin).await;
        self.place_with(&new, minimum, Some(&mut turn)).await
    }

    /// Places the order. Once a send of it went unanswered, that send may
    /// still commit (it can reach DynamoDB after a later one was cancelled):
    /// from then on the answer is the order, read back, or an unknown
    /// outcome, never one of the errors that say nothing changed.
    async fn place_with(
        &self,
        new: &NewOrder,
        minimum: Usd,
        mut turn: Option<&mut Turn>,
    ) -> Result<Placed, PlaceError> {
        let mut unanswered = false;
        let result = self.try_placing(new, minimum, turn.as_deref_mut(), &mut unanswered).await;
        match result {
            Err(error) if unanswered && !matches!(error, PlaceError::OutcomeUnknown(_)) => {
                match self.table.get(order_key(&new.user, new.id)).await {
                    Ok(Some(_)) => {
                        if let Some(turn) = turn {
                            turn.shards.clear();
                        }
                        self.already_placed(new).await
                    }
                    Ok(None) => Err(PlaceError::OutcomeUnknown(InfraError::new("place order", error))),
                    Err(read) => Err(PlaceError::OutcomeUnknown(read.into())),
                }
            }
            result => result,
        }
    }

    async fn try_placing(
        &self,
        new: &NewOrder,
        minimum: Usd,
        mut turn: Option<&mut Turn>,
        unanswered: &mut bool,
    ) -> Result<Placed, PlaceError> {
        let mut progress = Progress::default();
        let mut throttled = 0u32;
        let started = tokio::time::Instant::now();
        for attempt in 1.. {
            if attempt > MAX_ATTEMPTS && started.elapsed() >= BUSY_AFTER {
                break;
            }
            let (placement, plan) = self.next_plan(new, minimum, turn.as_deref_mut()).await?;
            // A token per attempt: each attempt is a different request.
            let token = format!("{}-{attempt}", new.id);
            let reasons = match self.send(&plan.writes, &token, new, unanswered).await? {
                Sent::Committed => {
                    if let Some(turn) = turn.as_deref_mut() {
                        turn.note_committed(new, &placement, self.clock.now());
                    }
                    StoreStats::count(&self.stats.orders_placed);
                    let (order, batch) = plan.written;
                    let view = OrderView::new(order, batch.as_ref());
                    return Ok(Placed { order: view, formed: batch.map(|b| b.id), replayed: false });
                }
                Sent::FoundPlaced => {
                    if let Some(turn) = turn.as_deref_mut() {
                        turn.shards.clear();
                    }
                    return self.already_placed(new).await;
                }
                Sent::Throttled => {
                    throttled += 1;
                    StoreStats::count(&self.stats.throttled);
                    self.backoff(attempt).await;
                    continue;
                }
                Sent::Cancelled(reasons) => reasons,
            };
            // Why it was cancelled, most decisive first.
            if condition_failed(&reasons, plan.order).is_some() {
                // Our own order exists: an earlier send of it committed.
                if let Some(turn) = turn.as_deref_mut() {
                    turn.shards.clear();
                }
                return self.already_placed(new).await;
            }
            if let Some(record) = plan.key.and_then(|i| condition_failed(&reasons, i)) {
                return self.replay(new, record).await;
            }
            if let Some(account) = condition_failed(&reasons, plan.debit) {
                let balance = balance_of(account).map_err(infra("read account"))?;
                return Err(PlaceError::InsufficientFunds { balance, cost: new.cost });
            }
            let Some(turn) = turn.as_deref_mut() else {
                if contended(&reasons) {
                    StoreStats::count(&self.stats.conflicts);
                    self.backoff(attempt).await;
                    continue;
                }
                return Err(InfraError::new("place order", unexpected(&reasons)).into());
            };
            self.after_pool_cancellation(new, turn, &plan, &reasons, &mut progress, attempt).await?;
        }
        StoreStats::count(&self.stats.busy);
        tracing::warn!(
            order_id = %new.id, coin = %new.coin, elapsed_ms = started.elapsed().as_millis() as u64,
            conflicts_on_its_shard = progress.collisions, stale_shard = progress.stale_homes, throttled,
            "order answered busy: its transaction kept being cancelled by others (conflicts), finding its shard moved, or throttled"
        );
        Err(PlaceError::Busy)
    }

    /// Where the order goes now, and the transaction that puts it there:
    /// its own batch, or its home shard's pool as the cache has it (with
    /// the shards it may carry along).
    async fn next_plan(
        &self,
        new: &NewOrder,
        minimum: Usd,
        turn: Option<&mut Turn>,
    ) -> Result<(Placement, Plan), PlaceError> {
        Ok(match turn {
            None => {
                let plan = self.plan(new, 0, None, &Placement::OwnBatch, minimum);
                (Placement::OwnBatch, plan)
            }
            Some(turn) => {
                let first = turn.shard_count.is_none();
                let count = self.shard_count(turn, &new.coin).await?;
                if turn.home >= count || (first && count > 1) {
                    // Spread out from the start: a new process picks any shard.
                    let home = self.random_below(count);
                    turn.move_home(home);
                }
                let own = self.pool_for(turn, &new.coin).await?;
                let carry = turn.carry(self.sharding.carry_at_most);
                let placement = decide_sharded(&own.state, &carry, new.cost, new.amount, minimum)?;
                let plan = self.plan(new, turn.home, Some(&own), &placement, minimum);
                (placement, plan)
            }
        })
    }

    /// A placement cancelled over its pool shards: what the cancellation
    /// says of each is remembered (a shard moved, held by someone, left
    /// behind), the home moves or the coin grows when that keeps happening,
    /// and the order is decided again. An error when nothing explains it.
    async fn after_pool_cancellation(
        &self,
        new: &NewOrder,
        turn: &mut Turn,
        plan: &Plan,
        reasons: &[Reason],
        progress: &mut Progress,
        attempt: u32,
    ) -> Result<(), PlaceError> {
        // A pool moved since it was read: remember it as it is, decide
        // again. A shard left behind that moved is someone else's now.
        let mut stale = false;
        let mut home_moved = false;
        for &(index, shard) in &plan.pools {
            if let Some(current) = condition_failed(reasons, index) {
                stale = true;
                if shard == turn.home {
                    home_moved = true;
                    let pool = match current {
                        Some(item) => cached_of(item)?,
                        None => CachedPool::default(),
                    };
                    turn.remember(shard, pool);
                } else {
                    turn.let_go(shard);
                }
            }
        }
        let conflicted = |index: usize| matches!(reasons.get(index), Some(Reason::Conflict));
        let home_held = plan.pools.first().is_some_and(|&(index, _)| conflicted(index));
        if home_held {
            // Another process holds this process's home shard right now:
            // a collision. Move to another shard; if there is none, or
            // moving keeps colliding, the coin needs more.
            progress.collisions += 1;
            StoreStats::count(&self.stats.conflicts);
            // Others may have grown the count meanwhile.
            let mut count = self.fresh_shard_count(turn, &new.coin).await?;
            if count == 1 || progress.collisions >= self.sharding.grow_after {
                count = self.grow_shards(turn, &new.coin, count).await?;
            }
            let next = self.pick_shard(count, turn.home);
            turn.move_home(next);
            if progress.collisions >= 2 {
                self.backoff(attempt).await;
            }
            return Ok(());
        }
        if home_moved {
            // Another process wrote the home shard since this one saw
            // it: the cancellation returned it as it is, so the next
            // attempt decides on that. Not a reason for more shards:
            // when a coin's orders come through more processes than it
            // has shards (many coins, requests spread over every
            // instance), shards are shared, and more of them would only
            // fill each one slower. Twice in one order: try another.
            // Three times: the shard is written faster than this process
            // can follow (where the table reports no conflicts, as the
            // emulators do, that is the only sign), and the coin grows.
            progress.stale_homes += 1;
            StoreStats::count(&self.stats.stale_pool_retries);
            if progress.stale_homes >= 2 {
                let mut count = self.shard_count(turn, &new.coin).await?;
                if progress.stale_homes >= 3 {
                    count = self.grow_shards(turn, &new.coin, count).await?;
                }
                let next = self.pick_shard(count, turn.home);
                turn.move_home(next);
            }
            return Ok(());
        }
        if stale {
            // Only a shard left behind moved: someone else's now.
            StoreStats::count(&self.stats.stale_pool_retries);
            return Ok(());
        }
        let mut taken = false;
        for &(index, shard) in plan.pools.iter().skip(1) {
            if conflicted(index) {
                // Someone is on a shard this process left: theirs now.
                taken = true;
                turn.let_go(shard);
            }
        }
        if taken {
            StoreStats::count(&self.stats.conflicts);
            return Ok(());
        }
        if contended(reasons) {
            StoreStats::count(&self.stats.conflicts);
            self.backoff(attempt).await;
            return Ok(());
        }
        Err(InfraError::new("place order", unexpected(reasons)).into())
    }

    /// The home shard's pool as the cache has it, read when it has nothing.
    async fn pool_for(&self, turn: &mut Turn, coin: &Coin) -> Result<CachedPool, InfraError> {
        let home = turn.home;
        if let Some(pool) = turn.cached(home) {
            return Ok(pool);
        }
        StoreStats::count(&self.stats.pool_reads);
        let pool = match self.table.get(pool_key(coin, home)).await? {
            Some(item) => cached_of(&item)?,
            None => CachedPool::default(),
        };
        turn.remember(home, pool);
        Ok(pool)
    }

    pub(super) fn plan(
        &self,
        new: &NewOrder,
        home: u32,
        pool: Option<&CachedPool>,
        placement: &Placement,
        minimum: Usd,
    ) -> Plan {
        let now = self.clock.now();
        let mut writes = Vec::with_capacity(6);
        let key = new.idempotency_key.as_ref().map(|key| {
            let mut record = idempotency_key(&new.user, key.as_str());
            record.insert("order_id".into(), s(new.id.to_string()));
            record.insert("coin".into(), s(new.coin.as_str()));
            record.insert("amount".into(), n(new.amount.value()));
            let expires = (new.created_at + KEY_RETENTION).unix_timestamp();
            record.insert(TTL_ATTRIBUTE.into(), AttributeValue::N(expires.to_string()));
            writes.push(Write::Put { item: record, condition: Some(Cond::not_exists("PK")) });
            writes.len() - 1
        });

        writes.push(Write::Update {
            key: account_key(&new.user),
            changes: Changes::new().add("balance_usd", n(-new.cost.value())),
            condition: Some(Cond::ge("balance_usd", n(new.cost.value()))),
        });
        let debit = writes.len() - 1;

        let (order, batch) = new.placed(home, placement);
        writes.push(Write::Put {
            item: order_item(&order, batch.as_ref().map(|b| b.id)),
            condition: Some(Cond::not_exists("PK")),
        });
        let order_index = writes.len() - 1;

        let mut pools = Vec::new();
        match (placement, pool, batch.as_ref()) {
            (Placement::Join { seq }, Some(pool), _) => {
                let add = Changes::new()
                    .add("usd", n(new.cost.value()))
                    .add("qty", n(new.amount.value()))
                    .add("count", n_int(1u64))
                    .set("updated_ms", ms(now));
                let (changes, condition) = if pool.exists {
                    let limit = minimum.value() - new.cost.value();
                    (add, Cond::eq("seq", n_int(*seq)).and(Cond::lt("usd", n(limit))))
                } else {
                    (add.set("seq", n_int(*seq)), Cond::not_exists("PK"))
                };
                writes.push(Write::Update { key: pool_key(&new.coin, home), changes, condition: Some(condition) });
                pools.push((writes.len() - 1, home));
                if !pool.exists && home == 0 {
                    writes.push(Write::Put { item: coin_entry(&new.coin), condition: None });
                }
            }
            (Placement::Cross { absorbed, .. }, Some(pool), Some(formed)) => {
                // The batch's totals come from these exact states: the
                // conditions prove them. The home shard's write comes first.
                let batch_id = formed.id;
                let mut closing = Vec::with_capacity(absorbed.len() + 1);
                if pool.exists {
                    closing.push(Absorbed { shard: home, state: pool.state });
                } else {
                    // A home shard with no item yet is created closed: the
                    // shards carried along reach the minimum.
                    let (changes, _) = close_pool(&pool.state, now);
                    let condition = Some(Cond::not_exists("PK"));
                    writes.push(Write::Update { key: pool_key(&new.coin, home), changes, condition });
                    pools.push((writes.len() - 1, home));
                    let mut pointer = pool_batch_key(&new.coin, PoolId { shard: home, seq: pool.state.seq });
                    pointer.insert("batch_id".into(), s(batch_id.to_string()));
                    writes.push(Write::Put { item: pointer, condition: Some(Cond::not_exists("PK")) });
                    if home == 0 {
                        writes.push(Write::Put { item: coin_entry(&new.coin), condition: None });
                    }
                }
                closing.extend(absorbed.iter().copied());
                let first = writes.len();
                writes.extend(close_into(&new.coin, &closing, batch_id, now));
                // `close_into` writes each pool, then its pointer.
                pools.extend(closing.iter().enumerate().map(|(k, shard)| (first + 2 * k, shard.shard)));
            }
            _ => {}
        }

        if let Some(batch) = &batch {
            writes.push(Write::Put { item: batch_item(batch), condition: Some(Cond::not_exists("PK")) });
        }
        Plan { writes, key, debit, order: order_index, pools, written: (order, batch) }
    }

    /// Sends one placement transaction. A reply lost in transit is resent
    /// with the same client request token: DynamoDB answers a token it has
    /// committed with success and applies nothing again, so the answer to a
    /// resend is the answer to the lost send (and were the token forgotten,
    /// the order's own condition would say it exists). If no answer comes,
    /// the order is read back: it is this request's alone, so finding it
    /// means the transaction committed.
    async fn send(
        &self,
        writes: &[Write],
        token: &str,
        new: &NewOrder,
        unanswered: &mut bool,
    ) -> Result<Sent, PlaceError> {
        let mut lost: Option<TableError> = None;
        for resend in 0..=RESENDS {
            StoreStats::count(&self.stats.transactions);
            StoreStats::count(&self.stats.placement_transactions);
            match self.table.transact(writes.to_vec(), token).await {
                Ok(Transacted::Committed) => return Ok(Sent::Committed),
                Ok(Transacted::Cancelled(reasons)) => return Ok(Sent::Cancelled(reasons)),
                Err(TableError::Throttled { .. }) if lost.is_none() => return Ok(Sent::Throttled),
                Err(error @ TableError::Failed { .. }) if lost.is_none() => {
                    return Err(PlaceError::Infra(error.into()));
                }
                // No answer, or no answer to a resend: the first may have committed.
                Err(error) => {
                    *unanswered = true;
                    if lost.is_none() {
                        StoreStats::count(&self.stats.lost_replies);
                        tracing::warn!(error = %ErrorChain(&error), order_id = %new.id, "lost the reply of a placement; resending it");
                    }
                    lost = Some(error);
                    self.backoff(resend + 1).await;
                }
            }
        }
        let lost = lost.map(InfraError::from).unwrap_or_else(|| InfraError::new("place order", "no answer"));
        self.read_back(new, lost).await
    }

    /// Whether an order whose placement got no answer is there.
    async fn read_back(&self, new: &NewOrder, lost: InfraError) -> Result<Sent, PlaceError> {
        match self.table.get(order_key(&new.user, new.id)).await {
            Ok(Some(_)) => Ok(Sent::FoundPlaced),
            Ok(None) | Err(_) => Err(PlaceError::OutcomeUnknown(lost)),
        }
    }

    /// The order an earlier send of this same request committed. It is
    /// placed: failing to read it back is an unknown outcome to the client,
    /// never "nothing changed".
    async fn already_placed(&self, new: &NewOrder) -> Result<Placed, PlaceError> {
        let (order, formed) = self.placed_order(&new.user, new.id).await.map_err(PlaceError::OutcomeUnknown)?;
        StoreStats::count(&self.stats.orders_placed);
        Ok(Placed { order, formed, replayed: false })
    }

    /// The order an earlier request with this key placed. Its record exists,
    /// so its order does: failing to read it is an unknown outcome too.
    async fn replay(&self, new: &NewOrder, record: Option<&Item>) -> Result<Placed, PlaceError> {
        fn fields(r: &Item) -> Result<(&str, rust_decimal::Decimal, &str), ItemError> {
            Ok((get_s(r, "coin")?, get_decimal(r, "amount")?, get_s(r, "order_id")?))
        }
        let (coin, amount, order_id) = record
            .ok_or_else(|| InfraError::new("place order", "idempotency record not returned"))
            .and_then(|r| fields(r).map_err(infra("read idempotency record")))
            .map_err(PlaceError::OutcomeUnknown)?;
        if coin != new.coin.as_str() || amount != new.amount.value() {
            return Err(PlaceError::IdempotencyKeyReused);
        }
        let order_id =
            OrderId::parse(order_id).map_err(|e| PlaceError::OutcomeUnknown(InfraError::new("place order", e)))?;
        let (order, formed) = self.placed_order(&new.user, order_id).await.map_err(PlaceError::OutcomeUnknown)?;
        Ok(Placed { order, formed, replayed: true })
    }

    /// A placed order, and the batch it formed if that batch is still
    /// `READY`: the caller sends it to the settle queue (again: harmless),
    /// so that a retry never leaves it waiting for the reconciler.
    async fn placed_order(&self, user: &UserId, id: OrderId) -> Result<(OrderView, Option<BatchId>), InfraError> {
        let item = self
            .table
            .get(order_key(user, id))
            .await?
            .ok_or_else(|| InfraError::new("place order", "a placed order that is not there"))?;
        let (order, formed) = order_of(&item).map_err(infra("read order"))?;
        let view = self.view(order).await?;
        let ready = view.batch_id.is_some_and(|b| Some(b) == formed) && view.status == OrderStatus::Settling;
        let still_ready = match (ready, formed) {
            (true, Some(batch)) => self.read_batch(batch).await?.is_some_and(|b| b.status == BatchStatus::Ready),
            _ => false,
        };
        Ok((view, formed.filter(|_| still_ready)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use rust_decimal::Decimal;
    use time::OffsetDateTime;

    use super::*;
    use crate::adapters::dynamodb::testing::{order_at, usd};
    use crate::audit::audit;
    use crate::domain::{Coin, PoolState, UserId};
    use crate::ports::{Accounts, LedgerRecords};

    fn order(user: &str, amount: &str) -> NewOrder {
        order_at(user, amount, OffsetDateTime::now_utc())
    }

    /// The memory table, yielding before every request as a network would:
    /// concurrent placements interleave at every step.
    struct Yielding(crate::adapters::dynamodb::table::memory::MemoryTable);

    #[async_trait::async_trait]
    impl crate::adapters::dynamodb::table::Table for Yielding {
        async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
            tokio::task::yield_now().await;
            self.0.get(key).await
        }
        async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
            tokio::task::yield_now().await;
            self.0.get_many(keys).await
        }
        async fn put(&self, item: Item, c: Option<Cond>) -> Result<Result<(), Option<Item>>, TableError> {
            tokio::task::yield_now().await;
            self.0.put(item, c).await
        }
        async fn update(
            &self,
            key: Item,
            changes: Changes,
            c: Option<Cond>,
        ) -> Result<Result<Item, Option<Item>>, TableError> {
            tokio::task::yield_now().await;
            self.0.update(key, changes, c).await
        }
        async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
            tokio::task::yield_now().await;
            let result = self.0.transact(writes, token).await;
            tokio::task::yield_now().await;
            result
        }
        async fn query(
            &self,
            q: crate::adapters::dynamodb::table::Query,
        ) -> Result<crate::adapters::dynamodb::table::Page, TableError> {
            tokio::task::yield_now().await;
            self.0.query(q).await
        }
        async fn scan(&self, start: Option<Item>) -> Result<crate::adapters::dynamodb::table::Page, TableError> {
            tokio::task::yield_now().await;
            self.0.scan(start).await
        }
    }

    async fn store_with(users: &[&str]) -> DynamoStore {
        let store = DynamoStore::on(Arc::new(Yielding(Default::default())));
        for user in users {
            store.open_account(&UserId::parse(user).unwrap(), usd("1000")).await.unwrap();
        }
        store
    }

    async fn assert_audit_clean(store: &DynamoStore) {
        let report = audit(&store.ledger().await.unwrap(), usd("10"));
        assert!(report.is_clean(), "{report}");
    }

    /// A cache whose count is right but whose dollars are not (another
    /// process's orders of another size, a bug): the order it makes look
    /// like it crosses must not close the pool on those totals.
    #[tokio::test]
    async fn a_pool_closes_only_on_its_exact_totals_whatever_the_cache_says() {
        let store = store_with(&["alice", "bob"]).await;
        store.place(order("alice", "1"), usd("10")).await.unwrap(); // pool: 1 order, $4
        store.place(order("alice", "0.25"), usd("10")).await.unwrap(); // pool: 2 orders, $5
        {
            let mut turn = store.pools.enter(&Coin::from_trusted("ABAN")).await;
            let wrong = PoolState { seq: 0, usd: usd("8"), qty: Decimal::from(2), count: 2 };
            turn.remember(0, CachedPool { state: wrong, exists: true, written_at: None });
        }

        // $3 more: $11 by the cache, $8 in truth.
        let placed = store.place(order("bob", "0.75"), usd("10")).await.unwrap();

        assert_eq!(placed.formed, None, "a batch formed at $8");
        assert_audit_clean(&store).await;
        assert_eq!(store.stats().stale_pool_retries, 1);
    }

    /// Within one process, a coin's pooled orders take turns: none of them
    /// ever decides from a state another one is changing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_process_takes_turns_on_a_coin_so_its_orders_never_retry() {
        let store = Arc::new(store_with(&["alice"]).await);
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = Arc::clone(&store);
                let amount = ["0.25", "0.5", "1", "1.75"][i % 4];
                tokio::spawn(async move { store.place(order("alice", amount), usd("10")).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = store.stats();
        assert_eq!(
            (stats.orders_placed, stats.placement_transactions, stats.stale_pool_retries),
            (40, 40, 0),
            "{stats:?}"
        );
        assert_audit_clean(&store).await;
    }

    /// A process that moved off a shard (another process collided with it
    /// there) takes the orders it left along in its next batch, even when
    /// its new shard has no item yet.
    #[tokio::test]
    async fn a_process_that_moved_takes_the_orders_it_left_along() {
        let store = store_with(&["alice"]).await;
        let coin = Coin::from_trusted("ABAN");
        let count = super::super::item::shards_grown(4, 4, OffsetDateTime::now_utc());
        store.table.update(super::super::item::shards_key(&coin), count, None).await.unwrap().unwrap();
        store.place(order("alice", "1"), usd("10")).await.unwrap();
        store.place(order("alice", "1"), usd("10")).await.unwrap(); // $8 on its home shard
        let left = {
            let mut turn = store.pools.enter(&coin).await;
            let left = turn.home;
            turn.move_home((left + 1) % 4);
            left
        };

        let placed = store.place(order("alice", "1"), usd("10")).await.unwrap();

        let batch = store.read_batch(placed.formed.expect("$4 + the $8 left behind")).await.unwrap().unwrap();
        let pools: Vec<u32> = batch.pools.iter().map(|p| p.shard).collect();
        assert_eq!(pools, vec![(left + 1) % 4, left]);
        assert_eq!((batch.usd, batch.count), (usd("12"), 3));
        assert_audit_clean(&store).await;
        assert_eq!(store.stats().busy, 0);
    }

    /// Orders of the minimum or more never wait for the pool's turn, and
    /// never touch what the pooled orders believe of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn orders_bought_alone_leave_the_pool_and_its_cache_alone() {
        let store = Arc::new(store_with(&["alice", "bob"]).await);
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = Arc::clone(&store);
                let (user, amount) = if i % 2 == 0 { ("alice", "0.5") } else { ("bob", "3") };
                tokio::spawn(async move { store.place(order(user, amount), usd("10")).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = store.stats();
        assert_eq!((stats.placement_transactions, stats.stale_pool_retries, stats.pool_reads), (40, 0, 1), "{stats:?}");
        assert_audit_clean(&store).await;
    }
}
