//! The outbox's other half: batches that settlement lost track of are sent
//! to the settle queue again. Only those: a `READY` batch whose message
//! seems lost, a `SUBMITTING` batch whose attempt died or failed without a
//! retry, a `REFUSED` batch whose refunds stopped, a `REFUNDED` batch due
//! for its look at the exchange (`RECHECKS_AFTER_REFUND`); each less and less often
//! (see [`ResendPolicy`]). A batch that failed as often as the queue
//! delivers a message is left to the dead-letter queue and its alarm.
//! Sending twice is harmless: settlement is idempotent.

use std::sync::Arc;

use std::sync::Mutex;

use crate::domain::{BatchId, BatchStatus, Coin, PriceList, ResendPolicy, SweepRules, Usd};
use crate::metrics::{self, CanceledBy, FormedBy};
use crate::pooling::{Pooling, WaitReport};
use crate::ports::{Clock, InfraError, Outbox, Pools, SettleQueue, WaitPolicy};
use crate::telemetry::ErrorChain;

pub struct Reconciler {
    outbox: Arc<dyn Outbox>,
    queue: Arc<dyn SettleQueue>,
    clock: Arc<dyn Clock>,
    policy: ResendPolicy,
    pools: Option<(Pooling, PoolSweep)>,
    wait: Option<BoundedWait>,
    /// When the wait was last checked (it is checked every
    /// `BoundedWait::every`, not at every sweep).
    wait_checked: Mutex<Option<tokio::time::Instant>>,
}

/// Each coin's oldest pending order, measured where the sweep runs, and the
/// operator's wait policy applied to it (if there is one).
#[derive(Debug, Clone)]
pub struct BoundedWait {
    pub policy: Option<WaitPolicy>,
    /// The coins' prices now: a top-up buys at them.
    pub prices: PriceList,
    /// How often each coin's oldest pending order is checked: the policy
    /// acts within this much of its limit.
    pub every: std::time::Duration,
}

/// Which coins' pools the reconciler sweeps, how, and how often.
#[derive(Debug, Clone)]
pub struct PoolSweep {
    /// The priced coins. The sweep also takes every coin the table lists as
    /// having had a pool: a coin taken off the price list keeps its pending
    /// money, which must still be batched.
    pub coins: Vec<Coin>,
    pub minimum: Usd,
    pub rules: SweepRules,
    /// How coins' shard counts follow their rates.
    pub shards: crate::domain::ShardRules,
    /// How often [`Reconciler::run_until`] sweeps.
    pub every: std::time::Duration,
}

/// What one run did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    pub resent: Vec<BatchId>,
    /// Sends that failed; tried again on the next run.
    pub failed: Vec<(BatchId, InfraError)>,
    /// Batches that exhausted their attempts: an operator's.
    pub left_to_operator: Vec<BatchId>,
    /// Batches formed by the sweep, or by a top-up.
    pub swept: Vec<BatchId>,
    /// Moves of crumbs together (more shards held a coin's money than one
    /// batch closes).
    pub moved: u32,
}

