//! Reading orders back, with what their batch says about them.

use async_trait::async_trait;

use std::collections::HashMap;

use super::item::{
    self, account_key, balance_of, batch_key, batch_of, batch_of as batch_of_item, get_s, order_key, order_of,
    parse_shard_partition, pool_batch_key,
};
use super::table::Query;
use super::{DynamoStore, infra};
use crate::domain::{Batch, BatchId, Coin, Membership, NewOrder, Order, OrderId, OrderView, PoolId, Usd, UserId};
use crate::ports::{CancelError, Canceled, InfraError, OrderList, OrderPage, Orders, PlaceError, Placed};

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

    /// One `Query` of the account's partition (its orders, newest first),
    /// then the batches those orders are in, read together.
    async fn cancel_order(&self, user: &UserId, id: OrderId) -> Result<Canceled, CancelError> {
        self.cancel(user, id).await
    }

    async fn orders_of(&self, user: &UserId, page: OrderPage) -> Result<OrderList, InfraError> {
        let partition = account_key(user)[item::PK].as_s().cloned().unwrap_or_default();
        let query = Query {
            partition: (item::PK, partition),
            sort_prefix: Some((item::SK, "ORDER#".to_owned())),
            newest_first: true,
            limit: Some(page.limit.clamp(1, 100)),
            start: page.after.map(|id| order_key(user, id)),
            ..Query::default()
        };
        let found = self.table.query(query).await?;
        let orders: Vec<Order> = found
            .items
            .iter()
            .map(|i| order_of(i).map(|(o, _)| o))
            .collect::<Result<_, _>>()
            .map_err(infra("read order"))?;
        let next = match found.next {
            Some(_) => orders.last().map(|o| o.id),
            None => None,
        };
        let batches = self.batches_of(&orders).await?;
        let orders = orders
            .into_iter()
            .map(|order| {
                let batch = batches.iter().find(|(member, _)| *member == order.id).and_then(|(_, b)| b.as_ref());
                OrderView::new(order.clone(), batch)
            })
            .filter(|view| page.status.is_none_or(|status| view.status == status))
            .collect();
        Ok(OrderList { orders, next })
    }
}

impl DynamoStore {
    /// The batch of each order that is in one yet, in two reads at most:
    /// the closed pools' pointers, then the batches.
    async fn batches_of(&self, orders: &[Order]) -> Result<Vec<(OrderId, Option<Batch>)>, InfraError> {
        let mut pools: Vec<(Coin, PoolId)> = Vec::new();
        for order in orders {
            if let Membership::Pool { shard, seq } = order.membership {
                let pool = (order.coin.clone(), PoolId { shard, seq });
                if !pools.contains(&pool) {
                    pools.push(pool);
                }
            }
        }
        let mut closed: HashMap<(Coin, PoolId), BatchId> = HashMap::new();
        for chunk in pools.chunks(100) {
            let keys = chunk.iter().map(|(coin, pool)| pool_batch_key(coin, *pool)).collect();
            for pointer in self.table.get_many(keys).await? {
                let pk = get_s(&pointer, item::PK).map_err(infra("read pool pointer"))?;
                let sk = get_s(&pointer, item::SK).map_err(infra("read pool pointer"))?;
                let (coin, shard) =
                    parse_shard_partition(pk).ok_or_else(|| InfraError::new("read pool pointer", pk.to_owned()))?;
                let seq = sk.trim_start_matches("BATCH#").parse::<u64>().map_err(infra("read pool pointer"))?;
                let batch = BatchId::parse(get_s(&pointer, "batch_id").map_err(infra("read pool pointer"))?)
                    .map_err(infra("read pool pointer"))?;
                closed.insert((coin, PoolId { shard, seq }), batch);
            }
        }
        let batch_of = |order: &Order| match order.membership {
            Membership::Own(batch) => Some(batch),
            Membership::Pool { shard, seq } => closed.get(&(order.coin.clone(), PoolId { shard, seq })).copied(),
        };
        let mut ids: Vec<BatchId> = orders.iter().filter_map(batch_of).collect();
        ids.sort();
        ids.dedup();
        let mut batches: HashMap<BatchId, Batch> = HashMap::new();
        for chunk in ids.chunks(100) {
            for found in self.table.get_many(chunk.iter().map(|id| batch_key(*id)).collect()).await? {
                let batch = batch_of_item(&found).map_err(infra("read batch"))?;
                batches.insert(batch.id, batch);
            }
        }
        Ok(orders.iter().map(|order| (order.id, batch_of(order).and_then(|id| batches.get(&id).cloned()))).collect())
    }
}
