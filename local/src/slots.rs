//! The cap on connections served at once, and who gives way at it.
//!
//! Each connection holds a slot from its accept to its close. When none is
//! free, a connection just accepted does not wait behind idle ones: the
//! connection idle the longest (kept alive after its answer, or not yet
//! sent a byte) is asked to close, as nginx and others do; when none is
//! idle, the one that has been sending its request's head the longest;
//! then the one sending its body the longest. Without this, a client
//! holding the cap in idle connections, or in requests sent a line or a
//! byte at a time, and reopening each as it closed, made everyone else
//! wait out the idle, head or body timeout. A connection whose request has
//! reached the handler is never asked (nothing it sent has changed
//! anything before then): its slot frees when it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a connection waiting for a slot gives the asked one to close
/// before asking the next (the asked one may have just begun a request,
/// and another may have turned idle meanwhile).
const LOOK_AGAIN: Duration = Duration::from_millis(100);

pub struct Slots {
    free: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// A connection's slot: freed, and the connection forgotten, when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    pub activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open().remove(&self.id);
    }
}

impl Slots {
    pub fn new(max_connections: usize) -> Arc<Slots> {
        Arc::new(Slots {
            free: Arc::new(Semaphore::new(max_connections.max(1))),
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
        })
    }

    /// A slot for a connection just accepted: a free one, or the one the
    /// longest-idle connection gives up.
    pub async fn claim(self: &Arc<Self>) -> Slot {
        loop {
            if let Ok(permit) = Arc::clone(&self.free).try_acquire_owned() {
                return self.register(permit);
            }
            self.ask_longest_idle_to_close();
            // The semaphore is never closed: `Ok(Err(_))` cannot happen.
            if let Ok(Ok(permit)) = tokio::time::timeout(LOOK_AGAIN, Arc::clone(&self.free).acquire_owned()).await {
                return self.register(permit);
            }
        }
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        self.open().insert(id, Arc::clone(&activity));
        Slot { slots: Arc::clone(self), id, activity, _permit: permit }
    }

    fn ask_longest_idle_to_close(&self) {
        let open = self.open();
        // Idle before heads before bodies, then the longest at it.
        let longest = open
            .values()
            .filter_map(|activity| Some((activity.gives_way_since()?, activity)))
            .min_by_key(|((stage, since), _)| (*stage, *since));
        if let Some(((stage, since), activity)) = longest {
            tracing::debug!(for_ = ?since.elapsed(), ?stage, "at the connection cap: closing a connection");
            activity.ask_to_close();
        }
    }

    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        // Nothing panics while holding it; and the map stays whole if so.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a connection that may give way is doing, in the order they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Idle,
    Head,
    Body,
}

/// Where a connection is between requests, as its reads, its writes and
/// the service see it.
pub struct Activity(Mutex<State>);

struct State {
    phase: Phase,
    /// Asked to close to make room.
    asked: bool,
    /// The connection's task, to wake when asked.
    waker: Option<Waker>,
}

enum Phase {
    /// No byte of a request since then: a fresh connection, or a kept-alive
    /// one whose last answer is sent.
    Idle(Instant),
    /// A request's head is arriving since then.
    Head(Instant),
    /// Its head is in and its body arriving since then; the handler has
    /// not been called.
    Body(Instant),
    /// The handler has the request.
    Request,
    /// The service answered; its response is being written.
    Answering,
}

impl Activity {
    fn new() -> Activity {
        Activity(Mutex::new(State { phase: Phase::Idle(Instant::now()), asked: false, waker: None }))
    }

    /// Bytes of a request arrived: the ask (made of an idle connection)
    /// no longer holds; a head under way gives way only when asked again,
    /// once no connection is idle.
    pub fn bytes_arrived(&self) {
        let mut state = self.state();
        if matches!(state.phase, Phase::Idle(_) | Phase::Answering) {
            state.phase = Phase::Head(Instant::now());
            state.asked = false;
        }
    }

    /// A request's head is in; its body is being read.
    pub fn body_began(&self) {
        let mut state = self.state();
        state.phase = Phase::Body(Instant::now());
        state.asked = false;
    }

    /// Whether it was asked to make room (and so its read ended early).
    pub fn was_asked(&self) -> bool {
        self.state().asked
    }

    /// The handler has the request: whatever it was asked, this connection
    /// stays.
    pub fn request_began(&self) {
        let mut state = self.state();
        state.phase = Phase::Request;
        state.asked = false;
    }

    pub fn answered(&self) {
        self.state().phase = Phase::Answering;
    }

    /// Everything written so far has been sent. After the service's answer,
    /// that is the whole response: responses are whole bodies, smaller than
    /// hyper's write buffer, written then flushed once. Bytes of a pipelined
    /// request read meanwhile made this `Head` already.
    pub fn flushed(&self) {
        let mut state = self.state();
        if matches!(state.phase, Phase::Answering) {
            state.phase = Phase::Idle(Instant::now());
        }
    }

