//! `hot-coin`: many writers that share nothing (each its own store, cache
//! and lane, one request at a time, like Lambda instances) placing small
//! orders of one coin, against a contention model of DynamoDB in virtual
//! time, or against DynamoDB Local or ministack in real time. Prints, per
//! design and number of writers: orders/s, the busy rate, requests per
//! placed order, p50/p99 placement latency, the batches formed, the longest
//! time the coin's pooled orders stayed at or above the minimum with no
//! batch forming, what the open pools hold once the load stops and the
//! reconciler has run, and the audit of the money invariants; then, after
//! each load, a trickle of one order a second over a few of the same
//! writers, and how long the coin held the minimum without a batch in it.
//! The reconciler's sweep runs every 5 s throughout, as deployed.
//!
//! ```text
//! cargo run --release -p hot-coin-bench -- [--target model|dynamodb-local|ministack]
//!     [--writers 1,8,64,256] [--seconds 2] [--design today|sharded|both] [--trickle 30]
//! ```
//!
//! The emulators' endpoints come from `DYNAMODB_LOCAL_ENDPOINT` and
//! `MINISTACK_ENDPOINT` (`bench/hot-coin.sh` starts them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod timeline;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use shared::adapters::dynamodb::table::Table;
use shared::adapters::dynamodb::table::memory::MemoryTable;
use shared::adapters::dynamodb::table::sdk::SdkTable;
use shared::adapters::dynamodb::{DynamoStore, PoolSharding, schema};
use shared::audit::audit;
use shared::config::{POOL_QUIET_FOR, POOL_SWEEP_EVERY};
use shared::domain::{Coin, NewOrder, OrderId, Quantity, Usd, UserId};
use shared::ports::{Accounts, Clock, LedgerRecords, Orders, Outbox, PlaceError, SystemClock};
use std::sync::atomic::AtomicI64;
use testkit::contention::{ContendedTable, ContentionRules};
use testkit::recording::RecordingTable;
use testkit::sim::SimClock;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// The contention model of DynamoDB, in virtual time.
    Model,
    DynamodbLocal,
    Ministack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Designs {
    Today,
    Sharded,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Design {
    /// One pool item per coin.
    Today,
    /// The pool spread over shards that grow with conflicts.
    Sharded,
}

#[derive(Parser)]
#[command(name = "hot-coin", about = "Many writers placing small orders of one coin")]
struct Cli {
    #[arg(long, value_enum, default_value = "model")]
    target: Target,
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    writers: Vec<usize>,
    /// How long each point runs (virtual seconds on the model).
    #[arg(long, default_value = "2")]
    seconds: u64,
    #[arg(long, value_enum, default_value = "both")]
    design: Designs,
    /// The model's transaction hold time.
    #[arg(long, default_value = "10")]
    hold_ms: u64,
    /// After each point's load, this many seconds of a trickle: one order a
    /// second, taking turns over (at most 8 of) the same writers.
    #[arg(long, default_value = "30")]
    trickle: u64,
    /// The sharded design's count halves once per this long since it grew
    /// (the store's default unless given).
    #[arg(long)]
    shrink_after_ms: Option<u64>,
}

/// One point of the curve.
struct Point {
    design: Design,
    writers: usize,
    seconds: f64,
    placed: u64,
    busy: u64,
    failed: u64,
    requests: u64,
    latencies: Vec<Duration>,
    waits: timeline::Waits,
    trickle: Trickle,
    open_after: Decimal,
    audit_problems: usize,
}

/// What the trickle after the load saw.
#[derive(Default)]
struct Trickle {
    placed: u64,
    busy: u64,
    /// Batches formed, and the longest the coin held the minimum without one,
    /// of the waits that ended in the trickle (one that began in the load
    /// counts whole).
    waits: timeline::Waits,
    /// Shards holding orders when it ended.
    shards_in_use: usize,
}

fn minimum() -> Usd {
    Usd::new(Decimal::TEN).unwrap()
}

fn usd(text: &str) -> Usd {
    Usd::new(Decimal::from_str(text).unwrap()).unwrap()
}

/// A small ABAN order ($1 to $8 at $4).
fn small_order(rng: &mut StdRng, user: &UserId) -> NewOrder {
    let amount = Quantity::from_decimal(Decimal::new(rng.random_range(1..=8) * 25, 2)).unwrap();
    NewOrder {
        id: OrderId::generate(),
        user: user.clone(),
        coin: Coin::from_trusted("ABAN"),
        amount,
        price: usd("4"),
        cost: Usd::cost(usd("4"), amount).unwrap(),
        idempotency_key: None,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

fn store_for(design: Design, table: Arc<dyn Table>, clock: Arc<dyn Clock>, cli: &Cli) -> DynamoStore {
    let store = DynamoStore::on(table).with_clock(clock);
    match design {
        Design::Today => store.with_pool_sharding(PoolSharding::off()),
        Design::Sharded => {
            let mut sharding = PoolSharding::default();
            if let Some(ms) = cli.shrink_after_ms {
                sharding.shrink_after = Duration::from_millis(ms);
            }
            store.with_pool_sharding(sharding)
        }
    }
}

/// The base table of a point: the model's memory table, or a fresh table
/// on an emulator.
async fn base_table(target: Target, rules: ContentionRules) -> (Arc<dyn Table>, Option<Arc<ContendedTable>>) {
    match target {
        Target::Model => {
            let contended = Arc::new(ContendedTable::new(Arc::new(MemoryTable::new()), rules));
            (contended.clone(), Some(contended))
        }
        Target::DynamodbLocal | Target::Ministack => {
            let variable = if target == Target::Ministack { "MINISTACK_ENDPOINT" } else { "DYNAMODB_LOCAL_ENDPOINT" };
            let endpoint = std::env::var(variable).unwrap_or_else(|_| panic!("{variable} is not set"));
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(endpoint)
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "bench"))
                .timeout_config(shared::adapters::aws::timeouts())
                .load()
                .await;
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            let name = format!("hot-coin-{}", ulid::Ulid::new().to_string().to_lowercase());
            schema::ensure_table(&client, &name).await.unwrap();
            (Arc::new(SdkTable::new(client, name)), None)
        }
    }
}

async fn point(target: Target, design: Design, writers: usize, duration: Duration, cli: &Cli) -> Point {
    let rules = ContentionRules { hold: Duration::from_millis(cli.hold_ms), ..ContentionRules::default() };
    let (base, contended) = base_table(target, rules).await;
    let recording = Arc::new(RecordingTable::new(Arc::clone(&base), &["COIN#", "BATCH#"]));
    let users: Vec<UserId> = (0..writers * 4).map(|u| UserId::parse(&format!("hot-{u}")).unwrap()).collect();
    let setup = DynamoStore::on(Arc::clone(&base));
    for user in &users {
        setup.open_account(user, usd("1000000000")).await.unwrap();
    }
    let requests_before = recording.requests();
    let start = Instant::now();
    // The model runs in virtual time: so must the stores' clocks.
    let clock: Arc<dyn Clock> = match target {
        Target::Model => Arc::new(SimClock::new(start, Arc::new(AtomicI64::new(0)), time::Duration::ZERO)),
        _ => Arc::new(SystemClock),
    };
    let stop_at = start + duration;
    let stores: Vec<DynamoStore> =
        (0..writers).map(|_| store_for(design, recording.clone(), Arc::clone(&clock), cli)).collect();
    let runs = stores.iter().enumerate().map(|(w, store)| {
        let mine: Vec<UserId> = users.iter().skip(w).step_by(writers).cloned().collect();
        async move {
            let mut rng = StdRng::seed_from_u64(w as u64);
            let (mut placed, mut busy, mut failed, mut latencies) = (0u64, 0u64, 0u64, Vec::new());
            while Instant::now() < stop_at {
                let user = &mine[rng.random_range(0..mine.len())];
                let began = Instant::now();
                match store.place_order(small_order(&mut rng, user), minimum()).await {
                    Ok(_) => {
                        placed += 1;
                        latencies.push(began.elapsed());
                    }
                    Err(PlaceError::Busy) => busy += 1,
                    Err(error) => {
                        failed += 1;
                        if failed == 1 {
                            eprintln!("writer {w}: {error}");
                        }
                    }
                }
            }
            (placed, busy, failed, latencies)
        }
    });
    // The reconciler's sweeps, as deployed, throughout: their requests count.
    let sweeper = DynamoStore::on(recording.clone()).with_clock(Arc::clone(&clock));
    let done = std::sync::atomic::AtomicBool::new(false);
    let sweeping = async {
        let coin = Coin::from_trusted("ABAN");
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(POOL_SWEEP_EVERY).await;
            if let Err(error) = sweeper.sweep_pools(&coin, minimum(), POOL_QUIET_FOR, clock.now()).await {
                eprintln!("sweep: {error}");
            }
        }
    };
    let work = async {
        let results = futures::future::join_all(runs).await;
        let elapsed = start.elapsed();
        let requests = recording.requests() - requests_before;
        let waits = timeline::waits(&recording.log(), minimum().value(), start, stop_at);
        let trickle = trickle(&stores, &users, Duration::from_secs(cli.trickle), &recording).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (results, elapsed, requests, waits, trickle)
    };
    let ((results, elapsed, requests, waits, trickle), ()) = tokio::join!(work, sweeping);

    // The load stopped: the reconciler's sweep gathers what idle pools hold.
    let coin = Coin::from_trusted("ABAN");
    setup.sweep_pools(&coin, minimum(), time::Duration::ZERO, clock.now()).await.unwrap();
    let ledger = setup.ledger().await.unwrap();
    let open_after = ledger.pools.iter().filter(|p| p.coin.as_str() == "ABAN").map(|p| p.state.usd.value()).sum();
    let report = audit(&ledger, minimum());
    if !report.is_clean() {
        eprintln!("{report}");
    }
    if std::env::var("HOT_COIN_DEBUG").is_ok() {
        let shards = ledger.pools.iter().filter(|p| p.coin.as_str() == "ABAN").count();
        let (conflicts, throttles) = contended.as_ref().map_or((0, 0), |c| {
            use std::sync::atomic::Ordering::Relaxed;
            (c.stats.conflicts.load(Relaxed), c.stats.throttles.load(Relaxed))
        });
        // The count record as the load left it (`count` decays on read, `high` never does).
        let record = base.get(shared::adapters::dynamodb::item::shards_key(&coin)).await.ok().flatten();
        let field = |name: &str| record.as_ref().and_then(|r| r.get(name)).and_then(|v| v.as_n().ok()).cloned();
        let (count, high) = (field("count").unwrap_or_default(), field("high").unwrap_or_default());
        eprintln!(
            "{design:?} {writers}: {shards} shard items, count grown to {count}, high {high}, {conflicts} conflicts, {throttles} throttles"
        );
    }
    let mut point = Point {
        design,
        writers,
        seconds: elapsed.as_secs_f64(),
        placed: 0,
        busy: 0,
        failed: 0,
        requests,
        latencies: Vec::new(),
        waits,
        trickle,
        open_after,
        audit_problems: report.problems.len(),
    };
    for (placed, busy, failed, latencies) in results {
        point.placed += placed;
        point.busy += busy;
        point.failed += failed;
        point.latencies.extend(latencies);
    }
    point.latencies.sort();
    point
}

