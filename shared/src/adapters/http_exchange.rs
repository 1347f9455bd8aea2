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
//!
//! An answer is about our order only if it names our `client_order_id` (and,
//! when it says, the side buy); one that names another is an unknown
//! outcome and an error log. What is taken from an answer is bounded before
//! anything is written from it: the reply's size, the id's length and
//! characters, the status; a quantity that is not an exact decimal is
//! reported as unreadable (a mismatch), never as no quantity.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::domain::{BatchId, BatchQuantity, Coin};
use crate::ports::{Exchange, ExchangeError, ExchangeOrder, Fill, FillQuantity, Lookup};

/// Largest reply read: an order is a few hundred bytes.
const REPLY_LIMIT: usize = 64 * 1024;
/// Longest exchange order id taken (it is written to the batch item): no
/// exchange issues longer ones.
const ID_LIMIT: usize = 128;
/// Longest status or symbol taken.
const WORD_LIMIT: usize = 32;

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
    request_timeout: Duration,
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
    client_order_id: Option<String>,
    /// A string or a number (many exchanges number their orders).
    exchange_order_id: Option<Id>,
    symbol: Option<String>,
    side: Option<String>,
    status: Option<String>,
    /// A string or a number; kept as its text so it is parsed exactly.
    quantity: Option<Box<serde_json::value::RawValue>>,
}

/// An exchange's order id, as a JSON string or number; kept as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(serde_json::Number),
}

impl Id {
    fn into_text(self) -> String {
        match self {
            Id::Text(text) => text,
            Id::Number(number) => number.to_string(),
        }
    }
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
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        // The timeout bounds the whole request, its connection included.
        let request_timeout = config.request_timeout.max(config.connect_timeout);
        Ok(HttpExchange { client, base_url, request_timeout })
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
        let answer = HttpAnswer::read(response).await?;
        match read_post_answer(&answer, client_order_id, coin) {
            PostOutcome::Answered(outcome) => outcome,
            // It has this client order id already: what it says of it decides.
            PostOutcome::LookUp => after_conflict(self.lookup(client_order_id).await?),
        }
    }
}

/// An answer as it came over HTTP: its status, where a redirect points,
/// and its body, read up to [`REPLY_LIMIT`] (or why it could not be).
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Result<Vec<u8>, String>,
}

impl HttpAnswer {
    /// An answer with this status and body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> HttpAnswer {
        HttpAnswer { status, location: None, body: Ok(body.into()) }
    }

    async fn read(mut response: reqwest::Response) -> Result<HttpAnswer, ExchangeError> {
        let status = response.status().as_u16();
        let location =
            response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()).map(str::to_owned);
        let mut bytes = Vec::new();
        let body = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > REPLY_LIMIT {
                        break Err(format!("the exchange's reply is over {REPLY_LIMIT} bytes"));
                    }
                }
                Ok(None) => break Ok(bytes),
                // A 2xx whose body did not arrive says nothing: unknown.
                Err(error) if StatusCode::from_u16(status).is_ok_and(|s| s.is_success()) => {
                    return Err(unknown("reading the exchange's reply failed", error));
                }
                Err(error) => break Err(error.to_string()),
            }
        };
        Ok(HttpAnswer { status, location, body })
    }

    /// The start of an error answer's body, for logs.
    fn detail(&self) -> String {
        let body: String = match &self.body {
            Ok(bytes) => String::from_utf8_lossy(bytes).chars().take(500).collect(),
            Err(why) => why.clone(),
        };
        match &self.location {
            Some(location) => format!("redirected to {location}: {body}"),
            None => body,
        }
    }

    fn reply(&self) -> Result<OrderReply, ExchangeError> {
        let bytes = self.body.as_ref().map_err(|why| unreadable(why.clone()))?;
        serde_json::from_slice(bytes).map_err(|e| ExchangeError::Unknown {
            reason: "the exchange's reply is not the order JSON".to_owned(),
            source: Some(Box::new(e)),
        })
    }
}

/// What an answer to the POST means.
#[derive(Debug)]
pub enum PostOutcome {
    Answered(Result<Fill, ExchangeError>),
    /// `409`: the exchange has this id already; look it up.
    LookUp,
}

