//! `buy_from_exchange` over HTTP, as docs/exchange-protocol.md describes
//! it. What each answer means:
//!
//! | answer to the POST | meaning |
//! | --- | --- |
//! | 2xx, `status: filled` | a fill |
//! | 2xx, `rejected` / `canceled` / `expired` | refused for good |
//! | 2xx, any other status (`new`, `open`, …), or unreadable | unknown: look it up |
//! | 400, 422 | refused for good |
//! | 409 | it has the id already: look it up |
//! | 401, 403, 404, 405, other 4xx, a redirect | our configuration: retried, logged for an operator |
//! | 408, 429, 5xx, a timeout, a broken connection | unknown: look it up |
//!
//! Redirects are never followed: a redirected POST would become a GET.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::domain::{BatchId, BatchQuantity, Coin};
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

/// Final statuses that are not a fill: the exchange will never fill it.
const ENDED_UNFILLED: [&str; 4] = ["rejected", "canceled", "cancelled", "expired"];

impl HttpExchange {
    pub fn new(config: &HttpExchangeConfig) -> Result<HttpExchange, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(HttpExchange { client, base_url: config.base_url.trim_end_matches('/').to_owned() })
    }

    /// The call the challenge names: buy `quantity` of `coin`, once per batch.
    pub async fn buy_from_exchange(
        &self,
        coin: &Coin,
        quantity: BatchQuantity,
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
            return match reply_to_lookup(read_reply(response).await?)? {
                Lookup::Filled(fill) => Ok(fill),
                Lookup::Ended { status } => Err(ExchangeError::Refused { reason: format!("the order ended {status}") }),
                Lookup::Pending { status } => Err(ExchangeError::Unknown {
                    reason: format!("the exchange took the order but reports it {status:?}"),
                    source: None,
                }),
                Lookup::NotFound => {
                    Err(ExchangeError::Unknown { reason: "the exchange's reply has no order".to_owned(), source: None })
                }
            };
        }
        if status == StatusCode::CONFLICT {
            // It has this client order id already: what it says of it decides.
            return match self.lookup(client_order_id).await? {
                Lookup::Filled(fill) => Ok(fill),
                Lookup::Ended { status } => Err(ExchangeError::Refused { reason: format!("the order ended {status}") }),
                Lookup::Pending { status } => Err(ExchangeError::Unknown {
                    reason: format!("409, and the exchange reports the order {status:?}"),
                    source: None,
                }),
                Lookup::NotFound => Err(ExchangeError::Unknown {
                    reason: "409, yet a lookup does not find the order".to_owned(),
                    source: None,
                }),
            };
        }
        if is_transient(status) {
            return Err(ExchangeError::Unknown { reason: format!("the exchange answered {status}"), source: None });
        }
        let detail = detail(response).await;
        if status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY {
            return Err(ExchangeError::Refused { reason: format!("{status}: {detail}") });
        }
        Err(ExchangeError::Misconfigured { status: status.as_u16(), detail })
    }
}

fn is_transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

fn unknown(reason: &str, error: reqwest::Error) -> ExchangeError {
    ExchangeError::Unknown { reason: reason.to_owned(), source: Some(Box::new(error)) }
}