/// One order a second for `length`, taking turns over (at most 8 of) the
/// writers that made the load: what a coin sees once its rally is over.
async fn trickle(stores: &[DynamoStore], users: &[UserId], length: Duration, recording: &RecordingTable) -> Trickle {
    let mut result = Trickle::default();
    let begin = Instant::now();
    let turns = stores.len().min(8);
    let mut rng = StdRng::seed_from_u64(u64::MAX);
    for k in 0..length.as_secs() {
        tokio::time::sleep_until(begin + Duration::from_secs(k)).await;
        let user = &users[rng.random_range(0..users.len())];
        match stores[(k as usize) % turns].place_order(small_order(&mut rng, user), minimum()).await {
            Ok(_) => result.placed += 1,
            Err(PlaceError::Busy) => result.busy += 1,
            Err(error) => eprintln!("trickle: {error}"),
        }
    }
    let end = Instant::now();
    result.waits = timeline::waits(&recording.log(), minimum().value(), begin, end);
    let ledger = stores[0].ledger().await.unwrap();
    result.shards_in_use = ledger.pools.iter().filter(|p| p.coin.as_str() == "ABAN" && p.state.count > 0).count();
    result
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) * p) / 100;
    sorted[index].as_secs_f64() * 1000.0
}

fn print(point: &Point) {
    let attempts = point.placed + point.busy + point.failed;
    println!(
        "| {:?} | {} | {:.0} | {:.2}% | {:.3} | {:.1} | {:.1} | {} | {:.0} | {} | {} |",
        point.design,
        point.writers,
        point.placed as f64 / point.seconds,
        100.0 * point.busy as f64 / attempts.max(1) as f64,
        point.requests as f64 / point.placed.max(1) as f64,
        percentile(&point.latencies, 50),
        percentile(&point.latencies, 99),
        point.waits.batches,
        point.waits.longest_wait.as_secs_f64() * 1000.0,
        point.open_after,
        if point.audit_problems == 0 { "clean".to_owned() } else { format!("{} problems", point.audit_problems) },
    );
}

