//! Every error the Order API returns, and the one table that maps each to
//! its status, stable `type` and title (RFC 9457 problem details).

use http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};
use serde::Serialize;
use shared::domain::{InvalidAmount, InvalidId, PoolOverflow, UnknownCoin, Usd};
use shared::ports::InfraError;
use shared::service::BelowMinimum;
use shared::telemetry::ErrorChain;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request carries no authenticated user")]
    Unauthenticated,
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request is not well-formed: its body, a header, its framing.
    #[error("{0}")]
    Malformed(String),
    #[error("the request URI is too long")]
    UriTooLong,
    #[error("the request's headers are too large")]
    HeadersTooLarge,
    #[error("the request was not received in time")]
    RequestTimeout,
    #[error("{0}")]
    BadQuery(String),
    #[error(transparent)]
    InvalidIdempotencyKey(InvalidId),
    #[error(transparent)]
    UnknownCoin(#[from] UnknownCoin),
    #[error(transparent)]
    InvalidAmount(#[from] InvalidAmount),
    #[error(transparent)]
    PoolOverflow(#[from] PoolOverflow),
    #[error(transparent)]
    BelowMinimum(#[from] BelowMinimum),
    #[error("the balance is {balance} USD but the order costs {cost} USD")]
    InsufficientFunds { balance: Usd, cost: Usd },
    #[error("this Idempotency-Key was already used for a different order (coin or amount)")]
    IdempotencyKeyReused,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("the service is too busy to take this order now; nothing changed, retry shortly")]
    Busy,
    /// A write was sent and its answer lost: the order may have been placed.
    #[error("could not tell whether the order was placed")]
    OutcomeUnknown(#[source] InfraError),
    #[error("order {id} is {status} and can no longer be canceled")]
    OrderNotPending { id: String, status: &'static str },
    /// A cancel failed midway: it may have been taken.
    #[error("could not tell whether the order was canceled")]
    CancelOutcomeUnknown(#[source] InfraError),
    #[error("internal error")]
    Internal(#[source] InfraError),
}

impl ApiError {
    /// Status, problem type and title: the table other programs rely on.
    fn code(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthorized", "Authentication required"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large")
            }
            ApiError::Malformed(_) | ApiError::BadQuery(_) => {
                (StatusCode::BAD_REQUEST, "malformed-request", "Malformed request")
            }
            ApiError::UriTooLong => (StatusCode::URI_TOO_LONG, "uri-too-long", "URI too long"),
            ApiError::HeadersTooLarge => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large", "Request headers too large")
            }
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request timeout"),
            ApiError::InvalidIdempotencyKey(_) => {
                (StatusCode::BAD_REQUEST, "invalid-idempotency-key", "Invalid Idempotency-Key")
            }
            ApiError::UnknownCoin(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown-coin", "Unknown coin"),
            ApiError::InvalidAmount(_) | ApiError::PoolOverflow(_) | ApiError::BelowMinimum(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-amount", "Invalid amount")
            }
            ApiError::InsufficientFunds { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "insufficient-funds", "Insufficient funds")
            }
            ApiError::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused")
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
            }
            ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy", "Service busy"),
            ApiError::OutcomeUnknown(_) | ApiError::CancelOutcomeUnknown(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "outcome-unknown", "Outcome unknown")
            }
            ApiError::OrderNotPending { .. } => (StatusCode::CONFLICT, "order-not-pending", "Order not pending"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code().0
    }

    /// The status and the problem+json body. A 5xx says nothing internal;
    /// its cause chain is logged here, once, and every answer is counted
    /// here (whoever answers it: the handler, or `orders-local`'s gateway
    /// and HTTP layer).
    pub fn problem(&self) -> (StatusCode, String) {
        let (status, kind, title) = self.code();
        shared::metrics::problem_answered(kind);
        let detail = match self {
            ApiError::Internal(source) => {
                tracing::error!(error = %ErrorChain(source), "request failed");
                "The request could not be completed; it changed nothing and may be retried.".to_owned()
            }
            ApiError::OutcomeUnknown(source) => {
                tracing::error!(error = %ErrorChain(source), "could not tell whether an order was placed");
                "The service could not tell whether the order was placed. Retry with the same Idempotency-Key, \
                 which never debits twice, or look for the order with GET /orders."
                    .to_owned()
            }
            ApiError::CancelOutcomeUnknown(source) => {
                tracing::error!(error = %ErrorChain(source), "could not tell whether an order was canceled");
                "The service could not tell whether the order was canceled. Send the cancel again: it is idempotent, \
                 and answers the order as it is."
                    .to_owned()
            }
            other => other.to_string(),
        };
        let problem = Problem { kind, title, status: status.as_u16(), detail };
        (status, serde_json::to_string(&problem).unwrap_or_default())
    }

    pub fn into_response(self) -> Response<Body> {
        let (status, body) = self.problem();
        let mut response = Response::new(Body::Text(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Busy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[derive(Serialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: ApiError) -> (u16, serde_json::Value) {
        let response = error.into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        let value = serde_json::from_slice(response.body().as_ref()).unwrap();
        (response.status().as_u16(), value)
    }

    #[test]
    fn problem_bodies_have_the_rfc_9457_members() {
        let (status, value) = body(ApiError::InsufficientFunds {
            balance: Usd::new(4.into()).unwrap(),
            cost: Usd::new(12.into()).unwrap(),
        });
        assert_eq!(status, 422);
        assert_eq!(
            value,
            serde_json::json!({
                "type": "insufficient-funds",
                "title": "Insufficient funds",
                "status": 422,
                "detail": "the balance is 4 USD but the order costs 12 USD"
            })
        );
    }

    /// One of each error, with fixed details.
    fn every_error() -> Vec<ApiError> {
        let usd = |n: u32| Usd::new(n.into()).unwrap();
        vec![
            ApiError::Unauthenticated,
            ApiError::PayloadTooLarge { limit: 16 * 1024 },
            ApiError::Malformed("the body must be a JSON object with \"coin\" and \"amount\"".to_owned()),
            ApiError::UriTooLong,
            ApiError::HeadersTooLarge,
            ApiError::RequestTimeout,
            ApiError::BadQuery("limit must be a whole number from 1 to 100".to_owned()),
            ApiError::InvalidIdempotencyKey(InvalidId {
                what: "Idempotency-Key",
                reason: "must be 1 to 128 visible ASCII characters",
            }),
            ApiError::UnknownCoin(UnknownCoin { symbol: "DOGE".to_owned(), known: "ABAN".to_owned() }),
            ApiError::InvalidAmount(InvalidAmount::NotPositive),
            ApiError::PoolOverflow(PoolOverflow),
            ApiError::InsufficientFunds { balance: usd(4), cost: usd(12) },
            ApiError::IdempotencyKeyReused,
            ApiError::NotFound,
            ApiError::MethodNotAllowed { allow: "GET, HEAD" },
            ApiError::Busy,
            ApiError::OutcomeUnknown(InfraError::new("transact write items", "timeout")),
            ApiError::Internal(InfraError::new("get item", "table orders-prod not found")),
        ]
    }

    #[test]
    fn the_openapi_document_lists_every_problem_type() {
        let openapi = include_str!("../../../openapi.yaml");
        let every_error = every_error();
        for error in every_error {
            let (_, kind, _) = error.code();
            assert!(openapi.contains(&format!("- {kind}\n")), "{kind} is missing from openapi.yaml");
        }
    }

    #[test]
    fn an_unknown_outcome_never_says_nothing_changed() {
        let (status, value) = body(ApiError::OutcomeUnknown(InfraError::new("transact write items", "timeout")));
        assert_eq!((status, value["type"].as_str()), (500, Some("outcome-unknown")));
        let detail = value["detail"].as_str().unwrap();
        assert!(detail.contains("same Idempotency-Key") && detail.contains("GET /orders"), "{detail}");
        assert!(!detail.contains("changed nothing"));
    }

    #[test]
    fn busy_says_when_to_retry() {
        let response = ApiError::Busy.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let (status, value) = body(ApiError::Internal(InfraError::new("put item", "table secret-table missing")));
        assert_eq!(status, 500);
        assert!(!value.to_string().contains("secret-table"));
    }

    /// Every problem body, pinned: a client may match on any of them.
    #[test]
    fn every_problem_body_is_as_pinned() {
        for (index, error) in every_error().into_iter().enumerate() {
            let (status, kind, _) = error.code();
            let response = error.into_response();
            let headers: Vec<String> = response
                .headers()
                .iter()
                .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
                .collect();
            let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
            insta::assert_json_snapshot!(
                format!("{index:02}-{}-{kind}", status.as_u16()),
                serde_json::json!({
                    "status": status.as_u16(),
                    "headers": headers,
                    "body": body,
                })
            );
        }
    }
}
