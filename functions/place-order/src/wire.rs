//! The Order API's JSON, separate from the domain types. Amounts are read
//! from their exact JSON text, never through a float.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shared::domain::{OrderId, OrderStatus, OrderView, Quantity, Usd, UserId, format_decimal};
use shared::ports::{OrderList, OrderPage};
use time::format_description::well_known::Rfc3339;

use crate::problem::ApiError;

/// The body of `POST /orders`, as parsed from JSON.
#[derive(Deserialize)]
struct PlaceOrderBody<'a> {
    coin: String,
    #[serde(borrow)]
    amount: &'a RawValue,
}

/// A `POST /orders` request once its body is understood.
#[derive(Debug)]
pub struct PlaceOrderRequest {
    pub coin: String,
    pub amount: Quantity,
}

impl PlaceOrderRequest {
    /// Shape errors are 400; a well-formed but unacceptable amount is 422.
    pub fn parse(body: &[u8]) -> Result<PlaceOrderRequest, ApiError> {
        let malformed = |detail: &str| ApiError::Malformed(detail.to_owned());
        let text = std::str::from_utf8(body).map_err(|_| malformed("the body is not UTF-8 JSON"))?;
        // serde would also take a JSON array as a struct; the API takes objects only.
        if !text.trim_start().starts_with('{') {
            return Err(malformed("the body must be a JSON object with \"coin\" and \"amount\""));
        }
        let parsed: PlaceOrderBody<'_> =
            serde_json::from_str(text).map_err(|e| ApiError::Malformed(format!("invalid order JSON: {e}")))?;
        let raw = parsed.amount.get();
        let amount_text = match raw.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(raw)
                .map_err(|e| ApiError::Malformed(format!("invalid amount string: {e}")))?,
            Some(b'-' | b'0'..=b'9') => raw.to_owned(),
            _ => {
                return Err(malformed("\"amount\" must be a decimal string or a JSON number"));
            }
        };
        let amount = Quantity::parse(&amount_text)?;
        Ok(PlaceOrderRequest { coin: parsed.coin, amount })
    }
}

/// A `POST /orders/{id}/cancel` body: none, or an empty JSON object.
#[derive(Debug)]
pub struct CancelRequest;

impl CancelRequest {
    pub fn parse(body: &[u8]) -> Result<CancelRequest, ApiError> {
        let malformed = || ApiError::Malformed("a cancel takes no body, or the empty JSON object {}".to_owned());
        if body.is_empty() {
            return Ok(CancelRequest);
        }
        let text = std::str::from_utf8(body).map_err(|_| malformed())?;
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(members)) if members.is_empty() => Ok(CancelRequest),
            _ => Err(malformed()),
        }
    }
}

/// An order as the API shows it.
#[derive(Debug, Serialize)]
pub struct OrderResponse {
    pub order_id: String,
    pub coin: String,
    pub amount: String,
    pub price_usd: String,
    pub cost_usd: String,
    pub status: &'static str,
    pub batch_id: Option<String>,
    pub exchange_order_id: Option<String>,
    pub created_at: String,
}

impl From<&OrderView> for OrderResponse {
    fn from(view: &OrderView) -> Self {
        let order = &view.order;
        // Whole seconds, as the contract shows: "2026-11-25T19:04:02Z".
        let created_at = order.created_at.replace_nanosecond(0).unwrap_or(order.created_at);
        OrderResponse {
            order_id: order.id.to_string(),
            coin: order.coin.to_string(),
            amount: order.amount.to_string(),
            price_usd: order.price.to_string(),
            cost_usd: order.cost.to_string(),
            status: view.status.as_str(),
            batch_id: view.batch_id.map(|b| b.to_string()),
            exchange_order_id: view.exchange_order_id.clone(),
            created_at: created_at.format(&Rfc3339).unwrap_or_default(),
        }
    }
}

/// The query of `GET /orders`, checked: `limit` 1–100 (50), an opaque
/// `cursor` from the previous page, a `status`. Anything else is a 400.
pub struct ListQuery;

impl ListQuery {
    pub fn parse(query: &aws_lambda_events::query_map::QueryMap) -> Result<OrderPage, ApiError> {
        let bad = |detail: String| ApiError::BadQuery(detail);
        let one = |name: &str| -> Result<Option<&str>, ApiError> {
            match query.all(name).unwrap_or_default().as_slice() {
                [] => Ok(None),
                [value] => Ok(Some(*value)),
                _ => Err(bad(format!("{name} is given more than once"))),
            }
        };
        for (name, _) in query.iter() {
            if !["limit", "cursor", "status"].contains(&name) {
                return Err(bad(format!("unknown query parameter {:?}; known: limit, cursor, status", name)));
            }
        }
        let limit = match one("limit")? {
            None => 50,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n) && text.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| bad("limit must be a whole number from 1 to 100".to_owned()))?,
        };
        let after = match one("cursor")? {
            None => None,
            Some(text) => Some(cursor_order(text).ok_or_else(|| bad("cursor is not one this API gave".to_owned()))?),
        };
        let status =
            match one("status")? {
                None => None,
                Some(text) => Some(OrderStatus::parse(text).ok_or_else(|| {
                    bad(format!("status must be pending, settling, settled or refunded, not {text:?}"))
                })?),
            };
        Ok(OrderPage { limit, after, status })
    }
}

