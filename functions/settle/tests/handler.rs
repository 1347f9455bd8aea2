//! The real settle handler, in-process, with SQS fixture events: duplicate
//! deliveries are harmless, failures are reported per message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use rust_decimal::Decimal;
use serde_json::Value;
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::memory_queue::memory_queue;
use shared::domain::{BatchId, Usd, UserId};
use shared::ports::{Accounts, Exchange, ExchangeError, ExchangeOrder, Fill, Lookup, Orders, Settlements, SystemClock};
use shared::settlement::Settler;
use testkit::faults::{Fault, FaultyTable, Operation};

const FIXTURE: &str = include_str!("../../../events/sqs-settle.json");

/// An exchange that answers each buy as told and counts the buys.
struct ScriptedExchange {
    buys: AtomicUsize,
    refuse: bool,
    fail: bool,
    filled: Mutex<Vec<BatchId>>,
}

impl ScriptedExchange {
    fn new(refuse: bool, fail: bool) -> Arc<ScriptedExchange> {
        Arc::new(ScriptedExchange { buys: AtomicUsize::new(0), refuse, fail, filled: Mutex::default() })
    }
}

#[async_trait]
impl Exchange for ScriptedExchange {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        self.buys.fetch_add(1, Ordering::SeqCst);
        if self.refuse {
            return Err(ExchangeError::Refused { reason: "400: halted".into() });
        }
        if self.fail {
            let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
            return Err(ExchangeError::Unknown { reason: "no answer".into(), source: Some(Box::new(cause)) });
        }
        self.filled.lock().unwrap().push(order.client_order_id);
        Ok(Fill::of(format!("EX-{}", order.client_order_id), order.quantity))
    }

    async fn lookup(&self, id: BatchId) -> Result<Lookup, ExchangeError> {
        let filled = self.filled.lock().unwrap().contains(&id);
        Ok(if filled { Lookup::Filled(Fill::unstated(format!("EX-{id}"))) } else { Lookup::NotFound })
    }

    /// It answers in the call: nothing is left on its way.
    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

async fn formed_batch(store: &DynamoStore, user: &str) -> BatchId {
    store.open_account(&UserId::parse(user).unwrap(), Usd::new(Decimal::from(100)).unwrap()).await.unwrap();
    let order = testkit::store_contract::order(user, "3");
    store.place_order(order, Usd::new(Decimal::TEN).unwrap()).await.unwrap().formed.unwrap()
}

/// The fixture event, with one record per (message id, body).
fn event(records: &[(&str, String)]) -> LambdaEvent<SqsEvent> {
    let mut value: Value = serde_json::from_str(FIXTURE).unwrap();
    let template = value["Records"][0].clone();
    value["Records"] = records
        .iter()
        .map(|(id, body)| {
            let mut record = template.clone();
            record["messageId"] = (*id).into();
            record["body"] = body.clone().into();
            record
        })
        .collect();
    LambdaEvent::new(serde_json::from_value(value).unwrap(), Context::default())
}

