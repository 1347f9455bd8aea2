//! The store contract: what every `Store` adapter must do, as one suite.
//! An adapter's tests call [`store_contract_tests!`] with a factory that
//! returns a fresh, empty store per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use time::{Duration, OffsetDateTime};

use crate::domain::{BatchId, BatchStatus, Coin, IdempotencyKey, OrderId, OrderStatus, Quantity, Usd, UserId};
use crate::ports::{Claim, NewOrder, PlaceError, Placed, Store};

pub fn usd(text: &str) -> Usd {
    Usd::new(Decimal::from_str(text).unwrap()).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn ten() -> Usd {
    usd("10")
}

/// An ABAN order at $4.
pub fn order(user_name: &str, amount: &str) -> NewOrder {
    let amount = Quantity::parse(amount).unwrap();
    let price = usd("4");
    NewOrder {
        id: OrderId::generate(),
        user: user(user_name),
        coin: Coin::from_trusted("ABAN"),
        amount,
        price,
        cost: Usd::new(price.value() * amount.value()).unwrap(),
        idempotency_key: None,
        created_at: OffsetDateTime::now_utc().replace_millisecond(0).unwrap(),
    }
}

async fn funded(store: &dyn Store, users: &[(&str, &str)]) {
    for (name, balance) in users {
        store.put_account(&user(name), usd(balance)).await.unwrap();
    }
}

async fn place(store: &dyn Store, order: NewOrder) -> Placed {
    store.place_order(order, ten()).await.unwrap()
}

pub async fn placing_an_order_debits_and_records_it(store: Arc<dyn Store>) {
    funded(store.as_ref(), &[("alice", "100")]).await;
    let new = order("alice", "1.5");
    let placed = place(store.as_ref(), new.clone()).await;

    assert!(!placed.replayed);
    assert_eq!(placed.formed, None);
    assert_eq!(placed.order.status, OrderStatus::Pending);
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("94"));
    let view = store.order(&user("alice"), new.id).await.unwrap().unwrap();
    assert_eq!(view.order.amount, new.amount);
    assert_eq!(view.order.cost, usd("6"));
    assert_eq!(view.order.price, usd("4"));
    assert_eq!(view.order.created_at, new.created_at);
    assert_eq!(view.status, OrderStatus::Pending);
    assert_eq!(store.order(&user("mallory"), new.id).await.unwrap(), None, "only the owner sees it");
}

pub async fn insufficient_funds_change_nothing(store: Arc<dyn Store>) {
    funded(store.as_ref(), &[("alice", "11.99")]).await;
    let new = order("alice", "3");
    let result = store.place_order(new.clone(), ten()).await;
    assert!(matches!(result, Err(PlaceError::InsufficientFunds { .. })), "{result:?}");
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("11.99"));
    assert_eq!(store.order(&user("alice"), new.id).await.unwrap(), None);
    // A user without an account has nothing.
    assert_eq!(store.balance(&user("nobody")).await.unwrap(), Usd::ZERO);
    let result = store.place_order(order("nobody", "0.00000001"), ten()).await;
    assert!(matches!(result, Err(PlaceError::InsufficientFunds { .. })));
}

pub async fn an_order_of_the_minimum_is_its_own_ready_batch(store: Arc<dyn Store>) {
    funded(store.as_ref(), &[("alice", "100")]).await;
    let pooled = place(store.as_ref(), order("alice", "1")).await;
    let placed = place(store.as_ref(), order("alice", "2.5")).await;

    let batch_id = placed.formed.expect("a batch");
    let batch = store.batch(batch_id).await.unwrap().unwrap();
    assert_eq!(
        (batch.status, batch.usd, batch.qty, batch.count),
        (BatchStatus::Ready, usd("10"), Quantity::parse("2.5").unwrap(), 1)
    );
    assert_eq!(batch.seq, None);
    assert_eq!(placed.order.status, OrderStatus::Settling);
    assert_eq!(placed.order.batch_id, Some(batch_id));
    // The pool was not touched.
    let view = store.order(&user("alice"), pooled.order.order.id).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Pending);
}

