//! Reading orders back, with what their batch says about them.

use async_trait::async_trait;

use super::item::{account_key, balance_of, batch_key, batch_of, get_s, order_key, order_of, pool_batch_key};
use super::{DynamoStore, infra};
use crate::domain::{Batch, BatchId, Membership, NewOrder, Order, OrderId, OrderView, PoolId, Usd, UserId};
use crate::ports::{InfraError, Orders, PlaceError, Placed};

impl DynamoStore {
    pub(super) async fn order_view(&self, user: &UserId, id: OrderId) -> Result<Option<OrderView>, InfraError> {
        let Some(item) = self.table.get(order_key(user, id)).await? else {
            return Ok(None);
        };
        let (order, _) = order_of(&item).map_err(infra("read order"))?;
        if &order.user != user {
            return Ok(None);
        }
        self.view(order).await.map(Some)
    }

    /// The batch an order is in, if it is in one yet.
    pub(super) async fn batch_of_order(&self, order: &Order) -> Result<Option<Batch>, InfraError> {
        let id = match order.membership {
            Membership::Own(batch) => batch,
            Membership::Pool { shard, seq } => {
                match self.table.get(pool_batch_key(&order.coin, PoolId { shard, seq })).await? {
                    Some(pointer) => BatchId::parse(get_s(&pointer, "batch_id").map_err(infra("read pool pointer"))?)
                        .map_err(infra("read pool pointer"))?,
                    None => return Ok(None),
                }
            }
        };
        self.read_batch(id).await
    }

    pub(super) async fn read_batch(&self, id: BatchId) -> Result<Option<Batch>, InfraError> {
        match self.table.get(batch_key(id)).await? {
            Some(item) => batch_of(&item).map(Some).map_err(infra("read batch")),
            None => Ok(None),
        }
    }

    pub(super) async fn view(&self, order: Order) -> Result<OrderView, InfraError> {
        let batch = self.batch_of_order(&order).await?;
        Ok(OrderView::new(order, batch.as_ref()))
    }
}

#[async_trait]
impl Orders for DynamoStore {
    async fn place_order(&self, order: NewOrder, minimum: Usd) -> Result<Placed, PlaceError> {
        self.place(order, minimum).await
    }

    async fn order(&self, user: &UserId, id: OrderId) -> Result<Option<OrderView>, InfraError> {
        self.order_view(user, id).await
    }

    async fn balance(&self, user: &UserId) -> Result<Usd, InfraError> {
        let item = self.table.get(account_key(user)).await?;
        balance_of(item.as_ref()).map_err(infra("read account"))
    }
}
