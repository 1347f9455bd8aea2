//! A table and a queue that note the IAM permission each request they
//! receive needs: what a function's code calls, in the terms its policy
//! grants. The emulators enforce no IAM, so this is how a test holds the
//! template's policies to the code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shared::adapters::dynamodb::table::{
    Changes, Cond, ConditionFailed, Item, Page, Query, Table, TableError, Transacted, Write,
};
use shared::domain::BatchId;
use shared::ports::{InfraError, SettleQueue};

/// An IAM action on a resource: `("dynamodb:Query", "table/index/open-batches")`.
/// Resources are named as the template names them: `table`, `table/index/<name>`, `queue`.
pub type Permission = (String, String);

/// The permissions noted so far, shared by a table and a queue.
#[derive(Debug, Clone, Default)]
pub struct Permissions(Arc<Mutex<BTreeSet<Permission>>>);

impl Permissions {
    pub fn new() -> Permissions {
        Permissions::default()
    }

    pub fn used(&self) -> BTreeSet<Permission> {
        self.0.lock().unwrap().clone()
    }

    fn note(&self, action: &str, resource: &str) {
        self.0.lock().unwrap().insert((action.to_owned(), resource.to_owned()));
    }
}

pub struct PermissionsTable {
    inner: Arc<dyn Table>,
    permissions: Permissions,
}

impl PermissionsTable {
    pub fn new(inner: Arc<dyn Table>, permissions: Permissions) -> PermissionsTable {
        PermissionsTable { inner, permissions }
    }

    fn note(&self, action: &str) {
        self.permissions.note(action, "table");
    }
}

#[async_trait]
impl Table for PermissionsTable {
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
        self.note("dynamodb:GetItem");
        self.inner.get(key).await
    }

    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        self.note("dynamodb:BatchGetItem");
        self.inner.get_many(keys).await
    }

    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
        self.note("dynamodb:PutItem");
        self.inner.put(item, condition).await
    }

    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError> {
        self.note("dynamodb:UpdateItem");
        self.inner.update(key, changes, condition).await
    }

    /// `TransactWriteItems` has no action of its own: IAM authorizes each
    /// of its writes as the single-item action it is.
    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
        for write in &writes {
            self.note(match write {
                Write::Put { .. } => "dynamodb:PutItem",
                Write::Update { .. } => "dynamodb:UpdateItem",
                Write::Check { .. } => "dynamodb:ConditionCheckItem",
            });
        }
        self.inner.transact(writes, token).await
    }

    /// A query of an index needs the permission on the index, not the table.
    async fn query(&self, query: Query) -> Result<Page, TableError> {
        match query.index {
            Some(index) => self.permissions.note("dynamodb:Query", &format!("table/index/{index}")),
            None => self.note("dynamodb:Query"),
        }
        self.inner.query(query).await
    }

    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
        self.note("dynamodb:Scan");
        self.inner.scan(start).await
    }
}

/// A settle queue that notes `sqs:SendMessage` and hands the message on.
pub struct PermissionsQueue {
    inner: Arc<dyn SettleQueue>,
    permissions: Permissions,
}

impl PermissionsQueue {
    pub fn new(inner: Arc<dyn SettleQueue>, permissions: Permissions) -> PermissionsQueue {
        PermissionsQueue { inner, permissions }
    }
}

#[async_trait]
impl SettleQueue for PermissionsQueue {
    async fn send(&self, batch: BatchId) -> Result<(), InfraError> {
        self.permissions.note("sqs:SendMessage", "queue");
        self.inner.send(batch).await
    }

    async fn send_after(&self, batch: BatchId, delay: std::time::Duration) -> Result<(), InfraError> {
        self.permissions.note("sqs:SendMessage", "queue");
        self.inner.send_after(batch, delay).await
    }
}
