//! How many shards a coin's pool has, and which one an order tries.
//!
//! A coin starts with one shard: one pool, whose crossing order forms every
//! batch at once. DynamoDB cancels a transaction that touches an item
//! another transaction holds, so one item takes only so many orders a
//! second; a coin whose orders come faster needs more shards. How many
//! follows the coin's own arrival rate: joining a shard needs no fresh view
//! of it (see `placement`), so the number of processes writing a coin does
//! not matter, only how many of its transactions are in flight at once.
//!
//! - The sweep measures each coin's rate (every write of a shard moves its
//!   version) and sets the count to what that rate needs ([`wanted`]): up at
//!   once, down once it needs half as many or fewer.
//! - A coin the sweep does not read yet (one shard: nothing to gather)
//!   grows when orders collide on it ([`ShardCount::grown`]): the first
//!   collision on a single shard, or `grow_after` in a row on any.
//!
//! `high` is the most shards the coin has had: a shard above today's count
//! may still hold money, so the sweep reads up to it; once the count has
//! been lower for `settle_after` (nobody can write those shards any more)
//! and they are empty, `high` comes down ([`ShardCount::settles_at`]).

use time::OffsetDateTime;

/// A coin's shard count as recorded: the count, when it was last set, and
/// the most the coin ever had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardCount {
    pub count: u32,
    /// When it was last set, in ms since the epoch; `None`: never.
    pub set_ms: Option<i64>,
    pub high: u32,
    /// Whether the record exists (a coin that never grew has none).
    pub exists: bool,
}

/// How the count moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardRules {
    /// At most this many shards per coin; 1 keeps every coin on one item.
    pub max: u32,
    /// Orders a second one shard takes (with DynamoDB's transactions of
    /// about 10 ms, a few per cent of them then meet another on the item).
    pub per_shard: f64,
    /// Collisions one order meets in a row, moving shard each time, before
    /// it grows the count (a coin of one shard grows at its first).
    pub grow_after: u32,
    /// How long after the count fell below a shard nobody can write that
    /// shard any more: processes re-read the count every minute and move
    /// off shards above it, an order retries for seconds, and DynamoDB
    /// refuses a request signed more than five minutes earlier.
    pub settle_after: time::Duration,
}

impl Default for ShardRules {
    fn default() -> Self {
        ShardRules { max: 1024, per_shard: 10.0, grow_after: 3, settle_after: time::Duration::minutes(7) }
    }
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The shards a coin placing `rate` orders a second needs.
pub fn wanted(rate: f64, rules: &ShardRules) -> u32 {
    let shards = (rate / rules.per_shard.max(f64::MIN_POSITIVE)).ceil();
    if shards.is_nan() || shards < 1.0 {
        return 1;
    }
    (shards.min(f64::from(rules.max.max(1)))) as u32
}

impl ShardCount {
    /// A coin that never grew: one shard.
    pub const ONE: ShardCount = ShardCount { count: 1, set_ms: None, high: 1, exists: false };

    /// The count in force.
    pub fn now(&self, rules: &ShardRules) -> u32 {
        self.count.clamp(1, rules.max.max(1))
    }

    /// The record set to `count` at `now` (`high` no lower than it).
    pub fn set_to(&self, count: u32, now: OffsetDateTime, rules: &ShardRules) -> ShardCount {
        let count = count.clamp(1, rules.max.max(1));
        ShardCount { count, set_ms: Some(millis(now)), high: self.high.max(count), exists: true }
    }

    /// The record once grown by collisions from `seen`: four times as many
    /// while there are few (a burst of new processes collides until there
    /// are about as many as transactions in flight), then twice. `None`
    /// when it cannot grow.
    pub fn grown(&self, seen: u32, now: OffsetDateTime, rules: &ShardRules) -> Option<ShardCount> {
        let factor = if seen < 64 { 4 } else { 2 };
        let wanted = seen.saturating_mul(factor).min(rules.max);
        (wanted > seen).then(|| self.set_to(wanted, now, rules))
    }

