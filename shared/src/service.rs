//! Placing and reading orders: what the place-order function does once the
//! HTTP request is parsed.

use std::sync::Arc;

use crate::config::ServiceConfig;
use crate::domain::{IdempotencyKey, InvalidAmount, NewOrder, OrderId, OrderView, Quantity, UnknownCoin, Usd, UserId};
use crate::metrics;
use crate::ports::{
    CancelError, Canceled, Clock, InfraError, OrderList, OrderPage, Orders, PlaceError, Placed, SettleQueue,
};
use crate::telemetry::ErrorChain;

#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    #[error(transparent)]
    UnknownCoin(#[from] UnknownCoin),
    #[error(transparent)]
    InvalidAmount(#[from] InvalidAmount),
    #[error(transparent)]
    BelowMinimum(#[from] BelowMinimum),
    #[error(transparent)]
    Place(#[from] PlaceError),
}

/// A dust order: every order is an item, and a batch's orders are what a
/// refund walks, so orders cost at least the configured smallest order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the order costs {cost} USD; the smallest order is {minimum} USD")]
pub struct BelowMinimum {
    pub cost: Usd,
    pub minimum: Usd,
}

pub struct OrderService {
    store: Arc<dyn Orders>,
    queue: Arc<dyn SettleQueue>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
}

impl OrderService {
    pub fn new(
        store: Arc<dyn Orders>,
        queue: Arc<dyn SettleQueue>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> OrderService {
        OrderService { store, queue, clock, config }
    }

    /// Debits the cost and records the order in one transaction; if that
    /// formed a batch, hands it to settlement before returning, so the buy
    /// starts while the response is on its way.
    #[tracing::instrument(skip(self, amount, key), fields(user = %user, order_id, batch_id))]
    pub async fn place(
        &self,
        user: UserId,
        symbol: &str,
        amount: Quantity,
        key: Option<IdempotencyKey>,
    ) -> Result<Placed, PlaceOrderError> {
        let (coin, price) = self.config.prices.quote(symbol)?;
        // The price list only has prices whose costs are exact; a cost that
        // is not is refused all the same, never rounded.
        let cost = Usd::cost(price, amount).ok_or(InvalidAmount::CostNotExact)?;
        if cost < self.config.min_order {
            return Err(BelowMinimum { cost, minimum: self.config.min_order }.into());
        }
        let order = NewOrder {
            id: OrderId::generate(),
            user,
            coin,
            amount,
            price,
            cost,
            idempotency_key: key,
            created_at: self.clock.now(),
        };
        let placed = self.store.place_order(order, self.config.minimum).await?;
        metrics::order_placed(&placed);
        let span = tracing::Span::current();
        span.record("order_id", tracing::field::display(placed.order.order.id));
        if let Some(batch) = placed.formed {
            span.record("batch_id", tracing::field::display(batch));
            if let Err(error) = self.queue.send(batch).await {
                // The order is placed and paid; the READY batch is the outbox
                // and the reconciler sends it again.
                tracing::error!(error = %ErrorChain(&error), %batch, "could not enqueue a formed batch");
            }
        }
        Ok(placed)
    }

    pub async fn order(&self, user: &UserId, id: OrderId) -> Result<Option<OrderView>, InfraError> {
        self.store.order(user, id).await
    }

    /// A page of the user's orders, newest first.
    pub async fn orders(&self, user: &UserId, page: OrderPage) -> Result<OrderList, InfraError> {
        self.store.orders_of(user, page).await
    }

    /// Cancels a pending order of the user's (idempotent).
    #[tracing::instrument(skip(self), fields(user = %user, order_id = %id))]
    pub async fn cancel(&self, user: &UserId, id: OrderId) -> Result<Canceled, CancelError> {
        let canceled = self.store.cancel_order(user, id).await?;
        if canceled.now {
            metrics::order_canceled(metrics::CanceledBy::Owner, 1);
            tracing::info!(cost = %canceled.order.order.cost, "order canceled by its owner");
        }
        Ok(canceled)
    }

    pub async fn balance(&self, user: &UserId) -> Result<Usd, InfraError> {
        self.store.balance(user).await
    }
}
