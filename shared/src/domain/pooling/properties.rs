//! Pooling's rules together, against every interleaving of placements,
//! cancels, sweeps and the wait policy's actions a generator finds: a model
//! of a coin's shards in which each rule's decision is applied exactly as
//! the store makes it stick, and the invariants are checked after every
//! step. (The store's conditions make each decision apply to exactly the
//! state it was made from; the contract suite and the simulation test that
//! half.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::placement::{Placement, decide};
use super::sweep::{SweepRules, SweepStep, plan};
use super::testing::{at_ms, order_at, usd};
use super::wait::{amount_for, overdue, overdue_members, top_up_group};
use super::{Member, SHARDS_PER_CLOSE, ShardPool, held};
use crate::domain::{OrderId, Quantity, Usd, UserId};

#[derive(Debug, Clone)]
enum Step {
    /// An order of `cents` cents on shard `shard` (of the coin's 64).
    Place {
        cents: u32,
        shard: u32,
    },
    /// A rally: `count` crumbs of `cents` cents, one on each of as many
    /// shards (more shards holding money than one close takes).
    Rally {
        cents: u32,
        count: u32,
    },
    /// Its owner cancels the `pick`-th pending order.
    Cancel {
        pick: usize,
    },
    /// Time passes.
    Wait {
        ms: u64,
    },
    Sweep,
    TopUp,
    Refund,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        // Mostly crumbs and small orders; now and then one of the minimum.
        6 => (1u32..=120, 0u32..64).prop_map(|(cents, shard)| Step::Place { cents, shard }),
        2 => (1u32..=900, 0u32..4).prop_map(|(cents, shard)| Step::Place { cents, shard }),
        1 => (1000u32..=3000, 0u32..64).prop_map(|(cents, shard)| Step::Place { cents, shard }),
        1 => (5u32..=21, 40u32..=64).prop_map(|(cents, count)| Step::Rally { cents, count }),
        2 => any::<usize>().prop_map(|pick| Step::Cancel { pick }),
        3 => (1u64..=3000).prop_map(|ms| Step::Wait { ms }),
        3 => Just(Step::Sweep),
        1 => Just(Step::TopUp),
        1 => Just(Step::Refund),
    ];
    prop::collection::vec(step, 1..300)
}

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    Pending(u32),
    Batch(usize),
    Canceled,
}

struct Model {
    minimum: Usd,
    now: u64,
    pools: Vec<ShardPool>,
    orders: BTreeMap<OrderId, (Usd, Place)>,
    batches: Vec<(Usd, Vec<OrderId>)>,
    house_paid: Usd,
}

const MAX_WAIT_MS: i64 = 20_000;

impl Model {
    fn new() -> Model {
        Model {
            minimum: usd("10"),
            now: 1_000_000,
            pools: (0..64).map(ShardPool::empty).collect(),
            orders: BTreeMap::new(),
            batches: Vec::new(),
            house_paid: Usd::ZERO,
        }
    }

    fn new_order(&mut self, cents: u32) -> (OrderId, Usd, Quantity) {
        self.now += 1;
        let id = order_at(self.now);
        let cost = Usd::new(Decimal::new(i64::from(cents), 2)).unwrap();
        (id, cost, Quantity::from_decimal(cost.value() / Decimal::from(4)).unwrap())
    }

    fn batch(&mut self, members: Vec<OrderId>, extra: Option<(OrderId, Usd)>) {
        let index = self.batches.len();
        let mut usd = Usd::ZERO;
        let mut all = members;
        if let Some((id, cost)) = extra {
            self.orders.insert(id, (cost, Place::Batch(index)));
            all.push(id);
        }
        for id in &all {
            let entry = self.orders.get_mut(id).unwrap();
            usd = usd.checked_add(entry.0).unwrap();
            entry.1 = Place::Batch(index);
        }
        self.batches.push((usd, all));
    }

    fn close(&mut self, shard: u32) -> Vec<OrderId> {
        let pool = &mut self.pools[shard as usize];
        let members = pool.members.iter().map(|m| m.order).collect();
        *pool = pool.closed();
        members
    }

    fn join(&mut self, shard: u32, id: OrderId, cost: Usd, amount: Quantity) {
        let pool = &mut self.pools[shard as usize];
        pool.usd = pool.usd.checked_add(cost).unwrap();
        pool.qty += amount.value();
        pool.count += 1;
        pool.version += 1;
        pool.members.push(Member { order: id, user: UserId::parse("u").unwrap(), placed: at_ms(self.now) });
        pool.members.sort();
        self.orders.insert(id, (cost, Place::Pending(shard)));
    }

    fn leave(&mut self, id: OrderId) {
        let (cost, place) = self.orders[&id];
        let Place::Pending(shard) = place else { return };
        let pool = &mut self.pools[shard as usize];
        pool.members.retain(|m| m.order != id);
        pool.usd = pool.usd.checked_sub(cost).unwrap();
        pool.qty -= cost.value() / Decimal::from(4);
        pool.count -= 1;
        pool.version += 1;
        self.orders.get_mut(&id).unwrap().1 = Place::Canceled;
    }

    fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let now = at_ms(self.now);
        match step {
            Step::Place { cents, shard } => {
                let (id, cost, amount) = self.new_order(*cents);
                match decide(Some(&self.pools[*shard as usize]), cost, amount, self.minimum).unwrap() {
                    Placement::OwnBatch => self.batch(Vec::new(), Some((id, cost))),
                    Placement::Join => self.join(*shard, id, cost, amount),
                    Placement::Cross { totals } => {
                        let members = self.close(*shard);
                        self.batch(members, Some((id, cost)));
                        prop_assert_eq!(self.batches.last().unwrap().0, totals.usd);
                    }
                }
            }
            Step::Rally { cents, count } => {
                for shard in 0..*count {
                    self.apply(&Step::Place { cents: *cents, shard })?;
                }
            }
            Step::Cancel { pick } => {
                let pending: Vec<OrderId> =
                    self.orders.iter().filter(|(_, o)| matches!(o.1, Place::Pending(_))).map(|(id, _)| *id).collect();
                if !pending.is_empty() {
                    self.leave(pending[pick % pending.len()]);
                }
            }
            Step::Wait { ms } => self.now += ms,
            Step::Sweep => {
                for step in plan(&self.pools, self.minimum, now, &SweepRules::default()) {
                    match step {
                        SweepStep::Close(shards) => {
                            prop_assert!(shards.len() <= SHARDS_PER_CLOSE);
                            let group: Vec<&ShardPool> = shards.iter().map(|s| &self.pools[*s as usize]).collect();
                            prop_assert!(held(&group).unwrap() >= self.minimum, "a close under the minimum");
                            let members: Vec<OrderId> = shards.iter().flat_map(|s| self.close(*s)).collect();
                            self.batch(members, None);
                        }
                        SweepStep::Move { into, from } => {
                            prop_assert!(!from.contains(&into) && !from.is_empty());
                            let writes: u32 = from.iter().map(|s| self.pools[*s as usize].count + 1).sum();
                            prop_assert!(writes <= SweepRules::default().move_writes);
                            for shard in from {
                                let moved = std::mem::take(&mut self.pools[shard as usize].members);
                                let source = &mut self.pools[shard as usize];
                                let (usd, qty, count) = (source.usd, source.qty, source.count);
                                *source = ShardPool {
                                    shard,
                                    seq: source.seq,
                                    version: source.version + 1,
                                    ..ShardPool::default()
                                };
                                let target = &mut self.pools[into as usize];
                                target.usd = target.usd.checked_add(usd).unwrap();
                                target.qty += qty;
                                target.count += count;
                                target.members.extend(moved.iter().cloned());
                                target.members.sort();
                                for member in moved {
                                    self.orders.get_mut(&member.order).unwrap().1 = Place::Pending(into);
                                }
                            }
                            prop_assert!(self.pools[into as usize].usd < self.minimum, "a move to the minimum");
                        }
                    }
                }
            }
            Step::TopUp => {
                let max_wait = time::Duration::milliseconds(MAX_WAIT_MS);
                let oldest = super::wait::oldest(&self.pools);
                if overdue(oldest, max_wait, now)
                    && let Some(group) = top_up_group(&self.pools, self.minimum, SHARDS_PER_CLOSE)
                {
                    prop_assert_eq!(group.shards[0], self.pools.iter().find(|p| p.oldest() == oldest).unwrap().shard);
                    let price = usd("4");
                    let (_, cost) = amount_for(group.gap, price).unwrap();
                    // At most one step of the coin's amount above the gap.
                    prop_assert!(cost >= group.gap && cost.value() - group.gap.value() < Decimal::new(4, 8));
                    self.house_paid = self.house_paid.checked_add(cost).unwrap();
                    let members: Vec<OrderId> = group.shards.iter().flat_map(|s| self.close(*s)).collect();
                    self.now += 1;
                    let house = order_at(self.now);
                    self.batch(members, Some((house, cost)));
                    let (batch_usd, _) = self.batches.last().unwrap();
                    prop_assert!(
                        batch_usd.value() - self.minimum.value() < Decimal::new(4, 8),
                        "the house paid more than the gap"
                    );
                }
            }
            Step::Refund => {
                let max_wait = time::Duration::milliseconds(MAX_WAIT_MS);
                for member in overdue_members(&self.pools, max_wait, now) {
                    self.leave(member.order);
                }
                prop_assert!(!overdue(super::wait::oldest(&self.pools), max_wait, now));
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for pool in &self.pools {
            prop_assert!(pool.usd < self.minimum, "shard {} holds {}", pool.shard, pool.usd);
            let members: Vec<OrderId> = pool.members.iter().map(|m| m.order).collect();
            let mut sum = Usd::ZERO;
            for id in &members {
                prop_assert_eq!(self.orders[id].1, Place::Pending(pool.shard));
                sum = sum.checked_add(self.orders[id].0).unwrap();
            }
            prop_assert_eq!(sum, pool.usd);
            prop_assert_eq!(members.len(), pool.count as usize);
        }
        for (id, (_, place)) in &self.orders {
            match place {
                Place::Pending(shard) => {
                    prop_assert!(self.pools[*shard as usize].members.iter().any(|m| m.order == *id));
                }
                Place::Batch(index) => prop_assert!(self.batches[*index].1.contains(id)),
                Place::Canceled => {}
            }
        }
        for (usd, members) in &self.batches {
            prop_assert!(*usd >= self.minimum, "a batch of {}", usd);
            prop_assert!(!members.is_empty());
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every order is in exactly one place (its shard's pool, one batch, or
    /// canceled); no shard holds the minimum; every batch holds it; a move
    /// keeps its target under it; a top-up takes the oldest money and pays
    /// no more than the gap; the refund policy leaves nothing overdue. And
    /// nothing strands: once the orders stop, sweeps alone bring the coin
    /// under the minimum.
    #[test]
    fn pooling_keeps_every_order_in_one_place_and_strands_nothing(steps in steps()) {
        let mut model = Model::new();
        for step in &steps {
            model.apply(step)?;
        }
        for _ in 0..200 {
            model.now += 1000;
            model.apply(&Step::Sweep)?;
        }
        let pools: Vec<&ShardPool> = model.pools.iter().collect();
        prop_assert!(held(&pools).unwrap() < model.minimum, "stranded: {:?}", held(&pools));
    }
}
