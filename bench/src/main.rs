//! `hot-coin`: orders placed by Lambda-like instances that share nothing
//! (each its own store, cache and lane, one request at a time), against a
//! contention model of DynamoDB in virtual time (`testkit::contention`),
//! or DynamoDB Local or ministack in real time. The reconciler's sweep and
//! settlement run beside them, as deployed.
//!
//! Orders arrive at random (Poisson, at each `--rates`), each served by an
//! idle instance or a new one, as Lambda does; or, with `--writers`, each
//! writer places its next order the moment the last is answered (the
//! flattering shape of earlier figures, kept to compare). Over one coin, or
//! `--coins 100` with Zipf popularity, and `--users` users.
//!
//! Per point it prints the placement path's DynamoDB requests, write and
//! read units per order, the busy rate, latencies, each pooled order's
//! wait at or above the minimum (see `earliest`), how soon the leftovers
//! are batched once the load stops, which documented limit throttled
//! anything, and the audit of the money invariants. `--kinds` adds every
//! kind of request; `--cost` prices a million orders of each kind;
//! `--svg FILE` draws the curve.
//!
//! ```text
//! cargo run --profile perf -p hot-coin-bench -- [--target model|dynamodb-local|ministack]
//!     [--rates 500,1000,2000,4000 | --writers 1,8,64,256] [--design both|sharded|one-pool]
//!     [--coins 1] [--users 10000] [--big-share 0] [--key-share 0] [--seconds 5] [--after 3]
//!     [--warm 4000] [--kinds] [--cost] [--svg FILE]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hot_coin::{cost, svg};

use std::time::Duration;

use clap::{Parser, ValueEnum};
use shared::config::{POOL_SWEEP_EVERY, sweep_rules};
use shared::domain::ShardRules;
use testkit::contention::{ContentionRules, Kind, Latency, Ledger, Limit};

use hot_coin::run::{Arrivals, Design, Dispatch, Outcome, Setup, Target, point};
use hot_coin::traffic::Mix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Designs {
    OnePool,
    Sharded,
    Both,
}

#[derive(Parser)]
#[command(name = "hot-coin", about = "Orders placed by Lambda-like instances against a model of DynamoDB")]
struct Cli {
    #[arg(long, value_enum, default_value = "model")]
    target: Target,
    /// Offered loads, orders a second arriving at random.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,4000")]
    rates: Vec<f64>,
    /// Writers placing back to back instead of random arrivals.
    #[arg(long, value_delimiter = ',')]
    writers: Vec<usize>,
    #[arg(long, value_enum, default_value = "both")]
    design: Designs,
    /// Which idle instance takes a request (Lambda does not document it).
    #[arg(long, value_enum, default_value = "random")]
    dispatch: Dispatch,
    /// Coins (1: ABAN; more: Zipf popularity).
    #[arg(long, default_value = "1")]
    coins: usize,
    #[arg(long, default_value = "10000")]
    users: usize,
    /// Share of orders of $10 or more.
    #[arg(long, default_value = "0")]
    big_share: f64,
    /// Share of orders with an Idempotency-Key.
    #[arg(long, default_value = "0")]
    key_share: f64,
    /// Seconds of load per point (virtual on the model).
    #[arg(long, default_value = "5")]
    seconds: u64,
    /// Seconds of load before the measured part (not counted).
    #[arg(long, default_value = "0")]
    warmup: u64,
    /// Seconds the sweep and settlement go on after the load.
    #[arg(long, default_value = "3")]
    after: u64,
    /// The table's warm throughput, write units a second (reads: three
    /// times as many).
    #[arg(long, default_value = "4000")]
    warm: u64,
    /// Transactions' median and 99th percentile, ms.
    #[arg(long, default_value = "10")]
    tx_median_ms: u64,
    #[arg(long, default_value = "30")]
    tx_p99_ms: u64,
    /// The sweep: money that waited this long (ms) on its shard is due, and
    /// the sweep runs this often (ms); the service's own settings unless given.
    #[arg(long)]
    due_ms: Option<i64>,
    /// Money on a shard in use (written in the last 50 ms) is due after this
    /// long (ms); the service's setting unless given.
    #[arg(long)]
    busy_due_ms: Option<i64>,
    #[arg(long)]
    sweep_ms: Option<u64>,
    /// Orders a second one shard takes (the shard count follows each
    /// coin's rate by it); the service's setting unless given.
    #[arg(long)]
    per_shard: Option<f64>,
    /// Most shards a coin may have; the store's unless given.
    #[arg(long)]
    max_shards: Option<u32>,
    /// Conflicts in a row that grow a coin's shards; the store's unless given.
    #[arg(long)]
    grow_after: Option<u32>,
    /// Lambda's concurrency limit (instances at most): the account's
    /// default is 1,000.
    #[arg(long, default_value = "1000")]
    concurrency: usize,
    /// New instances Lambda starts at most per 10 s, per function.
    #[arg(long, default_value = "1000")]
    burst: usize,
    /// Print every kind of request per point.
    #[arg(long)]
    kinds: bool,
    /// Price a million orders of each kind (pooled, $10 or more, with a key),
    /// at 1,000 orders a second on one coin.
    #[arg(long)]
    cost: bool,
    /// Write the curve as an SVG picture here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p / 100.0).round() as usize]
}

