//! The operator's bound on how long pooled money waits (`POOL_MAX_WAIT`):
//! once a coin's oldest pending order has waited longer, either the house
//! completes a batch with an order of its own (`top-up`), or the orders
//! that waited longer are canceled (`refund`).
//!
//! A top-up is the cheapest batch that takes the oldest money: the shard
//! holding the oldest order, with the fullest other shards one close takes,
//! completed by the house up to the minimum. The house pays the minimum
//! less what that group holds, once (one transaction), never more; a group
//! that holds the minimum already is the sweep's, at no cost to the house.

use rust_decimal::{Decimal, RoundingStrategy};
use time::OffsetDateTime;

use super::{Member, ShardPool, held};
use crate::domain::money::Usd;
use crate::domain::quantity::Quantity;

/// When the oldest of `pools` was placed.
pub fn oldest(pools: &[ShardPool]) -> Option<OffsetDateTime> {
    pools.iter().filter_map(ShardPool::oldest).min()
}

/// Whether money placed at `oldest` has waited longer than `max_wait`.
pub fn overdue(oldest: Option<OffsetDateTime>, max_wait: time::Duration, now: OffsetDateTime) -> bool {
    oldest.is_some_and(|oldest| now - oldest > max_wait)
}

/// The orders of `pools` that have waited longer than `max_wait` (the
/// refund policy cancels them), the oldest first.
pub fn overdue_members(pools: &[ShardPool], max_wait: time::Duration, now: OffsetDateTime) -> Vec<Member> {
    let mut members: Vec<Member> = pools
        .iter()
        .flat_map(|pool| pool.members.iter())
        .filter(|member| now - member.placed > max_wait)
        .cloned()
        .collect();
    members.sort();
    members
}

/// The shards a top-up closes, the one holding the oldest money first (the
/// house's order joins it), and what the house must add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpGroup {
    pub shards: Vec<u32>,
    pub held: Usd,
    /// The minimum less what the shards hold.
    pub gap: Usd,
}

/// The top-up that takes the oldest money: `None` when the coin holds
/// nothing, or when that money's group holds the minimum already (the
/// sweep closes it). At most `per_close` shards.
pub fn top_up_group(pools: &[ShardPool], minimum: Usd, per_close: usize) -> Option<TopUpGroup> {
    let holding: Vec<&ShardPool> = pools.iter().filter(|p| p.holds_money()).collect();
    let first = holding.iter().min_by_key(|p| (p.oldest(), p.shard)).copied()?;
    let mut others: Vec<&ShardPool> = holding.iter().filter(|p| p.shard != first.shard).copied().collect();
    others.sort_by(|a, b| b.usd.cmp(&a.usd).then(a.shard.cmp(&b.shard)));
    let mut group = vec![first];
    group.extend(others.into_iter().take(per_close.max(1) - 1));
    let held = held(&group)?;
    let gap = minimum.checked_sub(held).filter(|gap| *gap > Usd::ZERO)?;
    Some(TopUpGroup { shards: group.iter().map(|p| p.shard).collect(), held, gap })
}

/// The smallest amount (at most [`Quantity::MAX_SCALE`] places) whose cost
/// at `price` covers `gap`, and that cost: what the house buys.
pub fn amount_for(gap: Usd, price: Usd) -> Option<(Quantity, Usd)> {
    let step = Decimal::new(1, Quantity::MAX_SCALE);
    let mut amount = gap
        .value()
        .checked_div(price.value())?
        .round_dp_with_strategy(Quantity::MAX_SCALE, RoundingStrategy::AwayFromZero);
    for _ in 0..2 {
        let quantity = Quantity::from_decimal(amount.normalize()).ok()?;
        let cost = Usd::cost(price, quantity)?;
        if cost >= gap {
            return Some((quantity, cost));
        }
        // The division rounded below the gap: one step more.
        amount = amount.checked_add(step)?;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::pooling::SHARDS_PER_CLOSE;
    use crate::domain::pooling::testing::{at_ms, shard, usd};

    #[test]
    fn the_house_buys_the_least_that_covers_the_gap() {
        for (gap, price, amount, cost) in [
            ("6", "4", "1.5", "6"),
            ("1", "3", "0.33333334", "1.00000002"),
            ("9.99", "1234.5", "0.00809235", "9.990006075"),
            ("0.00000001", "4", "0.00000001", "0.00000004"),
        ] {
            let (got_amount, got_cost) = amount_for(usd(gap), usd(price)).unwrap();
            assert_eq!((got_amount.to_string(), got_cost), (amount.to_owned(), usd(cost)), "{gap} at {price}");
        }
    }

    #[test]
    fn a_top_up_takes_the_oldest_money_and_the_fullest_shards_and_pays_only_the_rest() {
        // The oldest order is on the $1 shard; $4 and $3 are fuller.
        let pools = [shard(1, "1", 1, 100), shard(2, "4", 1, 500), shard(3, "3", 1, 400), ShardPool::empty(4)];
        let group = top_up_group(&pools, usd("10"), SHARDS_PER_CLOSE).unwrap();
        assert_eq!(group, TopUpGroup { shards: vec![1, 2, 3], held: usd("8"), gap: usd("2") });
        // At most one close's worth of shards: the house pays for what is left out.
        let group = top_up_group(&pools, usd("10"), 2).unwrap();
        assert_eq!((group.shards, group.gap), (vec![1, 2], usd("5")));
        // Enough already: the sweep's, not the house's.
        assert_eq!(top_up_group(&[shard(1, "6", 1, 1), shard(2, "4", 1, 2)], usd("10"), SHARDS_PER_CLOSE), None);
        assert_eq!(top_up_group(&[ShardPool::empty(0)], usd("10"), SHARDS_PER_CLOSE), None);
    }

    /// More shards hold money than one transaction closes: the house pays
    /// for one group, the one with the oldest order, never for two.
    #[test]
    fn with_more_shards_than_one_close_the_house_completes_the_oldest_money_once() {
        let pools: Vec<ShardPool> = (0..60).map(|i| shard(i, "0.1", 1, 1000 - u64::from(i))).collect();
        let group = top_up_group(&pools, usd("10"), SHARDS_PER_CLOSE).unwrap();
        assert_eq!(group.shards[0], 59, "the shard holding the oldest order first");
        assert_eq!((group.shards.len(), group.held, group.gap), (SHARDS_PER_CLOSE, usd("4.8"), usd("5.2")));
    }

    #[test]
    fn overdue_orders_are_those_that_waited_longer_the_oldest_first() {
        let pools = [shard(1, "2", 2, 1_000), shard(2, "1", 1, 500)];
        let now = at_ms(61_000);
        let members = overdue_members(&pools, time::Duration::seconds(60), now);
        assert_eq!(members.iter().map(|m| m.placed).collect::<Vec<_>>(), vec![at_ms(500)]);
        assert!(overdue(oldest(&pools), time::Duration::seconds(60), now));
        assert!(!overdue(oldest(&pools), time::Duration::seconds(61), now));
        assert!(!overdue(None, time::Duration::ZERO, now));
    }
}