fn body(batch: BatchId) -> String {
    format!(r#"{{"batch_id":"{batch}"}}"#)
}

fn settler(store: &Arc<DynamoStore>, exchange: &Arc<impl Exchange + 'static>) -> Settler {
    let (queue, _) = memory_queue();
    Settler::new(store.clone(), exchange.clone(), Arc::new(queue), Arc::new(SystemClock), Duration::from_secs(30))
}

async fn failures(settler: &Settler, event: LambdaEvent<SqsEvent>) -> Vec<String> {
    let response = settle::handle(settler, event).await.unwrap();
    let mut ids: Vec<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn each_settle_outcome_is_counted_once() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This thread's recorder; the test's runtime runs every task on it.
    let _recording = metrics::set_default_local_recorder(&recorder);
    let store = Arc::new(DynamoStore::in_memory());
    for (user, exchange) in [
        ("alice", ScriptedExchange::new(false, false)),
        ("bob", ScriptedExchange::new(true, false)),
        ("carol", ScriptedExchange::new(false, true)),
    ] {
        let batch = formed_batch(&store, user).await;
        failures(&settler(&store, &exchange), event(&[("m1", body(batch))])).await;
    }

    let mut counted: Vec<(String, u64)> = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let value = match value {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            metrics_util::debugging::DebugValue::Histogram(values) => values.len() as u64,
            metrics_util::debugging::DebugValue::Gauge(_) => continue,
        };
        counted.push((format!("{}{{{}}}", key.key().name(), labels.join(",")), value));
    }
    counted.sort();
    let expected = [
        ("batch_formed_to_fill_seconds{}", 1),
        ("orders_refunded{}", 1),
        ("settle_attempts{}", 3),
        ("settle_outcomes{outcome=filled}", 1),
        ("settle_outcomes{outcome=refused}", 1),
        ("settle_outcomes{outcome=unknown}", 1),
    ];
    assert_eq!(counted, expected.map(|(key, n)| (key.to_owned(), n)));
}

/// An exchange that is slow enough for the attempt's lease to run out: while
/// it fills, a later attempt claims the batch, finds the fill and records it.
struct OvertakingExchange {
    store: Arc<DynamoStore>,
}

#[async_trait]
impl Exchange for OvertakingExchange {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        let later = shared::ports::Clock::now(&SystemClock) + Duration::from_secs(60);
        let claim = self.store.claim_batch(order.client_order_id, later, later + Duration::from_secs(30)).await;
        let Ok(shared::ports::Claim::Claimed(batch)) = claim else { panic!("the later attempt could not claim") };
        self.store.settle_batch(batch.id, batch.attempts, "EX-1").await.unwrap();
        Ok(Fill::of("EX-1", order.quantity))
    }

    async fn lookup(&self, _: BatchId) -> Result<Lookup, ExchangeError> {
        Ok(Lookup::NotFound)
    }

    /// It answers in the call: nothing is left on its way.
    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Its fill is counted once, by the attempt that recorded it: the late
/// one is `lease_lost`, and its message is done with.
#[tokio::test(flavor = "current_thread")]
async fn an_attempt_that_outlived_its_lease_is_counted_lost_not_filled() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let store = Arc::new(DynamoStore::in_memory());
    let batch = formed_batch(&store, "alice").await;
    let exchange = Arc::new(OvertakingExchange { store: store.clone() });
    let settler = settler(&store, &exchange);

    assert!(failures(&settler, event(&[("m1", body(batch))])).await.is_empty());

    assert_eq!(settle_outcomes(&snapshotter), vec![("lease_lost".to_owned(), 1)]);
    assert_eq!(store.batch(batch).await.unwrap().unwrap().exchange_order_id.as_deref(), Some("EX-1"));
}

/// The attempt's own write of the fill, applied with its reply lost, is
/// found done when tried again: a fill, counted once.
#[tokio::test(flavor = "current_thread")]
async fn a_fill_recorded_with_its_reply_lost_is_counted_filled_once() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let memory = Arc::new(DynamoStore::in_memory());
    let batch = formed_batch(&memory, "alice").await;
    // The claim is the first update, the fill's record the second.
    let updates = AtomicUsize::new(0);
    let plan = move |operation| match operation {
        Operation::Update if updates.fetch_add(1, Ordering::SeqCst) == 1 => Fault::LoseReply,
        _ => Fault::None,
    };
    let store = Arc::new(DynamoStore::on(Arc::new(FaultyTable::new(Arc::clone(memory.table()), Arc::new(plan)))));
    let exchange = ScriptedExchange::new(false, false);

    assert!(failures(&settler(&store, &exchange), event(&[("m1", body(batch))])).await.is_empty());

    assert_eq!(settle_outcomes(&snapshotter), vec![("filled".to_owned(), 1)]);
    assert_eq!(exchange.buys.load(Ordering::SeqCst), 1);
}