    /// The client has nothing to read: whether the connection should end
    /// now, as if the client had closed it. Otherwise remembers whom to
    /// wake when asked.
    pub fn gives_way(&self, cx: &Context<'_>) -> bool {
        let mut state = self.state();
        if state.asked && matches!(state.phase, Phase::Idle(_) | Phase::Head(_) | Phase::Body(_)) {
            return true;
        }
        if !state.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            state.waker = Some(cx.waker().clone());
        }
        false
    }

    /// Where it is (idle, in a head, in a body: the order they give way
    /// in), and since when; `None` if it was asked already, never gives
    /// way, or is not waiting on a read (a connection just accepted, not
    /// yet read: its bytes may be there, and asking it would only cost the
    /// asker its wait).
    fn gives_way_since(&self) -> Option<(Stage, Instant)> {
        let state = self.state();
        match state.phase {
            _ if state.asked || state.waker.is_none() => None,
            Phase::Idle(since) => Some((Stage::Idle, since)),
            Phase::Head(since) => Some((Stage::Head, since)),
            Phase::Body(since) => Some((Stage::Body, since)),
            Phase::Request | Phase::Answering => None,
        }
    }

    fn ask_to_close(&self) {
        let waker = {
            let mut state = self.state();
            state.asked = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn the_longest_idle_connection_gives_way_and_a_busy_one_does_not() {
        let slots = Slots::new(3);
        let oldest = slots.claim().await;
        let busy = slots.claim().await;
        let newest = slots.claim().await;
        busy.activity.request_began();
        let cx = Context::from_waker(Waker::noop());
        for slot in [&oldest, &busy, &newest] {
            assert!(!slot.activity.gives_way(&cx), "waiting on a read");
        }

        // At the cap, a claim asks the longest-idle connection, then waits.
        let claim = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.claim().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(oldest.activity.gives_way(&cx));
        assert!(!busy.activity.gives_way(&cx));
        assert!(!newest.activity.gives_way(&cx));
        drop(oldest);
        let _claimed = claim.await.unwrap();
    }

    #[test]
    fn a_connection_is_idle_once_its_answer_is_sent_and_stays_if_a_request_comes() {
        let slots = Slots::new(1);
        let slot = slots.register(Arc::clone(&slots.free).try_acquire_owned().unwrap());
        let cx = Context::from_waker(Waker::noop());
        slot.activity.request_began();
        slot.activity.answered();
        assert_eq!(slot.activity.gives_way_since(), None, "idle before its answer is sent");
        slot.activity.flushed();
        assert_eq!(slot.activity.gives_way_since(), None, "not waiting on a read yet");
        assert!(!slot.activity.gives_way(&cx));
        assert!(slot.activity.gives_way_since().is_some_and(|(stage, _)| stage == Stage::Idle));
        slots.ask_longest_idle_to_close();
        // A request that arrives after the ask keeps its connection.
        slot.activity.bytes_arrived();
        assert!(!slot.activity.gives_way(&cx));
    }

    /// With no connection idle, the head under way the longest gives way;
    /// a request the handler has never does.
    #[tokio::test]
    async fn at_the_cap_heads_give_way_after_idle_connections_and_before_requests() {
        let slots = Slots::new(3);
        let (oldest_head, newer_head, serving) = (slots.claim().await, slots.claim().await, slots.claim().await);
        oldest_head.activity.bytes_arrived();
        tokio::time::sleep(Duration::from_millis(5)).await;
        newer_head.activity.bytes_arrived();
        serving.activity.bytes_arrived();
        serving.activity.body_began();
        serving.activity.request_began();
        let cx = Context::from_waker(Waker::noop());
        // More bytes of the same head change nothing.
        oldest_head.activity.bytes_arrived();
        for slot in [&oldest_head, &newer_head, &serving] {
            assert!(!slot.activity.gives_way(&cx), "waiting on a read");
        }

        let claim = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.claim().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(oldest_head.activity.gives_way(&cx));
        assert!(!newer_head.activity.gives_way(&cx));
        assert!(!serving.activity.gives_way(&cx));
        drop(oldest_head);
        let _claimed = claim.await.unwrap();
    }

    #[test]
    fn bodies_give_way_after_heads_and_idle_connections() {
        let slots = Slots::new(3);
        let claim = |slots: &Arc<Slots>| slots.register(Arc::clone(&slots.free).try_acquire_owned().unwrap());
        let (body, head, idle) = (claim(&slots), claim(&slots), claim(&slots));
        let cx = Context::from_waker(Waker::noop());
        body.activity.bytes_arrived();
        body.activity.body_began();
        head.activity.bytes_arrived();
        for slot in [&body, &head, &idle] {
            assert!(!slot.activity.gives_way(&cx));
        }
        slots.ask_longest_idle_to_close();
        assert!(idle.activity.gives_way(&cx));
        slots.ask_longest_idle_to_close();
        assert!(head.activity.gives_way(&cx));
        slots.ask_longest_idle_to_close();
        assert!(body.activity.gives_way(&cx));
        assert!(body.activity.was_asked());
    }
}
