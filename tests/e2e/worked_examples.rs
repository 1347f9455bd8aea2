//! The challenge's examples, through orders-local's HTTP port, with a fake
//! exchange recording the buys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e_tests::{dec, spawn_app};

#[tokio::test]
async fn three_aban_is_bought_at_once_as_one_buy_of_three() {
    let app = spawn_app(&[("alice", "100")]).await;

    let reply = app.place("alice", "ABAN", "3").await;

    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.text("cost_usd"), "12");
    assert_eq!(reply.text("price_usd"), "4");
    assert_eq!(reply.text("status"), "settling");
    assert_eq!(app.balance("alice").await, dec("88"));
    let fills = app.exchange.wait_for_fills(1).await;
    assert_eq!(fills.len(), 1);
    assert_eq!((fills[0].symbol.as_str(), fills[0].quantity), ("ABAN", dec("3")));
    assert_eq!(fills[0].client_order_id, reply.text("batch_id"));

    let settled = app.wait_for_order("alice", &reply.text("order_id"), |r| r.text("status") == "settled").await;
    assert_eq!(settled.text("exchange_order_id"), fills[0].exchange_order_id);
    assert_eq!(app.exchange.fills().len(), 1, "bought once");
    app.stop().await;
}

#[tokio::test]
async fn three_single_aban_orders_are_bought_together_right_after_the_third() {
    let app = spawn_app(&[("alice", "100"), ("bob", "100"), ("carol", "100")]).await;

    let first = app.place("alice", "ABAN", "1").await;
    let second = app.place("bob", "ABAN", "1").await;
    for reply in [&first, &second] {
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.text("status"), "pending");
        assert!(reply.body["batch_id"].is_null());
    }
    assert_eq!(app.balance("alice").await, dec("96"));
    assert_eq!(app.balance("bob").await, dec("96"));
    // Settlement of a formed batch starts before the response is sent, so a
    // buy would already be on its way; give it time to show up if it were.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.exchange.calls().is_empty(), "no buy after two orders: {:?}", app.exchange.calls());

    let third = app.place("carol", "ABAN", "1").await;
    assert_eq!(third.status, 201);
    assert_eq!(third.text("status"), "settling");
    let fills = app.exchange.wait_for_fills(1).await;
    assert_eq!(fills[0].quantity, dec("3"));
    assert_eq!(app.balance("carol").await, dec("96"));

    for (user, reply) in [("alice", &first), ("bob", &second), ("carol", &third)] {
        let order = app.wait_for_order(user, &reply.text("order_id"), |r| r.text("status") == "settled").await;
        assert_eq!(order.text("batch_id"), fills[0].client_order_id);
    }
    assert_eq!(app.exchange.fills().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn exactly_ten_dollars_is_bought_alone_at_once() {
    let app = spawn_app(&[("alice", "10")]).await;

    let reply = app.place("alice", "ABAN", "2.5").await;

    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.text("cost_usd"), "10");
    let fills = app.exchange.wait_for_fills(1).await;
    assert_eq!(fills[0].quantity, dec("2.5"));
    assert_eq!(app.balance("alice").await, dec("0"));
    app.stop().await;
}

#[tokio::test]
async fn a_pool_landing_exactly_on_ten_dollars_is_bought() {
    let app = spawn_app(&[("alice", "100"), ("bob", "100")]).await;

    let first = app.place("alice", "ABAN", "1.5").await;
    assert_eq!(first.text("status"), "pending");
    let second = app.place("bob", "ABAN", "1").await;

    assert_eq!(second.text("status"), "settling");
    let fills = app.exchange.wait_for_fills(1).await;
    assert_eq!(fills[0].quantity, dec("2.5"));
    app.wait_for_order("alice", &first.text("order_id"), |r| r.text("status") == "settled").await;
    app.stop().await;
}

#[tokio::test]
async fn a_new_pool_opens_after_a_batch_forms() {
    let app = spawn_app(&[("alice", "100")]).await;

    for _ in 0..3 {
        app.place("alice", "ABAN", "1").await;
    }
    let fourth = app.place("alice", "ABAN", "1").await;

    assert_eq!(fourth.text("status"), "pending");
    assert_eq!(app.exchange.wait_for_fills(1).await.len(), 1);
    assert_eq!(app.balance("alice").await, dec("84"));
    app.stop().await;
}

/// Seeding creates missing accounts only: a restart with the same seed on a
/// used table (or a second instance) creates no money.
#[tokio::test]
async fn starting_again_with_the_seed_leaves_existing_balances_alone() {
    let mut app = e2e_tests::spawn_app(&[("alice", "100")]).await;
    let reply = app.place("alice", "ABAN", "3").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(app.balance("alice").await, dec("88"));

    let again = app.start_another_instance().await;

    // On the embedded backend the new instance has a store of its own (and
    // its own alice); on a shared table it must find alice as she is.
    if app.instances_share_a_table() {
        let reply = app.request(app.client.get(format!("{again}/account")).header("x-user-id", "alice")).await;
        assert_eq!(reply.decimal("balance_usd"), dec("88"), "the seed was applied again");
    }
    assert_eq!(app.balance("alice").await, dec("88"));
    app.stop().await;
}

/// `GET /orders`: the caller's orders, newest first, page by page, with
/// their statuses, filtered by status; nobody else's.
#[tokio::test]
async fn the_order_history_pages_newest_first_and_filters_by_status() {
    let app = e2e_tests::spawn_app(&[("alice", "100"), ("bob", "100")]).await;
    let mut placed = Vec::new();
    // $12 bought alone, then $4 + $2 + $2 + $1 pending.
    for amount in ["3", "1", "0.5", "0.5", "0.25"] {
        let reply = app.place("alice", "ABAN", amount).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        placed.push(reply.text("order_id"));
    }
    app.wait_for_order("alice", &placed[0], |r| r.text("status") == "settled").await;
    let list = |query: &str| {
        let url = format!("{}/orders{query}", app.base);
        app.request(app.client.get(url).header("x-user-id", "alice"))
    };

    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = list(&query).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let orders = page.body["orders"].as_array().unwrap().clone();
        assert!(orders.len() <= 2);
        seen.extend(orders.iter().map(|o| o["order_id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = placed.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let pending = list("?status=pending").await;
    let statuses: Vec<&str> =
        pending.body["orders"].as_array().unwrap().iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["pending"; 4], "{}", pending.body);
    let settled = list("?status=settled").await;
    assert_eq!(settled.body["orders"][0]["order_id"], placed[0].as_str(), "{}", settled.body);

    let bobs = app.request(app.client.get(format!("{}/orders", app.base)).header("x-user-id", "bob")).await;
    assert_eq!(bobs.body["orders"].as_array().map(Vec::len), Some(0));
    for bad in ["?limit=0", "?limit=101", "?limit=x", "?cursor=nope", "?status=open", "?limit=1&limit=2", "?sort=asc"] {
        list(bad).await.assert_problem(400, "malformed-request");
    }
    let anonymous = app.request(app.client.get(format!("{}/orders", app.base))).await;
    anonymous.assert_problem(401, "unauthorized");
    app.stop().await;
}
