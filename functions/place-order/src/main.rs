use std::sync::Arc;

use lambda_http::{Error, run, service_fn};
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::sqs::SqsQueue;
use shared::config::{AwsResources, ServiceConfig};
use shared::ports::SystemClock;
use shared::service::OrderService;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_lambda();
    let metrics = shared::metrics::Emf::install();

    let config = ServiceConfig::from_env()?;
    let resources = AwsResources::from_env()?;
    let sdk = shared::adapters::aws::load_config().await;
    let service = Arc::new(OrderService::new(
        Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), resources.table)),
        Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), resources.settle_queue_url)),
        Arc::new(SystemClock),
        config,
    ));
    run(service_fn(move |request| {
        let service = Arc::clone(&service);
        metrics.around(async move { place_order::handle(&service, request).await })
    }))
    .await
}
