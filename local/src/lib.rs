//! `orders-local`: the Order API and settlement on one port, running the
//! very handlers the Lambdas run (docs/api.md).

mod connection;
pub mod event_source;
pub mod gateway;
pub mod metrics;
pub mod openapi;
pub mod seed;
pub mod server;
mod slots;
pub mod sqs_poller;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shared::adapters::dynamodb::{DynamoStore, schema};
use shared::adapters::http_exchange::{HttpExchange, HttpExchangeConfig};
use shared::adapters::memory_queue::{MemoryQueue, QueuedMessage, memory_queue};
use shared::adapters::sdk_metrics::RequestCounter;
use shared::adapters::simulated_exchange::SimulatedExchange;
use shared::adapters::sqs::{SqsQueue, ensure_queues};
use shared::audit::{AuditReport, audit};
use shared::config::{POOL_DUE_AFTER, POOL_SWEEP_EVERY, ServiceConfig};
use shared::domain::ResendPolicy;
use shared::domain::SweepRules;
use shared::ports::{Clock, Exchange, InfraError, SettleQueue, Store, SystemClock, WaitPolicy};
use shared::reconcile::{BoundedWait, PoolSweep, Reconciler};
use shared::service::OrderService;
use shared::settlement::Settler;
use shared::telemetry::ErrorChain;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use event_source::{DeadLetters, EventSourceConfig};
pub use server::ServerLimits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Embedded store and queue; nothing else to start.
    Memory,
    /// DynamoDB and SQS through the AWS SDK's standard configuration.
    Aws,
}

/// Where `--backend aws` finds its table and queue. Endpoints, region and
/// credentials come from the SDK's standard configuration
/// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_SQS`,
/// `AWS_REGION`, …) unless a test passes its own.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    pub table: String,
    pub queue_name: String,
    pub dynamodb: Option<aws_config::SdkConfig>,
    pub sqs: Option<aws_config::SdkConfig>,
}

