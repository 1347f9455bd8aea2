//! Test harness: an `orders-local` per test on port 0, in front of a fake
//! exchange (wiremock) that records every call and injects failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod emulators;
pub mod fake_exchange;
pub mod lossy_proxy;

use std::str::FromStr;
use std::time::Duration;

use emulators::{Emulator, unique_name};
use orders_local::{AwsOptions, Backend, EventSourceConfig, Options, Running};
use rust_decimal::Decimal;
use serde_json::Value;

pub use fake_exchange::{Behavior, FakeExchange, Fill};

pub struct TestApp {
    /// The first instance's base URL.
    pub base: String,
    /// Every instance's base URL: on the AWS backends, instances share the
    /// table and the queue and nothing else, as Lambda instances do.
    pub bases: Vec<String>,
    pub client: reqwest::Client,
    pub exchange: FakeExchange,
    running: Vec<Running>,
    /// What the instances were started with (its seed file stays until `stop`).
    options: Options,
}

/// A response: status and JSON body (or `Null`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl Reply {
    pub fn text(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_owned()
    }

    pub fn decimal(&self, field: &str) -> Decimal {
        Decimal::from_str(self.body[field].as_str().unwrap_or("x"))
            .unwrap_or_else(|_| panic!("{field} is not a decimal string in {}", self.body))
    }

    /// Asserts a problem+json error of this status and type.
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        assert_eq!(self.content_type, "application/problem+json", "body: {}", self.body);
        assert_eq!(self.body["type"], kind, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string(), "{}", self.body);
    }
}

pub async fn spawn_app(accounts: &[(&str, &str)]) -> TestApp {
    spawn_app_with(accounts, FakeExchange::start().await, |_| {}).await
}

/// An app whose options a test may adjust; its exchange is `exchange`.
pub async fn spawn_app_with(
    accounts: &[(&str, &str)],
    exchange: FakeExchange,
    adjust: impl FnOnce(&mut Options),
) -> TestApp {
    spawn_cluster(1, accounts, exchange, adjust).await
}

/// `instances` orders-local instances on one table and queue (on the AWS
/// backends; the embedded backend runs one instance, whatever is asked:
/// its store lives in its process).
pub async fn spawn_cluster(
    instances: usize,
    accounts: &[(&str, &str)],
    exchange: FakeExchange,
    adjust: impl FnOnce(&mut Options),
) -> TestApp {
    testkit::test_logs();
    let seed = serde_json::json!({
        "accounts": accounts.iter().map(|(user, balance)| serde_json::json!({"user_id": user, "balance_usd": balance})).collect::<Vec<_>>()
    });
    let path = std::env::temp_dir().join(format!("orders-seed-{}.json", ulid::Ulid::new()));
    std::fs::write(&path, seed.to_string()).unwrap();
    let mut options = Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        seed: Some(path.clone()),
        exchange_url: Some(exchange.uri()),
        exchange_timeout: Duration::from_millis(1500),
        // A refusal met after a failed attempt waits a lease and a request
        // timeout before refunding: short ones keep the tests quick.
        settle_lease: Duration::from_secs(5),
        event_source: EventSourceConfig {
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..EventSourceConfig::default()
        },
        // Pool shards idle once a test's orders stop are swept within seconds.
        reconcile_every: Duration::from_secs(1),
        pool_due_after: time::Duration::seconds(2),
        ..Options::default()
    };
    if let Some((table_on, queue_on)) = aws_backend() {
        options.backend = Backend::Aws;
        options.aws = AwsOptions {
            table: unique_name("e2e"),
            queue_name: unique_name("e2e-settle"),
            dynamodb: Some(table_on.sdk_config().await),
            sqs: Some(queue_on.sdk_config().await),
        };
    }
    let instances = if options.backend == Backend::Aws { instances.max(1) } else { 1 };
    adjust(&mut options);
    let mut running = Vec::new();
    for _ in 0..instances {
        running.push(orders_local::start(options.clone()).await.unwrap());
    }
    let bases: Vec<String> = running.iter().map(|r| format!("http://{}", r.addr)).collect();
    TestApp { base: bases[0].clone(), bases, client: reqwest::Client::new(), exchange, running, options }
}

