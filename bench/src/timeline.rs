//! When the coin's pooled orders reached the minimum, and how long they
//! then waited for a batch: replayed from the writes that went through.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use rust_decimal::Decimal;
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

/// What the replay found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Waits {
    pub batches: usize,
    /// The longest time the coin's pooled orders stayed at or above the
    /// minimum with no batch forming (until one did, or the load stopped).
    pub longest_wait: Duration,
}

/// Replays `log` (in the order the writes went through) up to `end`,
/// counting the batches and waits that end from `from` on (a wait that
/// began before counts whole).
pub fn waits(log: &[Committed], minimum: Decimal, from: Instant, end: Instant) -> Waits {
    let mut pools: HashMap<String, Decimal> = HashMap::new();
    let mut result = Waits::default();
    let mut waiting_since: Option<Instant> = None;
    let mut entries: Vec<&Committed> = log.iter().collect();
    entries.sort_by_key(|c| c.at);
    for committed in entries.into_iter().take_while(|c| c.at <= end) {
        let counts = committed.at >= from;
        let (mut formed, mut pooled) = (false, false);
        for write in &committed.writes {
            match write {
                Write::Update { key, changes, .. } if text(key, "SK") == "POOL" => {
                    pooled = true;
                    let usd = pools.entry(text(key, "PK")).or_default();
                    for (name, value) in &changes.set {
                        if *name == "usd" {
                            *usd = number(value);
                        }
                    }
                    for (name, value) in &changes.add {
                        if *name == "usd" {
                            *usd += number(value);
                        }
                    }
                }
                Write::Put { item, .. } if text(item, "PK").starts_with("BATCH#") => formed = true,
                _ => {}
            }
        }
        // A batch of pooled orders (an order bought alone takes nothing from a pool).
        if formed && pooled {
            if counts {
                result.batches += 1;
            }
            if let Some(since) = waiting_since.take().filter(|_| counts) {
                let wait = committed.at.duration_since(since);
                if wait > result.longest_wait && std::env::var("HOT_COIN_DEBUG").is_ok() {
                    let first = log.iter().map(|c| c.at).min().unwrap_or(since);
                    let during = log.iter().filter(|c| c.at > since && c.at < committed.at).count();
                    eprintln!(
                        "wait {wait:?} from {:?} after the first write; {during} writes went through meanwhile",
                        since.duration_since(first)
                    );
                }
                result.longest_wait = result.longest_wait.max(wait);
            }
        }
        let pending: Decimal = pools.values().sum();
        if pending >= minimum && waiting_since.is_none() {
            waiting_since = Some(committed.at);
        } else if pending < minimum {
            waiting_since = None;
        }
    }
    if let Some(since) = waiting_since {
        result.longest_wait = result.longest_wait.max(end.saturating_duration_since(since));
    }
    result
}
