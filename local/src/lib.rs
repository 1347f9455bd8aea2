//! `orders-local`: the Order API and settlement on one port, running the
//! very handlers the Lambdas run (CONTRACTS.md §3).

pub mod event_source;
pub mod gateway;
pub mod seed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use shared::adapters::http_exchange::{HttpExchange, HttpExchangeConfig};
use shared::adapters::memory::MemoryStore;
use shared::adapters::memory_queue::memory_queue;
use shared::adapters::simulated_exchange::SimulatedExchange;
use shared::config::ServiceConfig;
use shared::ports::{Exchange, Store, SystemClock};
use shared::service::OrderService;
use shared::settlement::Settler;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use event_source::{DeadLetters, EventSourceConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Embedded store and queue; nothing else to start.
    Memory,
    /// DynamoDB and SQS through the AWS SDK's standard configuration.
    Aws,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub seed: Option<PathBuf>,
    /// `None`: the built-in simulated exchange.
    pub exchange_url: Option<String>,
    pub backend: Backend,
    pub exchange_connect_timeout: Duration,
    pub exchange_timeout: Duration,
    pub settle_lease: Duration,
    pub event_source: EventSourceConfig,
    pub service: ServiceConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            seed: None,
            exchange_url: None,
            backend: Backend::Memory,
            exchange_connect_timeout: Duration::from_secs(2),
            exchange_timeout: Duration::from_secs(5),
            settle_lease: Duration::from_secs(30),
            event_source: EventSourceConfig::default(),
            service: ServiceConfig::default(),
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
    #[error("the aws backend is not built yet; use --backend memory")]
    BackendUnavailable,
}

/// A running `orders-local`.
pub struct Running {
    pub addr: SocketAddr,
    pub dead_letters: DeadLetters,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets requests and settlements under way finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub async fn start(options: Options) -> Result<Running, StartError> {
    let store: Arc<dyn Store> = match options.backend {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Aws => return Err(StartError::BackendUnavailable),
    };
    if let Some(path) = &options.seed {
        let accounts = seed::load(path)?;
        seed::apply(store.as_ref(), &accounts).await?;
        tracing::info!(accounts = accounts.len(), path = %path.display(), "seeded accounts");
    }
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
    let (queue, messages) = memory_queue();
    let service = Arc::new(OrderService::new(
        Arc::clone(&store),
        Arc::new(queue.clone()),
        Arc::new(SystemClock),
        options.service.clone(),
    ));
    let settler = Arc::new(Settler::new(store, exchange, Arc::new(SystemClock), options.settle_lease));

    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| StartError::Listen { addr: options.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: options.listen, source })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let dead_letters = DeadLetters::default();

    let settle_task = tokio::spawn(event_source::run(
        messages,
        queue,
        settler,
        options.event_source.clone(),
        Arc::clone(&dead_letters),
        shutdown_rx.clone(),
    ));
    let http_task = tokio::spawn(accept(listener, service, shutdown_rx));
    Ok(Running { addr, dead_letters, shutdown, tasks: vec![http_task, settle_task] })
}

async fn accept(listener: TcpListener, service: Arc<OrderService>, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        let connection = http1::Builder::new().serve_connection(
            TokioIo::new(stream),
            service_fn(move |request| gateway::serve(Arc::clone(&service), request, remote)),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 5 s; closing them");
    }
}
