//! Pooling, the use case the reconciler runs around the clock: for each
//! coin, the sweep that gathers money spread over shards into batches as
//! soon as it holds the minimum together, and the operator's bound on how
//! long pooled money waits. The rules are `domain::pooling`'s; the store
//! makes each step stick in one transaction conditioned on the shards being
//! as read (`ports::Pools`), so a step that lost a race writes nothing and
//! the next sweep decides again on what is there. (Orders joining and
//! closing their own shard are placement's: `service`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::domain::pooling::sweep::{self, SweepRules, SweepStep};
use crate::domain::pooling::wait::{amount_for, oldest, overdue, overdue_members, top_up_group};
use crate::domain::pooling::{BatchTotals, SHARDS_PER_CLOSE, ShardPool};
use crate::domain::{BatchId, Coin, NewOrder, OrderId, ShardCount, ShardRules, Usd};
use crate::ports::{CancelError, Clock, Closing, InfraError, Pools, TopUp, WaitAction, WaitPolicy};

/// How long a coin's shard count read by the sweep is used before it is
/// read again (a coin that never grew costs this read and nothing else).
const COUNT_EVERY: Duration = Duration::from_secs(1);
/// Tries a close gets in one sweep: each after the one before found a
/// shard changed (on the shards as that cancellation returned them) or
/// held by another transaction (a transaction's time later).
const CLOSE_TRIES: u32 = 3;
const HELD_FOR: Duration = Duration::from_millis(15);

/// What the sweep of one coin did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Batches it formed: they go to the settle queue.
    pub formed: Vec<BatchId>,
    /// Crumbs it moved together (the next sweep closes them).
    pub moved: u32,
}

/// What applying the wait policy to one coin did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitReport {
    /// When the coin's oldest pending order was placed, if it has any.
    pub oldest: Option<OffsetDateTime>,
    /// Orders canceled by the refund policy (or, for a coin no longer
    /// priced, by the top-up policy: the house cannot buy it).
    pub canceled: u32,
    /// The batch a top-up formed.
    pub topped_up: Option<BatchId>,
    /// A top-up the house account could not pay: what it would have cost.
    pub house_short: Option<Usd>,
    /// The house account's balance after the check (top-up policy only).
    pub house_balance: Option<Usd>,
    /// The coin has no price now: a top-up could not buy it.
    pub unpriced: bool,
}

/// A coin's pool as an operator sees it.
#[derive(Debug, Clone)]
pub struct PoolSummary {
    pub coin: Coin,
    /// Shards read (up to the most the coin ever had), and those holding money.
    pub shards: u32,
    pub holding: usize,
    pub usd: Usd,
    pub qty: Decimal,
    pub orders: u32,
    /// When its oldest pending order was placed.
    pub oldest: Option<OffsetDateTime>,
}

pub struct Pooling {
    pools: Arc<dyn Pools>,
    clock: Arc<dyn Clock>,
    minimum: Usd,
    sweep: SweepRules,
    shards: ShardRules,
    /// Each coin's shard count as last read, and when.
    counts: Mutex<HashMap<Coin, (ShardCount, Instant)>>,
    /// Each coin's rate, as the sweep measures it.
    rates: Mutex<HashMap<Coin, Rate>>,
}

/// A coin's writes a second: every write of a shard moves its version, so
/// the versions of all its shards, read at each sweep, count them.
#[derive(Debug, Clone, Copy)]
struct Rate {
    versions: u64,
    at: Instant,
    /// Smoothed over a few sweeps.
    per_second: Option<f64>,
}

/// How much of a new measure of a coin's rate goes into its smoothed rate.
const RATE_WEIGHT: f64 = 0.3;
/// A coin's rate is measured over at least this long.
const RATE_OVER: Duration = Duration::from_secs(1);

impl Pooling {
    pub fn new(pools: Arc<dyn Pools>, clock: Arc<dyn Clock>, minimum: Usd) -> Pooling {
        Pooling {
            pools,
            clock,
            minimum,
            sweep: SweepRules::default(),
            shards: ShardRules::default(),
            counts: Mutex::default(),
            rates: Mutex::default(),
        }
    }

    pub fn with_rules(self, sweep: SweepRules, shards: ShardRules) -> Pooling {
        Pooling { sweep, shards, ..self }
    }

    pub fn minimum(&self) -> Usd {
        self.minimum
    }

    /// Every coin that ever had a pool, priced or not any more.
    pub async fn pooled_coins(&self) -> Result<Vec<Coin>, InfraError> {
        self.pools.pooled_coins().await
    }

