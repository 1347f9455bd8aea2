//! The batching rule: where an order goes, decided from the open pool of its
//! coin. Pure, so that the store adapters only have to make the decision
//! stick atomically (the condition on the pool item), never re-derive it.
//!
//! A coin's open pool may be spread over shards (see docs/design.md): an
//! order goes to one shard, and a batch closes that shard, together with
//! idle shards whose money would otherwise wait.

use rust_decimal::Decimal;

use super::decimal::exact_sum;
use super::money::Usd;
use super::quantity::{BatchQuantity, Quantity};

/// The open pool of one coin: its batch number and running totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolState {
    /// Number of the open batch; every order that joins records it.
    pub seq: u64,
    pub usd: Usd,
    pub qty: Decimal,
    pub count: u32,
}

/// Which open pool: a shard of a coin's pool, and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolId {
    pub shard: u32,
    pub seq: u64,
}

/// Another shard's pool, as last seen, closed into a batch with the order's
/// own: its exact state is the condition of its closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absorbed {
    pub shard: u32,
    pub state: PoolState,
}

/// Totals of a batch that an order forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTotals {
    pub usd: Usd,
    pub qty: BatchQuantity,
    pub count: u32,
}

/// The pool's totals cannot be held exactly: refuse the order rather than
/// round anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the order would make its coin's pool too large to add up exactly")]
pub struct PoolOverflow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The order alone reaches the minimum: it is its own batch, bought at
    /// once; the pool is untouched.
    OwnBatch,
    /// The order joins the open pool `seq`, which stays below the minimum.
    Join { seq: u64 },
    /// The order brings pool `seq` to the minimum (with the shards it
    /// absorbs, if any): the pool closes as a batch with these totals and
    /// reopens empty as `seq + 1`, and so does each absorbed shard.
    Cross { seq: u64, batch: BatchTotals, absorbed: Vec<Absorbed> },
}

/// Decides where an order of `amount` costing `cost` goes.
pub fn decide(pool: &PoolState, cost: Usd, amount: Quantity, minimum: Usd) -> Result<Placement, PoolOverflow> {
    if cost >= minimum {
        return Ok(Placement::OwnBatch);
    }
    let usd = pool.usd.checked_add(cost).ok_or(PoolOverflow)?;
    if usd < minimum {
        return Ok(Placement::Join { seq: pool.seq });
    }
    let qty = BatchQuantity::sum(pool.qty, amount).ok_or(PoolOverflow)?;
    let count = pool.count.checked_add(1).ok_or(PoolOverflow)?;
    Ok(Placement::Cross { seq: pool.seq, batch: BatchTotals { usd, qty, count }, absorbed: Vec::new() })
}

/// [`decide`], for an order on one shard of a pool spread over several:
/// idle shards (nobody has written them for a while) join the batch of an
/// order that crosses on its own, and make an order cross that would not
/// have. `idle` holds at most as many shards as one batch may absorb.
pub fn decide_sharded(
    own: &PoolState,
    idle: &[Absorbed],
    cost: Usd,
    amount: Quantity,
    minimum: Usd,
) -> Result<Placement, PoolOverflow> {
    let alone = decide(own, cost, amount, minimum)?;
    let absorbed: Vec<Absorbed> = match &alone {
        Placement::OwnBatch => return Ok(alone),
        // Crossing anyway: take the idle money along.
        Placement::Cross { .. } => idle.iter().filter(|s| s.state.count > 0).copied().collect(),
        // Crossing with the idle shards that reach the minimum, largest first.
        Placement::Join { .. } => {
            let mut by_size: Vec<Absorbed> = idle.iter().filter(|s| s.state.count > 0).copied().collect();
            by_size.sort_by(|a, b| b.state.usd.cmp(&a.state.usd).then(a.shard.cmp(&b.shard)));
            let mut total = own.usd.checked_add(cost).ok_or(PoolOverflow)?;
            let mut taken = Vec::new();
            for shard in by_size {
                if total >= minimum {
                    break;
                }
                total = total.checked_add(shard.state.usd).ok_or(PoolOverflow)?;
                taken.push(shard);
            }
            if total < minimum {
                return Ok(alone);
            }
            taken
        }
    };
    let mut batch = BatchTotals {
        usd: own.usd.checked_add(cost).ok_or(PoolOverflow)?,
        qty: BatchQuantity::sum(own.qty, amount).ok_or(PoolOverflow)?,
        count: own.count.checked_add(1).ok_or(PoolOverflow)?,
    };
    for shard in &absorbed {
        batch.usd = batch.usd.checked_add(shard.state.usd).ok_or(PoolOverflow)?;
        batch.qty = BatchQuantity::from_decimal(exact_sum(batch.qty.value(), shard.state.qty).ok_or(PoolOverflow)?)
            .ok_or(PoolOverflow)?;
        batch.count = batch.count.checked_add(shard.state.count).ok_or(PoolOverflow)?;
    }
    Ok(Placement::Cross { seq: own.seq, batch, absorbed })
}

