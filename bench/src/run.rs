//! One point of a curve: a table (the model, or an emulator), Lambda-like
//! instances placing the orders that arrive, the reconciler's sweep and
//! settlement running beside them as deployed; then what it came to.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use shared::adapters::dynamodb::table::Table;
use shared::adapters::dynamodb::table::memory::MemoryTable;
use shared::adapters::dynamodb::table::sdk::SdkTable;
use shared::adapters::dynamodb::{DynamoStore, schema};
use shared::audit::audit;
use shared::config::RESEND_POLICY;
use shared::domain::{BatchId, NewOrder, ShardRules, SweepRules, Usd};
use shared::ports::{
    Accounts, Claim, Clock, InfraError, LedgerRecords, Orders, PlaceError, SettleQueue, Settlements, SystemClock,
};
use shared::reconcile::{PoolSweep, Reconciler};
use testkit::contention::{ContendedTable, ContentionRules, Ledger};
use testkit::recording::RecordingTable;
use testkit::sim::SimClock;
use tokio::time::Instant;

use crate::earliest::{self, Waits};
use crate::traffic::{Mix, next_arrival, usd};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The contention model of DynamoDB, in virtual time.
    Model,
    DynamodbLocal,
    Ministack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// One pool item per coin.
    OnePool,
    /// The pool over shards.
    Sharded,
}

impl Design {
    pub fn name(self) -> &'static str {
        match self {
            Design::OnePool => "one pool item",
            Design::Sharded => "sharded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// Orders arrive at random (a Poisson process) at this many a second;
    /// each is served by an idle instance, or a new one if none is idle,
    /// as Lambda does.
    Poisson { rate: f64 },
    /// Each writer places its next order as soon as the last is answered.
    BackToBack { writers: usize },
}

impl Arrivals {
    pub fn describe(&self) -> String {
        match self {
            Arrivals::Poisson { rate } => format!("{rate:.0}/s Poisson"),
            Arrivals::BackToBack { writers } => format!("{writers} writers back to back"),
        }
    }
}

/// Which idle instance Lambda hands a request to: AWS does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dispatch {
    /// Any idle instance, at random: the fewest requests per instance, so
    /// each instance's shard fills slowest (the case the figures quote).
    Random,
    /// The one that finished last: a few instances take most requests.
    Recent,
}

pub struct Setup {
    pub target: Target,
    pub dispatch: Dispatch,
    pub design: Design,
    pub arrivals: Arrivals,
    pub mix: Mix,
    pub load: Duration,
    /// Load before the measured part, not counted: a rally's start (every
    /// coin on one shard, instances starting) is its own regime.
    pub warmup: Duration,
    /// How long the sweep and settlement go on after the load.
    pub after: Duration,
    pub rules: ContentionRules,
    pub shards: ShardRules,
    /// The reconciler's sweep: its rules, and how often it runs.
    pub sweep: SweepRules,
    pub sweep_every: Duration,
    /// Lambda's concurrency: instances at most (the account's default is
    /// 1,000), and new instances at most per 10 s (1,000 per function).
    pub concurrency: usize,
    pub burst: usize,
}

impl Setup {
    /// A point on the model with the service's own settings: `arrivals` of
    /// `mix` for `load` (measured after `warmup`), then 3 s of sweeping and
    /// settling; a table warmed to `warm` write units a second.
    pub fn model(arrivals: Arrivals, mix: Mix, warmup: Duration, load: Duration, warm: u64) -> Setup {
        Setup {
            target: Target::Model,
            dispatch: Dispatch::Random,
            design: Design::Sharded,
            arrivals,
            mix,
            load,
            warmup,
            after: Duration::from_secs(3),
            rules: ContentionRules::default().warmed_to(warm),
            shards: ShardRules::default(),
            sweep: shared::config::sweep_rules(),
            sweep_every: shared::config::POOL_SWEEP_EVERY,
            concurrency: 1000,
            burst: 1000,
        }
    }
}

/// What a point came to.
pub struct Outcome {
    pub placed: u64,
    pub busy: u64,
    pub failed: u64,
    pub latencies: Vec<Duration>,
    /// The instances that served the load (Lambda's concurrency).
    pub instances: usize,
    /// Orders Lambda refused: no instance free and none could start
    /// (concurrency or burst limit; a 429 to the client).
    pub lambda_throttled: u64,
    /// What the model counted: the placement path, the reconciler's sweep,
    /// settlement (on an emulator, requests only).
    pub placement: Ledger,
    pub sweep: Ledger,
    pub settle: Ledger,
    /// Requests on the placement path, counted outside the model.
    pub placement_requests: u64,
    pub batches: u64,
    pub waits: Waits,
    pub open_after: Decimal,
    pub most_shards: usize,
    /// Shards each coin's pool has had.
    pub shards_by_coin: std::collections::HashMap<String, usize>,
    pub audit_problems: usize,
}