    /// The coin's shard count, read at most once per `COUNT_EVERY`.
    async fn count(&self, coin: &Coin) -> Result<ShardCount, InfraError> {
        let cached = self.counts.lock().ok().and_then(|counts| counts.get(coin).copied());
        if let Some((count, at)) = cached
            && at.elapsed() < COUNT_EVERY
        {
            return Ok(count);
        }
        let count = self.pools.shard_count(coin).await?;
        if let Ok(mut counts) = self.counts.lock() {
            counts.insert(coin.clone(), (count, Instant::now()));
        }
        Ok(count)
    }

    /// Every shard the coin may hold money on: up to the most it ever had.
    async fn all_pools(&self, coin: &Coin, count: &ShardCount) -> Result<Vec<ShardPool>, InfraError> {
        let shards: Vec<u32> = (0..count.high.max(1)).collect();
        self.pools.read_pools(coin, &shards).await
    }

    /// Gathers what the coin's shards hold together into batches
    /// (`domain::pooling::sweep`). A coin that never had more than one
    /// shard needs none: its crossing order closes its one pool.
    pub async fn sweep(&self, coin: &Coin) -> Result<Swept, InfraError> {
        let count = self.count(coin).await?;
        let mut swept = Swept::default();
        if count.high <= 1 {
            return Ok(swept);
        }
        let now = self.clock.now();
        let pools = self.all_pools(coin, &count).await?;
        let shards = |ids: &[u32]| -> Vec<ShardPool> {
            ids.iter().filter_map(|id| pools.iter().find(|pool| pool.shard == *id).cloned()).collect()
        };
        // The steps take disjoint shards: all at once (under load a shard
        // changes every few tens of milliseconds, and a hot coin needs many
        // batches a sweep). A step whose shard moved since the read writes
        // nothing: the next sweep decides again.
        let steps = sweep::plan(&pools, self.minimum, now, &self.sweep).into_iter().map(|step| async move {
            match step {
                SweepStep::Close(ids) => self.close(coin, shards(&ids), now).await.map(|b| (b, false)),
                SweepStep::Move { into, from } => match shards(&[into]).pop() {
                    Some(target) => self.pools.gather(coin, &target, &shards(&from), now).await.map(|m| (None, m)),
                    None => Ok((None, false)),
                },
            }
        });
        for done in futures::future::join_all(steps).await {
            let (formed, moved) = done?;
            swept.formed.extend(formed);
            swept.moved += u32::from(moved);
        }
        self.follow_rate(coin, &count, &pools, now).await?;
        Ok(swept)
    }

    /// Measures the coin's rate from its shards' versions, and sets its
    /// shard count to what that rate needs (`domain::pooling::shards`);
    /// once the count has been down long enough and the shards above it
    /// are empty (as just read), brings `high` down with it: a coin that
    /// was hot once is not read at every sweep for ever.
    async fn follow_rate(
        &self,
        coin: &Coin,
        count: &ShardCount,
        pools: &[ShardPool],
        now: OffsetDateTime,
    ) -> Result<(), InfraError> {
        let versions: u64 = pools.iter().map(|pool| pool.version).sum();
        let rate = {
            let Ok(mut rates) = self.rates.lock() else { return Ok(()) };
            let at = Instant::now();
            match rates.get(coin).copied() {
                // Too soon to tell: the last measure stands.
                Some(last) if at.duration_since(last.at) < RATE_OVER => last.per_second,
                last => {
                    let measured = last.and_then(|last| {
                        let elapsed = at.duration_since(last.at).as_secs_f64();
                        let seen = versions.checked_sub(last.versions)? as f64 / elapsed;
                        Some(last.per_second.map_or(seen, |rate| rate + RATE_WEIGHT * (seen - rate)))
                    });
                    rates.insert(coin.clone(), Rate { versions, at, per_second: measured });
                    measured
                }
            }
        };
        let next = match rate {
            Some(rate) => count.following(rate, now, &self.shards),
            None => None,
        };
        let next = next.or_else(|| {
            let settled = count.settles_at(now, &self.shards)?;
            pools.iter().filter(|pool| pool.shard >= settled.high).all(|pool| !pool.holds_money()).then_some(settled)
        });
        if let Some(next) = next
            && self.pools.set_shard_count(coin, count, &next).await?
            && let Ok(mut counts) = self.counts.lock()
        {
            counts.remove(coin);
        }
        Ok(())
    }

