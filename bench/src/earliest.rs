//! "At the earliest possible time", measured per order: how long each
//! pooled order waited, unbatched, while its coin's pooled money (this
//! order's included) was at or above the minimum. One pool scores 0 for
//! every order: the order that brings it to the minimum closes it. Replayed
//! from the transactions that committed, in the order they did.
//!
//! The wait is the time the coin held the minimum or more while the order
//! was pending, added up: if a batch forms without it and what is left falls
//! under the minimum, the order is no longer late (one pool would be holding
//! it too) until the coin reaches the minimum again.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use rust_decimal::Decimal;
use shared::adapters::dynamodb::item::parse_shard_partition;
use shared::adapters::dynamodb::table::{Cond, Item, Write};
use testkit::recording::Committed;
use tokio::time::Instant;

fn text(item: &Item, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    }
}

fn number(value: &AttributeValue) -> Decimal {
    match value {
        AttributeValue::N(n) => Decimal::from_str(n).unwrap_or_default(),
        _ => Decimal::ZERO,
    }
}

fn count(value: &AttributeValue) -> u64 {
    u64::try_from(number(value)).unwrap_or(0)
}

/// The `seq` a condition requires, if it does.
fn seq_of(condition: Option<&Cond>) -> Option<u64> {
    match condition? {
        Cond::Cmp(name, _, value) if name == "seq" => Some(count(value)),
        Cond::And(all) => all.iter().find_map(|c| seq_of(Some(c))),
        _ => None,
    }
}

type PoolKey = (String, u64);

#[derive(Default)]
struct Pool {
    usd: Decimal,
    /// The coin's eligible clock when each order joined, and whether it
    /// joined during the load.
    joins: Vec<(Duration, bool)>,
}

#[derive(Default)]
struct CoinClock {
    total: Decimal,
    /// Time spent at or above the minimum, up to `at`.
    eligible: Duration,
    at: Option<Instant>,
    /// `eligible` when the load stopped.
    at_load_end: Option<Duration>,
}

impl CoinClock {
    fn advance(&mut self, to: Instant, minimum: Decimal) {
        if let Some(at) = self.at
            && self.total >= minimum
        {
            self.eligible += to.saturating_duration_since(at);
        }
        self.at = Some(to);
    }
}

/// What the replay found.
#[derive(Debug, Default)]
pub struct Waits {
    /// Of pooled orders that joined during the load and are in a batch
    /// now, each one's wait, sorted.
    pub during_load: Vec<Duration>,
    /// Pooled orders still pending when the load stopped.
    pub leftovers: usize,
    /// Of those, the longest time from the load's end to its batch,
    /// counting only the time its coin held the minimum.
    pub after_load_longest: Duration,
    /// Orders still pending at the end of the run while their coin held the
    /// minimum: money that should have been bought.
    pub stranded: usize,
    /// The waits during the load by coin (`HOT_COIN_DEBUG`).
    pub by_coin: HashMap<String, Vec<Duration>>,
}

impl Waits {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.during_load.is_empty() {
            return Duration::ZERO;
        }
        let index = (((self.during_load.len() - 1) as f64) * p / 100.0).round() as usize;
        self.during_load[index]
    }

    pub fn share_over(&self, limit: Duration) -> f64 {
        let over = self.during_load.iter().filter(|w| **w > limit).count();
        over as f64 / self.during_load.len().max(1) as f64
    }
}