impl PoolState {
    /// The pool once closed into a batch: the next one, empty.
    pub fn closed(&self) -> PoolState {
        PoolState { seq: self.seq + 1, ..PoolState::default() }
    }

    /// The pool after `placement` of an order of `amount` costing `cost`;
    /// `None` when its sums cannot be held exactly.
    pub fn after(&self, placement: &Placement, cost: Usd, amount: Quantity) -> Option<PoolState> {
        match placement {
            Placement::OwnBatch => Some(*self),
            Placement::Join { .. } => Some(PoolState {
                seq: self.seq,
                usd: self.usd.checked_add(cost)?,
                qty: exact_sum(self.qty, amount.value())?,
                count: self.count.checked_add(1)?,
            }),
            Placement::Cross { .. } => Some(self.closed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;

    use super::*;

    fn usd(s: &str) -> Usd {
        Usd::new(Decimal::from_str(s).unwrap()).unwrap()
    }

    fn qty(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    fn total(s: &str) -> BatchQuantity {
        BatchQuantity::from_decimal(Decimal::from_str(s).unwrap()).unwrap()
    }

    const ABAN: &str = "4";

    fn cost_of(amount: Quantity) -> Usd {
        Usd::new(amount.value() * Decimal::from_str(ABAN).unwrap()).unwrap()
    }

    #[test]
    fn three_aban_is_its_own_batch() {
        let placement = decide(&PoolState::default(), usd("12"), qty("3"), usd("10"));
        assert_eq!(placement, Ok(Placement::OwnBatch));
    }

    #[test]
    fn exactly_ten_dollars_is_its_own_batch() {
        assert_eq!(decide(&PoolState::default(), usd("10"), qty("2.5"), usd("10")), Ok(Placement::OwnBatch));
    }

    #[test]
    fn three_single_aban_orders_cross_at_the_third() {
        let minimum = usd("10");
        let mut pool = PoolState::default();
        for expected_join in [true, true] {
            let p = decide(&pool, usd("4"), qty("1"), minimum).unwrap();
            assert_eq!(matches!(p, Placement::Join { seq: 0 }), expected_join);
            pool = pool.after(&p, usd("4"), qty("1")).unwrap();
        }
        let p = decide(&pool, usd("4"), qty("1"), minimum).unwrap();
        assert_eq!(
            p,
            Placement::Cross {
                seq: 0,
                batch: BatchTotals { usd: usd("12"), qty: total("3"), count: 3 },
                absorbed: vec![]
            }
        );
        assert_eq!(pool.after(&p, usd("4"), qty("1")), Some(PoolState { seq: 1, ..PoolState::default() }));
    }

    #[test]
    fn a_pool_landing_exactly_on_the_minimum_crosses() {
        let pool = PoolState { seq: 7, usd: usd("6"), qty: Decimal::from_str("1.5").unwrap(), count: 2 };
        let p = decide(&pool, usd("4"), qty("1"), usd("10")).unwrap();
        assert_eq!(
            p,
            Placement::Cross {
                seq: 7,
                batch: BatchTotals { usd: usd("10"), qty: total("2.5"), count: 3 },
                absorbed: vec![]
            }
        );
    }

    #[test]
    fn one_cent_below_the_minimum_joins() {
        let pool = PoolState { seq: 0, usd: usd("5.99"), qty: Decimal::from_str("1.4975").unwrap(), count: 1 };
        assert_eq!(decide(&pool, usd("4"), qty("1"), usd("10")), Ok(Placement::Join { seq: 0 }));
    }

    #[test]
    fn a_batch_may_hold_more_than_one_order_may() {
        // Orders are capped at 1e9 each; the sum of a batch's orders is not.
        let pool = PoolState { seq: 3, usd: usd("9.99"), qty: Decimal::from_str("999999999.5").unwrap(), count: 5 };
        let p = decide(&pool, usd("0.01"), qty("1"), usd("10"));
        let Ok(Placement::Cross { batch, .. }) = p else { panic!("{p:?}") };
        assert_eq!(batch.qty.to_string(), "1000000000.5");
    }

    fn shard(shard: u32, usd_text: &str, count: u32) -> Absorbed {
        let value = Usd::new(Decimal::from_str(usd_text).unwrap()).unwrap();
        Absorbed { shard, state: PoolState { seq: 3, usd: value, qty: value.value() / Decimal::from(4), count } }
    }

    #[test]
    fn an_order_on_one_shard_crosses_with_idle_shards_that_reach_the_minimum() {
        let own = PoolState { seq: 9, usd: usd("2"), qty: Decimal::from_str("0.5").unwrap(), count: 1 };
        // $2 + $1 here; $3 and $5 idle elsewhere: the $5 shard is enough.
        let idle = [shard(1, "3", 1), shard(2, "5", 2), shard(3, "0", 0)];
        let p = decide_sharded(&own, &idle, usd("1"), qty("0.25"), usd("10")).unwrap();
        assert_eq!(p, decide_sharded(&own, &idle[..2], usd("1"), qty("0.25"), usd("10")).unwrap());
        let Placement::Cross { seq, batch, absorbed } = p else { panic!("{p:?}") };
        assert_eq!((seq, absorbed, batch.count), (9, vec![shard(2, "5", 2), shard(1, "3", 1)], 5));
        assert_eq!((batch.usd, batch.qty), (usd("11"), total("2.75")));
        // Not enough anywhere: it joins.
        let p = decide_sharded(&own, &[shard(1, "3", 1)], usd("1"), qty("0.25"), usd("10")).unwrap();
        assert_eq!(p, Placement::Join { seq: 9 });
        // Without shards, exactly the pool's own rule.
        assert_eq!(
            decide_sharded(&own, &[], usd("1"), qty("0.25"), usd("10")),
            decide(&own, usd("1"), qty("0.25"), usd("10"))
        );
    }

    #[test]
    fn an_order_crossing_on_its_own_takes_the_idle_money_along() {
        let own = PoolState { seq: 2, usd: usd("9"), qty: Decimal::from_str("2.25").unwrap(), count: 3 };
        let p = decide_sharded(&own, &[shard(4, "1", 1), shard(5, "0", 0)], usd("2"), qty("0.5"), usd("10")).unwrap();
        let Placement::Cross { batch, absorbed, .. } = p else { panic!("{p:?}") };
        assert_eq!((batch.usd, batch.count, absorbed), (usd("12"), 5, vec![shard(4, "1", 1)]));
        // An order of the minimum or more is still its own batch.
        assert_eq!(
            decide_sharded(&own, &[shard(4, "1", 1)], usd("10"), qty("2.5"), usd("10")),
            Ok(Placement::OwnBatch)
        );
    }

    /// The simple model: a list of open orders; whenever an order of at least
    /// the minimum arrives it is bought alone, and whenever the open orders
    /// sum to the minimum they are bought together.
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
        #[test]
        fn batching_matches_the_simple_model(amounts in amounts(), minimum_cents in 1u64..5000) {
            let minimum = Usd::new(Decimal::new(minimum_cents as i64, 2)).unwrap();
            let costs: Vec<Usd> = amounts.iter().map(|a| cost_of(*a)).collect();

            let mut model = Model::default();
            let mut pool = PoolState::default();
            let mut open: Vec<usize> = Vec::new();
            let mut batches: Vec<(BatchTotals, Vec<usize>)> = Vec::new();

            for (index, amount) in amounts.iter().enumerate() {
                let cost = costs[index];
                model.place(index, &costs, minimum);
                let placement = decide(&pool, cost, *amount, minimum).unwrap();
                match placement {
                    Placement::OwnBatch => {
                        batches.push((BatchTotals { usd: cost, qty: (*amount).into(), count: 1 }, vec![index]));
                    }
                    Placement::Join { seq } => {
                        prop_assert_eq!(seq, pool.seq);
                        open.push(index);
                    }
                    Placement::Cross { seq, batch, .. } => {
                        prop_assert_eq!(seq, pool.seq);
                        open.push(index);
                        batches.push((batch, std::mem::take(&mut open)));
                    }
                }
                pool = pool.after(&placement, cost, *amount).unwrap();

                // The open pool stays below the minimum and its counters match its members.
                prop_assert!(pool.usd < minimum);
                prop_assert_eq!(pool.count as usize, open.len());
                prop_assert_eq!(pool.usd, open.iter().fold(Usd::ZERO, |s, i| s.checked_add(costs[*i]).unwrap()));
                prop_assert_eq!(pool.qty, open.iter().map(|i| amounts[*i].value()).sum::<Decimal>());
            }

            // A batch forms exactly when (and where) the model forms one.
            let formed: Vec<Vec<usize>> = batches.iter().map(|(_, members)| members.clone()).collect();
            prop_assert_eq!(&formed, &model.batches);
            prop_assert_eq!(&open, &model.open);

            for (totals, members) in &batches {
                // Every formed batch reaches the minimum, and its totals are its members' sums.
                prop_assert!(totals.usd >= minimum);
                prop_assert_eq!(totals.usd, members.iter().fold(Usd::ZERO, |s, i| s.checked_add(costs[*i]).unwrap()));
                prop_assert_eq!(totals.qty.value(), members.iter().map(|i| amounts[*i].value()).sum::<Decimal>());
                prop_assert_eq!(totals.count as usize, members.len());
                // It formed at the first order that reached the minimum: without its last
                // member it was still below.
                let last = members[members.len() - 1];
                let before = totals.usd.checked_sub(costs[last]).unwrap();
                prop_assert!(members.len() == 1 || before < minimum);
            }

            // Batches + pool = all orders, each exactly once.
            let mut seen: Vec<usize> = batches.iter().flat_map(|(_, m)| m.iter().copied()).chain(open.iter().copied()).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..amounts.len()).collect::<Vec<_>>());
        }
    }
}