fn print_trickle(point: &Point) {
    let trickle = &point.trickle;
    println!(
        "| {:?} | {} | {} | {} | {} | {:.0} | {} |",
        point.design,
        point.writers,
        trickle.placed,
        trickle.busy,
        trickle.waits.batches,
        trickle.waits.longest_wait.as_secs_f64() * 1000.0,
        trickle.shards_in_use,
    );
}

fn main() {
    let cli = Cli::parse();
    let designs = match cli.design {
        Designs::Today => vec![Design::Today],
        Designs::Sharded => vec![Design::Sharded],
        Designs::Both => vec![Design::Today, Design::Sharded],
    };
    let runtime = match cli.target {
        Target::Model => tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .unwrap();
    println!(
        "{:?}, {} s per point, small ABAN orders ($1 to $8), minimum $10{}",
        cli.target,
        cli.seconds,
        if cli.target == Target::Model {
            format!(", transactions hold their items {} ms", cli.hold_ms)
        } else {
            String::new()
        }
    );
    println!(
        "| design | writers | orders/s | busy | requests/order | p50 ms | p99 ms | batches | longest wait at ≥ $10, ms | open pools after, USD | audit |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut points = Vec::new();
    for design in designs {
        for writers in &cli.writers {
            let point = runtime.block_on(point(cli.target, design, *writers, Duration::from_secs(cli.seconds), &cli));
            print(&point);
            points.push(point);
        }
    }
    if cli.trickle > 0 {
        println!();
        println!("Then {} s of a trickle, one order a second taking turns over at most 8 of the writers:", cli.trickle);
        println!();
        println!(
            "| design | writers in the load | orders | busy | batches | longest wait at ≥ $10, ms | shards holding orders at the end |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for point in &points {
            print_trickle(point);
        }
    }
}