/// Replays `log` (committed transactions with the time they committed).
/// Orders that joined from `from` to `load_end` count; the leftovers are
/// those pending at `load_end`.
pub fn replay(log: &[Committed], minimum: Decimal, from: Instant, load_end: Instant, end: Instant) -> Waits {
    let mut entries: Vec<&Committed> = log.iter().filter(|c| c.at <= end).collect();
    entries.sort_by_key(|c| c.at);
    let mut coins: HashMap<String, CoinClock> = HashMap::new();
    let mut pools: HashMap<PoolKey, Pool> = HashMap::new();
    let mut forming: HashMap<String, Vec<(String, Pool)>> = HashMap::new();
    let mut waits = Waits::default();
    let mut load_over = false;
    for committed in entries {
        if !load_over && committed.at > load_end {
            load_over = true;
            for clock in coins.values_mut() {
                clock.advance(load_end, minimum);
                clock.at_load_end = Some(clock.eligible);
            }
            waits.leftovers = pools.values().map(|p| p.joins.len()).sum();
        }
        let during = committed.at >= from && committed.at <= load_end;
        let mut joined: Vec<PoolKey> = Vec::new();
        let mut closed: Vec<PoolKey> = Vec::new();
        let mut crossing: Option<PoolKey> = None;
        // A batch still forming (the sweep gathering it over several
        // transactions): its pools wait in it until it is ready.
        let mut gathering: Option<(String, bool)> = None;
        for write in &committed.writes {
            match write {
                Write::Put { item, .. }
                    if text(item, "PK").starts_with("BATCH#") && text(item, "status") == "FORMING" =>
                {
                    gathering = Some((text(item, "PK"), false));
                }
                Write::Update { key, changes, .. }
                    if text(key, "PK").starts_with("BATCH#") && changes.add.iter().any(|(n, _)| *n == "usd") =>
                {
                    let ready = changes
                        .set
                        .iter()
                        .any(|(n, v)| *n == "status" && matches!(v, AttributeValue::S(s) if s == "READY"));
                    gathering = Some((text(key, "PK"), ready));
                }
                Write::Update { key, changes, condition } if text(key, "SK") == "POOL" => {
                    let pk = text(key, "PK");
                    let Some((coin, _)) = parse_shard_partition(&pk) else { continue };
                    let clock = coins.entry(coin.as_str().to_owned()).or_default();
                    clock.advance(committed.at, minimum);
                    if let Some((_, add)) = changes.add.iter().find(|(name, _)| *name == "usd") {
                        let seq = seq_of(condition.as_ref())
                            .or_else(|| changes.set.iter().find(|(n, _)| *n == "seq").map(|(_, v)| count(v)))
                            .unwrap_or(0);
                        let cost = number(add);
                        clock.total += cost;
                        let pool = pools.entry((pk.clone(), seq)).or_default();
                        pool.usd += cost;
                        pool.joins.push((clock.eligible, during));
                        joined.push((pk, seq));
                    } else if changes.set.iter().any(|(name, _)| *name == "usd") {
                        let seq = seq_of(condition.as_ref())
                            .or_else(|| changes.set.iter().find(|(n, _)| *n == "seq").map(|(_, v)| count(v) - 1))
                            .unwrap_or(0);
                        closed.push((pk, seq));
                    }
                }
                Write::Put { item, .. } if text(item, "SK").starts_with("ORDER#") && item.contains_key("seq") => {
                    let shard = item.get("shard").map_or(0, count);
                    let seq = item.get("seq").map_or(0, count);
                    let coin = text(item, "coin");
                    let pk = if shard == 0 { format!("COIN#{coin}") } else { format!("COIN#{coin}#{shard}") };
                    crossing = Some((pk, seq));
                }
                _ => {}
            }
        }
        // An order that closed its own pool joined and was batched at once.
        if crossing.is_some_and(|pool| !joined.contains(&pool)) && during {
            waits.during_load.push(Duration::ZERO);
        }
        let mut batched: Vec<(String, Pool)> = Vec::new();
        for key in closed {
            if let Some(pool) = pools.remove(&key) {
                batched.push((key.0, pool));
            }
        }
        if let Some((batch, ready)) = gathering {
            let parked = forming.entry(batch.clone()).or_default();
            parked.append(&mut batched);
            if ready {
                batched = forming.remove(&batch).unwrap_or_default();
            }
        }
        for (pk, pool) in batched {
            let Some((coin, _)) = parse_shard_partition(&pk) else { continue };
            let clock = coins.entry(coin.as_str().to_owned()).or_default();
            clock.advance(committed.at, minimum);
            clock.total -= pool.usd;
            for (joined_at, during) in pool.joins {
                let wait = clock.eligible.saturating_sub(joined_at);
                if during {
                    waits.during_load.push(wait);
                    waits.by_coin.entry(coin.as_str().to_owned()).or_default().push(wait);
                }
                if let Some(at_end) = clock.at_load_end {
                    let after = clock.eligible.saturating_sub(at_end.max(joined_at));
                    waits.after_load_longest = waits.after_load_longest.max(after);
                }
            }
        }
    }
    if !load_over {
        waits.leftovers = pools.values().map(|p| p.joins.len()).sum();
    }
    let parked = forming.values().flatten().map(|(pk, pool)| (pk, pool));
    for (pk, pool) in pools.iter().map(|((pk, _), pool)| (pk, pool)).chain(parked) {
        let Some((coin, _)) = parse_shard_partition(pk) else { continue };
        if coins.get(coin.as_str()).is_some_and(|c| c.total >= minimum) {
            waits.stranded += pool.joins.len();
        }
    }
    waits.during_load.sort();
    waits
}