impl AwsOptions {
    /// `TABLE_NAME` (default `orders`) and `SETTLE_QUEUE_NAME` (default `orders-settle`).
    pub fn from_env() -> AwsOptions {
        AwsOptions {
            table: std::env::var("TABLE_NAME").unwrap_or_else(|_| "orders".to_owned()),
            queue_name: std::env::var("SETTLE_QUEUE_NAME").unwrap_or_else(|_| "orders-settle".to_owned()),
            dynamodb: None,
            sqs: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub seed: Option<PathBuf>,
    /// `None`: the built-in simulated exchange.
    pub exchange_url: Option<String>,
    pub backend: Backend,
    pub aws: AwsOptions,
    /// How often stuck batches are looked for (the reconciler's schedule).
    pub reconcile_every: Duration,
    /// When the reconciler re-sends a batch settlement lost track of.
    pub resend_policy: ResendPolicy,
    /// Money that waited this long on its shard is the reconciler's sweep's.
    pub pool_due_after: time::Duration,
    /// How often the reconciler sweeps pool shards (between its runs).
    pub pool_sweep_every: Duration,
    pub exchange_connect_timeout: Duration,
    pub exchange_timeout: Duration,
    pub settle_lease: Duration,
    pub event_source: EventSourceConfig,
    pub service: ServiceConfig,
    /// The operator's bound on a pooled order's wait (`POOL_MAX_WAIT`, …).
    pub wait: Option<WaitPolicy>,
    /// How often the wait policy is checked.
    pub wait_check_every: Duration,
    pub limits: ServerLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            seed: None,
            exchange_url: None,
            backend: Backend::Memory,
            aws: AwsOptions::from_env(),
            reconcile_every: Duration::from_secs(30),
            // The embedded event source redelivers failed messages within a
            // second or two: the reconciler only picks up what it lost.
            resend_policy: ResendPolicy {
                ready_after: time::Duration::minutes(1),
                backoff: time::Duration::seconds(30),
                backoff_cap: time::Duration::minutes(10),
                max_attempts: EventSourceConfig::default().max_receives,
            },
            pool_due_after: POOL_DUE_AFTER,
            pool_sweep_every: POOL_SWEEP_EVERY,
            exchange_connect_timeout: Duration::from_secs(2),
            exchange_timeout: Duration::from_secs(5),
            settle_lease: Duration::from_secs(30),
            event_source: EventSourceConfig::default(),
            service: ServiceConfig::default(),
            wait: None,
            wait_check_every: shared::config::WAIT_CHECK_EVERY,
            limits: ServerLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
    #[error("cannot build the exchange client")]
    Exchange(#[source] reqwest::Error),
    #[error("cannot prepare the {what}")]
    Aws {
        what: &'static str,
        #[source]
        source: shared::ports::InfraError,
    },
}

/// A running `orders-local`.
pub struct Running {
    pub addr: SocketAddr,
    /// The store it serves from (the audit reads it).
    pub store: Arc<dyn Store>,
    pub minimum: shared::domain::Usd,
    /// Messages that exhausted their deliveries (embedded queue).
    pub dead_letters: DeadLetters,
    /// With `--backend aws`: the AWS side, for reports and tests.
    pub aws: Option<AwsRuntime>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The AWS resources `--backend aws` runs on, and what it sent to them.
#[derive(Clone)]
pub struct AwsRuntime {
    pub store: Arc<DynamoStore>,
    pub requests: RequestCounter,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dead_letter_queue_url: String,
}

impl AwsRuntime {
    /// One line: DynamoDB requests by operation, what placing an order cost
    /// (its transactions and pool reads per placed order), and the store's
    /// retry counts.
    pub fn report(&self) -> String {
        let stats = self.store.stats();
        let requests = self.requests.snapshot();
        let count = |operation: &str| requests.get(operation).copied().unwrap_or(0);
        let placing = stats.placement_transactions + stats.pool_reads + stats.shard_reads;
        let per_order = match stats.orders_placed {
            0 => "n/a".to_owned(),
            orders => format!("{:.4}", placing as f64 / orders as f64),
        };
        format!(
            "orders placed {}; DynamoDB requests by operation {requests:?}; placing: {} TransactWriteItems + {} pool \
             GetItem + {} shard-count reads and writes = {per_order} requests per placed order; TransactionConflict {}, \
             throttled {}, stale-pool retries {}, lost replies {}, busy {}; settling: {} UpdateItem; the sweep: {} reads \
             of counts and pools and writes of counts",
            stats.orders_placed,
            stats.placement_transactions,
            stats.pool_reads,
            stats.shard_reads,
            stats.conflicts,
            stats.throttled,
            stats.stale_pool_retries,
            stats.lost_replies,
            stats.busy,
            count("UpdateItem"),
            stats.sweep_requests,
        )
    }

    pub async fn dead_letter_count(&self) -> Result<u64, shared::ports::InfraError> {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.dead_letter_queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| shared::ports::InfraError::new("read dead-letter queue", e))?;
        Ok(attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}

impl Running {
    /// The money invariants, checked on everything the store holds now.
    pub async fn audit(&self) -> Result<AuditReport, InfraError> {
        Ok(audit(&self.store.ledger().await?, self.minimum))
    }

    /// Stops accepting, lets requests and settlements under way finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub async fn start(options: Options) -> Result<Running, StartError> {
    metrics::install();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let exchange: Arc<dyn Exchange> = match &options.exchange_url {
        None => Arc::new(SimulatedExchange::new()),
        Some(url) => Arc::new(
            HttpExchange::new(&HttpExchangeConfig {
                base_url: url.clone(),
                connect_timeout: options.exchange_connect_timeout,
                request_timeout: options.exchange_timeout,
            })
            .map_err(StartError::Exchange)?,
        ),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let dead_letters = DeadLetters::default();
    let mut tasks = Vec::new();

    // Where the settle queue's messages are consumed: in-process, as
    // Lambda's event source mapping would, or from SQS.
    enum Consumer {
        Embedded(tokio::sync::mpsc::UnboundedReceiver<QueuedMessage>, MemoryQueue),
        Sqs(AwsRuntime),
    }
    let (store, queue, consumer): (Arc<dyn Store>, Arc<dyn SettleQueue>, Consumer) = match options.backend {
        Backend::Memory => {
            let (queue, messages) = memory_queue();
            (Arc::new(DynamoStore::in_memory()), Arc::new(queue.clone()), Consumer::Embedded(messages, queue))
        }
        Backend::Aws => {
            let runtime = connect_aws(&options.aws).await?;
            let queue = SqsQueue::new(runtime.sqs.clone(), runtime.queue_url.clone());
            (runtime.store.clone(), Arc::new(queue), Consumer::Sqs(runtime))
        }
    };
    let settler = Arc::new(Settler::new(
        Arc::clone(&store) as _,
        exchange,
        Arc::clone(&queue),
        Arc::clone(&clock),
        options.settle_lease,
    ));
    let aws = match consumer {
        Consumer::Embedded(messages, embedded) => {
            tasks.push(tokio::spawn(event_source::run(
                messages,
                embedded,
                settler,
                options.event_source.clone(),
                Arc::clone(&dead_letters),
                shutdown_rx.clone(),
            )));
            None
        }
        Consumer::Sqs(runtime) => {
            // Two pollers, as Lambda starts with several concurrent invocations.
            for _ in 0..2 {
                tasks.push(tokio::spawn(sqs_poller::run(
                    runtime.sqs.clone(),
                    runtime.queue_url.clone(),
                    Arc::clone(&settler),
                    options.event_source.clone(),
                    shutdown_rx.clone(),
                )));
            }
            Some(runtime)
        }
    };
    if let Some(path) = &options.seed {
        let accounts = seed::load(path)?;
        let opened = seed::apply(store.as_ref(), &accounts).await?;
        tracing::info!(
            opened, existing = accounts.len() - opened, path = %path.display(),
            "seeded the accounts that did not exist"
        );
    }
    let sweep = PoolSweep {
        coins: options.service.prices.coins().cloned().collect(),
        minimum: options.service.minimum,
        rules: SweepRules { due_after: options.pool_due_after, ..SweepRules::default() },
        shards: shared::domain::ShardRules::default(),
        every: options.pool_sweep_every,
    };
    let reconciler =
        Reconciler::new(Arc::clone(&store) as _, Arc::clone(&queue), Arc::clone(&clock), options.resend_policy)
            .sweeping(Arc::clone(&store) as _, sweep)
            .bounding_wait(Some(BoundedWait {
                policy: options.wait.clone(),
                prices: options.service.prices.clone(),
                every: options.wait_check_every,
            }));
    tasks.push(tokio::spawn(reconcile(reconciler, options.reconcile_every, shutdown_rx.clone())));
    let service = Arc::new(OrderService::new(Arc::clone(&store) as _, queue, clock, options.service.clone()));

    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| StartError::Listen { addr: options.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: options.listen, source })?;
    tasks.push(tokio::spawn(server::serve(listener, service, options.limits, shutdown_rx)));
    Ok(Running { addr, store, minimum: options.service.minimum, dead_letters, aws, shutdown, tasks })
}

/// The table and queues, created when missing, and clients that count
/// their requests.
async fn connect_aws(options: &AwsOptions) -> Result<AwsRuntime, StartError> {
    let standard = shared::adapters::aws::load_config().await;
    let dynamodb_config = options.dynamodb.as_ref().unwrap_or(&standard);
    let sqs_config = options.sqs.as_ref().unwrap_or(&standard);
    let requests = RequestCounter::new();
    let timeouts = shared::adapters::aws::timeouts();
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(dynamodb_config)
            .timeout_config(timeouts.clone())
            .interceptor(requests.clone())
            .build(),
    );
    schema::ensure_table(&dynamodb, &options.table)
        .await
        .map_err(|source| StartError::Aws { what: "table", source })?;
    let sqs =
        aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(sqs_config).timeout_config(timeouts).build());
    let queue_url = ensure_queues(&sqs, &options.queue_name)
        .await
        .map_err(|source| StartError::Aws { what: "settle queue", source })?;
    let dead_letter_queue_url = sqs
        .get_queue_url()
        .queue_name(format!("{}-dlq", options.queue_name))
        .send()
        .await
        .map_err(|e| StartError::Aws {
            what: "dead-letter queue",
            source: shared::ports::InfraError::new("get queue url", e),
        })?
        .queue_url
        .unwrap_or_default();
    tracing::info!(table = %options.table, %queue_url, "using DynamoDB and SQS");
    Ok(AwsRuntime {
        store: Arc::new(DynamoStore::new(dynamodb, options.table.clone())),
        requests,
        sqs,
        queue_url,
        dead_letter_queue_url,
    })
}

/// The reconciler's schedule: a run every `every`, and sweeps of the pool
/// shards between runs (as the function's runs do while they last).
async fn reconcile(reconciler: Reconciler, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let sweep_every = reconciler.sweep_every().unwrap_or(every).min(every);
    let mut last_run = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(sweep_every) => {}
            _ = shutdown.changed() => break,
        }
        if last_run.elapsed() < every {
            reconciler.sweep().await;
            continue;
        }
        last_run = tokio::time::Instant::now();
        match reconciler.run_once().await {
            Ok(report) if !report.left_to_operator.is_empty() => {
                tracing::error!(batches = ?report.left_to_operator, "batches exhausted their settle attempts: an operator must look");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %ErrorChain(&error), "reconciling stuck batches failed"),
        }
    }
}
