use std::sync::Arc;

use lambda_http::{Error, run, service_fn};
use shared::adapters::memory::MemoryStore;
use shared::adapters::memory_queue::memory_queue;
use shared::config::ServiceConfig;
use shared::ports::SystemClock;
use shared::service::OrderService;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .without_time()
        .init();

    let config = ServiceConfig::from_env()?;
    // The embedded backend; the DynamoDB and SQS adapters replace it here
    // (see the DynamoDB issue). Messages stay in this process.
    let (queue, _messages) = memory_queue();
    let service =
        Arc::new(OrderService::new(Arc::new(MemoryStore::new()), Arc::new(queue), Arc::new(SystemClock), config));
    run(service_fn(move |request| {
        let service = Arc::clone(&service);
        async move { place_order::handle(&service, request).await }
    }))
    .await
}