/// The start of an error answer's body, for logs.
async fn detail(response: reqwest::Response) -> String {
    let location = response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()).map(str::to_owned);
    let body: String = response.text().await.unwrap_or_default().chars().take(500).collect();
    match location {
        Some(location) => format!("redirected to {location}: {body}"),
        None => body,
    }
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
    if ENDED_UNFILLED.contains(&status.as_str()) {
        return Ok(Lookup::Ended { status });
    }
    if status != "filled" {
        return Ok(Lookup::Pending { status });
    }
    let exchange_order_id = reply.exchange_order_id.filter(|id| !id.is_empty()).ok_or_else(|| {
        ExchangeError::Unknown { reason: "a fill without exchange_order_id".to_owned(), source: None }
    })?;
    let quantity = reply.quantity.and_then(|raw| {
        let text = raw.get();
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        plain.then(|| text.parse().ok()).flatten().and_then(BatchQuantity::from_decimal)
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
            status if is_transient(status) => {
                Err(ExchangeError::Unknown { reason: format!("the lookup answered {status}"), source: None })
            }
            status => Err(ExchangeError::Misconfigured { status: status.as_u16(), detail: detail(response).await }),
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

    fn quantity(text: &str) -> BatchQuantity {
        BatchQuantity::from_decimal(text.parse().unwrap()).unwrap()
    }

    fn order() -> ExchangeOrder {
        ExchangeOrder {
            client_order_id: BatchId::generate(),
            coin: Coin::from_trusted("ABAN"),
            quantity: quantity("3"),
        }
    }

    fn order_with_status(status: &str) -> serde_json::Value {
        json!({"exchange_order_id": "X-1", "status": status, "quantity": "3"})
    }

    /// What one answer to the POST comes to (nothing answers the lookup of a 409).
    async fn buy_answered(response: ResponseTemplate) -> Result<Fill, ExchangeError> {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(response).mount(&server).await;
        exchange(&server, 300).buy(&order()).await
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
        assert_eq!(fill.quantity, Some(quantity("3")));
    }

    #[tokio::test]
    async fn a_batch_larger_than_any_order_is_sent_whole() {
        let server = MockServer::start().await;
        let mut order = order();
        order.quantity = quantity("1000000000.5");
        Mock::given(method("POST"))
            .and(body_json(json!({
                "client_order_id": order.client_order_id.to_string(),
                "symbol": "ABAN", "side": "buy", "type": "market", "quantity": "1000000000.5"
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "exchange_order_id": "X-2", "status": "filled", "quantity": "1000000000.5"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let fill = exchange(&server, 2000).buy(&order).await.unwrap();
        assert_eq!(fill.quantity, Some(quantity("1000000000.5")));
    }

    #[tokio::test]
    async fn server_errors_throttling_timeouts_and_unfinished_orders_are_unknown_outcomes() {
        for response in [
            ResponseTemplate::new(500),
            ResponseTemplate::new(503),
            ResponseTemplate::new(429),
            ResponseTemplate::new(408),
            ResponseTemplate::new(200).set_body_json(order_with_status("new")),
            ResponseTemplate::new(201).set_body_json(order_with_status("open")),
            ResponseTemplate::new(200).set_body_json(order_with_status("pending")),
            ResponseTemplate::new(200).set_body_string("<html>"),
            ResponseTemplate::new(200).set_delay(Duration::from_millis(600)),
        ] {
            let result = buy_answered(response).await;
            assert!(matches!(result, Err(ExchangeError::Unknown { .. })), "{result:?}");
        }
    }

    #[tokio::test]
    async fn only_400_422_and_orders_ended_unfilled_are_refusals() {
        for response in [
            ResponseTemplate::new(400).set_body_string("symbol halted"),
            ResponseTemplate::new(422).set_body_string("quantity below minimum"),
            ResponseTemplate::new(200).set_body_json(order_with_status("rejected")),
            ResponseTemplate::new(201).set_body_json(order_with_status("canceled")),
            ResponseTemplate::new(200).set_body_json(order_with_status("expired")),
        ] {
            let result = buy_answered(response).await;
            assert!(matches!(result, Err(ExchangeError::Refused { .. })), "{result:?}");
        }
        let result = buy_answered(ResponseTemplate::new(400).set_body_string("symbol halted")).await;
        assert!(
            matches!(&result, Err(ExchangeError::Refused { reason }) if reason.contains("symbol halted")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn configuration_errors_and_redirects_are_never_refusals() {
        for status in [401u16, 403, 404, 405, 410, 418] {
            let result = buy_answered(ResponseTemplate::new(status).set_body_string("no")).await;
            assert!(
                matches!(result, Err(ExchangeError::Misconfigured { status: s, .. }) if s == status),
                "{status}: {result:?}"
            );
        }
        for status in [301u16, 302, 307, 308] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path("/orders"))
                .respond_with(ResponseTemplate::new(status).insert_header("location", "/elsewhere"))
                .mount(&server)
                .await;
            // Following it would turn the buy into a request nobody meant.
            Mock::given(path("/elsewhere")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&server).await;
            let result = exchange(&server, 2000).buy(&order()).await;
            assert!(
                matches!(result, Err(ExchangeError::Misconfigured { status: s, .. }) if s == status),
                "{status}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_409_is_what_the_lookup_says() {
        for (lookup, expected) in [
            (ResponseTemplate::new(200).set_body_json(order_with_status("filled")), "fill"),
            (ResponseTemplate::new(200).set_body_json(order_with_status("rejected")), "refused"),
            (ResponseTemplate::new(200).set_body_json(order_with_status("new")), "unknown"),
            (ResponseTemplate::new(404), "unknown"),
        ] {
            let server = MockServer::start().await;
            Mock::given(method("POST")).respond_with(ResponseTemplate::new(409)).mount(&server).await;
            Mock::given(method("GET")).respond_with(lookup).expect(1).mount(&server).await;
            let result = exchange(&server, 2000).buy(&order()).await;
            let got = match &result {
                Ok(_) => "fill",
                Err(ExchangeError::Refused { .. }) => "refused",
                Err(ExchangeError::Unknown { .. }) => "unknown",
                Err(ExchangeError::Misconfigured { .. }) => "misconfigured",
            };
            assert_eq!(got, expected, "{result:?}");
        }
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
    async fn lookup_tells_filled_pending_ended_and_never_seen_apart() {
        let server = MockServer::start().await;
        let ids: Vec<BatchId> = (0..6).map(|_| BatchId::generate()).collect();
        let answers = [
            ResponseTemplate::new(200)
                .set_body_json(json!({"exchange_order_id": "X-9", "status": "filled", "quantity": "2.5"})),
            ResponseTemplate::new(200).set_body_json(order_with_status("new")),
            ResponseTemplate::new(200).set_body_json(order_with_status("expired")),
            ResponseTemplate::new(404),
            ResponseTemplate::new(401),
            ResponseTemplate::new(502),
        ];
        for (id, answer) in ids.iter().zip(answers) {
            Mock::given(method("GET")).and(path(format!("/orders/{id}"))).respond_with(answer).mount(&server).await;
        }
        let exchange = exchange(&server, 2000);
        assert_eq!(
            exchange.lookup(ids[0]).await.unwrap(),
            Lookup::Filled(Fill { exchange_order_id: "X-9".into(), quantity: Some(quantity("2.5")) })
        );
        assert_eq!(exchange.lookup(ids[1]).await.unwrap(), Lookup::Pending { status: "new".into() });
        assert_eq!(exchange.lookup(ids[2]).await.unwrap(), Lookup::Ended { status: "expired".into() });
        assert_eq!(exchange.lookup(ids[3]).await.unwrap(), Lookup::NotFound);
        assert!(matches!(exchange.lookup(ids[4]).await, Err(ExchangeError::Misconfigured { status: 401, .. })));
        assert!(matches!(exchange.lookup(ids[5]).await, Err(ExchangeError::Unknown { .. })));
    }
}
