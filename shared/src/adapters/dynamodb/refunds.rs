//! Refunding a refused batch: each member order's cost goes back to its
//! owner once, in one transaction per order that marks the order refunded
//! (only if it was not), credits the account, and counts it on the batch
//! (only while the batch is `REFUSED`). The members are those the records
//! of the pools it closed list (or its one order, bought alone), in order;
//! a call refunds a bounded number of them and leaves a cursor on the batch
//! (the pool, then the last order), so the next call resumes where it
//! stopped; when the count reaches the batch's, the batch is `REFUNDED`,
//! and due for a look at the exchange five minutes later.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{
    self, CANCELED_AT, account_key, batch_key, batch_of, closed_ms, closed_pool_key, get_s, get_u64, members_of, n,
    n_int, order_key, order_of, s,
};
use super::table::{Changes, Cond, Reason, Transacted, Write};
use super::{DynamoStore, infra, unexpected};
use crate::domain::{Batch, BatchId, BatchStatus, Member, Order, OrderId};
use crate::ports::{InfraError, Refund};

/// The last order refunded, on the batch item: where the next call resumes
/// (which of the batch's pools, and the order there).
const CURSOR_POOL: &str = "refund_cursor_pool";
const CURSOR_ORDER: &str = "refund_cursor_order";
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
    /// The members of the batch's `pool`-th pool (or its one order).
    async fn members_of_pool(&self, batch: &Batch, pool: usize) -> Result<Vec<Member>, InfraError> {
        let Some(id) = batch.pools.get(pool) else { return Ok(batch.alone.iter().cloned().collect()) };
        let key = closed_pool_key(&batch.coin, id.shard, closed_ms(batch), id.seq);
        let record = self.table.get(key).await?.ok_or_else(|| {
            InfraError::new("refund batch", format!("the record of pool {} of shard {} is missing", id.seq, id.shard))
        })?;
        members_of(&record).map_err(infra("read a closed pool"))
    }

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
        let pools = batch.pools.len().max(1);
        let mut pool = get_u64(&item, CURSOR_POOL).map_or(0, |p| usize::try_from(p).unwrap_or(0));
        let mut after = get_s(&item, CURSOR_ORDER).ok().and_then(|o| OrderId::parse(o).ok());
        let mut refund = Refund::default();
        'pools: while pool < pools && refund.orders < max_orders {
            for member in self.members_of_pool(&batch, pool).await? {
                if after.is_some_and(|done| member.order <= done) {
                    continue;
                }
                if refund.orders >= max_orders {
                    break 'pools;
                }
                let order = self.table.get(order_key(&member.user, member.order)).await?.ok_or_else(|| {
                    InfraError::new("refund batch", format!("member order {} is missing", member.order))
                })?;
                let order = order_of(&order).map_err(infra("read batch member"))?;
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
            pool += 1;
            after = None;
        }
        refund.finished = self.finish_refund(id).await?;
        Ok(refund)
    }

    /// `REFUNDED` once every member is.
    async fn finish_refund(&self, id: BatchId) -> Result<bool, InfraError> {
        let batch = self
            .read_batch(id)
            .await?
            .ok_or_else(|| InfraError::new("refund batch", format!("batch {id} does not exist")))?;
        match batch.status {
            BatchStatus::Refunded => return Ok(true),
            BatchStatus::Refused if batch.refunded == batch.count => {}
            _ => return Ok(false),
        }
        // It stays in the outbox for its looks at the exchange after the
        // refund (`Batch::recheck_at`).
        let first_look = self.clock.now() + crate::domain::RECHECKS_AFTER_REFUND[0];
        let done = Changes::new()
            .set("status", s(BatchStatus::Refunded.as_str()))
            .set(item::RECHECK_AT, item::ms(first_look))
            .remove(CURSOR_POOL)
            .remove(CURSOR_ORDER);
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
        // The token marks the order: a cancellation that returns it marked
        // with this token is this very refund, committed by an earlier send.
        let token = ulid::Ulid::new().to_string();
        const ORDER: usize = 0;
        const BATCH: usize = 2;
        let writes = vec![
            Write::Update {
                key: order_key(&order.user, order.id),
                changes: Changes::new().set("refunded", AttributeValue::Bool(true)).set(REFUND_TOKEN, s(&token)),
                // A canceled order had its cost back already (it left its
                // pool before the pool closed, so a record never lists it).
                condition: Some(
                    Cond::exists(item::PK).and(Cond::not_exists("refunded")).and(Cond::not_exists(CANCELED_AT)),
                ),
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
                    .set(CURSOR_ORDER, s(order.id.to_string())),
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
