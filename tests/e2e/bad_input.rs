//! Every kind of bad input gets its 4xx problem+json and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{Reply, TestApp, dec, spawn_app};
use rust_decimal::Decimal;

const VALID: &str = r#"{"coin":"ABAN","amount":"1"}"#;

/// Balance, and nothing sent to the exchange, before and after.
async fn assert_nothing_changed(app: &TestApp, user: &str, balance: Decimal) {
    assert_eq!(app.balance(user).await, balance, "balance of {user} changed");
    assert!(app.exchange.calls().is_empty(), "the exchange was called");
}

async fn post(app: &TestApp, body: &str) -> Reply {
    app.post_raw(Some("alice"), body.to_owned(), &[]).await
}

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400() {
    let app = spawn_app(&[("alice", "100")]).await;
    for body in [
        "",
        "{",
        "not json",
        "null",
        "\"ABAN\"",
        "[\"ABAN\", \"1\"]",
        r#"{"coin":"ABAN"}"#,
        r#"{"amount":"1"}"#,
        r#"{"coin":4,"amount":"1"}"#,
        r#"{"coin":null,"amount":"1"}"#,
        r#"{"coin":"ABAN","amount":true}"#,
        r#"{"coin":"ABAN","amount":null}"#,
        r#"{"coin":"ABAN","amount":["1"]}"#,
        r#"{"coin":"ABAN","amount":{"value":"1"}}"#,
        r#"{"coin":"ABAN","amount":NaN}"#,
        r#"{"coin":"ABAN","amount":Infinity}"#,
        r#"{"coin":"ABAN","amount":"1"} trailing"#,
    ] {
        post(&app, body).await.assert_problem(400, "malformed-request");
    }
    assert_nothing_changed(&app, "alice", dec("100")).await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_coins_are_422_and_symbols_are_case_sensitive() {
    let app = spawn_app(&[("alice", "100")]).await;
    for coin in ["aban", "BTC", "", " ABAN", "ABAN "] {
        let body = serde_json::json!({"coin": coin, "amount": "1"}).to_string();
        post(&app, &body).await.assert_problem(422, "unknown-coin");
    }
    assert_nothing_changed(&app, "alice", dec("100")).await;
    app.stop().await;
}

#[tokio::test]
async fn unacceptable_amounts_are_422() {
    let app = spawn_app(&[("alice", "100")]).await;
    for amount in [
        r#""0""#,
        "0",
        "0.0",
        "-1",
        r#""-1""#,
        r#""-0.5""#,
        r#""NaN""#,
        r#""Infinity""#,
        r#""-Infinity""#,
        "1e400",
        "1E2",
        r#""1e3""#,
        r#""0.000000001""#,
        "0.000000001",
        r#""1000000000.1""#,
        "1000000001",
        r#""99999999999999999999999999999999999999""#,
        r#""""#,
        r#""1,5""#,
        r#""0x10""#,
    ] {
        let body = format!(r#"{{"coin":"ABAN","amount":{amount}}}"#);
        post(&app, &body).await.assert_problem(422, "invalid-amount");
    }
    assert_nothing_changed(&app, "alice", dec("100")).await;
    app.stop().await;
}

#[tokio::test]
async fn exact_amounts_are_accepted_as_strings_and_numbers() {
    let app = spawn_app(&[("alice", "100")]).await;
    let reply = post(&app, r#"{"coin":"ABAN","amount":"0.250000000"}"#).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!((reply.text("amount").as_str(), reply.text("cost_usd").as_str()), ("0.25", "1"));
    let reply = post(&app, r#"{"coin":"ABAN","amount":0.00250001}"#).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.text("cost_usd"), "0.01000004");
    assert_eq!(app.balance("alice").await, dec("98.98999996"));
    app.stop().await;
}

/// An order under the smallest order (`MIN_ORDER_USD`, $0.01 by default)
/// is refused naming it, and changes nothing; the smallest order is taken.
#[tokio::test]
async fn dust_orders_are_refused_naming_the_smallest_order() {
    let app = spawn_app(&[("alice", "100")]).await;
    for amount in ["0.00000001", "0.0024", "0.00249999"] {
        let reply = app.place("alice", "ABAN", amount).await;
        reply.assert_problem(422, "invalid-amount");
        assert!(reply.text("detail").contains("the smallest order is 0.01 USD"), "{}", reply.body);
    }
    assert_nothing_changed(&app, "alice", dec("100")).await;
    let reply = app.place("alice", "ABAN", "0.0025").await;
    assert_eq!((reply.status, reply.text("cost_usd").as_str()), (201, "0.01"), "{}", reply.body);
    app.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = spawn_app(&[("alice", "100")]).await;
    let two_megabytes = format!(r#"{{"coin":"ABAN","amount":"1","pad":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    post(&app, &two_megabytes).await.assert_problem(413, "payload-too-large");
    let just_over = format!(r#"{{"coin":"ABAN","amount":"1","pad":"{}"}}"#, "x".repeat(16 * 1024));
    post(&app, &just_over).await.assert_problem(413, "payload-too-large");
    // Precedence: 401 before 413, 413 before 400.
    app.post_raw(None, two_megabytes.clone(), &[]).await.assert_problem(401, "unauthorized");
    post(&app, &format!("[{}", " ".repeat(17 * 1024))).await.assert_problem(413, "payload-too-large");
    assert_nothing_changed(&app, "alice", dec("100")).await;
    app.stop().await;
}

#[tokio::test]
async fn requests_without_identity_are_401() {
    let app = spawn_app(&[("alice", "100")]).await;
    app.post_raw(None, VALID, &[]).await.assert_problem(401, "unauthorized");
    app.post_raw(Some(""), VALID, &[]).await.assert_problem(401, "unauthorized");
    // 401 comes before 400 and 422.
    app.post_raw(None, "not json", &[]).await.assert_problem(401, "unauthorized");
    let account = app.request(app.client.get(format!("{}/account", app.base))).await;
    account.assert_problem(401, "unauthorized");
    let order = app.request(app.client.get(format!("{}/orders/01J0000000000000000000000", app.base))).await;
    order.assert_problem(401, "unauthorized");
    assert_nothing_changed(&app, "alice", dec("100")).await;
    app.stop().await;
}

#[tokio::test]
async fn insufficient_funds_is_its_own_422_and_accounts_start_at_zero() {
    let app = spawn_app(&[("alice", "11.99")]).await;
    app.place("alice", "ABAN", "3").await.assert_problem(422, "insufficient-funds");
    app.place("nobody", "ABAN", "0.0025").await.assert_problem(422, "insufficient-funds");
    assert_eq!(app.balance("nobody").await, dec("0"));
    assert_nothing_changed(&app, "alice", dec("11.99")).await;
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400() {
    let app = spawn_app(&[("alice", "100")]).await;
    let long = "k".repeat(129);
    for key in ["", "has space", long.as_str()] {
        app.post_raw(Some("alice"), VALID, &[("idempotency-key", key)])
            .await
            .assert_problem(400, "invalid-idempotency-key");
    }
    assert_nothing_changed(&app, "alice", dec("100")).await;
    app.stop().await;
}

#[tokio::test]
async fn replaying_a_key_returns_the_same_order_and_debits_once() {
    let app = spawn_app(&[("alice", "100"), ("bob", "100")]).await;
    let key = [("idempotency-key", "order-1")];
    let first = app.post_raw(Some("alice"), VALID, &key).await;
    assert_eq!(first.status, 201);
    // "Same body" is the same coin and a numerically equal amount.
    for body in [VALID, r#"{"coin":"ABAN","amount":1}"#, r#"{"amount":"1.0","coin":"ABAN"}"#] {
        let replay = app.post_raw(Some("alice"), body, &key).await;
        assert!(replay.status == 200 || replay.status == 201, "{}", replay.body);
        assert_eq!(replay.text("order_id"), first.text("order_id"));
    }
    assert_eq!(app.balance("alice").await, dec("96"));
    // Keys are scoped to the user.
    let bobs = app.post_raw(Some("bob"), VALID, &key).await;
    assert_eq!(bobs.status, 201);
    assert_ne!(bobs.text("order_id"), first.text("order_id"));
    app.stop().await;
}

#[tokio::test]
async fn reusing_a_key_for_another_order_is_422_and_changes_nothing() {
    let app = spawn_app(&[("alice", "100")]).await;
    let key = [("idempotency-key", "order-1")];
    app.post_raw(Some("alice"), VALID, &key).await;
    app.post_raw(Some("alice"), r#"{"coin":"ABAN","amount":"2"}"#, &key)
        .await
        .assert_problem(422, "idempotency-key-reused");
    assert_eq!(app.balance("alice").await, dec("96"));
    app.stop().await;
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_key() {
    let app = spawn_app(&[("alice", "10")]).await;
    let key = [("idempotency-key", "retry-me")];
    app.post_raw(Some("alice"), r#"{"coin":"ABAN","amount":"-1"}"#, &key).await.assert_problem(422, "invalid-amount");
    app.post_raw(Some("alice"), r#"{"coin":"ABAN","amount":"3"}"#, &key)
        .await
        .assert_problem(422, "insufficient-funds");
    let placed = app.post_raw(Some("alice"), r#"{"coin":"ABAN","amount":"2"}"#, &key).await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(app.balance("alice").await, dec("2"));
    app.stop().await;
}

#[tokio::test]
async fn orders_are_visible_to_their_owner_only() {
    let app = spawn_app(&[("alice", "100")]).await;
    let placed = app.place("alice", "ABAN", "1").await;
    let id = placed.text("order_id");
    assert_eq!(app.order("alice", &id).await.text("order_id"), id);
    app.order("bob", &id).await.assert_problem(404, "not-found");
    app.order("alice", "not-an-order-id").await.assert_problem(404, "not-found");
    app.order("alice", "01J00000000000000000000000").await.assert_problem(404, "not-found");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = spawn_app(&[("alice", "100")]).await;
    let reply = app.request(app.client.get(format!("{}/nope", app.base)).header("x-user-id", "alice")).await;
    reply.assert_problem(404, "not-found");
    let reply = app.request(app.client.delete(format!("{}/orders", app.base)).header("x-user-id", "alice")).await;
    reply.assert_problem(405, "method-not-allowed");
    let reply = app.request(app.client.post(format!("{}/account", app.base)).header("x-user-id", "alice")).await;
    reply.assert_problem(405, "method-not-allowed");
    assert_nothing_changed(&app, "alice", dec("100")).await;
    app.stop().await;
}