    /// The record the sweep writes for a coin that places `rate` orders a
    /// second: `None` when the count is right (not under what the rate
    /// needs, nor twice as much or more).
    pub fn following(&self, rate: f64, now: OffsetDateTime, rules: &ShardRules) -> Option<ShardCount> {
        let count = self.now(rules);
        let wanted = wanted(rate, rules);
        (wanted > count || wanted.saturating_mul(2) <= count).then(|| self.set_to(wanted, now, rules))
    }

    /// Whether `high` may come down to the count, and the record it comes
    /// down to: the count has been where it is for `settle_after`, so nobody
    /// can write a shard above it any more. (The caller checks those shards
    /// are empty; the record is written only if unchanged.)
    pub fn settles_at(&self, now: OffsetDateTime, rules: &ShardRules) -> Option<ShardCount> {
        let count = self.now(rules);
        if self.high <= count {
            return None;
        }
        let set = self.set_ms?;
        let settled = millis(now).saturating_sub(set) >= rules.settle_after.whole_milliseconds() as i64;
        settled.then_some(ShardCount { count, set_ms: Some(set), high: count, exists: true })
    }
}

/// Another shard than `not` among `0..count`, from `draw` (a number in
/// `0..count - 1`).
pub fn another_shard(count: u32, not: u32, draw: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    let pick = draw % (count - 1);
    if pick >= not { pick + 1 } else { pick }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::pooling::testing::at_ms;

    fn rules() -> ShardRules {
        ShardRules::default()
    }

    #[test]
    fn a_coin_needs_as_many_shards_as_its_rate_asks() {
        assert_eq!(wanted(0.0, &rules()), 1);
        assert_eq!(wanted(9.5, &rules()), 1);
        assert_eq!(wanted(31.0, &rules()), 4);
        assert_eq!(wanted(3085.0, &rules()), 309);
        assert_eq!(wanted(1e9, &rules()), 1024, "at most the most");
        assert_eq!(wanted(f64::NAN, &rules()), 1);
    }

    #[test]
    fn the_sweep_sets_the_count_up_at_once_and_down_once_half_would_do() {
        let now = at_ms(10_000);
        let record = ShardCount { count: 8, set_ms: Some(1_000), high: 8, exists: true };
        assert_eq!(record.following(75.0, now, &rules()), None, "eight is right for 75 a second");
        assert_eq!(record.following(41.0, now, &rules()), None, "five would do: not half");
        let down = record.following(40.0, now, &rules()).unwrap();
        assert_eq!((down.count, down.high, down.set_ms), (4, 8, Some(10_000)));
        let up = record.following(200.0, now, &rules()).unwrap();
        assert_eq!((up.count, up.high), (20, 20));
    }

    #[test]
    fn the_count_grows_fourfold_while_small_then_twofold_up_to_the_most() {
        let now = at_ms(5_000);
        let one = ShardCount::ONE;
        assert_eq!(one.grown(1, now, &rules()).unwrap().count, 4);
        assert_eq!(one.grown(64, now, &rules()).unwrap().count, 128);
        let high = one.grown(512, now, &rules()).unwrap();
        assert_eq!((high.count, high.high), (1024, 1024));
        assert_eq!(one.grown(1024, now, &rules()), None);
    }

    #[test]
    fn high_comes_down_only_once_nobody_can_write_above_the_count() {
        let record = ShardCount { count: 1, set_ms: Some(1_000_000), high: 128, exists: true };
        assert_eq!(record.settles_at(at_ms(1_000_000 + 60_000), &rules()), None);
        let settled = record.settles_at(at_ms(1_000_000 + 420_000), &rules()).unwrap();
        assert_eq!((settled.count, settled.high), (1, 1));
        assert_eq!(ShardCount::ONE.settles_at(at_ms(9_000_000), &rules()), None);
    }

    #[test]
    fn another_shard_is_never_the_one_left() {
        for count in 2..10 {
            for not in 0..count {
                for draw in 0..20 {
                    let pick = another_shard(count, not, draw);
                    assert!(pick < count && pick != not);
                }
            }
        }
        assert_eq!(another_shard(1, 0, 7), 0);
    }
}