pub async fn the_order_that_reaches_the_minimum_closes_the_pool(store: Arc<dyn Store>) {
    funded(store.as_ref(), &[("alice", "100"), ("bob", "100"), ("carol", "100")]).await;
    let a = place(store.as_ref(), order("alice", "1")).await;
    let b = place(store.as_ref(), order("bob", "1")).await;
    assert_eq!((a.formed, b.formed), (None, None));
    let c = place(store.as_ref(), order("carol", "1")).await;

    let batch_id = c.formed.expect("the third order forms the batch");
    let batch = store.batch(batch_id).await.unwrap().unwrap();
    assert_eq!((batch.usd, batch.qty, batch.count), (usd("12"), Quantity::parse("3").unwrap(), 3));
    assert_eq!(batch.coin.as_str(), "ABAN");
    for (name, placed) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        let view = store.order(&user(name), placed.order.order.id).await.unwrap().unwrap();
        assert_eq!((view.status, view.batch_id), (OrderStatus::Settling, Some(batch_id)), "{name}");
    }
    // A fresh pool opens.
    let d = place(store.as_ref(), order("alice", "1")).await;
    assert_eq!((d.formed, d.order.status), (None, OrderStatus::Pending));
}

pub async fn racing_orders_form_each_batch_exactly_once(store: Arc<dyn Store>) {
    const ORDERS: usize = 32;
    let users: Vec<String> = (0..ORDERS).map(|i| format!("racer-{i}")).collect();
    for name in &users {
        store.put_account(&user(name), usd("1")).await.unwrap();
    }
    // 32 orders of $1 each against a $10 minimum: 3 batches, 2 left open.
    let tasks: Vec<_> = users
        .iter()
        .map(|name| {
            let store = Arc::clone(&store);
            let new = order(name, "0.25");
            tokio::spawn(async move { store.place_order(new, usd("10")).await })
        })
        .collect();
    let mut formed = Vec::new();
    for task in tasks {
        let placed = task.await.unwrap().unwrap();
        formed.extend(placed.formed);
    }
    assert_eq!(formed.len(), 3, "formed {formed:?}");
    let mut members = 0;
    for id in &formed {
        let batch = store.batch(*id).await.unwrap().unwrap();
        assert_eq!((batch.usd, batch.count), (usd("10"), 10));
        members += batch.count;
    }
    assert_eq!(members, 30);
    for name in &users {
        assert_eq!(store.balance(&user(name)).await.unwrap(), Usd::ZERO);
    }
}

pub async fn racing_replays_of_one_key_debit_once(store: Arc<dyn Store>) {
    funded(store.as_ref(), &[("alice", "100")]).await;
    let key = IdempotencyKey::parse("pay-once").unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let mut new = order("alice", "1");
            new.idempotency_key = Some(key.clone());
            tokio::spawn(async move { store.place_order(new, usd("10")).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut fresh = 0;
    for task in tasks {
        let placed = task.await.unwrap().unwrap();
        fresh += usize::from(!placed.replayed);
        ids.push(placed.order.order.id);
    }
    assert_eq!(fresh, 1);
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("96"));
}

pub async fn a_key_reused_for_another_order_is_refused(store: Arc<dyn Store>) {
    funded(store.as_ref(), &[("alice", "100"), ("bob", "100")]).await;
    let key = IdempotencyKey::parse("k1").unwrap();
    let mut first = order("alice", "1");
    first.idempotency_key = Some(key.clone());
    place(store.as_ref(), first.clone()).await;

    let mut same_amount = order("alice", "1.000");
    same_amount.idempotency_key = Some(key.clone());
    let replay = place(store.as_ref(), same_amount).await;
    assert!(replay.replayed);
    assert_eq!(replay.order.order.id, first.id);

    let mut other = order("alice", "2");
    other.idempotency_key = Some(key.clone());
    let result = store.place_order(other, ten()).await;
    assert!(matches!(result, Err(PlaceError::IdempotencyKeyReused)), "{result:?}");
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("96"));

    // Scoped to the user.
    let mut bobs = order("bob", "2");
    bobs.idempotency_key = Some(key);
    assert!(!place(store.as_ref(), bobs).await.replayed);
}

async fn ready_batch(store: &dyn Store, name: &str) -> BatchId {
    funded(store, &[(name, "100")]).await;
    place(store, order(name, "3")).await.formed.unwrap()
}