/// Reads an answer to the POST of batch `ours` in `coin` (the table of the
/// module). An answer naming another coin is about another order, whatever
/// its status: never a fill, never a refusal of ours.
pub fn read_post_answer(answer: &HttpAnswer, ours: BatchId, coin: &Coin) -> PostOutcome {
    let Ok(status) = StatusCode::from_u16(answer.status) else {
        return PostOutcome::Answered(Err(unreadable(format!("the exchange answered status {}", answer.status))));
    };
    let outcome = if status.is_success() {
        answer
            .reply()
            .and_then(|reply| in_coin(reply, ours, coin))
            .and_then(|reply| reply_to_lookup(reply, ours))
            .and_then(|lookup| {
                as_fill(lookup, "the exchange took the order but reports it", "the exchange's reply has no order")
            })
    } else if status == StatusCode::CONFLICT {
        return PostOutcome::LookUp;
    } else if is_transient(status) {
        Err(ExchangeError::Unknown { reason: format!("the exchange answered {status}"), source: None })
    } else if status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY {
        Err(ExchangeError::Refused { reason: format!("{status}: {}", answer.detail()) })
    } else {
        Err(ExchangeError::Misconfigured { status: status.as_u16(), detail: answer.detail() })
    };
    PostOutcome::Answered(outcome)
}

/// What a `409` comes to, once the lookup has answered.
pub fn after_conflict(lookup: Lookup) -> Result<Fill, ExchangeError> {
    as_fill(lookup, "409, and the exchange reports the order", "409, yet a lookup does not find the order")
}

/// What the exchange's account of our order means for the buy: a fill, a
/// refusal (ended unfilled), or an unknown outcome, whose reason says where
/// the account came from.
fn as_fill(lookup: Lookup, pending: &str, not_found: &str) -> Result<Fill, ExchangeError> {
    match lookup {
        Lookup::Filled(fill) => Ok(fill),
        Lookup::Ended { status } => Err(ExchangeError::Refused { reason: format!("the order ended {status}") }),
        Lookup::Pending { status } => {
            Err(ExchangeError::Unknown { reason: format!("{pending} {status:?}"), source: None })
        }
        Lookup::NotFound => Err(ExchangeError::Unknown { reason: not_found.to_owned(), source: None }),
    }
}

/// Reads an answer to the lookup of batch `ours`.
pub fn read_lookup_answer(answer: &HttpAnswer, ours: BatchId) -> Result<Lookup, ExchangeError> {
    let Ok(status) = StatusCode::from_u16(answer.status) else {
        return Err(unreadable(format!("the exchange answered status {}", answer.status)));
    };
    match status {
        StatusCode::NOT_FOUND => Ok(Lookup::NotFound),
        status if status.is_success() => reply_to_lookup(answer.reply()?, ours),
        status if is_transient(status) => {
            Err(ExchangeError::Unknown { reason: format!("the lookup answered {status}"), source: None })
        }
        status => Err(ExchangeError::Misconfigured { status: status.as_u16(), detail: answer.detail() }),
    }
}

fn is_transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

fn unknown(reason: &str, error: reqwest::Error) -> ExchangeError {
    ExchangeError::Unknown { reason: reason.to_owned(), source: Some(Box::new(error)) }
}

/// An answer that cannot be taken as it is: logged for an operator, and
/// an unknown outcome (looked up and retried; the dead-letter queue if it
/// never changes).
fn unreadable(reason: String) -> ExchangeError {
    tracing::error!(%reason, "the exchange's answer cannot be taken: an operator must look");
    ExchangeError::Unknown { reason, source: None }
}

/// Text from the answer, cut short and made printable, for logs and reasons.
fn shown(text: &str) -> String {
    text.chars().take(WORD_LIMIT).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect()
}

/// A short word of visible ASCII (a status, a symbol, a side).
fn word(text: &str) -> bool {
    !text.is_empty() && text.len() <= WORD_LIMIT && text.bytes().all(|b| b.is_ascii_graphic())
}

fn in_coin(reply: OrderReply, ours: BatchId, coin: &Coin) -> Result<OrderReply, ExchangeError> {
    match reply.symbol.as_deref() {
        Some(symbol) if !symbol.eq_ignore_ascii_case(coin.as_str()) => Err(unreadable(format!(
            "asked to buy {coin} for order {ours}, the exchange answered about {:?}",
            shown(symbol)
        ))),
        _ => Ok(reply),
    }
}

