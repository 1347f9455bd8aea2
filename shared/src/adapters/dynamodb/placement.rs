//! Placing an order: one `TransactWriteItems` that records the idempotency
//! key, debits the balance, puts the order, and either puts its own batch
//! or writes its shard's pool: joining it (on the condition that it stays
//! under the minimum) or closing it into a batch (on the condition that it
//! is still at the version the decision was made from: the batch's totals
//! are the ones that condition proves). Where the order goes is
//! `domain::pooling::placement`'s decision; this module makes it stick, and
//! resolves lost replies.
//!
//! A coin's pool may be spread over shards: a process places on its home
//! shard (any of them at first); when another process holds it
//! (`TransactionConflict`) it moves to another, and when that keeps
//! happening the coin gets more shards (`domain::pooling::shards`).

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{
    self, Item, ItemError, account_key, balance_of, batch_item, coin_entry, get_decimal, get_s, idempotency_key,
    member_attribute, ms, n, n_int, order_item, order_key, pool_key, s,
};
use super::lanes::Turn;
use super::pools::{close_writes, pool_ids};
use super::schema::TTL_ATTRIBUTE;
use super::stats::StoreStats;
use super::table::{Changes, Cond, Reason, TableError, Transacted, Write};
use super::{BUSY_AFTER, DynamoStore, MAX_ATTEMPTS, contended, infra, unexpected};
use crate::domain::pooling::placement::{decide, join_limit};
use crate::domain::pooling::shards::another_shard;
use crate::domain::{
    Batch, BatchId, BatchStatus, Member, Membership, NewOrder, Order, OrderId, OrderStatus, OrderView, Placement,
    ShardPool, Usd, UserId,
};
use crate::ports::{InfraError, PlaceError, Placed};
use crate::telemetry::ErrorChain;

/// How long idempotency keys are kept (the contract asks for 24 hours).
const KEY_RETENTION: time::Duration = time::Duration::days(7);
/// Resends of a transaction whose reply was lost, with the same token.
const RESENDS: u32 = 3;
/// How often a process reads a coin's shard count again: a count that fell
/// below its home moves it down; a count read this long ago is otherwise
/// fine (a process learns of growth from its own conflicts, and money left
/// above the count is swept).
const COUNT_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);
/// A conflict reads the count again unless it was read this recently.
const COUNT_ON_CONFLICT: std::time::Duration = std::time::Duration::from_millis(50);
/// Times in a row one order finds its shard changed before it takes the
/// shard for crowded and moves.
const STALE_IS_CROWDED: u32 = 3;

