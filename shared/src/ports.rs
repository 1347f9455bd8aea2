//! What the use cases need from the outside world. Ports speak domain types
//! only; each adapter owns its mapping to an SDK or a wire format.
//!
//! The store is split by who may call what, as the functions' IAM policies
//! are: [`Orders`] (place-order), [`Settlements`] (settle), [`Outbox`] and
//! [`Pools`] (the reconciler), [`Accounts`] and [`LedgerRecords`]
//! (operators). [`Store`] unites them for the adapters and their contract
//! suite.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::Ledger;
use crate::domain::{
    Batch, BatchId, BatchQuantity, BatchStatus, Coin, DepositId, Member, NewOrder, OrderId, OrderStatus, OrderView,
    PoolOverflow, ShardCount, ShardPool, Usd, UserId,
};

/// An infrastructure failure: the store or queue could not answer. Never a
/// business outcome. Where it comes from a write, that write did not happen
/// (a write whose outcome is unknown says so in its own error).
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
    #[error(transparent)]
    PoolOverflow(#[from] PoolOverflow),
    /// Contention or throttling did not clear within the bounded retries;
    /// nothing changed.
    #[error("too much contention on the pool; nothing was placed")]
    Busy,
    /// The order may or may not have been placed: a write was sent and its
    /// answer lost, and reading back could not tell.
    #[error("could not tell whether the order was placed")]
    OutcomeUnknown(#[source] InfraError),
    /// Nothing was placed.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// A cancel that was taken: the order, now `canceled`.
#[derive(Debug, Clone)]
pub struct Canceled {
    pub order: OrderView,
    /// False when it was canceled before this call (cancel is idempotent).
    pub now: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such order, or another user's.
    #[error("no such order")]
    NotFound,
    /// It left its pool for a batch (or was bought alone): nothing changed.
    #[error("the order is {} and can no longer be canceled", .0.status.as_str())]
    NotPending(Box<OrderView>),
    /// Contention did not clear within the bounded retries; nothing changed.
    #[error("too much contention on the order's pool; nothing was canceled")]
    Busy,
    /// Nothing could be read or written; a cancel sent may still apply (it
    /// is idempotent: send it again).
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// How long a pooled order may wait for its pool to reach the minimum, and
/// what happens after (the operator's choice; none: it waits for ever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitPolicy {
    pub max_wait: time::Duration,
    pub action: WaitAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitAction {
    /// The house account completes the pool up to the minimum with an
    /// order of its own in the batch, at `price`.
    TopUp { house: UserId },
    /// The orders that waited longer are canceled, their costs back.
    Refund,
}

/// Placing and reading orders: the place-order function.
#[async_trait]
pub trait Orders: Send + Sync {
    /// The one transaction that decides the order: debit, order, and its
    /// pool or batch change together or not at all.
    async fn place_order(&self, order: NewOrder, minimum: Usd) -> Result<Placed, PlaceError>;

    /// The order, if it exists and belongs to `user`.
    async fn order(&self, user: &UserId, id: OrderId) -> Result<Option<OrderView>, InfraError>;

    /// A user's balance; zero for a user without an account.
    async fn balance(&self, user: &UserId) -> Result<Usd, InfraError>;

    /// One page of the user's orders, newest first.
    async fn orders_of(&self, user: &UserId, page: OrderPage) -> Result<OrderList, InfraError>;

    /// Cancels a `pending` order of `user`: in one transaction the order is
    /// marked canceled, its cost and amount leave its open pool (only while
    /// that pool is still open) and its cost returns to the balance. Exactly
    /// one of a cancel and the order that closes the pool takes the order.
    async fn cancel_order(&self, user: &UserId, id: OrderId) -> Result<Canceled, CancelError>;
}

/// Which page of a user's orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderPage {
    /// At most this many orders (1 to 100).
    pub limit: u32,
    /// The last order of the previous page: this page starts after it.
    pub after: Option<OrderId>,
    /// Only orders in this status (a page may then hold fewer than `limit`).
    pub status: Option<OrderStatus>,
}

/// A page of a user's orders.
#[derive(Debug, Clone)]
pub struct OrderList {
    pub orders: Vec<OrderView>,
    /// Where the next page starts (the last order read); `None` on the last.
    pub next: Option<OrderId>,
}

/// The result of trying to claim a batch for a settle attempt.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Claimed: `Submitting`, `attempts` numbers this attempt, leased.
    Claimed(Batch),
    /// Refused by the exchange, its refunds not finished: resume them.
    Refusing(Batch),
    /// Settled or refunded: a duplicate delivery.
    Finished(BatchStatus),
    /// Another attempt holds the lease until then.
    Leased {
        until: OffsetDateTime,
    },
    NotFound,
}

/// Whether a settle attempt's write happened: only the attempt holding the
/// lease may write (a late attempt changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    Held,
    /// The batch is no longer this attempt's: another attempt claimed it, or
    /// it was decided. What it is now.
    Lost {
        status: BatchStatus,
        attempts: u32,
    },
}

