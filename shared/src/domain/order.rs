use time::OffsetDateTime;

use super::coin::Coin;
use super::ids::{BatchId, IdempotencyKey, OrderId, UserId};
use super::money::Usd;
use super::pooling::placement::Placement;
use super::pooling::{BatchTotals, Member, PoolId};
use super::quantity::{BatchQuantity, Quantity};

/// Where an order is, as recorded on the order itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Membership {
    /// Bought alone: its batch was created with it.
    Own(BatchId),
    /// Pooled on shard `shard` of its coin: a member of that shard's open
    /// pool until a batch closes it (the record of that pool names the
    /// batch). `formed` is the batch the order itself closed its pool into,
    /// when it did (the crossing order, a house top-up).
    Pool { shard: u32, formed: Option<BatchId> },
}

/// An order to place, already priced.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: OrderId,
    pub user: UserId,
    pub coin: Coin,
    pub amount: Quantity,
    pub price: Usd,
    pub cost: Usd,
    pub idempotency_key: Option<IdempotencyKey>,
    pub created_at: OffsetDateTime,
}

impl NewOrder {
    /// The order as placing it this way records it, and the batch it forms
    /// (`READY`, a fresh id, formed `now`) if it forms one: `pools` are the
    /// pools a crossing order closes, its own shard's first.
    pub fn placed(&self, placement: &Placement, pools: Vec<PoolId>, now: OffsetDateTime) -> (Order, Option<Batch>) {
        let shard = pools.first().map_or(0, |pool| pool.shard);
        let (membership, formed) = match placement {
            Placement::OwnBatch => {
                let own = Batch {
                    alone: Some(Member { order: self.id, user: self.user.clone(), placed: self.created_at }),
                    ..Batch::ready(&self.coin, Vec::new(), BatchTotals::of_order(self.cost, self.amount), now)
                };
                (Membership::Own(own.id), Some(own))
            }
            Placement::Join => (Membership::Pool { shard, formed: None }, None),
            Placement::Cross { totals } => {
                let batch = Batch::ready(&self.coin, pools, *totals, now);
                (Membership::Pool { shard, formed: Some(batch.id) }, Some(batch))
            }
        };
        let order = Order {
            id: self.id,
            user: self.user.clone(),
            coin: self.coin.clone(),
            amount: self.amount,
            price: self.price,
            cost: self.cost,
            membership,
            refunded: false,
            canceled: false,
            created_at: self.created_at,
        };
        (order, formed)
    }
}

/// A placed, paid order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user: UserId,
    pub coin: Coin,
    pub amount: Quantity,
    pub price: Usd,
    pub cost: Usd,
    pub membership: Membership,
    pub refunded: bool,
    /// Taken out of its open pool, its cost back in the balance (by its
    /// owner, or by the operator's wait policy). It is in no pool and no
    /// batch, though it keeps the pool it was in.
    pub canceled: bool,
    pub created_at: OffsetDateTime,
}

/// Where a batch is in settlement:
///
/// ```text
/// READY ──claim──▶ SUBMITTING ──fill──▶ SETTLED
///                   │   ▲ unknown outcome: lease released, claimed again
///                   │   └──────────────┘
///                   └──refusal──▶ REFUSED ──every member credited──▶ REFUNDED
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    /// Formed, waiting for the settle function (the outbox).
    Ready,
    /// Claimed by a settle attempt holding a lease.
    Submitting,
    /// Bought.
    Settled,
    /// Refused for good by the exchange: never sent again. Its orders are
    /// being refunded, each once.
    Refused,
    /// Refused, and every order refunded.
    Refunded,
}

impl BatchStatus {
    /// Whether the exchange is done with it: never claimed or sent again.
    pub fn is_decided(self) -> bool {
        matches!(self, BatchStatus::Settled | BatchStatus::Refused | BatchStatus::Refunded)
    }

