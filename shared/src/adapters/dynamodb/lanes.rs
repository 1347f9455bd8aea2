//! A process's pooled orders of one coin take turns (a per-coin async
//! mutex, the coin's *lane*), and what the process knows of that coin's
//! pool lives inside the turn: the shard it places on (its *home*), that
//! shard's pool as the process last saw it, and the coin's shard count.
//!
//! Concurrent transactions on one shard would only cancel each other, so
//! taking turns costs nothing in throughput, and keeps what the process
//! knows exact as long as it is the shard's only writer: an order that
//! closes the shard then closes it in one request. Other processes move
//! the shard too; a close decided from an old view fails its condition and
//! the cancellation returns the shard as it is. (Joins need no exact view:
//! see `domain::pooling::placement`.) Orders of the minimum or more never
//! touch a pool, and never take the turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::domain::{Coin, Member, NewOrder, Placement, ShardCount, ShardPool};

/// What this process knows of one coin's pool.
#[derive(Debug, Default)]
pub(super) struct CoinLane {
    /// The shard this process places the coin's orders on.
    pub home: Option<u32>,
    /// The home shard's pool as last seen (`None`: not seen).
    pub known: Option<ShardPool>,
    /// The coin's shard count, and when it was read.
    pub count: Option<(ShardCount, Instant)>,
}

type Lane = Arc<tokio::sync::Mutex<CoinLane>>;

#[derive(Default)]
pub(super) struct Lanes {
    lanes: Mutex<HashMap<Coin, Lane>>,
}

impl Lanes {
    /// Waits for the coin's turn.
    pub async fn enter(&self, coin: &Coin) -> Turn {
        let lane = {
            // The map only hands out lanes: a panic elsewhere cannot leave it inconsistent.
            let mut lanes = self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(lanes.entry(coin.clone()).or_default())
        };
        Turn(lane.lock_owned().await)
    }
}

/// One order's turn on its coin's pool, and with it what the process knows.
pub(super) struct Turn(OwnedMutexGuard<CoinLane>);

impl std::ops::Deref for Turn {
    type Target = CoinLane;

    fn deref(&self) -> &CoinLane {
        &self.0
    }
}

impl std::ops::DerefMut for Turn {
    fn deref_mut(&mut self) -> &mut CoinLane {
        &mut self.0
    }
}

impl CoinLane {
    /// Places on `shard` from now on; what was known of the last home goes
    /// (its money stays there: the sweep gathers it).
    pub fn move_home(&mut self, shard: u32) {
        if self.home != Some(shard) {
            self.known = None;
        }
        self.home = Some(shard);
    }

    /// The home shard as a cancellation returned it (or as read).
    pub fn saw(&mut self, pool: ShardPool) {
        if self.home == Some(pool.shard) {
            self.known = Some(pool);
        }
    }

    /// What this process's own committed order did to its home shard.
    /// Others may have written it too: the next close's condition finds
    /// that out.
    pub fn note_committed(&mut self, new: &NewOrder, placement: &Placement) {
        let Some(known) = self.known.as_mut() else { return };
        match placement {
            Placement::OwnBatch => {}
            Placement::Join => {
                let joined = (|| {
                    known.usd = known.usd.checked_add(new.cost)?;
                    known.qty = crate::domain::exact_sum(known.qty, new.amount.value())?;
                    known.count = known.count.checked_add(1)?;
                    known.version += 1;
                    known.members.push(Member { order: new.id, user: new.user.clone(), placed: new.created_at });
                    Some(())
                })();
                // Never guess: seen again next time.
                if joined.is_none() {
                    self.known = None;
                }
            }
            Placement::Cross { .. } => *known = known.closed(),
        }
    }
}