fn per_order(n: f64, outcome: &Outcome) -> f64 {
    n / outcome.placed.max(1) as f64
}

fn limits(ledgers: &[&Ledger]) -> String {
    let mut all: Vec<(Limit, u64)> = Vec::new();
    for ledger in ledgers {
        for (limit, n) in ledger.limits_hit() {
            match all.iter_mut().find(|(l, _)| *l == limit) {
                Some(entry) => entry.1 += n,
                None => all.push((limit, n)),
            }
        }
    }
    if all.is_empty() {
        return "none".to_owned();
    }
    all.iter().map(|(limit, n)| format!("{n} × {}", limit.describe())).collect::<Vec<_>>().join("; ")
}

fn requests_per_order(outcome: &Outcome, target: Target) -> f64 {
    let requests = match target {
        Target::Model => outcome.placement.total().requests,
        _ => outcome.placement_requests,
    };
    per_order(requests as f64, outcome)
}

fn print_header() {
    println!(
        "| design | arrivals | orders/s | busy (Lambda) | instances | requests/order | write units/order | read units/order | conflicts | p50 / p99 ms | wait at ≥ $10 p50 / p90 / p99 / max ms | over 50 ms | leftovers batched within, s | stranded | shards (most) | open after, USD | limits hit | audit |"
    );
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
}

fn print_point(design: Design, arrivals: Arrivals, seconds: u64, outcome: &Outcome, target: Target) {
    let placement = outcome.placement.total();
    let attempts = outcome.placed + outcome.busy + outcome.failed + outcome.lambda_throttled;
    let waits = &outcome.waits;
    println!(
        "| {} | {} | {:.0} | {:.2}% ({:.2}%) | {} | {:.3} | {:.2} | {:.2} | {:.1}% | {:.1} / {:.1} | {:.0} / {:.0} / {:.0} / {:.0} | {:.0}% | {:.2} | {} | {} | {} | {} | {} |",
        design.name(),
        arrivals.describe(),
        outcome.placed as f64 / seconds as f64,
        100.0 * (outcome.busy + outcome.lambda_throttled) as f64 / attempts.max(1) as f64,
        100.0 * outcome.lambda_throttled as f64 / attempts.max(1) as f64,
        outcome.instances,
        requests_per_order(outcome, target),
        per_order((placement.write_units + placement.index_write_units) as f64, outcome),
        per_order(placement.read_half_units as f64 / 2.0, outcome),
        100.0 * placement.conflicts as f64 / placement.requests.max(1) as f64,
        ms(percentile(&outcome.latencies, 50.0)),
        ms(percentile(&outcome.latencies, 99.0)),
        ms(waits.percentile(50.0)),
        ms(waits.percentile(90.0)),
        ms(waits.percentile(99.0)),
        ms(waits.percentile(100.0)),
        100.0 * waits.share_over(Duration::from_millis(50)),
        waits.after_load_longest.as_secs_f64(),
        waits.stranded,
        outcome.most_shards,
        outcome.open_after,
        limits(&[&outcome.placement, &outcome.sweep, &outcome.settle]),
        if outcome.audit_problems == 0 { "clean".to_owned() } else { format!("{} problems", outcome.audit_problems) },
    );
}

fn print_coins(outcome: &Outcome) {
    let mut coins: Vec<(&String, Vec<Duration>)> = outcome
        .waits
        .by_coin
        .iter()
        .map(|(coin, waits)| {
            let mut waits = waits.clone();
            waits.sort();
            (coin, waits)
        })
        .collect();
    coins.sort_by_key(|(coin, _)| (*coin).clone());
    for (coin, waits) in &coins {
        eprintln!(
            "{coin}: {} pooled orders, {} shards, wait p50 {:.0} p99 {:.0} ms",
            waits.len(),
            outcome.shards_by_coin.get(*coin).copied().unwrap_or(0),
            ms(percentile(waits, 50.0)),
            ms(percentile(waits, 99.0))
        );
    }
}

