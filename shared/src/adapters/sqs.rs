//! The settle queue on SQS, and creating it (with its dead-letter queue)
//! when missing, as `template.yaml` defines it.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::domain::BatchId;
use crate::ports::{InfraError, SettleQueue};
use crate::settlement::SettleMessage;

/// Deliveries before a message moves to the dead-letter queue.
pub const MAX_RECEIVE_COUNT: u32 = 5;
/// Six times the settle function's timeout (30 s), as AWS advises.
pub const VISIBILITY_TIMEOUT_SECONDS: u32 = 180;

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> SqsQueue {
        SqsQueue { client, queue_url: queue_url.into() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.queue_url
    }
}

fn sqs_error<E: std::error::Error + Send + Sync + 'static>(operation: &'static str, error: E) -> InfraError {
    InfraError::new(operation, DisplayErrorContext(error).to_string())
}

#[async_trait]
impl SettleQueue for SqsQueue {
    async fn send(&self, batch: BatchId) -> Result<(), InfraError> {
        let body = serde_json::to_string(&SettleMessage { batch_id: batch.to_string() })
            .map_err(|e| InfraError::new("send settle message", e))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| sqs_error("send settle message", e))?;
        Ok(())
    }

    async fn send_after(&self, batch: BatchId, delay: std::time::Duration) -> Result<(), InfraError> {
        let body = serde_json::to_string(&SettleMessage { batch_id: batch.to_string() })
            .map_err(|e| InfraError::new("send delayed settle message", e))?;
        // Whole seconds, rounded up, within SQS's limit of 900.
        let seconds = delay.as_secs().saturating_add(u64::from(delay.subsec_nanos() > 0)).min(900);
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(seconds as i32)
            .send()
            .await
            .map_err(|e| sqs_error("send delayed settle message", e))?;
        Ok(())
    }
}

/// Creates the settle queue and its dead-letter queue if missing; returns
/// the settle queue's URL.
pub async fn ensure_queues(client: &Client, name: &str) -> Result<String, InfraError> {
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(|e| sqs_error("create dead-letter queue", e))?
        .queue_url
        .ok_or_else(|| InfraError::new("create dead-letter queue", "no queue URL returned"))?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sqs_error("read dead-letter queue", e))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| InfraError::new("read dead-letter queue", "no QueueArn"))?;
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT.to_string() });
    let url = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, VISIBILITY_TIMEOUT_SECONDS.to_string())
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(|e| sqs_error("create settle queue", e))?
        .queue_url
        .ok_or_else(|| InfraError::new("create settle queue", "no queue URL returned"))?;
    Ok(url)
}
