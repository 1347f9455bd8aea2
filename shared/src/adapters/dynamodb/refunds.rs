//! Refunding a refused batch: each member order's cost goes back to its
//! owner once, in one transaction per order that marks the order refunded
//! (only if it was not), credits the account, and counts it on the batch
//! (only while the batch is `REFUSED`). A call refunds a bounded number of
//! orders and leaves a cursor on the batch (the pool, then the last order),
//! so the next call resumes where it stopped; when the count reaches the
//! batch's, the batch is `REFUNDED`.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{
    self, CANCELED_AT, Item, account_key, batch_key, batch_of, get_s, get_u64, members_partitions, n, n_int, order_key,
    order_of, s,
};
use super::table::{Changes, Cond, Query, Reason, Transacted, Write};
use super::{DynamoStore, infra, unexpected};
use crate::domain::{Batch, BatchId, BatchStatus, Order};
use crate::ports::{InfraError, Refund};

/// The last order refunded, on the batch item: where the next call resumes
/// (which of the batch's pools, and the order's key there).
const CURSOR_POOL: &str = "refund_cursor_pool";
const CURSOR_PK: &str = "refund_cursor_pk";
const CURSOR_SK: &str = "refund_cursor_sk";
/// The token of the refund that credited an order, on the order.
const REFUND_TOKEN: &str = "refund_token";

enum Credited {
    Now,
    /// Refunded before (by an earlier or concurrent call).
    Before,
    /// The batch is no longer `REFUSED`: someone finished it.
    BatchMoved,
}

