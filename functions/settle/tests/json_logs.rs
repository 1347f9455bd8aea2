//! The settle function's JSON log line for a failed settlement carries its
//! cause. A binary of its own: tracing caches which call sites anyone
//! listens to, process-wide, and tests running beside it in one process
//! (without a subscriber) race that cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use rust_decimal::Decimal;
use serde_json::Value;
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::memory_queue::memory_queue;
use shared::domain::{BatchId, Usd, UserId};
use shared::ports::{Accounts, Exchange, ExchangeError, ExchangeOrder, Fill, Lookup, Orders, SystemClock};
use shared::settlement::Settler;

/// An exchange whose every buy loses its connection.
struct Unreachable;

#[async_trait]
impl Exchange for Unreachable {
    async fn buy(&self, _: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        Err(ExchangeError::Unknown { reason: "no answer".into(), source: Some(Box::new(cause)) })
    }

    async fn lookup(&self, _: BatchId) -> Result<Lookup, ExchangeError> {
        Ok(Lookup::NotFound)
    }

    fn request_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

#[tokio::test]
async fn a_failed_settlement_logs_its_cause_in_the_json_line() {
    let logs = testkit::CapturedLogs::default();
    let writer = logs.clone();
    let _logging = tracing::subscriber::set_default(shared::telemetry::lambda_subscriber(move || writer.clone()));
    let store = Arc::new(DynamoStore::in_memory());
    let alice = UserId::parse("alice").unwrap();
    store.open_account(&alice, Usd::new(Decimal::from(100)).unwrap()).await.unwrap();
    let order = testkit::store_contract::order("alice", "3");
    let batch = store.place_order(order, Usd::new(Decimal::TEN).unwrap()).await.unwrap().formed.unwrap();
    let (queue, _) = memory_queue();
    let settler =
        Settler::new(store, Arc::new(Unreachable), Arc::new(queue), Arc::new(SystemClock), Duration::from_secs(30));

    let fixture: Value = serde_json::from_str(include_str!("../../../events/sqs-settle.json")).unwrap();
    let mut record = fixture["Records"][0].clone();
    record["messageId"] = "m1".into();
    record["body"] = format!(r#"{{"batch_id":"{batch}"}}"#).into();
    let event: SqsEvent = serde_json::from_value(serde_json::json!({ "Records": [record] })).unwrap();
    let response = settle::handle(&settler, LambdaEvent::new(event, Context::default())).await.unwrap();
    assert_eq!(response.batch_item_failures.len(), 1);

    let text = logs.text();
    let line = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["fields"]["message"] == "batch not settled yet; it will be delivered again")
        .unwrap_or_else(|| panic!("no such line in:\n{text}"));
    let error = line["fields"]["error"].as_str().unwrap();
    assert!(error.contains("no answer") && error.ends_with("connection reset by peer"), "{line}");
}