/// `settle_outcomes` as counted, by outcome.
fn settle_outcomes(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<(String, u64)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "settle_outcomes")
        .map(|(key, _, _, value)| {
            let outcome = key.key().labels().map(|l| l.value().to_owned()).collect::<String>();
            let metrics_util::debugging::DebugValue::Counter(n) = value else { panic!("not a counter") };
            (outcome, n)
        })
        .collect()
}

#[tokio::test]
async fn the_fixture_event_parses_and_an_unknown_batch_is_reported_failed() {
    let store = Arc::new(DynamoStore::in_memory());
    let exchange = ScriptedExchange::new(false, false);
    let event: SqsEvent = serde_json::from_str(FIXTURE).unwrap();
    let failed = failures(&settler(&store, &exchange), LambdaEvent::new(event, Context::default())).await;
    assert_eq!(failed, vec!["059f36b4-87a3-44ab-83d2-661975830a7d"]);
    assert_eq!(exchange.buys.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn duplicate_deliveries_buy_once() {
    let store = Arc::new(DynamoStore::in_memory());
    let exchange = ScriptedExchange::new(false, false);
    let settler = settler(&store, &exchange);
    let batch = formed_batch(&store, "alice").await;

    // Twice in one event (racing), then again later.
    let failed = failures(&settler, event(&[("m1", body(batch)), ("m2", body(batch))])).await;
    // One of the racing copies may find the batch leased: it is retried later.
    assert!(failed.len() <= 1, "{failed:?}");
    assert!(failures(&settler, event(&[("m3", body(batch))])).await.is_empty());

    assert_eq!(exchange.buys.load(Ordering::SeqCst), 1);
    let stored = store.batch(batch).await.unwrap().unwrap();
    assert_eq!(stored.exchange_order_id, Some(format!("EX-{batch}")));
}

#[tokio::test]
async fn a_refused_batch_is_refunded_once_however_often_it_is_delivered() {
    let store = Arc::new(DynamoStore::in_memory());
    let exchange = ScriptedExchange::new(true, false);
    let settler = settler(&store, &exchange);
    let batch = formed_batch(&store, "alice").await;

    for id in ["m1", "m2", "m3"] {
        assert!(failures(&settler, event(&[(id, body(batch))])).await.is_empty());
    }
    let alice = UserId::parse("alice").unwrap();
    assert_eq!(store.balance(&alice).await.unwrap(), Usd::new(Decimal::from_str("100").unwrap()).unwrap());
    assert_eq!(exchange.buys.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn only_the_messages_that_must_be_retried_are_reported() {
    let store = Arc::new(DynamoStore::in_memory());
    let failing = ScriptedExchange::new(false, true);
    let first = settler(&store, &failing);
    let batch = formed_batch(&store, "alice").await;

    let failed = failures(
        &first,
        event(&[
            ("unknown-outcome", body(batch)),
            ("garbage", "not json".into()),
            ("not-a-ulid", r#"{"batch_id":"x"}"#.into()),
        ]),
    )
    .await;
    assert_eq!(failed, vec!["garbage", "not-a-ulid", "unknown-outcome"]);

    // The unknown outcome released its lease: the next delivery asks the
    // exchange, then buys.
    let working = ScriptedExchange::new(false, false);
    let retry = settler(&store, &working);
    assert!(failures(&retry, event(&[("unknown-outcome", body(batch))])).await.is_empty());
    assert_eq!(working.buys.load(Ordering::SeqCst), 1);
}

/// Three orders pooled into one batch, from three users.
async fn pooled_batch(store: &DynamoStore) -> BatchId {
    let mut formed = None;
    for name in ["alice", "bob", "carol"] {
        store.open_account(&UserId::parse(name).unwrap(), Usd::new(Decimal::from(100)).unwrap()).await.unwrap();
        let order = testkit::store_contract::order(name, "1");
        formed = store.place_order(order, Usd::new(Decimal::TEN).unwrap()).await.unwrap().formed.or(formed);
    }
    formed.unwrap()
}

/// The exchange refuses; the refund stops after the first order (the
/// store fails); the next delivery resumes the refunds where they stopped,
/// and never sends the order again (the exchange would answer a lookup with
/// 404: it never took it).
#[tokio::test]
async fn a_refund_that_fails_midway_resumes_on_the_next_delivery_and_never_buys_again() {
    use shared::adapters::dynamodb::table::memory::MemoryTable;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use testkit::faults::{Fault, FaultyTable, Operation};

    let failing = Arc::new(AtomicBool::new(false));
    let refunds_let_through = Arc::new(AtomicUsize::new(0));
    let plan = {
        let (failing, let_through) = (Arc::clone(&failing), Arc::clone(&refunds_let_through));
        move |operation: Operation| {
            let fail = failing.load(Ordering::SeqCst)
                && operation == Operation::Transact
                && let_through.fetch_add(1, Ordering::SeqCst) >= 1;
            if fail { Fault::FailBefore } else { Fault::None }
        }
    };
    let table = Arc::new(FaultyTable::new(Arc::new(MemoryTable::new()), Arc::new(plan)));
    let store = Arc::new(DynamoStore::on(table));
    let exchange = ScriptedExchange::new(true, false);
    let settler = settler(&store, &exchange);
    let batch = pooled_batch(&store).await;

    // The refusal is recorded; one order is refunded; then the store fails.
    failing.store(true, Ordering::SeqCst);
    assert_eq!(failures(&settler, event(&[("m1", body(batch))])).await, vec!["m1"]);
    let refused = store.batch(batch).await.unwrap().unwrap();
    assert_eq!((refused.status, refused.refunded), (shared::domain::BatchStatus::Refused, 1));

    failing.store(false, Ordering::SeqCst);
    assert!(failures(&settler, event(&[("m1", body(batch))])).await.is_empty());

    assert_eq!(exchange.buys.load(Ordering::SeqCst), 1, "sent again after the refusal");
    assert_eq!(store.batch(batch).await.unwrap().unwrap().status, shared::domain::BatchStatus::Refunded);
    for name in ["alice", "bob", "carol"] {
        let balance = store.balance(&UserId::parse(name).unwrap()).await.unwrap();
        assert_eq!(balance, Usd::new(Decimal::from(100)).unwrap(), "{name}");
    }
}

/// A delivery that finds a live attempt holding the batch is done with (its
/// receives are not used up against the lease): a delayed message looks
/// again once the lease is over.
#[tokio::test(start_paused = true)]
async fn a_delivery_while_another_attempt_holds_the_batch_comes_back_after_the_lease() {
    let store = Arc::new(DynamoStore::in_memory());
    let exchange = ScriptedExchange::new(false, false);
    let (queue, mut delivered) = memory_queue();
    let settler =
        Settler::new(store.clone(), exchange.clone(), Arc::new(queue), Arc::new(SystemClock), Duration::from_secs(30));
    let batch = formed_batch(&store, "alice").await;
    let now = shared::ports::Clock::now(&SystemClock);
    let held = store.claim_batch(batch, now, now + Duration::from_secs(20)).await.unwrap();
    assert!(matches!(held, shared::ports::Claim::Claimed(_)), "{held:?}");

    assert!(failures(&settler, event(&[("m1", body(batch))])).await.is_empty());
    assert!(delivered.try_recv().is_err(), "not before the lease is over");
    let again = tokio::time::timeout(Duration::from_secs(60), delivered.recv()).await.unwrap().unwrap();
    assert_eq!(again.body, body(batch));
    assert_eq!(exchange.buys.load(Ordering::SeqCst), 0, "the held batch was not sent meanwhile");
}

/// An exchange that reports every buy filled in another coin.
struct OtherCoinExchange;

#[async_trait]
impl Exchange for OtherCoinExchange {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        Ok(Fill { symbol: Some("BTC".into()), ..Fill::of("EX-OTHER", order.quantity) })
    }

    async fn lookup(&self, _: BatchId) -> Result<Lookup, ExchangeError> {
        Ok(Lookup::NotFound)
    }

    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A fill that names another coin is no fill of this batch: never recorded,
/// retried (and an error for an operator).
#[tokio::test]
async fn a_fill_of_another_coin_is_never_recorded() {
    let store = Arc::new(DynamoStore::in_memory());
    let settler = settler(&store, &Arc::new(OtherCoinExchange));
    let batch = formed_batch(&store, "alice").await;
    assert_eq!(failures(&settler, event(&[("m1", body(batch))])).await, vec!["m1"]);
    let stored = store.batch(batch).await.unwrap().unwrap();
    assert_eq!(stored.status, shared::domain::BatchStatus::Submitting);
    assert_eq!(stored.exchange_order_id, None);
}

/// The first POST's connection drops right after sending, and the request
/// reaches the exchange three seconds later, when the halt has lifted: it
/// is filled. The second POST, sent meanwhile, is refused with a 400.
struct LateArrival {
    posts: AtomicUsize,
    filled: Arc<Mutex<Option<String>>>,
}

#[async_trait]
impl Exchange for LateArrival {
    async fn buy(&self, _: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        if self.posts.fetch_add(1, Ordering::SeqCst) > 0 {
            return Err(ExchangeError::Refused { reason: "400: symbol halted".into() });
        }
        let filled = Arc::clone(&self.filled);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            *filled.lock().unwrap() = Some("EX-LATE".into());
        });
        Err(ExchangeError::Unknown { reason: "the connection was lost after sending".into(), source: None })
    }

    async fn lookup(&self, _: BatchId) -> Result<Lookup, ExchangeError> {
        Ok(self.filled.lock().unwrap().clone().map_or(Lookup::NotFound, |id| Lookup::Filled(Fill::unstated(id))))
    }

    fn request_timeout(&self) -> std::time::Duration {
        Duration::from_secs(5)
    }
}

/// Wall time that moves with tokio's (paused) clock.
struct TokioClock {
    start: tokio::time::Instant,
    at_start: time::OffsetDateTime,
}

impl shared::ports::Clock for TokioClock {
    fn now(&self) -> time::OffsetDateTime {
        self.at_start + self.start.elapsed()
    }
}

/// A refusal does not reserve the id: an earlier attempt's request still on
/// its way can be filled after it. The refusal is recorded, but refunds wait
/// until every earlier attempt's lease and request timeout are over and a
/// lookup then finds no fill; here it finds the fill, and the batch is
/// settled, nobody credited.
#[tokio::test(start_paused = true)]
async fn a_refusal_waits_for_an_earlier_attempts_request_still_on_its_way() {
    let store = Arc::new(DynamoStore::in_memory());
    let exchange = Arc::new(LateArrival { posts: AtomicUsize::new(0), filled: Arc::default() });
    let clock = Arc::new(TokioClock { start: tokio::time::Instant::now(), at_start: time::OffsetDateTime::now_utc() });
    let (queue, _delivered) = memory_queue();
    let settler = Settler::new(store.clone(), exchange.clone(), Arc::new(queue), clock, Duration::from_secs(30));
    let batch = formed_batch(&store, "alice").await;
    let alice = UserId::parse("alice").unwrap();

    let first = settler.settle(batch).await;
    assert!(first.is_err(), "{first:?}");
    let second = settler.settle(batch).await.unwrap();
    assert!(matches!(second, shared::settlement::Settlement::Deferred { .. }), "{second:?}");
    let refused = store.batch(batch).await.unwrap().unwrap();
    assert_eq!(refused.status, shared::domain::BatchStatus::Refused);
    assert_eq!(store.balance(&alice).await.unwrap(), Usd::new(Decimal::from(88)).unwrap(), "nobody credited yet");
    // Nor can anyone be, whoever asks the store, until the refusal is confirmed.
    let early = store.refund_batch(batch, 100).await.unwrap();
    assert_eq!((early.orders, early.finished), (0, false), "{early:?}");
    assert_eq!(store.balance(&alice).await.unwrap(), Usd::new(Decimal::from(88)).unwrap());

    // The late request is filled; once the wait is over, the next delivery looks.
    tokio::time::sleep(Duration::from_secs(36)).await;
    let third = settler.settle(batch).await.unwrap();
    assert_eq!(third, shared::settlement::Settlement::Bought { exchange_order_id: "EX-LATE".into() });
    let stored = store.batch(batch).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.refunded), (shared::domain::BatchStatus::Settled, 0));
    assert_eq!(store.balance(&alice).await.unwrap(), Usd::new(Decimal::from(88)).unwrap());
}

/// Every settlement write's first reply is lost after it applied, and the
/// SDK sends it again (its condition then fails on the state the write
/// itself left): each attempt still knows its own writes, so one delivery
/// buys (or refuses and refunds) at once, never waiting out a lease it
/// holds itself, never buying twice.
#[tokio::test]
async fn writes_whose_replies_are_lost_and_resent_are_known_as_the_attempts_own() {
    use shared::adapters::dynamodb::table::memory::MemoryTable;
    use shared::domain::BatchStatus;
    use std::sync::atomic::AtomicBool;
    use testkit::faults::{Fault, FaultyTable, Operation};

    for refuse in [false, true] {
        let resending = Arc::new(AtomicBool::new(false));
        let plan = {
            let resending = Arc::clone(&resending);
            move |_: Operation| if resending.load(Ordering::SeqCst) { Fault::Resent } else { Fault::None }
        };
        let table = Arc::new(FaultyTable::new(Arc::new(MemoryTable::new()), Arc::new(plan)));
        let store = Arc::new(DynamoStore::on(Arc::clone(&table) as Arc<dyn shared::adapters::dynamodb::table::Table>));
        let exchange = ScriptedExchange::new(refuse, false);
        let settler = settler(&store, &exchange);
        let batch = pooled_batch(&store).await;

        resending.store(true, Ordering::SeqCst);
        assert!(failures(&settler, event(&[("m1", body(batch))])).await.is_empty());
        resending.store(false, Ordering::SeqCst);

        assert_eq!(exchange.buys.load(Ordering::SeqCst), 1, "refuse: {refuse}");
        assert!(table.injected.lost_replies.load(Ordering::SeqCst) >= 2, "no reply was lost");
        let status = store.batch(batch).await.unwrap().unwrap().status;
        assert_eq!(status, if refuse { BatchStatus::Refunded } else { BatchStatus::Settled });
        let expected = if refuse { 100 } else { 96 };
        for name in ["alice", "bob", "carol"] {
            let balance = store.balance(&UserId::parse(name).unwrap()).await.unwrap();
            assert_eq!(balance, Usd::new(Decimal::from(expected)).unwrap(), "{name}");
        }
    }
}

/// A clock the test moves.
struct Moving(Mutex<time::OffsetDateTime>);

impl shared::ports::Clock for Moving {
    fn now(&self) -> time::OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// A refusing exchange, settlement and a reconciler on one store, on a
/// clock the test moves; `sent` is what the reconciler re-sends.
struct Refusing {
    start: time::OffsetDateTime,
    clock: Arc<Moving>,
    store: Arc<DynamoStore>,
    exchange: Arc<ScriptedExchange>,
    settler: Settler,
    reconciler: shared::reconcile::Reconciler,
    sent: tokio::sync::mpsc::UnboundedReceiver<shared::adapters::memory_queue::QueuedMessage>,
}

impl Refusing {
    fn new() -> Refusing {
        let start = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let clock = Arc::new(Moving(Mutex::new(start)));
        let store = Arc::new(DynamoStore::in_memory().with_clock(clock.clone()));
        let exchange = ScriptedExchange::new(true, false);
        let (queue, _) = memory_queue();
        let settler =
            Settler::new(store.clone(), exchange.clone(), Arc::new(queue), clock.clone(), Duration::from_secs(30));
        let (resends, sent) = memory_queue();
        let policy = shared::domain::ResendPolicy {
            ready_after: time::Duration::minutes(1),
            backoff: time::Duration::minutes(5),
            backoff_cap: time::Duration::hours(1),
            max_attempts: 5,
        };
        let reconciler = shared::reconcile::Reconciler::new(store.clone(), Arc::new(resends), clock.clone(), policy);
        Refusing { start, clock, store, exchange, settler, reconciler, sent }
    }
}

/// An exchange that fills an order after it answered a refusal (outside
/// the protocol's promise; exchanges do it): the refunded batch is looked
/// up again five minutes after its refund, sent by the reconciler, and the
/// fill is recorded on it and counted, credited to nobody. A batch whose
/// looks find nothing is looked at again after an hour, then no more.
#[tokio::test]
async fn a_fill_after_a_refund_is_found_by_a_later_look_and_recorded_never_credited() {
    use shared::domain::BatchStatus;
    use shared::ports::Outbox;

    let Refusing { start, clock, store, exchange, settler, reconciler, mut sent } = Refusing::new();
    let at = |after: time::Duration| *clock.0.lock().unwrap() = start + after;

    let late = pooled_batch(&store).await;
    assert!(failures(&settler, event(&[("m1", body(late))])).await.is_empty());
    let refunded = store.batch(late).await.unwrap().unwrap();
    assert_eq!(
        (refunded.status, refunded.recheck_at),
        (BatchStatus::Refunded, Some(start + time::Duration::minutes(5)))
    );
    // Filled at the exchange after all.
    exchange.filled.lock().unwrap().push(late);

    // Before its look is due, nothing is sent.
    at(time::Duration::minutes(4));
    assert!(reconciler.run_once().await.unwrap().resent.is_empty());
    at(time::Duration::minutes(5));
    assert_eq!(reconciler.run_once().await.unwrap().resent, vec![late]);
    let message = sent.try_recv().unwrap();
    assert!(failures(&settler, event(&[("m2", message.body)])).await.is_empty());

    let found = store.batch(late).await.unwrap().unwrap();
    assert_eq!(
        (found.status, found.late_fill.as_deref(), found.recheck_at),
        (BatchStatus::Refunded, Some(format!("EX-{late}").as_str()), None)
    );
    for name in ["alice", "bob", "carol"] {
        let balance = store.balance(&UserId::parse(name).unwrap()).await.unwrap();
        assert_eq!(balance, Usd::new(Decimal::from(100)).unwrap(), "{name}: credited or debited by the late fill");
    }
    assert!(store.open_batches().await.unwrap().is_empty(), "still watched after its fill was found");
    assert_eq!(exchange.buys.load(Ordering::SeqCst), 1, "bought again");
}

#[tokio::test]
async fn a_refunded_batch_is_looked_up_after_five_minutes_and_an_hour_then_no_more() {
    use shared::domain::BatchStatus;
    use shared::ports::Outbox;

    let Refusing { start, clock, store, settler, reconciler, mut sent, .. } = Refusing::new();
    let at = |after: time::Duration| *clock.0.lock().unwrap() = start + after;

    let batch = pooled_batch(&store).await;
    assert!(failures(&settler, event(&[("m1", body(batch))])).await.is_empty());
    for (minutes, next) in [(5, Some(start + time::Duration::hours(1))), (60, None)] {
        at(time::Duration::minutes(minutes));
        assert_eq!(reconciler.run_once().await.unwrap().resent, vec![batch], "at +{minutes} min");
        let message = sent.try_recv().unwrap();
        assert!(failures(&settler, event(&[("m", message.body)])).await.is_empty());
        let looked = store.batch(batch).await.unwrap().unwrap();
        assert_eq!((looked.status, looked.recheck_at, looked.late_fill), (BatchStatus::Refunded, next, None));
    }
    at(time::Duration::hours(30));
    assert!(reconciler.run_once().await.unwrap().resent.is_empty());
    assert!(store.open_batches().await.unwrap().is_empty());
}
