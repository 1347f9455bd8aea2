//! What this process believes each coin's pool is, and the lane that makes
//! its pooled orders take turns on the pool item.
//!
//! The cache lives inside the lane's mutex: the only way to read or write it
//! is to hold the coin's turn, so no order can change it while another
//! order of the same coin is between deciding from it and recording what
//! its transaction did. (Orders of the minimum or more never touch the
//! pool, and never take the turn.) The cache is only a guess: other
//! processes move the pool too, and every transaction's condition checks
//! the guess against the pool item itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::domain::{Coin, NewOrder, Placement, PoolState};

/// A coin's pool as this process last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct CachedPool {
    pub state: PoolState,
    /// Whether the pool item exists (the first order of a coin creates it).
    pub exists: bool,
}

type Lane = Arc<tokio::sync::Mutex<Option<CachedPool>>>;

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
pub(super) struct Turn(OwnedMutexGuard<Option<CachedPool>>);

impl Turn {
    pub fn cached(&self) -> Option<CachedPool> {
        *self.0
    }

    pub fn remember(&mut self, pool: CachedPool) {
        *self.0 = Some(pool);
    }

    pub fn forget(&mut self) {
        *self.0 = None;
    }

    /// Applies a committed placement to the cache. Only this process's
    /// order moved it here; others may have moved the pool too, which the
    /// next transaction's condition finds out.
    pub fn note_committed(&mut self, new: &NewOrder, placement: &Placement) {
        let Some(cached) = self.0.as_mut() else { return };
        match *placement {
            Placement::OwnBatch => {}
            Placement::Join { seq } if cached.state.seq == seq => {
                cached.state = cached.state.after(placement, new.cost, new.amount);
                cached.exists = true;
            }
            Placement::Cross { seq, .. } if cached.state.seq == seq => {
                *cached = CachedPool { state: PoolState { seq: seq + 1, ..PoolState::default() }, exists: true };
            }
            // Decided from another state than the cache's: it cannot be trusted.
            Placement::Join { .. } | Placement::Cross { .. } => *self.0 = None,
        }
    }
}
