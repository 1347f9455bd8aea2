//! The embedded store: the same semantics as the DynamoDB table (every
//! operation conditional and all-or-nothing), kept under one lock. It is a
//! real backend, used by `orders-local --backend memory`, and passes the
//! same contract tests as the DynamoDB adapter.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{
    Batch, BatchId, BatchStatus, Coin, IdempotencyKey, Membership, Order, OrderId, OrderView, Placement, PoolState,
    Usd, UserId, decide,
};
use crate::ports::{Claim, InfraError, NewOrder, PlaceError, Placed, Refund, Store};

/// What an idempotency key stands for: the order it placed and the request
/// that placed it ("same body" = same coin and numerically equal amount).
#[derive(Debug, Clone)]
struct KeyRecord {
    order: OrderId,
    coin: Coin,
    amount: rust_decimal::Decimal,
}

#[derive(Default)]
struct Tables {
    balances: HashMap<UserId, Usd>,
    orders: HashMap<OrderId, Order>,
    keys: HashMap<(UserId, IdempotencyKey), KeyRecord>,
    pools: HashMap<Coin, PoolState>,
    /// Members of each coin's open pool, in arrival order.
    open_members: HashMap<Coin, Vec<OrderId>>,
    batches: HashMap<BatchId, Batch>,
    /// Closed pools: `(coin, seq)` → the batch that closed them.
    pool_batches: HashMap<(Coin, u64), BatchId>,
    members: HashMap<BatchId, Vec<OrderId>>,
}

#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Tables>, InfraError> {
        self.tables.lock().map_err(|_| InfraError::new("memory store", "lock poisoned by a panic"))
    }
}

impl Tables {
    fn batch_of(&self, order: &Order) -> Option<&Batch> {
        let id = match order.membership {
            Membership::Own(id) => id,
            Membership::Pool { seq } => *self.pool_batches.get(&(order.coin.clone(), seq))?,
        };
        self.batches.get(&id)
    }

