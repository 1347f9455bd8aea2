//! An exchange that answers in every way the protocol allows (a fill; a
//! failure before or after filling; a timeout; a pending order that fills
//! or ends later; a refusal; an order ended unfilled; a configuration
//! error), idempotently on the client order id, and that checks how it is
//! spoken to: never a buy under the minimum, never a resend by an attempt
//! that did not ask first (see [`SettleCall`]), never a resend of a batch
//! whose refusal the table records, never two quantities for one id. (A
//! refusal that a crash kept from being recorded is learnt again by sending
//! again: the exchange answers it as before. Those resends are counted.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use shared::domain::{BatchId, BatchQuantity, BatchStatus, PriceList, Usd, exact_product};
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
pub type StatusOf = Box<dyn Fn(BatchId) -> Option<BatchStatus> + Send + Sync>;

pub struct SimExchange {
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
        SimExchange {
            world,
            status_of,
            resent_after_unrecorded_refusal: Mutex::new(0),
            prices,
            minimum,
            orders: Mutex::default(),
            first_sent: Mutex::default(),
            fills: Mutex::new(0),
        }
    }

    /// Every order the exchange took or refused.
    pub fn records(&self) -> BTreeMap<BatchId, Record> {
        self.orders.lock().unwrap().clone()
    }

    async fn latency(&self) {
        tokio::time::sleep(self.world.dice.millis(0..300)).await;
    }

    /// Fills the order, once: an order filled before keeps its fill (the
    /// exchange is idempotent on the client order id).
    fn fill(&self, id: BatchId, quantity: BatchQuantity) -> Fill {
        let mut orders = self.orders.lock().unwrap();
        let record = orders.entry(id).or_insert(Record { state: OrderState::Pending, quantity });
        if let OrderState::Filled { exchange_order_id } = &record.state {
            return Fill { exchange_order_id: exchange_order_id.clone(), quantity: Some(record.quantity) };
        }
        let mut fills = self.fills.lock().unwrap();
        *fills += 1;
        let exchange_order_id = format!("SIMX-{}", *fills);
        record.state = OrderState::Filled { exchange_order_id: exchange_order_id.clone() };
        Fill { exchange_order_id, quantity: Some(record.quantity) }
    }

    /// Records how the exchange took a new order (an order it has keeps its state).
    fn record(&self, id: BatchId, quantity: BatchQuantity, state: OrderState) {
        self.orders.lock().unwrap().entry(id).or_insert(Record { state, quantity });
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
                if matches!(record.state, OrderState::Refused | OrderState::Ended(_)) {
                    match (self.status_of)(id) {
                        Some(BatchStatus::Refused | BatchStatus::Refunded) => {
                            self.world.violated(format!("batch {id} was sent again after its refusal was recorded"));
                        }
                        _ => *self.resent_after_unrecorded_refusal.lock().unwrap() += 1,
                    }
                }
                Some(record.clone())
            }
            None => None,
        }
    }

    fn answer(&self, id: BatchId, record: &Record) -> Result<Fill, ExchangeError> {
        match &record.state {
            OrderState::Filled { exchange_order_id } => {
                Ok(Fill { exchange_order_id: exchange_order_id.clone(), quantity: Some(record.quantity) })
            }
            OrderState::Pending => {
                // It may have filled meanwhile.
                if self.world.dice.chance(0.5) {
                    return Ok(self.fill(id, record.quantity));
                }
                Err(unknown("the order is still open"))
            }
            OrderState::Refused => Err(ExchangeError::Refused { reason: "400: symbol halted (simulated)".into() }),
            OrderState::Ended(status) => Err(ExchangeError::Refused { reason: format!("the order ended {status}") }),
        }
    }
}

#[async_trait]
impl Exchange for SimExchange {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        self.latency().await;
        let id = order.client_order_id;
        if let Some(record) = self.check_post(order) {
            let answer = self.answer(id, &record);
            self.latency().await;
            return answer;
        }
        let roll = if self.world.faults_on() { self.world.dice.below(100) } else { 99 };
        let answer = match roll {
            // 500 before taking it.
            0..10 => Err(unknown("500 before filling")),
            // Filled, and the reply lost.
            10..18 => {
                self.fill(id, order.quantity);
                Err(unknown("503 after filling"))
            }
            // Slower than the lease: another attempt may take over meanwhile.
            18..23 => {
                tokio::time::sleep(Duration::from_secs(45)).await;
                self.fill(id, order.quantity);
                Err(unknown("timed out while it filled"))
            }
            23..28 => {
                self.record(id, order.quantity, OrderState::Pending);
                Err(unknown("taken, status new"))
            }
            28..32 => {
                self.record(id, order.quantity, OrderState::Refused);
                Err(ExchangeError::Refused { reason: "422: quantity not allowed (simulated)".into() })
            }
            32..35 => {
                self.record(id, order.quantity, OrderState::Ended("rejected"));
                Err(ExchangeError::Refused { reason: "the order ended rejected".into() })
            }
            35..39 => Err(ExchangeError::Misconfigured { status: 401, detail: "bad credentials (simulated)".into() }),
            _ => Ok(self.fill(id, order.quantity)),
        };
        // After the exchange acted and before the caller records it: a
        // process may die here.
        self.latency().await;
        answer
    }

    async fn lookup(&self, id: BatchId) -> Result<Lookup, ExchangeError> {
        self.latency().await;
        if self.world.faults_on() {
            match self.world.dice.below(100) {
                0..8 => return Err(unknown("lookup 502")),
                8..10 => {
                    return Err(ExchangeError::Misconfigured { status: 403, detail: "forbidden (simulated)".into() });
                }
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
            None => Lookup::NotFound,
            Some(Record { state: OrderState::Refused, .. }) => Lookup::NotFound,
            Some(Record { state: OrderState::Ended(status), .. }) => Lookup::Ended { status: status.to_owned() },
            Some(Record { state: OrderState::Filled { exchange_order_id }, quantity, .. }) => {
                Lookup::Filled(Fill { exchange_order_id, quantity: Some(quantity) })
            }
            Some(Record { state: OrderState::Pending, quantity, .. }) => match self.world.dice.below(10) {
                0..6 => Lookup::Filled(self.fill(id, quantity)),
                6 => {
                    if let Some(record) = self.orders.lock().unwrap().get_mut(&id) {
                        record.state = OrderState::Ended("expired");
                    }
                    Lookup::Ended { status: "expired".into() }
                }
                _ => Lookup::Pending { status: "open".into() },
            },
        };
        self.latency().await;
        Ok(answer)
    }
}
