//! "At the earliest possible time", measured per order, from its arrival:
//! how long each pooled order waited, unbatched, while its coin's pooled
//! money (this order's included, from the moment it arrived) was at or above
//! the minimum. One pool scores 0 for an order it takes at once: the order
//! that brings it to the minimum closes it. Replayed from the transactions
//! that committed, in the order they did.
//!
//! The wait is the time the coin held the minimum or more while the order
//! was pending, added up: if a batch forms without it and what is left
//! falls under the minimum, the order is no longer late (one pool would be
//! holding it too) until the coin reaches the minimum again. Before its own
//! transaction commits (the placement's time, retries included), the order
//! counts as held with the coin's committed money. An order still pending
//! when the run ends counts with its wait so far.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use rust_decimal::Decimal;
use shared::adapters::dynamodb::item::{CLOSED_PREFIX, parse_shard_partition};
use shared::adapters::dynamodb::table::{Item, Write};
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

/// The orders an item lists as members (`m:{order id}`).
fn members(item: &Item) -> impl Iterator<Item = &str> {
    item.keys().filter_map(|name| name.strip_prefix("m:"))
}

/// How long, over history, an order was held with the coin's money.
#[derive(Default)]
struct CoinClock {
    total: Decimal,
    /// Time spent at or above the minimum, up to `at`.
    eligible: Duration,
    at: Option<Instant>,
    /// `eligible` when the load stopped.
    at_load_end: Option<Duration>,
    /// The last few seconds of totals (when each changed, and to what): an
    /// order's wait before its own commit is read from them.
    recent: VecDeque<(Instant, Decimal)>,
}

/// How far back `recent` goes: longer than any placement takes.
const RECENT: Duration = Duration::from_secs(10);

impl CoinClock {
    fn advance(&mut self, to: Instant, minimum: Decimal) {
        if let Some(at) = self.at
            && self.total >= minimum
        {
            self.eligible += to.saturating_duration_since(at);
        }
        self.at = Some(to.max(self.at.unwrap_or(to)));
    }

    fn change(&mut self, at: Instant, by: Decimal) {
        self.total += by;
        self.recent.push_back((at, self.total));
        while self.recent.front().is_some_and(|(t, _)| at.saturating_duration_since(*t) > RECENT) {
            self.recent.pop_front();
        }
    }

    /// The time from `from` to `to` during which the coin's committed money
    /// and `cost` held the minimum together.
    fn held_with(&self, from: Instant, to: Instant, cost: Decimal, minimum: Decimal) -> Duration {
        let mut held = Duration::ZERO;
        let before = self.recent.iter().take_while(|(t, _)| *t <= from).last().map(|(_, total)| *total);
        let mut total = before.unwrap_or(Decimal::ZERO);
        let mut at = from;
        for (t, after) in self.recent.iter().filter(|(t, _)| *t > from && *t <= to) {
            if total + cost >= minimum {
                held += t.saturating_duration_since(at);
            }
            (at, total) = (*t, *after);
        }
        if total + cost >= minimum {
            held += to.saturating_duration_since(at);
        }
        held
    }
}

/// A pooled order not batched yet.
struct Pending {
    coin: String,
    cost: Decimal,
    /// Its coin's eligible clock when it joined.
    joined_at: Duration,
    /// Its wait before its transaction committed.
    before_commit: Duration,
    measured: bool,
}

/// What the replay found.
#[derive(Debug, Default)]
pub struct Waits {
    /// Of pooled orders that arrived during the measured load, each one's
    /// wait (still pending at the end: its wait so far), sorted.
    pub during_load: Vec<Duration>,
    /// Of those, how many were never batched.
    pub never_batched: usize,
    /// Pooled orders still pending when the load stopped.
    pub leftovers: usize,
    /// Of those, the longest time from the load's end to its batch,
    /// counting only the time its coin held the minimum.
    pub after_load_longest: Duration,
    /// Orders still pending at the end of the run while their coin held the
    /// minimum: money that should have been bought.
    pub stranded: usize,
    /// The waits during the load by coin.
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

    fn record(&mut self, coin: &str, wait: Duration) {
        self.during_load.push(wait);
        self.by_coin.entry(coin.to_owned()).or_default().push(wait);
    }
}

