//! Lambda's SQS event source mapping, for `--backend aws`: long-polls the
//! settle queue, invokes the settle handler with up to ten messages,
//! deletes the ones it settled and makes the failed ones visible again after
//! a backoff. SQS's redrive policy moves a message to the dead-letter queue
//! after `maxReceiveCount` deliveries.

use std::sync::Arc;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use shared::settlement::Settler;
use tokio::sync::watch;

use crate::event_source::{Delivery, EventSourceConfig, backoff, invoke_settle};

/// How long a received message stays invisible while being settled.
const IN_FLIGHT_VISIBILITY_SECONDS: i32 = 30;

pub async fn run(
    client: Client,
    queue_url: String,
    settler: Arc<Settler>,
    config: EventSourceConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let receive = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(IN_FLIGHT_VISIBILITY_SECONDS)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        let received = tokio::select! {
            received = receive => received,
            _ = shutdown.changed() => break,
        };
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(error = %DisplayErrorContext(&error), "receiving from the settle queue failed");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let deliveries: Vec<Delivery<'_>> = messages
            .iter()
            .map(|m| Delivery {
                message_id: m.message_id().unwrap_or_default(),
                receipt_handle: m.receipt_handle(),
                body: m.body().unwrap_or_default(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            })
            .collect();
        let failed = invoke_settle(&settler, &deliveries).await;

        let mut done = Vec::new();
        for delivery in &deliveries {
            let Some(receipt) = delivery.receipt_handle else { continue };
            if failed.iter().any(|id| id == delivery.message_id) {
                let delay = backoff(&config, delivery.receive_count).as_secs().max(1);
                let result = client
                    .change_message_visibility()
                    .queue_url(&queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(i32::try_from(delay).unwrap_or(30))
                    .send()
                    .await;
                if let Err(error) = result {
                    tracing::warn!(error = %DisplayErrorContext(&error), "could not schedule a redelivery");
                }
            } else if let Ok(entry) =
                DeleteMessageBatchRequestEntry::builder().id(done.len().to_string()).receipt_handle(receipt).build()
            {
                done.push(entry);
            }
        }
        if !done.is_empty() {
            let result = client.delete_message_batch().queue_url(&queue_url).set_entries(Some(done)).send().await;
            if let Err(error) = result {
                // They come back after the visibility timeout; settling is idempotent.
                tracing::warn!(error = %DisplayErrorContext(&error), "could not delete settled messages");
            }
        }
    }
}
