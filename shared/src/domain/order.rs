use time::OffsetDateTime;

use super::coin::Coin;
use super::ids::{BatchId, OrderId, UserId};
use super::money::Usd;
use super::quantity::Quantity;

/// Which batch an order belongs to, as recorded on the order itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Membership {
    /// Bought alone: its batch was created with it.
    Own(BatchId),
    /// Joined (or closed) the open pool number `seq` of its coin. The batch
    /// is known once that pool closes.
    Pool { seq: u64 },
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
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    /// Formed, waiting for the settle function (the outbox).
    Ready,
    /// Claimed by a settle attempt holding a lease.
    Submitting,
    /// Bought.
    Settled,
    /// Refused for good by the exchange; its orders were refunded.
    Refunded,
}

impl BatchStatus {
    pub fn is_final(self) -> bool {
        matches!(self, BatchStatus::Settled | BatchStatus::Refunded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Ready => "READY",
            BatchStatus::Submitting => "SUBMITTING",
            BatchStatus::Settled => "SETTLED",
            BatchStatus::Refunded => "REFUNDED",
        }
    }

    pub fn parse(text: &str) -> Option<BatchStatus> {
        [BatchStatus::Ready, BatchStatus::Submitting, BatchStatus::Settled, BatchStatus::Refunded]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A batch: what one exchange order buys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub coin: Coin,
    /// The pool number it closed; `None` for an order bought alone.
    pub seq: Option<u64>,
    pub qty: Quantity,
    pub usd: Usd,
    pub count: u32,
    pub status: BatchStatus,
    /// Settle attempts that claimed it so far.
    pub attempts: u32,
    /// Until when the current `Submitting` attempt holds it.
    pub lease_until: Option<OffsetDateTime>,
    pub exchange_order_id: Option<String>,
    pub created_at: OffsetDateTime,
}

impl Batch {
    /// Whether settlement lost track of it: `READY` since before
    /// `formed_before` (its message was lost), or `SUBMITTING` with a lease
    /// expired by `now` (its attempt died).
    pub fn is_stuck(&self, formed_before: OffsetDateTime, now: OffsetDateTime) -> bool {
        match self.status {
            BatchStatus::Ready => self.created_at < formed_before,
            BatchStatus::Submitting => self.lease_until.is_none_or(|until| until <= now),
            BatchStatus::Settled | BatchStatus::Refunded => false,
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
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Settling => "settling",
            OrderStatus::Settled => "settled",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// An order's status from its batch: `pending` while its pool is open.
    pub fn of(batch: Option<&Batch>) -> OrderStatus {
        match batch.map(|b| b.status) {
            None => OrderStatus::Pending,
            Some(BatchStatus::Ready | BatchStatus::Submitting) => OrderStatus::Settling,
            Some(BatchStatus::Settled) => OrderStatus::Settled,
            Some(BatchStatus::Refunded) => OrderStatus::Refunded,
        }
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
        OrderView {
            status: OrderStatus::of(batch),
            batch_id: batch.map(|b| b.id),
            exchange_order_id: batch.and_then(|b| b.exchange_order_id.clone()),
            order,
        }
    }
}
