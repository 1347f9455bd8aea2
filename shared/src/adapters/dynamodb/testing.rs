//! What the adapter's unit tests build their orders from.

#![allow(clippy::unwrap_used)]

use std::str::FromStr;

use rust_decimal::Decimal;
use time::OffsetDateTime;

use crate::domain::{Coin, NewOrder, OrderId, Quantity, Usd, UserId};

pub fn usd(text: &str) -> Usd {
    Usd::new(Decimal::from_str(text).unwrap()).unwrap()
}

/// `user` buys `amount` ABAN at $4, at `at`.
pub fn order_at(user: &str, amount: &str, at: OffsetDateTime) -> NewOrder {
    let amount = Quantity::parse(amount).unwrap();
    NewOrder {
        id: OrderId::generate(),
        user: UserId::parse(user).unwrap(),
        coin: Coin::from_trusted("ABAN"),
        amount,
        price: usd("4"),
        cost: Usd::cost(usd("4"), amount).unwrap(),
        idempotency_key: None,
        created_at: at,
    }
}

/// One wrapper for the adapter's tests: every request goes to the table
/// underneath after `before` (which may pause, count, or refuse it).
pub struct Intercepted {
    pub inner: std::sync::Arc<dyn super::table::Table>,
    #[allow(clippy::type_complexity)]
    pub before: Box<
        dyn Fn(
                &'static str,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), super::table::TableError>> + Send>>
            + Send
            + Sync,
    >,
}

impl Intercepted {
    /// The memory table, yielding before every request as a network would:
    /// concurrent placements interleave at every step.
    pub fn yielding() -> Intercepted {
        Intercepted {
            inner: std::sync::Arc::new(super::table::memory::MemoryTable::new()),
            before: Box::new(|_| {
                Box::pin(async {
                    tokio::task::yield_now().await;
                    Ok(())
                })
            }),
        }
    }
}

#[async_trait::async_trait]
impl super::table::Table for Intercepted {
    async fn get(&self, key: super::table::Item) -> Result<Option<super::table::Item>, super::table::TableError> {
        (self.before)("get").await?;
        self.inner.get(key).await
    }
    async fn get_many(
        &self,
        keys: Vec<super::table::Item>,
    ) -> Result<Vec<super::table::Item>, super::table::TableError> {
        (self.before)("get_many").await?;
        self.inner.get_many(keys).await
    }
    async fn put(
        &self,
        item: super::table::Item,
        condition: Option<super::table::Cond>,
    ) -> Result<Result<(), super::table::ConditionFailed>, super::table::TableError> {
        (self.before)("put").await?;
        self.inner.put(item, condition).await
    }
    async fn update(
        &self,
        key: super::table::Item,
        changes: super::table::Changes,
        condition: Option<super::table::Cond>,
    ) -> Result<Result<super::table::Item, super::table::ConditionFailed>, super::table::TableError> {
        (self.before)("update").await?;
        self.inner.update(key, changes, condition).await
    }
    async fn transact(
        &self,
        writes: Vec<super::table::Write>,
        token: &str,
    ) -> Result<super::table::Transacted, super::table::TableError> {
        (self.before)("transact").await?;
        self.inner.transact(writes, token).await
    }
    async fn query(&self, query: super::table::Query) -> Result<super::table::Page, super::table::TableError> {
        (self.before)("query").await?;
        self.inner.query(query).await
    }
    async fn scan(&self, start: Option<super::table::Item>) -> Result<super::table::Page, super::table::TableError> {
        (self.before)("scan").await?;
        self.inner.scan(start).await
    }
}