    /// Whether nothing will ever change it again.
    pub fn is_final(self) -> bool {
        matches!(self, BatchStatus::Settled | BatchStatus::Refunded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Ready => "READY",
            BatchStatus::Submitting => "SUBMITTING",
            BatchStatus::Settled => "SETTLED",
            BatchStatus::Refused => "REFUSED",
            BatchStatus::Refunded => "REFUNDED",
        }
    }

    pub fn parse(text: &str) -> Option<BatchStatus> {
        [BatchStatus::Ready, BatchStatus::Submitting, BatchStatus::Settled, BatchStatus::Refused, BatchStatus::Refunded]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A batch: what one exchange order buys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub coin: Coin,
    /// The pools it closed (its crossing order's, or the oldest money's,
    /// first); none for an order bought alone.
    pub pools: Vec<PoolId>,
    /// The order bought alone, for a batch of one.
    pub alone: Option<Member>,
    pub qty: BatchQuantity,
    pub usd: Usd,
    pub count: u32,
    pub status: BatchStatus,
    /// Settle attempts that claimed it so far. The attempt holding the
    /// lease is the one whose number this is: every write of an attempt is
    /// conditioned on it (a fenced lease).
    pub attempts: u32,
    /// Until when the current `Submitting` attempt holds it.
    pub lease_until: Option<OffsetDateTime>,
    /// When the last attempt claimed it.
    pub attempted_at: Option<OffsetDateTime>,
    /// Times the reconciler sent it to the settle queue again, and the last.
    pub resends: u32,
    pub resent_at: Option<OffsetDateTime>,
    /// Member orders credited back so far (`Refused`, `Refunded`).
    pub refunded: u32,
    /// What the exchange said when it refused it.
    pub refusal: Option<String>,
    /// A `Refused` batch's refunds wait until then, and for a lookup made
    /// after it that finds no fill: until then a request of an earlier
    /// attempt may still reach the exchange. `None`: the refusal is final.
    pub refunds_from: Option<OffsetDateTime>,
    pub exchange_order_id: Option<String>,
    /// A `Refunded` batch is looked up at the exchange again then: an
    /// exchange may fill an order after it answered a refusal.
    pub recheck_at: Option<OffsetDateTime>,
    /// Lookups made since its refund.
    pub rechecks: u32,
    /// The exchange's order found filling it after its refund: recorded for
    /// an operator, credited to nobody.
    pub late_fill: Option<String>,
    pub created_at: OffsetDateTime,
}

/// When a refunded batch is looked up at the exchange again, after its
/// refund: a fill found then is recorded and raises the alarm.
pub const RECHECKS_AFTER_REFUND: [time::Duration; 2] = [time::Duration::minutes(5), time::Duration::hours(1)];

/// When the reconciler sends a batch to the settle queue again: only when
/// settlement has lost track of it, and less and less often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResendPolicy {
    /// A `READY` batch younger than this still has its message in flight.
    pub ready_after: time::Duration,
    /// A batch whose attempt failed waits this long, doubled per attempt
    /// and per re-send: the queue redelivers failed messages by itself
    /// (after its visibility timeout), so this is longer than that.
    pub backoff: time::Duration,
    pub backoff_cap: time::Duration,
    /// After this many attempts the batch is left to the dead-letter queue
    /// and its alarm: an operator looks at it.
    pub max_attempts: u32,
}

impl Batch {
    /// A batch just formed (`READY`, a fresh id) from these pools (none: an
    /// order bought alone) with these totals.
    pub fn ready(coin: &Coin, pools: Vec<PoolId>, totals: BatchTotals, created_at: OffsetDateTime) -> Batch {
        Batch {
            id: BatchId::generate(),
            coin: coin.clone(),
            pools,
            alone: None,
            qty: totals.qty,
            usd: totals.usd,
            count: totals.count,
            status: BatchStatus::Ready,
            attempts: 0,
            lease_until: None,
            attempted_at: None,
            resends: 0,
            resent_at: None,
            refunded: 0,
            refusal: None,
            refunds_from: None,
            exchange_order_id: None,
            recheck_at: None,
            rechecks: 0,
            late_fill: None,
            created_at,
        }
    }

