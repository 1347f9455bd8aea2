//! Many users placing many small orders at once while the exchange fails:
//! the ledger must balance to the last decimal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use e2e_tests::{Behavior, FakeExchange, dec, spawn_app_with};
use rust_decimal::Decimal;

const USERS: usize = 40;
const ORDERS_PER_USER: usize = 12;
const PRICE: &str = "4";
const INITIAL: &str = "1000";

/// Small amounts with up to 8 decimals, deterministic per (user, order).
fn amount(user: usize, order: usize) -> Decimal {
    let index = (user * ORDERS_PER_USER + order) as u64;
    let units = (index * 2_654_435_761 % 150_000_000) as i64 + 1;
    Decimal::new(units, 8)
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
    let users: Vec<String> = (0..USERS).map(|u| format!("user-{u}")).collect();
    let accounts: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), INITIAL)).collect();
    let app = spawn_app_with(&accounts, exchange, |options| {
        options.exchange_timeout = Duration::from_millis(300);
    })
    .await;

    let requests = users.iter().enumerate().flat_map(|(u, user)| {
        let app = &app;
        (0..ORDERS_PER_USER).map(move |o| async move {
            let reply = app.place(user, "ABAN", &amount(u, o).to_string()).await;
            (user.clone(), reply)
        })
    });
    let placed = futures::future::join_all(requests).await;
    assert_eq!(placed.len(), USERS * ORDERS_PER_USER);

    let mut orders: Vec<(String, String)> = Vec::new();
    for (user, reply) in &placed {
        assert_eq!(reply.status, 201, "{}", reply.body);
        orders.push((user.clone(), reply.text("order_id")));
    }

    // Let settlement finish: every formed batch settled.
    let mut views = Vec::new();
    for (user, id) in &orders {
        let view = app.wait_for_order(user, id, |r| matches!(r.text("status").as_str(), "pending" | "settled")).await;
        views.push((user.clone(), view));
    }
    let fills = app.exchange.fills();

    // Money is conserved per user: balance + what they paid = what they had.
    let mut paid: HashMap<&str, Decimal> = HashMap::new();
    for (user, view) in &views {
        assert_eq!(view.decimal("cost_usd"), view.decimal("amount") * dec(PRICE), "cost is exact");
        *paid.entry(user.as_str()).or_default() += view.decimal("cost_usd");
    }
    for user in &users {
        assert_eq!(app.balance(user).await + paid[user.as_str()], dec(INITIAL), "{user}");
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
    let (mut pending_usd, mut ordered_qty) = (Decimal::ZERO, Decimal::ZERO);
    for (_, view) in &views {
        ordered_qty += view.decimal("amount");
        match view.text("status").as_str() {
            "settled" => *members.entry(view.text("batch_id")).or_default() += view.decimal("amount"),
            "pending" => {
                assert!(view.body["batch_id"].is_null());
                pending_usd += view.decimal("cost_usd");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(members, by_batch, "batches and their members disagree");
    let bought: Decimal = fills.iter().map(|f| f.quantity).sum();
    assert_eq!(bought + pending_usd / dec(PRICE), ordered_qty, "bought + pending = ordered");
    assert!(pending_usd < dec("10"), "the open pool stays below the minimum: {pending_usd}");
    assert!(fills.len() >= 10, "expected many batches, got {}", fills.len());
    assert_eq!(app.dead_letters().await, 0);
    if let Some(report) = app.aws_report() {
        println!("{report}");
    }
    app.stop().await;
}
