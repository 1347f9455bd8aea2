//! The models a deterministic simulation drives the real code against: a
//! virtual clock that jumps, a table that takes time and checks the money
//! invariants after every write, an SQS-like queue (at-least-once,
//! reordered, redelivered, dead letters), and an exchange that answers in
//! every way the protocol allows and checks how it is spoken to.
//!
//! Everything random comes from one seeded [`Dice`] and everything runs on
//! one thread in tokio's paused (virtual) time, so a seed replays exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod exchange;
pub mod queue;
pub mod table;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::ports::Clock;
use time::OffsetDateTime;

/// The one source of randomness of a run.
pub struct Dice(Mutex<StdRng>);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(Mutex::new(StdRng::seed_from_u64(seed)))
    }

    /// True with probability `p`.
    pub fn chance(&self, p: f64) -> bool {
        self.0.lock().unwrap().random_bool(p.clamp(0.0, 1.0))
    }

    /// A number in `0..n`.
    pub fn below(&self, n: usize) -> usize {
        self.0.lock().unwrap().random_range(0..n.max(1))
    }

    pub fn millis(&self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(self.0.lock().unwrap().random_range(range))
    }

    pub fn seed(&self) -> u64 {
        self.0.lock().unwrap().random()
    }

    pub fn pick<'a, T>(&self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What a run shares: its dice, its phase, and the first invariant broken.
pub struct World {
    pub dice: Dice,
    /// Faults are injected while this holds (the load phase).
    pub faults: AtomicBool,
    /// Table writes so far: a run's steps.
    pub steps: AtomicU64,
    violation: Mutex<Option<String>>,
}

impl World {
    pub fn new(seed: u64) -> Arc<World> {
        Arc::new(World {
            dice: Dice::new(seed),
            faults: AtomicBool::new(true),
            steps: AtomicU64::new(0),
            violation: Mutex::new(None),
        })
    }

    pub fn faults_on(&self) -> bool {
        self.faults.load(Ordering::Relaxed)
    }

    /// Records a broken invariant (the first one is kept).
    pub fn violated(&self, what: String) {
        let step = self.steps.load(Ordering::Relaxed);
        let mut violation = self.violation.lock().unwrap();
        if violation.is_none() {
            *violation = Some(format!("at step {step}: {what}"));
        }
    }

    pub fn violation(&self) -> Option<String> {
        self.violation.lock().unwrap().clone()
    }
}

/// Virtual time as a wall clock: tokio's paused clock, plus this process's
/// skew, plus the jumps the run made (every process sees those).
pub struct SimClock {
    epoch: OffsetDateTime,
    start: tokio::time::Instant,
    jumps_ms: Arc<AtomicI64>,
    skew: time::Duration,
}

impl SimClock {
    pub fn new(start: tokio::time::Instant, jumps_ms: Arc<AtomicI64>, skew: time::Duration) -> SimClock {
        let epoch = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        SimClock { epoch, start, jumps_ms, skew }
    }
}

impl Clock for SimClock {
    fn now(&self) -> OffsetDateTime {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        let jumped = time::Duration::milliseconds(self.jumps_ms.load(Ordering::Relaxed));
        self.epoch + elapsed + jumped + self.skew
    }
}
