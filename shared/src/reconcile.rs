//! The outbox's other half: batches that were formed but whose message was
//! lost (crash, SQS error), and settle attempts that died holding a lease,
//! are sent to the settle queue again. Sending twice is harmless.

use std::sync::Arc;

use crate::domain::BatchId;
use crate::ports::{Clock, InfraError, SettleQueue, Store};

pub struct Reconciler {
    store: Arc<dyn Store>,
    queue: Arc<dyn SettleQueue>,
    clock: Arc<dyn Clock>,
    /// A `READY` batch younger than this still has its message in flight.
    ready_age: time::Duration,
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn SettleQueue>,
        clock: Arc<dyn Clock>,
        ready_age: time::Duration,
    ) -> Reconciler {
        Reconciler { store, queue, clock, ready_age }
    }

    /// Sends every stuck batch again; returns them.
    pub async fn run_once(&self) -> Result<Vec<BatchId>, InfraError> {
        let now = self.clock.now();
        let stuck = self.store.stuck_batches(now - self.ready_age, now).await?;
        for batch in &stuck {
            self.queue.send(*batch).await?;
            tracing::warn!(%batch, "re-sent a stuck batch to the settle queue");
        }
        Ok(stuck)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use time::OffsetDateTime;

    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::adapters::memory_queue::memory_queue;
    use crate::domain::{Coin, OrderId, Quantity, Usd, UserId};
    use crate::ports::NewOrder;

    struct FixedClock(OffsetDateTime);

    impl Clock for FixedClock {
        fn now(&self) -> OffsetDateTime {
            self.0
        }
    }

    #[tokio::test]
    async fn a_batch_whose_message_was_lost_is_sent_again_after_a_minute() {
        let store = Arc::new(MemoryStore::new());
        let user = UserId::parse("alice").unwrap();
        store.put_account(&user, Usd::new(Decimal::from(100)).unwrap()).await.unwrap();
        let formed_at = OffsetDateTime::now_utc();
        let order = NewOrder {
            id: OrderId::generate(),
            user,
            coin: Coin::from_trusted("ABAN"),
            amount: Quantity::parse("3").unwrap(),
            price: Usd::new(Decimal::from(4)).unwrap(),
            cost: Usd::new(Decimal::from_str("12").unwrap()).unwrap(),
            idempotency_key: None,
            created_at: formed_at,
        };
        // Placed, but its message never sent (the process died).
        let batch = store.place_order(order, Usd::new(Decimal::TEN).unwrap()).await.unwrap().formed.unwrap();

        let (queue, mut messages) = memory_queue();
        let at = |seconds| Arc::new(FixedClock(formed_at + time::Duration::seconds(seconds)));
        let early = Reconciler::new(store.clone(), Arc::new(queue.clone()), at(30), time::Duration::minutes(1));
        assert!(early.run_once().await.unwrap().is_empty(), "its message may still be in flight");

        let late = Reconciler::new(store.clone(), Arc::new(queue), at(61), time::Duration::minutes(1));
        assert_eq!(late.run_once().await.unwrap(), vec![batch]);
        assert!(messages.try_recv().unwrap().body.contains(&batch.to_string()));
    }
}
