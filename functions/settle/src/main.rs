use std::sync::Arc;

use lambda_runtime::{Error, run, service_fn};
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::http_exchange::HttpExchange;
use shared::adapters::sqs::SqsQueue;
use shared::config::{AwsResources, SettleConfig};
use shared::ports::SystemClock;
use shared::settlement::Settler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_lambda();
    let metrics = shared::metrics::Emf::install();

    let config = SettleConfig::from_env()?;
    let resources = AwsResources::from_env()?;
    let exchange = HttpExchange::new(&config.exchange)?;
    let sdk = shared::adapters::aws::load_config().await;
    let settler = Arc::new(Settler::new(
        Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), resources.table)),
        Arc::new(exchange),
        // Where a refused batch's refunds continue, a bounded chunk per message.
        Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), resources.settle_queue_url)),
        Arc::new(SystemClock),
        config.lease,
    ));
    run(service_fn(move |event| {
        let settler = Arc::clone(&settler);
        metrics.around(async move { settle::handle(&settler, event).await })
    }))
    .await
}
