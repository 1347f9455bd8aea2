//! Settling a batch: the state machine of docs/design.md. Safe under
//! duplicate, late and concurrent deliveries: the claim is a conditional
//! write, every later write of an attempt is fenced on that attempt holding
//! the batch, the exchange is idempotent on the batch id and asked before
//! any resend, and a refusal is recorded (final) before anyone is credited,
//! once no earlier attempt's request can still reach the exchange.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{Batch, BatchId, BatchStatus, RECHECKS_AFTER_REFUND};
use crate::metrics::{self, SettleOutcome};
use crate::ports::{
    Claim, Clock, Exchange, ExchangeError, ExchangeOrder, Fence, Fill, FillQuantity, InfraError, Lookup, Refund,
    SettleQueue, Settlements,
};
use crate::telemetry::ErrorChain;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The exchange filled the batch (now, or on an earlier attempt whose
    /// reply was lost).
    Bought { exchange_order_id: String },
    /// A duplicate delivery: the batch was already settled or refunded.
    AlreadyFinished(BatchStatus),
    /// Refused for good by the exchange, and every order refunded.
    Refunded(Refund),
    /// Refused for good; refunds continue with the next message (queued).
    Refunding(Refund),
    /// No such batch. Nothing can ever settle it.
    UnknownBatch,
    /// Another attempt holds it until `until`: a message delivered then
    /// looks again (this one is done with, its receives kept).
    Deferred { until: time::OffsetDateTime },
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
    /// The exchange says our side is wrong: retried, and an operator must
    /// look (it is logged as an error).
    #[error("the exchange does not take batch {batch}'s order as configured")]
    Misconfigured {
        batch: BatchId,
        #[source]
        source: ExchangeError,
    },
    /// Another attempt took the batch over while this one ran.
    #[error("attempt {attempt} of batch {batch} lost its lease (the batch is now {now:?})")]
    LeaseLost { batch: BatchId, attempt: u32, now: BatchStatus },
    /// Too little of the lease was left for a request to reach the exchange
    /// within it: not sent, the lease given back.
    #[error("attempt {attempt} of batch {batch} had too little lease left to send")]
    LeaseRunningOut { batch: BatchId, attempt: u32 },
    #[error(transparent)]
    Infra(#[from] InfraError),
}

pub struct Settler {
    settlements: Arc<dyn Settlements>,
    exchange: Arc<dyn Exchange>,
    /// Where a refund that did not finish in one call continues.
    queue: Arc<dyn SettleQueue>,
    clock: Arc<dyn Clock>,
    lease: Duration,
    /// Orders refunded per call: bounded work per invocation.
    refund_chunk: u32,
}

/// Orders a settle call refunds before handing the rest to the next message.
pub const REFUND_CHUNK: u32 = 100;
/// Tries of an attempt's own write (settle, refuse) before giving up on it:
/// what this attempt learnt from the exchange is worth a few retries (a
/// refusal not recorded is learnt again only by sending the order again).
const WRITE_TRIES: u32 = 5;

impl Settler {
    pub fn new(
        settlements: Arc<dyn Settlements>,
        exchange: Arc<dyn Exchange>,
        queue: Arc<dyn SettleQueue>,
        clock: Arc<dyn Clock>,
        lease: Duration,
    ) -> Settler {
        Settler { settlements, exchange, queue, clock, lease, refund_chunk: REFUND_CHUNK }
    }

    pub fn with_refund_chunk(self, orders: u32) -> Settler {
        Settler { refund_chunk: orders.max(1), ..self }
    }

    /// Settles one batch. An `Err` means "deliver this again later".
    #[tracing::instrument(skip_all, fields(attempt))]
    pub async fn settle(&self, batch_id: BatchId) -> Result<Settlement, SettleError> {
        let now = self.clock.now();
        let batch = match self.settlements.claim_batch(batch_id, now, now + self.lease).await? {
            Claim::Claimed(batch) => batch,
            Claim::Refusing(_) => return self.refund(batch_id).await,
            Claim::Finished(BatchStatus::Refunded) => return self.recheck(batch_id).await,
            Claim::Finished(status) => return Ok(Settlement::AlreadyFinished(status)),
            Claim::Leased { until } => return self.defer(batch_id, until, now).await,
            Claim::NotFound => return Ok(Settlement::UnknownBatch),
        };
        tracing::Span::current().record("attempt", batch.attempts);
        metrics::settle_attempted();

        // An earlier attempt may have reached the exchange: ask before
        // sending again, as the protocol requires.
        if batch.attempts > 1 {
            match self.exchange.lookup(batch_id).await {
                Ok(Lookup::Filled(fill)) => return self.record_fill(&batch, fill).await,
                Ok(Lookup::NotFound) => {}
                Ok(Lookup::Ended { status }) => {
                    return self.refuse(&batch, &format!("the exchange ended the order {status}"), None).await;
                }
                Ok(Lookup::Pending { status }) => {
                    let source =
                        ExchangeError::Unknown { reason: format!("the exchange reports it {status}"), source: None };
                    return Err(self.give_back(&batch, source).await);
                }
                Err(source) => return Err(self.give_back(&batch, source).await),
            }
        }

        if !self.lease_left_to_send(&batch) {
            return Err(self.running_out(&batch).await);
        }
        let order = ExchangeOrder { client_order_id: batch_id, coin: batch.coin.clone(), quantity: batch.qty };
        match self.exchange.buy(&order).await {
            Ok(fill) => self.record_fill(&batch, fill).await,
            Err(ExchangeError::Refused { reason }) => self.refuse_once_final(&batch, &reason).await,
            Err(unknown @ ExchangeError::Unknown { .. }) => {
                // Resolve at once if the exchange can tell; otherwise the
                // message is delivered again and the next attempt asks first.
                match self.exchange.lookup(batch_id).await {
                    Ok(Lookup::Filled(fill)) => self.record_fill(&batch, fill).await,
                    Ok(Lookup::Ended { status }) => {
                        self.refuse(&batch, &format!("the exchange ended the order {status}"), None).await
                    }
                    _ => Err(self.give_back(&batch, unknown).await),
                }
            }
            Err(misconfigured) => Err(self.give_back(&batch, misconfigured).await),
        }
    }

    /// A refunded batch's look at the exchange, when one is due
    /// (`RECHECKS_AFTER_REFUND`, the reconciler sends it): an exchange may
    /// fill an order after it answered a refusal, outside the protocol. A
    /// fill found is recorded on the batch for an operator, credited to
    /// nobody and debited from nobody, and counted (its alarm). A lookup
    /// that fails is looked again when the reconciler sends it again, less
    /// and less often; never a failed message (its dead letter is for
    /// money not yet decided).
    async fn recheck(&self, id: BatchId) -> Result<Settlement, SettleError> {
        let done = Ok(Settlement::AlreadyFinished(BatchStatus::Refunded));
        let Some(batch) = self.settlements.batch(id).await? else { return done };
        let now = self.clock.now();
        // Not due: a duplicate delivery.
        let Some(due) = batch.recheck_at.filter(|at| *at <= now) else { return done };
        let looks = RECHECKS_AFTER_REFUND;
        let look = usize::try_from(batch.rechecks).unwrap_or(usize::MAX);
        match self.exchange.lookup(id).await {
            Ok(Lookup::Filled(fill)) => {
                if self.settlements.record_recheck(&batch, Some(&fill.exchange_order_id), None).await? {
                    metrics::settle_outcome(SettleOutcome::FilledAfterRefusal);
                    tracing::error!(
                        batch_id = %id, exchange_order_id = %fill.exchange_order_id,
                        "the exchange filled a batch after it was refused and refunded: an operator must reconcile"
                    );
                }
            }
            Ok(Lookup::NotFound | Lookup::Ended { .. }) => {
                // From the refund: the look due now was `looks[look]` after it.
                let next = looks.get(look + 1).zip(looks.get(look)).map(|(next, this)| due - *this + *next);
                self.settlements.record_recheck(&batch, None, next).await?;
            }
            Ok(Lookup::Pending { status }) => {
                tracing::warn!(batch_id = %id, status, "a refunded batch is still open at the exchange; looked at again later");
            }
            Err(error) => {
                tracing::warn!(batch_id = %id, error = %ErrorChain(&error), "could not look a refunded batch up; looked at again later");
            }
        }
        done
    }

    /// Another attempt holds the batch: a delayed message looks again once
    /// its lease is over. Failing this message instead would use up one of
    /// its receives against the lease, and a slow attempt would send it to
    /// the dead-letter queue for nothing.
    async fn defer(
        &self,
        batch: BatchId,
        until: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Result<Settlement, SettleError> {
        let left = Duration::try_from(until - now).unwrap_or_default();
        match self.queue.send_after(batch, left + Duration::from_secs(1)).await {
            Ok(()) => Ok(Settlement::Deferred { until }),
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "could not send the batch for later; failing the message");
                Err(SettleError::Busy { batch })
            }
        }
    }

    /// A refused batch whose refunds wait (`refunds_from`): before then, a
    /// message for it later; after, a lookup decides. No fill: the refusal
    /// is final and refunds may start (`None`). A fill (an earlier
    /// attempt's request that reached the exchange late): the batch is
    /// settled with it and nobody is credited.
    async fn confirm_refusal(&self, id: BatchId) -> Result<Option<Settlement>, SettleError> {
        let Some(batch) = self.settlements.batch(id).await? else { return Ok(None) };
        let Some(from) = batch.refunds_from.filter(|_| batch.status == BatchStatus::Refused) else {
            return Ok(None);
        };
        let now = self.clock.now();
        if from > now {
            return self.defer(id, from, now).await.map(Some);
        }
        match self.exchange.lookup(id).await {
            Ok(Lookup::NotFound | Lookup::Ended { .. }) => {
                if !self.settlements.confirm_refusal(id).await? {
                    return Err(SettleError::Busy { batch: id });
                }
                Ok(None)
            }
            Ok(Lookup::Filled(fill)) => {
                tracing::warn!(
                    batch_id = %id, exchange_order_id = %fill.exchange_order_id,
                    "an earlier attempt's request was filled after the batch was refused: settled with it, nobody credited"
                );
                if !self.settlements.settle_refused(id, &fill.exchange_order_id).await? {
                    return Err(SettleError::Busy { batch: id });
                }
                metrics::settle_outcome(SettleOutcome::Filled);
                metrics::filled_after(batch.created_at, now);
                Ok(Some(Settlement::Bought { exchange_order_id: fill.exchange_order_id }))
            }
            Ok(Lookup::Pending { status }) => {
                let source = ExchangeError::Unknown {
                    reason: format!("refused, and an earlier send is {status} at the exchange"),
                    source: None,
                };
                Err(SettleError::OutcomeUnknown { batch: id, source })
            }
            Err(source) => Err(SettleError::OutcomeUnknown { batch: id, source }),
        }
    }

    /// Whether a request sent now reaches the exchange, or never will,
    /// before this attempt's lease ends: an attempt sends only then, so a
    /// later attempt (which claims the batch only once the lease is over or
    /// given back) knows every earlier request was sent before its claim.
    /// Clocks must agree to within the request timeout.
    fn lease_left_to_send(&self, batch: &Batch) -> bool {
        let Some(until) = batch.lease_until else { return false };
        until - self.clock.now() >= self.exchange.request_timeout()
    }

    async fn running_out(&self, batch: &Batch) -> SettleError {
        tracing::warn!(batch_id = %batch.id, attempt = batch.attempts, "too little lease left to send; giving it back");
        if let Err(error) = self.settlements.release_batch(batch.id, batch.attempts, self.clock.now()).await {
            tracing::warn!(error = %ErrorChain(&error), "could not release the batch lease");
        }
        metrics::settle_outcome(SettleOutcome::LeaseLost);
        SettleError::LeaseRunningOut { batch: batch.id, attempt: batch.attempts }
    }

    /// A refused POST leaves the id free: a request of an earlier attempt
    /// still on its way could be filled after the refusal. The refusal is
    /// recorded at once (never sent again), but its refunds wait until every
    /// earlier attempt's lease and request timeout are over (each began
    /// before this attempt's claim, so one lease and one timeout from now
    /// covers them all), and for a lookup after that which finds no fill
    /// (see [`Settler::confirm_refusal`]). The first attempt's refusal is
    /// final at once: no earlier request exists.
    async fn refuse_once_final(&self, batch: &Batch, reason: &str) -> Result<Settlement, SettleError> {
        let refunds_from =
            (batch.attempts > 1).then(|| self.clock.now() + self.lease + self.exchange.request_timeout());
        self.refuse(batch, reason, refunds_from).await
    }

    async fn record_fill(&self, batch: &Batch, fill: Fill) -> Result<Settlement, SettleError> {
        if let Some(symbol) = fill.symbol.as_deref().filter(|s| !s.eq_ignore_ascii_case(batch.coin.as_str())) {
            // Not a fill of this batch, whatever its id says: never recorded.
            tracing::error!(
                batch_id = %batch.id, coin = %batch.coin, %symbol,
                "the exchange reports a fill of this batch in another coin: an operator must look"
            );
            let source =
                ExchangeError::Unknown { reason: format!("a fill of {symbol}, not {}", batch.coin), source: None };
            return Err(self.give_back(batch, source).await);
        }
        match &fill.quantity {
            FillQuantity::Stated(filled) if *filled == batch.qty => {}
            FillQuantity::Unstated => {}
            FillQuantity::Stated(filled) => tracing::error!(
                batch_id = %batch.id, requested = %batch.qty, filled = %filled,
                "the exchange filled a different quantity than requested: an operator must reconcile"
            ),
            FillQuantity::Unreadable(text) => tracing::error!(
                batch_id = %batch.id, requested = %batch.qty, filled = %text,
                "the exchange filled a quantity that cannot be read: an operator must reconcile"
            ),
        }
        let bought = Settlement::Bought { exchange_order_id: fill.exchange_order_id.clone() };
        let settled = self
            .persist(batch, BatchStatus::Settled, || {
                self.settlements.settle_batch(batch.id, batch.attempts, &fill.exchange_order_id)
            })
            .await?;
        match settled {
            Fence::Held => {
                metrics::settle_outcome(SettleOutcome::Filled);
                metrics::filled_after(batch.created_at, self.clock.now());
                Ok(bought)
            }
            // A later attempt (this one outlived its lease) found the same
            // fill and recorded it: counted there as filled, here as lost.
            Fence::Lost { status: BatchStatus::Settled, .. } => {
                metrics::settle_outcome(SettleOutcome::LeaseLost);
                tracing::info!(batch_id = %batch.id, attempt = batch.attempts, "a later attempt recorded this fill");
                Ok(Settlement::AlreadyFinished(BatchStatus::Settled))
            }
            Fence::Lost { status: status @ (BatchStatus::Refused | BatchStatus::Refunded), .. } => {
                metrics::settle_outcome(SettleOutcome::FilledAfterRefusal);
                tracing::error!(
                    batch_id = %batch.id, exchange_order_id = %fill.exchange_order_id, status = status.as_str(),
                    "the exchange filled a batch that was refused and refunded: an operator must reconcile"
                );
                Ok(Settlement::AlreadyFinished(status))
            }
            // A later attempt holds it; it asks the exchange first and records the fill.
            Fence::Lost { status, .. } => Err(self.lease_lost(batch, status)),
        }
    }

    /// Records the refusal before anyone is credited, then refunds (once
    /// `refunds_from` is past and a lookup confirms it, when it is set).
    async fn refuse(
        &self,
        batch: &Batch,
        reason: &str,
        refunds_from: Option<time::OffsetDateTime>,
    ) -> Result<Settlement, SettleError> {
        tracing::warn!(batch_id = %batch.id, %reason, "the exchange refused the batch for good; refunding its orders");
        match self
            .persist(batch, BatchStatus::Refused, || {
                self.settlements.refuse_batch(batch.id, batch.attempts, reason, refunds_from)
            })
            .await?
        {
            Fence::Held => {
                metrics::settle_outcome(SettleOutcome::Refused);
                self.refund(batch.id).await
            }
            Fence::Lost { status: BatchStatus::Refused | BatchStatus::Refunded, .. } => self.refund(batch.id).await,
            Fence::Lost { status: BatchStatus::Settled, .. } => Ok(Settlement::AlreadyFinished(BatchStatus::Settled)),
            Fence::Lost { status, .. } => Err(self.lease_lost(batch, status)),
        }
    }

    /// One bounded chunk of a refused batch's refunds; the rest continues
    /// with a message of its own. A refusal still waiting to be confirmed
    /// is confirmed first.
    async fn refund(&self, batch: BatchId) -> Result<Settlement, SettleError> {
        if let Some(settlement) = self.confirm_refusal(batch).await? {
            return Ok(settlement);
        }
        let refund = self.settlements.refund_batch(batch, self.refund_chunk).await?;
        if refund.finished {
            return Ok(Settlement::Refunded(refund));
        }
        self.queue.send(batch).await?;
        Ok(Settlement::Refunding(refund))
    }

    /// An attempt's fenced write of `sets`, tried again when the store
    /// fails: the write is conditioned on the attempt, so repeating it
    /// (even after a lost reply that applied it) can only find it done,
    /// and done by this attempt (`sets` under its number) it is held.
    async fn persist<'a, F, Fut>(&'a self, batch: &Batch, sets: BatchStatus, write: F) -> Result<Fence, InfraError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Fence, InfraError>> + 'a,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match write().await {
                Err(error) if tries < WRITE_TRIES => {
                    tracing::warn!(
                        error = %ErrorChain(&error),
                        tries,
                        "a settle write failed; trying again"
                    );
                    tokio::time::sleep(Duration::from_millis(50 << tries)).await;
                }
                result => {
                    return result.map(|fence| match fence {
                        Fence::Lost { status, attempts } if status == sets && attempts == batch.attempts => Fence::Held,
                        fence => fence,
                    });
                }
            }
        }
    }

    /// Another attempt took the batch over while this one ran.
    fn lease_lost(&self, batch: &Batch, now: BatchStatus) -> SettleError {
        metrics::settle_outcome(SettleOutcome::LeaseLost);
        SettleError::LeaseLost { batch: batch.id, attempt: batch.attempts, now }
    }

    /// Releases this attempt's lease so the redelivery can claim the batch
    /// at once.
    async fn give_back(&self, batch: &Batch, source: ExchangeError) -> SettleError {
        match self.settlements.release_batch(batch.id, batch.attempts, self.clock.now()).await {
            Ok(Fence::Held) => {}
            Ok(Fence::Lost { status, .. }) => {
                tracing::info!(batch_id = %batch.id, status = status.as_str(), "another attempt took the batch over");
            }
            // Harmless: the lease expires on its own.
            Err(error) => tracing::warn!(error = %ErrorChain(&error), "could not release the batch lease"),
        }
        match source {
            ExchangeError::Misconfigured { .. } => {
                metrics::settle_outcome(SettleOutcome::Misconfigured);
                tracing::error!(
                    batch_id = %batch.id, error = %ErrorChain(&source),
                    "the exchange rejects our requests: check EXCHANGE_URL and credentials"
                );
                SettleError::Misconfigured { batch: batch.id, source }
            }
            source => {
                metrics::settle_outcome(SettleOutcome::Unknown);
                SettleError::OutcomeUnknown { batch: batch.id, source }
            }
        }
    }
}

/// The settle queue's message body: the batch to settle. Everything else is
/// read from the batch item, so a message can never disagree with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SettleMessage {
    pub batch_id: String,
}
