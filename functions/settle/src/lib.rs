//! The settle function: consumes the settle queue and buys each formed
//! batch from the exchange. Reports partial batch failures, so only the
//! messages that must be retried come back.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Error, LambdaEvent};
use shared::domain::BatchId;
use shared::settlement::{SettleMessage, Settlement, Settler};
use shared::telemetry::ErrorChain;
use tracing::Instrument;

/// Settles every batch of the event concurrently; returns the ids of the
/// messages to deliver again.
pub async fn handle(settler: &Settler, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let attempts = event.payload.records.iter().map(|message| {
        let message_id = message.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("settle_message", message_id = %message_id, batch_id = tracing::field::Empty);
        async move { settle_message(settler, message).await.err().map(|()| message_id) }.instrument(span)
    });
    let failed = futures::future::join_all(attempts).await;

    let mut response = SqsBatchResponse::default();
    for message_id in failed.into_iter().flatten() {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = message_id;
        response.batch_item_failures.push(failure);
    }
    Ok(response)
}

/// `Err(())` means: report this message as failed so it is delivered again.
async fn settle_message(settler: &Settler, message: &SqsMessage) -> Result<(), ()> {
    let body = message.body.as_deref().unwrap_or_default();
    let batch = serde_json::from_str::<SettleMessage>(body).ok().and_then(|m| BatchId::parse(&m.batch_id).ok());
    let Some(batch) = batch else {
        // Retrying cannot help; failing it sends it to the dead-letter queue,
        // where an operator sees it.
        tracing::error!(body_len = body.len(), "a settle message without a valid batch id");
        return Err(());
    };
    tracing::Span::current().record("batch_id", tracing::field::display(batch));
    match settler.settle(batch).await {
        Ok(Settlement::Bought { exchange_order_id }) => {
            tracing::info!(%exchange_order_id, "batch bought");
            Ok(())
        }
        Ok(Settlement::AlreadyFinished(status)) => {
            tracing::info!(status = status.as_str(), "duplicate delivery of a finished batch");
            Ok(())
        }
        Ok(Settlement::Refunded(refund)) => {
            tracing::warn!(orders = refund.orders, usd = %refund.usd, "batch refused by the exchange and refunded");
            Ok(())
        }
        Ok(Settlement::Refunding(refund)) => {
            tracing::warn!(
                orders = refund.orders, usd = %refund.usd,
                "batch refused by the exchange; refunds continue with the next message"
            );
            Ok(())
        }
        Ok(Settlement::Deferred { until }) => {
            tracing::info!(%until, "another attempt holds the batch; a delayed message looks again after its lease");
            Ok(())
        }
        Ok(Settlement::UnknownBatch) => {
            tracing::error!("a settle message for a batch that does not exist");
            Err(())
        }
        Err(error) => {
            tracing::warn!(
                error = %ErrorChain(&error),
                "batch not settled yet; it will be delivered again"
            );
            Err(())
        }
    }
}