/// What one committed transaction did to pooled orders.
#[derive(Default)]
struct Effects {
    /// A pooled order placed: id, coin, cost. (One that closed its pool is
    /// also among the members of the record the same transaction put.)
    placed: Option<(String, String, Decimal)>,
    /// Orders a closed pool's record lists: batched now.
    batched: Vec<(String, String)>,
    /// Orders taken out of their pool by a cancel.
    canceled: Vec<String>,
}

fn effects(writes: &[Write]) -> Effects {
    let mut effects = Effects::default();
    for write in writes {
        match write {
            Write::Put { item, .. } if text(item, "SK").starts_with("ORDER#") => {
                let cost = item.get("cost").map(number).unwrap_or_default();
                if item.contains_key("shard") {
                    effects.placed = Some((text(item, "order_id"), text(item, "coin"), cost));
                }
            }
            Write::Put { item, .. } if text(item, "SK").starts_with(CLOSED_PREFIX) => {
                let Some((coin, _)) = parse_shard_partition(&text(item, "PK")) else { continue };
                effects.batched.extend(members(item).map(|order| (order.to_owned(), coin.as_str().to_owned())));
            }
            // A cancel marks its order (a close also takes members out of
            // their pool, into its record).
            Write::Update { key, changes, .. }
                if text(key, "SK").starts_with("ORDER#")
                    && changes.set.iter().any(|(name, _)| name == "canceled_at") =>
            {
                effects.canceled.push(text(key, "SK")["ORDER#".len()..].to_owned());
            }
            _ => {}
        }
    }
    effects
}

/// Replays `log` (committed transactions with the time they committed).
/// `arrivals` holds when each order arrived; orders that arrived from
/// `from` to `load_end` are measured; the leftovers are those pending at
/// `load_end`; `end` is when the run stopped.
pub fn replay(
    log: &[Committed],
    arrivals: &HashMap<String, Instant>,
    minimum: Decimal,
    from: Instant,
    load_end: Instant,
    end: Instant,
) -> Waits {
    let mut entries: Vec<&Committed> = log.iter().filter(|c| c.at <= end).collect();
    entries.sort_by_key(|c| c.at);
    let mut coins: HashMap<String, CoinClock> = HashMap::new();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut waits = Waits::default();
    let mut load_over = false;
    for committed in entries {
        let at = committed.at;
        if !load_over && at > load_end {
            load_over = true;
            for clock in coins.values_mut() {
                clock.advance(load_end, minimum);
                clock.at_load_end = Some(clock.eligible);
            }
            waits.leftovers = pending.len();
        }
        let effects = effects(&committed.writes);
        if let Some((order, coin, cost)) = effects.placed {
            let clock = coins.entry(coin.clone()).or_default();
            clock.advance(at, minimum);
            let arrived = arrivals.get(&order).copied();
            let measured = arrived.is_some_and(|t| t >= from && t <= load_end);
            let before_commit = arrived.map_or(Duration::ZERO, |t| clock.held_with(t, at, cost, minimum));
            clock.change(at, cost);
            pending.insert(order, Pending { coin, cost, joined_at: clock.eligible, before_commit, measured });
        }
        for order in effects.canceled {
            if let Some(gone) = pending.remove(&order) {
                let clock = coins.entry(gone.coin.clone()).or_default();
                clock.advance(at, minimum);
                clock.change(at, -gone.cost);
            }
        }
        for (order, coin) in effects.batched {
            let Some(done) = pending.remove(&order) else { continue };
            let clock = coins.entry(coin.clone()).or_default();
            clock.advance(at, minimum);
            clock.change(at, -done.cost);
            let wait = done.before_commit + clock.eligible.saturating_sub(done.joined_at);
            if done.measured {
                waits.record(&coin, wait);
            }
            if let Some(at_end) = clock.at_load_end {
                let after = clock.eligible.saturating_sub(at_end.max(done.joined_at));
                waits.after_load_longest = waits.after_load_longest.max(after);
            }
        }
    }
    if !load_over {
        waits.leftovers = pending.len();
    }
    for clock in coins.values_mut() {
        clock.advance(end, minimum);
    }
    for order in pending.values() {
        let clock = &coins[&order.coin];
        if order.measured {
            waits.record(&order.coin, order.before_commit + clock.eligible.saturating_sub(order.joined_at));
            waits.never_batched += 1;
        }
        if clock.total >= minimum {
            waits.stranded += 1;
        }
    }
    waits.during_load.sort();
    waits
}