/// What one refund call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refund {
    /// Orders credited by this call (those refunded earlier are skipped).
    pub orders: u32,
    pub usd: Usd,
    /// Every member is refunded and the batch is `Refunded`.
    pub finished: bool,
}

/// Settling batches: the settle function.
#[async_trait]
pub trait Settlements: Send + Sync {
    async fn batch(&self, id: BatchId) -> Result<Option<Batch>, InfraError>;

    /// `Ready`, or `Submitting` with an expired lease → `Submitting` with
    /// `attempts + 1` and a lease until `lease_until`.
    async fn claim_batch(
        &self,
        id: BatchId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Claim, InfraError>;

    /// Ends attempt `attempt`'s lease early, so that the next delivery may
    /// claim the batch at once (after an unknown outcome).
    async fn release_batch(&self, id: BatchId, attempt: u32, now: OffsetDateTime) -> Result<Fence, InfraError>;

    /// `Submitting` (held by `attempt`) → `Settled`.
    async fn settle_batch(&self, id: BatchId, attempt: u32, exchange_order_id: &str) -> Result<Fence, InfraError>;

    /// `Submitting` (held by `attempt`) → `Refused`: never sent again.
    /// Written before anyone is credited; refunds wait for `refunds_from`
    /// (`None`: final at once) and a lookup after it.
    async fn refuse_batch(
        &self,
        id: BatchId,
        attempt: u32,
        reason: &str,
        refunds_from: Option<OffsetDateTime>,
    ) -> Result<Fence, InfraError>;

    /// A `Refused` batch whose refunds were waiting: the lookup after the
    /// wait found no fill, so the refusal is final (refunds may start).
    /// `false` when the batch is no longer such a batch.
    async fn confirm_refusal(&self, id: BatchId) -> Result<bool, InfraError>;

    /// A `Refused` batch whose refunds were waiting: the lookup after the
    /// wait found a fill (a request of an earlier attempt reached the
    /// exchange late). `Settled` with it, nobody credited. `false` when the
    /// batch is no longer such a batch.
    async fn settle_refused(&self, id: BatchId, exchange_order_id: &str) -> Result<bool, InfraError>;

    /// Credits up to `max_orders` member orders of a `Refused` batch that
    /// are not refunded yet, each once; when all are, `Refunded`.
    async fn refund_batch(&self, id: BatchId, max_orders: u32) -> Result<Refund, InfraError>;

    /// Records a look at the exchange after `batch`'s refund, as read: a
    /// fill it found (then no more looks), or when the next look is due
    /// (`None`: none). `false` if another look recorded first.
    async fn record_recheck(
        &self,
        batch: &Batch,
        late_fill: Option<&str>,
        next: Option<OffsetDateTime>,
    ) -> Result<bool, InfraError>;
}

/// The outbox: the reconciler's view of batches settlement may have lost.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Every batch not final yet: `Ready`, `Submitting`, `Refused`.
    async fn open_batches(&self) -> Result<Vec<Batch>, InfraError>;

    /// Records a re-send of `batch` (as it was read), before it is sent:
    /// of the reconcilers that read it alike, exactly one records it, and
    /// only that one sends. `false` when the batch changed since, and the
    /// record was not written.
    async fn note_resent(&self, batch: &Batch, now: OffsetDateTime) -> Result<bool, InfraError>;

