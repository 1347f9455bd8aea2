//! Settlement's writes on a batch: the claim that starts an attempt, and
//! the attempt's fenced writes (release, settle, refuse), each conditioned
//! on the attempt still holding the batch (`attempts` is its number). The
//! outbox: batches not final yet (or refunded, a look at the exchange to
//! come), and the reconciler's record of re-sends.
//!
//! Every one of these writes marks the batch with a token of its own. Its
//! reply can be lost after it applied; the SDK then sends it again, and the
//! resend's condition fails on the very state it wrote. Without the mark
//! that reads as someone else's write (a claim as "another attempt holds
//! the batch", waiting out the lease); with it, as what it is.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::item::{self, Item, batch_key, batch_of, ms, n_int, s};
use super::table::{Changes, Cond, ConditionFailed, Query};
use super::{DynamoStore, infra};
use crate::domain::{Batch, BatchId, BatchStatus};
use crate::ports::{Claim, Fence, InfraError, Outbox, Refund, Settlements};

/// Longest refusal reason kept on the batch.
const REASON_LIMIT: usize = 500;

fn status(value: BatchStatus) -> aws_sdk_dynamodb::types::AttributeValue {
    s(value.as_str())
}

/// Held by `attempt`: `SUBMITTING`, and claimed by that attempt last.
fn held_by(attempt: u32) -> Cond {
    Cond::eq("status", status(BatchStatus::Submitting)).and(Cond::eq("attempts", n_int(attempt)))
}

/// `Refused`, its refunds still waiting for the refusal to be confirmed,
/// and nobody credited yet.
fn refusal_unconfirmed() -> Cond {
    Cond::eq("status", status(BatchStatus::Refused))
        .and(Cond::exists(item::REFUNDS_FROM))
        .and(Cond::eq("refunded", n_int(0u64)).or(Cond::not_exists("refunded")))
}

/// What a fenced write came to.
fn fence(id: BatchId, result: Result<Item, ConditionFailed>) -> Result<Fence, InfraError> {
    match result {
        Ok(_) => Ok(Fence::Held),
        Err(Some(now)) => {
            let batch = batch_of(&now).map_err(infra("read batch"))?;
            Ok(Fence::Lost { status: batch.status, attempts: batch.attempts })
        }
        Err(None) => Err(InfraError::new("write batch", format!("batch {id} does not exist"))),
    }
}

/// The attribute a batch write marks the batch with.
const WRITE_TOKEN: &str = "write_token";

impl DynamoStore {
    /// A conditional update of a batch, marked: a failed condition on an
    /// item that carries this write's own mark is this write, applied by an
    /// earlier send whose reply was lost, and answered as applied.
    async fn update_batch(
        &self,
        id: BatchId,
        changes: Changes,
        condition: Cond,
    ) -> Result<Result<Item, ConditionFailed>, InfraError> {
        let token = ulid::Ulid::new().to_string();
        let changes = changes.set(WRITE_TOKEN, s(&token));
        Ok(match self.table.update(batch_key(id), changes, Some(condition)).await? {
            Err(Some(item)) if item::get_s(&item, WRITE_TOKEN).is_ok_and(|mark| mark == token) => Ok(item),
            result => result,
        })
    }

    async fn fenced_write(&self, id: BatchId, attempt: u32, changes: Changes) -> Result<Fence, InfraError> {
        let result = self.update_batch(id, changes, held_by(attempt)).await?;
        fence(id, result)
    }
}

#[async_trait]
impl Settlements for DynamoStore {
    async fn batch(&self, id: BatchId) -> Result<Option<Batch>, InfraError> {
        self.read_batch(id).await
    }