fn reply_to_lookup(reply: OrderReply, ours: BatchId) -> Result<Lookup, ExchangeError> {
    let ours = ours.to_string();
    match reply.client_order_id.as_deref() {
        Some(named) if named == ours => {}
        named => {
            let named = named.map_or("no order".to_owned(), |n| format!("order {:?}", shown(n)));
            return Err(unreadable(format!("asked about order {ours}, the exchange answered about {named}")));
        }
    }
    if let Some(side) = reply.side.as_deref().filter(|side| !side.eq_ignore_ascii_case("buy")) {
        return Err(unreadable(format!("the exchange reports order {ours} as side {:?}, not buy", shown(side))));
    }
    let status = reply.status.unwrap_or_default().to_ascii_lowercase();
    if !status.is_empty() && !word(&status) {
        return Err(unreadable(format!("order {ours} has an unreadable status {:?}", shown(&status))));
    }
    if ENDED_UNFILLED.contains(&status.as_str()) {
        return Ok(Lookup::Ended { status });
    }
    if status != "filled" {
        return Ok(Lookup::Pending { status });
    }
    let exchange_order_id = match reply.exchange_order_id.map(Id::into_text) {
        Some(id) if !id.is_empty() && id.len() <= ID_LIMIT && id.bytes().all(|b| b.is_ascii_graphic()) => id,
        Some(id) => {
            return Err(unreadable(format!(
                "the fill of order {ours} has an exchange_order_id of {} bytes that is not up to {ID_LIMIT} visible characters",
                id.len()
            )));
        }
        None => return Err(unreadable(format!("the fill of order {ours} has no exchange_order_id"))),
    };
    let symbol = match reply.symbol {
        Some(symbol) if !word(&symbol) => {
            return Err(unreadable(format!(
                "the fill of order {ours} names an unreadable symbol {:?}",
                shown(&symbol)
            )));
        }
        symbol => symbol,
    };
    let quantity = reply.quantity.map_or(FillQuantity::Unstated, |raw| fill_quantity(raw.get()));
    Ok(Lookup::Filled(Fill { exchange_order_id, symbol, quantity }))
}

