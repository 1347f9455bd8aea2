//! The DynamoDB adapter under an injected storm of `TransactionConflict`
//! cancellations and lost replies: retried, and never losing or duplicating
//! an order or a debit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use e2e_tests::emulators::{Emulator, unique_name};
use rust_decimal::Decimal;
use shared::adapters::dynamodb::{DynamoStore, Failpoints, table};
use shared::contract::{order, usd};
use shared::domain::{IdempotencyKey, OrderStatus, Usd, UserId};
use shared::ports::{PlaceError, Store};

const USERS: usize = 16;
const ORDERS_PER_USER: usize = 8;

async fn storm_on(emulator: Emulator) {
    let client = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    let name = unique_name("faults");
    table::ensure_table(&client, &name).await.unwrap();
    // Two "processes" (stores with their own caches and lanes) on one table.
    // Two of every three transactions conflict; every fourth commit loses its reply.
    let stores: Vec<Arc<DynamoStore>> = (0..2)
        .map(|_| Arc::new(DynamoStore::new(client.clone(), name.clone()).with_failpoints(Failpoints::storm(2, 3, 4))))
        .collect();
    let store = Arc::clone(&stores[0]);
    let users: Vec<UserId> = (0..USERS).map(|u| UserId::parse(&format!("storm-{u}")).unwrap()).collect();
    for user in &users {
        store.put_account(user, usd("100")).await.unwrap();
    }

    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .flat_map(|(u, user)| (0..ORDERS_PER_USER).map(move |o| (u, o, user.clone())))
        .map(|(u, o, user)| {
            let store = Arc::clone(&stores[(u + o) % 2]);
            tokio::spawn(async move {
                let amount = format!("0.{:02}", (u * 7 + o * 13) % 90 + 10);
                let mut new = order(user.as_str(), &amount);
                // Half the orders carry a key and are sent twice.
                let keyed = o % 2 == 0;
                if keyed {
                    new.idempotency_key = Some(IdempotencyKey::parse(&format!("k-{o}")).unwrap());
                }
                let first = store.place_order(new.clone(), usd("10")).await;
                let second = if keyed {
                    let mut again = new.clone();
                    again.id = shared::domain::OrderId::generate();
                    Some(store.place_order(again, usd("10")).await)
                } else {
                    None
                };
                (user, new, first, second)
            })
        })
        .collect();

    let mut placed_cost: HashMap<UserId, Decimal> = HashMap::new();
    let mut formed = HashSet::new();
    let mut placed_ids = Vec::new();
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
                    formed.extend(placed.formed);
                    *placed_cost.entry(user.clone()).or_default() += new.cost.value();
                    placed_ids.push((user.clone(), placed.order.order.id));
                }
                Err(PlaceError::Busy) => busy += 1,
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
    }

    // Each debit has its order and each order its debit, once.
    for user in &users {
        let paid = placed_cost.get(user).copied().unwrap_or_default();
        assert_eq!(store.balance(user).await.unwrap().value() + paid, Decimal::from(100), "{user}");
    }
    // Every placed order is stored once, in a formed batch or the open pool.
    let (mut in_batches, mut pending) = (Decimal::ZERO, Decimal::ZERO);
    let mut batch_members: HashMap<_, u32> = HashMap::new();
    for (user, id) in &placed_ids {
        let view = store.order(user, *id).await.unwrap().expect("a placed order is stored");
        match view.status {
            OrderStatus::Pending => pending += view.order.cost.value(),
            _ => {
                let batch = view.batch_id.unwrap();
                assert!(formed.contains(&batch), "an order in a batch nobody formed");
                *batch_members.entry(batch).or_default() += 1;
                in_batches += view.order.cost.value();
            }
        }
    }
    let mut batches_usd = Decimal::ZERO;
    for id in &formed {
        let batch = store.batch(*id).await.unwrap().unwrap();
        assert!(batch.usd >= usd("10"));
        assert_eq!(batch.count, batch_members[id], "batch {id} has other members than its count");
        batches_usd += batch.usd.value();
    }
    assert_eq!(batches_usd, in_batches);
    assert!(Usd::new(pending).unwrap() < usd("10"));
    assert_eq!(in_batches + pending, placed_cost.values().sum::<Decimal>());

    let stats: Vec<_> = stores.iter().map(|s| s.stats()).collect();
    for stats in &stats {
        assert!(stats.conflicts > 0 && stats.lost_replies > 0, "the storm did not happen: {stats:?}");
    }
    println!("{emulator:?}: {stats:?}, busy: {busy}, batches: {}", formed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_storm_on_dynamodb_local_loses_and_duplicates_nothing() {
    storm_on(Emulator::DynamoDbLocal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_storm_on_ministack_loses_and_duplicates_nothing() {
    storm_on(Emulator::Ministack).await;
}
