//! The store on one DynamoDB table (DESIGN.md). Placing an order is one
//! `TransactWriteItems`; the pool's state is cached per process so that a
//! pooled order costs one request when the cache is right, and a stale cache
//! costs one more (the cancelled transaction returns the current pool).

mod failpoint;
pub mod item;
pub mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use rand::Rng;
use time::OffsetDateTime;

pub use failpoint::Failpoints;

use self::item::{
    Item, account_key, balance_of, batch_item, batch_key, batch_of, get_decimal, get_s, idempotency_key,
    members_partition, n, n_int, order_item, order_key, order_of, pool_batch_key, pool_key, pool_of, s,
};
use crate::domain::{
    Batch, BatchId, BatchStatus, Coin, Membership, Order, OrderId, OrderView, Placement, PoolState, Usd, UserId, decide,
};
use crate::ports::{Claim, InfraError, NewOrder, PlaceError, Placed, Refund, Store};

/// Transactions tried per order before answering "busy".
const MAX_ATTEMPTS: u32 = 12;
/// How long idempotency keys are kept (the contract asks for 24 hours).
const KEY_RETENTION: time::Duration = time::Duration::days(7);

/// What the adapter did, for the performance report and tests.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub orders_placed: AtomicU64,
    pub transactions: AtomicU64,
    pub conflicts: AtomicU64,
    pub stale_pool_retries: AtomicU64,
    pub pool_reads: AtomicU64,
    pub lost_replies: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStatsSnapshot {
    pub orders_placed: u64,
    pub transactions: u64,
    pub conflicts: u64,
    pub stale_pool_retries: u64,
    pub pool_reads: u64,
    pub lost_replies: u64,
}

impl StoreStats {
    pub fn snapshot(&self) -> StoreStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStatsSnapshot {
            orders_placed: get(&self.orders_placed),
            transactions: get(&self.transactions),
            conflicts: get(&self.conflicts),
            stale_pool_retries: get(&self.stale_pool_retries),
            pool_reads: get(&self.pool_reads),
            lost_replies: get(&self.lost_replies),
        }
    }
}

/// What this process believes the pool of a coin is.
#[derive(Debug, Clone, Copy, Default)]
struct CachedPool {
    state: PoolState,
    /// Whether the pool item exists (the first order of a coin creates it).
    exists: bool,
}

pub struct DynamoStore {
    client: Client,
    table: String,
    pools: Mutex<HashMap<Coin, CachedPool>>,
    /// One lane per coin: this process's pooled orders of a coin take turns
    /// on its pool item. Concurrent transactions on one item would only
    /// cancel each other (`TransactionConflict`, or a stale pool), so taking
    /// turns costs nothing in throughput and keeps the cache exact.
    lanes: Mutex<HashMap<Coin, Arc<tokio::sync::Mutex<()>>>>,
    stats: StoreStats,
    failpoints: Option<Failpoints>,
}

/// The items of one placement transaction, and where each is.
struct Plan {
    items: Vec<TransactWriteItem>,
    key: Option<usize>,
    debit: usize,
    order: usize,
    pool: Option<usize>,
    /// What the transaction writes, for the reply once it commits.
    written: (Order, Option<Batch>),
}

enum Sent {
    Committed,
    Cancelled(Vec<CancellationReason>),
}

fn infra<E>(operation: &'static str) -> impl FnOnce(E) -> InfraError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |error| InfraError::new(operation, error)
}

fn sdk<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> InfraError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |error| InfraError::new(operation, DisplayErrorContext(error).to_string())
}

fn failed_check(reasons: &[CancellationReason], index: usize) -> Option<Option<&Item>> {
    reasons.get(index).filter(|r| r.code() == Some("ConditionalCheckFailed")).map(|r| r.item())
}

