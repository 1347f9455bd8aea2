//! The stack as deployed: template.yaml on ministack (CloudFormation with the
//! SAM transform, the Rust functions run by its Lambda, the real SQS event
//! source mapping, API Gateway's JWT authorizer), driven through the HTTP
//! API with signed JWTs and a fake exchange on 127.0.0.1.
//!
//! `scripts/test` builds the artifacts, deploys the stack and runs this with
//! `--ignored`; it needs the `DEPLOYED_*` variables that deployment sets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e_tests::emulators::Emulator;
use e2e_tests::{FakeExchange, dec};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use shared::adapters::dynamodb::DynamoStore;
use shared::domain::UserId;
use shared::ports::Accounts;
use testkit::store_contract::usd;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: scripts/test deploys the stack and sets it"))
}

struct Stack {
    api: String,
    client: reqwest::Client,
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl Stack {
    fn token(&self, user: &str) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"sub": user, "iss": self.issuer, "aud": self.audience, "iat": now, "exp": now + 600});
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test".to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn place(&self, user: &str, body: &str) -> (u16, Value) {
        let request = self
            .client
            .post(format!("{}/orders", self.api))
            .bearer_auth(self.token(user))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.send(request).await
    }

    async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.api)).bearer_auth(self.token(user))).await
    }

    async fn balance(&self, user: &str) -> Decimal {
        let (status, body) = self.get(user, "/account").await;
        assert_eq!(status, 200, "{body}");
        dec(body["balance_usd"].as_str().unwrap())
    }

    async fn wait_settled(&self, user: &str, order_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, order) = self.get(user, &format!("/orders/{order_id}")).await;
            if order["status"] == "settled" {
                return order;
            }
            assert!(Instant::now() < deadline, "order {order_id} never settled: {order}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the stack that scripts/test deploys to ministack"]