const CURSOR_PREFIX: &str = "o1.";

/// An opaque cursor: where the next page starts.
fn cursor(after: OrderId) -> String {
    format!("{CURSOR_PREFIX}{after}")
}

fn cursor_order(text: &str) -> Option<OrderId> {
    OrderId::parse(text.strip_prefix(CURSOR_PREFIX)?).ok()
}

/// A page of orders, newest first.
#[derive(Debug, Serialize)]
pub struct OrderListResponse {
    pub orders: Vec<OrderResponse>,
    pub next_cursor: Option<String>,
}

impl From<&OrderList> for OrderListResponse {
    fn from(list: &OrderList) -> Self {
        OrderListResponse {
            orders: list.orders.iter().map(OrderResponse::from).collect(),
            next_cursor: list.next.map(cursor),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AccountResponse {
    pub user_id: String,
    pub balance_usd: String,
}

impl AccountResponse {
    pub fn new(user: &UserId, balance: Usd) -> AccountResponse {
        AccountResponse { user_id: user.to_string(), balance_usd: format_decimal(balance.value()) }
    }
}

#[cfg(test)]
mod tests {
    use shared::domain::InvalidAmount;

    use super::*;

    fn parse(body: &str) -> Result<PlaceOrderRequest, ApiError> {
        PlaceOrderRequest::parse(body.as_bytes())
    }

    #[test]
    fn amounts_are_read_exactly_from_strings_and_numbers() {
        for (body, amount) in [
            (r#"{"coin":"ABAN","amount":"3"}"#, "3"),
            (r#"{"coin":"ABAN","amount":3}"#, "3"),
            (r#"{"coin":"ABAN","amount":"0.250000000"}"#, "0.25"),
            (r#"{"coin":"ABAN","amount":0.1}"#, "0.1"),
            (r#"{"amount":"1.0","coin":"ABAN","note":"extra fields are ignored"}"#, "1"),
        ] {
            let request = parse(body).unwrap();
            assert_eq!(request.amount.to_string(), amount, "{body}");
            assert_eq!(request.coin, "ABAN");
        }
    }

    #[test]
    fn shape_errors_are_malformed_requests() {
        for body in [
            "",
            "not json",
            "[\"ABAN\",\"3\"]",
            "{\"coin\":\"ABAN\"}",
            "{\"amount\":\"3\"}",
            "{\"coin\":3,\"amount\":\"3\"}",
            "{\"coin\":\"ABAN\",\"amount\":true}",
            "{\"coin\":\"ABAN\",\"amount\":null}",
            "{\"coin\":\"ABAN\",\"amount\":[3]}",
            "{\"coin\":\"ABAN\",\"amount\":{\"v\":3}}",
            "{\"coin\":\"ABAN\",\"amount\":NaN}",
            "{\"coin\":\"ABAN\",\"amount\":\"3\"",
            "{\"coin\":\"ABAN\",\"coin\":\"ABAN\",\"amount\":\"3\"}",
        ] {
            assert!(matches!(parse(body), Err(ApiError::Malformed(_))), "{body:?}");
        }
        assert!(matches!(PlaceOrderRequest::parse(b"{\"coin\":\"\xff\"}"), Err(ApiError::Malformed(_))));
    }

    #[test]
    fn unacceptable_amounts_are_invalid_amounts() {
        for body in [
            r#"{"coin":"ABAN","amount":"0"}"#,
            r#"{"coin":"ABAN","amount":0}"#,
            r#"{"coin":"ABAN","amount":-1}"#,
            r#"{"coin":"ABAN","amount":"-1"}"#,
            r#"{"coin":"ABAN","amount":"NaN"}"#,
            r#"{"coin":"ABAN","amount":"Infinity"}"#,
            r#"{"coin":"ABAN","amount":1e400}"#,
            r#"{"coin":"ABAN","amount":1E2}"#,
            r#"{"coin":"ABAN","amount":"1e3"}"#,
            r#"{"coin":"ABAN","amount":"0.000000001"}"#,
            r#"{"coin":"ABAN","amount":0.000000001}"#,
            r#"{"coin":"ABAN","amount":"1000000000.5"}"#,
            r#"{"coin":"ABAN","amount":""}"#,
            r#"{"coin":"ABAN","amount":" 3"}"#,
        ] {
            assert!(matches!(parse(body), Err(ApiError::InvalidAmount(_))), "{body}");
        }
        assert!(matches!(
            parse(r#"{"coin":"ABAN","amount":"0.000000001"}"#),
            Err(ApiError::InvalidAmount(InvalidAmount::TooPrecise { max: 8 }))
        ));
    }
}