fn print_kinds(outcome: &Outcome) {
    println!();
    println!(
        "| path | request | per order | write units/order | index write units/order | read units/order | conflicts | conditions failed | throttled |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (path, ledger) in
        [("placement", &outcome.placement), ("sweep", &outcome.sweep), ("settlement", &outcome.settle)]
    {
        for (kind, counts) in &ledger.0 {
            if counts.requests == 0 && counts.throttled_total() == 0 {
                continue;
            }
            println!(
                "| {path} | {} | {:.4} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
                kind.name(),
                per_order(counts.requests as f64, outcome),
                per_order(counts.write_units as f64, outcome),
                per_order(counts.index_write_units as f64, outcome),
                per_order(counts.read_half_units as f64 / 2.0, outcome),
                counts.conflicts,
                counts.condition_failures,
                counts.throttled_total(),
            );
        }
    }
    println!();
    let _ = Kind::Other;
}

fn rules(cli: &Cli) -> ContentionRules {
    ContentionRules {
        transaction: Latency::ms(cli.tx_median_ms, cli.tx_p99_ms),
        ..ContentionRules::default().warmed_to(cli.warm)
    }
}

fn setup(cli: &Cli, design: Design, arrivals: Arrivals, mix: Mix) -> Setup {
    Setup {
        target: cli.target,
        dispatch: cli.dispatch,
        design,
        arrivals,
        mix,
        load: Duration::from_secs(cli.seconds),
        warmup: Duration::from_secs(cli.warmup),
        after: Duration::from_secs(cli.after),
        rules: rules(cli),
        shards: {
            let mut shards = ShardRules::default();
            if let Some(n) = cli.max_shards {
                shards.max = n;
            }
            if let Some(n) = cli.grow_after {
                shards.grow_after = n;
            }
            if let Some(rate) = cli.per_shard {
                shards.per_shard = rate;
            }
            shards
        },
        sweep: {
            let mut sweep = sweep_rules();
            if let Some(ms) = cli.due_ms {
                sweep.due_after = time::Duration::milliseconds(ms);
            }
            if let Some(ms) = cli.busy_due_ms {
                sweep.busy_due_after = time::Duration::milliseconds(ms);
            }
            sweep
        },
        sweep_every: cli.sweep_ms.map_or(POOL_SWEEP_EVERY, Duration::from_millis),
        concurrency: cli.concurrency,
        burst: cli.burst,
    }
}

fn runtime(target: Target) -> tokio::runtime::Runtime {
    match target {
        Target::Model => tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .unwrap()
}

fn costs(cli: &Cli) {
    let runtime = runtime(cli.target);
    println!(
        "Cost per million orders, 1,000 orders/s on one coin (each kind), {} s, prices of {}:",
        cli.seconds,
        cost::PRICES.date
    );
    println!();
    println!("| order | DynamoDB writes | DynamoDB reads | HTTP API | place-order λ | settle λ | SQS | total |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let kinds =
        [("pooled ($1–$8)", 0.0, 0.0), ("$10 or more", 1.0, 0.0), ("pooled, with an Idempotency-Key", 0.0, 1.0)]
            .map(|(name, big, key)| (name.to_owned(), Mix::new(1, cli.users, big, key), 1000.0));
    // With `--coins` above one: the mix `--coins`, `--big-share` and
    // `--key-share` describe, at the first of `--rates`.
    let mix = (cli.coins > 1).then(|| {
        let name = format!(
            "the mix: {} coins, {:.0} % $10 or more, {:.0} % with a key, at {:.0}/s",
            cli.coins,
            100.0 * cli.big_share,
            100.0 * cli.key_share,
            cli.rates.first().copied().unwrap_or(1000.0)
        );
        (
            name,
            Mix::new(cli.coins, cli.users, cli.big_share, cli.key_share),
            cli.rates.first().copied().unwrap_or(1000.0),
        )
    });
    for (name, mix, rate) in kinds.into_iter().chain(mix) {
        let setup = setup(cli, Design::Sharded, Arrivals::Poisson { rate }, mix);
        let outcome = runtime.block_on(point(&setup));
        let c = cost::per_million(&outcome);
        println!(
            "| {name} | ${:.2} | ${:.2} | ${:.2} | ${:.2} | ${:.2} | ${:.2} | **${:.2}** |",
            c.dynamodb_writes,
            c.dynamodb_reads,
            c.http_api,
            c.place_lambda,
            c.settle_lambda,
            c.sqs,
            c.total()
        );
        if cli.kinds {
            print_kinds(&outcome);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if cli.cost {
        costs(&cli);
        return;
    }
    let designs = match cli.design {
        Designs::OnePool => vec![Design::OnePool],
        Designs::Sharded => vec![Design::Sharded],
        Designs::Both => vec![Design::OnePool, Design::Sharded],
    };
    let arrivals: Vec<Arrivals> = if cli.writers.is_empty() {
        cli.rates.iter().map(|rate| Arrivals::Poisson { rate: *rate }).collect()
    } else {
        cli.writers.iter().map(|writers| Arrivals::BackToBack { writers: *writers }).collect()
    };
    let mix = Mix::new(cli.coins, cli.users, cli.big_share, cli.key_share);
    let runtime = runtime(cli.target);
    let rules = rules(&cli);
    println!(
        "{:?}, {:?} dispatch: {} coin(s){}, {} users, {:.0}% of orders $10 or more, {:.0}% with a key; {} s of load measured after {} s, then {} s; {}",
        cli.target,
        cli.dispatch,
        mix.coins.len(),
        if mix.coins.len() > 1 {
            format!(" (Zipf: the first takes {:.0}%)", 100.0 * mix.top_share())
        } else {
            String::new()
        },
        cli.users,
        100.0 * cli.big_share,
        100.0 * cli.key_share,
        cli.seconds,
        cli.warmup,
        cli.after,
        if cli.target == Target::Model {
            format!(
                "transactions {} ms median / {} ms p99, single writes {:?} / {:?}, reads {:?} / {:?}; table warmed to {} write units/s",
                cli.tx_median_ms,
                cli.tx_p99_ms,
                rules.single_write.median,
                rules.single_write.p99,
                rules.read.median,
                rules.read.p99,
                cli.warm
            )
        } else {
            String::new()
        }
    );
    print_header();
    let mut results: Vec<(Design, Arrivals, Outcome)> = Vec::new();
    for design in &designs {
        for arrival in &arrivals {
            let outcome = runtime.block_on(point(&setup(&cli, *design, *arrival, mix.clone())));
            print_point(*design, *arrival, cli.seconds, &outcome, cli.target);
            if cli.kinds {
                print_kinds(&outcome);
                print_header();
            }
            if std::env::var("HOT_COIN_DEBUG").is_ok() {
                print_coins(&outcome);
            }
            results.push((*design, *arrival, outcome));
        }
    }
    if let Some(path) = &cli.svg {
        write_svg(path, &cli, &designs, &results);
    }
}

fn write_svg(path: &std::path::Path, cli: &Cli, designs: &[Design], results: &[(Design, Arrivals, Outcome)]) {
    let x_of = |arrivals: &Arrivals| match arrivals {
        Arrivals::Poisson { rate } => *rate,
        Arrivals::BackToBack { writers } => *writers as f64,
    };
    let colour = |design: Design| if design == Design::Sharded { "#1f5fbf" } else { "#c0392b" };
    let line = |design: Design, y: &dyn Fn(&Outcome) -> f64| svg::Line {
        name: design.name().to_owned(),
        colour: colour(design),
        points: results.iter().filter(|(d, _, _)| *d == design).map(|(_, a, o)| (x_of(a), y(o))).collect(),
    };
    let target = cli.target;
    let panels = vec![
        svg::Panel {
            title: "DynamoDB requests per order".into(),
            y_label: "requests / placed order".into(),
            goal: Some(1.3),
            lines: designs.iter().map(|d| line(*d, &|o| requests_per_order(o, target))).collect(),
        },
        svg::Panel {
            title: "Wait at ≥ $10, p99 (ms)".into(),
            y_label: "ms".into(),
            goal: Some(100.0),
            lines: designs.iter().map(|d| line(*d, &|o| ms(o.waits.percentile(99.0)))).collect(),
        },
        svg::Panel {
            title: "Placement p99 (ms)".into(),
            y_label: "ms".into(),
            goal: Some(100.0),
            lines: designs.iter().map(|d| line(*d, &|o| ms(percentile(&o.latencies, 99.0)))).collect(),
        },
    ];
    let x_label = if cli.writers.is_empty() { "orders/s offered (Poisson)" } else { "writers (back to back)" };
    let caption = format!(
        "bench/hot-coin.sh --rates {} --coins {} --seconds {} (model: transactions {}/{} ms median/p99)",
        cli.rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(","),
        cli.coins,
        cli.seconds,
        cli.tx_median_ms,
        cli.tx_p99_ms
    );
    std::fs::write(path, svg::chart(&panels, x_label, &caption)).unwrap();
    eprintln!("wrote {}", path.display());
}
