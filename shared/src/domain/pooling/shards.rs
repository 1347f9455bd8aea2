//! How many shards a coin's pool has, and which one an order tries.
//!
//! A coin starts with one shard: one pool, whose crossing order forms every
//! batch at once. DynamoDB cancels a transaction that touches an item
//! another transaction holds, so when a coin's orders come faster than one
//! item takes them (they meet on the shard, and are cancelled), it gets more
//! shards: that is the only thing that grows it. Joining a shard needs no
//! fresh view of it, so the number of processes writing a coin does not
//! matter, only how many of its transactions are in flight at once: the
//! coin's own arrival rate times a transaction's time. The count halves
//! every `shrink_after` since it last grew, without anyone writing, so it
//! follows that rate down as well as up.
//!
//! `high` is the most shards the coin has had: a shard above today's count
//! may still hold money, so the sweep reads up to it; once the count has
//! been down long enough that nobody can write those shards any more, and
//! they are empty, `high` comes down (see [`ShardCount::settles_at`]).

use std::time::Duration;

use time::OffsetDateTime;

/// A coin's shard count as recorded: what it last grew to, when, and the
/// most it ever had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardCount {
    pub grown_to: u32,
    /// When it grew, in ms since the epoch; `None`: it never did.
    pub grown_ms: Option<i64>,
    pub high: u32,
    /// Whether the record exists (a coin that never grew has none).
    pub exists: bool,
}

/// How the count moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRules {
    /// At most this many shards per coin; 1 keeps every coin on one item.
    pub max: u32,
    /// The count halves once per this long since it last grew.
    pub shrink_after: Duration,
    /// Conflicts one order meets in a row, moving shard each time, before
    /// it grows the count (a coin of one shard grows at its first). The
    /// count halves every `shrink_after` and grows by one such order: it
    /// settles where a few per cent of transactions meet.
    pub grow_after: u32,
    /// How long after the count fell below a shard nobody can write that
    /// shard any more: processes re-read the count and move off shards
    /// above it, an order retries for seconds, and DynamoDB refuses a
    /// request signed more than five minutes earlier.
    pub settle_after: time::Duration,
}

impl Default for ShardRules {
    fn default() -> Self {
        ShardRules {
            max: 1024,
            shrink_after: Duration::from_secs(2),
            grow_after: 2,
            settle_after: time::Duration::minutes(6),
        }
    }
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl ShardCount {
    /// A coin that never grew: one shard.
    pub const ONE: ShardCount = ShardCount { grown_to: 1, grown_ms: None, high: 1, exists: false };

    /// The count in force at `now`: halved once per `shrink_after` since it
    /// grew. (A count with no date is taken as long since grown.)
    pub fn at(&self, now: OffsetDateTime, rules: &ShardRules) -> u32 {
        let since_ms = self.grown_ms.map_or(i64::MAX, |grown| millis(now).saturating_sub(grown));
        let every_ms = i64::try_from(rules.shrink_after.as_millis()).unwrap_or(i64::MAX).max(1);
        let halvings = u32::try_from((since_ms.max(0) / every_ms).min(31)).unwrap_or(31);
        (self.grown_to >> halvings).clamp(1, rules.max.max(1))
    }

    /// The record once grown from `seen` at `now`: four times as many while
    /// there are few (a burst of new processes collides until there are
    /// about as many as transactions in flight), then twice. `None` when
    /// it cannot grow.
    pub fn grown(&self, seen: u32, now: OffsetDateTime, rules: &ShardRules) -> Option<ShardCount> {
        let factor = if seen < 64 { 4 } else { 2 };
        let wanted = seen.saturating_mul(factor).min(rules.max);
        (wanted > seen).then(|| ShardCount {
            grown_to: wanted,
            grown_ms: Some(millis(now)),
            high: self.high.max(wanted),
            exists: true,
        })
    }

    /// When the count in force fell to `count` or below, in ms since the
    /// epoch: `None` if it has not (it never grew, or grew to no more).
    fn fell_to_ms(&self, count: u32, rules: &ShardRules) -> Option<i64> {
        let grown = self.grown_ms?;
        let halvings = (0..32).find(|h| (self.grown_to >> h).max(1) <= count.max(1))?;
        let every_ms = i64::try_from(rules.shrink_after.as_millis()).unwrap_or(i64::MAX);
        Some(grown.saturating_add(every_ms.saturating_mul(i64::from(halvings))))
    }

    /// Whether `high` may come down to the count in force at `now`, and the
    /// record it comes down to: the count has been there `settle_after`, so
    /// nobody can write a shard above it any more. (The caller checks those
    /// shards are empty; the record is written only if unchanged.)
    pub fn settles_at(&self, now: OffsetDateTime, rules: &ShardRules) -> Option<ShardCount> {
        let count = self.at(now, rules);
        if self.high <= count {
            return None;
        }
        let fell = self.fell_to_ms(count, rules)?;
        let settled = millis(now).saturating_sub(fell) >= rules.settle_after.whole_milliseconds() as i64;
        settled.then_some(ShardCount { grown_to: count, grown_ms: Some(fell), high: count, exists: true })
    }

    /// Whether nobody can write shards at or above the count any more.
    pub fn above_count_settled(&self, now: OffsetDateTime, rules: &ShardRules) -> bool {
        let count = self.at(now, rules);
        self.fell_to_ms(count, rules)
            .is_some_and(|fell| millis(now).saturating_sub(fell) >= rules.settle_after.whole_milliseconds() as i64)
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
    fn the_count_halves_once_per_period_since_it_grew() {
        let record = ShardCount { grown_to: 1024, grown_ms: Some(1_000_000), high: 1024, exists: true };
        let count_at = |ms: u64| record.at(at_ms(ms), &rules());
        assert_eq!(count_at(1_000_000), 1024);
        assert_eq!(count_at(1_001_999), 1024);
        assert_eq!(count_at(1_002_000), 512);
        assert_eq!(count_at(1_007_999), 128);
        assert_eq!(count_at(1_020_000), 1);
        // Another process's clock a little behind the one that grew it.
        assert_eq!(count_at(999_990), 1024);
        assert_eq!(record.at(at_ms(1_000_000), &ShardRules { max: 256, ..rules() }), 256);
        let never_dated = ShardCount { grown_ms: None, ..record };
        assert_eq!(never_dated.at(at_ms(1_000_000), &rules()), 1);
    }

    #[test]
    fn the_count_grows_fourfold_while_small_then_twofold_up_to_the_most() {
        let now = at_ms(5_000);
        let one = ShardCount::ONE;
        assert_eq!(one.grown(1, now, &rules()).unwrap().grown_to, 4);
        assert_eq!(one.grown(64, now, &rules()).unwrap().grown_to, 128);
        let high = one.grown(512, now, &rules()).unwrap();
        assert_eq!((high.grown_to, high.high), (1024, 1024));
        assert_eq!(one.grown(1024, now, &rules()), None);
    }

    #[test]
    fn high_comes_down_only_once_nobody_can_write_above_the_count() {
        let record = ShardCount { grown_to: 128, grown_ms: Some(1_000_000), high: 128, exists: true };
        // Down to one 14 s after it grew; settled six minutes after that.
        assert_eq!(record.settles_at(at_ms(1_000_000 + 60_000), &rules()), None);
        let settled = record.settles_at(at_ms(1_000_000 + 14_000 + 360_000), &rules()).unwrap();
        assert_eq!((settled.grown_to, settled.high, settled.grown_ms), (1, 1, Some(1_014_000)));
        assert_eq!(settled.at(at_ms(2_000_000), &rules()), 1, "the same count in force from then on");
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