impl Reconciler {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        queue: Arc<dyn SettleQueue>,
        clock: Arc<dyn Clock>,
        policy: ResendPolicy,
    ) -> Reconciler {
        Reconciler { outbox, queue, clock, policy, pools: None, wait: None, wait_checked: Mutex::new(None) }
    }

    /// Also measures each coin's oldest pending order and applies the
    /// operator's bound on it, where the sweep runs (needs
    /// [`Reconciler::sweeping`]).
    pub fn bounding_wait(self, wait: Option<BoundedWait>) -> Reconciler {
        Reconciler { wait, ..self }
    }

    /// Also gathers what these coins' pool shards hold together into
    /// batches, and applies the wait policy (see `crate::pooling`).
    pub fn sweeping(self, pools: Arc<dyn Pools>, sweep: PoolSweep) -> Reconciler {
        let pooling = Pooling::new(pools, Arc::clone(&self.clock), sweep.minimum).with_rules(sweep.rules, sweep.shards);
        Reconciler { pools: Some((pooling, sweep)), ..self }
    }

    /// Sweeps the pools (when it does), then sends every batch that is due
    /// again. One failed send does not stop the others.
    pub async fn run_once(&self) -> Result<ReconcileReport, InfraError> {
        let now = self.clock.now();
        let mut report = ReconcileReport::default();
        self.sweep_into(&mut report).await;
        for batch in self.outbox.open_batches().await? {
            match batch.resend_due(&self.policy) {
                Some(due) if due <= now => {}
                Some(_) => continue,
                None => {
                    if batch.status == BatchStatus::Submitting {
                        report.left_to_operator.push(batch.id);
                    }
                    continue;
                }
            }
            // Recorded before it is sent: of the reconcilers that read this
            // batch alike (one per process locally, overlapping scheduled
            // runs deployed), the one whose record is written sends it.
            match self.outbox.note_resent(&batch, now).await {
                Ok(true) => {}
                // It moved since it was read (another reconciler re-sent it,
                // or settlement went on): not this run's to send.
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), batch_id = %batch.id, "could not record a re-send");
                    report.failed.push((batch.id, error));
                    continue;
                }
            }
            if let Err(error) = self.queue.send(batch.id).await {
                tracing::warn!(error = %ErrorChain(&error), batch_id = %batch.id, "could not re-send a batch");
                // Taken back, so that the next run sends it rather than the
                // next step of the back-off. If that fails too, it waits
                // for that step: later, never lost.
                if let Err(withdraw) = self.outbox.withdraw_resent(&batch, now).await {
                    tracing::warn!(error = %ErrorChain(&withdraw), batch_id = %batch.id, "could not take back a re-send");
                }
                report.failed.push((batch.id, error));
                continue;
            }
            tracing::warn!(batch_id = %batch.id, status = batch.status.as_str(), attempts = batch.attempts, "re-sent a batch settlement lost track of");
            report.resent.push(batch.id);
            metrics::batches_resent(1);
        }
        report.resent.sort();
        Ok(report)
    }

    /// One run, then sweeps every `PoolSweep::every` until `deadline`: a
    /// scheduled function runs a minute at most apart, and what a quiet
    /// shard holds should not wait that long.
    pub async fn run_until(&self, deadline: tokio::time::Instant) -> Result<ReconcileReport, InfraError> {
        let mut report = self.run_once().await?;
        let Some(every) = self.sweep_every() else { return Ok(report) };
        // Sweeps start `every` apart (a sweep that takes longer delays the
        // next, never piles up behind it).
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while tokio::time::Instant::now() + every < deadline {
            ticks.tick().await;
            self.sweep_into(&mut report).await;
        }
        Ok(report)
    }

    /// How often it sweeps pool shards, when it does.
    pub fn sweep_every(&self) -> Option<std::time::Duration> {
        self.pools.as_ref().map(|(_, sweep)| sweep.every)
    }

    /// Batches what each coin's quiet pool shards hold, and sends them on.
    pub async fn sweep(&self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        self.sweep_into(&mut report).await;
        report
    }

    /// Coins swept at once: each is a few reads and transactions, and a
    /// deployment may have hundreds of coins to sweep every quarter second.
    const COINS_AT_ONCE: usize = 64;

    async fn sweep_into(&self, report: &mut ReconcileReport) {
        use futures::StreamExt;
        let Some((pooling, sweep)) = &self.pools else { return };
        let mut coins = sweep.coins.clone();
        match pooling.pooled_coins().await {
            Ok(pooled) => coins.extend(pooled),
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "could not list the coins with pools; sweeping the priced ones")
            }
        }
        coins.sort();
        coins.dedup();
        let swept: Vec<(Coin, Result<crate::pooling::Swept, InfraError>)> = futures::stream::iter(coins)
            .map(|coin| async move {
                let swept = pooling.sweep(&coin).await;
                (coin, swept)
            })
            .buffer_unordered(Self::COINS_AT_ONCE)
            .collect()
            .await;
        let wait_coins = self.wait_is_due().then(|| swept.iter().map(|(coin, _)| coin.clone()).collect::<Vec<_>>());
        for (coin, result) in swept {
            let swept = match result {
                Ok(swept) => swept,
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), %coin, "could not sweep the pool's shards");
                    continue;
                }
            };
            if swept.moved > 0 {
                tracing::info!(%coin, moves = swept.moved, "crumbs on more shards than one batch closes were moved together");
                report.moved += swept.moved;
            }
            if !swept.formed.is_empty() {
                metrics::batch_formed(FormedBy::Sweep, swept.formed.len() as u64);
            }
            for batch in swept.formed {
                tracing::info!(batch_id = %batch, %coin, "a batch formed from money spread over shards");
                self.send_formed(batch, report).await;
            }
        }
        if let (Some(coins), Some(wait)) = (wait_coins, &self.wait) {
            self.bound_wait(pooling, wait, coins, report).await;
        }
    }

    /// Sends a batch the sweep or a top-up formed. A failed send leaves a
    /// READY batch: the outbox sends it later.
    async fn send_formed(&self, batch: BatchId, report: &mut ReconcileReport) {
        if let Err(error) = self.queue.send(batch).await {
            report.failed.push((batch, error));
        }
        report.swept.push(batch);
    }

    fn wait_is_due(&self) -> bool {
        let Some(wait) = &self.wait else { return false };
        let Ok(mut checked) = self.wait_checked.lock() else { return false };
        let now = tokio::time::Instant::now();
        match *checked {
            Some(at) if now < at + wait.every => false,
            _ => {
                *checked = Some(now);
                true
            }
        }
    }

    /// Each coin's oldest pending order against the policy; a top-up's
    /// batch goes to the settle queue like any other.
    async fn bound_wait(&self, pooling: &Pooling, wait: &BoundedWait, coins: Vec<Coin>, report: &mut ReconcileReport) {
        use futures::StreamExt;
        let now = self.clock.now();
        // Coins at once, as the sweep takes them.
        let checked: Vec<(Coin, Result<WaitReport, InfraError>)> = futures::stream::iter(coins)
            .map(|coin| async move {
                let price = wait.prices.quote(coin.as_str()).ok().map(|(_, price)| price);
                let applied = pooling.bound_wait(&coin, price, wait.policy.as_ref()).await;
                (coin, applied)
            })
            .buffer_unordered(Self::COINS_AT_ONCE)
            .collect()
            .await;
        let mut longest: f64 = 0.0;
        for (coin, applied) in checked {
            let applied = match applied {
                Ok(applied) => applied,
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), %coin, "could not apply the wait policy");
                    continue;
                }
            };
            let waited = applied.oldest.map_or(0.0, |oldest| (now - oldest).as_seconds_f64().max(0.0));
            metrics::oldest_pending(&coin, waited);
            longest = longest.max(waited);
            if applied.unpriced {
                tracing::warn!(%coin, "a pool waited too long, but its coin has no price: the house cannot buy it, so its orders that waited too long are canceled");
            }
            if applied.canceled > 0 {
                tracing::info!(%coin, orders = applied.canceled, "orders that waited too long were canceled");
                metrics::order_canceled(CanceledBy::WaitPolicy, u64::from(applied.canceled));
            }
            if let Some(balance) = applied.house_balance {
                metrics::house_balance(balance);
            }
            if let Some(cost) = applied.house_short {
                tracing::error!(%coin, %cost, "the house account cannot pay a top-up: an operator must fund it");
                metrics::top_up(metrics::TopUpOutcome::HouseShort);
            }
            if let Some(batch) = applied.topped_up {
                tracing::info!(%coin, batch_id = %batch, "the house completed a pool that waited too long");
                metrics::top_up(metrics::TopUpOutcome::Formed);
                metrics::batch_formed(FormedBy::TopUp, 1);
                self.send_formed(batch, report).await;
            }
        }
        metrics::oldest_pending_any(longest);
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use rust_decimal::Decimal;
    use time::{Duration, OffsetDateTime};

    use super::*;
    use crate::adapters::dynamodb::DynamoStore;
    use crate::domain::{Coin, NewOrder, OrderId, Quantity, Usd, UserId};
    use crate::ports::{Accounts, Orders, Settlements};

    struct FixedClock(OffsetDateTime);

    impl Clock for FixedClock {
        fn now(&self) -> OffsetDateTime {
            self.0
        }
    }

    /// A queue that records what it was sent and fails for chosen batches.
    #[derive(Default)]
    struct RecordingQueue {
        sent: Mutex<Vec<BatchId>>,
        failing: Mutex<Vec<BatchId>>,
    }

    #[async_trait]
    impl SettleQueue for RecordingQueue {
        async fn send(&self, batch: BatchId) -> Result<(), InfraError> {
            if self.failing.lock().unwrap().contains(&batch) {
                return Err(InfraError::new("send", "queue unavailable"));
            }
            self.sent.lock().unwrap().push(batch);
            Ok(())
        }

        async fn send_after(&self, batch: BatchId, _: std::time::Duration) -> Result<(), InfraError> {
            self.send(batch).await
        }
    }

    /// A queue whose sends let others run first, so that reconcilers
    /// running at once interleave as separate processes do.
    #[derive(Default)]
    struct SlowQueue {
        sent: Mutex<Vec<BatchId>>,
    }

    #[async_trait]
    impl SettleQueue for SlowQueue {
        async fn send(&self, batch: BatchId) -> Result<(), InfraError> {
            tokio::task::yield_now().await;
            self.sent.lock().unwrap().push(batch);
            Ok(())
        }

        async fn send_after(&self, batch: BatchId, _: std::time::Duration) -> Result<(), InfraError> {
            self.send(batch).await
        }
    }

    fn policy() -> ResendPolicy {
        ResendPolicy {
            ready_after: Duration::minutes(1),
            backoff: Duration::minutes(5),
            backoff_cap: Duration::hours(1),
            max_attempts: 3,
        }
    }

    fn start() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    /// A store with a `READY` batch of its own formed at `start()`, per user.
    async fn ready_batches(users: &[&str]) -> (Arc<DynamoStore>, Vec<BatchId>) {
        let store = Arc::new(DynamoStore::in_memory());
        let mut batches = Vec::new();
        for name in users {
            let user = UserId::parse(name).unwrap();
            store.open_account(&user, Usd::new(Decimal::from(100)).unwrap()).await.unwrap();
            let order = NewOrder {
                id: OrderId::generate(),
                user,
                coin: Coin::from_trusted("ABAN"),
                amount: Quantity::parse("3").unwrap(),
                price: Usd::new(Decimal::from(4)).unwrap(),
                cost: Usd::new(Decimal::from_str("12").unwrap()).unwrap(),
                idempotency_key: None,
                created_at: start(),
            };
            // Placed, but its message never sent (the process died).
            batches.push(store.place_order(order, Usd::new(Decimal::TEN).unwrap()).await.unwrap().formed.unwrap());
        }
        (store, batches)
    }

    async fn run_at(store: &Arc<DynamoStore>, queue: &Arc<RecordingQueue>, seconds: i64) -> ReconcileReport {
        let clock = Arc::new(FixedClock(start() + Duration::seconds(seconds)));
        Reconciler::new(store.clone(), queue.clone(), clock, policy()).run_once().await.unwrap()
    }

    #[tokio::test]
    async fn a_batch_whose_message_was_lost_is_sent_again_less_and_less_often() {
        let (store, batches) = ready_batches(&["alice"]).await;
        let queue = Arc::new(RecordingQueue::default());

        assert!(run_at(&store, &queue, 30).await.resent.is_empty(), "its message may still be in flight");
        assert_eq!(run_at(&store, &queue, 61).await.resent, batches);
        // Still READY (the queue is backed up): not every minute, but after two, then four.
        assert!(run_at(&store, &queue, 121).await.resent.is_empty());
        assert_eq!(run_at(&store, &queue, 182).await.resent, batches);
        assert!(run_at(&store, &queue, 182 + 200).await.resent.is_empty());
        assert_eq!(run_at(&store, &queue, 182 + 241).await.resent, batches);
        assert_eq!(queue.sent.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_failed_attempt_is_left_to_the_queue_then_backed_off_then_left_to_an_operator() {
        let (store, batches) = ready_batches(&["alice"]).await;
        let batch = batches[0];
        let queue = Arc::new(RecordingQueue::default());
        let lease = Duration::seconds(30);
        // Attempt 1 at 0 s fails with an unknown outcome and gives its lease back at once.
        let claimed_at = start();
        store.claim_batch(batch, claimed_at, claimed_at + lease).await.unwrap();
        store.release_batch(batch, 1, claimed_at).await.unwrap();

        // The queue redelivers the message by itself: the reconciler waits.
        assert!(run_at(&store, &queue, 60).await.resent.is_empty(), "re-sent at once after a released lease");
        assert!(run_at(&store, &queue, 299).await.resent.is_empty());
        assert_eq!(run_at(&store, &queue, 301).await.resent, batches);

        // Attempts 2 and 3 fail too: after the last one, an operator's.
        for attempt in 2..=3u32 {
            let at = start() + Duration::seconds(400 * i64::from(attempt));
            store.claim_batch(batch, at, at + lease).await.unwrap();
            store.release_batch(batch, attempt, at).await.unwrap();
        }
        let report = run_at(&store, &queue, 100_000).await;
        assert!(report.resent.is_empty());
        assert_eq!(report.left_to_operator, batches);
    }

    /// Every process runs a reconciler locally, and scheduled runs can
    /// overlap when deployed: a batch due again is sent by one of them.
    #[tokio::test]
    async fn reconcilers_running_at_once_send_each_due_batch_once() {
        let (store, batches) = ready_batches(&["alice", "bob", "carol"]).await;
        let queue = Arc::new(SlowQueue::default());
        let clock = Arc::new(FixedClock(start() + Duration::seconds(61)));
        let reconciler = || Reconciler::new(store.clone(), queue.clone(), clock.clone(), policy());
        let (a, b, c) = (reconciler(), reconciler(), reconciler());

        let reports = tokio::join!(a.run_once(), b.run_once(), c.run_once());

        let reports = [reports.0, reports.1, reports.2];
        let mut resent: Vec<BatchId> = reports.into_iter().flat_map(|r| r.unwrap().resent).collect();
        resent.sort();
        let mut sent = queue.sent.lock().unwrap().clone();
        sent.sort();
        let mut expected = batches.clone();
        expected.sort();
        assert_eq!(sent, expected, "each batch sent once");
        assert_eq!(resent, expected);
        for batch in batches {
            assert_eq!(store.batch(batch).await.unwrap().unwrap().resends, 1);
        }
    }

    #[tokio::test]
    async fn one_failed_send_does_not_stop_the_others() {
        let (store, batches) = ready_batches(&["alice", "bob", "carol"]).await;
        let queue = Arc::new(RecordingQueue::default());
        queue.failing.lock().unwrap().push(batches[1]);

        let report = run_at(&store, &queue, 61).await;

        let mut expected = vec![batches[0], batches[2]];
        expected.sort();
        assert_eq!(report.resent, expected);
        assert_eq!(report.failed.len(), 1);
        // The failed one is due again on the next run; the others wait.
        queue.failing.lock().unwrap().clear();
        assert_eq!(run_at(&store, &queue, 62).await.resent, vec![batches[1]]);
    }

    /// The sweep's wait check: a pool that waited past the policy is
    /// completed by the house, and its batch goes to the settle queue; the
    /// check runs once per `every`, not at every sweep.
    #[tokio::test]
    async fn a_pool_that_waited_too_long_is_topped_up_and_its_batch_sent() {
        use crate::ports::{WaitAction, WaitPolicy};
        let store = Arc::new(DynamoStore::in_memory());
        let ten = Usd::new(Decimal::TEN).unwrap();
        for (name, balance) in [("alice", 100), ("house", 50)] {
            let user = UserId::parse(name).unwrap();
            store.open_account(&user, Usd::new(Decimal::from(balance)).unwrap()).await.unwrap();
        }
        store.place_order(crate::adapters::dynamodb::testing::order_at("alice", "1", start()), ten).await.unwrap();
        let queue = Arc::new(RecordingQueue::default());
        let reconciler_at = |seconds: i64| {
            let clock = Arc::new(FixedClock(start() + Duration::seconds(seconds)));
            Reconciler::new(store.clone(), queue.clone(), clock, policy())
                .sweeping(
                    store.clone(),
                    PoolSweep {
                        coins: vec![Coin::from_trusted("ABAN")],
                        minimum: ten,
                        rules: crate::domain::SweepRules::default(),
                        shards: crate::domain::ShardRules::default(),
                        every: std::time::Duration::from_millis(250),
                    },
                )
                .bounding_wait(Some(BoundedWait {
                    policy: Some(WaitPolicy {
                        max_wait: Duration::minutes(15),
                        action: WaitAction::TopUp { house: UserId::parse("house").unwrap() },
                    }),
                    prices: PriceList::default(),
                    every: std::time::Duration::from_secs(5),
                }))
        };

        assert!(reconciler_at(14 * 60).sweep().await.swept.is_empty(), "within the limit");
        let late = reconciler_at(16 * 60);
        let report = late.sweep().await;
        assert_eq!(report.swept.len(), 1, "{report:?}");
        assert_eq!(*queue.sent.lock().unwrap(), report.swept);
        let batch = store.batch(report.swept[0]).await.unwrap().unwrap();
        assert_eq!((batch.usd, batch.count), (ten, 2));
        // The next sweep, within `every`, does not check again.
        assert!(late.sweep().await.swept.is_empty());
    }
}