/// A JSON number or string, read exactly: `3`, `"3.50"`, `1e9`, `2.5E-3`.
/// Anything else, or a value that does not fit a quantity exactly, is
/// unreadable.
fn fill_quantity(raw: &str) -> FillQuantity {
    let text = raw.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(raw);
    crate::domain::exact_decimal(text)
        .and_then(BatchQuantity::from_decimal)
        .map_or_else(|| FillQuantity::Unreadable(shown(text)), FillQuantity::Stated)
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
        read_lookup_answer(&HttpAnswer::read(response).await?, client_order_id)
    }

    fn request_timeout(&self) -> Duration {
        self.request_timeout
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

    /// The batch every test buys (answers must name it).
    const OURS: &str = "01JDQ3Z8K2M4N6P8R0S2T4V6W8";

    fn order() -> ExchangeOrder {
        ExchangeOrder {
            client_order_id: BatchId::parse(OURS).unwrap(),
            coin: Coin::from_trusted("ABAN"),
            quantity: quantity("3"),
        }
    }

    fn order_with_status(status: &str) -> serde_json::Value {
        json!({"exchange_order_id": "X-1", "client_order_id": OURS, "symbol": "ABAN", "side": "buy",
               "status": status, "quantity": "3"})
    }

    fn filled_with(field: &str, value: serde_json::Value) -> ResponseTemplate {
        let mut body = order_with_status("filled");
        body[field] = value;
        ResponseTemplate::new(200).set_body_json(body)
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
        assert_eq!(fill.quantity, FillQuantity::Stated(quantity("3")));
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
                "exchange_order_id": "X-2", "client_order_id": OURS, "status": "filled", "quantity": "1000000000.5"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let fill = exchange(&server, 2000).buy(&order).await.unwrap();
        assert_eq!(fill.quantity, FillQuantity::Stated(quantity("1000000000.5")));
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
            ResponseTemplate::new(200).set_body_json(
                json!({"exchange_order_id": "X-9", "client_order_id": ids[0].to_string(), "status": "filled", "quantity": "2.5"}),
            ),
            ResponseTemplate::new(200).set_body_json(json!({"client_order_id": ids[1].to_string(), "status": "new"})),
            ResponseTemplate::new(200).set_body_json(json!({"client_order_id": ids[2].to_string(), "status": "expired"})),
            ResponseTemplate::new(404),
            ResponseTemplate::new(401),
            ResponseTemplate::new(502),
        ];
        for (id, answer) in ids.iter().zip(answers) {
            Mock::given(method("GET")).and(path(format!("/orders/{id}"))).respond_with(answer).mount(&server).await;
        }
        let exchange = exchange(&server, 2000);
        assert_eq!(exchange.lookup(ids[0]).await.unwrap(), Lookup::Filled(Fill::of("X-9", quantity("2.5"))));
        assert_eq!(exchange.lookup(ids[1]).await.unwrap(), Lookup::Pending { status: "new".into() });
        assert_eq!(exchange.lookup(ids[2]).await.unwrap(), Lookup::Ended { status: "expired".into() });
        assert_eq!(exchange.lookup(ids[3]).await.unwrap(), Lookup::NotFound);
        assert!(matches!(exchange.lookup(ids[4]).await, Err(ExchangeError::Misconfigured { status: 401, .. })));
        assert!(matches!(exchange.lookup(ids[5]).await, Err(ExchangeError::Unknown { .. })));
    }

    #[tokio::test]
    async fn an_answer_about_another_order_or_side_is_no_answer_about_ours() {
        for (field, value) in [
            ("client_order_id", json!("someone-else")),
            ("client_order_id", json!(null)),
            ("client_order_id", json!(OURS.to_lowercase())),
            ("side", json!("sell")),
            ("symbol", json!("BTC")),
        ] {
            for status in ["filled", "rejected"] {
                let mut body = order_with_status(status);
                body[field] = value.clone();
                let result = buy_answered(ResponseTemplate::new(200).set_body_json(body)).await;
                assert!(matches!(result, Err(ExchangeError::Unknown { .. })), "{field}={value} {status}: {result:?}");
            }
        }
        let result = buy_answered(filled_with("side", json!("BUY"))).await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn numbered_ids_and_statuses_in_capitals_are_read() {
        let fill = buy_answered(filled_with("exchange_order_id", json!(123456789012u64))).await.unwrap();
        assert_eq!(fill.exchange_order_id, "123456789012");
        let fill = buy_answered(filled_with("status", json!("FILLED"))).await.unwrap();
        assert_eq!(fill.exchange_order_id, "X-1");
        let mut body = order_with_status("REJECTED");
        body["status"] = json!("REJECTED");
        let result = buy_answered(ResponseTemplate::new(200).set_body_json(body)).await;
        assert!(matches!(result, Err(ExchangeError::Refused { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn quantities_are_read_exactly_or_reported_unreadable() {
        for (value, expected) in [
            (json!("3"), FillQuantity::Stated(quantity("3"))),
            (json!(3), FillQuantity::Stated(quantity("3"))),
            (json!("3.000"), FillQuantity::Stated(quantity("3"))),
            (json!("3e0"), FillQuantity::Stated(quantity("3"))),
            (json!("1e9"), FillQuantity::Stated(quantity("1000000000"))),
            (json!("2.5E-3"), FillQuantity::Stated(quantity("0.0025"))),
            (json!("0.3e+1"), FillQuantity::Stated(quantity("3"))),
            (json!("abc"), FillQuantity::Unreadable("abc".into())),
            (json!("-3"), FillQuantity::Unreadable("-3".into())),
            (json!("0"), FillQuantity::Unreadable("0".into())),
            (json!("1e29"), FillQuantity::Unreadable("1e29".into())),
            (json!("0e2000000000"), FillQuantity::Unreadable("0e2000000000".into())),
            (
                json!("1.0000000000000000000000000000001"),
                FillQuantity::Unreadable("1.000000000000000000000000000000".into()),
            ),
            (json!(null), FillQuantity::Unstated),
        ] {
            let fill = buy_answered(filled_with("quantity", value.clone())).await.unwrap();
            assert_eq!(fill.quantity, expected, "{value}");
        }
        let mut body = order_with_status("filled");
        body.as_object_mut().unwrap().remove("quantity");
        let fill = buy_answered(ResponseTemplate::new(200).set_body_json(body)).await.unwrap();
        assert_eq!(fill.quantity, FillQuantity::Unstated);
    }

    #[tokio::test]
    async fn what_is_taken_from_an_answer_is_bounded() {
        for response in [
            filled_with("exchange_order_id", json!("x".repeat(500 * 1024))),
            filled_with("exchange_order_id", json!("x".repeat(129))),
            filled_with("exchange_order_id", json!("has space")),
            filled_with("exchange_order_id", json!("")),
            filled_with("status", json!("filled".repeat(10))),
            filled_with("symbol", json!("A".repeat(33))),
            filled_with("padding", json!("x".repeat(REPLY_LIMIT))),
        ] {
            let result = buy_answered(response).await;
            assert!(matches!(result, Err(ExchangeError::Unknown { .. })), "{result:?}");
        }
        let fill = buy_answered(filled_with("exchange_order_id", json!("x".repeat(128)))).await.unwrap();
        assert_eq!(fill.exchange_order_id.len(), 128);
        let fill = buy_answered(filled_with("symbol", json!("ABAN"))).await.unwrap();
        assert_eq!(fill.symbol.as_deref(), Some("ABAN"));
    }
}