/// The writes of one placement transaction, and where each is.
pub(super) struct Plan {
    pub(super) writes: Vec<Write>,
    key: Option<usize>,
    pub(super) debit: usize,
    pub(super) order: usize,
    /// The shard's write (a join, or its close), when the order pools.
    pub(super) pool: Option<(usize, u32)>,
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

/// Conflicts an order met on its shards in a row, and times its shard was
/// not as the decision took it.
#[derive(Default)]
struct Progress {
    collisions: u32,
    moved: u32,
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
            // Its own batch: it never touches a pool, so neither its lane.
            return self.place_with(&new, minimum, None).await;
        }
        let mut turn = self.lanes.enter(&new.coin).await;
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
                            turn.known = None;
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
                        turn.note_committed(new, &placement);
                    }
                    StoreStats::count(&self.stats.orders_placed);
                    let (order, batch) = plan.written;
                    let view = OrderView::new(order, batch.as_ref());
                    return Ok(Placed { order: view, formed: batch.map(|b| b.id), replayed: false });
                }
                Sent::FoundPlaced => {
                    if let Some(turn) = turn.as_deref_mut() {
                        turn.known = None;
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
                    turn.known = None;
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
            match (turn.as_deref_mut(), plan.pool) {
                (Some(turn), Some((index, shard))) => {
                    self.after_pool_cancellation(new, turn, (index, shard), &reasons, &mut progress, attempt).await?
                }
                _ if contended(&reasons) => {
                    StoreStats::count(&self.stats.conflicts);
                    self.backoff(attempt).await;
                }
                _ => return Err(InfraError::new("place order", unexpected(&reasons)).into()),
            }
        }
        StoreStats::count(&self.stats.busy);
        tracing::warn!(
            order_id = %new.id, coin = %new.coin, elapsed_ms = started.elapsed().as_millis() as u64,
            conflicts_on_its_shard = progress.collisions, shard_moved = progress.moved, throttled,
            "order answered busy: its transaction kept being cancelled by others (conflicts), finding its shard moved, or throttled"
        );
        Err(PlaceError::Busy)
    }

    /// Where the order goes now, and the transaction that puts it there:
    /// its own batch, or its home shard's pool as last seen.
    async fn next_plan(
        &self,
        new: &NewOrder,
        minimum: Usd,
        turn: Option<&mut Turn>,
    ) -> Result<(Placement, Plan), PlaceError> {
        let Some(turn) = turn else {
            return Ok((Placement::OwnBatch, self.plan(new, None, &Placement::OwnBatch, minimum)?));
        };
        let home = self.home(turn, &new.coin).await?;
        if turn.known.is_none() {
            // A shard moved to, or one this process lost track of (a reply it
            // lost): read, so that the transaction is decided on the shard as
            // it is and rarely cancelled (a cancellation whose reply is lost
            // is an outcome nobody can tell).
            StoreStats::count(&self.stats.pool_reads);
            let read = self.pools_of(&new.coin, &[home]).await?.pop().unwrap_or_else(|| ShardPool::empty(home));
            turn.saw(read);
        }
        let known = turn.known.clone();
        let placement = decide(known.as_ref(), new.cost, new.amount, minimum)?;
        let plan = self.plan(new, Some((home, known.as_ref())), &placement, minimum)?;
        Ok((placement, plan))
    }

    /// The shard this process places the coin on, and what it knows of
    /// it. At first: the coin's count and its shard 0 in one read (a coin
    /// that never grew needs no other), then any of its shards, read once.
    /// Moved when the count, read again every `COUNT_REFRESH`, has fallen
    /// below it.
    async fn home(&self, turn: &mut Turn, coin: &crate::domain::Coin) -> Result<u32, InfraError> {
        if turn.home.is_none() {
            let (record, first) = self.first_look(coin).await?;
            turn.count = Some((record, tokio::time::Instant::now()));
            let count = if self.shard_rules.max <= 1 { 1 } else { record.now(&self.shard_rules) };
            let home = self.random_below(count);
            turn.move_home(home);
            let known = match home {
                0 => first,
                shard => self.pools_of(coin, &[shard]).await?.pop().unwrap_or_else(|| ShardPool::empty(shard)),
            };
            turn.saw(known);
            return Ok(home);
        }
        let home = turn.home.unwrap_or(0);
        if self.shard_rules.max > 1 && turn.count.is_none_or(|(_, at)| at.elapsed() >= COUNT_REFRESH) {
            let record = self.read_shard_count(coin).await?;
            turn.count = Some((record, tokio::time::Instant::now()));
            let count = record.now(&self.shard_rules);
            if home >= count {
                // Folded back below this shard: move down.
                turn.move_home(self.random_below(count));
            }
        }
        Ok(turn.home.unwrap_or(home))
    }

    /// A placement cancelled over its shard: a shard not as the decision
    /// took it is remembered as it is (the next attempt decides on that); a
    /// shard held by another transaction is a collision: the process moves
    /// to another, and grows the coin when collisions keep coming.
    async fn after_pool_cancellation(
        &self,
        new: &NewOrder,
        turn: &mut Turn,
        (index, shard): (usize, u32),
        reasons: &[Reason],
        progress: &mut Progress,
        attempt: u32,
    ) -> Result<(), PlaceError> {
        if let Some(current) = condition_failed(reasons, index) {
            progress.moved += 1;
            StoreStats::count(&self.stats.stale_pool_retries);
            turn.saw(Self::pool_returned(shard, current)?);
            // A shard that keeps changing under one order is as crowded as
            // one whose writers cancel each other: a store that serializes
            // transactions (an emulator, a quiet table) reports a crowd so.
            if progress.moved.is_multiple_of(STALE_IS_CROWDED) {
                self.move_off_crowded(new, turn, shard, progress, attempt).await?;
            }
            return Ok(());
        }
        if matches!(reasons.get(index), Some(Reason::Conflict)) {
            StoreStats::count(&self.stats.conflicts);
            return self.move_off_crowded(new, turn, shard, progress, attempt).await;
        }
        if contended(reasons) {
            StoreStats::count(&self.stats.conflicts);
            self.backoff(attempt).await;
            return Ok(());
        }
        Err(InfraError::new("place order", unexpected(reasons)).into())
    }

    /// A collision on `shard`: the process moves to another of the coin's
    /// shards, growing the coin when collisions keep coming.
    async fn move_off_crowded(
        &self,
        new: &NewOrder,
        turn: &mut Turn,
        shard: u32,
        progress: &mut Progress,
        attempt: u32,
    ) -> Result<(), PlaceError> {
        progress.collisions += 1;
        let fresh = turn.count.is_some_and(|(_, at)| at.elapsed() < COUNT_ON_CONFLICT);
        let mut record = match turn.count {
            Some((record, _)) if fresh => record,
            _ => self.read_shard_count(&new.coin).await?,
        };
        let mut count = record.now(&self.shard_rules);
        if count == 1 || progress.collisions >= self.shard_rules.grow_after {
            record = self.grow_shards(&new.coin, &record, count).await?;
            count = record.now(&self.shard_rules);
        }
        turn.count = Some((record, tokio::time::Instant::now()));
        let next = another_shard(count, shard, self.random_below(count.saturating_sub(1).max(1)));
        turn.move_home(next);
        if progress.collisions >= 2 {
            self.backoff(attempt).await;
        }
        Ok(())
    }

    /// The transaction that places `new` as `placement` says, on `home`
    /// (its shard and that shard's pool as last seen) when it pools.
    pub(super) fn plan(
        &self,
        new: &NewOrder,
        home: Option<(u32, Option<&ShardPool>)>,
        placement: &Placement,
        minimum: Usd,
    ) -> Result<Plan, PlaceError> {
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

        let (shard, known) = home.unwrap_or((0, None));
        let closed = known.filter(|_| matches!(placement, Placement::Cross { .. }));
        let pools = closed
            .map(|pool| pool_ids(std::slice::from_ref(pool)))
            .unwrap_or_else(|| vec![crate::domain::PoolId { shard, seq: 0 }]);
        let (order, batch) = new.placed(placement, pools, new.created_at);
        writes.push(Write::Put { item: order_item(&order), condition: Some(Cond::not_exists("PK")) });
        let order_index = writes.len() - 1;

        let mut pool = None;
        match (placement, &batch) {
            (Placement::OwnBatch, _) => {}
            (Placement::Join, _) => {
                let member = Member { order: new.id, user: new.user.clone(), placed: new.created_at };
                let changes = Changes::new()
                    .add("usd", n(new.cost.value()))
                    .add("qty", n(new.amount.value()))
                    .add("count", n_int(1u64))
                    .add("version", n_int(1u64))
                    .set(member_attribute(new.id), item::member_value(&member))
                    .set("updated_ms", ms(now));
                let under = Cond::lt("usd", n(join_limit(minimum, new.cost)));
                // A shard seen never written is created (with the coin's
                // entry, for its first shard); one not seen is taken as there.
                let created = known.is_some_and(|pool| pool.version == 0);
                let condition = match known {
                    Some(_) if created => Cond::not_exists(item::PK),
                    _ => Cond::exists(item::PK).and(under),
                };
                writes.push(Write::Update { key: pool_key(&new.coin, shard), changes, condition: Some(condition) });
                pool = Some((writes.len() - 1, shard));
                if created && shard == 0 {
                    writes.push(Write::Put { item: coin_entry(&new.coin), condition: None });
                }
            }
            (Placement::Cross { .. }, Some(formed)) => {
                let Some(known) = known else {
                    return Err(InfraError::new("place order", "a close decided without its shard").into());
                };
                let member = Member { order: new.id, user: new.user.clone(), placed: new.created_at };
                let closer = Some((&member, new.cost, new.amount));
                let closed_ms = item::closed_ms(formed);
                let closing = close_writes(&new.coin, std::slice::from_ref(known), formed.id, closed_ms, now, closer)?;
                pool = Some((writes.len(), shard));
                writes.extend(closing);
            }
            (Placement::Cross { .. }, None) => {
                return Err(InfraError::new("place order", "a close that formed no batch").into());
            }
        }
        if let Some(batch) = &batch {
            writes.push(Write::Put { item: batch_item(batch), condition: Some(Cond::not_exists("PK")) });
        }
        Ok(Plan { writes, key, debit, order: order_index, pool, written: (order, batch) })
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
        let order = item::order_of(&item).map_err(infra("read order"))?;
        let formed = match order.membership {
            Membership::Own(batch) | Membership::Pool { formed: Some(batch), .. } => Some(batch),
            Membership::Pool { formed: None, .. } => None,
        };
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

    use time::OffsetDateTime;

    use super::*;
    use crate::adapters::dynamodb::table::intercepted::Intercepted;
    use crate::adapters::dynamodb::testing::{order_at, usd};
    use crate::audit::audit;
    use crate::domain::{Coin, UserId};
    use crate::ports::{Accounts, LedgerRecords, Orders};

    fn order(user: &str, amount: &str) -> NewOrder {
        order_at(user, amount, OffsetDateTime::now_utc())
    }

    async fn store_on(table: Arc<dyn crate::adapters::dynamodb::table::Table>, users: &[&str]) -> DynamoStore {
        let store = DynamoStore::on(table);
        for user in users {
            store.open_account(&UserId::parse(user).unwrap(), usd("1000")).await.unwrap();
        }
        store
    }

    async fn assert_audit_clean(store: &DynamoStore) {
        let report = audit(&store.ledger().await.unwrap(), usd("10"));
        assert!(report.is_clean(), "{report}");
    }

    /// A view of the shard that is wrong (another process's orders of
    /// another size, a bug): the close it makes look due must not take
    /// members that are not there; the order is decided again on the shard
    /// as the cancellation returned it.
    #[tokio::test]
    async fn a_close_decided_from_a_wrong_view_fails_and_is_decided_again() {
        let store = store_on(Arc::new(Intercepted::yielding()), &["alice", "bob"]).await;
        store.place(order("alice", "1"), usd("10")).await.unwrap(); // $4
        store.place(order("alice", "0.25"), usd("10")).await.unwrap(); // $5
        {
            let mut turn = store.lanes.enter(&Coin::from_trusted("ABAN")).await;
            let known = turn.known.as_mut().unwrap();
            known.usd = usd("8");
            known.members.push(Member {
                order: crate::domain::OrderId::generate(),
                user: UserId::parse("mallory").unwrap(),
                placed: OffsetDateTime::now_utc(),
            });
        }

        // $3 more: $11 by the view, $8 in truth.
        let retries = store.stats().stale_pool_retries;
        let placed = store.place(order("bob", "0.75"), usd("10")).await.unwrap();

        assert_eq!(placed.formed, None, "a batch formed at $8");
        assert_audit_clean(&store).await;
        assert_eq!(store.stats().stale_pool_retries, retries + 1);
    }

    /// A close takes the members its process saw, by name: orders another
    /// process placed on the shard since stay there, pending.
    #[tokio::test]
    async fn orders_that_joined_since_a_close_was_decided_stay_in_the_pool() {
        let table: Arc<dyn crate::adapters::dynamodb::table::Table> =
            Arc::new(crate::adapters::dynamodb::table::memory::MemoryTable::new());
        let (a, b) = (store_on(Arc::clone(&table), &["alice", "bob"]).await, DynamoStore::on(Arc::clone(&table)));
        a.place(order("alice", "1.5"), usd("10")).await.unwrap(); // $6 on shard 0, as `a` knows it
        let joined = b.place(order("bob", "0.25"), usd("10")).await.unwrap(); // $1 more, unknown to `a`

        let crossing = a.place(order("alice", "1"), usd("10")).await.unwrap(); // $4: $10 with what `a` saw

        let batch = a.read_batch(crossing.formed.expect("a batch")).await.unwrap().unwrap();
        assert_eq!((batch.usd, batch.count), (usd("10"), 2), "bob's order is not a's to take");
        let bob = b.order(&UserId::parse("bob").unwrap(), joined.order.order.id).await.unwrap().unwrap();
        assert_eq!(bob.status, crate::domain::OrderStatus::Pending);
        assert_eq!(a.stats().placement_transactions, 2, "no retry");
        assert_audit_clean(&a).await;
    }

    /// Within one process, a coin's pooled orders take turns: none of them
    /// ever decides from a view another one is changing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_process_takes_turns_on_a_coin_so_its_orders_never_retry() {
        let store = Arc::new(store_on(Arc::new(Intercepted::yielding()), &["alice"]).await);
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
        // One look at the coin (its count and shard 0), then one
        // transaction per order.
        assert_eq!(
            (stats.orders_placed, stats.placement_transactions, stats.stale_pool_retries, stats.pool_reads),
            (40, 40, 0, 1),
            "{stats:?}"
        );
        assert_audit_clean(&store).await;
    }

    /// Orders of the minimum or more never wait for the pool's turn, and
    /// never touch what the pooled orders know of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn orders_bought_alone_leave_the_pool_and_its_lane_alone() {
        let store = Arc::new(store_on(Arc::new(Intercepted::yielding()), &["alice", "bob"]).await);
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
