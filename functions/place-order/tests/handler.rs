//! The real handler, in-process, on the embedded backend, with API Gateway
//! fixture events (the same files `cargo lambda invoke` and `sam local
//! invoke` use, so they cannot rot).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::sync::Arc;

use lambda_http::{Body, Request};
use rust_decimal::Decimal;
use serde_json::Value;
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::memory_queue::{QueuedMessage, memory_queue};
use shared::config::ServiceConfig;
use shared::domain::{Usd, UserId};
use shared::ports::{Accounts, SystemClock};
use shared::service::OrderService;
use tokio::sync::mpsc::UnboundedReceiver;

const PLACE_ORDER: &str = include_str!("../../../events/apigw-place-order.json");
const GET_ACCOUNT: &str = include_str!("../../../events/apigw-get-account.json");

async fn service(alice: &str) -> (OrderService, UnboundedReceiver<QueuedMessage>) {
    let store = Arc::new(DynamoStore::in_memory());
    let balance = Usd::new(Decimal::from_str(alice).unwrap()).unwrap();
    store.open_account(&UserId::parse("alice").unwrap(), balance).await.unwrap();
    let (queue, messages) = memory_queue();
    let service = OrderService::new(store, Arc::new(queue), Arc::new(SystemClock), ServiceConfig::default());
    (service, messages)
}

fn event(fixture: &str, edit: impl FnOnce(&mut Value)) -> Request {
    let mut value: Value = serde_json::from_str(fixture).unwrap();
    edit(&mut value);
    lambda_http::request::from_str(&value.to_string()).unwrap()
}

async fn call(service: &OrderService, request: Request) -> (u16, Value) {
    let response = place_order::handle(service, request).await.unwrap();
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        other => panic!("unexpected body {other:?}"),
    };
    (response.status().as_u16(), body)
}

