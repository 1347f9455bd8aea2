//! The rules the model applies, each with where it comes from. The same
//! text, with the figures, is in `docs/scale.md`: change both together.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

/// How long one kind of request takes: log-normal, given by its median and
/// its 99th percentile, capped at five times the latter (a request that
/// slow has long timed out in the SDK).
///
/// AWS publishes no latency distribution for DynamoDB beyond "single-digit
/// millisecond" for single-item operations (*What is Amazon DynamoDB?*),
/// and the paper on its transactions (Idziorek et al., *Distributed
/// Transactions at Scale in Amazon DynamoDB*, USENIX ATC 2023) plots
/// latencies without units. The defaults are therefore assumptions, on the
/// pessimistic side of what public measurements from inside a region
/// report, and every figure the bench prints names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub median: Duration,
    pub p99: Duration,
}

impl Latency {
    pub const fn ms(median: u64, p99: u64) -> Latency {
        Latency { median: Duration::from_millis(median), p99: Duration::from_millis(p99) }
    }

    /// One draw. The standard normal comes from Box–Muller on the model's
    /// own seeded generator, so a run replays exactly.
    pub fn sample(&self, rng: &mut StdRng) -> Duration {
        let median = self.median.as_secs_f64();
        let p99 = self.p99.as_secs_f64().max(median);
        if median <= 0.0 {
            return Duration::ZERO;
        }
        // z of the 99th percentile of the standard normal.
        let sigma = (p99 / median).ln() / 2.326_348;
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random_range(0.0..1.0);
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let seconds = (median * (sigma * z).exp()).min(p99 * 5.0);
        Duration::from_secs_f64(seconds)
    }
}

/// What the model enforces and charges.
#[derive(Debug, Clone, Copy)]
pub struct ContentionRules {
    /// `TransactWriteItems`: how long it takes, and so how long it holds
    /// every item it writes or checks (the whole request: DynamoDB holds an
    /// item from its prepare to its commit, a part of the request the
    /// client cannot see, so this overstates the hold).
    pub transaction: Latency,
    /// A single-item write.
    pub single_write: Latency,
    /// `GetItem`, `BatchGetItem`, `Query`, `Scan`.
    pub read: Latency,
    /// What a transaction's time grows by per item past the third, as a
    /// share of its drawn time: DynamoDB prepares and commits every item
    /// (Idziorek et al.: the coordinator's two phases go to each item's
    /// storage node), so a transaction of 97 items is slower than one of 3.
    /// The share is an assumption (4 %: 97 items take 4.8 times as long).
    pub per_item: f64,
    /// A request refused (a conflict, a throttle) still makes its round
    /// trip before its answer arrives: this long (drawn like a read).
    pub refusal: Latency,
    /// Write units one partition (one partition key: a hot key is not split
    /// further) takes per second.
    pub partition_write_units: u64,
    /// Read units one partition takes per second.
    pub partition_read_units: u64,
    /// Write units one partition key of a global secondary index takes per
    /// second; an index over it throttles the table's write.
    pub index_partition_write_units: u64,
    /// Write units the whole table takes per second (its warm throughput;
    /// each index has as many of its own).
    pub table_write_units: u64,
    /// Read units the whole table takes per second.
    pub table_read_units: u64,
    /// The seed of the latency draws.
    pub seed: u64,
}

/// A new on-demand table: "up to 4,000 write request units and 12,000
/// read request units per second" (*DynamoDB throughput capacity*,
/// "Initial throughput for on-demand capacity mode"). It serves up to twice
/// its previous peak at once and grows past that over about 30 minutes
/// (same page), or is warmed ahead with `WarmThroughput` (*Understanding
/// DynamoDB warm throughput*), up to the table's quota: 40,000 of each by
/// default, raised on request (*Service, account, and table quotas*).
pub const NEW_TABLE_WRITE_UNITS: u64 = 4_000;
pub const NEW_TABLE_READ_UNITS: u64 = 12_000;
/// The default per-table quota of an account.
pub const TABLE_QUOTA_UNITS: u64 = 40_000;

impl Default for ContentionRules {
    fn default() -> Self {
        ContentionRules {
            transaction: Latency::ms(10, 30),
            single_write: Latency::ms(4, 12),
            read: Latency::ms(3, 9),
            per_item: 0.04,
            refusal: Latency::ms(3, 9),
            // "A single partition can support a maximum of 3,000 read units
            // or 1,000 write units" (*Partitions and data distribution*,
            // *Best practices for designing and using partition keys*);
            // the same for each partition of a global secondary index
            // (*Global secondary indexes: throughput considerations*).
            partition_write_units: 1_000,
            partition_read_units: 3_000,
            index_partition_write_units: 1_000,
            table_write_units: NEW_TABLE_WRITE_UNITS,
            table_read_units: NEW_TABLE_READ_UNITS,
            seed: 0,
        }
    }
}

impl ContentionRules {
    /// Every request takes exactly its median: for tests that reason about
    /// one interleaving.
    pub fn fixed(mut self) -> ContentionRules {
        for latency in [&mut self.transaction, &mut self.single_write, &mut self.read, &mut self.refusal] {
            latency.p99 = latency.median;
        }
        self
    }

    /// A table warmed to `units` write units per second (and three times as
    /// many read units, the ratio of a new table's).
    pub fn warmed_to(self, units: u64) -> ContentionRules {
        ContentionRules { table_write_units: units, table_read_units: units * 3, ..self }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn draws_have_the_stated_median_and_tail() {
        let latency = Latency::ms(10, 30);
        let mut rng = StdRng::seed_from_u64(7);
        let mut draws: Vec<Duration> = (0..20_000).map(|_| latency.sample(&mut rng)).collect();
        draws.sort();
        let at = |p: usize| draws[draws.len() * p / 100].as_secs_f64() * 1000.0;
        assert!((9.0..11.0).contains(&at(50)), "median {}", at(50));
        assert!((25.0..36.0).contains(&at(99)), "p99 {}", at(99));
    }
}
