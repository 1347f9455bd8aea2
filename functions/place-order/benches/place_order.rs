//! The in-process place-order path on the embedded backend: an API Gateway
//! request in, a 201 out, through the real handler.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lambda_http::request::LambdaRequest;
use rust_decimal::Decimal;
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::memory_queue::memory_queue;
use shared::config::ServiceConfig;
use shared::domain::{Usd, UserId};
use shared::ports::{Accounts, SystemClock};
use shared::service::OrderService;

const FIXTURE: &str = include_str!("../../../events/apigw-place-order.json");

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(DynamoStore::in_memory());
    let (queue, mut messages) = memory_queue();
    let service = OrderService::new(store.clone(), Arc::new(queue), Arc::new(SystemClock), ServiceConfig::default());
    runtime.block_on(async {
        let alice = UserId::parse("alice").unwrap_or_else(|e| panic!("{e}"));
        let balance = Usd::new(Decimal::from(1_000_000_000_000u64)).unwrap_or_default();
        store.open_account(&alice, balance).await.unwrap_or_else(|e| panic!("{e}"));
    });
    // A small order ($0.04): it joins the pool, and every 250th closes it.
    let mut event: serde_json::Value = serde_json::from_str(FIXTURE).unwrap_or_else(|e| panic!("{e}"));
    event["body"] = r#"{"coin":"ABAN","amount":"0.01"}"#.into();
    event["headers"].as_object_mut().map(|h| h.remove("idempotency-key"));
    let event: LambdaRequest = serde_json::from_value(event).unwrap_or_else(|e| panic!("{e}"));

    c.bench_function("place_order/pooled_small_order", |b| {
        b.iter_batched(
            || lambda_http::Request::from(clone_event(&event)),
            |request| {
                let response = runtime.block_on(place_order::handle(&service, request));
                assert!(matches!(&response, Ok(r) if r.status() == 201));
                while messages.try_recv().is_ok() {}
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn clone_event(event: &LambdaRequest) -> LambdaRequest {
    match event {
        LambdaRequest::ApiGatewayV2(request) => LambdaRequest::ApiGatewayV2(request.clone()),
        _ => unreachable!("the fixture is an HTTP API event"),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
