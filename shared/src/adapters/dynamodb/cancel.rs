//! Canceling a pending order: one transaction marks the order canceled,
//! takes it out of its shard's open pool (its member attribute, its cost
//! and amount), and credits its cost back to the balance.
//!
//! The shard's write is conditioned on the order still being a member: a
//! close puts the shard back without its members, on the condition that the
//! shard is at the version it read, and the cancel moves the version. So a
//! close and a cancel of one of its orders cannot both commit; whichever
//! commits second fails, and reads again (the close decides without the
//! canceled order; the cancel finds the order in a batch: `409`). The
//! order's write is conditioned on the order not being canceled or
//! refunded, and on its shard (a move of crumbs changes it), so the money
//! comes back once however many cancels race.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{
    self, CANCELED_AT, ORDER_SHARD, account_key, get_s, member_attribute, ms, n, n_int, order_key, pool_key, timestamp,
};
use super::table::{Changes, Cond, Reason, Transacted, Write};
use super::{DynamoStore, unexpected};
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
    pub(super) async fn cancel_order_of(&self, user: &UserId, id: OrderId) -> Result<Canceled, CancelError> {
        for _ in 0..TRIES {
            let view = self.order_view(user, id).await?.ok_or(CancelError::NotFound)?;
            match view.status {
                OrderStatus::Canceled => return Ok(Canceled { order: view, now: false }),
                OrderStatus::Pending => {}
                _ => return Err(CancelError::NotPending(Box::new(view))),
            }
            let Membership::Pool { shard, .. } = view.order.membership else {
                return Err(CancelError::NotPending(Box::new(view)));
            };
            let token = ulid::Ulid::new().to_string();
            let writes = cancel_writes(&view.order, shard, &token, self.clock.now());
            match self.transact_idempotent("cancel order", &token, &writes).await? {
                Transacted::Committed => return Ok(Canceled { order: canceled(view), now: true }),
                Transacted::Cancelled(reasons) => match reasons.get(ORDER) {
                    Some(Reason::ConditionFailed(Some(now)))
                        if get_s(now, CANCEL_TOKEN).is_ok_and(|mark| mark == token) =>
                    {
                        return Ok(Canceled { order: canceled(view), now: true });
                    }
                    // Canceled by a racing call, its pool closed, or its
                    // crumbs moved: read again and answer what it is now.
                    _ if reasons.iter().any(|r| matches!(r, Reason::ConditionFailed(_))) => {}
                    _ => return Err(InfraError::new("cancel order", unexpected(&reasons)).into()),
                },
            }
        }
        Err(CancelError::Busy)
    }
}

const ORDER: usize = 0;

/// The order (first: [`ORDER`]), its shard's pool, its account.
fn cancel_writes(order: &Order, shard: u32, token: &str, now: time::OffsetDateTime) -> Vec<Write> {
    let member = member_attribute(order.id);
    vec![
        Write::Update {
            key: order_key(&order.user, order.id),
            changes: Changes::new()
                .set(CANCELED_AT, timestamp(now))
                .set(CANCEL_TOKEN, AttributeValue::S(token.to_owned())),
            condition: Some(
                Cond::exists(item::PK)
                    .and(Cond::not_exists(CANCELED_AT))
                    .and(Cond::not_exists("refunded"))
                    .and(Cond::eq(ORDER_SHARD, n_int(shard))),
            ),
        },
        Write::Update {
            key: pool_key(&order.coin, shard),
            changes: Changes::new()
                .remove(member.clone())
                .add("usd", n(-order.cost.value()))
                .add("qty", n(-order.amount.value()))
                .add("count", AttributeValue::N("-1".to_owned()))
                .add("version", n_int(1u64))
                .set("updated_ms", ms(now)),
            condition: Some(Cond::exists(member)),
        },
        Write::Update {
            key: account_key(&order.user),
            changes: Changes::new().add("balance_usd", n(order.cost.value())),
            condition: Some(Cond::exists(item::PK)),
        },
    ]
}

fn canceled(view: OrderView) -> OrderView {
    let order = Order { canceled: true, ..view.order };
    OrderView::new(order, None)
}