    fn view(&self, order: &Order) -> OrderView {
        OrderView::new(order.clone(), self.batch_of(order))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn place_order(&self, new: NewOrder, minimum: Usd) -> Result<Placed, PlaceError> {
        let mut t = self.lock()?;

        // Conditions first, exactly as the transaction's condition checks:
        // nothing is written unless all of them hold.
        if let Some(key) = &new.idempotency_key
            && let Some(record) = t.keys.get(&(new.user.clone(), key.clone()))
        {
            let same = record.coin == new.coin && record.amount == new.amount.value();
            if !same {
                return Err(PlaceError::IdempotencyKeyReused);
            }
            let order = t
                .orders
                .get(&record.order)
                .ok_or_else(|| InfraError::new("memory store", "idempotency key without its order"))?;
            return Ok(Placed { order: t.view(order), formed: None, replayed: true });
        }
        let balance = t.balances.get(&new.user).copied().unwrap_or(Usd::ZERO);
        let Some(remaining) = balance.checked_sub(new.cost) else {
            return Err(PlaceError::InsufficientFunds { balance, cost: new.cost });
        };

        let pool = t.pools.get(&new.coin).copied().unwrap_or_default();
        let placement = decide(&pool, new.cost, new.amount, minimum);
        let (order, formed) = new.placed(&placement);
        match (&placement, &formed) {
            (Placement::Join { .. }, _) => t.open_members.entry(new.coin.clone()).or_default().push(new.id),
            (_, Some(batch)) => {
                let mut members = match batch.seq {
                    Some(seq) => {
                        t.pool_batches.insert((new.coin.clone(), seq), batch.id);
                        t.open_members.remove(&new.coin).unwrap_or_default()
                    }
                    None => Vec::new(),
                };
                members.push(new.id);
                t.members.insert(batch.id, members);
                t.batches.insert(batch.id, batch.clone());
            }
            (_, None) => {}
        }
        t.pools.insert(new.coin.clone(), pool.after(&placement, new.cost, new.amount));
        t.balances.insert(new.user.clone(), remaining);
        if let Some(key) = &new.idempotency_key {
            let record = KeyRecord { order: new.id, coin: new.coin.clone(), amount: new.amount.value() };
            t.keys.insert((new.user.clone(), key.clone()), record);
        }
        let view = t.view(&order);
        t.orders.insert(order.id, order);
        Ok(Placed { order: view, formed: formed.map(|b| b.id), replayed: false })
    }

    async fn order(&self, user: &UserId, id: OrderId) -> Result<Option<OrderView>, InfraError> {
        let t = self.lock()?;
        Ok(t.orders.get(&id).filter(|o| &o.user == user).map(|o| t.view(o)))
    }

    async fn balance(&self, user: &UserId) -> Result<Usd, InfraError> {
        Ok(self.lock()?.balances.get(user).copied().unwrap_or(Usd::ZERO))
    }

    async fn put_account(&self, user: &UserId, balance: Usd) -> Result<(), InfraError> {
        self.lock()?.balances.insert(user.clone(), balance);
        Ok(())
    }

    async fn batch(&self, id: BatchId) -> Result<Option<Batch>, InfraError> {
        Ok(self.lock()?.batches.get(&id).cloned())
    }

    async fn claim_batch(
        &self,
        id: BatchId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Claim, InfraError> {
        let mut t = self.lock()?;
        let Some(batch) = t.batches.get_mut(&id) else {
            return Ok(Claim::NotFound);
        };
        match (batch.status, batch.lease_until) {
            (status, _) if status.is_final() => Ok(Claim::Finished(status)),
            (BatchStatus::Submitting, Some(until)) if until > now => Ok(Claim::Leased { until }),
            _ => {
                batch.status = BatchStatus::Submitting;
                batch.attempts += 1;
                batch.lease_until = Some(lease_until);
                Ok(Claim::Claimed(batch.clone()))
            }
        }
    }

    async fn release_batch(&self, id: BatchId, now: OffsetDateTime) -> Result<(), InfraError> {
        let mut t = self.lock()?;
        if let Some(batch) = t.batches.get_mut(&id).filter(|b| b.status == BatchStatus::Submitting) {
            batch.lease_until = Some(now);
        }
        Ok(())
    }

    async fn settle_batch(&self, id: BatchId, exchange_order_id: &str) -> Result<(), InfraError> {
        let mut t = self.lock()?;
        let batch = t
            .batches
            .get_mut(&id)
            .ok_or_else(|| InfraError::new("settle batch", format!("batch {id} does not exist")))?;
        match batch.status {
            BatchStatus::Submitting => {
                batch.status = BatchStatus::Settled;
                batch.lease_until = None;
                batch.exchange_order_id = Some(exchange_order_id.to_owned());
                Ok(())
            }
            BatchStatus::Settled => Ok(()),
            other => {
                Err(InfraError::new("settle batch", format!("batch {id} is {} and cannot be settled", other.as_str())))
            }
        }
    }

    async fn refund_batch(&self, id: BatchId) -> Result<Refund, InfraError> {
        let mut t = self.lock()?;
        let status = t.batches.get(&id).map(|b| b.status);
        match status {
            Some(BatchStatus::Submitting | BatchStatus::Refunded) => {}
            Some(other) => {
                return Err(InfraError::new(
                    "refund batch",
                    format!("batch {id} is {} and cannot be refunded", other.as_str()),
                ));
            }
            None => {
                return Err(InfraError::new("refund batch", format!("batch {id} does not exist")));
            }
        }
        let members = t.members.get(&id).cloned().unwrap_or_default();
        let mut refund = Refund::default();
        for order_id in members {
            let Some(order) = t.orders.get_mut(&order_id).filter(|o| !o.refunded) else {
                continue;
            };
            order.refunded = true;
            let (user, cost) = (order.user.clone(), order.cost);
            let balance = t.balances.entry(user).or_insert(Usd::ZERO);
            *balance = *balance + cost;
            refund.orders += 1;
            refund.usd = refund.usd + cost;
        }
        if let Some(batch) = t.batches.get_mut(&id) {
            batch.status = BatchStatus::Refunded;
            batch.lease_until = None;
        }
        Ok(refund)
    }

    async fn stuck_batches(
        &self,
        formed_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<BatchId>, InfraError> {
        let t = self.lock()?;
        let mut stuck: Vec<BatchId> =
            t.batches.values().filter(|b| b.is_stuck(formed_before, now)).map(|b| b.id).collect();
        stuck.sort();
        Ok(stuck)
    }
}

#[cfg(test)]
mod contract {
    use std::sync::Arc;

    use super::MemoryStore;
    use crate::ports::Store;

    crate::store_contract_tests!(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> });
}