    /// Whether the reconciler still watches it: not final, or refunded
    /// with a look at the exchange still to make.
    pub fn in_outbox(&self) -> bool {
        !self.status.is_final() || self.recheck_at.is_some()
    }

    /// When the reconciler should send it again, if ever: `READY` whose
    /// message seems lost, `SUBMITTING` whose attempt died or failed and was
    /// not retried, `REFUSED` whose refunds stopped. Each re-send doubles
    /// the wait before the next.
    pub fn resend_due(&self, policy: &ResendPolicy) -> Option<OffsetDateTime> {
        let last = [Some(self.created_at), self.attempted_at, self.resent_at].into_iter().flatten().max()?;
        let doubled = |base: time::Duration, times: u32| {
            let factor = 1i32.checked_shl(times.min(20)).unwrap_or(i32::MAX);
            base.checked_mul(factor).unwrap_or(policy.backoff_cap).min(policy.backoff_cap.max(base))
        };
        match self.status {
            BatchStatus::Ready | BatchStatus::Refused => Some(last + doubled(policy.ready_after, self.resends)),
            BatchStatus::Submitting if self.attempts >= policy.max_attempts => None,
            BatchStatus::Submitting => {
                let retries = self.attempts.saturating_sub(1) + self.resends;
                let due = last + doubled(policy.backoff, retries);
                Some(self.lease_until.map_or(due, |lease| lease.max(due)))
            }
            // A refunded batch due for its look at the exchange; if that
            // send is lost, again less and less often.
            BatchStatus::Refunded => self.recheck_at.map(|at| match self.resent_at {
                Some(sent) if sent >= at => sent + doubled(policy.ready_after, self.resends),
                _ => at,
            }),
            BatchStatus::Settled => None,
        }
    }
}

/// The status a customer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Settling,
    Settled,
    Refunded,
    Canceled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Settling,
        OrderStatus::Settled,
        OrderStatus::Refunded,
        OrderStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Settling => "settling",
            OrderStatus::Settled => "settled",
            OrderStatus::Refunded => "refunded",
            OrderStatus::Canceled => "canceled",
        }
    }

    /// An order's status from the order and its batch: `pending` while its
    /// pool is open, `refunded` once its own cost is back (its batch may
    /// still be refunding others).
    pub fn of(order: &Order, batch: Option<&Batch>) -> OrderStatus {
        if order.canceled {
            return OrderStatus::Canceled;
        }
        if order.refunded {
            return OrderStatus::Refunded;
        }
        match batch.map(|b| b.status) {
            None => OrderStatus::Pending,
            Some(BatchStatus::Ready | BatchStatus::Submitting | BatchStatus::Refused) => OrderStatus::Settling,
            Some(BatchStatus::Settled) => OrderStatus::Settled,
            Some(BatchStatus::Refunded) => OrderStatus::Refunded,
        }
    }

    pub fn parse(text: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// An order with what its batch says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub order: Order,
    pub status: OrderStatus,
    pub batch_id: Option<BatchId>,
    pub exchange_order_id: Option<String>,
}

