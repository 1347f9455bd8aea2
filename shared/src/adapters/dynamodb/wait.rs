//! The operator's bound on how long a pooled order waits (docs/design.md,
//! "A bounded wait"). Run by the reconciler beside the sweep: it reads the
//! coin's shards and the pending orders of those holding money (the
//! `batch-members` index of each open pool), and once the oldest waited
//! longer than the policy allows, either the house completes the pool or
//! the orders that waited too long are canceled.
//!
//! A top-up is a placement of the house's own: one transaction debits the
//! house account (only if it can pay), records the house's order, closes
//! the shards holding money on their exact totals (as every close does)
//! and creates the `READY` batch. The house's order is a member of the
//! batch like any other, so the exchange sees one buy of at least the
//! minimum and the audit balances it. A refund is the owner's cancel, made
//! by the reconciler: the same transaction, the same race with a close.

use rust_decimal::{Decimal, RoundingStrategy};
use time::OffsetDateTime;

use super::item::{MEMBERS_INDEX, MEMBERS_PK, order_of, pool_members_partition};
use super::pool_cache::CachedPool;
use super::sweep::{SHARDS_PER_BATCH, holding, largest_first, totals_of};
use super::table::{Query, Reason, Transacted};
use super::{DynamoStore, infra, unexpected};
use crate::domain::{
    Absorbed, BatchId, BatchQuantity, BatchTotals, Coin, NewOrder, Order, OrderId, Placement, PoolId, Quantity, Usd,
    UserId, exact_sum,
};
use crate::ports::{CancelError, InfraError, Orders, WaitAction, WaitPolicy, WaitReport};

/// A coin's pool as an operator sees it.
#[derive(Debug, Clone)]
pub struct PoolSummary {
    pub coin: Coin,
    /// Shards read (up to the most the coin ever had), and those holding money.
    pub shards: u32,
    pub holding: usize,
    pub usd: Usd,
    pub qty: Decimal,
    pub orders: u32,
    /// When its oldest pending order was placed.
    pub oldest: Option<OffsetDateTime>,
    /// A batch the sweep is still gathering, and what it holds so far.
    pub forming: Option<(BatchId, Usd)>,
}

/// What a top-up came to.
enum TopUp {
    Formed(BatchId),
    /// The house account cannot pay this much: nothing was bought.
    HouseShort(Usd),
    /// A shard moved since it was read (an order joined or closed it): the
    /// next check decides again.
    Moved,
}

impl DynamoStore {
    pub(super) async fn enforce_wait(
        &self,
        coin: &Coin,
        price: Option<Usd>,
        minimum: Usd,
        policy: Option<&WaitPolicy>,
        now: OffsetDateTime,
    ) -> Result<WaitReport, InfraError> {
        let high = self.read_shard_count(coin).await?.high.max(1);
        let (shards, pending) = self.holding_shards(coin, high).await?;
        let mut report = WaitReport { oldest: pending.iter().map(|o| o.created_at).min(), ..WaitReport::default() };
        let Some(policy) = policy else { return Ok(report) };
        report.house_balance = match &policy.action {
            WaitAction::TopUp { house } => Some(Orders::balance(self, house).await?),
            WaitAction::Refund => None,
        };
        let Some(oldest) = report.oldest else { return Ok(report) };
        if now - oldest <= policy.max_wait {
            return Ok(report);
        }
        match &policy.action {
            WaitAction::Refund => {
                for order in pending.iter().filter(|o| now - o.created_at > policy.max_wait) {
                    match self.cancel(&order.user, order.id).await {
                        Ok(canceled) => report.canceled += u32::from(canceled.now),
                        // Batched since it was read, or already canceled: not ours.
                        Err(CancelError::NotPending(_) | CancelError::NotFound | CancelError::Busy) => {}
                        Err(CancelError::Infra(error)) => return Err(error),
                    }
                }
            }
            WaitAction::TopUp { house } => {
                let Some(price) = price else {
                    tracing::warn!(%coin, "a pool waited too long, but its coin has no price: no top-up");
                    return Ok(report);
                };
                match self.house_top_up(coin, house, price, shards, minimum, now).await? {
                    TopUp::Formed(batch) => {
                        report.topped_up = Some(batch);
                        report.house_balance = Some(Orders::balance(self, house).await?);
                    }
                    TopUp::HouseShort(cost) => report.house_short = Some(cost),
                    TopUp::Moved => {}
                }
            }
        }
        Ok(report)
    }

    /// The coin's shards that hold money, and their pending orders: every
    /// shard up to `high` (the most it has had).
    async fn holding_shards(&self, coin: &Coin, high: u32) -> Result<(Vec<Absorbed>, Vec<Order>), InfraError> {
        let all: Vec<u32> = (0..high).collect();
        let shards: Vec<Absorbed> = self.read_shards(coin, &all).await?.iter().filter_map(holding).collect();
        let mut pending = Vec::new();
        for shard in &shards {
            pending.extend(self.pending_orders(coin, PoolId { shard: shard.shard, seq: shard.state.seq }).await?);
        }
        Ok((shards, pending))
    }

    /// What a coin's pool holds now, for an operator (`orders-admin pools`).
    pub async fn pool_summary(&self, coin: &Coin) -> Result<PoolSummary, InfraError> {
        let high = self.read_shard_count(coin).await?.high.max(1);
        let (shards, pending) = self.holding_shards(coin, high).await?;
        let (usd, qty, orders) = match totals_of(&shards) {
            Some(totals) => (totals.usd, totals.qty.value(), totals.count),
            None if shards.is_empty() => (Usd::ZERO, Decimal::ZERO, 0),
            None => return Err(InfraError::new("summarise a pool", "the shards' totals cannot be held exactly")),
        };
        Ok(PoolSummary {
            coin: coin.clone(),
            shards: high,
            holding: shards.len(),
            usd,
            qty,
            orders,
            oldest: pending.iter().map(|o| o.created_at).min(),
            forming: self.forming_batch(coin).await?.map(|b| (b.id, b.usd)),
        })
    }