    /// Takes back the re-send of `batch` (as it was read) recorded at
    /// `noted_at`, whose message could not be sent, so that it is due again
    /// at once; `false` when the record changed since, and nothing was
    /// written.
    async fn withdraw_resent(&self, batch: &Batch, noted_at: OffsetDateTime) -> Result<bool, InfraError>;
}

/// What a close came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    Formed(BatchId),
    /// A pool changed since it was read: nothing was written; the pools as
    /// the cancellation returned them (those that did not change, as read).
    Moved(Vec<ShardPool>),
}

/// What a house top-up came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopUp {
    /// The house's order closed the shards into this batch.
    Formed(BatchId),
    /// The house account cannot pay: nothing was written.
    HouseShort,
    /// A shard moved since it was read: nothing was written; the next check
    /// decides again.
    Moved,
}

/// The pools' storage, for the pooling use case (the reconciler's sweep
/// and bounded wait): reads, and the transactions that make its decisions
/// stick, each conditioned on the shards being exactly as read.
#[async_trait]
pub trait Pools: Send + Sync {
    /// Every coin that ever had a pool, priced or not any more.
    async fn pooled_coins(&self) -> Result<Vec<Coin>, InfraError>;

    /// The coin's shard count as recorded.
    async fn shard_count(&self, coin: &Coin) -> Result<ShardCount, InfraError>;

    /// The open pools of these shards, strongly consistent (a shard never
    /// written reads empty).
    async fn read_pools(&self, coin: &Coin, shards: &[u32]) -> Result<Vec<ShardPool>, InfraError>;

    /// One transaction: `pools`, each exactly as read, close into a new
    /// `READY` batch (it goes to the settle queue). When one of them
    /// changed since, nothing is written, and the pools are returned as
    /// they are now.
    async fn close(&self, coin: &Coin, pools: &[ShardPool], now: OffsetDateTime) -> Result<Closing, InfraError>;

    /// One transaction: every order of `from` moves to `into`, each pool
    /// exactly as read. `false`, nothing written, when one changed since.
    async fn gather(
        &self,
        coin: &Coin,
        into: &ShardPool,
        from: &[ShardPool],
        now: OffsetDateTime,
    ) -> Result<bool, InfraError>;

    /// One transaction: the house's order `house` joins the first of `pools`
    /// and closes them all, each exactly as read, into a new `READY` batch;
    /// the house is debited its cost (only if it can pay).
    async fn top_up(&self, pools: &[ShardPool], house: &NewOrder, now: OffsetDateTime) -> Result<TopUp, InfraError>;

    /// The house account's balance (the top-up policy's).
    async fn house_balance(&self, house: &UserId) -> Result<Usd, InfraError>;

    /// Cancels a pending order for the wait policy, as its owner's cancel
    /// does.
    async fn cancel(&self, member: &Member) -> Result<Canceled, CancelError>;

    /// Writes the coin's shard count `to` if the record is still `read`.
    /// `false` when it changed.
    async fn set_shard_count(&self, coin: &Coin, read: &ShardCount, to: &ShardCount) -> Result<bool, InfraError>;
}

/// What a deposit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deposited {
    Credited {
        balance: Usd,
    },
    /// This deposit id was credited before, with the same amount.
    AlreadyCredited,
}

#[derive(Debug, thiserror::Error)]
pub enum DepositError {
    #[error("deposit {id} was credited before with {credited} USD, not {asked} USD")]
    IdReused { id: DepositId, credited: Usd, asked: Usd },
    #[error(
        "a deposit of {usd} USD would take account {user} (holding {balance} USD) past the balance ceiling of {} USD; nothing was credited",
        Usd::BALANCE_CEILING
    )]
    OverCeiling { user: UserId, balance: Usd, usd: Usd },
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// Funding accounts: seeding and operators.
#[async_trait]
pub trait Accounts: Send + Sync {
    /// Creates the account with `balance`, recorded as its opening deposit,
    /// if it does not exist; `false` (and nothing changed) if it does. A
    /// balance over [`Usd::BALANCE_CEILING`] is an error, nothing written
    /// (seed files are checked before they get here).
    async fn open_account(&self, user: &UserId, balance: Usd) -> Result<bool, InfraError>;

