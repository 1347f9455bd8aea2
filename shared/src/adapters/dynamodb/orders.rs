//! Reading orders back, with what their batch says about them.
//!
//! An order bought alone, or one that closed its pool, names its batch. Any
//! other pooled order is a member of its shard's open pool until a batch
//! closes the pool; the record of the closed pool (`CLOSED#{ms}#{seq}` in
//! the shard's partition) then lists it and names the batch. Records are
//! keyed by when the pool closed, which is after the order was placed: the
//! order's record is found from there (less `RECORD_MARGIN`, for clocks and
//! a close's send that commits a little after it was built), and, should
//! that find nothing, before it.

use async_trait::async_trait;

use super::item::{
    self, CLOSED_PREFIX, account_key, balance_of, batch_key, batch_of, closed_from, get_s, member_attribute, order_key,
    order_of, pool_key,
};
use super::table::{Cond, Query};
use super::{DynamoStore, infra};
use crate::domain::{Batch, BatchId, Coin, Membership, NewOrder, Order, OrderId, OrderView, Usd, UserId};
use crate::ports::{CancelError, Canceled, InfraError, OrderList, OrderPage, Orders, PlaceError, Placed};

/// How far before an order was placed the search for its pool's record
/// starts.
const RECORD_MARGIN: time::Duration = time::Duration::seconds(10);

/// Where a pooled order is now.
enum Located {
    Pending,
    In(BatchId),
    /// In neither its shard's pool nor a record of it: it was canceled, or
    /// its crumbs moved to another shard, since the order was read.
    Gone,
}

impl DynamoStore {
    pub(super) async fn order_view(&self, user: &UserId, id: OrderId) -> Result<Option<OrderView>, InfraError> {
        let Some(order) = self.read_order(user, id).await? else { return Ok(None) };
        if &order.user != user {
            return Ok(None);
        }
        self.view(order).await.map(Some)
    }

    async fn read_order(&self, user: &UserId, id: OrderId) -> Result<Option<Order>, InfraError> {
        match self.table.get(order_key(user, id)).await? {
            Some(item) => order_of(&item).map(Some).map_err(infra("read order")),
            None => Ok(None),
        }
    }

    pub(super) async fn read_batch(&self, id: BatchId) -> Result<Option<Batch>, InfraError> {
        match self.table.get(batch_key(id)).await? {
            Some(item) => batch_of(&item).map(Some).map_err(infra("read batch")),
            None => Ok(None),
        }
    }

    /// The order with its status: pending in its pool, or what its batch says.
    pub(super) async fn view(&self, mut order: Order) -> Result<OrderView, InfraError> {
        for _ in 0..4 {
            if order.canceled {
                return Ok(OrderView::new(order, None));
            }
            match self.locate(&order).await? {
                Located::Pending => return Ok(OrderView::new(order, None)),
                Located::In(batch) => {
                    let batch = self.read_batch(batch).await?;
                    return Ok(OrderView::new(order, batch.as_ref()));
                }
                Located::Gone => {
                    order = self
                        .read_order(&order.user, order.id)
                        .await?
                        .ok_or_else(|| InfraError::new("read order", format!("order {} is gone", order.id)))?;
                }
            }
        }
        Err(InfraError::new("read order", format!("order {} is in no pool and no batch", order.id)))
    }

    async fn locate(&self, order: &Order) -> Result<Located, InfraError> {
        let shard = match order.membership {
            Membership::Own(batch) | Membership::Pool { formed: Some(batch), .. } => return Ok(Located::In(batch)),
            Membership::Pool { shard, formed: None } => shard,
        };
        let pool = self.table.get(pool_key(&order.coin, shard)).await?;
        if pool.is_some_and(|pool| pool.contains_key(&member_attribute(order.id))) {
            return Ok(Located::Pending);
        }
        Ok(self.closed_with(&order.coin, shard, order).await?.map_or(Located::Gone, Located::In))
    }

    /// The batch whose record of a closed pool of `shard` lists `order`.
    async fn closed_with(&self, coin: &Coin, shard: u32, order: &Order) -> Result<Option<BatchId>, InfraError> {
        let from = closed_from(item::millis(order.created_at - RECORD_MARGIN));
        let partition = pool_key(coin, shard)[item::PK].as_s().cloned().unwrap_or_default();
        let member = Cond::exists(member_attribute(order.id));
        for (range, newest_first) in
            [((from.clone(), format!("{CLOSED_PREFIX}~")), false), ((CLOSED_PREFIX.to_owned(), from), true)]
        {
            let mut start = None;
            loop {
                let query = Query {
                    partition: (item::PK, partition.clone()),
                    sort_between: Some((item::SK, range.0.clone(), range.1.clone())),
                    filter: Some(member.clone()),
                    newest_first,
                    start,
                    ..Query::default()
                };
                let page = self.table.query(query).await?;
                if let Some(record) = page.items.first() {
                    let batch = get_s(record, "batch_id").map_err(infra("read a closed pool"))?;
                    return BatchId::parse(batch).map(Some).map_err(infra("read a closed pool"));
                }
                start = page.next;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(None)
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

    async fn cancel_order(&self, user: &UserId, id: OrderId) -> Result<Canceled, CancelError> {
        self.cancel_order_of(user, id).await
    }

    /// One `Query` of the account's partition (its orders, newest first),
    /// then the batches those orders are in.
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
        let orders: Vec<Order> =
            found.items.iter().map(order_of).collect::<Result<_, _>>().map_err(infra("read order"))?;
        let next = match found.next {
            Some(_) => orders.last().map(|o| o.id),
            None => None,
        };
        let views = futures::future::join_all(orders.into_iter().map(|order| self.view(order))).await;
        let mut orders = Vec::with_capacity(views.len());
        for view in views {
            let view = view?;
            if page.status.is_none_or(|status| view.status == status) {
                orders.push(view);
            }
        }
        Ok(OrderList { orders, next })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use time::OffsetDateTime;

    use super::*;
    use crate::adapters::dynamodb::testing::{order_at, usd};
    use crate::domain::OrderStatus;
    use crate::ports::Accounts;

    /// An order placed by a process whose clock ran a minute ahead of the
    /// one that closed its pool: its pool's record sorts before where the
    /// search for it starts. It is found all the same (the search goes back).
    #[tokio::test]
    async fn an_order_is_found_in_its_batch_whatever_the_clocks_said() {
        let store = DynamoStore::in_memory();
        let alice = UserId::parse("alice").unwrap();
        store.open_account(&alice, usd("100")).await.unwrap();
        let now = OffsetDateTime::now_utc();
        let ahead = store.place_order(order_at("alice", "1", now + time::Duration::minutes(1)), usd("10")).await;
        let ahead = ahead.unwrap().order.order.id;
        store.place_order(order_at("alice", "0.5", now), usd("10")).await.unwrap();
        // The closing order's clock is right: the record sorts a minute before the first order.
        let closing = store.place_order(order_at("alice", "1", now), usd("10")).await.unwrap();
        let batch = closing.formed.expect("$10: a batch");

        let view = store.order(&alice, ahead).await.unwrap().unwrap();

        assert_eq!((view.status, view.batch_id), (OrderStatus::Settling, Some(batch)));
    }
}