fn minimum() -> Usd {
    usd("10")
}

/// Settlement as deployed, reduced to its writes: the message takes a
/// while to arrive (SQS, then Lambda), the claim, the exchange's answer a
/// while later, the fill recorded.
struct Settling {
    store: Arc<DynamoStore>,
    clock: Arc<dyn Clock>,
    formed: std::sync::atomic::AtomicU64,
}

const DELIVERY: Duration = Duration::from_millis(25);
const EXCHANGE: Duration = Duration::from_millis(40);

#[async_trait]
impl SettleQueue for Settling {
    async fn send(&self, batch: BatchId) -> Result<(), InfraError> {
        self.formed.fetch_add(1, Ordering::Relaxed);
        let (store, clock) = (Arc::clone(&self.store), Arc::clone(&self.clock));
        tokio::spawn(async move {
            tokio::time::sleep(DELIVERY).await;
            let now = clock.now();
            let Ok(Claim::Claimed(claimed)) = store.claim_batch(batch, now, now + time::Duration::seconds(30)).await
            else {
                return;
            };
            tokio::time::sleep(EXCHANGE).await;
            if let Err(error) = store.settle_batch(batch, claimed.attempts, &format!("x-{batch}")).await {
                eprintln!("settle {batch}: {error}");
            }
        });
        Ok(())
    }

    /// The bench's settler never finds a batch held: nothing sends later.
    async fn send_after(&self, batch: BatchId, _: Duration) -> Result<(), InfraError> {
        self.send(batch).await
    }
}

/// Lambda's instances: a request takes an idle one (any), or starts one,
/// within the function's concurrency and its burst of new instances.
struct Instances {
    stores: Mutex<Vec<Arc<DynamoStore>>>,
    idle: Mutex<Vec<usize>>,
    make: Box<dyn Fn(u64) -> DynamoStore + Send + Sync>,
    rng: Mutex<StdRng>,
    dispatch: Dispatch,
    concurrency: usize,
    burst: usize,
    /// When each instance started (the burst limit counts the last 10 s).
    started: Mutex<std::collections::VecDeque<Instant>>,
}

impl Instances {
    /// An instance for a request, or `None`: Lambda throttles it.
    fn take(&self) -> Option<(usize, Arc<DynamoStore>)> {
        let mut idle = self.idle.lock().unwrap();
        let mut stores = self.stores.lock().unwrap();
        if idle.is_empty() {
            let now = Instant::now();
            let mut started = self.started.lock().unwrap();
            while started.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(10)) {
                started.pop_front();
            }
            if stores.len() >= self.concurrency || started.len() >= self.burst {
                return None;
            }
            started.push_back(now);
            let index = stores.len();
            stores.push(Arc::new((self.make)(index as u64)));
            return Some((index, Arc::clone(&stores[index])));
        }
        let index = match self.dispatch {
            Dispatch::Random => {
                let pick = self.rng.lock().unwrap().random_range(0..idle.len());
                idle.swap_remove(pick)
            }
            Dispatch::Recent => idle.pop().unwrap_or_default(),
        };
        Some((index, Arc::clone(&stores[index])))
    }

    fn give_back(&self, index: usize) {
        self.idle.lock().unwrap().push(index);
    }

    fn count(&self) -> usize {
        self.stores.lock().unwrap().len()
    }
}

#[derive(Default)]
struct Tally {
    placed: u64,
    busy: u64,
    failed: u64,
    lambda_throttled: u64,
    latencies: Vec<Duration>,
}

impl Tally {
    fn note(&mut self, result: &Result<shared::ports::Placed, PlaceError>, took: Duration) {
        match result {
            Ok(_) => {
                self.placed += 1;
                self.latencies.push(took);
            }
            Err(PlaceError::Busy) => self.busy += 1,
            Err(error) => {
                self.failed += 1;
                if self.failed == 1 {
                    eprintln!("placement failed: {error}");
                }
            }
        }
    }
}

async fn emulator_table(target: Target) -> Arc<dyn Table> {
    let variable = if target == Target::Ministack { "MINISTACK_ENDPOINT" } else { "DYNAMODB_LOCAL_ENDPOINT" };
    let endpoint = std::env::var(variable).unwrap_or_else(|_| panic!("{variable} is not set"));
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "bench"))
        .timeout_config(shared::adapters::aws::timeouts())
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let name = format!("hot-coin-{}", ulid::Ulid::new().to_string().to_lowercase());
    schema::ensure_table(&client, &name).await.unwrap();
    Arc::new(SdkTable::new(client, name))
}