    /// Closes `group` into a batch; if a shard changed since it was read (a
    /// shard in use changes every few tens of milliseconds), again on the
    /// shards as they are now, while they still hold the minimum.
    async fn close(
        &self,
        coin: &Coin,
        mut group: Vec<ShardPool>,
        now: OffsetDateTime,
    ) -> Result<Option<BatchId>, InfraError> {
        for _ in 0..CLOSE_TRIES {
            match self.pools.close(coin, &group, now).await? {
                Closing::Formed(batch) => return Ok(Some(batch)),
                Closing::Moved(now_there) => {
                    if now_there == group {
                        // Nothing changed: a shard was held by a placement.
                        tokio::time::sleep(HELD_FOR).await;
                    }
                    group = now_there.into_iter().filter(ShardPool::holds_money).collect();
                    let refs: Vec<&ShardPool> = group.iter().collect();
                    if crate::domain::pooling::held(&refs).is_none_or(|usd| usd < self.minimum) {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(None)
    }

    /// What the coin's pool holds now, for an operator.
    pub async fn summary(&self, coin: &Coin) -> Result<PoolSummary, InfraError> {
        let count = self.pools.shard_count(coin).await?;
        let pools = self.all_pools(coin, &count).await?;
        let holding: Vec<&ShardPool> = pools.iter().filter(|pool| pool.holds_money()).collect();
        let (usd, qty, orders) = match BatchTotals::of(&holding, None) {
            Ok(totals) => (totals.usd, totals.qty.value(), totals.count),
            Err(_) if holding.is_empty() => (Usd::ZERO, Decimal::ZERO, 0),
            Err(_) => return Err(InfraError::new("summarise a pool", "the shards' totals cannot be held exactly")),
        };
        Ok(PoolSummary {
            coin: coin.clone(),
            shards: count.high.max(1),
            holding: holding.len(),
            usd,
            qty,
            orders,
            oldest: oldest(&pools),
        })
    }

    /// How long the coin's oldest pending order has waited, and, once it has
    /// waited longer than the operator's policy allows, the policy applied:
    /// a top-up by the house (at `price`, the coin's price now), or the
    /// orders that waited longer canceled. A coin no longer priced cannot be
    /// bought by the house: under the top-up policy its overdue orders are
    /// canceled too, so that the bound holds whatever the price list says.
    pub async fn bound_wait(
        &self,
        coin: &Coin,
        price: Option<Usd>,
        policy: Option<&WaitPolicy>,
    ) -> Result<WaitReport, InfraError> {
        let now = self.clock.now();
        let count = self.pools.shard_count(coin).await?;
        let pools = self.all_pools(coin, &count).await?;
        let mut report = WaitReport { oldest: oldest(&pools), ..WaitReport::default() };
        let Some(policy) = policy else { return Ok(report) };
        if let WaitAction::TopUp { house } = &policy.action {
            report.house_balance = Some(self.pools.house_balance(house).await?);
        }
        if !overdue(report.oldest, policy.max_wait, now) {
            return Ok(report);
        }
        match (&policy.action, price) {
            (WaitAction::TopUp { house }, Some(price)) => {
                self.top_up(&pools, coin, house, price, now, &mut report).await?;
                report.house_balance = Some(self.pools.house_balance(house).await?);
            }
            (WaitAction::TopUp { .. }, None) => {
                report.unpriced = true;
                report.canceled = self.cancel_overdue(&pools, policy, now).await?;
            }
            (WaitAction::Refund, _) => report.canceled = self.cancel_overdue(&pools, policy, now).await?,
        }
        Ok(report)
    }

    async fn top_up(
        &self,
        pools: &[ShardPool],
        coin: &Coin,
        house: &crate::domain::UserId,
        price: Usd,
        now: OffsetDateTime,
        report: &mut WaitReport,
    ) -> Result<(), InfraError> {
        // None: the oldest money's group holds the minimum: the sweep's.
        let Some(group) = top_up_group(pools, self.minimum, SHARDS_PER_CLOSE) else { return Ok(()) };
        let (amount, cost) = amount_for(group.gap, price).ok_or_else(|| {
            InfraError::new("top up a pool", format!("no exact amount of {coin} at {price} fills the pool"))
        })?;
        let closed: Vec<ShardPool> =
            group.shards.iter().filter_map(|id| pools.iter().find(|pool| pool.shard == *id).cloned()).collect();
        let house_order = NewOrder {
            id: OrderId::generate(),
            user: house.clone(),
            coin: coin.clone(),
            amount,
            price,
            cost,
            idempotency_key: None,
            created_at: now,
        };
        match self.pools.top_up(&closed, &house_order, now).await? {
            TopUp::Formed(batch) => report.topped_up = Some(batch),
            TopUp::HouseShort => report.house_short = Some(cost),
            // A shard moved since it was read: the next check decides again.
            TopUp::Moved => {}
        }
        Ok(())
    }

    /// Cancels every order of `pools` that waited longer than the policy
    /// allows; how many it canceled.
    async fn cancel_overdue(
        &self,
        pools: &[ShardPool],
        policy: &WaitPolicy,
        now: OffsetDateTime,
    ) -> Result<u32, InfraError> {
        let mut canceled = 0;
        for member in overdue_members(pools, policy.max_wait, now) {
            match self.pools.cancel(&member).await {
                Ok(done) => canceled += u32::from(done.now),
                // Batched since it was read, or canceled already: not ours.
                Err(CancelError::NotPending(_) | CancelError::NotFound | CancelError::Busy) => {}
                Err(CancelError::Infra(error)) => return Err(error),
            }
        }
        Ok(canceled)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use super::*;
    use crate::adapters::dynamodb::DynamoStore;
    use crate::adapters::dynamodb::testing::{order_at, usd};
    use crate::audit::audit;
    use crate::domain::{Membership, OrderStatus, UserId};
    use crate::ports::{Accounts, LedgerRecords, Orders};

    struct At(Mutex<OffsetDateTime>);

    impl Clock for At {
        fn now(&self) -> OffsetDateTime {
            *self.0.lock().unwrap()
        }
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    async fn store_with(users: &[&str]) -> Arc<DynamoStore> {
        let store = Arc::new(DynamoStore::in_memory());
        for user in users {
            store.open_account(&UserId::parse(user).unwrap(), usd("100")).await.unwrap();
        }
        store
    }

    fn pooling(store: &Arc<DynamoStore>, at: OffsetDateTime) -> Pooling {
        Pooling::new(Arc::clone(store) as Arc<dyn Pools>, Arc::new(At(Mutex::new(at))), usd("10"))
    }

    /// A coin taken off the price list cannot be bought by the house: under
    /// the top-up policy, its orders that waited too long are canceled, so
    /// the bound on the wait holds whatever the price list says.
    #[tokio::test]
    async fn under_the_top_up_policy_a_coin_without_a_price_is_refunded_at_the_limit() {
        let store = store_with(&["alice", "house"]).await;
        let placed = store.place_order(order_at("alice", "1", t0()), usd("10")).await.unwrap();
        let policy = WaitPolicy {
            max_wait: time::Duration::minutes(15),
            action: WaitAction::TopUp { house: UserId::parse("house").unwrap() },
        };
        let coin = Coin::from_trusted("ABAN");

        let early = pooling(&store, t0() + time::Duration::minutes(14)).bound_wait(&coin, None, Some(&policy)).await;
        assert_eq!(early.unwrap().canceled, 0);
        let late = pooling(&store, t0() + time::Duration::minutes(16)).bound_wait(&coin, None, Some(&policy)).await;

        let late = late.unwrap();
        assert_eq!((late.canceled, late.unpriced, late.topped_up), (1, true, None));
        let alice = UserId::parse("alice").unwrap();
        let view = store.order(&alice, placed.order.order.id).await.unwrap().unwrap();
        assert_eq!(view.status, OrderStatus::Canceled);
        assert_eq!(store.balance(&UserId::parse("house").unwrap()).await.unwrap(), usd("100"), "the house paid");
        assert!(audit(&store.ledger().await.unwrap(), usd("10")).is_clean());
    }

    /// A coin that was hot once folds back to one shard; `high` (how far
    /// the sweep reads) comes down only once the shards above the count
    /// are empty, so money left up there is never out of the sweep's reach.
    #[tokio::test]
    async fn high_stays_up_while_a_shard_above_the_count_holds_money() {
        use crate::adapters::dynamodb::item::{shards_grown, shards_key};
        use crate::adapters::dynamodb::table::Table;
        use crate::adapters::dynamodb::table::memory::MemoryTable;

        let table: Arc<dyn Table> = Arc::new(MemoryTable::new());
        let coin = Coin::from_trusted("ABAN");
        let first = Arc::new(DynamoStore::on(Arc::clone(&table)));
        first.open_account(&UserId::parse("alice").unwrap(), usd("100")).await.unwrap();
        table.update(shards_key(&coin), shards_grown(8, 8, t0()), None).await.unwrap().unwrap();
        // Each instance picks its own home: some land above shard 0.
        let mut placed = Vec::new();
        for seed in 0..6 {
            let instance = DynamoStore::on(Arc::clone(&table)).with_jitter_seed(seed);
            placed.push(instance.place_order(order_at("alice", "0.25", t0()), usd("10")).await.unwrap());
        }
        let above =
            |p: &crate::ports::Placed| matches!(p.order.order.membership, Membership::Pool { shard, .. } if shard > 0);
        assert!(placed.iter().any(above), "all landed on shard 0");
        table.update(shards_key(&coin), shards_grown(1, 8, t0()), None).await.unwrap().unwrap();

        let later = pooling(&first, t0() + time::Duration::hours(1));
        later.sweep(&coin).await.unwrap();
        assert_eq!(first.shard_count(&coin).await.unwrap().high, 8, "high came down over money");

        let alice = UserId::parse("alice").unwrap();
        for p in &placed {
            first.cancel_order(&alice, p.order.order.id).await.unwrap();
        }
        later.sweep(&coin).await.unwrap();
        assert_eq!(first.shard_count(&coin).await.unwrap().high, 1, "empty shards above the count still read");
    }

    /// The smallest order bounds a batch: shards close whole, each under
    /// the minimum, so a batch holds under twice the minimum, at most
    /// `2 × minimum / smallest order` orders (2,000 with the defaults).
    /// Two shards of 999 orders of $0.01 each close together into one batch
    /// of 1,998 orders, which a refusal refunds 100 at a time, each once.
    #[tokio::test]
    async fn a_batch_at_the_bound_of_smallest_orders_is_refunded_in_chunks_each_order_once() {
        use crate::adapters::dynamodb::item::{shards_grown, shards_key};
        use crate::adapters::dynamodb::table::Table;
        use crate::adapters::dynamodb::table::memory::MemoryTable;
        use crate::ports::{Claim, Fence, Settlements};

        let table: Arc<dyn Table> = Arc::new(MemoryTable::new());
        let coin = Coin::from_trusted("ABAN");
        let first = Arc::new(DynamoStore::on(Arc::clone(&table)));
        let alice = UserId::parse("alice").unwrap();
        first.open_account(&alice, usd("100")).await.unwrap();
        table.update(shards_key(&coin), shards_grown(2, 2, t0()), None).await.unwrap().unwrap();
        // Two instances whose homes differ, one order each so far.
        let mut homes = std::collections::BTreeMap::new();
        for seed in 0..64 {
            let instance = DynamoStore::on(Arc::clone(&table)).with_jitter_seed(seed);
            let placed = instance.place_order(order_at("alice", "0.0025", t0()), usd("10")).await.unwrap();
            let Membership::Pool { shard, .. } = placed.order.order.membership else { panic!("not pooled") };
            match homes.entry(shard) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    first.cancel_order(&alice, placed.order.order.id).await.unwrap();
                }
                std::collections::btree_map::Entry::Vacant(home) => {
                    home.insert(instance);
                }
            }
            if homes.len() == 2 {
                break;
            }
        }
        for instance in homes.values() {
            for _ in 1..999 {
                instance.place_order(order_at("alice", "0.0025", t0()), usd("10")).await.unwrap();
            }
        }
        assert_eq!(homes.len(), 2, "no instance found the second shard");

        let formed = pooling(&first, t0() + time::Duration::hours(1)).sweep(&coin).await.unwrap().formed;
        let [id] = formed[..] else { panic!("formed {formed:?}") };
        let batch = first.batch(id).await.unwrap().unwrap();
        assert_eq!((batch.count, batch.usd), (1998, usd("19.98")));

        let now = t0() + time::Duration::hours(1);
        let Claim::Claimed(claimed) = first.claim_batch(id, now, now + time::Duration::seconds(30)).await.unwrap()
        else {
            panic!("not claimed")
        };
        assert_eq!(first.refuse_batch(id, claimed.attempts, "400: halted", None).await.unwrap(), Fence::Held);
        let mut chunks = 0;
        let mut credited = usd("0");
        loop {
            let refund = first.refund_batch(id, 100).await.unwrap();
            assert!(refund.orders <= 100, "{refund:?}");
            credited = credited.checked_add(refund.usd).unwrap();
            chunks += 1;
            if refund.finished {
                break;
            }
            assert!(chunks <= 21, "the refund does not finish");
        }
        assert_eq!(credited, usd("19.98"));
        assert_eq!(first.balance(&alice).await.unwrap(), usd("100"));
        assert!(audit(&first.ledger().await.unwrap(), usd("10")).is_clean());
    }

    /// The sweep takes its coins from the table, not the price list: a coin
    /// taken off it keeps its pending money, which is still batched.
    #[tokio::test]
    async fn a_coin_taken_off_the_price_list_is_still_swept() {
        let store = store_with(&["alice"]).await;
        store.place_order(order_at("alice", "1", t0()), usd("10")).await.unwrap();
        let pooling = pooling(&store, t0());
        assert_eq!(pooling.pooled_coins().await.unwrap(), vec![Coin::from_trusted("ABAN")]);
    }
}
