//! What the use cases need from the outside world. Ports speak domain types
//! only; each adapter owns its mapping to an SDK or a wire format.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::batching::BatchTotals;
use crate::domain::{
    Batch, BatchId, BatchStatus, Coin, IdempotencyKey, Membership, Order, OrderId, OrderView, Placement, Quantity, Usd,
    UserId,
};

/// An infrastructure failure: the store or queue could not answer. Never a
/// business outcome, and safe to retry (every write is conditional).
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed")]
pub struct InfraError {
    pub operation: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl InfraError {
    pub fn new(operation: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> InfraError {
        InfraError { operation, source: source.into() }
    }
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
    /// (`READY`, with a fresh id) if it forms one.
    pub fn placed(&self, placement: &Placement) -> (Order, Option<Batch>) {
        let batch = |seq: Option<u64>, totals: BatchTotals| Batch {
            id: BatchId::generate(),
            coin: self.coin.clone(),
            seq,
            qty: totals.qty,
            usd: totals.usd,
            count: totals.count,
            status: BatchStatus::Ready,
            attempts: 0,
            lease_until: None,
            exchange_order_id: None,
            created_at: self.created_at,
        };
        let (membership, formed) = match *placement {
            Placement::OwnBatch => {
                let own = batch(None, BatchTotals { usd: self.cost, qty: self.amount, count: 1 });
                (Membership::Own(own.id), Some(own))
            }
            Placement::Join { seq } => (Membership::Pool { seq }, None),
            Placement::Cross { seq, batch: totals } => (Membership::Pool { seq }, Some(batch(Some(seq), totals))),
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
            created_at: self.created_at,
        };
        (order, formed)
    }
}

/// What placing an order did.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order: OrderView,
    /// The batch this order formed (its own, or the pool it closed): it must
    /// be sent to the settle queue.
    pub formed: Option<BatchId>,
    /// An earlier request with the same idempotency key placed this order;
    /// nothing was debited now.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("balance {balance} is less than the cost {cost}")]
    InsufficientFunds { balance: Usd, cost: Usd },
    #[error("this Idempotency-Key was used for a different order")]
    IdempotencyKeyReused,
    /// Contention did not clear within the bounded retries; nothing changed.
    #[error("too much contention on the pool; nothing was placed")]
    Busy,
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// The result of trying to claim a batch for a settle attempt.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Claimed: `Submitting`, `attempts` counts this attempt, leased.
    Claimed(Batch),
    /// Already settled or refunded: a duplicate delivery.
    Finished(BatchStatus),
    /// Another attempt holds the lease until then.
    Leased {
        until: OffsetDateTime,
    },
    NotFound,
}

/// What a refund did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refund {
    /// Orders credited by this call (those refunded earlier are skipped).
    pub orders: u32,
    pub usd: Usd,
}

/// The one table: accounts, orders, pools, batches.
///
/// Every method is atomic. `place_order` is the transaction of DESIGN.md:
/// debit, order and pool (or batch) change together or not at all.
#[async_trait]
pub trait Store: Send + Sync {
    async fn place_order(&self, order: NewOrder, minimum: Usd) -> Result<Placed, PlaceError>;

    /// The order, if it exists and belongs to `user`.
    async fn order(&self, user: &UserId, id: OrderId) -> Result<Option<OrderView>, InfraError>;

    /// A user's balance; zero for a user without an account.
    async fn balance(&self, user: &UserId) -> Result<Usd, InfraError>;

    /// Creates or overwrites an account (seeding, administration).
    async fn put_account(&self, user: &UserId, balance: Usd) -> Result<(), InfraError>;

    async fn batch(&self, id: BatchId) -> Result<Option<Batch>, InfraError>;

    /// `Ready`, or `Submitting` with an expired lease → `Submitting` with
    /// `attempts + 1` and a lease until `lease_until`.
    async fn claim_batch(
        &self,
        id: BatchId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Claim, InfraError>;

    /// Ends the lease of a `Submitting` batch early, so that the next
    /// delivery may claim it at once (after an unknown outcome).
    async fn release_batch(&self, id: BatchId, now: OffsetDateTime) -> Result<(), InfraError>;

    /// `Submitting` → `Settled`. Idempotent: settling a settled batch again
    /// does nothing.
    async fn settle_batch(&self, id: BatchId, exchange_order_id: &str) -> Result<(), InfraError>;

    /// `Submitting` → `Refunded`, crediting each member order's cost to its
    /// owner once (an order already refunded is skipped).
    async fn refund_batch(&self, id: BatchId) -> Result<Refund, InfraError>;

    /// Batches to hand to settlement again: `Ready` and formed before
    /// `formed_before`, or `Submitting` with a lease expired by `now`.
    async fn stuck_batches(
        &self,
        formed_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<BatchId>, InfraError>;
}

/// Where formed batches wait for the settle function.
#[async_trait]
pub trait SettleQueue: Send + Sync {
    async fn send(&self, batch: BatchId) -> Result<(), InfraError>;
}

/// A buy sent to the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeOrder {
    /// The batch id: the exchange is idempotent on it.
    pub client_order_id: BatchId,
    pub coin: Coin,
    pub quantity: Quantity,
}

/// A filled exchange order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub exchange_order_id: String,
    /// The quantity the exchange reports, when it reports one.
    pub quantity: Option<Quantity>,
}

/// What the exchange says about a client order id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Filled(Fill),
    /// It knows the order but it is not filled (yet).
    NotFilled {
        status: String,
    },
    /// It never saw it.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Timeout, connection error, 5xx, 429, or a 2xx that is not a fill: the
    /// order may or may not exist. Ask before sending again.
    #[error("outcome unknown: {reason}")]
    Unknown {
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A 4xx other than 429: the exchange will never take this order.
    #[error("refused by the exchange with status {status}: {detail}")]
    Refused { status: u16, detail: String },
}

/// `buy_from_exchange` and the lookup that resolves an unknown outcome.
#[async_trait]
pub trait Exchange: Send + Sync {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError>;
    async fn lookup(&self, client_order_id: BatchId) -> Result<Lookup, ExchangeError>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
