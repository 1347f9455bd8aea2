//! Settlement against a failing exchange, through orders-local.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e_tests::{Behavior, FakeExchange, dec, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_permanent_refusal_refunds_each_member_order_once() {
    let app = spawn_app(&[("alice", "100"), ("bob", "100"), ("carol", "100")]).await;
    app.exchange.set_default(Behavior::Refuse);

    let a = app.place("alice", "ABAN", "1").await;
    let b = app.place("bob", "ABAN", "0.5").await;
    let c = app.place("carol", "ABAN", "2").await;

    for (user, reply) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        let view = app.wait_for_order(user, &reply.text("order_id"), |r| r.text("status") == "refunded").await;
        assert!(view.body["exchange_order_id"].is_null());
    }
    // Redeliveries and retries must not refund twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for user in ["alice", "bob", "carol"] {
        assert_eq!(app.balance(user).await, dec("100"), "{user}");
    }
    assert!(app.exchange.fills().is_empty());
    assert_eq!(app.exchange.calls().len(), 1, "a refusal is final: {:?}", app.exchange.calls());
    app.stop().await;
}

#[tokio::test]
async fn a_fill_whose_reply_was_lost_is_found_by_lookup_not_bought_again() {
    let app = spawn_app(&[("alice", "100")]).await;
    app.exchange.script([Behavior::FailAfterFill, Behavior::FailAfterFill]);

    let reply = app.place("alice", "ABAN", "3").await;

    let view = app.wait_for_order("alice", &reply.text("order_id"), |r| r.text("status") == "settled").await;
    let fills = app.exchange.fills();
    assert_eq!(fills.len(), 1);
    assert_eq!(view.text("exchange_order_id"), fills[0].exchange_order_id);
    assert_eq!(app.exchange.calls().iter().filter(|c| c.method == "POST").count(), 1, "bought once");
    assert!(app.exchange.resends_without_lookup().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_timed_out_buy_is_resolved_by_lookup() {
    let exchange = FakeExchange::start().await;
    exchange.script([Behavior::FillSlowly(Duration::from_millis(1500))]);
    let app = spawn_app_with(&[("alice", "100")], exchange, |options| {
        options.exchange_timeout = Duration::from_millis(200);
    })
    .await;

    let reply = app.place("alice", "ABAN", "3").await;

    app.wait_for_order("alice", &reply.text("order_id"), |r| r.text("status") == "settled").await;
    assert_eq!(app.exchange.fills().len(), 1);
    assert!(app.exchange.resends_without_lookup().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_until_the_buy_goes_through() {
    let app = spawn_app(&[("alice", "100")]).await;
    app.exchange.script([Behavior::FailBeforeFill; 4]);

    let reply = app.place("alice", "ABAN", "3").await;

    let view = app.wait_for_order("alice", &reply.text("order_id"), |r| r.text("status") == "settled").await;
    assert_eq!(view.text("status"), "settled");
    let posts = app.exchange.calls().iter().filter(|c| c.method == "POST").count();
    assert_eq!(posts, 5);
    assert_eq!(app.exchange.fills().len(), 1);
    assert!(app.exchange.resends_without_lookup().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_batch_that_never_goes_through_stays_settling_and_its_message_goes_to_the_dead_letters() {
    let exchange = FakeExchange::start().await;
    exchange.set_default(Behavior::FailBeforeFill);
    let app = spawn_app_with(&[("alice", "100")], exchange, |options| {
        options.event_source.max_receives = 3;
    })
    .await;

    let reply = app.place("alice", "ABAN", "3").await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while app.dead_letters().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the message never reached the dead letters");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.order("alice", &reply.text("order_id")).await.text("status"), "settling");
    assert_eq!(app.balance("alice").await, dec("88"), "not refunded: the outcome is unknown");
    let receives = app.max_receives(3) as usize;
    assert_eq!(app.exchange.calls().iter().filter(|c| c.method == "POST").count(), receives);
    app.stop().await;
}

/// Answers that say our configuration is wrong (credentials, base URL) or
/// that redirect: retried, never a refund.
#[tokio::test]
async fn configuration_errors_and_redirects_are_retried_never_refunded() {
    let runs = [401u16, 403, 404, 405, 307].map(|status| async move {
        let exchange = FakeExchange::start().await;
        exchange.set_default(Behavior::Answer(status));
        let app = spawn_app_with(&[("alice", "100")], exchange, |_| {}).await;
        let reply = app.place("alice", "ABAN", "3").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while app.exchange.calls().iter().filter(|c| c.method == "POST").count() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "{status}: never retried: {:?}", app.exchange.calls());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(app.order("alice", &reply.text("order_id")).await.text("status"), "settling", "{status}");
        assert_eq!(app.balance("alice").await, dec("88"), "{status}: refunded");
        assert!(app.exchange.resends_without_lookup().is_empty(), "{status}");
        app.stop().await;
    });
    futures::future::join_all(runs).await;
}

#[tokio::test]
async fn a_final_unfilled_status_is_a_refusal_and_refunds_once() {
    for status in ["rejected", "canceled", "expired"] {
        let app = spawn_app(&[("alice", "100"), ("bob", "100")]).await;
        app.exchange.set_default(Behavior::EndUnfilled(status));
        let a = app.place("alice", "ABAN", "1").await;
        let b = app.place("bob", "ABAN", "2").await;
        for (user, reply) in [("alice", &a), ("bob", &b)] {
            app.wait_for_order(user, &reply.text("order_id"), |r| r.text("status") == "refunded").await;
            assert_eq!(app.balance(user).await, dec("100"), "{status}: {user}");
        }
        let posts = app.exchange.calls().iter().filter(|c| c.method == "POST").count();
        assert_eq!(posts, 1, "{status}: a refusal is final");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_409_is_looked_up_and_settles_the_batch() {
    let app = spawn_app(&[("alice", "100")]).await;
    app.exchange.script([Behavior::FillThenConflict]);

    let reply = app.place("alice", "ABAN", "3").await;

    let view = app.wait_for_order("alice", &reply.text("order_id"), |r| r.text("status") != "settling").await;
    assert_eq!(view.text("status"), "settled", "{}", view.body);
    assert_eq!(app.exchange.fills().len(), 1);
    assert_eq!(app.exchange.calls().iter().filter(|c| c.method == "POST").count(), 1);
    app.stop().await;
}
