use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use orders_local::{Backend, Options};
use shared::config::ServiceConfig;

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
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,hyper=warn".into()),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = format!("orders-local: {error}");
            let mut source = std::error::Error::source(error.as_ref());
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
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
        ..Options::default()
    };
    let exchange = options.exchange_url.clone().unwrap_or_else(|| "simulated".to_owned());
    let running = orders_local::start(options).await?;
    tracing::info!(addr = %running.addr, %exchange, "orders-local is serving the Order API; Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    tracing::info!("stopping: finishing requests and settlements under way");
    let aws = running.aws.clone();
    let audit = running.audit().await;
    running.stop().await;
    if let Some(aws) = aws {
        tracing::info!("{}", aws.report());
    }
    match audit {
        Ok(report) if report.is_clean() => tracing::info!("audit: {report}"),
        Ok(report) => tracing::error!("audit: {report}"),
        Err(error) => tracing::warn!(error = &error as &dyn std::error::Error, "could not audit the store"),
    }
    tracing::info!("stopped");
    Ok(())
}