async fn the_deployed_stack_places_pools_settles_and_refuses_bad_input() {
    let exchange = FakeExchange::start_on(var("DEPLOYED_EXCHANGE_PORT").parse().unwrap()).await;
    let stack = Stack {
        api: var("DEPLOYED_API_URL"),
        client: reqwest::Client::new(),
        key: EncodingKey::from_rsa_pem(std::fs::read(var("DEPLOYED_JWT_KEY")).unwrap().as_slice()).unwrap(),
        issuer: var("DEPLOYED_JWT_ISSUER"),
        audience: var("DEPLOYED_JWT_AUDIENCE"),
    };
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&Emulator::Ministack.sdk_config().await),
        var("DEPLOYED_TABLE_NAME"),
    );
    let users: Vec<String> = (0..10).map(|i| format!("user-{i}")).collect();
    for user in ["alice", "bob", "carol"].iter().copied().chain(users.iter().map(String::as_str)) {
        store.open_account(&UserId::parse(user).unwrap(), usd("100")).await.unwrap();
    }

    // API Gateway's authorizer refuses a request without a valid token, in its own format.
    let (status, _) = stack.send(stack.client.get(format!("{}/account", stack.api))).await;
    assert_eq!(status, 401);

    // 3 ABAN: one buy of 3, at once.
    let (status, order) = stack.place("alice", r#"{"coin":"ABAN","amount":"3"}"#).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["cost_usd"], "12");
    let settled = stack.wait_settled("alice", order["order_id"].as_str().unwrap()).await;
    let fills = exchange.wait_for_fills(1).await;
    assert_eq!(
        (fills[0].quantity, &fills[0].exchange_order_id),
        (dec("3"), &settled["exchange_order_id"].as_str().unwrap().to_owned())
    );
    assert_eq!(stack.balance("alice").await, dec("88"));

    // Three users × 1 ABAN: no buy after two, one buy of 3 after the third.
    let (_, first) = stack.place("bob", r#"{"coin":"ABAN","amount":"1"}"#).await;
    let (_, second) = stack.place("carol", r#"{"coin":"ABAN","amount":"1"}"#).await;
    assert_eq!((first["status"].as_str(), second["status"].as_str()), (Some("pending"), Some("pending")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(exchange.fills().len(), 1, "a buy after two orders");
    let (_, third) = stack.place("alice", r#"{"coin":"ABAN","amount":"1"}"#).await;
    assert_eq!(third["status"], "settling");
    stack.wait_settled("bob", first["order_id"].as_str().unwrap()).await;
    let fills = exchange.wait_for_fills(2).await;
    assert_eq!(fills[1].quantity, dec("3"));

    // Bad input: problem+json from the function, nothing changed.
    for (body, status, kind) in [
        ("not json", 400, "malformed-request"),
        (r#"{"coin":"aban","amount":"1"}"#, 422, "unknown-coin"),
        (r#"{"coin":"ABAN","amount":"-1"}"#, 422, "invalid-amount"),
        (r#"{"coin":"ABAN","amount":1e400}"#, 422, "invalid-amount"),
        (r#"{"coin":"ABAN","amount":"1000"}"#, 422, "insufficient-funds"),
    ] {
        let (got, problem) = stack.place("bob", body).await;
        assert_eq!((got, problem["type"].as_str()), (status, Some(kind)), "{body}: {problem}");
    }
    let big = format!(r#"{{"coin":"ABAN","amount":"1","pad":"{}"}}"#, "x".repeat(20 * 1024));
    assert_eq!(stack.place("bob", &big).await.0, 413);
    assert_eq!(stack.balance("bob").await, dec("96"));

    // A concurrent burst: no busy, money conserved, every buy ≥ $10, none twice.
    let burst = users.iter().flat_map(|user| {
        let stack = &stack;
        (0..5).map(move |i| async move {
            let amount = format!("0.{}", 25 + i * 10);
            let body = format!(r#"{{"coin":"ABAN","amount":"{amount}"}}"#);
            // Every one placed at once: the coin's pool spreads over shards
            // as the function's instances collide, none is answered busy.
            let (status, order) = stack.place(user, &body).await;
            assert_eq!(status, 201, "{order}");
            (user.clone(), order)
        })
    });
    let placed = futures::future::join_all(burst).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut paid: HashMap<String, Decimal> = HashMap::new();
    for (user, order) in &placed {
        *paid.entry(user.clone()).or_default() += dec(order["cost_usd"].as_str().unwrap());
    }
    for user in &users {
        assert_eq!(stack.balance(user).await + paid[user], dec("100"), "{user}");
    }
    // GET /orders through API Gateway's route: the caller's own, newest
    // first, a page at a time, filtered by status; a bad parameter is 400.
    let mine: Vec<&Value> = placed.iter().filter(|(user, _)| user == "user-0").map(|(_, order)| order).collect();
    let mut listed = Vec::new();
    let mut path = "/orders?limit=2".to_owned();
    loop {
        let (status, page) = stack.get("user-0", &path).await;
        assert_eq!(status, 200, "{page}");
        listed.extend(page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/orders?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = mine.iter().map(|o| o["order_id"].as_str().unwrap().to_owned()).collect();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, expected, "user-0's orders, newest first");
    let (_, refunded) = stack.get("user-0", "/orders?status=refunded").await;
    assert_eq!(refunded["orders"], serde_json::json!([]), "{refunded}");
    let (status, problem) = stack.get("user-0", "/orders?limit=1000").await;
    assert_eq!((status, problem["type"].as_str()), (400, Some("malformed-request")), "{problem}");

    let fills = exchange.fills();
    let mut ids = std::collections::HashSet::new();
    for fill in &fills {
        assert!(fill.quantity * dec("4") >= dec("10"), "{fill:?}");
        assert!(ids.insert(fill.client_order_id.clone()), "bought twice: {fill:?}");
    }
    assert!(exchange.resends_without_lookup().is_empty());
}
