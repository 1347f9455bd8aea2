use std::sync::Arc;

use lambda_runtime::{Error, run, service_fn};
use shared::adapters::http_exchange::HttpExchange;
use shared::adapters::memory::MemoryStore;
use shared::config::SettleConfig;
use shared::ports::SystemClock;
use shared::settlement::Settler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .without_time()
        .init();

    let config = SettleConfig::from_env()?;
    let exchange = HttpExchange::new(&config.exchange)?;
    // The embedded backend; the DynamoDB adapter replaces it here (see the
    // DynamoDB issue).
    let settler =
        Arc::new(Settler::new(Arc::new(MemoryStore::new()), Arc::new(exchange), Arc::new(SystemClock), config.lease));
    run(service_fn(move |event| {
        let settler = Arc::clone(&settler);
        async move { settle::handle(&settler, event).await }
    }))
    .await
}