pub async fn a_batch_is_claimed_by_one_attempt_at_a_time(store: Arc<dyn Store>) {
    let id = ready_batch(store.as_ref(), "alice").await;
    let now = OffsetDateTime::now_utc().replace_millisecond(0).unwrap();
    let lease = now + Duration::seconds(30);

    let Claim::Claimed(batch) = store.claim_batch(id, now, lease).await.unwrap() else { panic!("not claimed") };
    assert_eq!((batch.status, batch.attempts), (BatchStatus::Submitting, 1));
    assert!(matches!(store.claim_batch(id, now, lease).await.unwrap(), Claim::Leased { .. }));

    // An expired lease may be taken over.
    let later = lease + Duration::seconds(1);
    let Claim::Claimed(batch) = store.claim_batch(id, later, later + Duration::seconds(30)).await.unwrap() else {
        panic!("not claimed after the lease expired")
    };
    assert_eq!(batch.attempts, 2);

    // A released lease may be taken at once.
    store.release_batch(id, later).await.unwrap();
    let Claim::Claimed(batch) = store.claim_batch(id, later, later + Duration::seconds(30)).await.unwrap() else {
        panic!("not claimed after release")
    };
    assert_eq!(batch.attempts, 3);

    store.settle_batch(id, "EX-1").await.unwrap();
    store.settle_batch(id, "EX-1").await.unwrap();
    assert!(matches!(store.claim_batch(id, later, lease).await.unwrap(), Claim::Finished(BatchStatus::Settled)));
    let batch = store.batch(id).await.unwrap().unwrap();
    assert_eq!(batch.exchange_order_id.as_deref(), Some("EX-1"));
    assert!(matches!(store.claim_batch(BatchId::generate(), now, lease).await.unwrap(), Claim::NotFound));
}

pub async fn racing_claims_let_one_attempt_through(store: Arc<dyn Store>) {
    let id = ready_batch(store.as_ref(), "alice").await;
    let now = OffsetDateTime::now_utc();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.claim_batch(id, now, now + Duration::seconds(30)).await })
        })
        .collect();
    let mut claimed = 0;
    for task in tasks {
        claimed += usize::from(matches!(task.await.unwrap().unwrap(), Claim::Claimed(_)));
    }
    assert_eq!(claimed, 1);
}

pub async fn a_refund_credits_each_member_once(store: Arc<dyn Store>) {
    funded(store.as_ref(), &[("alice", "100"), ("bob", "100")]).await;
    place(store.as_ref(), order("alice", "1")).await;
    let id = place(store.as_ref(), order("bob", "2")).await.formed.unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(matches!(store.claim_batch(id, now, now + Duration::seconds(30)).await.unwrap(), Claim::Claimed(_)));

    let refund = store.refund_batch(id).await.unwrap();
    assert_eq!((refund.orders, refund.usd), (2, usd("12")));
    let again = store.refund_batch(id).await.unwrap();
    assert_eq!(again.orders, 0, "refunded twice");
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("100"));
    assert_eq!(store.balance(&user("bob")).await.unwrap(), usd("100"));
    assert_eq!(store.batch(id).await.unwrap().unwrap().status, BatchStatus::Refunded);
    assert!(matches!(store.claim_batch(id, now, now).await.unwrap(), Claim::Finished(BatchStatus::Refunded)));
}

pub async fn stuck_batches_are_old_ready_ones_and_expired_leases(store: Arc<dyn Store>) {
    let ready = ready_batch(store.as_ref(), "alice").await;
    let leased = ready_batch(store.as_ref(), "bob").await;
    let expired = ready_batch(store.as_ref(), "carol").await;
    let settled = ready_batch(store.as_ref(), "dave").await;
    let now = OffsetDateTime::now_utc() + Duration::minutes(5);
    store.claim_batch(leased, now, now + Duration::seconds(30)).await.unwrap();
    store.claim_batch(expired, now - Duration::minutes(2), now - Duration::minutes(1)).await.unwrap();
    store.claim_batch(settled, now, now + Duration::seconds(30)).await.unwrap();
    store.settle_batch(settled, "EX").await.unwrap();

    let mut stuck = store.stuck_batches(now - Duration::minutes(1), now).await.unwrap();
    stuck.sort();
    let mut expected = vec![ready, expired];
    expected.sort();
    assert_eq!(stuck, expected);
    // Young READY batches are left to their message.
    let young = store.stuck_batches(now - Duration::minutes(10), now).await.unwrap();
    assert_eq!(young, vec![expired]);
}

/// Generates one `#[tokio::test]` per contract case for a store factory.
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:expr) => {
        $crate::store_contract_tests!(@cases $factory;
            placing_an_order_debits_and_records_it,
            insufficient_funds_change_nothing,
            an_order_of_the_minimum_is_its_own_ready_batch,
            the_order_that_reaches_the_minimum_closes_the_pool,
            racing_orders_form_each_batch_exactly_once,
            racing_replays_of_one_key_debit_once,
            a_key_reused_for_another_order_is_refused,
            a_batch_is_claimed_by_one_attempt_at_a_time,
            racing_claims_let_one_attempt_through,
            a_refund_credits_each_member_once,
            stuck_batches_are_old_ready_ones_and_expired_leases,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store = ($factory)().await;
                $crate::contract::$case(store).await;
            }
        )*
    };
}
