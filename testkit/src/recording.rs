//! A table that records the writes that went through, when: what a load
//! run replays afterwards to see when each pool reached the minimum and
//! when its batch formed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shared::adapters::dynamodb::table::{
    Changes, Cond, ConditionFailed, Item, Page, Query, Table, TableError, Transacted, Write,
};
use tokio::time::Instant;

use crate::contention::write_key;

/// Writes that went through together, and when their answer came.
#[derive(Debug, Clone)]
pub struct Committed {
    pub at: Instant,
    pub writes: Vec<Write>,
}

pub struct RecordingTable {
    inner: Arc<dyn Table>,
    /// Only writes of partitions whose key starts with one of these.
    prefixes: Vec<String>,
    log: Mutex<Vec<Committed>>,
    /// Tokens committed: a resend answered from its token wrote nothing.
    tokens: Mutex<std::collections::HashSet<String>>,
    /// Requests sent through it, of every kind.
    requests: std::sync::atomic::AtomicU64,
}

impl RecordingTable {
    pub fn new(inner: Arc<dyn Table>, prefixes: &[&str]) -> RecordingTable {
        RecordingTable {
            inner,
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            log: Mutex::default(),
            tokens: Mutex::default(),
            requests: Default::default(),
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn log(&self) -> Vec<Committed> {
        self.log.lock().unwrap().clone()
    }

    fn record(&self, writes: Vec<Write>) {
        let kept: Vec<Write> = writes
            .into_iter()
            .filter(|w| self.prefixes.iter().any(|p| write_key(w).0.starts_with(p.as_str())))
            .collect();
        if !kept.is_empty() {
            self.log.lock().unwrap().push(Committed { at: Instant::now(), writes: kept });
        }
    }
}

#[async_trait]
impl Table for RecordingTable {
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
        self.count();
        self.inner.get(key).await
    }

    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        self.count();
        self.inner.get_many(keys).await
    }

    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
        self.count();
        let write = Write::Put { item: item.clone(), condition: condition.clone() };
        let result = self.inner.put(item, condition).await;
        if matches!(result, Ok(Ok(()))) {
            self.record(vec![write]);
        }
        result
    }

    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError> {
        self.count();
        let write = Write::Update { key: key.clone(), changes: changes.clone(), condition: condition.clone() };
        let result = self.inner.update(key, changes, condition).await;
        if matches!(result, Ok(Ok(_))) {
            self.record(vec![write]);
        }
        result
    }

    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
        self.count();
        let result = self.inner.transact(writes.clone(), token).await;
        if matches!(result, Ok(Transacted::Committed)) && self.tokens.lock().unwrap().insert(token.to_owned()) {
            self.record(writes);
        }
        result
    }

    async fn query(&self, query: Query) -> Result<Page, TableError> {
        self.count();
        self.inner.query(query).await
    }

    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
        self.count();
        self.inner.scan(start).await
    }
}