impl OrderView {
    pub fn new(order: Order, batch: Option<&Batch>) -> OrderView {
        // The batch its pool formed after it was canceled is not its own.
        let batch = batch.filter(|_| !order.canceled);
        OrderView {
            status: OrderStatus::of(&order, batch),
            batch_id: batch.map(|b| b.id),
            exchange_order_id: batch.and_then(|b| b.exchange_order_id.clone()),
            order,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rust_decimal::Decimal;
    use time::Duration;

    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
    }

    fn batch(status: BatchStatus) -> Batch {
        let totals = BatchTotals {
            usd: Usd::new(Decimal::from(12)).unwrap(),
            qty: BatchQuantity::from_decimal(Decimal::from(3)).unwrap(),
            count: 3,
        };
        let pools = vec![PoolId { shard: 0, seq: 0 }];
        Batch { status, ..Batch::ready(&Coin::from_trusted("ABAN"), pools, totals, at(0)) }
    }

    const POLICY: ResendPolicy = ResendPolicy {
        ready_after: Duration::minutes(1),
        backoff: Duration::minutes(5),
        backoff_cap: Duration::hours(1),
        max_attempts: 5,
    };

    #[test]
    fn a_ready_batch_is_due_after_a_minute_then_less_and_less_often() {
        let mut ready = batch(BatchStatus::Ready);
        assert_eq!(ready.resend_due(&POLICY), Some(at(60)));
        ready.resends = 3;
        ready.resent_at = Some(at(600));
        assert_eq!(ready.resend_due(&POLICY), Some(at(600 + 8 * 60)));
        ready.resends = 30;
        assert_eq!(ready.resend_due(&POLICY), Some(at(600 + 3600)), "capped");
    }

    #[test]
    fn a_failed_attempt_waits_for_the_queue_and_an_exhausted_one_for_an_operator() {
        let mut submitting = batch(BatchStatus::Submitting);
        submitting.attempts = 1;
        submitting.attempted_at = Some(at(100));
        submitting.lease_until = Some(at(100));
        assert_eq!(submitting.resend_due(&POLICY), Some(at(100 + 300)));
        submitting.attempts = 3;
        assert_eq!(submitting.resend_due(&POLICY), Some(at(100 + 1200)));
        // A live lease is never cut short.
        submitting.lease_until = Some(at(10_000));
        assert_eq!(submitting.resend_due(&POLICY), Some(at(10_000)));
        submitting.attempts = 5;
        assert_eq!(submitting.resend_due(&POLICY), None);
    }

    #[test]
    fn decided_batches_are_never_sent_again_but_unfinished_refunds_are() {
        assert_eq!(batch(BatchStatus::Settled).resend_due(&POLICY), None);
        assert_eq!(batch(BatchStatus::Refunded).resend_due(&POLICY), None);
        // A refunded batch is sent once more when its look at the exchange
        // is due, and again, less and less often, if that send was lost.
        let mut refunded = batch(BatchStatus::Refunded);
        refunded.recheck_at = Some(at(300));
        assert_eq!(refunded.resend_due(&POLICY), Some(at(300)));
        refunded.resent_at = Some(at(300));
        refunded.resends = 1;
        assert_eq!(refunded.resend_due(&POLICY), Some(at(420)));
        let mut refused = batch(BatchStatus::Refused);
        refused.attempted_at = Some(at(30));
        assert_eq!(refused.resend_due(&POLICY), Some(at(90)));
    }

    #[test]
    fn an_order_is_refunded_once_its_own_cost_is_back() {
        let order = Order {
            id: OrderId::generate(),
            user: UserId::parse("alice").unwrap(),
            coin: Coin::from_trusted("ABAN"),
            amount: Quantity::parse("1").unwrap(),
            price: Usd::new(Decimal::from(4)).unwrap(),
            cost: Usd::new(Decimal::from(4)).unwrap(),
            membership: Membership::Pool { shard: 0, formed: None },
            refunded: false,
            canceled: false,
            created_at: at(0),
        };
        let refused = batch(BatchStatus::Refused);
        assert_eq!(OrderStatus::of(&order, None), OrderStatus::Pending);
        assert_eq!(OrderStatus::of(&order, Some(&refused)), OrderStatus::Settling);
        let back = Order { refunded: true, ..order };
        assert_eq!(OrderStatus::of(&back, Some(&refused)), OrderStatus::Refunded);
        for status in [
            BatchStatus::Ready,
            BatchStatus::Submitting,
            BatchStatus::Settled,
            BatchStatus::Refused,
            BatchStatus::Refunded,
        ] {
            assert_eq!(BatchStatus::parse(status.as_str()), Some(status));
        }
    }
}
