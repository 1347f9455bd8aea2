//! The few DynamoDB operations the store uses, as one trait with two
//! implementations: the AWS SDK ([`sdk::SdkTable`]) and an in-memory table
//! with the same semantics ([`memory::MemoryTable`]).
//!
//! Conditions and updates are data ([`Cond`], [`Changes`]), not expression
//! strings: the SDK table renders them into DynamoDB expressions, the memory
//! table evaluates them. So the store's protocol (every condition that makes
//! a batch form exactly once) is the same code on both, and the contract
//! suites run it on the embedded table and on both emulators.

pub mod expr;
pub mod intercepted;
pub mod memory;
pub mod sdk;

use std::borrow::Cow;
use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

pub type Item = HashMap<String, AttributeValue>;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An attribute's name: mostly a literal, but a pool's members are
/// attributes named after their orders.
pub type Name = Cow<'static, str>;

/// How a comparison compares. Numbers compare numerically, strings by their
/// UTF-8 bytes; a missing attribute or a type mismatch makes it false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A condition on one item (`ConditionExpression`).
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `attribute_exists(a)`
    Exists(Name),
    /// `attribute_not_exists(a)`
    NotExists(Name),
    Cmp(Name, CmpOp, AttributeValue),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

impl Cond {
    pub fn exists(attribute: impl Into<Name>) -> Cond {
        Cond::Exists(attribute.into())
    }

    pub fn not_exists(attribute: impl Into<Name>) -> Cond {
        Cond::NotExists(attribute.into())
    }

    pub fn eq(attribute: impl Into<Name>, value: AttributeValue) -> Cond {
        Cond::Cmp(attribute.into(), CmpOp::Eq, value)
    }

    pub fn lt(attribute: impl Into<Name>, value: AttributeValue) -> Cond {
        Cond::Cmp(attribute.into(), CmpOp::Lt, value)
    }

    pub fn le(attribute: impl Into<Name>, value: AttributeValue) -> Cond {
        Cond::Cmp(attribute.into(), CmpOp::Le, value)
    }

    pub fn ge(attribute: impl Into<Name>, value: AttributeValue) -> Cond {
        Cond::Cmp(attribute.into(), CmpOp::Ge, value)
    }

    pub fn and(self, other: Cond) -> Cond {
        match self {
            Cond::And(mut all) => {
                all.push(other);
                Cond::And(all)
            }
            first => Cond::And(vec![first, other]),
        }
    }

    pub fn or(self, other: Cond) -> Cond {
        match self {
            Cond::Or(mut any) => {
                any.push(other);
                Cond::Or(any)
            }
            first => Cond::Or(vec![first, other]),
        }
    }
}

/// What an update does to an item (`UpdateExpression`): `SET`, `ADD` (to
/// numbers; a missing attribute counts as 0) and `REMOVE`. An update of a
/// missing item creates it from its key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub set: Vec<(Name, AttributeValue)>,
    pub add: Vec<(Name, AttributeValue)>,
    pub remove: Vec<Name>,
}

impl Changes {
    pub fn new() -> Changes {
        Changes::default()
    }

    pub fn set(mut self, attribute: impl Into<Name>, value: AttributeValue) -> Changes {
        self.set.push((attribute.into(), value));
        self
    }

    pub fn add(mut self, attribute: impl Into<Name>, value: AttributeValue) -> Changes {
        self.add.push((attribute.into(), value));
        self
    }

    pub fn remove(mut self, attribute: impl Into<Name>) -> Changes {
        self.remove.push(attribute.into());
        self
    }
}

/// One write of a transaction. Every write asks for the item as it was when
/// its condition failed (`ReturnValuesOnConditionCheckFailure = ALL_OLD`).
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put { item: Item, condition: Option<Cond> },
    Update { key: Item, changes: Changes, condition: Option<Cond> },
    Check { key: Item, condition: Cond },
}

/// Why one write of a cancelled transaction was cancelled.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// This write was fine; another one cancelled the transaction.
    None,
    /// Its condition failed; the item as it was (`None`: it did not exist).
    ConditionFailed(Option<Item>),
    /// Another transaction or write held the item.
    Conflict,
    /// The item's partition was over its throughput.
    Throttled,
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transacted {
    Committed,
    /// Nothing was written; one reason per write, in order.
    Cancelled(Vec<Reason>),
}

/// A single write whose condition failed: the item as it was.
pub type ConditionFailed = Option<Item>;

