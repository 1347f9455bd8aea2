//! Many users placing many orders at once, on several instances sharing one
//! table, while the exchange fails: the ledger must balance to the last
//! decimal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use e2e_tests::{Behavior, FakeExchange, TestApp, dec, spawn_app_with, spawn_cluster};
use rust_decimal::Decimal;

const PRICE: &str = "4";
const INITIAL: &str = "1000";

/// Small amounts with up to 8 decimals, deterministic per index, from the
/// smallest order ($0.01: 0.0025 at $4) to 1.5.
fn small_amount(index: usize) -> Decimal {
    let units = (index as u64 * 2_654_435_761 % 149_750_000) as i64 + 250_000;
    Decimal::new(units, 8)
}

/// Amounts worth $1 to $20 at $4: pooled orders and orders bought alone, mixed.
fn mixed_amount(index: usize) -> Decimal {
    const AMOUNTS: [&str; 8] = ["0.25", "0.5", "0.75", "1", "1.5", "2", "3", "5"];
    dec(AMOUNTS[(index as u64 * 2_654_435_761 % 8) as usize])
}

fn users(count: usize) -> Vec<String> {
    (0..count).map(|u| format!("user-{u}")).collect()
}

/// Places `orders` orders from `clients` concurrent clients, spread over the
/// app's instances and users; every one must be accepted. A `503 busy`
/// changed nothing and, if `retry_busy`, is retried as its `Retry-After`
/// asks; otherwise it fails the test.
async fn place_all(
    app: &TestApp,
    users: &[String],
    orders: usize,
    clients: usize,
    amount: fn(usize) -> Decimal,
    retry_busy: bool,
) -> Vec<(String, String)> {
    let client_runs = (0..clients).map(|client| async move {
        let mut placed = Vec::new();
        for index in (client..orders).step_by(clients) {
            let user = &users[index % users.len()];
            let mut reply = app.place_on(index, user, "ABAN", &amount(index).to_string()).await;
            while retry_busy && reply.status == 503 && reply.body["type"] == "busy" {
                tokio::time::sleep(Duration::from_millis(20)).await;
                reply = app.place_on(index, user, "ABAN", &amount(index).to_string()).await;
            }
            assert_eq!(reply.status, 201, "{}", reply.body);
            placed.push((user.clone(), reply.text("order_id")));
        }
        placed
    });
    futures::future::join_all(client_runs).await.into_iter().flatten().collect()
}

/// Waits for settlement to finish (every order settled, or pending in a
/// pool that holds less than the minimum: shards left idle are swept by the
/// reconciler), then checks the whole ledger from outside: balances,
/// orders, and what the exchange bought.
async fn assert_ledger(app: &TestApp, users: &[String], orders: &[(String, String)]) {
    let settled = || async {
        let mut views = Vec::new();
        for (user, id) in orders {
            let view =
                app.wait_for_order(user, id, |r| matches!(r.text("status").as_str(), "pending" | "settled")).await;
            views.push((user.clone(), view));
        }
        views
    };
    let pending_of = |views: &[(String, e2e_tests::Reply)]| -> Decimal {
        views.iter().filter(|(_, v)| v.text("status") == "pending").map(|(_, v)| v.decimal("cost_usd")).sum()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while pending_of(&settled().await) >= dec("10") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Less than the minimum is pending: nothing forms any more. Read it all once more.
    let views = settled().await;
    let fills = app.exchange.fills();

    // Money is conserved per user: balance + what they paid = what they had.
    let mut paid: HashMap<&str, Decimal> = HashMap::new();
    for (user, view) in &views {
        assert_eq!(view.decimal("cost_usd"), view.decimal("amount") * dec(PRICE), "cost is exact");
        *paid.entry(user.as_str()).or_default() += view.decimal("cost_usd");
    }
    for user in users {
        let spent = paid.get(user.as_str()).copied().unwrap_or_default();
        assert_eq!(app.balance(user).await + spent, dec(INITIAL), "{user}");
    }

    // Every buy is at least $10 and no batch was bought twice.
    let mut by_batch: HashMap<String, Decimal> = HashMap::new();
    for fill in &fills {
        assert!(fill.quantity * dec(PRICE) >= dec("10"), "buy under $10: {fill:?}");
        assert!(by_batch.insert(fill.client_order_id.clone(), fill.quantity).is_none(), "bought twice: {fill:?}");
    }
    assert!(app.exchange.resends_without_lookup().is_empty(), "resent without asking first");
    assert!(app.exchange.bad_requests().is_empty());

    // Every settled order is in exactly one bought batch, whose quantity is
    // the sum of its orders; the pending ones are what was not bought.
    let mut members: HashMap<String, Decimal> = HashMap::new();
    let (mut pending_usd, mut ordered_usd) = (Decimal::ZERO, Decimal::ZERO);
    for (_, view) in &views {
        ordered_usd += view.decimal("cost_usd");
        match view.text("status").as_str() {
            "settled" => *members.entry(view.text("batch_id")).or_default() += view.decimal("amount"),
            "pending" => {
                assert!(view.body["batch_id"].is_null());
                pending_usd += view.decimal("cost_usd");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let bought_usd: Decimal = fills.iter().map(|f| f.quantity).sum::<Decimal>() * dec(PRICE);
    assert_eq!(
        bought_usd + pending_usd,
        ordered_usd,
        "ordered {ordered_usd}, bought {bought_usd}, pending {pending_usd}"
    );
    assert_eq!(members, by_batch, "batches and their members disagree");
    assert!(pending_usd < dec("10"), "the open pool stays below the minimum: {pending_usd}");
    assert_eq!(app.dead_letters().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_racing_small_orders_conserve_money_and_buy_each_batch_once() {
    let exchange = FakeExchange::start().await;
    // The first buys fail in every way the protocol allows: refused before
    // the fill, filled with the reply lost, filled too slowly.
    exchange.script([
        Behavior::FailBeforeFill,
        Behavior::FailAfterFill,
        Behavior::FailBeforeFill,
        Behavior::FillSlowly(Duration::from_millis(800)),
        Behavior::FailAfterFill,
        Behavior::FailBeforeFill,
    ]);
    let users = users(40);
    let accounts: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), INITIAL)).collect();
    let app = spawn_app_with(&accounts, exchange, |options| {
        options.exchange_timeout = Duration::from_millis(300);
    })
    .await;

    let orders = place_all(&app, &users, 480, 480, small_amount, true).await;

    assert_ledger(&app, &users, &orders).await;
    assert!(app.exchange.fills().len() >= 10, "expected many batches, got {}", app.exchange.fills().len());
    if let Some(report) = app.aws_report() {
        println!("{report}");
    }
    app.stop().await;
}

/// The run that once broke the DynamoDB ledger: two instances on one table,
/// $1 to $20 orders mixed, every batch's first two buys answered 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_sizes_on_racing_instances_with_a_failing_exchange_conserve_money() {
    let exchange = FakeExchange::start().await;
    exchange.fail_first_posts_of_each_order(2);
    let users = users(40);
    let accounts: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), INITIAL)).collect();
    let instances: usize = std::env::var("INSTANCES").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let app = spawn_cluster(instances, &accounts, exchange, |_| {}).await;

    let orders = place_all(&app, &users, 640, 16, mixed_amount, true).await;

    assert_ledger(&app, &users, &orders).await;
    if let Some(report) = app.aws_report() {
        println!("{report}");
    }
    app.stop().await;
}

