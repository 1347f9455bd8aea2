//! An in-process settle queue: what `orders-local` uses in place of SQS.
//! The receiving side (the event source that calls the settle handler) is
//! the host's: `orders-local` polls it as Lambda's SQS event source would.

use async_trait::async_trait;
use tokio::sync::mpsc;
use ulid::Ulid;

use crate::domain::BatchId;
use crate::ports::{InfraError, SettleQueue};
use crate::settlement::SettleMessage;

/// A message as a queue holds it.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub message_id: String,
    pub body: String,
    /// Deliveries so far (SQS's `ApproximateReceiveCount`).
    pub receive_count: u32,
}

#[derive(Clone)]
pub struct MemoryQueue {
    sender: mpsc::UnboundedSender<QueuedMessage>,
}

/// A queue and its receiving end.
pub fn memory_queue() -> (MemoryQueue, mpsc::UnboundedReceiver<QueuedMessage>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (MemoryQueue { sender }, receiver)
}

impl MemoryQueue {
    /// Puts a message back, as SQS does when its visibility timeout ends.
    pub fn redeliver(&self, message: QueuedMessage) -> Result<(), InfraError> {
        self.sender.send(message).map_err(|_| InfraError::new("memory queue", "the consumer has stopped"))
    }
}

#[async_trait]
impl SettleQueue for MemoryQueue {
    async fn send(&self, batch: BatchId) -> Result<(), InfraError> {
        let body = serde_json::to_string(&SettleMessage { batch_id: batch.to_string() })
            .map_err(|e| InfraError::new("memory queue", e))?;
        self.redeliver(QueuedMessage { message_id: Ulid::new().to_string(), body, receive_count: 0 })
    }

    /// Held by this process until it is due (lost if the process stops, as
    /// everything of the embedded queue is; the reconciler sends it again).
    async fn send_after(&self, batch: BatchId, delay: std::time::Duration) -> Result<(), InfraError> {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(error) = queue.send(batch).await {
                tracing::warn!(%batch, error = %crate::telemetry::ErrorChain(&error), "a delayed settle message was lost");
            }
        });
        Ok(())
    }
}
