//! The table in memory, with DynamoDB's semantics for what the store uses:
//! conditional single-item writes, all-or-nothing transactions with one
//! cancellation reason per write (and the old item where a condition
//! failed), idempotent client request tokens, sparse global secondary
//! indexes, and queries and scans page by page. Everything happens under
//! one lock, so each operation is atomic and the table is always in a state
//! that some order of the operations produced.
//!
//! It backs `orders-local --backend memory` and the simulations, and passes
//! the same table contract as DynamoDB Local and ministack.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::time::Instant;

use super::expr::{apply, holds, normalized};
use super::{Changes, Cond, ConditionFailed, Item, Page, Query, Reason, Table, TableError, Transacted, Write};
use crate::adapters::dynamodb::schema::{KeySchema, Projection, TABLE_SCHEMA};

/// How long DynamoDB remembers a transaction's client request token.
const TOKEN_WINDOW: Duration = Duration::from_secs(600);
/// Items a scan returns per page when the caller sets no limit.
const SCAN_PAGE: usize = 1000;

type Key = (String, String);
/// An index entry: its partition and sort key, then the table's key.
type IndexKey = (String, String, String, String);

#[derive(Default)]
struct State {
    items: BTreeMap<Key, Item>,
    /// One ordered set of entries per index of the schema.
    indexes: Vec<BTreeSet<IndexKey>>,
    tokens: HashMap<String, Instant>,
    token_order: VecDeque<(Instant, String)>,
}

pub struct MemoryTable {
    schema: &'static KeySchema,
    state: Mutex<State>,
}

impl Default for MemoryTable {
    fn default() -> Self {
        MemoryTable::new()
    }
}

fn failed(operation: &'static str, reason: impl Into<String>) -> TableError {
    TableError::Failed { operation, source: reason.into().into() }
}

fn string_of(item: &Item, attribute: &str) -> Option<String> {
    match item.get(attribute) {
        Some(AttributeValue::S(text)) => Some(text.clone()),
        _ => None,
    }
}

impl MemoryTable {
    /// An empty table with the service's key schema and indexes.
    pub fn new() -> MemoryTable {
        MemoryTable {
            schema: &TABLE_SCHEMA,
            state: Mutex::new(State { indexes: vec![BTreeSet::new(); TABLE_SCHEMA.indexes.len()], ..State::default() }),
        }
    }

