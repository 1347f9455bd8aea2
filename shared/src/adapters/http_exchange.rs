//! `buy_from_exchange` over HTTP, as CONTRACTS.md §2 describes it.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::domain::{BatchId, Coin, Quantity};
use crate::ports::{Exchange, ExchangeError, ExchangeOrder, Fill, Lookup};

#[derive(Debug, Clone)]
pub struct HttpExchangeConfig {
    /// Base URL, without a trailing slash.
    pub base_url: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

pub struct HttpExchange {
    client: reqwest::Client,
    base_url: String,
}

#[derive(Serialize)]
struct OrderRequest<'a> {
    client_order_id: String,
    symbol: &'a str,
    side: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    quantity: String,
}

/// The fields of the exchange's order we use; others are ignored.
#[derive(Deserialize)]
struct OrderReply {
    exchange_order_id: Option<String>,
    status: Option<String>,
    /// A string or a number; kept as its text so it is parsed exactly.
    quantity: Option<Box<serde_json::value::RawValue>>,
}

impl HttpExchange {
    pub fn new(config: &HttpExchangeConfig) -> Result<HttpExchange, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .build()?;
        Ok(HttpExchange { client, base_url: config.base_url.trim_end_matches('/').to_owned() })
    }

    /// The call the challenge names: buy `quantity` of `coin`, once per batch.
    pub async fn buy_from_exchange(
        &self,
        coin: &Coin,
        quantity: Quantity,
        client_order_id: BatchId,
    ) -> Result<Fill, ExchangeError> {
        let body = OrderRequest {
            client_order_id: client_order_id.to_string(),
            symbol: coin.as_str(),
            side: "buy",
            kind: "market",
            quantity: quantity.to_string(),
        };
        let response = self
            .client
            .post(format!("{}/orders", self.base_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| unknown("the order request failed", e))?;
        let status = response.status();
        if status.is_success() {
            let reply = read_reply(response).await?;
            return match reply_to_lookup(reply)? {
                Lookup::Filled(fill) => Ok(fill),
                Lookup::NotFilled { status } => Err(ExchangeError::Unknown {
                    reason: format!("the exchange accepted the order but reports it {status:?}"),
                    source: None,
                }),
                Lookup::NotFound => {
                    Err(ExchangeError::Unknown { reason: "the exchange's reply has no order".to_owned(), source: None })
                }
            };
        }
        if is_transient(status) {
            return Err(ExchangeError::Unknown { reason: format!("the exchange answered {status}"), source: None });
        }
        let detail: String = response.text().await.unwrap_or_default().chars().take(500).collect();
        Err(ExchangeError::Refused { status: status.as_u16(), detail })
    }
}

fn is_transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

fn unknown(reason: &str, error: reqwest::Error) -> ExchangeError {
    ExchangeError::Unknown { reason: reason.to_owned(), source: Some(Box::new(error)) }
}

async fn read_reply(response: reqwest::Response) -> Result<OrderReply, ExchangeError> {
    let bytes = response.bytes().await.map_err(|e| unknown("reading the exchange's reply failed", e))?;
    serde_json::from_slice(&bytes).map_err(|e| ExchangeError::Unknown {
        reason: "the exchange's reply is not the order JSON".to_owned(),
        source: Some(Box::new(e)),
    })
}

fn reply_to_lookup(reply: OrderReply) -> Result<Lookup, ExchangeError> {
    let status = reply.status.unwrap_or_default();
    if status != "filled" {
        return Ok(Lookup::NotFilled { status });
    }
    let exchange_order_id = reply.exchange_order_id.filter(|id| !id.is_empty()).ok_or_else(|| {
        ExchangeError::Unknown { reason: "a fill without exchange_order_id".to_owned(), source: None }
    })?;
    let quantity = reply.quantity.and_then(|raw| {
        let text = raw.get();
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        Quantity::parse(text).ok()
    });
    Ok(Lookup::Filled(Fill { exchange_order_id, quantity }))
}

