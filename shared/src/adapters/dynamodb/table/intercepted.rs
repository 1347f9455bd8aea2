//! A table that runs a hook before every request and hands it on: the
//! tests' one way to pause, count, interleave or refuse requests.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Changes, Cond, ConditionFailed, Item, Page, Query, Table, TableError, Transacted, Write, memory};

/// Every request goes to the table underneath after `before` (given the
/// request's name: `get`, `get_many`, `put`, `update`, `transact`, `query`,
/// `scan`), which may pause, count, or refuse it.
pub struct Intercepted {
    pub inner: Arc<dyn Table>,
    pub before: Hook,
}

/// What runs before each request, given its name.
pub type Hook = Box<dyn Fn(&'static str) -> BoxFuture<'static, Result<(), TableError>> + Send + Sync>;

impl Intercepted {
    pub fn new(
        inner: Arc<dyn Table>,
        before: impl Fn(&'static str) -> BoxFuture<'static, Result<(), TableError>> + Send + Sync + 'static,
    ) -> Intercepted {
        Intercepted { inner, before: Box::new(before) }
    }

    /// The memory table, yielding before every request as a network would:
    /// concurrent placements interleave at every step.
    pub fn yielding() -> Intercepted {
        Intercepted {
            inner: Arc::new(memory::MemoryTable::new()),
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
impl Table for Intercepted {
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
        (self.before)("get").await?;
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        (self.before)("get_many").await?;
        self.inner.get_many(keys).await
    }
    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
        (self.before)("put").await?;
        self.inner.put(item, condition).await
    }
    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError> {
        (self.before)("update").await?;
        self.inner.update(key, changes, condition).await
    }
    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
        (self.before)("transact").await?;
        self.inner.transact(writes, token).await
    }
    async fn query(&self, query: Query) -> Result<Page, TableError> {
        (self.before)("query").await?;
        self.inner.query(query).await
    }
    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
        (self.before)("scan").await?;
        self.inner.scan(start).await
    }
}
