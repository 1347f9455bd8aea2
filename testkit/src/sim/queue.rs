//! The settle queue as SQS behaves: at least once (a message is now and
//! then delivered twice), in no particular order, invisible while a
//! consumer holds it and visible again after its visibility timeout if the
//! consumer dies, redelivered after a failure, and moved to the dead
//! letters after its receive limit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shared::domain::BatchId;
use shared::ports::{InfraError, SettleQueue};
use tokio::time::Instant;

use super::World;

/// How long a received message stays invisible (the settle function's
/// visibility timeout).
pub const VISIBILITY: Duration = Duration::from_secs(180);
/// Receives before a message goes to the dead letters.
pub const MAX_RECEIVES: u32 = 5;

#[derive(Debug, Clone)]
pub struct Message {
    pub id: u64,
    pub batch: BatchId,
    pub receives: u32,
    visible_at: Instant,
}

#[derive(Default)]
struct State {
    messages: Vec<Message>,
    dead: Vec<Message>,
    next_id: u64,
}

pub struct SimQueue {
    world: Arc<World>,
    state: Mutex<State>,
}

impl SimQueue {
    pub fn new(world: Arc<World>) -> SimQueue {
        SimQueue { world, state: Mutex::default() }
    }

    fn push(&self, batch: BatchId) {
        self.push_visible_at(batch, Instant::now());
    }

    fn push_visible_at(&self, batch: BatchId, visible_at: Instant) {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = state.next_id;
        state.messages.push(Message { id, batch, receives: 0, visible_at });
    }

    /// A visible message, any of them; it turns invisible for the
    /// visibility timeout (or, now and then, stays visible: a duplicate).
    pub fn receive(&self) -> Option<Message> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let visible: Vec<usize> = (0..state.messages.len()).filter(|i| state.messages[*i].visible_at <= now).collect();
        if visible.is_empty() {
            return None;
        }
        let index = visible[self.world.dice.below(visible.len())];
        if state.messages[index].receives >= MAX_RECEIVES {
            let dead = state.messages.swap_remove(index);
            state.dead.push(dead);
            return None;
        }
        let message = &mut state.messages[index];
        message.receives += 1;
        if !self.world.dice.chance(0.03) {
            message.visible_at = now + VISIBILITY;
        }
        Some(message.clone())
    }

    /// Settled: the consumer deletes it.
    pub fn delete(&self, id: u64) {
        self.state.lock().unwrap().messages.retain(|m| m.id != id);
    }

    /// Failed: visible again after a backoff.
    pub fn retry_later(&self, id: u64, after: Duration) {
        let mut state = self.state.lock().unwrap();
        if let Some(message) = state.messages.iter_mut().find(|m| m.id == id) {
            message.visible_at = Instant::now() + after;
        }
    }

    /// What an operator does from the runbook: moves the dead letters back.
    pub fn redrive(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        let dead = std::mem::take(&mut state.dead);
        let count = dead.len();
        let now = Instant::now();
        state.messages.extend(dead.into_iter().map(|m| Message { receives: 0, visible_at: now, ..m }));
        count
    }

    pub fn pending(&self) -> usize {
        let state = self.state.lock().unwrap();
        state.messages.len() + state.dead.len()
    }
}

#[async_trait]
impl SettleQueue for SimQueue {
    async fn send(&self, batch: BatchId) -> Result<(), InfraError> {
        // The way there takes time: a process may die before the send.
        tokio::time::sleep(self.world.dice.millis(0..5)).await;
        if self.world.faults_on() && self.world.dice.chance(0.05) {
            return Err(InfraError::new("send settle message", "SQS unavailable (simulated)"));
        }
        self.push(batch);
        if self.world.dice.chance(0.05) {
            self.push(batch);
        }
        Ok(())
    }

    async fn send_after(&self, batch: BatchId, delay: Duration) -> Result<(), InfraError> {
        tokio::time::sleep(self.world.dice.millis(0..5)).await;
        if self.world.faults_on() && self.world.dice.chance(0.05) {
            return Err(InfraError::new("send settle message", "SQS unavailable (simulated)"));
        }
        self.push_visible_at(batch, Instant::now() + delay);
        Ok(())
    }
}