    /// The orders of an open pool, as the `batch-members` index lists them
    /// (it lags the table: an order placed a moment ago may be missing, and
    /// is not the oldest).
    async fn pending_orders(&self, coin: &Coin, pool: PoolId) -> Result<Vec<Order>, InfraError> {
        let mut orders = Vec::new();
        let mut start = None;
        loop {
            let query = Query {
                index: Some(MEMBERS_INDEX),
                partition: (MEMBERS_PK, pool_members_partition(coin, pool)),
                start,
                ..Query::default()
            };
            let page = self.table.query(query).await?;
            for member in &page.items {
                let (order, _) = order_of(member).map_err(infra("read pending order"))?;
                if !order.canceled && !order.refunded {
                    orders.push(order);
                }
            }
            start = page.next;
            if start.is_none() {
                return Ok(orders);
            }
        }
    }

    /// Completes the coin's pool to the minimum with an order of the house.
    async fn house_top_up(
        &self,
        coin: &Coin,
        house: &UserId,
        price: Usd,
        mut shards: Vec<Absorbed>,
        minimum: Usd,
        now: OffsetDateTime,
    ) -> Result<TopUp, InfraError> {
        largest_first(&mut shards);
        shards.truncate(SHARDS_PER_BATCH);
        let Some(held) = totals_of(&shards) else {
            return Err(InfraError::new("top up a pool", "the shards' totals cannot be held exactly"));
        };
        if held.usd >= minimum || shards.is_empty() {
            // Enough already: the sweep batches it.
            return Ok(TopUp::Moved);
        }
        let (amount, cost) = amount_for(minimum.value() - held.usd.value(), price).ok_or_else(|| {
            InfraError::new("top up a pool", format!("no exact amount of {coin} at {price} fills the pool"))
        })?;
        let totals = (|| {
            Some(BatchTotals {
                usd: held.usd.checked_add(cost)?,
                qty: BatchQuantity::from_decimal(exact_sum(held.qty.value(), amount.value())?)?,
                count: held.count.checked_add(1)?,
            })
        })()
        .ok_or_else(|| InfraError::new("top up a pool", "the batch's totals cannot be held exactly"))?;
        let new = NewOrder {
            id: OrderId::generate(),
            user: house.clone(),
            coin: coin.clone(),
            amount,
            price,
            cost,
            idempotency_key: None,
            created_at: now,
        };
        // The fullest shard is the house order's "home"; the others close
        // into the same batch, each on its exact totals.
        let home = shards[0];
        let placement = Placement::Cross { seq: home.state.seq, batch: totals, absorbed: shards[1..].to_vec() };
        let pool = CachedPool { state: home.state, exists: true, written_at: None };
        let plan = self.plan(&new, home.shard, Some(&pool), &placement, minimum);
        let Some(batch) = plan.written.1.as_ref().map(|b| b.id) else {
            return Err(InfraError::new("top up a pool", "the top-up formed no batch"));
        };
        let token = ulid::Ulid::new().to_string();
        match self.transact_idempotent("top up a pool", &token, &plan.writes).await? {
            Transacted::Committed => Ok(TopUp::Formed(batch)),
            Transacted::Cancelled(reasons) => {
                let failed = |index: usize| matches!(reasons.get(index), Some(Reason::ConditionFailed(_)));
                if failed(plan.order) {
                    // The order id is this top-up's alone: an earlier send committed.
                    Ok(TopUp::Formed(batch))
                } else if failed(plan.debit) {
                    Ok(TopUp::HouseShort(cost))
                } else if plan.pools.iter().any(|(index, _)| failed(*index)) {
                    Ok(TopUp::Moved)
                } else {
                    Err(InfraError::new("top up a pool", unexpected(&reasons)))
                }
            }
        }
    }
}

/// The smallest amount (at most [`Quantity::MAX_SCALE`] places) whose cost
/// at `price` covers `gap`, and that cost.
fn amount_for(gap: Decimal, price: Usd) -> Option<(Quantity, Usd)> {
    let step = Decimal::new(1, Quantity::MAX_SCALE);
    let mut amount =
        gap.checked_div(price.value())?.round_dp_with_strategy(Quantity::MAX_SCALE, RoundingStrategy::AwayFromZero);
    for _ in 0..2 {
        let quantity = Quantity::parse(&amount.normalize().to_string()).ok()?;
        let cost = Usd::cost(price, quantity)?;
        if cost.value() >= gap {
            return Some((quantity, cost));
        }
        // The division rounded below the gap: one step more.
        amount = amount.checked_add(step)?;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::str::FromStr;

    use super::*;

    fn usd(text: &str) -> Usd {
        Usd::new(Decimal::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn the_house_buys_the_least_that_covers_the_gap() {
        for (gap, price, amount, cost) in [
            ("6", "4", "1.5", "6"),
            ("1", "3", "0.33333334", "1.00000002"),
            ("9.99", "1234.5", "0.00809235", "9.990006075"),
            ("0.00000001", "4", "0.00000001", "0.00000004"),
        ] {
            let (got_amount, got_cost) = amount_for(Decimal::from_str(gap).unwrap(), usd(price)).unwrap();
            assert_eq!((got_amount.to_string(), got_cost), (amount.to_owned(), usd(cost)), "{gap} at {price}");
        }
    }
}
