//! The DynamoDB store under faults, on both emulators: a storm of
//! `TransactionConflict` cancellations and lost replies (injected around the
//! SDK table), and replies lost for real on the wire (a proxy that closes
//! the connection once the emulator has answered). Never an order or a
//! debit lost or doubled; a client told "unknown" only when nothing could
//! tell.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use e2e_tests::emulators::{Emulator, unique_name};
use e2e_tests::lossy_proxy::{LossRule, LossyProxy};
use e2e_tests::{Behavior, FakeExchange, TestApp, spawn_app_with};
use orders_local::{AwsOptions, Backend};
use rust_decimal::Decimal;
use shared::adapters::dynamodb::table::Table;
use shared::adapters::dynamodb::table::sdk::SdkTable;
use shared::adapters::dynamodb::{DynamoStore, schema};
use shared::domain::{IdempotencyKey, OrderId, UserId};
use shared::ports::{Accounts, LedgerRecords, Orders, PlaceError};
use testkit::faults::{FaultyTable, Storm};
use testkit::store_contract::{assert_audit_clean, order, usd};

const USERS: usize = 16;
const ORDERS_PER_USER: usize = 8;
/// $1 to $20 at $4: pooled orders and orders bought alone.
const AMOUNTS: [&str; 8] = ["0.25", "0.5", "0.75", "1", "1.5", "2", "3", "5"];

async fn fresh_table(emulator: Emulator) -> (aws_sdk_dynamodb::Client, String) {
    let client = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    let name = unique_name("faults");
    schema::ensure_table(&client, &name).await.unwrap();
    (client, name)
}