    fn lock(&self, operation: &'static str) -> Result<MutexGuard<'_, State>, TableError> {
        self.state.lock().map_err(|_| failed(operation, "the memory table's lock was poisoned by a panic"))
    }

    fn key_of(&self, item: &Item, operation: &'static str) -> Result<Key, TableError> {
        match (string_of(item, self.schema.pk), string_of(item, self.schema.sk)) {
            (Some(pk), Some(sk)) => Ok((pk, sk)),
            _ => Err(failed(operation, "ValidationException: the key is missing or not a string")),
        }
    }

    fn index_key(&self, index: usize, item: &Item, key: &Key) -> Option<IndexKey> {
        let definition = &self.schema.indexes[index];
        let pk = string_of(item, definition.pk)?;
        let sk = string_of(item, definition.sk)?;
        Some((pk, sk, key.0.clone(), key.1.clone()))
    }

    /// Replaces (or, with `None`, deletes) an item, keeping the indexes.
    fn store(&self, state: &mut State, key: Key, item: Option<Item>) {
        let old = match item {
            Some(item) => state.items.insert(key.clone(), item),
            None => state.items.remove(&key),
        };
        for index in 0..self.schema.indexes.len() {
            if let Some(entry) = old.as_ref().and_then(|old| self.index_key(index, old, &key)) {
                state.indexes[index].remove(&entry);
            }
            if let Some(entry) = state.items.get(&key).and_then(|new| self.index_key(index, new, &key)) {
                state.indexes[index].insert(entry);
            }
        }
    }

    /// The item `write` would leave, or why it cannot.
    fn written(&self, state: &State, write: &Write, operation: &'static str) -> Result<(Key, Written), TableError> {
        let (key, condition) = match write {
            Write::Put { item, condition } => (self.key_of(item, operation)?, condition.as_ref()),
            Write::Update { key, condition, .. } => (self.key_of(key, operation)?, condition.as_ref()),
            Write::Check { key, condition } => (self.key_of(key, operation)?, Some(condition)),
        };
        let current = state.items.get(&key);
        if let Some(condition) = condition
            && !holds(condition, current)
        {
            return Ok((key, Written::ConditionFailed(current.cloned())));
        }
        let after = match write {
            Write::Put { item, .. } => Some(item.iter().map(|(k, v)| (k.clone(), normalized(v))).collect()),
            Write::Update { key: key_item, changes, .. } => {
                let base = current.cloned().unwrap_or_else(|| key_item.clone());
                Some(apply(changes, base).map_err(|e| failed(operation, format!("ValidationException: {e}")))?)
            }
            Write::Check { .. } => None,
        };
        Ok((key, Written::Item(after)))
    }

    fn remember_token(state: &mut State, token: &str) {
        let now = Instant::now();
        while state.token_order.front().is_some_and(|(at, _)| now.duration_since(*at) > TOKEN_WINDOW) {
            if let Some((_, old)) = state.token_order.pop_front() {
                state.tokens.remove(&old);
            }
        }
        state.tokens.insert(token.to_owned(), now);
        state.token_order.push_back((now, token.to_owned()));
    }

    /// Every item, in key order (tests and the audit of an embedded store).
    pub fn items(&self) -> Vec<Item> {
        self.state.lock().map(|s| s.items.values().cloned().collect()).unwrap_or_default()
    }
}

enum Written {
    /// The item after the write; `None` for a condition check.
    Item(Option<Item>),
    ConditionFailed(ConditionFailed),
}

#[async_trait]
impl Table for MemoryTable {
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
        let key = self.key_of(&key, "get item")?;
        Ok(self.lock("get item")?.items.get(&key).cloned())
    }

    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        if keys.len() > 100 {
            return Err(failed("batch get item", "ValidationException: at most 100 keys"));
        }
        let keys = keys.iter().map(|k| self.key_of(k, "batch get item")).collect::<Result<Vec<_>, _>>()?;
        let state = self.lock("batch get item")?;
        Ok(keys.iter().filter_map(|k| state.items.get(k).cloned()).collect())
    }

    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
        let mut state = self.lock("put item")?;
        let write = Write::Put { item, condition };
        match self.written(&state, &write, "put item")? {
            (_, Written::ConditionFailed(old)) => Ok(Err(old)),
            (key, Written::Item(after)) => {
                self.store(&mut state, key, after);
                Ok(Ok(()))
            }
        }
    }

    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError> {
        let mut state = self.lock("update item")?;
        let write = Write::Update { key, changes, condition };
        match self.written(&state, &write, "update item")? {
            (_, Written::ConditionFailed(old)) => Ok(Err(old)),
            (key, Written::Item(after)) => {
                let new = after.clone().unwrap_or_default();
                self.store(&mut state, key, after);
                Ok(Ok(new))
            }
        }
    }

    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
        const OPERATION: &str = "transact write items";
        if writes.is_empty() || writes.len() > 100 {
            return Err(failed(OPERATION, "ValidationException: 1 to 100 writes per transaction"));
        }
        let mut state = self.lock(OPERATION)?;
        if state.tokens.contains_key(token) {
            return Ok(Transacted::Committed);
        }
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in &writes {
            let (key, written) = self.written(&state, write, OPERATION)?;
            if outcomes.iter().any(|(k, _)| *k == key) {
                return Err(failed(OPERATION, "ValidationException: two operations on one item"));
            }
            outcomes.push((key, written));
        }
        if outcomes.iter().any(|(_, w)| matches!(w, Written::ConditionFailed(_))) {
            let reasons = outcomes
                .into_iter()
                .map(|(_, written)| match written {
                    Written::ConditionFailed(old) => Reason::ConditionFailed(old),
                    Written::Item(_) => Reason::None,
                })
                .collect();
            return Ok(Transacted::Cancelled(reasons));
        }
        for (key, written) in outcomes {
            if let Written::Item(Some(item)) = written {
                self.store(&mut state, key, Some(item));
            }
        }
        Self::remember_token(&mut state, token);
        Ok(Transacted::Committed)
    }

    async fn query(&self, query: Query) -> Result<Page, TableError> {
        let state = self.lock("query")?;
        let limit = query.limit.map_or(usize::MAX, |l| l.max(1) as usize);
        let prefix = query.sort_prefix.as_ref().map(|(_, p)| p.as_str()).unwrap_or("");
        let partition = query.partition.1.as_str();
        // The keys of the partition, in sort order: (position, table key).
        let keys: Vec<(IndexKey, Key)> = match query.index {
            None => state
                .items
                .range((partition.to_owned(), String::new())..)
                .take_while(|((pk, _), _)| pk == partition)
                .map(|(key, _)| ((key.0.clone(), key.1.clone(), key.0.clone(), key.1.clone()), key.clone()))
                .collect(),
            Some(name) => {
                let index = self
                    .schema
                    .indexes
                    .iter()
                    .position(|i| i.name == name)
                    .ok_or_else(|| failed("query", format!("ResourceNotFoundException: no index {name}")))?;
                let from = (partition.to_owned(), String::new(), String::new(), String::new());
                state.indexes[index]
                    .range((Bound::Included(from), Bound::Unbounded))
                    .take_while(|entry| entry.0 == partition)
                    .map(|entry| (entry.clone(), (entry.2.clone(), entry.3.clone())))
                    .collect()
            }
        };
        let between = |sort: &str| {
            query.sort_between.as_ref().is_none_or(|(_, from, to)| from.as_str() <= sort && sort <= to.as_str())
        };
        let mut keys: Vec<(IndexKey, Key)> =
            keys.into_iter().filter(|(position, _)| position.1.starts_with(prefix) && between(&position.1)).collect();
        if query.newest_first {
            keys.reverse();
        }
        // Resume after where the exclusive start key sorts, as DynamoDB
        // does, whether or not an item has that key (any more).
        if let Some(start) = &query.start {
            let (pk, sk) = self.key_of(start, "query")?;
            let text = |name: &str| match start.get(name) {
                Some(AttributeValue::S(value)) => Some(value.clone()),
                _ => None,
            };
            let after: Option<IndexKey> = match query.index {
                None => Some((pk.clone(), sk.clone(), pk, sk)),
                Some(name) => self
                    .schema
                    .indexes
                    .iter()
                    .find(|i| i.name == name)
                    .and_then(|index| Some((text(index.pk)?, text(index.sk)?, pk, sk))),
            };
            let Some(after) = after else {
                return Err(failed("query", "ValidationException: the start key lacks the index's keys".to_owned()));
            };
            keys.retain(|(position, _)| if query.newest_first { *position < after } else { *position > after });
        }
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = match (more, keys.last()) {
            (true, Some((position, key))) => {
                let mut next = Item::new();
                next.insert(self.schema.pk.to_owned(), AttributeValue::S(key.0.clone()));
                next.insert(self.schema.sk.to_owned(), AttributeValue::S(key.1.clone()));
                if let Some(name) = query.index
                    && let Some(definition) = self.schema.indexes.iter().find(|i| i.name == name)
                {
                    next.insert(definition.pk.to_owned(), AttributeValue::S(position.0.clone()));
                    next.insert(definition.sk.to_owned(), AttributeValue::S(position.1.clone()));
                }
                Some(next)
            }
            _ => None,
        };
        let projection = query.index.and_then(|name| self.schema.indexes.iter().find(|i| i.name == name));
        let items = keys
            .iter()
            .filter_map(|(_, key)| state.items.get(key))
            .filter(|item| query.filter.as_ref().is_none_or(|f| holds(f, Some(item))))
            .map(|item| match projection {
                // An index that projects keys returns the table's and its own.
                Some(index) if index.projection == Projection::KeysOnly => item
                    .iter()
                    .filter(|(name, _)| [self.schema.pk, self.schema.sk, index.pk, index.sk].contains(&name.as_str()))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect(),
                _ => item.clone(),
            })
            .collect();
        Ok(Page { items, next })
    }

    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
        let state = self.lock("scan")?;
        let from = match &start {
            Some(start) => Bound::Excluded(self.key_of(start, "scan")?),
            None => Bound::Unbounded,
        };
        let mut page: Vec<(&Key, &Item)> = state.items.range((from, Bound::Unbounded)).take(SCAN_PAGE + 1).collect();
        let more = page.len() > SCAN_PAGE;
        page.truncate(SCAN_PAGE);
        let next = match (more, page.last()) {
            (true, Some(((pk, sk), _))) => Some(Item::from([
                (self.schema.pk.to_owned(), AttributeValue::S(pk.clone())),
                (self.schema.sk.to_owned(), AttributeValue::S(sk.clone())),
            ])),
            _ => None,
        };
        Ok(Page { items: page.into_iter().map(|(_, item)| item.clone()).collect(), next })
    }
}
