//! What this process believes of each coin's pool, and the lane that makes
//! its pooled orders of a coin take turns.
//!
//! The cache lives inside the lane's mutex: the only way to read or write it
//! is to hold the coin's turn, so no order can change it while another
//! order of the same coin is between deciding from it and recording what
//! its transaction did. (Orders of the minimum or more never touch the
//! pool, and never take the turn.) The cache is only a guess: other
//! processes move the pool too, and every transaction's condition checks
//! the guess against the pool items themselves.
//!
//! A coin's pool may be spread over shards (docs/design.md, "Scale"): the
//! process places its orders on one of them, its *home*. When it moves to
//! another (another process writes its home), it remembers the shards it
//! left with orders in them, and takes them along in its next batch. A
//! process that was idle a while also looks at the coin's other shards
//! (its *view*), and takes the quiet ones along too: once a rally is over,
//! what the shards hold together batches as one pool would.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::shards::ShardCount;
use crate::domain::{Absorbed, Coin, NewOrder, Placement, PoolState};

/// One shard's pool as this process last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct CachedPool {
    pub state: PoolState,
    /// Whether the pool item exists (the first order of a shard creates it).
    pub exists: bool,
    /// When someone last wrote it (its `updated_ms`), if known.
    pub written_at: Option<OffsetDateTime>,
}

/// What this process knows of one coin's pool.
#[derive(Debug, Default)]
pub(super) struct CoinPools {
    /// The shard this process places its orders on.
    pub home: u32,
    /// Known shards' pools: the home shard's (exact as long as this process
    /// is alone on it), and those it left holding orders.
    pub shards: BTreeMap<u32, CachedPool>,
    /// How many shards the coin has, and when that was read.
    pub shard_count: Option<(ShardCount, Instant)>,
    /// When this process last placed a pooled order of the coin.
    pub last_placed: Option<Instant>,
}

type Lane = Arc<tokio::sync::Mutex<CoinPools>>;

#[derive(Default)]
pub(super) struct PoolCache {
    lanes: Mutex<HashMap<Coin, Lane>>,
}

impl PoolCache {
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

/// One order's turn on its coin's pool, and with it the cache.
pub(super) struct Turn(OwnedMutexGuard<CoinPools>);

impl std::ops::Deref for Turn {
    type Target = CoinPools;

    fn deref(&self) -> &CoinPools {
        &self.0
    }
}

impl std::ops::DerefMut for Turn {
    fn deref_mut(&mut self) -> &mut CoinPools {
        &mut self.0
    }
}

impl CoinPools {
    pub fn cached(&self, shard: u32) -> Option<CachedPool> {
        self.shards.get(&shard).copied()
    }

    pub fn remember(&mut self, shard: u32, pool: CachedPool) {
        self.shards.insert(shard, pool);
    }

    /// Moves home to `shard`. The shard left behind is kept if it holds
    /// orders (this process takes them along in its next batch), forgotten
    /// otherwise.
    pub fn move_home(&mut self, shard: u32) {
        let left = self.home;
        if self.shards.get(&left).is_none_or(|pool| pool.state.count == 0) {
            self.shards.remove(&left);
        }
        self.home = shard;
    }

    /// The shards a batch of this process's may take along: those it left
    /// holding orders, each only if it is still exactly as it left it.
    pub fn carry(&self, at_most: usize) -> Vec<Absorbed> {
        self.shards
            .iter()
            .filter(|(shard, pool)| **shard != self.home && pool.exists && pool.state.count > 0)
            .map(|(shard, pool)| Absorbed { shard: *shard, state: pool.state })
            .take(at_most)
            .collect()
    }

    /// A shard to take along that someone else now writes: theirs to batch.
    pub fn let_go(&mut self, shard: u32) {
        if shard != self.home {
            self.shards.remove(&shard);
        }
    }

    /// Applies a committed placement on the home shard to the cache. Only
    /// this process's order moved it here; others may have moved the pools
    /// too, which the next transaction's conditions find out.
    pub fn note_committed(&mut self, new: &NewOrder, placement: &Placement, at: OffsetDateTime) {
        self.last_placed = Some(Instant::now());
        let home = self.home;
        let Some(cached) = self.shards.get_mut(&home) else { return };
        match placement {
            Placement::OwnBatch => {}
            Placement::Join { seq } if cached.state.seq == *seq => {
                match cached.state.after(placement, new.cost, new.amount) {
                    Some(state) => {
                        cached.state = state;
                        cached.exists = true;
                        cached.written_at = Some(at);
                    }
                    // Never guess: read it again.
                    None => {
                        self.shards.remove(&home);
                    }
                }
            }
            Placement::Cross { seq, absorbed, .. } if cached.state.seq == *seq => {
                *cached = CachedPool { state: cached.state.closed(), exists: true, written_at: Some(at) };
                // Taken along: nothing left there to carry.
                for shard in absorbed {
                    self.shards.remove(&shard.shard);
                }
            }
            // Decided from another state than the cache's: it cannot be trusted.
            Placement::Join { .. } | Placement::Cross { .. } => {
                self.shards.remove(&home);
            }
        }
    }
}