/// A `Query` on the table or one of its indexes: one partition, optionally a
/// sort-key prefix, one page.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub index: Option<&'static str>,
    pub partition: (&'static str, String),
    pub sort_prefix: Option<(&'static str, String)>,
    /// Sort keys from the first to the second, both included
    /// (`BETWEEN`).
    pub sort_between: Option<(&'static str, String, String)>,
    /// Applied after the page is read, as DynamoDB's `FilterExpression`.
    pub filter: Option<Cond>,
    pub newest_first: bool,
    pub limit: Option<u32>,
    pub start: Option<Item>,
}

#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Item>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Item>,
}

/// A request that failed. What the caller may conclude depends on which.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Refused before anything was applied (bad request, no such table,
    /// not sent at all): nothing changed.
    #[error("{operation} failed")]
    Failed {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    /// Over the table's or partition's throughput, or (a single write) the
    /// item is held by a transaction: nothing changed; back off.
    #[error("{operation} was throttled")]
    Throttled {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    /// It may or may not have been applied: a timeout or a lost connection
    /// after sending, a 5xx. Only a read (or a resend with the same client
    /// request token) can tell.
    #[error("{operation}: outcome unknown")]
    Ambiguous {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
}

impl TableError {
    pub fn is_throttled(&self) -> bool {
        matches!(self, TableError::Throttled { .. })
    }
}

impl From<TableError> for crate::ports::InfraError {
    fn from(error: TableError) -> Self {
        let operation = match &error {
            TableError::Failed { operation, .. }
            | TableError::Throttled { operation, .. }
            | TableError::Ambiguous { operation, .. } => *operation,
        };
        crate::ports::InfraError::new(operation, error)
    }
}

/// The table: every operation is on one item and atomic, except
/// `transact`, which is atomic over all its writes.
/// Rounds of `BatchGetItem` a read makes before it gives up on the keys
/// DynamoDB keeps leaving unprocessed.
pub const UNPROCESSED_ROUNDS: u32 = 10;

/// Reads every key of `keys` with `round` (one `BatchGetItem`: the items
/// found, and the keys left unprocessed), asking again for what is left,
/// backing off (10 ms doubling to 320 ms), and failing if keys are still
/// left after [`UNPROCESSED_ROUNDS`]. A key left out would read as an item
/// that does not exist (an empty shard, a pending order): a partial answer
/// is never returned as whole.
pub async fn read_every_key<F, Fut>(keys: Vec<Item>, mut round: F) -> Result<Vec<Item>, TableError>
where
    F: FnMut(Vec<Item>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Item>, Vec<Item>), TableError>>,
{
    let mut found = Vec::with_capacity(keys.len());
    let mut left = keys;
    for attempt in 0..=UNPROCESSED_ROUNDS {
        if left.is_empty() {
            return Ok(found);
        }
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10 << attempt.min(5))).await;
        }
        let (items, unprocessed) = round(std::mem::take(&mut left)).await?;
        found.extend(items);
        left = unprocessed;
    }
    if left.is_empty() {
        return Ok(found);
    }
    Err(TableError::Throttled {
        operation: "batch get item",
        source: format!("{} keys still unprocessed after {} rounds", left.len(), UNPROCESSED_ROUNDS + 1).into(),
    })
}

#[async_trait]
pub trait Table: Send + Sync {
    /// A strongly consistent read.
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError>;

    /// Strongly consistent reads of several items in one request
    /// (`BatchGetItem`, at most 100 keys); the items that exist, in no
    /// particular order.
    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError>;

    /// `Err(old)` when the condition failed.
    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError>;

    /// The item after the update, or `Err(old)` when the condition failed.
    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError>;

    /// `TransactWriteItems`. A resend with the same `token` after a commit
    /// answers `Committed` without writing again (DynamoDB keeps tokens for
    /// ten minutes).
    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError>;

    /// One page. Index queries are eventually consistent on DynamoDB.
    async fn query(&self, query: Query) -> Result<Page, TableError>;

    /// One page of every item of the table (the audit).
    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn keys(n: usize) -> Vec<Item> {
        (0..n).map(|i| Item::from([("PK".to_owned(), AttributeValue::S(format!("K#{i}")))])).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn keys_left_unprocessed_are_asked_again_and_never_dropped() {
        // One key left over for three rounds: every key is read.
        let mut rounds = 0;
        let all = read_every_key(keys(5), |mut asked| {
            rounds += 1;
            let left = if rounds <= 3 { asked.split_off(asked.len() - 1) } else { Vec::new() };
            async move { Ok((asked, left)) }
        })
        .await
        .unwrap();
        assert_eq!(all.len(), 5);

        // Keys left over every round: an error, not four items taken for five.
        let result = read_every_key(keys(5), |mut asked| {
            let left = asked.split_off(asked.len() - 1);
            async move { Ok((asked, left)) }
        })
        .await;
        assert!(matches!(result, Err(TableError::Throttled { .. })), "{result:?}");
    }
}