async fn backoff(attempt: u32) {
    // Full jitter over an exponential ceiling: 5 ms, 10 ms, … up to 200 ms.
    let ceiling = 5u64.saturating_mul(1 << attempt.min(6)).min(200);
    let millis = rand::rng().random_range(0..=ceiling);
    tokio::time::sleep(StdDuration::from_millis(millis)).await;
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
            pools: Mutex::default(),
            lanes: Mutex::default(),
            stats: StoreStats::default(),
            failpoints: None,
        }
    }

    /// The same store with faults injected (tests only).
    pub fn with_failpoints(mut self, failpoints: Failpoints) -> DynamoStore {
        self.failpoints = Some(failpoints);
        self
    }

    pub fn stats(&self) -> StoreStatsSnapshot {
        self.stats.snapshot()
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get(&self, key: Item) -> Result<Option<Item>, InfraError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("get item"))?;
        Ok(output.item)
    }

    async fn cached_pool(&self, coin: &Coin) -> Result<CachedPool, InfraError> {
        let cached = self.pools.lock().ok().and_then(|pools| pools.get(coin).copied());
        if let Some(pool) = cached {
            return Ok(pool);
        }
        self.stats.pool_reads.fetch_add(1, Ordering::Relaxed);
        let pool = match self.get(pool_key(coin)).await? {
            Some(item) => CachedPool { state: pool_of(&item).map_err(infra("read pool"))?, exists: true },
            None => CachedPool::default(),
        };
        self.remember_pool(coin, pool);
        Ok(pool)
    }

    fn lane(&self, coin: &Coin) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let mut lanes = self.lanes.lock().ok()?;
        Some(Arc::clone(lanes.entry(coin.clone()).or_default()))
    }

    fn remember_pool(&self, coin: &Coin, pool: CachedPool) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.insert(coin.clone(), pool);
        }
    }

    fn forget_pool(&self, coin: &Coin) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.remove(coin);
        }
    }

    /// Applies a committed placement to the cache. Other processes may have
    /// moved the pool too: the cache is a guess that the next transaction's
    /// condition checks.
    fn note_committed(&self, new: &NewOrder, placement: &Placement) {
        let Ok(mut pools) = self.pools.lock() else { return };
        let entry = pools.entry(new.coin.clone()).or_default();
        match *placement {
            Placement::OwnBatch => {}
            Placement::Join { seq } if entry.state.seq == seq => {
                entry.state = entry.state.after(placement, new.cost, new.amount);
                entry.exists = true;
            }
            Placement::Join { .. } => {}
            Placement::Cross { seq, .. } if entry.state.seq <= seq => {
                *entry = CachedPool { state: PoolState { seq: seq + 1, ..PoolState::default() }, exists: true };
            }
            Placement::Cross { .. } => {}
        }
    }

    fn plan(&self, new: &NewOrder, pool: &CachedPool, placement: &Placement, minimum: Usd) -> Result<Plan, InfraError> {
        let build = infra("build transaction");
        let mut items = Vec::with_capacity(6);
        let key = match &new.idempotency_key {
            None => None,
            Some(key) => {
                let mut record = idempotency_key(&new.user, key.as_str());
                record.insert("order_id".into(), s(new.id.to_string()));
                record.insert("coin".into(), s(new.coin.as_str()));
                record.insert("amount".into(), n(new.amount.value()));
                let expires = (new.created_at + KEY_RETENTION).unix_timestamp();
                record.insert(table::TTL_ATTRIBUTE.into(), AttributeValue::N(expires.to_string()));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(record))
                    .condition_expression("attribute_not_exists(PK)")
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .build()
                    .map_err(build)?;
                items.push(TransactWriteItem::builder().put(put).build());
                Some(items.len() - 1)
            }
        };

        let debit = Update::builder()
            .table_name(&self.table)
            .set_key(Some(account_key(&new.user)))
            .update_expression("SET balance_usd = balance_usd - :cost")
            .condition_expression("balance_usd >= :cost")
            .expression_attribute_values(":cost", n(new.cost.value()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(infra("build transaction"))?;
        items.push(TransactWriteItem::builder().update(debit).build());
        let debit = items.len() - 1;

        let (order, batch) = new.placed(placement);
        let put_order = Put::builder()
            .table_name(&self.table)
            .set_item(Some(order_item(&order, batch.as_ref().map(|b| b.id))))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .map_err(infra("build transaction"))?;
        items.push(TransactWriteItem::builder().put(put_order).build());
        let order_index = items.len() - 1;

        let names = [("#seq", "seq"), ("#usd", "usd"), ("#qty", "qty"), ("#count", "count")];
        let pool_update = |expression: &str, condition: &str, values: Vec<(&str, AttributeValue)>| {
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(pool_key(&new.coin)))
                .update_expression(expression)
                .condition_expression(condition)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            for (placeholder, name) in names {
                if expression.contains(placeholder) || condition.contains(placeholder) {
                    update = update.expression_attribute_names(placeholder, name);
                }
            }
            for (placeholder, value) in values {
                update = update.expression_attribute_values(placeholder, value);
            }
            update.build().map_err(infra("build transaction"))
        };
        let mut pool_index = None;
        match *placement {
            Placement::OwnBatch => {}
            Placement::Join { seq } => {
                let add = vec![
                    (":cost", n(new.cost.value())),
                    (":amount", n(new.amount.value())),
                    (":one", n_int(1u64)),
                    (":seq", n_int(seq)),
                ];
                let update = if pool.exists {
                    let mut values = add;
                    let limit = minimum.value() - new.cost.value();
                    values.push((":limit", n(limit)));
                    pool_update("ADD #usd :cost, #qty :amount, #count :one", "#seq = :seq AND #usd < :limit", values)?
                } else {
                    pool_update(
                        "SET #seq = :seq ADD #usd :cost, #qty :amount, #count :one",
                        "attribute_not_exists(PK)",
                        add,
                    )?
                };
                items.push(TransactWriteItem::builder().update(update).build());
                pool_index = Some(items.len() - 1);
            }
            Placement::Cross { seq, .. } => {
                let update = pool_update(
                    "SET #usd = :zero, #qty = :zero, #count = :zero, #seq = :next",
                    "#seq = :seq AND #count = :count",
                    vec![
                        (":zero", n_int(0u64)),
                        (":next", n_int(seq + 1)),
                        (":seq", n_int(seq)),
                        (":count", n_int(pool.state.count)),
                    ],
                )?;
                items.push(TransactWriteItem::builder().update(update).build());
                pool_index = Some(items.len() - 1);
            }
        }

        if let Some(batch) = &batch {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(batch_item(batch)))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .map_err(infra("build transaction"))?;
            items.push(TransactWriteItem::builder().put(put).build());
            if let Some(seq) = batch.seq {
                let mut pointer = pool_batch_key(&new.coin, seq);
                pointer.insert("batch_id".into(), s(batch.id.to_string()));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(pointer))
                    .condition_expression("attribute_not_exists(PK)")
                    .build()
                    .map_err(infra("build transaction"))?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
        }
        Ok(Plan { items, key, debit, order: order_index, pool: pool_index, written: (order, batch) })
    }

    /// Sends one transaction. A reply lost in transit is resent with the
    /// same client request token, as the SDK's own retries do.
    async fn transact(&self, items: &[TransactWriteItem], token: &str) -> Result<Sent, InfraError> {
        if self.failpoints.as_ref().is_some_and(Failpoints::conflict_now) {
            let conflict = CancellationReason::builder().code("TransactionConflict").build();
            return Ok(Sent::Cancelled(vec![conflict; items.len()]));
        }
        for _ in 0..4 {
            self.stats.transactions.fetch_add(1, Ordering::Relaxed);
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.to_vec()))
                .client_request_token(token)
                .send()
                .await;
            match result {
                Ok(_) if self.failpoints.as_ref().is_some_and(Failpoints::lose_reply_now) => {
                    self.stats.lost_replies.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => return Ok(Sent::Committed),
                Err(SdkError::ServiceError(error)) => match error.into_err() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        return Ok(Sent::Cancelled(cancelled.cancellation_reasons().to_vec()));
                    }
                    // The same token is still being processed: ask again.
                    TransactWriteItemsError::TransactionInProgressException(_) => backoff(2).await,
                    other => return Err(InfraError::new("transact write items", other)),
                },
                Err(other) => return Err(sdk("transact write items")(other)),
            }
        }
        Err(InfraError::new("transact write items", "no reply after resending"))
    }

    /// The order an earlier attempt of this same request committed.
    async fn already_placed(&self, new: &NewOrder) -> Result<Placed, PlaceError> {
        self.forget_pool(&new.coin);
        let item = self
            .get(order_key(&new.user, new.id))
            .await?
            .ok_or_else(|| InfraError::new("place order", "the order exists and then does not"))?;
        let (order, formed) = order_of(&item).map_err(infra("read order"))?;
        let view = self.view(order).await?;
        self.stats.orders_placed.fetch_add(1, Ordering::Relaxed);
        Ok(Placed { order: view, formed, replayed: false })
    }

    async fn replay(&self, new: &NewOrder, record: Option<&Item>) -> Result<Placed, PlaceError> {
        let record = record.ok_or_else(|| InfraError::new("place order", "idempotency record not returned"))?;
        let same = get_s(record, "coin").map_err(infra("read idempotency record"))? == new.coin.as_str()
            && get_decimal(record, "amount").map_err(infra("read idempotency record"))? == new.amount.value();
        if !same {
            return Err(PlaceError::IdempotencyKeyReused);
        }
        let order_id = OrderId::parse(get_s(record, "order_id").map_err(infra("read idempotency record"))?)
            .map_err(infra("read idempotency record"))?;
        let view = self
            .order(&new.user, order_id)
            .await?
            .ok_or_else(|| InfraError::new("place order", "an idempotency record without its order"))?;
        Ok(Placed { order: view, formed: None, replayed: true })
    }

    async fn view(&self, order: Order) -> Result<OrderView, InfraError> {
        let batch_id = match order.membership {
            Membership::Own(batch) => Some(batch),
            Membership::Pool { seq } => match self.get(pool_batch_key(&order.coin, seq)).await? {
                Some(pointer) => Some(
                    BatchId::parse(get_s(&pointer, "batch_id").map_err(infra("read pool pointer"))?)
                        .map_err(infra("read pool pointer"))?,
                ),
                None => None,
            },
        };
        let batch = match batch_id {
            Some(id) => self.batch(id).await?,
            None => None,
        };
        Ok(OrderView::new(order, batch.as_ref()))
    }

    async fn update_batch(
        &self,
        id: BatchId,
        expression: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Result<Item, Option<Item>>, InfraError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(batch_key(id)))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_names("#status", "status")
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (placeholder, value) in values {
            update = update.expression_attribute_values(placeholder, value);
        }
        match update.send().await {
            Ok(output) => Ok(Ok(output.attributes.unwrap_or_default())),
            Err(SdkError::ServiceError(error)) => match error.into_err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => Ok(Err(failed.item)),
                other => Err(InfraError::new("update batch", other)),
            },
            Err(other) => Err(sdk("update batch")(other)),
        }
    }

    /// Every item of an index partition, page after page.
    async fn query_index(&self, index: &str, key: &str, value: String) -> Result<Vec<Item>, InfraError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", key)
                .expression_attribute_values(":pk", s(value.clone()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk("query index"))?;
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Credits one member order's cost, once. `false`: it was refunded before.
    async fn refund_order(&self, order: &Order) -> Result<bool, InfraError> {
        let (user, order_id, cost) = (&order.user, order.id, order.cost.value());
        let mark = Update::builder()
            .table_name(&self.table)
            .set_key(Some(order_key(user, order_id)))
            .update_expression("SET refunded = :yes")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(refunded)")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .build()
            .map_err(infra("build refund"))?;
        let credit = Update::builder()
            .table_name(&self.table)
            .set_key(Some(account_key(user)))
            .update_expression("ADD balance_usd :cost")
            .expression_attribute_values(":cost", n(cost))
            .build()
            .map_err(infra("build refund"))?;
        let items =
            [TransactWriteItem::builder().update(mark).build(), TransactWriteItem::builder().update(credit).build()];
        for attempt in 0..MAX_ATTEMPTS {
            // A token of its own: a token seen before makes DynamoDB answer
            // "done" without doing anything, which would count as a refund.
            match self.transact(&items, &ulid::Ulid::new().to_string()).await? {
                Sent::Committed => return Ok(true),
                Sent::Cancelled(reasons) if failed_check(&reasons, 0).is_some() => return Ok(false),
                Sent::Cancelled(reasons) if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) => {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    backoff(attempt).await;
                }
                Sent::Cancelled(reasons) => {
                    let codes: Vec<_> = reasons.iter().map(|r| r.code().unwrap_or("?").to_owned()).collect();
                    return Err(InfraError::new("refund order", format!("cancelled: {codes:?}")));
                }
            }
        }
        Err(InfraError::new("refund order", "still conflicting after retries"))
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn place_order(&self, new: NewOrder, minimum: Usd) -> Result<Placed, PlaceError> {
        // An order of the minimum or more never touches the pool.
        let lane = if new.cost < minimum { self.lane(&new.coin) } else { None };
        let _turn = match &lane {
            Some(lane) => Some(lane.lock().await),
            None => None,
        };
        for attempt in 1..=MAX_ATTEMPTS {
            let pool = self.cached_pool(&new.coin).await?;
            let placement = decide(&pool.state, new.cost, new.amount, minimum);
            let plan = self.plan(&new, &pool, &placement, minimum)?;
            // A fresh token per attempt: each attempt is a different request.
            let token = format!("{}-{attempt}", new.id);
            let reasons = match self.transact(&plan.items, &token).await? {
                Sent::Committed => {
                    self.note_committed(&new, &placement);
                    self.stats.orders_placed.fetch_add(1, Ordering::Relaxed);
                    let (order, batch) = plan.written;
                    let view = OrderView::new(order, batch.as_ref());
                    return Ok(Placed { order: view, formed: batch.map(|b| b.id), replayed: false });
                }
                Sent::Cancelled(reasons) => reasons,
            };
            // Why it was cancelled, most decisive first.
            if failed_check(&reasons, plan.order).is_some() {
                // Our own order exists: an earlier attempt committed and its reply was lost.
                return self.already_placed(&new).await;
            }
            if let Some(record) = plan.key.and_then(|i| failed_check(&reasons, i)) {
                return self.replay(&new, record).await;
            }
            if let Some(account) = failed_check(&reasons, plan.debit) {
                let balance = balance_of(account).map_err(infra("read account"))?;
                return Err(PlaceError::InsufficientFunds { balance, cost: new.cost });
            }
            if let Some(current) = plan.pool.and_then(|i| failed_check(&reasons, i)) {
                self.stats.stale_pool_retries.fetch_add(1, Ordering::Relaxed);
                match current {
                    Some(item) => {
                        let state = pool_of(item).map_err(infra("read pool"))?;
                        self.remember_pool(&new.coin, CachedPool { state, exists: true });
                    }
                    None => self.forget_pool(&new.coin),
                }
                // The first retry has the fresh state; after that other
                // processes are racing for the same pool: spread out.
                if attempt > 1 {
                    backoff(attempt).await;
                }
                continue;
            }
            if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                backoff(attempt).await;
                continue;
            }
            let codes: Vec<_> = reasons.iter().map(|r| r.code().unwrap_or("?").to_owned()).collect();
            return Err(InfraError::new("place order", format!("transaction cancelled: {codes:?}")).into());
        }
        Err(PlaceError::Busy)
    }

    async fn order(&self, user: &UserId, id: OrderId) -> Result<Option<OrderView>, InfraError> {
        let Some(item) = self.get(order_key(user, id)).await? else {
            return Ok(None);
        };
        let (order, _) = order_of(&item).map_err(infra("read order"))?;
        if &order.user != user {
            return Ok(None);
        }
        self.view(order).await.map(Some)
    }

    async fn balance(&self, user: &UserId) -> Result<Usd, InfraError> {
        let item = self.get(account_key(user)).await?;
        balance_of(item.as_ref()).map_err(infra("read account"))
    }

    async fn put_account(&self, user: &UserId, balance: Usd) -> Result<(), InfraError> {
        let mut item = account_key(user);
        item.insert("user_id".into(), s(user.as_str()));
        item.insert("balance_usd".into(), n(balance.value()));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk("put account"))?;
        Ok(())
    }

    async fn batch(&self, id: BatchId) -> Result<Option<Batch>, InfraError> {
        match self.get(batch_key(id)).await? {
            Some(item) => batch_of(&item).map(Some).map_err(infra("read batch")),
            None => Ok(None),
        }
    }

    async fn claim_batch(
        &self,
        id: BatchId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Claim, InfraError> {
        let result = self
            .update_batch(
                id,
                "SET #status = :submitting, lease_until_ms = :lease ADD attempts :one",
                "#status = :ready OR (#status = :submitting AND lease_until_ms <= :now)",
                vec![
                    (":submitting", s(BatchStatus::Submitting.as_str())),
                    (":ready", s(BatchStatus::Ready.as_str())),
                    (":lease", item::ms(lease_until)),
                    (":now", item::ms(now)),
                    (":one", n_int(1u64)),
                ],
            )
            .await?;
        match result {
            Ok(item) => Ok(Claim::Claimed(batch_of(&item).map_err(infra("read batch"))?)),
            Err(None) => Ok(Claim::NotFound),
            Err(Some(item)) => {
                let batch = batch_of(&item).map_err(infra("read batch"))?;
                match (batch.status, batch.lease_until) {
                    (status, _) if status.is_final() => Ok(Claim::Finished(status)),
                    (_, Some(until)) => Ok(Claim::Leased { until }),
                    (status, None) => Err(InfraError::new(
                        "claim batch",
                        format!("batch {id} is {} without a lease", status.as_str()),
                    )),
                }
            }
        }
    }

    async fn release_batch(&self, id: BatchId, now: OffsetDateTime) -> Result<(), InfraError> {
        self.update_batch(
            id,
            "SET lease_until_ms = :now",
            "#status = :submitting",
            vec![(":now", item::ms(now)), (":submitting", s(BatchStatus::Submitting.as_str()))],
        )
        .await
        .map(|_| ())
    }

    async fn settle_batch(&self, id: BatchId, exchange_order_id: &str) -> Result<(), InfraError> {
        let result = self
            .update_batch(
                id,
                "SET #status = :settled, exchange_order_id = :exchange REMOVE lease_until_ms, GSI1PK, GSI1SK",
                "#status = :submitting",
                vec![
                    (":settled", s(BatchStatus::Settled.as_str())),
                    (":exchange", s(exchange_order_id)),
                    (":submitting", s(BatchStatus::Submitting.as_str())),
                ],
            )
            .await?;
        match result {
            Ok(_) => Ok(()),
            Err(Some(item)) if get_s(&item, "status").ok() == Some(BatchStatus::Settled.as_str()) => Ok(()),
            Err(item) => Err(InfraError::new(
                "settle batch",
                format!(
                    "batch {id} is {} and cannot be settled",
                    item.as_ref().and_then(|i| get_s(i, "status").ok()).unwrap_or("missing")
                ),
            )),
        }
    }

    async fn refund_batch(&self, id: BatchId) -> Result<Refund, InfraError> {
        let batch = self
            .batch(id)
            .await?
            .ok_or_else(|| InfraError::new("refund batch", format!("batch {id} does not exist")))?;
        if !matches!(batch.status, BatchStatus::Submitting | BatchStatus::Refunded) {
            return Err(InfraError::new(
                "refund batch",
                format!("batch {id} is {} and cannot be refunded", batch.status.as_str()),
            ));
        }
        let members = self.query_index(item::MEMBERS_INDEX, item::MEMBERS_PK, members_partition(&batch)).await?;
        // The index is eventually consistent: refund only a complete batch;
        // a retry finds the rest (each order is refunded at most once).
        if members.len() < batch.count as usize {
            return Err(InfraError::new(
                "refund batch",
                format!("{} of the batch's {} orders are visible yet", members.len(), batch.count),
            ));
        }
        let mut refund = Refund::default();
        for member in &members {
            // The index projects whole order items: the adapter's own mapping reads them.
            let (order, _) = order_of(member).map_err(infra("read batch member"))?;
            if self.refund_order(&order).await? {
                refund.orders += 1;
                refund.usd = refund.usd + order.cost;
            }
        }
        let result = self
            .update_batch(
                id,
                "SET #status = :refunded REMOVE lease_until_ms, GSI1PK, GSI1SK",
                "#status = :submitting OR #status = :refunded",
                vec![
                    (":refunded", s(BatchStatus::Refunded.as_str())),
                    (":submitting", s(BatchStatus::Submitting.as_str())),
                ],
            )
            .await?;
        result.map_err(|_| InfraError::new("refund batch", format!("batch {id} changed while refunding")))?;
        Ok(refund)
    }

    async fn stuck_batches(
        &self,
        formed_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<BatchId>, InfraError> {
        let open = self.query_index(item::OPEN_BATCHES_INDEX, item::OPEN_PK, item::OPEN_PARTITION.to_owned()).await?;
        let mut stuck = Vec::new();
        for item in open {
            let batch = batch_of(&item).map_err(infra("read batch"))?;
            if batch.is_stuck(formed_before, now) {
                stuck.push(batch.id);
            }
        }
        stuck.sort();
        Ok(stuck)
    }
}
