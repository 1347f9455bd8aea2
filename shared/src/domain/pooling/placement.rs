//! Where one order goes, decided from its shard's open pool as last known.
//!
//! - An order of the minimum or more is its own batch: it never touches a
//!   pool.
//! - An order that leaves its shard under the minimum joins it. Joining
//!   needs nothing but that: the store conditions the join on the shard
//!   staying under the minimum, whatever else changed since it was seen, so
//!   a join is decided right from any view of the shard, however old.
//! - An order that brings its shard to the minimum closes it: the batch is
//!   everything the shard holds and this order. That needs the shard's
//!   exact state, so the store conditions the close on the version it was
//!   decided from; a close decided from an old view fails, and the order is
//!   decided again on the shard as it is.

use super::{BatchTotals, PoolOverflow, ShardPool};
use crate::domain::money::Usd;
use crate::domain::quantity::Quantity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The order alone reaches the minimum: bought alone, at once.
    OwnBatch,
    /// It joins its shard's open pool, which stays under the minimum.
    Join,
    /// It brings its shard's pool to the minimum: the pool closes into a
    /// batch of these totals (the pool's and the order's), and reopens empty.
    Cross { totals: BatchTotals },
}

/// Where an order of `amount` costing `cost` goes, given its shard as last
/// known (`None`: not known, taken as empty).
pub fn decide(shard: Option<&ShardPool>, cost: Usd, amount: Quantity, minimum: Usd) -> Result<Placement, PoolOverflow> {
    if cost >= minimum {
        return Ok(Placement::OwnBatch);
    }
    let Some(pool) = shard.filter(|pool| pool.holds_money()) else { return Ok(Placement::Join) };
    if pool.usd.checked_add(cost).ok_or(PoolOverflow)? < minimum {
        return Ok(Placement::Join);
    }
    Ok(Placement::Cross { totals: BatchTotals::of(&[pool], Some((cost, amount)))? })
}