    /// Credits `usd` once per deposit id, unless the balance would pass
    /// [`Usd::BALANCE_CEILING`].
    async fn deposit(&self, user: &UserId, id: &DepositId, usd: Usd) -> Result<Deposited, DepositError>;
}

/// Everything at rest, for the audit.
#[async_trait]
pub trait LedgerRecords: Send + Sync {
    async fn ledger(&self) -> Result<Ledger, InfraError>;
}

/// The one table: accounts, orders, pools, batches. Every method of every
/// part is atomic.
pub trait Store: Orders + Settlements + Outbox + Pools + Accounts + LedgerRecords {}

impl<T: Orders + Settlements + Outbox + Pools + Accounts + LedgerRecords> Store for T {}

/// Where formed batches wait for the settle function.
#[async_trait]
pub trait SettleQueue: Send + Sync {
    async fn send(&self, batch: BatchId) -> Result<(), InfraError>;
    /// Sends it so that it is delivered after `delay` (at most 15 minutes,
    /// SQS's limit): a batch that another attempt holds is looked at again
    /// once that attempt's lease is over, without using up the receives of
    /// the message that found it held.
    async fn send_after(&self, batch: BatchId, delay: std::time::Duration) -> Result<(), InfraError>;
}

/// A buy sent to the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeOrder {
    /// The batch id: the exchange is idempotent on it.
    pub client_order_id: BatchId,
    pub coin: Coin,
    pub quantity: BatchQuantity,
}

/// A filled exchange order, as the exchange describes it. (An answer that
/// names another client order id, or a side other than buy, is no fill of
/// ours: the adapter reads it as an unknown outcome.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub exchange_order_id: String,
    /// The coin the exchange says it bought, when it says.
    pub symbol: Option<String>,
    pub quantity: FillQuantity,
}

/// The quantity a fill reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillQuantity {
    Stated(BatchQuantity),
    /// The answer has no quantity.
    Unstated,
    /// A quantity that is not an exact positive decimal: as wrong as a
    /// different one (an operator must look).
    Unreadable(String),
}

impl Fill {
    /// A fill of `quantity` that names no coin.
    pub fn of(exchange_order_id: impl Into<String>, quantity: BatchQuantity) -> Fill {
        Fill { exchange_order_id: exchange_order_id.into(), symbol: None, quantity: FillQuantity::Stated(quantity) }
    }

    /// A fill that states neither coin nor quantity.
    pub fn unstated(exchange_order_id: impl Into<String>) -> Fill {
        Fill { exchange_order_id: exchange_order_id.into(), symbol: None, quantity: FillQuantity::Unstated }
    }
}

/// What the exchange says about a client order id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Filled(Fill),
    /// It has the order, not filled yet (`new`, `open`, `pending`).
    Pending {
        status: String,
    },
    /// It ended the order unfilled (`rejected`, `canceled`, `expired`):
    /// a permanent refusal.
    Ended {
        status: String,
    },
    /// It never saw it.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Timeout, connection error, 5xx, 429, 408, or a 2xx that is not final:
    /// the order may or may not exist. Ask before sending again.
    #[error("outcome unknown: {reason}")]
    Unknown {
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The exchange will never take this order: `400`/`422`, or a final
    /// status that is not filled.
    #[error("refused by the exchange: {reason}")]
    Refused { reason: String },
    /// Our side is wrong (credentials, base URL: `401`, `403`, `404`, `405`,
    /// a redirect): never a refusal. Retried; an operator must look.
    #[error("the exchange answered {status}: our configuration is wrong ({detail})")]
    Misconfigured { status: u16, detail: String },
}

/// `buy_from_exchange` and the lookup that resolves an unknown outcome.
#[async_trait]
pub trait Exchange: Send + Sync {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError>;
    async fn lookup(&self, client_order_id: BatchId) -> Result<Lookup, ExchangeError>;
    /// The longest a request is on its way: this long after it was sent it
    /// has reached the exchange or never will (the client gives up then).
    /// Settlement waits this long before a refusal becomes final.
    fn request_timeout(&self) -> std::time::Duration;
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