async fn storm_on(emulator: Emulator) {
    let (client, name) = fresh_table(emulator).await;
    // Two processes on one table: two of every three transactions conflict,
    // every fourth that goes through loses its reply.
    let tables: Vec<Arc<FaultyTable>> = (0..2)
        .map(|_| {
            let sdk: Arc<dyn Table> = Arc::new(SdkTable::new(client.clone(), name.clone()));
            Arc::new(FaultyTable::new(sdk, Arc::new(Storm::new(2, 3, 4))))
        })
        .collect();
    let stores: Vec<Arc<DynamoStore>> =
        tables.iter().map(|t| Arc::new(DynamoStore::on(Arc::clone(t) as Arc<dyn Table>))).collect();
    let clean = DynamoStore::new(client.clone(), name.clone());
    let users: Vec<UserId> = (0..USERS).map(|u| UserId::parse(&format!("storm-{u}")).unwrap()).collect();
    for user in &users {
        clean.open_account(user, usd("100")).await.unwrap();
    }

    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .flat_map(|(u, user)| (0..ORDERS_PER_USER).map(move |o| (u, o, user.clone())))
        .map(|(u, o, user)| {
            let store = Arc::clone(&stores[(u + o) % 2]);
            tokio::spawn(async move {
                let mut new = order(user.as_str(), AMOUNTS[(u * 3 + o * 5) % AMOUNTS.len()]);
                // Half the orders carry a key and are sent twice.
                let keyed = o % 2 == 0;
                if keyed {
                    new.idempotency_key = Some(IdempotencyKey::parse(&format!("k-{o}")).unwrap());
                }
                let first = store.place_order(new.clone(), usd("10")).await;
                let second = if keyed {
                    let mut again = new.clone();
                    again.id = OrderId::generate();
                    Some(store.place_order(again, usd("10")).await)
                } else {
                    None
                };
                (user, new, first, second)
            })
        })
        .collect();

    let mut placed_cost: HashMap<UserId, Decimal> = HashMap::new();
    let mut busy = 0;
    for task in tasks {
        let (user, new, first, second) = task.await.unwrap();
        // At most one of the two sends places the order; the other replays it or was busy.
        let mut placed_here = None;
        for result in std::iter::once(first).chain(second) {
            match result {
                Ok(placed) if placed.replayed => {
                    assert_eq!(Some(placed.order.order.id), placed_here, "a replay of an order never placed");
                }
                Ok(placed) => {
                    assert_eq!(placed_here, None, "the same key placed twice");
                    placed_here = Some(placed.order.order.id);
                    *placed_cost.entry(user.clone()).or_default() += new.cost.value();
                }
                Err(PlaceError::Busy) => busy += 1,
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
    }

    // Each debit has its order and each order its debit, once.
    for user in &users {
        let paid = placed_cost.get(user).copied().unwrap_or_default();
        assert_eq!(clean.balance(user).await.unwrap().value() + paid, Decimal::from(100), "{user}");
    }
    // Every order in exactly one batch or the open pool, batches and pool exact.
    assert_audit_clean(&clean).await;
    for table in &tables {
        let injected = &table.injected;
        assert!(
            injected.conflicts.load(Ordering::Relaxed) > 0 && injected.lost_replies.load(Ordering::Relaxed) > 0,
            "the storm did not happen"
        );
    }
    let stats: Vec<_> = stores.iter().map(|s| s.stats()).collect();
    println!("{emulator:?}: {stats:?}, busy: {busy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_storm_on_dynamodb_local_loses_and_duplicates_nothing() {
    storm_on(Emulator::DynamoDbLocal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_storm_on_ministack_loses_and_duplicates_nothing() {
    storm_on(Emulator::Ministack).await;
}

/// A store whose DynamoDB requests go through a proxy losing replies.
async fn store_behind(proxy: &LossyProxy, emulator: Emulator, table: &str) -> DynamoStore {
    let sdk = emulator.sdk_config().await;
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .endpoint_url(proxy.endpoint())
        .retry_config(RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(10)))
        .build();
    DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), table)
}

async fn lost_replies_on(emulator: Emulator) {
    let (client, name) = fresh_table(emulator).await;
    // Every third transaction loses the replies of all its sends (the SDK's
    // retries and the store's resends): only reading back can tell.
    let proxy =
        LossyProxy::start(emulator.endpoint(), LossRule { every: 3, sends: usize::MAX, ..LossRule::NONE }).await;
    let store = Arc::new(store_behind(&proxy, emulator, &name).await);
    let clean = DynamoStore::new(client, name);
    let users: Vec<UserId> = (0..6).map(|u| UserId::parse(&format!("lossy-{u}")).unwrap()).collect();
    for user in &users {
        clean.open_account(user, usd("100")).await.unwrap();
    }
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = Arc::clone(&store);
            let new = order(users[i % users.len()].as_str(), AMOUNTS[(i * 3) % AMOUNTS.len()]);
            tokio::spawn(async move { (new.clone(), store.place_order(new, usd("10")).await) })
        })
        .collect();
    let mut spent: HashMap<UserId, Decimal> = HashMap::new();
    for task in tasks {
        let (new, result) = task.await.unwrap();
        let placed = result.unwrap_or_else(|e| panic!("a lost reply was not resolved: {e:?}"));
        assert_eq!(placed.order.order.id, new.id);
        *spent.entry(new.user.clone()).or_default() += new.cost.value();
    }
    assert!(proxy.lost() >= 8, "the proxy lost only {} replies", proxy.lost());
    assert!(store.stats().lost_replies > 0);
    for user in &users {
        assert_eq!(clean.balance(user).await.unwrap().value() + spent[user], Decimal::from(100), "{user}");
    }
    assert_eq!(clean.ledger().await.unwrap().orders.len(), 24);
    assert_audit_clean(&clean).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_lost_on_the_wire_are_resolved_on_dynamodb_local() {
    lost_replies_on(Emulator::DynamoDbLocal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_lost_on_the_wire_are_resolved_on_ministack() {
    lost_replies_on(Emulator::Ministack).await;
}

/// When even the read-back is lost, the client hears "unknown", never
/// "nothing changed"; a retry with the same key finds the order and does
/// not debit again.
async fn unknown_outcome_on(emulator: Emulator) {
    let (client, name) = fresh_table(emulator).await;
    let proxy = LossyProxy::start(
        emulator.endpoint(),
        LossRule { every: 1, sends: usize::MAX, reads_after_a_loss: true, ..LossRule::NONE },
    )
    .await;
    let clean = DynamoStore::new(client.clone(), name.clone());
    clean.open_account(&UserId::parse("alice").unwrap(), usd("100")).await.unwrap();
    let lossy = store_behind(&proxy, emulator, &name).await;
    let mut new = order("alice", "1");
    new.idempotency_key = Some(IdempotencyKey::parse("retry-me").unwrap());

    let result = lossy.place_order(new.clone(), usd("10")).await;

    assert!(matches!(result, Err(PlaceError::OutcomeUnknown(_))), "{result:?}");
    // It did commit: the client was right not to be told otherwise.
    assert_eq!(clean.balance(&UserId::parse("alice").unwrap()).await.unwrap(), usd("96"));
    let mut retry = new.clone();
    retry.id = OrderId::generate();
    let replayed = clean.place_order(retry, usd("10")).await.unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.order.order.id, new.id);
    assert_eq!(clean.balance(&UserId::parse("alice").unwrap()).await.unwrap(), usd("96"));
    assert_audit_clean(&clean).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_outcome_is_said_only_when_nothing_can_tell_on_dynamodb_local() {
    unknown_outcome_on(Emulator::DynamoDbLocal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_outcome_is_said_only_when_nothing_can_tell_on_ministack() {
    unknown_outcome_on(Emulator::Ministack).await;
}

/// The SDK's standard retries, with a short first backoff (the replies are
/// lost on purpose, many times).
async fn through(proxy: &LossyProxy) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(proxy.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(10)))
        .load()
        .await
}

/// orders-local with its table on `emulator` behind `proxy`, its queue on ministack.
async fn app_behind(proxy: &LossyProxy, exchange: FakeExchange, accounts: &[(&str, &str)]) -> TestApp {
    let dynamodb = through(proxy).await;
    let sqs = Emulator::Ministack.sdk_config().await;
    spawn_app_with(accounts, exchange, move |options| {
        options.backend = Backend::Aws;
        options.aws = AwsOptions {
            table: unique_name("lossy"),
            queue_name: unique_name("lossy-settle"),
            dynamodb: Some(dynamodb),
            sqs: Some(sqs),
        };
    })
    .await
}

/// An order written whose every reply (and every read after) was lost is
/// answered `500 outcome-unknown`, never "nothing changed"; a retry with its
/// key finds it, and it was debited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_placement_whose_replies_are_lost_is_never_answered_as_nothing_changed() {
    for emulator in [Emulator::DynamoDbLocal, Emulator::Ministack] {
        let proxy = LossyProxy::start(emulator.endpoint(), LossRule::NONE).await;
        let app = app_behind(&proxy, FakeExchange::start().await, &[("alice", "100")]).await;
        let order = r#"{"coin":"ABAN","amount":"1"}"#;
        proxy.set_rule(LossRule { every: 1, sends: usize::MAX, reads_after_a_loss: true, ..LossRule::NONE });

        let reply = app.post_raw(Some("alice"), order, &[("idempotency-key", "lost-1")]).await;

        reply.assert_problem(500, "outcome-unknown");
        proxy.set_rule(LossRule::NONE);
        let retry = app.post_raw(Some("alice"), order, &[("idempotency-key", "lost-1")]).await;
        assert_eq!(retry.status, 200, "{emulator:?}: {}", retry.body);
        assert_eq!(app.balance("alice").await, e2e_tests::dec("96"), "{emulator:?}");
        app.stop().await;
    }
}

/// The exchange refuses a batch; every refund's first replies are lost (the
/// SDK's retries included). The refunds still happen, each once, and the
/// order is never sent to the exchange again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_whose_replies_are_lost_complete_once_and_never_resend_the_order() {
    for emulator in [Emulator::DynamoDbLocal, Emulator::Ministack] {
        let proxy = LossyProxy::start(emulator.endpoint(), LossRule::NONE).await;
        let exchange = FakeExchange::start().await;
        exchange.set_default(Behavior::Refuse);
        let users = [("alice", "100"), ("bob", "100"), ("carol", "100")];
        let app = app_behind(&proxy, exchange, &users).await;
        proxy.set_rule(LossRule { only_undashed_tokens: true, every: 1, sends: 3, ..LossRule::NONE });

        let mut orders = Vec::new();
        for (user, _) in users {
            let reply = app.place(user, "ABAN", "1").await;
            assert_eq!(reply.status, 201, "{}", reply.body);
            orders.push((user, reply.text("order_id")));
        }
        for (user, id) in &orders {
            app.wait_for_order(user, id, |r| r.text("status") == "refunded").await;
            assert_eq!(app.balance(user).await, e2e_tests::dec("100"), "{emulator:?}: {user}");
        }
        assert!(proxy.lost() >= 3, "no refund reply was lost");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let posts = app.exchange.calls().iter().filter(|c| c.method == "POST").count();
        assert_eq!(posts, 1, "{emulator:?}: the refused order was sent again");
        app.stop().await;
    }
}

/// The first reply to each of settlement's writes on a batch (its claim,
/// then the settle record) is lost on the wire after DynamoDB applied it;
/// the SDK sends it again and its condition fails on what it wrote. The
/// attempt knows its own writes by their mark: the order is bought at once
/// (not after the 30 s lease), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_whose_reply_is_lost_buys_at_once() {
    for emulator in [Emulator::DynamoDbLocal, Emulator::Ministack] {
        let proxy = LossyProxy::start(emulator.endpoint(), LossRule::NONE).await;
        let app = app_behind(&proxy, FakeExchange::start().await, &[("alice", "100")]).await;
        proxy.set_rule(LossRule { updates_containing: Some("SUBMITTING"), sends: 1, ..LossRule::NONE });

        let reply = app.place("alice", "ABAN", "3").await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let id = reply.text("order_id");
        // Well within the lease: a claim taken for someone else's would wait it out.
        app.wait_for_order("alice", &id, |r| r.text("status") == "settled").await;

        assert!(proxy.lost() >= 2, "{emulator:?}: lost {} replies", proxy.lost());
        let posts = app.exchange.calls().iter().filter(|c| c.method == "POST").count();
        assert_eq!(posts, 1, "{emulator:?}");
        assert_eq!(app.balance("alice").await, e2e_tests::dec("88"), "{emulator:?}");
        app.stop().await;
    }
}
