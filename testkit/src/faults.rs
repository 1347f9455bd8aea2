//! A table that misbehaves on purpose, around a real one: what DynamoDB
//! does under contention (transactions cancelled with `TransactionConflict`,
//! throttling) and on a flaky network (a write applied whose reply is lost,
//! or lost and sent again by the SDK; a request that fails before it is
//! sent). Which request suffers what is a
//! test's decision, through [`FaultPlan`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use shared::adapters::dynamodb::table::{
    Changes, Cond, ConditionFailed, Item, Page, Query, Reason, Table, TableError, Transacted, Write,
};

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Cancelled by `TransactionConflict` (transactions), or refused as a
    /// conflict (single writes): nothing applied.
    Conflict,
    /// Throttled: nothing applied.
    Throttle,
    /// Failed before it was sent: nothing applied.
    FailBefore,
    /// Applied, and the reply lost: the caller sees no answer.
    LoseReply,
    /// Applied, the reply lost, and sent again as the SDK does on its own:
    /// the caller sees only the second send's answer (a conditional write's
    /// condition failing on the state the first one wrote).
    Resent,
    /// Sent, and no answer: not applied yet (it may still arrive later, so
    /// the caller cannot know it never will).
    NoAnswer,
}

/// The kinds of request a plan may treat differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Put,
    Update,
    Transact,
    Query,
    Scan,
}

/// Decides each request's fault; called once per request.
pub trait FaultPlan: Send + Sync {
    fn fault(&self, operation: Operation) -> Fault;
}

impl<F: Fn(Operation) -> Fault + Send + Sync> FaultPlan for F {
    fn fault(&self, operation: Operation) -> Fault {
        self(operation)
    }
}

/// A storm on transactions: `conflicts` of every `period` are cancelled by
/// conflicts, and every `lost_reply_period`-th one that goes through loses
/// its reply.
pub struct Storm {
    pub conflicts: u64,
    pub period: u64,
    pub lost_reply_period: u64,
    transactions: AtomicU64,
    commits: AtomicU64,
}

impl Storm {
    pub fn new(conflicts: u64, period: u64, lost_reply_period: u64) -> Storm {
        Storm { conflicts, period, lost_reply_period, transactions: AtomicU64::new(0), commits: AtomicU64::new(0) }
    }
}

impl FaultPlan for Storm {
    fn fault(&self, operation: Operation) -> Fault {
        if operation != Operation::Transact {
            return Fault::None;
        }
        let n = self.transactions.fetch_add(1, Ordering::Relaxed);
        if self.period > 0 && n % self.period < self.conflicts {
            return Fault::Conflict;
        }
        let commit = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if self.lost_reply_period > 0 && commit.is_multiple_of(self.lost_reply_period) {
            return Fault::LoseReply;
        }
        Fault::None
    }
}

/// Counts of the faults a table injected.
#[derive(Debug, Default)]
pub struct Injected {
    pub conflicts: AtomicU64,
    pub throttles: AtomicU64,
    pub failures: AtomicU64,
    pub lost_replies: AtomicU64,
}

pub struct FaultyTable {
    inner: Arc<dyn Table>,
    plan: Arc<dyn FaultPlan>,
    pub injected: Injected,
    /// Tokens of transactions that committed: DynamoDB answers their
    /// resends from the token, so no conflict is injected in front of them
    /// (their replies can still be lost, or throttled).
    committed: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl FaultyTable {
    pub fn new(inner: Arc<dyn Table>, plan: Arc<dyn FaultPlan>) -> FaultyTable {
        FaultyTable { inner, plan, injected: Injected::default(), committed: Default::default() }
    }

    fn before(&self, operation: Operation) -> Result<Fault, TableError> {
        let fault = self.plan.fault(operation);
        let injected = |reason: &str| reason.to_owned().into();
        match fault {
            Fault::Throttle => {
                self.injected.throttles.fetch_add(1, Ordering::Relaxed);
                Err(TableError::Throttled { operation: "injected", source: injected("throttled (injected)") })
            }
            Fault::FailBefore => {
                self.injected.failures.fetch_add(1, Ordering::Relaxed);
                Err(TableError::Failed { operation: "injected", source: injected("failed before sending (injected)") })
            }
            Fault::NoAnswer => {
                self.injected.lost_replies.fetch_add(1, Ordering::Relaxed);
                Err(TableError::Ambiguous { operation: "injected", source: injected("no answer (injected)") })
            }
            // Reads have nothing to conflict on; a conflicting single write is
            // refused before anything is applied, as the SDK table reports it.
            Fault::Conflict if operation != Operation::Transact => {
                self.injected.conflicts.fetch_add(1, Ordering::Relaxed);
                Err(TableError::Throttled {
                    operation: "injected",
                    source: injected("TransactionConflictException (injected)"),
                })
            }
            other => Ok(other),
        }
    }

    /// The first send of a resent write: its answer is the one lost.
    fn resent<T>(&self, first: Result<T, TableError>) -> Result<(), TableError> {
        self.injected.lost_replies.fetch_add(1, Ordering::Relaxed);
        first.map(|_| ())
    }

    fn after<T>(&self, fault: Fault, result: Result<T, TableError>) -> Result<T, TableError> {
        match (fault, result) {
            (Fault::LoseReply, Ok(_)) => {
                self.injected.lost_replies.fetch_add(1, Ordering::Relaxed);
                Err(TableError::Ambiguous { operation: "injected", source: "the reply was lost (injected)".into() })
            }
            (_, result) => result,
        }
    }
}

#[async_trait]
impl Table for FaultyTable {
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
        let fault = self.before(Operation::Get)?;
        let result = self.inner.get(key).await;
        self.after(fault, result)
    }

    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        let fault = self.before(Operation::Get)?;
        let result = self.inner.get_many(keys).await;
        self.after(fault, result)
    }

    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
        let fault = self.before(Operation::Put)?;
        if fault == Fault::Resent {
            self.resent(self.inner.put(item.clone(), condition.clone()).await)?;
        }
        let result = self.inner.put(item, condition).await;
        self.after(fault, result)
    }

    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError> {
        let fault = self.before(Operation::Update)?;
        if fault == Fault::Resent {
            self.resent(self.inner.update(key.clone(), changes.clone(), condition.clone()).await)?;
        }
        let result = self.inner.update(key, changes, condition).await;
        self.after(fault, result)
    }

    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
        let committed = self.committed.lock().unwrap().contains(token);
        let fault = self.before(Operation::Transact)?;
        if fault == Fault::Conflict && !committed {
            self.injected.conflicts.fetch_add(1, Ordering::Relaxed);
            return Ok(Transacted::Cancelled(vec![Reason::Conflict; writes.len()]));
        }
        if fault == Fault::Resent {
            let first = self.inner.transact(writes.clone(), token).await;
            if matches!(first, Ok(Transacted::Committed)) {
                self.committed.lock().unwrap().insert(token.to_owned());
            }
            self.resent(first)?;
        }
        let result = self.inner.transact(writes, token).await;
        if matches!(result, Ok(Transacted::Committed)) {
            self.committed.lock().unwrap().insert(token.to_owned());
        }
        self.after(fault, result)
    }

    async fn query(&self, query: Query) -> Result<Page, TableError> {
        let fault = self.before(Operation::Query)?;
        let result = self.inner.query(query).await;
        self.after(fault, result)
    }

    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
        let fault = self.before(Operation::Scan)?;
        let result = self.inner.scan(start).await;
        self.after(fault, result)
    }
}
