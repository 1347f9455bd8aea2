//! Canceling a pending order: one transaction marks the order canceled,
//! takes its cost and amount out of its shard's open pool, and credits its
//! cost back to the balance.
//!
//! The shard's write is conditioned on the shard still holding the order's
//! pool (`seq` unchanged): a pool is closed only on its exact totals, so a
//! close and a cancel of one of its orders cannot both commit. Whichever
//! commits first makes the other's condition fail: the close re-reads the
//! shard and decides again without the canceled order; the cancel re-reads
//! the order and finds it in a batch (`409`). The order's write is
//! conditioned on the order not being canceled or refunded, so the money
//! comes back once however many cancels race.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{self, CANCELED_AT, account_key, get_s, ms, n, n_int, order_key, pool_key, timestamp};
use super::table::{Changes, Cond, Reason, Transacted, Write};
use super::{DynamoStore, infra, unexpected};
use crate::domain::{Membership, Order, OrderId, OrderStatus, OrderView, UserId};
use crate::ports::{CancelError, Canceled, InfraError};

/// The token of the cancel that canceled an order, on the order: a cancel
/// whose transaction is cancelled by an order marked with its own token
/// committed in an earlier send.
const CANCEL_TOKEN: &str = "cancel_token";
/// Reads and tries before answering busy: each try follows a read that
/// showed the order still pending in an open pool.
const TRIES: u32 = 5;

impl DynamoStore {
    pub(super) async fn cancel(&self, user: &UserId, id: OrderId) -> Result<Canceled, CancelError> {
        for _ in 0..TRIES {
            let view = self.order_view(user, id).await?.ok_or(CancelError::NotFound)?;
            let order = view.order.clone();
            match view.status {
                OrderStatus::Canceled => return Ok(Canceled { order: view, now: false }),
                OrderStatus::Pending => {}
                _ => return self.not_pending(user, id).await,
            }
            let Membership::Pool { shard, seq } = order.membership else {
                return self.not_pending(user, id).await;
            };
            if !self.pool_is_open(&order, shard, seq).await? {
                // Closed, into a batch or into one the sweep is still
                // gathering (the order shows pending until it is ready).
                return self.not_pending(user, id).await;
            }
            let token = ulid::Ulid::new().to_string();
            let writes = cancel_writes(&order, (shard, seq), &token, self.clock.now());
            match self.transact_idempotent("cancel order", &token, &writes).await? {
                Transacted::Committed => return Ok(Canceled { order: canceled(view), now: true }),
                Transacted::Cancelled(reasons) => match reasons.get(ORDER) {
                    Some(Reason::ConditionFailed(Some(now)))
                        if get_s(now, CANCEL_TOKEN).is_ok_and(|mark| mark == token) =>
                    {
                        return Ok(Canceled { order: canceled(view), now: true });
                    }
                    // Canceled by a racing call, or its pool closed: read
                    // again and answer what it is now.
                    _ if reasons.iter().any(|r| matches!(r, Reason::ConditionFailed(_))) => {}
                    _ => return Err(InfraError::new("cancel order", unexpected(&reasons)).into()),
                },
            }
        }
        Err(CancelError::Busy)
    }

    /// The answer once the order's pool is seen closed. The order was read
    /// before that, so it is read again: a cancel that committed in between
    /// (before the pool closed without it) made it canceled, and the batch
    /// seen is not its own. Read after the close, an order not canceled
    /// never will be (a cancel needs its pool open): it is in the batch.
    async fn not_pending(&self, user: &UserId, id: OrderId) -> Result<Canceled, CancelError> {
        let view = self.order_view(user, id).await?.ok_or(CancelError::NotFound)?;
        match view.status {
            OrderStatus::Canceled => Ok(Canceled { order: view, now: false }),
            _ => Err(CancelError::NotPending(Box::new(view))),
        }
    }

    /// Whether the shard still holds the order's pool (a strongly
    /// consistent read: its `seq` moves on when the pool closes).
    async fn pool_is_open(&self, order: &Order, shard: u32, seq: u64) -> Result<bool, InfraError> {
        let Some(shard_item) = self.table.get(pool_key(&order.coin, shard)).await? else {
            return Err(InfraError::new(
                "cancel order",
                format!("the order's shard {shard} of {} is missing", order.coin),
            ));
        };
        Ok(item::get_u64(&shard_item, "seq").map_err(infra("read pool"))? == seq)
    }
}

const ORDER: usize = 0;

/// The order (first: [`ORDER`]), its shard `(shard, seq)`, its account.
fn cancel_writes(order: &Order, (shard, seq): (u32, u64), token: &str, now: time::OffsetDateTime) -> Vec<Write> {
    vec![
        Write::Update {
            key: order_key(&order.user, order.id),
            // Out of the batch-members index: a refund of the batch its
            // pool may later form never finds it.
            changes: Changes::new()
                .set(CANCELED_AT, timestamp(now))
                .set(CANCEL_TOKEN, AttributeValue::S(token.to_owned()))
                .remove(item::MEMBERS_PK)
                .remove(item::MEMBERS_SK),
            condition: Some(Cond::exists("PK").and(Cond::not_exists(CANCELED_AT)).and(Cond::not_exists("refunded"))),
        },
        Write::Update {
            key: pool_key(&order.coin, shard),
            changes: Changes::new()
                .add("usd", n(-order.cost.value()))
                .add("qty", n(-order.amount.value()))
                .add("count", AttributeValue::N("-1".to_owned()))
                .set("updated_ms", ms(now)),
            condition: Some(Cond::eq("seq", n_int(seq))),
        },
        Write::Update {
            key: account_key(&order.user),
            changes: Changes::new().add("balance_usd", n(order.cost.value())),
            condition: Some(Cond::exists("PK")),
        },
    ]
}

fn canceled(view: OrderView) -> OrderView {
    let order = Order { canceled: true, ..view.order };
    OrderView::new(order, None)
}