    async fn claim_batch(
        &self,
        id: BatchId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Claim, InfraError> {
        let changes = Changes::new()
            .set("status", status(BatchStatus::Submitting))
            .set("lease_until_ms", ms(lease_until))
            .set("attempted_at_ms", ms(now))
            .add("attempts", n_int(1u64));
        let claimable =
            Cond::eq("status", status(BatchStatus::Ready))
                .or(Cond::eq("status", status(BatchStatus::Submitting)).and(Cond::le("lease_until_ms", ms(now))));
        match self.update_batch(id, changes, claimable).await? {
            Ok(item) => Ok(Claim::Claimed(batch_of(&item).map_err(infra("read batch"))?)),
            Err(None) => Ok(Claim::NotFound),
            Err(Some(item)) => {
                let batch = batch_of(&item).map_err(infra("read batch"))?;
                match (batch.status, batch.lease_until) {
                    (BatchStatus::Refused, _) => Ok(Claim::Refusing(batch)),
                    (status, _) if status.is_final() => Ok(Claim::Finished(status)),
                    (BatchStatus::Submitting, Some(until)) => Ok(Claim::Leased { until }),
                    (status, _) => Err(InfraError::new(
                        "claim batch",
                        format!("batch {id} is {} and could not be claimed", status.as_str()),
                    )),
                }
            }
        }
    }

    async fn release_batch(&self, id: BatchId, attempt: u32, now: OffsetDateTime) -> Result<Fence, InfraError> {
        self.fenced_write(id, attempt, Changes::new().set("lease_until_ms", ms(now))).await
    }

    async fn settle_batch(&self, id: BatchId, attempt: u32, exchange_order_id: &str) -> Result<Fence, InfraError> {
        let changes = Changes::new()
            .set("status", status(BatchStatus::Settled))
            .set("exchange_order_id", s(exchange_order_id))
            .remove("lease_until_ms")
            .remove(item::OPEN_PK)
            .remove(item::OPEN_SK);
        self.fenced_write(id, attempt, changes).await
    }

    async fn refuse_batch(
        &self,
        id: BatchId,
        attempt: u32,
        reason: &str,
        refunds_from: Option<OffsetDateTime>,
    ) -> Result<Fence, InfraError> {
        let reason: String = reason.chars().take(REASON_LIMIT).collect();
        let mut changes = Changes::new()
            .set("status", status(BatchStatus::Refused))
            .set("refusal", s(reason))
            .remove("lease_until_ms");
        if let Some(from) = refunds_from {
            changes = changes.set(item::REFUNDS_FROM, ms(from));
        }
        self.fenced_write(id, attempt, changes).await
    }

    async fn confirm_refusal(&self, id: BatchId) -> Result<bool, InfraError> {
        let changes = Changes::new().remove(item::REFUNDS_FROM);
        Ok(self.update_batch(id, changes, refusal_unconfirmed()).await?.is_ok())
    }

    async fn settle_refused(&self, id: BatchId, exchange_order_id: &str) -> Result<bool, InfraError> {
        let changes = Changes::new()
            .set("status", status(BatchStatus::Settled))
            .set("exchange_order_id", s(exchange_order_id))
            .remove(item::REFUNDS_FROM)
            .remove(item::OPEN_PK)
            .remove(item::OPEN_SK);
        Ok(self.update_batch(id, changes, refusal_unconfirmed()).await?.is_ok())
    }

    async fn refund_batch(&self, id: BatchId, max_orders: u32) -> Result<Refund, InfraError> {
        self.refund(id, max_orders).await
    }

    async fn record_recheck(
        &self,
        batch: &Batch,
        late_fill: Option<&str>,
        next: Option<OffsetDateTime>,
    ) -> Result<bool, InfraError> {
        let seen = match batch.rechecks {
            0 => Cond::eq("rechecks", n_int(0u64)).or(Cond::not_exists("rechecks")),
            seen => Cond::eq("rechecks", n_int(seen)),
        };
        let unchanged = Cond::eq("status", status(BatchStatus::Refunded)).and(Cond::exists(item::RECHECK_AT)).and(seen);
        let mut changes = Changes::new().add(item::RECHECKS, n_int(1u64));
        changes = match (late_fill, next) {
            (Some(fill), _) => changes.set(item::LATE_FILL, s(fill)),
            (None, Some(next)) => changes.set(item::RECHECK_AT, ms(next)),
            (None, None) => changes,
        };
        if late_fill.is_some() || next.is_none() {
            // No look left: out of the outbox.
            changes = changes.remove(item::RECHECK_AT).remove(item::OPEN_PK).remove(item::OPEN_SK);
        }
        Ok(self.update_batch(batch.id, changes, unchanged).await?.is_ok())
    }
}

#[async_trait]
impl Outbox for DynamoStore {
    /// Every batch the open-batches index lists, read from the table: the
    /// index holds only keys (an entry written once when a batch forms and
    /// once when it ends, never as settlement moves it), and lags the table,
    /// so a batch read out of the outbox here is left out.
    async fn open_batches(&self) -> Result<Vec<Batch>, InfraError> {
        let mut keys = Vec::new();
        for partition in item::open_partitions() {
            let mut start = None;
            loop {
                let query = Query {
                    index: Some(item::OPEN_BATCHES_INDEX),
                    partition: (item::OPEN_PK, partition.clone()),
                    start,
                    ..Query::default()
                };
                let page = self.table.query(query).await?;
                for found in &page.items {
                    let pk = item::get_s(found, item::PK).map_err(infra("read open batch"))?;
                    let mut key = item::key(pk.to_owned(), "BATCH");
                    key.retain(|name, _| name == item::PK || name == item::SK);
                    keys.push(key);
                }
                start = page.next;
                if start.is_none() {
                    break;
                }
            }
        }
        let mut batches = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            for found in self.table.get_many(chunk.to_vec()).await? {
                let batch = batch_of(&found).map_err(infra("read batch"))?;
                if batch.in_outbox() {
                    batches.push(batch);
                }
            }
        }
        batches.sort_by_key(|b| (b.created_at, b.id));
        Ok(batches)
    }

    async fn note_resent(&self, batch: &Batch, now: OffsetDateTime) -> Result<bool, InfraError> {
        let resends = match batch.resends {
            0 => Cond::eq("resends", n_int(0u64)).or(Cond::not_exists("resends")),
            seen => Cond::eq("resends", n_int(seen)),
        };
        let unchanged =
            Cond::eq("status", status(batch.status)).and(Cond::eq("attempts", n_int(batch.attempts))).and(resends);
        let changes = Changes::new().set("resent_at_ms", ms(now)).add("resends", n_int(1u64));
        Ok(self.update_batch(batch.id, changes, unchanged).await?.is_ok())
    }

    async fn withdraw_resent(&self, batch: &Batch, noted_at: OffsetDateTime) -> Result<bool, InfraError> {
        let noted = Cond::eq("resends", n_int(batch.resends + 1)).and(Cond::eq("resent_at_ms", ms(noted_at)));
        let restored = match batch.resent_at {
            Some(at) => Changes::new().set("resent_at_ms", ms(at)),
            None => Changes::new().remove("resent_at_ms"),
        };
        let changes = restored.set("resends", n_int(batch.resends));
        Ok(self.update_batch(batch.id, changes, noted).await?.is_ok())
    }
}
