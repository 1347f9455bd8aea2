use std::sync::Arc;

use lambda_runtime::{Error, run, service_fn};
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::sqs::SqsQueue;
use shared::config::{
    AwsResources, POOL_SWEEP_EVERY, RESEND_POLICY, ServiceConfig, WAIT_CHECK_EVERY, sweep_rules,
    wait_policy_from_lookup,
};
use shared::ports::SystemClock;
use shared::reconcile::{BoundedWait, PoolSweep, Reconciler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_lambda();
    let metrics = shared::metrics::Emf::install();

    let resources = AwsResources::from_env()?;
    let service = ServiceConfig::from_env()?;
    let wait = wait_policy_from_lookup(|var| std::env::var(var).ok())?;
    let sdk = shared::adapters::aws::load_config().await;
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), resources.table));
    let reconciler = Arc::new(
        Reconciler::new(
            store.clone(),
            Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), resources.settle_queue_url)),
            Arc::new(SystemClock),
            RESEND_POLICY,
        )
        .sweeping(
            store,
            PoolSweep {
                coins: service.prices.coins().cloned().collect(),
                minimum: service.minimum,
                rules: sweep_rules(),
                shards: shared::domain::ShardRules::default(),
                every: POOL_SWEEP_EVERY,
            },
        )
        .bounding_wait(Some(BoundedWait {
            policy: wait,
            prices: service.prices.clone(),
            every: WAIT_CHECK_EVERY,
        })),
    );
    run(service_fn(move |event| {
        let reconciler = Arc::clone(&reconciler);
        metrics.around(async move { reconciler::handle(&reconciler, event).await })
    }))
    .await
}