/// Eight instances sharing one table (as eight Lambda instances would), 32
/// clients placing small orders of one coin at once: none is answered
/// `busy` (the coin's pool spreads over shards as the instances collide).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_instances_on_one_coin_answer_no_busy() {
    let users = users(64);
    let accounts: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), INITIAL)).collect();
    let app = spawn_cluster(8, &accounts, FakeExchange::start().await, |_| {}).await;

    let orders = place_all(&app, &users, 1280, 32, small_amount, false).await;

    assert_ledger(&app, &users, &orders).await;
    if let Some(report) = app.aws_report() {
        println!("{report}");
    }
    app.stop().await;
}

/// Clients on three instances placing small orders, and canceling half of
/// them at once on another instance, racing the orders that close the pool:
/// each cancel either takes its order (`canceled`, cost back, in no bought
/// batch) or finds it in a batch (`409`); the ledger balances to the last
/// decimal and every bought batch is exactly its members.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancels_racing_the_orders_that_close_the_pool_take_each_order_once() {
    let users = users(24);
    let accounts: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), INITIAL)).collect();
    let app = spawn_cluster(3, &accounts, FakeExchange::start().await, |_| {}).await;
    let shared = app.instances_share_a_table();

    let clients = (0..12).map(|client| {
        let (app, users) = (&app, &users);
        async move {
            let (mut kept, mut canceled) = (Vec::new(), Vec::new());
            for index in (client..240).step_by(12) {
                let user = &users[index % users.len()];
                let reply = app.place_on(index, user, "ABAN", &mixed_amount(index).to_string()).await;
                assert_eq!(reply.status, 201, "{}", reply.body);
                let id = reply.text("order_id");
                if index % 2 == 1 {
                    kept.push((user.clone(), id));
                    continue;
                }
                let on = if shared { index + 1 } else { index };
                let cancel = app.cancel_on(on, user, &id).await;
                match cancel.status {
                    200 => {
                        assert_eq!(cancel.text("status"), "canceled", "{}", cancel.body);
                        canceled.push((user.clone(), id));
                    }
                    409 => {
                        cancel.assert_problem(409, "order-not-pending");
                        kept.push((user.clone(), id));
                    }
                    other => panic!("cancel answered {other}: {}", cancel.body),
                }
            }
            (kept, canceled)
        }
    });
    let (kept, canceled): (Vec<_>, Vec<_>) = futures::future::join_all(clients).await.into_iter().unzip();
    let (kept, canceled): (Vec<_>, Vec<_>) = (kept.concat(), canceled.concat());
    assert!(!canceled.is_empty() && !kept.is_empty());

    for (user, id) in &canceled {
        let view = app.order(user, id).await;
        assert_eq!((view.text("status"), view.body["batch_id"].is_null()), ("canceled".to_owned(), true));
        assert_eq!(app.cancel_on(0, user, id).await.text("status"), "canceled", "a cancel again is the same");
    }
    // The canceled orders cost nothing: the others are exactly what was paid for.
    assert_ledger(&app, &users, &kept).await;
    println!("{} orders canceled, {} kept", canceled.len(), kept.len());
    app.stop().await;
}
