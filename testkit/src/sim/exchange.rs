//! An exchange that answers in every way the protocol allows (a fill; a
//! failure before or after filling; a timeout; a pending order that fills
//! or ends later; a refusal; an order ended unfilled; a configuration
//! error), idempotently on the client order id, and that checks how it is
//! spoken to: never a buy under the minimum, never a resend by an attempt
//! that did not ask first (see [`SettleCall`]), never a resend of a batch
//! whose refusal the table records, never two quantities for one id. (A
//! refusal that a crash kept from being recorded is learnt again by sending
//! again: the exchange answers it as before. Those resends are counted.)
//!
//! Requests travel: each reaches the exchange some time after it is sent
//! (now and then almost the client's whole timeout), the client gives up
//! after [`REQUEST_TIMEOUT`] or loses the connection right after sending,
//! and a request on its way arrives all the same. A refusal with 400 leaves
//! the id free: a later POST of it may find the halt lifted and be filled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use shared::adapters::http_exchange::{HttpAnswer, PostOutcome, after_conflict, read_lookup_answer, read_post_answer};
use shared::domain::{Batch, BatchId, BatchQuantity, BatchStatus, PriceList, Usd, exact_product};
use shared::ports::{Exchange, ExchangeError, ExchangeOrder, Fill, Lookup};

