//! Which of a coin's shards close together, and when: the sweep's plan.
//!
//! A shard's own orders close it when they bring it to the minimum. Money
//! spread over several shards that holds the minimum only together has no
//! such order: the sweep gathers it. Money that has waited `due_after` on
//! a quiet shard (not written for `busy_within`) is due, and on a busy one
//! `busy_due_after`: a shard in use is likely to be closed by its own next
//! order, at no extra cost, and a close the sweep sends to it likely meets
//! that order's transaction and is cancelled. Each due shard, the oldest
//! money first, closes with the fullest other shards (quiet ones first)
//! into one batch of at least the minimum, in one transaction
//! ([`SHARDS_PER_CLOSE`] shards at most).
//!
//! When the coin's shards hold the minimum together but no one
//! transaction's worth of them does (crumbs left on many shards after a
//! rally), the plan moves the smallest shards' orders into the fullest one
//! instead: every move is one transaction that leaves all of the money in
//! open pools, and the shards that hold it fewer, until one close takes
//! them. No batch is ever gathered over several transactions.

use time::OffsetDateTime;

use super::{SHARDS_PER_CLOSE, ShardPool, held};
use crate::domain::money::Usd;

/// How the sweep decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRules {
    /// Money that has waited this long on a quiet shard is due.
    pub due_after: time::Duration,
    /// A shard written within this long is in use.
    pub busy_within: time::Duration,
    /// Money that has waited this long on a shard in use is due.
    pub busy_due_after: time::Duration,
    /// Shards one close takes at most.
    pub per_close: usize,
    /// Writes one move makes at most besides its target: one per shard
    /// emptied and one per order moved (each order records its shard).
    pub move_writes: u32,
}

impl Default for SweepRules {
    fn default() -> Self {
        SweepRules {
            due_after: time::Duration::milliseconds(50),
            busy_within: time::Duration::milliseconds(50),
            busy_due_after: time::Duration::milliseconds(200),
            per_close: SHARDS_PER_CLOSE,
            move_writes: 98,
        }
    }
}

/// One transaction of a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepStep {
    /// These shards hold the minimum together: one batch takes them all.
    Close(Vec<u32>),
    /// Every order of `from` moves to `into`, which stays under the minimum.
    Move { into: u32, from: Vec<u32> },
}

/// The fullest first; ties by shard, so every sweep orders them alike.
fn fullest_first(pools: &mut [&ShardPool]) {
    pools.sort_by(|a, b| b.usd.cmp(&a.usd).then(a.shard.cmp(&b.shard)));
}

/// What the sweep does with a coin's shards as read at `now`: disjoint
/// closes, each of the minimum or more; or, when only crumbs are due, one
/// move. Empty when nothing is due or the coin holds less than the minimum.
pub fn plan(pools: &[ShardPool], minimum: Usd, now: OffsetDateTime, rules: &SweepRules) -> Vec<SweepStep> {
    let mut left: Vec<&ShardPool> = pools.iter().filter(|p| p.holds_money()).collect();
    let busy = |pool: &ShardPool| pool.written_at.is_some_and(|at| at > now - rules.busy_within);
    let due = |pool: &ShardPool| {
        let after = if busy(pool) { rules.busy_due_after } else { rules.due_after };
        pool.oldest().is_some_and(|oldest| oldest <= now - after)
    };
    let mut steps = Vec::new();
    loop {
        if held(&left).is_none_or(|total| total < minimum) {
            return steps;
        }
        // The oldest due money first.
        let Some(first) = left.iter().filter(|p| due(p)).min_by_key(|p| (p.oldest(), p.shard)).copied() else {
            return steps;
        };
        let mut others: Vec<&ShardPool> = left.iter().filter(|p| p.shard != first.shard).copied().collect();
        fullest_first(&mut others);
        // Quiet partners first: a busy shard's close likely meets its own
        // next order.
        others.sort_by_key(|p| busy(p));
        let mut group = vec![first];
        let mut usd = first.usd;
        for pool in &others {
            if usd >= minimum || group.len() >= rules.per_close.max(1) {
                break;
            }
            let Some(more) = usd.checked_add(pool.usd) else { break };
            usd = more;
            group.push(pool);
        }
        if usd < minimum {
            // The coin holds the minimum, but not in one close's worth of
            // shards: gather the crumbs first.
            steps.extend(gather(&left, minimum, rules));
            return steps;
        }
        let taken: Vec<u32> = group.iter().map(|p| p.shard).collect();
        left.retain(|p| !taken.contains(&p.shard));
        steps.push(SweepStep::Close(taken));
    }
}

