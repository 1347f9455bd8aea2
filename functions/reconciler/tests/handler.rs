//! The reconciler handler with the schedule fixture event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use lambda_runtime::{Context, LambdaEvent};
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::memory_queue::memory_queue;
use shared::config::RESEND_POLICY;
use shared::domain::UserId;
use shared::ports::{Accounts, Clock, Orders};
use shared::reconcile::Reconciler;
use testkit::store_contract::{order, usd};
use time::OffsetDateTime;

const FIXTURE: &str = include_str!("../../../events/schedule-reconcile.json");

struct Later;

impl Clock for Later {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::minutes(2)
    }
}

#[tokio::test]
async fn a_scheduled_run_resends_a_batch_whose_message_was_lost() {
    let store = Arc::new(DynamoStore::in_memory());
    store.open_account(&UserId::parse("alice").unwrap(), usd("100")).await.unwrap();
    let batch = store.place_order(order("alice", "3"), usd("10")).await.unwrap().formed.unwrap();
    let (queue, mut messages) = memory_queue();
    let reconciler = Reconciler::new(store, Arc::new(queue), Arc::new(Later), RESEND_POLICY);

    let event = LambdaEvent::new(serde_json::from_str(FIXTURE).unwrap(), Context::default());
    let report = reconciler::handle(&reconciler, event).await.unwrap();

    assert_eq!(report.resent, vec![batch.to_string()]);
    assert!(messages.try_recv().unwrap().body.contains(&batch.to_string()));
}
