//! The in-memory table as the simulation's processes see it: every request
//! takes some virtual time on the way there and back (so that processes
//! interleave, and a crash can fall between a write and its reply), and
//! after every write the money invariants are checked on the whole table.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures::FutureExt;
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::dynamodb::table::memory::MemoryTable;
use shared::adapters::dynamodb::table::{
    Changes, Cond, ConditionFailed, Item, Page, Query, Table, TableError, Transacted, Write,
};
use shared::audit::audit;
use shared::domain::Usd;
use shared::ports::LedgerRecords;

use super::World;

pub struct SimTable {
    inner: Arc<MemoryTable>,
    /// Reads the whole table for the checks, with no latency or faults.
    auditor: DynamoStore,
    world: Arc<World>,
    minimum: Usd,
}

impl SimTable {
    pub fn new(inner: Arc<MemoryTable>, world: Arc<World>, minimum: Usd) -> SimTable {
        let auditor = DynamoStore::on(Arc::clone(&inner) as Arc<dyn Table>);
        SimTable { inner, auditor, world, minimum }
    }

    async fn travel(&self) {
        // Mostly quick, sometimes slow: a request's way there or back.
        let delay =
            if self.world.dice.chance(0.05) { self.world.dice.millis(20..400) } else { self.world.dice.millis(0..8) };
        tokio::time::sleep(delay).await;
    }

    /// The invariants on the table as it is after a write. The memory
    /// table answers without waiting, so the check is one atomic look.
    fn check(&self) {
        self.world.steps.fetch_add(1, Ordering::Relaxed);
        match self.auditor.ledger().now_or_never() {
            Some(Ok(ledger)) => {
                let report = audit(&ledger, self.minimum);
                if !report.is_clean() {
                    self.world.violated(format!("the audit after a write:\n{report}"));
                }
            }
            Some(Err(error)) => self.world.violated(format!("the ledger could not be read: {error}")),
            None => self.world.violated("reading the memory table waited".to_owned()),
        }
    }

    async fn write<T>(&self, request: impl Future<Output = Result<T, TableError>>) -> Result<T, TableError> {
        self.travel().await;
        let result = request.await;
        self.check();
        self.travel().await;
        result
    }
}

#[async_trait]
impl Table for SimTable {
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
        self.travel().await;
        let result = self.inner.get(key).await;
        self.travel().await;
        result
    }

    /// As DynamoDB does under load, a round may leave keys unprocessed:
    /// read with the same rounds as the SDK table.
    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        shared::adapters::dynamodb::table::read_every_key(keys, |mut asked| async move {
            self.travel().await;
            let left = if self.world.faults_on() && self.world.dice.chance(0.2) {
                let keep = self.world.dice.below(asked.len());
                asked.split_off(keep)
            } else {
                Vec::new()
            };
            let found = self.inner.get_many(asked).await?;
            self.travel().await;
            Ok((found, left))
        })
        .await
    }

    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
        self.write(self.inner.put(item, condition)).await
    }

    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError> {
        self.write(self.inner.update(key, changes, condition)).await
    }

    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
        self.write(self.inner.transact(writes, token)).await
    }

    /// A global secondary index lags the table: a query on one may not see
    /// items written lately yet (here: some of what it finds is left out).
    async fn query(&self, query: Query) -> Result<Page, TableError> {
        self.travel().await;
        let on_index = query.index.is_some();
        let mut result = self.inner.query(query).await;
        if on_index
            && self.world.faults_on()
            && self.world.dice.chance(0.2)
            && let Ok(page) = &mut result
        {
            page.items.retain(|_| self.world.dice.chance(0.5));
        }
        self.travel().await;
        result
    }

    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
        self.travel().await;
        let result = self.inner.scan(start).await;
        self.travel().await;
        result
    }
}