/// One move: the smallest shards' orders into the fullest shard, as many as
/// one transaction writes, keeping it under the minimum.
fn gather(pools: &[&ShardPool], minimum: Usd, rules: &SweepRules) -> Option<SweepStep> {
    let mut by_size = pools.to_vec();
    fullest_first(&mut by_size);
    let (into, rest) = by_size.split_first()?;
    let mut usd = into.usd;
    let mut writes = 0u32;
    let mut from = Vec::new();
    for pool in rest.iter().rev() {
        let cost = pool.count.saturating_add(1);
        let Some(after) = usd.checked_add(pool.usd) else { continue };
        if after >= minimum || writes.saturating_add(cost) > rules.move_writes {
            continue;
        }
        usd = after;
        writes += cost;
        from.push(pool.shard);
    }
    (!from.is_empty()).then_some(SweepStep::Move { into: into.shard, from })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::pooling::testing::{at_ms, shard, usd};

    const NOW: u64 = 1_000_000;

    fn plan_at(pools: &[ShardPool]) -> Vec<SweepStep> {
        plan(pools, usd("10"), at_ms(NOW), &SweepRules::default())
    }

    #[test]
    fn due_money_closes_with_the_fullest_shards_and_young_money_waits_for_its_own_orders() {
        // $2 waiting 500 ms on shard 1; $8 placed 10 ms ago on shard 2; $3 on shard 3.
        let pools = [shard(1, "2", 1, NOW - 500), shard(2, "8", 2, NOW - 10), shard(3, "3", 1, NOW - 10)];
        assert_eq!(plan_at(&pools), vec![SweepStep::Close(vec![1, 2])]);
        // Nothing due: the shards' own next orders close them.
        let young = [shard(1, "2", 1, NOW - 40), shard(2, "8", 2, NOW - 10)];
        assert_eq!(plan_at(&young), vec![]);
        // Money on a shard in use (written 10 ms ago) is left to it longer.
        let in_use = |oldest_ms: u64| {
            let mut busy = shard(1, "2", 1, NOW - oldest_ms);
            busy.written_at = Some(at_ms(NOW - 10));
            [busy, shard(2, "8", 2, NOW - 10)]
        };
        assert_eq!(plan_at(&in_use(100)), vec![]);
        assert_eq!(plan_at(&in_use(250)), vec![SweepStep::Close(vec![1, 2])]);
        // Due, but under the minimum together: it waits.
        let short = [shard(1, "2", 1, NOW - 500), shard(2, "7", 2, NOW - 10)];
        assert_eq!(plan_at(&short), vec![]);
    }

    #[test]
    fn several_batches_form_at_once_the_oldest_money_first() {
        let pools = [
            shard(1, "6", 1, NOW - 300),
            shard(2, "5", 1, NOW - 900),
            shard(3, "5", 1, NOW - 200),
            shard(4, "4", 1, NOW - 5),
            shard(5, "1", 1, NOW - 5),
        ];
        // Shard 2's money is the oldest: with the fullest (1); then 3 with 4 and 5.
        assert_eq!(plan_at(&pools), vec![SweepStep::Close(vec![2, 1]), SweepStep::Close(vec![3, 4, 5])]);
    }

    #[test]
    fn crumbs_on_more_shards_than_one_close_takes_are_moved_together_first() {
        // Sixty shards of $0.20: $12 together, $9.60 in the fullest 48.
        let crumbs: Vec<ShardPool> = (0..60).map(|i| shard(i, "0.2", 1, NOW - 1000 + u64::from(i))).collect();
        let steps = plan_at(&crumbs);
        let [SweepStep::Move { into, from }] = steps.as_slice() else { panic!("{steps:?}") };
        // Into the fullest (ties: the lowest shard), from the smallest, each
        // shard and its order a write, and the target stays under $10.
        assert_eq!(*into, 0);
        assert!(!from.contains(into) && from.len() == 48, "{from:?}");
    }

    #[test]
    fn an_empty_or_young_coin_is_left_alone() {
        assert_eq!(plan_at(&[]), vec![]);
        assert_eq!(plan_at(&[ShardPool::empty(0), ShardPool::empty(1)]), vec![]);
    }
}
