//! What Lambda's SQS event source mapping does for the settle function:
//! receives up to ten messages, invokes the handler with them as one SQS
//! event, and makes the failed ones visible again after a backoff, until
//! `max_receives`, after which they go to the dead-letter list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use lambda_runtime::{Context, LambdaEvent};
use shared::adapters::memory_queue::{MemoryQueue, QueuedMessage};
use shared::settlement::Settler;
use shared::telemetry::ErrorChain;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

const MAX_BATCH: usize = 10;

#[derive(Debug, Clone)]
pub struct EventSourceConfig {
    /// Deliveries before a message goes to the dead-letter list.
    pub max_receives: u32,
    /// Concurrent settle invocations.
    pub concurrency: usize,
    /// Backoff of the first redelivery; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for EventSourceConfig {
    fn default() -> Self {
        EventSourceConfig {
            // As the deployed queue's redrive policy: one number everywhere.
            max_receives: shared::adapters::sqs::MAX_RECEIVE_COUNT,
            concurrency: 4,
            // Five receives spread over about 15 s (1 + 2 + 4 + 8): an
            // exchange that answers "unknown" for a few seconds (a rate
            // limit, a short outage, an order filling slowly) must not send
            // a healthy batch to the dead letters. (SQS spreads them over
            // its visibility timeout: 12 minutes as deployed.)
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// Messages that exhausted their deliveries, by message id.
pub type DeadLetters = Arc<Mutex<HashMap<String, QueuedMessage>>>;

pub async fn run(
    mut messages: mpsc::UnboundedReceiver<QueuedMessage>,
    queue: MemoryQueue,
    settler: Arc<Settler>,
    config: EventSourceConfig,
    dead_letters: DeadLetters,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut invocations = JoinSet::new();
    loop {
        let first = tokio::select! {
            message = messages.recv() => message,
            _ = shutdown.changed() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match messages.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (settler, queue, config, dead_letters) =
            (Arc::clone(&settler), queue.clone(), config.clone(), Arc::clone(&dead_letters));
        invocations.spawn(async move {
            invoke(&settler, &queue, &config, &dead_letters, batch).await;
            drop(slot);
        });
        while invocations.try_join_next().is_some() {}
    }
    // Let invocations under way finish, as Lambda would.
    while invocations.join_next().await.is_some() {}
}

/// One message as the settle function sees it.
pub(crate) struct Delivery<'a> {
    pub message_id: &'a str,
    pub receipt_handle: Option<&'a str>,
    pub body: &'a str,
    pub receive_count: u32,
}

/// Invokes the settle handler with these messages as one SQS event, as
/// Lambda's event source mapping does; returns the ids of the failed ones.
pub(crate) async fn invoke_settle(settler: &Settler, deliveries: &[Delivery<'_>]) -> Vec<String> {
    let mut event = SqsEvent::default();
    for delivery in deliveries {
        let mut record = SqsMessage::default();
        record.message_id = Some(delivery.message_id.to_owned());
        record.receipt_handle = delivery.receipt_handle.map(str::to_owned);
        record.body = Some(delivery.body.to_owned());
        record.event_source = Some("aws:sqs".to_owned());
        record.attributes.insert("ApproximateReceiveCount".to_owned(), delivery.receive_count.to_string());
        event.records.push(record);
    }
    match settle::handle(settler, LambdaEvent::new(event, Context::default())).await {
        Ok(response) => response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect(),
        // A failed invocation returns the whole batch to the queue.
        Err(error) => {
            tracing::error!(error = %ErrorChain(&*error), "the settle invocation failed");
            deliveries.iter().map(|d| d.message_id.to_owned()).collect()
        }
    }
}

/// When a message failed `receive_count` times comes back.
pub(crate) fn backoff(config: &EventSourceConfig, receive_count: u32) -> Duration {
    let exponent = receive_count.saturating_sub(1).min(16);
    config.first_backoff.saturating_mul(1 << exponent).min(config.max_backoff)
}

async fn invoke(
    settler: &Settler,
    queue: &MemoryQueue,
    config: &EventSourceConfig,
    dead_letters: &DeadLetters,
    mut batch: Vec<QueuedMessage>,
) {
    for message in &mut batch {
        message.receive_count += 1;
    }
    let deliveries: Vec<Delivery<'_>> = batch
        .iter()
        .map(|m| Delivery {
            message_id: &m.message_id,
            receipt_handle: None,
            body: &m.body,
            receive_count: m.receive_count,
        })
        .collect();
    let failed = invoke_settle(settler, &deliveries).await;
    for message in batch.into_iter().filter(|m| failed.contains(&m.message_id)) {
        if message.receive_count >= config.max_receives {
            tracing::error!(
                message_id = %message.message_id, receives = message.receive_count,
                "settle message moved to the dead-letter queue"
            );
            if let Ok(mut dead) = dead_letters.lock() {
                dead.insert(message.message_id.clone(), message);
            }
            continue;
        }
        let backoff = backoff(config, message.receive_count);
        let queue = queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            if let Err(error) = queue.redeliver(message) {
                tracing::warn!(error = %ErrorChain(&error), "could not redeliver a settle message");
            }
        });
    }
}
