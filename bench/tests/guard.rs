//! The regression guard: short, seeded runs of the model (virtual time, so
//! not timed tests) that fail when the design's figures move past its
//! goals. A change that made every new shard write one shared item (the
//! coin registry written with each) took one coin at 2,000 orders a second
//! to 4 % busy and 3.27 requests an order: this would have failed on it.
//! The README's figures come from longer runs (`docs/performance.md`); this
//! keeps them honest between measurements. A run this short starts cold
//! (every instance's first look at each coin falls inside it), so its
//! bounds sit above the long runs' figures (1.23 requests an order and a
//! p99 of 245 ms for one coin; 1.72 and 532 ms for twenty coins, at the
//! commit that set them), and below what a regression like the one above
//! makes of them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hot_coin::run::{Arrivals, Outcome, Setup, point};
use hot_coin::traffic::Mix;

fn run(setup: Setup) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(point(&setup))
}

fn per_order(n: u64, outcome: &Outcome) -> f64 {
    n as f64 / outcome.placed.max(1) as f64
}

fn check(name: &str, outcome: &Outcome, max_requests: f64, max_wait_p99: Duration) {
    let requests = per_order(outcome.placement.total().requests, outcome);
    let wait = outcome.waits.percentile(99.0);
    let summary = format!(
        "{name}: {} placed, {} busy, {} refused by Lambda, {requests:.3} requests an order, wait at ≥ $10 p99 {wait:?}, {} stranded, audit problems {}",
        outcome.placed, outcome.busy, outcome.lambda_throttled, outcome.waits.stranded, outcome.audit_problems
    );
    println!("{summary}");
    assert!(outcome.placed > 0, "{summary}");
    assert_eq!((outcome.busy, outcome.lambda_throttled, outcome.failed), (0, 0, 0), "{summary}");
    assert_eq!((outcome.audit_problems, outcome.waits.stranded), (0, 0), "{summary}");
    assert!(requests <= max_requests, "{summary}: more than {max_requests} requests an order");
    assert!(wait <= max_wait_p99, "{summary}: waits past {max_wait_p99:?}");
}

/// One hot coin, 2,000 orders a second at random, $1 to $8.
#[test]
fn one_hot_coin_keeps_to_its_goals() {
    let mix = Mix::new(1, 10_000, 0.0, 0.0);
    let setup =
        Setup::model(Arrivals::Poisson { rate: 2000.0 }, mix, Duration::from_secs(1), Duration::from_secs(2), 40_000);
    check("one coin at 2,000/s", &run(setup), 1.35, Duration::from_millis(400));
}

/// Twenty coins (Zipf), a fifth of the orders $10 or more, 4,000 a second.
#[test]
fn many_coins_keep_to_their_goals() {
    let mix = Mix::new(20, 20_000, 0.2, 0.0);
    let setup =
        Setup::model(Arrivals::Poisson { rate: 4000.0 }, mix, Duration::from_secs(1), Duration::from_secs(2), 100_000);
    check("20 coins at 4,000/s", &run(setup), 2.0, Duration::from_millis(800));
}