impl TestApp {
    pub async fn request(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, content_type, body }
    }

    pub async fn place(&self, user: &str, coin: &str, amount: &str) -> Reply {
        self.place_on(0, user, coin, amount).await
    }

    /// POST /orders to instance `instance % instances`.
    pub async fn place_on(&self, instance: usize, user: &str, coin: &str, amount: &str) -> Reply {
        let body = serde_json::json!({"coin": coin, "amount": amount});
        let base = &self.bases[instance % self.bases.len()];
        self.request(self.client.post(format!("{base}/orders")).header("x-user-id", user).json(&body)).await
    }

    /// POST /orders with a raw body and optional headers.
    pub async fn post_raw(
        &self,
        user: Option<&str>,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request =
            self.client.post(format!("{}/orders", self.base)).header("content-type", "application/json").body(body);
        if let Some(user) = user {
            request = request.header("x-user-id", user);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.request(request).await
    }

    /// POST /orders/{id}/cancel to instance `instance % instances`.
    pub async fn cancel_on(&self, instance: usize, user: &str, id: &str) -> Reply {
        let base = &self.bases[instance % self.bases.len()];
        self.request(self.client.post(format!("{base}/orders/{id}/cancel")).header("x-user-id", user)).await
    }

    pub async fn order(&self, user: &str, id: &str) -> Reply {
        self.request(self.client.get(format!("{}/orders/{id}", self.base)).header("x-user-id", user)).await
    }

    pub async fn balance(&self, user: &str) -> Decimal {
        let reply = self.request(self.client.get(format!("{}/account", self.base)).header("x-user-id", user)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.decimal("balance_usd")
    }

    /// Polls the order until `done` holds for it (or panics after 20 s).
    pub async fn wait_for_order(&self, user: &str, id: &str, done: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.order(user, id).await;
            if done(&reply) {
                return reply;
            }
            assert!(tokio::time::Instant::now() < deadline, "order {id} never got there: {}", reply.body);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the instances share one table (the AWS backends); on the
    /// embedded backend each instance's store is its own.
    pub fn instances_share_a_table(&self) -> bool {
        self.options.backend == Backend::Aws
    }

    /// Starts one more instance with the same options and seed (on the AWS
    /// backends, on the same table and queue: a restart, or a new Lambda
    /// instance); returns its base URL.
    pub async fn start_another_instance(&mut self) -> String {
        let running = orders_local::start(self.options.clone()).await.unwrap();
        let base = format!("http://{}", running.addr);
        self.running.push(running);
        self.bases.push(base.clone());
        base
    }

    /// The audit of everything the instances' table holds: every e2e test
    /// ends with it (through `stop`), on every backend.
    pub async fn assert_audit_clean(&self) {
        let report = self.running[0].audit().await.unwrap();
        assert!(report.is_clean(), "the audit found discrepancies:\n{report}");
    }

    /// Audits the table, then stops every instance.
    pub async fn stop(self) {
        self.assert_audit_clean().await;
        for running in self.running {
            running.stop().await;
        }
        if let Some(seed) = &self.options.seed {
            let _ = std::fs::remove_file(seed);
        }
    }

    /// Messages in the dead-letter queue.
    pub async fn dead_letters(&self) -> usize {
        let running = &self.running[0];
        match &running.aws {
            Some(aws) => aws.dead_letter_count().await.unwrap() as usize,
            None => running.dead_letters.lock().unwrap().len(),
        }
    }

    /// Deliveries of a settle message before it moves to the dead letters.
    pub fn max_receives(&self, configured: u32) -> u32 {
        match self.running[0].aws.as_ref() {
            Some(_) => shared::adapters::sqs::MAX_RECEIVE_COUNT,
            None => configured,
        }
    }

    /// The `--backend aws` request counts, when on that backend.
    pub fn aws_report(&self) -> Option<String> {
        let reports: Vec<String> = self.running.iter().filter_map(|r| r.aws.as_ref()).map(|aws| aws.report()).collect();
        (!reports.is_empty()).then(|| reports.join("\n"))
    }
}

/// `ORDERS_E2E_BACKEND`: `memory` (default), `ministack` (table and queue on
/// ministack) or `dynamodb-local` (table on DynamoDB Local, queue on ministack).
fn aws_backend() -> Option<(Emulator, Emulator)> {
    match std::env::var("ORDERS_E2E_BACKEND").as_deref() {
        Err(_) | Ok("memory") => None,
        Ok("ministack") => Some((Emulator::Ministack, Emulator::Ministack)),
        Ok("dynamodb-local") => Some((Emulator::DynamoDbLocal, Emulator::Ministack)),
        Ok(other) => panic!("ORDERS_E2E_BACKEND={other}: expected memory, ministack or dynamodb-local"),
    }
}

pub fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}