#[async_trait]
impl Exchange for HttpExchange {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        self.buy_from_exchange(&order.coin, order.quantity, order.client_order_id).await
    }

    async fn lookup(&self, client_order_id: BatchId) -> Result<Lookup, ExchangeError> {
        let response = self
            .client
            .get(format!("{}/orders/{client_order_id}", self.base_url))
            .send()
            .await
            .map_err(|e| unknown("the lookup request failed", e))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(Lookup::NotFound),
            status if status.is_success() => reply_to_lookup(read_reply(response).await?),
            status => Err(ExchangeError::Unknown { reason: format!("the lookup answered {status}"), source: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wiremock::matchers::{body_json, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    fn exchange(server: &MockServer, timeout_ms: u64) -> HttpExchange {
        HttpExchange::new(&HttpExchangeConfig {
            base_url: format!("{}/", server.uri()),
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(timeout_ms),
        })
        .unwrap()
    }

    fn order() -> ExchangeOrder {
        ExchangeOrder {
            client_order_id: BatchId::generate(),
            coin: Coin::from_trusted("ABAN"),
            quantity: Quantity::parse("3").unwrap(),
        }
    }

    #[tokio::test]
    async fn a_buy_sends_the_contract_body_and_reads_the_fill() {
        let server = MockServer::start().await;
        let order = order();
        Mock::given(method("POST"))
            .and(path("/orders"))
            .and(body_json(json!({
                "client_order_id": order.client_order_id.to_string(),
                "symbol": "ABAN", "side": "buy", "type": "market", "quantity": "3"
            })))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                "exchange_order_id": "X-1", "client_order_id": order.client_order_id.to_string(),
                "status": "filled", "quantity": 3
            })))
            .expect(1)
            .mount(&server)
            .await;
        let fill = exchange(&server, 2000).buy(&order).await.unwrap();
        assert_eq!(fill.exchange_order_id, "X-1");
        assert_eq!(fill.quantity, Some(Quantity::parse("3").unwrap()));
    }

    #[tokio::test]
    async fn server_errors_throttling_and_timeouts_are_unknown_outcomes() {
        for response in [
            ResponseTemplate::new(500),
            ResponseTemplate::new(503),
            ResponseTemplate::new(429),
            ResponseTemplate::new(200).set_body_json(json!({"exchange_order_id": "X", "status": "new"})),
            ResponseTemplate::new(200).set_body_string("<html>"),
            ResponseTemplate::new(200).set_delay(Duration::from_millis(400)),
        ] {
            let server = MockServer::start().await;
            Mock::given(method("POST")).respond_with(response).mount(&server).await;
            let result = exchange(&server, 200).buy(&order()).await;
            assert!(matches!(result, Err(ExchangeError::Unknown { .. })), "{result:?}");
        }
    }

    #[tokio::test]
    async fn other_client_errors_are_permanent_refusals() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_string("symbol halted"))
            .mount(&server)
            .await;
        let result = exchange(&server, 2000).buy(&order()).await;
        assert!(
            matches!(&result, Err(ExchangeError::Refused { status: 400, detail }) if detail == "symbol halted"),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_connection_refused_is_an_unknown_outcome() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let exchange = HttpExchange::new(&HttpExchangeConfig {
            base_url,
            connect_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(500),
        })
        .unwrap();
        assert!(matches!(exchange.buy(&order()).await, Err(ExchangeError::Unknown { .. })));
    }

    #[tokio::test]
    async fn lookup_tells_filled_unknown_and_never_seen_apart() {
        let server = MockServer::start().await;
        let (filled, pending, never) = (BatchId::generate(), BatchId::generate(), BatchId::generate());
        Mock::given(method("GET"))
            .and(path(format!("/orders/{filled}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "exchange_order_id": "X-9", "status": "filled", "quantity": "2.5"
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/orders/{pending}")))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"exchange_order_id": "X-8", "status": "new"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/orders/{never}")))
            .respond_with(ResponseTemplate::new(404))
            .mount(&server)
            .await;
        let exchange = exchange(&server, 2000);
        assert_eq!(
            exchange.lookup(filled).await.unwrap(),
            Lookup::Filled(Fill { exchange_order_id: "X-9".into(), quantity: Some(Quantity::parse("2.5").unwrap()) })
        );
        assert_eq!(exchange.lookup(pending).await.unwrap(), Lookup::NotFilled { status: "new".into() });
        assert_eq!(exchange.lookup(never).await.unwrap(), Lookup::NotFound);
    }
}
