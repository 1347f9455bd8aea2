//! Settling a batch: the state machine of DESIGN.md. Safe under duplicate
//! and concurrent deliveries: the claim is a conditional write, the exchange
//! is idempotent on the batch id, and settle/refund are conditional.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{Batch, BatchId, BatchStatus};
use crate::ports::{Claim, Clock, Exchange, ExchangeError, ExchangeOrder, Fill, InfraError, Lookup, Refund, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The exchange filled the batch (now, or on an earlier attempt whose
    /// reply was lost).
    Bought { exchange_order_id: String },
    /// A duplicate delivery: the batch was already settled or refunded.
    AlreadyFinished(BatchStatus),
    /// The exchange refused the batch for good; its orders were refunded.
    Refunded(Refund),
    /// No such batch. Nothing can ever settle it.
    UnknownBatch,
}

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("batch {batch} is held by another settle attempt")]
    Busy { batch: BatchId },
    #[error("the outcome of buying batch {batch} is unknown")]
    OutcomeUnknown {
        batch: BatchId,
        #[source]
        source: ExchangeError,
    },
    #[error(transparent)]
    Infra(#[from] InfraError),
}

pub struct Settler {
    store: Arc<dyn Store>,
    exchange: Arc<dyn Exchange>,
    clock: Arc<dyn Clock>,
    lease: Duration,
}

impl Settler {
    pub fn new(store: Arc<dyn Store>, exchange: Arc<dyn Exchange>, clock: Arc<dyn Clock>, lease: Duration) -> Settler {
        Settler { store, exchange, clock, lease }
    }

    /// Settles one batch. An `Err` means "deliver this again later".
    #[tracing::instrument(skip_all, fields(attempt))]
    pub async fn settle(&self, batch_id: BatchId) -> Result<Settlement, SettleError> {
        let now = self.clock.now();
        let batch = match self.store.claim_batch(batch_id, now, now + self.lease).await? {
            Claim::Claimed(batch) => batch,
            Claim::Finished(status) => return Ok(Settlement::AlreadyFinished(status)),
            Claim::Leased { .. } => return Err(SettleError::Busy { batch: batch_id }),
            Claim::NotFound => return Ok(Settlement::UnknownBatch),
        };
        tracing::Span::current().record("attempt", batch.attempts);

        // An earlier attempt may have reached the exchange: ask before
        // sending again, as the protocol requires.
        if batch.attempts > 1 {
            match self.exchange.lookup(batch_id).await {
                Ok(Lookup::Filled(fill)) => return self.record_fill(&batch, fill).await,
                Ok(Lookup::NotFound) => {}
                Ok(Lookup::NotFilled { status }) => {
                    let source =
                        ExchangeError::Unknown { reason: format!("the exchange reports it {status:?}"), source: None };
                    return Err(self.give_back(batch_id, source).await);
                }
                Err(source) => return Err(self.give_back(batch_id, source).await),
            }
        }

        let order = ExchangeOrder { client_order_id: batch_id, coin: batch.coin.clone(), quantity: batch.qty };
        match self.exchange.buy(&order).await {
            Ok(fill) => self.record_fill(&batch, fill).await,
            Err(ExchangeError::Refused { status, detail }) => {
                tracing::warn!(status, %detail, "the exchange refused the batch; refunding its orders");
                let refund = self.store.refund_batch(batch_id).await?;
                Ok(Settlement::Refunded(refund))
            }
            Err(unknown) => {
                // Resolve at once if the exchange can tell; otherwise the
                // message is delivered again and the next attempt asks first.
                if let Ok(Lookup::Filled(fill)) = self.exchange.lookup(batch_id).await {
                    return self.record_fill(&batch, fill).await;
                }
                Err(self.give_back(batch_id, unknown).await)
            }
        }
    }

    async fn record_fill(&self, batch: &Batch, fill: Fill) -> Result<Settlement, SettleError> {
        if let Some(filled) = fill.quantity.filter(|q| *q != batch.qty) {
            tracing::error!(
                batch_id = %batch.id, requested = %batch.qty, filled = %filled,
                "the exchange filled a different quantity than requested: an operator must reconcile"
            );
        }
        self.store.settle_batch(batch.id, &fill.exchange_order_id).await?;
        Ok(Settlement::Bought { exchange_order_id: fill.exchange_order_id })
    }

    /// Releases the lease so the redelivery can claim the batch at once.
    async fn give_back(&self, batch: BatchId, source: ExchangeError) -> SettleError {
        if let Err(error) = self.store.release_batch(batch, self.clock.now()).await {
            // Harmless: the lease expires on its own.
            tracing::warn!(error = &error as &dyn std::error::Error, "could not release the batch lease");
        }
        SettleError::OutcomeUnknown { batch, source }
    }
}

/// The settle queue's message body: the batch to settle. Everything else is
/// read from the batch item, so a message can never disagree with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SettleMessage {
    pub batch_id: String,
}