pub async fn point(setup: &Setup) -> Outcome {
    // The tables: the model's three handles share its state; each keeps
    // its own ledger.
    let base: Arc<dyn Table>;
    let (placing, sweeping, settling): (Arc<dyn Table>, Arc<dyn Table>, Arc<dyn Table>);
    let mut model: Option<[Arc<ContendedTable>; 3]> = None;
    match setup.target {
        Target::Model => {
            let memory = Arc::new(MemoryTable::new());
            let placement = Arc::new(ContendedTable::new(Arc::clone(&memory), setup.rules));
            let sweep = Arc::new(placement.observer());
            let settle = Arc::new(placement.observer());
            base = memory;
            (placing, sweeping, settling) = (placement.clone(), sweep.clone(), settle.clone());
            model = Some([placement, sweep, settle]);
        }
        target => {
            base = emulator_table(target).await;
            (placing, sweeping, settling) = (Arc::clone(&base), Arc::clone(&base), Arc::clone(&base));
        }
    }
    let setup_store = DynamoStore::on(Arc::clone(&base));
    for user in 0..setup.mix.users {
        setup_store.open_account(&Mix::user(user), usd("1000000000")).await.unwrap();
    }
    let watched = ["COIN#", "ACCOUNT#", "BATCH#"];
    let recording = Arc::new(RecordingTable::new(placing, &watched));
    let sweep_recording = Arc::new(RecordingTable::new(sweeping, &watched));

    let start = Instant::now();
    let clock: Arc<dyn Clock> = match setup.target {
        Target::Model => Arc::new(SimClock::new(start, Arc::new(AtomicI64::new(0)), time::Duration::ZERO)),
        _ => Arc::new(SystemClock),
    };
    let shards = match setup.design {
        Design::OnePool => ShardRules { max: 1, ..setup.shards },
        Design::Sharded => setup.shards,
    };
    let queue = Arc::new(Settling {
        store: Arc::new(DynamoStore::on(settling).with_clock(Arc::clone(&clock))),
        clock: Arc::clone(&clock),
        formed: Default::default(),
    });
    let instances = {
        let (table, clock) = (recording.clone() as Arc<dyn Table>, Arc::clone(&clock));
        Arc::new(Instances {
            stores: Mutex::default(),
            idle: Mutex::default(),
            make: Box::new(move |seed| {
                DynamoStore::on(Arc::clone(&table))
                    .with_clock(Arc::clone(&clock))
                    .with_jitter_seed(seed)
                    .with_shard_rules(shards)
            }),
            rng: Mutex::new(StdRng::seed_from_u64(1)),
            dispatch: setup.dispatch,
            concurrency: setup.concurrency,
            burst: setup.burst,
            started: Mutex::default(),
        })
    };

    // The reconciler's sweep, as deployed, throughout.
    let sweeper_store =
        Arc::new(DynamoStore::on(sweep_recording.clone()).with_clock(Arc::clone(&clock)).with_shard_rules(shards));
    let reconciler = Reconciler::new(sweeper_store.clone(), queue.clone(), Arc::clone(&clock), RESEND_POLICY).sweeping(
        sweeper_store,
        PoolSweep {
            coins: setup.mix.coins.clone(),
            minimum: minimum(),
            rules: setup.sweep,
            shards,
            every: setup.sweep_every,
        },
    );
    let done = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let done = Arc::clone(&done);
        let every = setup.sweep_every;
        async move {
            let mut rounds = Vec::new();
            // As `Reconciler::run_until` does: sweeps start `every` apart.
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !done.load(Ordering::Relaxed) {
                ticks.tick().await;
                let began = Instant::now();
                reconciler.sweep().await;
                rounds.push(began.elapsed());
            }
            if std::env::var("HOT_COIN_DEBUG").is_ok() {
                rounds.sort();
                let at = |p: usize| rounds.get(rounds.len() * p / 100).copied().unwrap_or_default();
                eprintln!("sweep rounds: {}, took p50 {:?} p90 {:?} p99 {:?}", rounds.len(), at(50), at(90), at(99));
            }
        }
    };

    let measured_from = start + setup.warmup;
    let load_end = measured_from + setup.load;
    // What the model counted before the measured part, taken off at the end.
    let before = {
        let model = model.clone();
        let (recording, queue) = (recording.clone(), queue.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(measured_from).await;
            let ledgers = model.as_ref().map(|m| [m[0].ledger(), m[1].ledger(), m[2].ledger()]).unwrap_or_default();
            (ledgers, recording.requests(), queue.formed.load(Ordering::Relaxed))
        })
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    // When each order arrived, by its id: its wait is counted from then.
    let arrived: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let load = {
        let (tally, instances, queue, mix) =
            (Arc::clone(&tally), Arc::clone(&instances), queue.clone(), setup.mix.clone());
        let (arrived, clock) = (Arc::clone(&arrived), Arc::clone(&clock));
        let arrivals = setup.arrivals;
        let done = Arc::clone(&done);
        let after = setup.after;
        async move {
            let mut rng = StdRng::seed_from_u64(7);
            let mut serial = 0u64;
            let mut running = Vec::new();
            match arrivals {
                Arrivals::Poisson { rate } => {
                    let mut at = start;
                    loop {
                        at += next_arrival(&mut rng, rate);
                        if at >= load_end {
                            break;
                        }
                        tokio::time::sleep_until(at).await;
                        serial += 1;
                        let order = NewOrder { created_at: clock.now(), ..mix.order(&mut rng, serial) };
                        arrived.lock().unwrap().insert(order.id.to_string(), at);
                        let (tally, instances, queue) = (Arc::clone(&tally), Arc::clone(&instances), queue.clone());
                        running.push(tokio::spawn(async move {
                            let Some((index, store)) = instances.take() else {
                                if at >= measured_from {
                                    tally.lock().unwrap().lambda_throttled += 1;
                                }
                                return;
                            };
                            let began = Instant::now();
                            let result = store.place_order(order, minimum()).await;
                            let took = began.elapsed();
                            instances.give_back(index);
                            if let Ok(Some(batch)) = result.as_ref().map(|p| p.formed) {
                                let _ = queue.send(batch).await;
                            }
                            if began >= measured_from {
                                tally.lock().unwrap().note(&result, took);
                            }
                        }));
                    }
                }
                Arrivals::BackToBack { writers } => {
                    for writer in 0..writers {
                        let (tally, instances, queue, mix) =
                            (Arc::clone(&tally), Arc::clone(&instances), queue.clone(), mix.clone());
                        let (arrived, clock) = (Arc::clone(&arrived), Arc::clone(&clock));
                        running.push(tokio::spawn(async move {
                            let mut rng = StdRng::seed_from_u64(writer as u64);
                            let Some((_, store)) = instances.take() else { return };
                            let mut serial = (writer as u64) << 32;
                            while Instant::now() < load_end {
                                serial += 1;
                                let began = Instant::now();
                                let order = NewOrder { created_at: clock.now(), ..mix.order(&mut rng, serial) };
                                arrived.lock().unwrap().insert(order.id.to_string(), began);
                                let result = store.place_order(order, minimum()).await;
                                let took = began.elapsed();
                                if let Ok(Some(batch)) = result.as_ref().map(|p| p.formed) {
                                    let _ = queue.send(batch).await;
                                }
                                if began >= measured_from {
                                    tally.lock().unwrap().note(&result, took);
                                }
                            }
                        }));
                    }
                }
            }
            futures::future::join_all(running).await;
            tokio::time::sleep(after).await;
            done.store(true, Ordering::Relaxed);
        }
    };
    let ((), ()) = tokio::join!(load, sweeper);
    let end = Instant::now();

    let mut log = recording.log();
    log.extend(sweep_recording.log());
    let arrived = std::mem::take(&mut *arrived.lock().unwrap());
    let waits = earliest::replay(&log, &arrived, minimum().value(), measured_from, load_end, end);
    let (earlier, requests_before, batches_before) = before.await.unwrap();
    let ledger = setup_store.ledger().await.unwrap();
    let open_after = ledger.pools.iter().map(|p| p.state.usd.value()).sum();
    let most_shards =
        setup.mix.coins.iter().map(|coin| ledger.pools.iter().filter(|p| &p.coin == coin).count()).max().unwrap_or(0);
    let report = audit(&ledger, minimum());
    if !report.is_clean() {
        eprintln!("{report}");
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let mut latencies = tally.latencies;
    latencies.sort();
    let ledgers = model.as_ref().map(|m| [m[0].ledger(), m[1].ledger(), m[2].ledger()]).unwrap_or_default();
    let [placement, sweep, settle] = [0, 1, 2].map(|i| ledgers[i].since(&earlier[i]));
    Outcome {
        placed: tally.placed,
        busy: tally.busy,
        failed: tally.failed,
        latencies,
        instances: instances.count(),
        lambda_throttled: tally.lambda_throttled,
        placement,
        sweep,
        settle,
        placement_requests: recording.requests() - requests_before,
        batches: queue.formed.load(Ordering::Relaxed) - batches_before,
        waits,
        open_after,
        most_shards,
        shards_by_coin: setup
            .mix
            .coins
            .iter()
            .map(|coin| (coin.to_string(), ledger.pools.iter().filter(|p| &p.coin == coin).count()))
            .collect(),
        audit_problems: report.problems.len(),
    }
}