use super::World;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderState {
    Filled {
        exchange_order_id: String,
    },
    /// Taken, not filled yet.
    Pending,
    /// Refused with 400/422: the exchange never took it.
    Refused,
    /// Taken and ended unfilled.
    Ended(&'static str),
}

#[derive(Debug, Clone)]
pub struct Record {
    pub state: OrderState,
    pub quantity: BatchQuantity,
    pub coin: String,
}

tokio::task_local! {
    /// The settle call a request to the exchange comes from: the
    /// simulation runs each call of `Settler::settle` in its own.
    pub static SETTLE_CALL: Arc<SettleCall>;
}

/// One settlement attempt as the exchange sees it: when it began, and what
/// it asked and sent. The protocol's rule is per attempt: one that begins
/// after a send of its batch asks before it sends again, and no attempt
/// sends twice without asking between. (Attempts can overlap: one whose
/// lease ran out may still send after a later one asked and found nothing;
/// the exchange's idempotency on the client order id is what makes that
/// harmless, and the later one did ask.)
pub struct SettleCall {
    began: Instant,
    asked: Mutex<BTreeMap<BatchId, Asked>>,
}

#[derive(Default)]
struct Asked {
    looked_up: bool,
    sent_since_lookup: bool,
}

impl SettleCall {
    pub fn begin() -> Arc<SettleCall> {
        Arc::new(SettleCall { began: Instant::now(), asked: Mutex::default() })
    }
}

/// What the table says of a batch now (the exchange's checks compare).
pub type StatusOf = Box<dyn Fn(BatchId) -> Option<Batch> + Send + Sync>;

/// The client's request timeout: a request reaches the exchange within
/// it, or never.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The exchange, reached over a network: requests are served by a task of
/// their own, which goes on when the client gives up or dies.
pub struct SimExchange {
    core: Arc<Core>,
}

struct Core {
    world: Arc<World>,
    status_of: StatusOf,
    /// Sends of orders the exchange had refused, whose refusal the table
    /// did not record (the attempt died first).
    pub resent_after_unrecorded_refusal: Mutex<u64>,
    prices: PriceList,
    minimum: Usd,
    orders: Mutex<BTreeMap<BatchId, Record>>,
    /// When the first POST of each id arrived, taken or not.
    first_sent: Mutex<BTreeMap<BatchId, Instant>>,
    fills: Mutex<u64>,
}

fn unknown(reason: &str) -> ExchangeError {
    ExchangeError::Unknown { reason: format!("{reason} (simulated)"), source: None }
}

impl SimExchange {
    pub fn new(world: Arc<World>, prices: PriceList, minimum: Usd, status_of: StatusOf) -> SimExchange {
        let core = Core {
            world,
            status_of,
            resent_after_unrecorded_refusal: Mutex::new(0),
            prices,
            minimum,
            orders: Mutex::default(),
            first_sent: Mutex::default(),
            fills: Mutex::new(0),
        };
        SimExchange { core: Arc::new(core) }
    }

    /// Every order the exchange took or refused.
    pub fn records(&self) -> BTreeMap<BatchId, Record> {
        self.core.orders.lock().unwrap().clone()
    }

    /// Sends of orders the exchange had refused, whose refusal the table
    /// did not record.
    pub fn resent_after_unrecorded_refusal(&self) -> u64 {
        *self.core.resent_after_unrecorded_refusal.lock().unwrap()
    }
}

impl Core {
    async fn latency(&self) {
        tokio::time::sleep(self.world.dice.millis(0..300)).await;
    }

    /// Fills the order, once: an order filled before keeps its fill (the
    /// exchange is idempotent on the client order id).
    fn fill(&self, id: BatchId, quantity: BatchQuantity, coin: &str) -> Record {
        let mut orders = self.orders.lock().unwrap();
        let record = orders.entry(id).or_insert(Record { state: OrderState::Pending, quantity, coin: coin.to_owned() });
        if matches!(record.state, OrderState::Filled { .. }) {
            return record.clone();
        }
        let mut fills = self.fills.lock().unwrap();
        *fills += 1;
        record.state = OrderState::Filled { exchange_order_id: format!("SIMX-{}", *fills) };
        record.clone()
    }

    /// Records how the exchange took a new order (an order it has keeps its state).
    fn record(&self, id: BatchId, order: &ExchangeOrder, state: OrderState) {
        let record = Record { state, quantity: order.quantity, coin: order.coin.to_string() };
        self.orders.lock().unwrap().entry(id).or_insert(record);
    }

    /// The order as the exchange's JSON describes it.
    fn order_answer(&self, status: u16, id: BatchId, record: &Record) -> HttpAnswer {
        let (state, exchange_order_id) = match &record.state {
            OrderState::Filled { exchange_order_id } => ("filled", Some(exchange_order_id.clone())),
            OrderState::Pending => ("new", None),
            OrderState::Refused => ("rejected", None),
            OrderState::Ended(status) => (*status, None),
        };
        let body = serde_json::json!({
            "client_order_id": id.to_string(), "exchange_order_id": exchange_order_id, "symbol": record.coin,
            "side": "buy", "type": "market", "status": state, "quantity": record.quantity.to_string(),
        });
        HttpAnswer::new(status, body.to_string())
    }

    /// The checks on a POST; returns what the exchange already has of it.
    fn check_post(&self, order: &ExchangeOrder) -> Option<Record> {
        let id = order.client_order_id;
        let price = self.prices.quote(order.coin.as_str()).map(|(_, p)| p);
        match price.ok().and_then(|p| exact_product(p.value(), order.quantity.value())) {
            Some(usd) if usd >= self.minimum.value() => {}
            other => self.world.violated(format!("a buy under the minimum: {order:?} worth {other:?}")),
        }
        let sent_before = *self.first_sent.lock().unwrap().entry(id).or_insert_with(Instant::now);
        match SETTLE_CALL.try_with(Arc::clone) {
            Ok(call) => {
                let mut asked = call.asked.lock().unwrap();
                let this = asked.entry(id).or_default();
                if this.sent_since_lookup || (sent_before < call.began && !this.looked_up) {
                    self.world.violated(format!("batch {id} was sent again without a lookup since its last send"));
                }
                this.sent_since_lookup = true;
            }
            Err(_) => self.world.violated(format!("batch {id} was sent outside a settlement attempt")),
        }
        let mut orders = self.orders.lock().unwrap();
        match orders.get_mut(&id) {
            Some(record) => {
                if record.quantity != order.quantity {
                    self.world.violated(format!("batch {id} sent with {} after {}", order.quantity, record.quantity));
                }
                // A late POST matters after a 400 only: that kept nothing, so
                // it may be filled. An ended order's id stays taken, and a
                // POST of it gets that same order back (the protocol's rule 3).
                if matches!(record.state, OrderState::Refused) {
                    match (self.status_of)(id) {
                        // A refusal still waiting to be confirmed is not final:
                        // an earlier attempt's request may still arrive.
                        Some(batch)
                            if batch.status == BatchStatus::Refunded
                                || (batch.status == BatchStatus::Refused && batch.refunds_from.is_none()) =>
                        {
                            self.world.violated(format!(
                                "a POST of batch {id} reached the exchange after the batch's refusal was final"
                            ));
                        }
                        Some(batch) if batch.status == BatchStatus::Refused => {}
                        _ => *self.resent_after_unrecorded_refusal.lock().unwrap() += 1,
                    }
                }
                Some(record.clone())
            }
            None => None,
        }
    }

    /// A POST of an id the exchange has: the order as it is now, or `409`.
    fn answer(&self, id: BatchId, record: &Record) -> HttpAnswer {
        if self.world.faults_on() && self.world.dice.chance(0.2) {
            return HttpAnswer::new(409, "client_order_id already used (simulated)");
        }
        match &record.state {
            // It may have filled meanwhile.
            OrderState::Pending if self.world.dice.chance(0.5) => {
                self.order_answer(200, id, &self.fill(id, record.quantity, &record.coin))
            }
            // A 400 kept nothing: the halt may have lifted since.
            OrderState::Refused if self.world.dice.chance(0.5) => {
                self.order_answer(200, id, &self.fill(id, record.quantity, &record.coin))
            }
            OrderState::Refused => HttpAnswer::new(400, "symbol halted (simulated)"),
            _ => self.order_answer(200, id, record),
        }
    }

    /// A POST as the exchange serves it, from the moment it arrives.
    async fn serve_post(&self, order: &ExchangeOrder) -> HttpAnswer {
        let id = order.client_order_id;
        let coin = order.coin.as_str();
        if let Some(record) = self.check_post(order) {
            let answer = self.answer(id, &record);
            self.latency().await;
            return answer;
        }
        let roll = if self.world.faults_on() { self.world.dice.below(100) } else { 99 };
        let answer = match roll {
            // 500 before taking it.
            0..10 => HttpAnswer::new(500, "internal error (simulated)"),
            // Filled, and the reply lost.
            10..18 => {
                self.fill(id, order.quantity, coin);
                HttpAnswer::new(503, "unavailable (simulated)")
            }
            // Taken, and filled long after the client gave up: another
            // attempt may take over meanwhile, and finds it open.
            18..23 => {
                self.record(id, order, OrderState::Pending);
                tokio::time::sleep(Duration::from_secs(45)).await;
                if self.orders.lock().unwrap().get(&id).is_some_and(|r| r.state == OrderState::Pending) {
                    self.fill(id, order.quantity, coin);
                }
                HttpAnswer::new(504, "gateway timeout (simulated)")
            }
            23..28 => {
                self.record(id, order, OrderState::Pending);
                self.order_answer(201, id, &self.record_of(id))
            }
            28..32 => {
                self.record(id, order, OrderState::Refused);
                HttpAnswer::new(422, "quantity not allowed (simulated)")
            }
            32..35 => {
                let ended = *self.world.dice.pick(&["rejected", "canceled", "expired"]);
                self.record(id, order, OrderState::Ended(ended));
                self.order_answer(200, id, &self.record_of(id))
            }
            35..37 => HttpAnswer::new(401, "bad credentials (simulated)"),
            37..39 => HttpAnswer {
                status: 302,
                location: Some("https://elsewhere.example/orders".into()),
                body: Ok(Vec::new()),
            },
            // Filled, and the answer states another quantity: recorded, and
            // an error for an operator.
            39..41 => {
                let mut stated = self.fill(id, order.quantity, coin);
                stated.quantity = BatchQuantity::sum(stated.quantity.value(), shared::domain::Quantity::MAX)
                    .unwrap_or(stated.quantity);
                self.order_answer(200, id, &stated)
            }
            _ => self.order_answer(200, id, &self.fill(id, order.quantity, coin)),
        };
        // After the exchange acted and before the caller records it: a
        // process may die here.
        self.latency().await;
        answer
    }

    /// How long a POST is on its way, and whether the client loses the
    /// connection (after how long) while it still travels.
    fn network(&self) -> (Duration, Option<Duration>) {
        let dice = &self.world.dice;
        if !self.world.faults_on() {
            return (dice.millis(0..300), None);
        }
        let slow = REQUEST_TIMEOUT.as_millis() as u64;
        match dice.below(100) {
            0..4 => (dice.millis(slow - 1000..slow), None),
            4..10 => {
                let on_the_way = dice.millis(0..slow);
                (on_the_way, Some(dice.millis(0..on_the_way.as_millis() as u64 + 1)))
            }
            _ => (dice.millis(0..300), None),
        }
    }

    fn record_of(&self, id: BatchId) -> Record {
        self.orders.lock().unwrap()[&id].clone()
    }

    async fn serve_lookup(&self, id: BatchId) -> HttpAnswer {
        self.latency().await;
        if self.world.faults_on() {
            match self.world.dice.below(100) {
                0..8 => return HttpAnswer::new(502, "bad gateway (simulated)"),
                8..10 => return HttpAnswer::new(403, "forbidden (simulated)"),
                _ => {}
            }
        }
        // Answered: the attempt asked.
        if let Ok(call) = SETTLE_CALL.try_with(Arc::clone) {
            let mut asked = call.asked.lock().unwrap();
            let this = asked.entry(id).or_default();
            this.looked_up = true;
            this.sent_since_lookup = false;
        }
        let record = self.orders.lock().unwrap().get(&id).cloned();
        let answer = match record {
            // A 400 kept nothing: the exchange never took it.
            None | Some(Record { state: OrderState::Refused, .. }) => HttpAnswer::new(404, "no such order"),
            Some(record @ Record { state: OrderState::Pending, .. }) => match self.world.dice.below(10) {
                0..6 => self.order_answer(200, id, &self.fill(id, record.quantity, &record.coin)),
                6 => {
                    if let Some(record) = self.orders.lock().unwrap().get_mut(&id) {
                        record.state = OrderState::Ended("expired");
                    }
                    self.order_answer(200, id, &self.record_of(id))
                }
                _ => self.order_answer(200, id, &record),
            },
            Some(record) => self.order_answer(200, id, &record),
        };
        self.latency().await;
        answer
    }
}

#[async_trait]
impl Exchange for SimExchange {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        let (on_the_way, hang_up) = self.core.network();
        let core = Arc::clone(&self.core);
        let (order_id, coin) = (order.client_order_id, order.coin.clone());
        let order = order.clone();
        let call = SETTLE_CALL.try_with(Arc::clone).ok();
        let request = tokio::spawn(async move {
            tokio::time::sleep(on_the_way).await;
            match call {
                Some(call) => SETTLE_CALL.scope(call, core.serve_post(&order)).await,
                None => core.serve_post(&order).await,
            }
        });
        if let Some(after) = hang_up {
            tokio::time::sleep(after).await;
            return Err(unknown("the connection was lost after sending"));
        }
        // The answer read as the HTTP client reads it.
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => return Err(unknown("the request task ended")),
            Err(_) => return Err(unknown("timed out")),
        };
        match read_post_answer(&answer, order_id, &coin) {
            PostOutcome::Answered(outcome) => outcome,
            PostOutcome::LookUp => after_conflict(self.lookup(order_id).await?),
        }
    }

    async fn lookup(&self, id: BatchId) -> Result<Lookup, ExchangeError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.core.serve_lookup(id)).await {
            Ok(answer) => read_lookup_answer(&answer, id),
            Err(_) => Err(unknown("the lookup timed out")),
        }
    }

    fn request_timeout(&self) -> Duration {
        REQUEST_TIMEOUT
    }
}