/// The largest cost that still joins a pool holding `held`: what the join's
/// condition allows (`held < minimum - cost`).
pub fn join_limit(minimum: Usd, cost: Usd) -> rust_decimal::Decimal {
    minimum.value() - cost.value()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::str::FromStr;

    use proptest::prelude::*;
    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::BatchQuantity;
    use crate::domain::pooling::testing::{shard, usd};

    fn qty(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    fn total(s: &str) -> BatchQuantity {
        BatchQuantity::from_decimal(Decimal::from_str(s).unwrap()).unwrap()
    }

    #[test]
    fn three_aban_is_its_own_batch_and_so_is_exactly_ten_dollars() {
        assert_eq!(decide(None, usd("12"), qty("3"), usd("10")), Ok(Placement::OwnBatch));
        assert_eq!(decide(None, usd("10"), qty("2.5"), usd("10")), Ok(Placement::OwnBatch));
    }

    #[test]
    fn three_single_aban_orders_cross_at_the_third() {
        let two = shard(0, "8", 2, 1);
        assert_eq!(decide(None, usd("4"), qty("1"), usd("10")), Ok(Placement::Join));
        assert_eq!(decide(Some(&shard(0, "4", 1, 1)), usd("4"), qty("1"), usd("10")), Ok(Placement::Join));
        let totals = BatchTotals { usd: usd("12"), qty: total("3"), count: 3 };
        assert_eq!(decide(Some(&two), usd("4"), qty("1"), usd("10")), Ok(Placement::Cross { totals }));
    }

    #[test]
    fn landing_exactly_on_the_minimum_crosses_and_a_cent_under_joins() {
        let six = shard(0, "6", 2, 1);
        assert!(matches!(decide(Some(&six), usd("4"), qty("1"), usd("10")), Ok(Placement::Cross { .. })));
        let under = shard(0, "5.99", 1, 1);
        assert_eq!(decide(Some(&under), usd("4"), qty("1"), usd("10")), Ok(Placement::Join));
    }

    #[test]
    fn a_batch_may_hold_more_coin_than_one_order_may() {
        let mut pool = shard(0, "9.99", 5, 1);
        pool.qty = Decimal::from_str("999999999.5").unwrap();
        let Ok(Placement::Cross { totals }) = decide(Some(&pool), usd("0.01"), qty("1"), usd("10")) else { panic!() };
        assert_eq!(totals.qty.to_string(), "1000000000.5");
    }

    /// The simple model: a list of open orders; an order of at least the
    /// minimum is bought alone, and whenever the open orders sum to the
    /// minimum they are bought together.
    #[derive(Default)]
    struct Model {
        open: Vec<usize>,
        batches: Vec<Vec<usize>>,
    }

    impl Model {
        fn place(&mut self, index: usize, costs: &[Usd], minimum: Usd) {
            if costs[index] >= minimum {
                self.batches.push(vec![index]);
                return;
            }
            self.open.push(index);
            let open_usd = self.open.iter().fold(Usd::ZERO, |sum, i| sum.checked_add(costs[*i]).unwrap());
            if open_usd >= minimum {
                self.batches.push(std::mem::take(&mut self.open));
            }
        }
    }

    fn amounts() -> impl Strategy<Value = Vec<Quantity>> {
        // Mostly small orders (cents to a few dollars), some large ones.
        let amount = prop_oneof![
            8 => (1u64..=300_000_000).prop_map(|units| Decimal::new(units as i64, 8)),
            1 => (1u64..=1000).prop_map(|units| Decimal::new(units as i64, 1)),
        ]
        .prop_map(|d| Quantity::from_decimal(d).unwrap());
        prop::collection::vec(amount, 0..200)
    }

    proptest! {
        /// One shard, every order decided on its exact state: batches form
        /// exactly where the simple model forms them.
        #[test]
        fn batching_matches_the_simple_model(amounts in amounts(), minimum_cents in 1u64..5000) {
            let minimum = Usd::new(Decimal::new(minimum_cents as i64, 2)).unwrap();
            let price = usd("4");
            let costs: Vec<Usd> = amounts.iter().map(|a| Usd::cost(price, *a).unwrap()).collect();
            let mut model = Model::default();
            let mut pool = ShardPool::empty(0);
            let mut open: Vec<usize> = Vec::new();
            let mut batches: Vec<(BatchTotals, Vec<usize>)> = Vec::new();
            for (index, amount) in amounts.iter().enumerate() {
                let cost = costs[index];
                model.place(index, &costs, minimum);
                match decide(Some(&pool), cost, *amount, minimum).unwrap() {
                    Placement::OwnBatch => batches.push((BatchTotals::of_order(cost, *amount), vec![index])),
                    Placement::Join => {
                        open.push(index);
                        pool.usd = pool.usd.checked_add(cost).unwrap();
                        pool.qty += amount.value();
                        pool.count += 1;
                    }
                    Placement::Cross { totals } => {
                        open.push(index);
                        batches.push((totals, std::mem::take(&mut open)));
                        pool = pool.closed();
                    }
                }
                prop_assert!(pool.usd < minimum);
            }
            let formed: Vec<Vec<usize>> = batches.iter().map(|(_, members)| members.clone()).collect();
            prop_assert_eq!(&formed, &model.batches);
            prop_assert_eq!(&open, &model.open);
            for (totals, members) in &batches {
                prop_assert!(totals.usd >= minimum);
                prop_assert_eq!(totals.usd, members.iter().fold(Usd::ZERO, |s, i| s.checked_add(costs[*i]).unwrap()));
                prop_assert_eq!(totals.qty.value(), members.iter().map(|i| amounts[*i].value()).sum::<Decimal>());
                prop_assert_eq!(totals.count as usize, members.len());
                // Formed at the first order that reached the minimum.
                let last = members[members.len() - 1];
                prop_assert!(members.len() == 1 || totals.usd.checked_sub(costs[last]).unwrap() < minimum);
            }
        }
    }
}
