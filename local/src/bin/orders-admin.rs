//! What operators do to a deployed (or emulated) table, over the same
//! store the functions use: fund an account with an idempotent deposit,
//! and audit the money invariants.
//!
//! ```text
//! orders-admin deposit --user alice --usd 100 --id wire-2026-0042 [--table orders]
//! orders-admin pools [--table orders]
//! orders-admin audit [--table orders] [--minimum 10] [--max-wait 15m]
//! ```
//!
//! DynamoDB is reached through the AWS SDK's standard configuration
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials); the table is `--table`,
//! else `TABLE_NAME`, else `orders`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::sync::Arc;

use shared::adapters::dynamodb::DynamoStore;
use shared::audit::{AgeLimit, audit_live};
use shared::config::WAIT_CHECK_EVERY;
use shared::domain::{DepositId, Usd, UserId};
use shared::pooling::Pooling;
use shared::ports::{Accounts, Deposited, LedgerRecords, Pools, SystemClock};
use shared::telemetry::ErrorChain;
use time::format_description::well_known::Rfc3339;

#[derive(Parser)]
#[command(name = "orders-admin", version, about = "Operator commands on the orders table")]
struct Cli {
    /// The DynamoDB table (default: $TABLE_NAME, else "orders").
    #[arg(long, global = true)]
    table: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Credits an account once per deposit id (the same id again credits nothing).
    Deposit {
        #[arg(long)]
        user: String,
        /// Dollars, a plain decimal ("100", "12.50").
        #[arg(long, allow_hyphen_values = true)]
        usd: String,
        /// Your reference for this deposit (1 to 128 visible ASCII characters).
        #[arg(long)]
        id: String,
    },
    /// What each coin's pool holds now: shards, dollars, coins, orders, and
    /// how long its oldest pending order has waited.
    Pools,
    /// Checks every balance, order, batch and pool; exits 1 on any discrepancy.
    Audit {
        /// The exchange minimum the batches were formed with.
        #[arg(long, default_value = "10", allow_hyphen_values = true)]
        minimum: String,
        /// The deployment's POOL_MAX_WAIT (90s, 15m, 2h): an order pending
        /// longer than this and two wait checks is a discrepancy.
        #[arg(long)]
        max_wait: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("orders-admin: {}", ErrorChain(error.as_ref()));
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (table, named_by) = match (cli.table, std::env::var("TABLE_NAME")) {
        (Some(table), _) => (table, "--table"),
        (None, Ok(table)) => (table, "TABLE_NAME"),
        (None, Err(_)) => ("orders".to_owned(), "the default"),
    };
    // DynamoDB's own rule; the SDK would refuse it with an error of its own
    // that names neither.
    let valid = (3..=255).contains(&table.len())
        && table.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(format!(
            "{named_by} \"{table}\" is not a DynamoDB table name (3 to 255 characters: letters, digits, _ - .)"
        )
        .into());
    }
    let sdk = shared::adapters::aws::load_config().await;
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table.clone()));
    match cli.command {
        Command::Deposit { user, usd, id } => {
            let user = UserId::parse(&user).map_err(|e| format!("--user \"{user}\": {e}"))?;
            let usd = Usd::parse(&usd).filter(|u| *u > Usd::ZERO).ok_or_else(|| {
                format!(
                    "--usd \"{usd}\" is not a positive plain decimal of at most {} decimal places and {} digits \
                     before the point",
                    Usd::MAX_SCALE,
                    Usd::MAX_WHOLE_DIGITS
                )
            })?;
            let id = DepositId::parse(&id).map_err(|e| format!("--id \"{id}\": {e}"))?;
            match store.deposit(&user, &id, usd).await? {
                Deposited::Credited { balance } => println!("credited {usd} USD to {user}; balance {balance} USD"),
                Deposited::AlreadyCredited => println!("deposit {id} was credited before; nothing changed"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pools => {
            let pooling = Pooling::new(store.clone(), Arc::new(SystemClock), Usd::ZERO);
            let mut coins = store.pooled_coins().await?;
            coins.sort();
            let now = time::OffsetDateTime::now_utc();
            println!(
                "{:<10} {:>8} {:>18} {:>20} {:>7}  oldest pending order",
                "coin", "shards", "usd", "qty", "orders"
            );
            for coin in coins {
                let pool = pooling.summary(&coin).await?;
                let oldest = match pool.oldest {
                    Some(at) => format!("{} ({} ago)", at.replace_nanosecond(0)?.format(&Rfc3339)?, waited(now - at)),
                    None => "-".to_owned(),
                };
                let shards = format!("{}/{}", pool.holding, pool.shards);
                println!(
                    "{:<10} {:>8} {:>18} {:>20} {:>7}  {oldest}",
                    pool.coin.as_str(),
                    shards,
                    pool.usd.to_string(),
                    pool.qty.normalize().to_string(),
                    pool.orders
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { minimum, max_wait } => {
            let minimum = Usd::parse(&minimum)
                .filter(|m| *m > Usd::ZERO)
                .ok_or_else(|| format!("--minimum \"{minimum}\" is not a positive plain decimal"))?;
            let age = match max_wait {
                None => None,
                Some(text) => {
                    let wait = shared::config::parse_wait(&text)
                        .ok_or_else(|| format!("--max-wait \"{text}\" is not a duration such as 90s, 15m or 2h"))?;
                    let checks = time::Duration::try_from(WAIT_CHECK_EVERY * 2)?;
                    Some(AgeLimit { now: time::OffsetDateTime::now_utc(), max: wait + checks })
                }
            };
            // A live table: what is wrong in three reads, two seconds apart.
            let live = audit_live(|| store.ledger(), minimum, age, 3, std::time::Duration::from_secs(2)).await?;
            println!("table {table}: {}", live.report);
            if live.in_flight > 0 {
                println!(
                    "({} findings of a read were not found again by a later one: writes in flight between pages, not discrepancies)",
                    live.in_flight
                );
            }
            Ok(if live.report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// A wait as a person reads it: `3h 2m`, `4m 10s`, `12s`.
fn waited(wait: time::Duration) -> String {
    let seconds = wait.whole_seconds().max(0);
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}
