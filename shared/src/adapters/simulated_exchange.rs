//! The exchange `orders-local` talks to when no `--exchange-url` is given:
//! fills every order at once, idempotently on the client order id, and logs it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::BatchId;
use crate::ports::{Exchange, ExchangeError, ExchangeOrder, Fill, Lookup};

#[derive(Default)]
pub struct SimulatedExchange {
    fills: Mutex<HashMap<BatchId, Fill>>,
}

impl SimulatedExchange {
    pub fn new() -> SimulatedExchange {
        SimulatedExchange::default()
    }
}

fn poisoned() -> ExchangeError {
    ExchangeError::Unknown { reason: "simulated exchange lock poisoned".to_owned(), source: None }
}

#[async_trait]
impl Exchange for SimulatedExchange {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        let mut fills = self.fills.lock().map_err(|_| poisoned())?;
        let sequence = fills.len() + 1;
        let fill = fills.entry(order.client_order_id).or_insert_with(|| {
            tracing::info!(
                client_order_id = %order.client_order_id,
                coin = %order.coin,
                quantity = %order.quantity,
                "simulated exchange filled a market buy"
            );
            Fill::of(format!("SIM-{sequence}"), order.quantity)
        });
        Ok(fill.clone())
    }

    async fn lookup(&self, client_order_id: BatchId) -> Result<Lookup, ExchangeError> {
        let fills = self.fills.lock().map_err(|_| poisoned())?;
        Ok(fills.get(&client_order_id).cloned().map_or(Lookup::NotFound, Lookup::Filled))
    }

    /// It answers in the same call: nothing is ever on its way.
    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}