#[tokio::test]
async fn the_fixture_order_is_placed_and_its_batch_enqueued() {
    let (service, mut messages) = service("100").await;

    let (status, body) = call(&service, event(PLACE_ORDER, |_| {})).await;

    assert_eq!(status, 201, "{body}");
    assert_eq!(body["cost_usd"], "12");
    assert_eq!(body["status"], "settling");
    let message = messages.try_recv().unwrap();
    assert_eq!(message.body, format!(r#"{{"batch_id":"{}"}}"#, body["batch_id"].as_str().unwrap()));

    let (status, account) = call(&service, event(GET_ACCOUNT, |_| {})).await;
    assert_eq!((status, account), (200, serde_json::json!({"user_id": "alice", "balance_usd": "88"})));
}

#[tokio::test]
async fn the_fixture_replayed_with_its_key_debits_once() {
    let (service, _messages) = service("100").await;
    let (first, placed) = call(&service, event(PLACE_ORDER, |_| {})).await;
    let (second, replayed) = call(&service, event(PLACE_ORDER, |_| {})).await;
    assert_eq!((first, second), (201, 200));
    assert_eq!(placed["order_id"], replayed["order_id"]);
    let (_, account) = call(&service, event(GET_ACCOUNT, |_| {})).await;
    assert_eq!(account["balance_usd"], "88");
}

#[tokio::test]
async fn a_base64_encoded_body_is_read() {
    let (service, _messages) = service("100").await;
    let request = event(PLACE_ORDER, |v| {
        // {"coin":"ABAN","amount":"1"}
        v["body"] = "eyJjb2luIjoiQUJBTiIsImFtb3VudCI6IjEifQ==".into();
        v["isBase64Encoded"] = true.into();
    });
    let (status, body) = call(&service, request).await;
    assert_eq!((status, body["amount"].as_str()), (201, Some("1")));
}

#[tokio::test]
async fn without_authorizer_claims_the_request_is_unauthorized_whatever_the_headers_say() {
    let (service, mut messages) = service("100").await;
    let request = event(PLACE_ORDER, |v| {
        v["requestContext"].as_object_mut().unwrap().remove("authorizer");
        v["headers"]["x-user-id"] = "alice".into();
    });
    let (status, body) = call(&service, request).await;
    assert_eq!((status, body["type"].as_str()), (401, Some("unauthorized")));
    assert!(messages.try_recv().is_err());
}

#[tokio::test]
async fn claims_without_sub_are_unauthorized() {
    let (service, _messages) = service("100").await;
    let request = event(GET_ACCOUNT, |v| {
        v["requestContext"]["authorizer"]["jwt"]["claims"].as_object_mut().unwrap().remove("sub");
    });
    let (status, _) = call(&service, request).await;
    assert_eq!(status, 401);
}

const CANCEL_ORDER: &str = include_str!("../../../events/apigw-cancel-order.json");

fn cancel(id: &str, body: &str) -> Request {
    event(CANCEL_ORDER, |v| {
        let path = format!("/orders/{id}/cancel");
        v["rawPath"] = path.clone().into();
        v["requestContext"]["http"]["path"] = path.into();
        v["pathParameters"]["order_id"] = id.into();
        v["body"] = body.into();
    })
}

fn place(amount: &str) -> Request {
    event(PLACE_ORDER, |v| {
        v["headers"].as_object_mut().unwrap().remove("idempotency-key");
        v["body"] = format!(r#"{{"coin": "ABAN", "amount": "{amount}"}}"#).into();
    })
}

#[tokio::test]
async fn a_pending_order_is_canceled_once_and_an_order_in_a_batch_is_not() {
    let (service, _messages) = service("100").await;
    let (_, pending) = call(&service, place("1")).await;
    let id = pending["order_id"].as_str().unwrap().to_owned();

    let (status, canceled) = call(&service, cancel(&id, "")).await;
    assert_eq!((status, canceled["status"].as_str()), (200, Some("canceled")), "{canceled}");
    let (status, again) = call(&service, cancel(&id, "{}")).await;
    assert_eq!((status, &again), (200, &canceled), "idempotent");
    let (_, account) = call(&service, event(GET_ACCOUNT, |_| {})).await;
    assert_eq!(account["balance_usd"], "100");

    let (_, alone) = call(&service, place("3")).await;
    let (status, problem) = call(&service, cancel(alone["order_id"].as_str().unwrap(), "")).await;
    assert_eq!((status, problem["type"].as_str()), (409, Some("order-not-pending")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("settling"), "{problem}");
    let (_, account) = call(&service, event(GET_ACCOUNT, |_| {})).await;
    assert_eq!(account["balance_usd"], "88");

    let list = event(GET_ACCOUNT, |v| {
        v["rawPath"] = "/orders".into();
        v["requestContext"]["http"]["path"] = "/orders".into();
        v["rawQueryString"] = "status=canceled".into();
        v["queryStringParameters"] = serde_json::json!({"status": "canceled"});
    });
    let (status, page) = call(&service, list).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id.as_str()]);
}

#[tokio::test]
async fn a_bad_cancel_is_refused_and_changes_nothing() {
    let (service, _messages) = service("100").await;
    let (_, pending) = call(&service, place("1")).await;
    let id = pending["order_id"].as_str().unwrap();
    for (request, status, kind) in [
        (cancel(id, r#"{"reason": "changed my mind"}"#), 400, "malformed-request"),
        (cancel(id, "[]"), 400, "malformed-request"),
        (cancel(id, "not json"), 400, "malformed-request"),
        (cancel(id, "   "), 400, "malformed-request"),
        (cancel("01KBFW4X0Q3J5TJ5N1Y6ZK1V2C", ""), 404, "not-found"),
        (cancel("not-an-id", ""), 404, "not-found"),
        (
            event(CANCEL_ORDER, |v| {
                v["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = "mallory".into();
                let path = format!("/orders/{id}/cancel");
                v["rawPath"] = path.into();
            }),
            404,
            "not-found",
        ),
        (
            event(CANCEL_ORDER, |v| {
                v["requestContext"]["http"]["method"] = "GET".into();
                v["rawPath"] = format!("/orders/{id}/cancel").into();
            }),
            405,
            "method-not-allowed",
        ),
    ] {
        let (got, problem) = call(&service, request).await;
        assert_eq!((got, problem["type"].as_str()), (status, Some(kind)), "{problem}");
    }
    let (_, account) = call(&service, event(GET_ACCOUNT, |_| {})).await;
    assert_eq!(account["balance_usd"], "96", "nothing changed");
}

#[tokio::test]
async fn an_order_under_the_smallest_order_is_refused_and_changes_nothing() {
    let (service, _messages) = service("1").await;
    // 0.002 ABAN at $4 is $0.008, under the default $0.01.
    let (status, problem) = call(&service, place("0.002")).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["type"], "invalid-amount");
    assert!(problem["detail"].as_str().unwrap().contains("the smallest order is 0.01 USD"), "{problem}");
    let (_, account) = call(&service, event(GET_ACCOUNT, |_| {})).await;
    assert_eq!(account["balance_usd"], "1");
    let (_, orders) = call(&service, event(GET_ACCOUNT, |v| v["rawPath"] = "/orders".into())).await;
    assert_eq!(orders["orders"], serde_json::json!([]), "{orders}");

    // Exactly the minimum is an order.
    let (status, order) = call(&service, place("0.0025")).await;
    assert_eq!((status, order["cost_usd"].as_str()), (201, Some("0.01")), "{order}");
}