impl DynamoStore {
    pub(super) async fn refund(&self, id: BatchId, max_orders: u32) -> Result<Refund, InfraError> {
        let item = self
            .table
            .get(batch_key(id))
            .await?
            .ok_or_else(|| InfraError::new("refund batch", format!("batch {id} does not exist")))?;
        let batch = batch_of(&item).map_err(infra("read batch"))?;
        match batch.status {
            BatchStatus::Refunded => return Ok(Refund { finished: true, ..Refund::default() }),
            BatchStatus::Refused => {}
            other => {
                return Err(InfraError::new(
                    "refund batch",
                    format!("batch {id} is {} and cannot be refunded", other.as_str()),
                ));
            }
        }
        let partitions = members_partitions(&batch);
        let mut pool = get_u64(&item, CURSOR_POOL).map_or(0, |p| usize::try_from(p).unwrap_or(0));
        let mut start = match (get_s(&item, CURSOR_PK), get_s(&item, CURSOR_SK), partitions.get(pool)) {
            (Ok(pk), Ok(sk), Some(partition)) => Some(Item::from([
                (item::PK.to_owned(), s(pk)),
                (item::SK.to_owned(), s(sk)),
                (item::MEMBERS_PK.to_owned(), s(partition.as_str())),
                (item::MEMBERS_SK.to_owned(), s(sk)),
            ])),
            _ => None,
        };
        let mut refund = Refund::default();
        'pools: while pool < partitions.len() && refund.orders < max_orders {
            let query = Query {
                index: Some(item::MEMBERS_INDEX),
                partition: (item::MEMBERS_PK, partitions[pool].clone()),
                filter: Some(Cond::not_exists("refunded")),
                limit: Some(max_orders.max(1)),
                start: start.take(),
                ..Query::default()
            };
            let page = self.table.query(query).await?;
            for member in &page.items {
                if refund.orders >= max_orders {
                    break 'pools;
                }
                // The index projects whole order items: the adapter's own mapping reads them.
                let (order, _) = order_of(member).map_err(infra("read batch member"))?;
                match self.refund_order(&batch, pool, &order).await? {
                    Credited::Now => {
                        // Counted as it commits: a refund that fails midway
                        // resumes past what it credited, counting it once.
                        crate::metrics::orders_refunded(1);
                        refund.orders += 1;
                        refund.usd = refund.usd.checked_add(order.cost).ok_or_else(|| {
                            InfraError::new("refund batch", "the refunded total cannot be held exactly")
                        })?;
                    }
                    Credited::Before => {}
                    Credited::BatchMoved => break 'pools,
                }
            }
            start = page.next;
            if start.is_none() {
                pool += 1;
            }
        }
        let reached_end = pool >= partitions.len();
        refund.finished = self.finish_refund(id, reached_end).await?;
        Ok(refund)
    }

    /// `REFUNDED` once every member is; a pass that reached the end of the
    /// members without that starts over next time (the index is eventually
    /// consistent: a member may have shown up behind the cursor).
    async fn finish_refund(&self, id: BatchId, reached_end: bool) -> Result<bool, InfraError> {
        let batch = self
            .read_batch(id)
            .await?
            .ok_or_else(|| InfraError::new("refund batch", format!("batch {id} does not exist")))?;
        match batch.status {
            BatchStatus::Refunded => return Ok(true),
            BatchStatus::Refused if batch.refunded == batch.count => {}
            _ => {
                if reached_end {
                    let restart = Changes::new().remove(CURSOR_POOL).remove(CURSOR_PK).remove(CURSOR_SK);
                    let refused = Cond::eq("status", s(BatchStatus::Refused.as_str()));
                    self.table.update(batch_key(id), restart, Some(refused)).await?.ok();
                }
                return Ok(false);
            }
        }
        let done = Changes::new()
            .set("status", s(BatchStatus::Refunded.as_str()))
            .remove(item::OPEN_PK)
            .remove(item::OPEN_SK)
            .remove(CURSOR_POOL)
            .remove(CURSOR_PK)
            .remove(CURSOR_SK);
        let all_back =
            Cond::eq("status", s(BatchStatus::Refused.as_str())).and(Cond::eq("refunded", n_int(batch.count)));
        match self.table.update(batch_key(id), done, Some(all_back)).await? {
            Ok(_) => Ok(true),
            // Another call finished it first.
            Err(now) => Ok(now.as_ref().and_then(|i| get_s(i, "status").ok()) == Some(BatchStatus::Refunded.as_str())),
        }
    }

    /// Credits one member order's cost, once.
    async fn refund_order(&self, batch: &Batch, pool: usize, order: &Order) -> Result<Credited, InfraError> {
        let order_key = order_key(&order.user, order.id);
        let (cursor_pk, cursor_sk) = (order_key[item::PK].clone(), order_key[item::SK].clone());
        // The token marks the order: a cancellation that returns it marked
        // with this token is this very refund, committed by an earlier send.
        let token = ulid::Ulid::new().to_string();
        const ORDER: usize = 0;
        const BATCH: usize = 2;
        let writes = vec![
            Write::Update {
                key: order_key,
                changes: Changes::new().set("refunded", AttributeValue::Bool(true)).set(REFUND_TOKEN, s(&token)),
                // A canceled order had its cost back already (and left the
                // index; a lagging index may still list it).
                condition: Some(Cond::exists("PK").and(Cond::not_exists("refunded")).and(Cond::not_exists(CANCELED_AT))),
            },
            Write::Update {
                key: account_key(&order.user),
                changes: Changes::new().add("balance_usd", n(order.cost.value())),
                condition: None,
            },
            Write::Update {
                key: batch_key(batch.id),
                changes: Changes::new()
                    .add("refunded", n_int(1u64))
                    .set(CURSOR_POOL, n_int(pool as u64))
                    .set(CURSOR_PK, cursor_pk)
                    .set(CURSOR_SK, cursor_sk),
                // Never while the refusal waits to be confirmed.
                condition: Some(
                    Cond::eq("status", s(BatchStatus::Refused.as_str())).and(Cond::not_exists(item::REFUNDS_FROM)),
                ),
            },
        ];
        match self.transact_idempotent("refund order", &token, &writes).await? {
            Transacted::Committed => Ok(Credited::Now),
            Transacted::Cancelled(reasons) => match (reasons.get(ORDER), reasons.get(BATCH)) {
                (Some(Reason::ConditionFailed(Some(found))), _)
                    if get_s(found, REFUND_TOKEN).is_ok_and(|mark| mark == token) =>
                {
                    Ok(Credited::Now)
                }
                (Some(Reason::ConditionFailed(_)), _) => Ok(Credited::Before),
                (_, Some(Reason::ConditionFailed(_))) => Ok(Credited::BatchMoved),
                _ => Err(InfraError::new("refund order", unexpected(&reasons))),
            },
        }
    }
}
