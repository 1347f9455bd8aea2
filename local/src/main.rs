use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use orders_local::{Backend, Options, ServerLimits};
use shared::config::ServiceConfig;
use shared::telemetry::ErrorChain;

/// The Order API and settlement on one port, running the Lambda handlers.
#[derive(Parser)]
#[command(name = "orders-local", version)]
struct Cli {
    /// Address to serve the Order API on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Accounts to create at start: {"accounts": [{"user_id": "alice", "balance_usd": "100"}]}.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// The exchange's base URL; without it, a simulated exchange fills every order.
    #[arg(long)]
    exchange_url: Option<String>,
    #[arg(long, value_enum, default_value = "memory")]
    backend: Backend,
    /// Connections served at once; more wait to be accepted, or take the
    /// place of the longest-idle one.
    #[arg(long, default_value_t = ServerLimits::default().max_connections as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Seconds a client has to send a request's body once its head is in
    /// (and the most its head may take, if less than --head-timeout).
    #[arg(long, default_value_t = ServerLimits::default().body_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout: u64,
    /// Seconds a client has to send a request's head, whole (on a kept-alive
    /// connection, counted from the last answer).
    #[arg(long, default_value_t = ServerLimits::default().head_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    head_timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,hyper=warn".into()),
        )
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("orders-local: {}", ErrorChain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let options = Options {
        listen: cli.listen,
        seed: cli.seed,
        exchange_url: cli.exchange_url,
        backend: cli.backend,
        service: ServiceConfig::from_env()?,
        wait: shared::config::wait_policy_from_lookup(|var| std::env::var(var).ok())?,
        limits: ServerLimits {
            max_connections: usize::try_from(cli.max_connections).unwrap_or(usize::MAX),
            head_timeout: Duration::from_secs(cli.head_timeout.min(cli.request_timeout)),
            body_timeout: Duration::from_secs(cli.request_timeout),
            ..ServerLimits::default()
        },
        ..Options::default()
    };
    let exchange = options.exchange_url.clone().unwrap_or_else(|| "simulated".to_owned());
    let running = orders_local::start(options).await?;
    tracing::info!(addr = %running.addr, %exchange, "orders-local is serving the Order API; Ctrl-C or SIGTERM stops it");
    let signal = stop_signal().await?;
    tracing::info!(signal, "stopping: finishing requests and settlements under way");
    let aws = running.aws.clone();
    let embedded = running.store.clone();
    let minimum = running.minimum;
    running.stop().await;
    // Printed, not logged: what the run counted shows whatever the log level.
    if let Some(metrics) = orders_local::metrics::render() {
        println!("# what this run counted (also served at GET /metrics)\n{metrics}");
    }
    match aws {
        // A shared table may hold millions of items and other processes'
        // work: `orders-admin audit` checks it.
        Some(aws) => tracing::info!("{}", aws.report()),
        None => match embedded.ledger().await {
            Ok(ledger) => match shared::audit::audit(&ledger, minimum) {
                report if report.is_clean() => tracing::info!("audit: {report}"),
                report => tracing::error!("audit: {report}"),
            },
            Err(error) => tracing::warn!(error = %ErrorChain(&error), "could not audit the store"),
        },
    }
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM as container runtimes and process managers send.
async fn stop_signal() -> std::io::Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| "SIGINT"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}
