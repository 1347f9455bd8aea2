//! The place-order function: the Order API of docs/api.md as one
//! `lambda_http` handler. `orders-local` runs this same handler.

pub mod problem;
pub mod wire;

use http::{HeaderValue, Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use shared::domain::{IdempotencyKey, OrderId, UserId};
use shared::ports::{CancelError, PlaceError};
use shared::service::{OrderService, PlaceOrderError};

use crate::problem::ApiError;
use crate::wire::{AccountResponse, ListQuery, OrderListResponse, OrderResponse, PlaceOrderRequest};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Handles one API Gateway (HTTP API, payload 2.0) request. Expected
/// failures are problem responses, never `Err`: an `Err` would reach the
/// client as API Gateway's bare 500.
pub async fn handle(service: &OrderService, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    Ok(route(service, &request).await.unwrap_or_else(ApiError::into_response))
}

async fn route(service: &OrderService, request: &Request) -> Result<Response<Body>, ApiError> {
    // Paths are exact, as API Gateway routes them: `/orders/` is not
    // `/orders`, and `/x/../orders` is neither. The raw path of the event,
    // not the URI lambda_http builds from it: that one is normalised, and
    // built with the client's `X-Forwarded-Proto` and `Host`.
    let path = match request.raw_http_path() {
        "" => request.uri().path(),
        raw => raw,
    };
    let method = request.method();
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "orders"] => match *method {
            Method::POST => place_order(service, request).await,
            Method::GET | Method::HEAD => list_orders(service, request).await,
            _ => Err(ApiError::MethodNotAllowed { allow: "GET, HEAD, POST" }),
        },
        ["", "orders", id] if !id.is_empty() => match *method {
            Method::GET | Method::HEAD => get_order(service, request, id).await,
            _ => Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" }),
        },
        ["", "orders", id, "cancel"] if !id.is_empty() => match *method {
            Method::POST => cancel_order(service, request, id).await,
            _ => Err(ApiError::MethodNotAllowed { allow: "POST" }),
        },
        ["", "account"] => match *method {
            Method::GET | Method::HEAD => get_account(service, request).await,
            _ => Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" }),
        },
        _ => Err(ApiError::NotFound),
    }
}

/// The caller: the `sub` claim that API Gateway's JWT authorizer verified.
/// Never a client header.
fn caller(request: &Request) -> Result<UserId, ApiError> {
    let RequestContext::ApiGatewayV2(context) = request.request_context() else {
        return Err(ApiError::Unauthenticated);
    };
    let sub = context
        .authorizer
        .as_ref()
        .and_then(|authorizer| authorizer.jwt.as_ref())
        .and_then(|jwt| jwt.claims.get("sub"))
        .ok_or(ApiError::Unauthenticated)?;
    UserId::parse(sub).map_err(|_| ApiError::Unauthenticated)
}

fn idempotency_key(request: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = request.headers().get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidIdempotencyKey(shared::domain::InvalidId {
            what: "Idempotency-Key",
            reason: "must be sent once; the request carries several",
        }));
    }
    let text = value.to_str().map_err(|_| {
        ApiError::InvalidIdempotencyKey(shared::domain::InvalidId {
            what: "Idempotency-Key",
            reason: "must be 1 to 128 visible ASCII characters",
        })
    })?;
    IdempotencyKey::parse(text).map(Some).map_err(ApiError::InvalidIdempotencyKey)
}

async fn place_order(service: &OrderService, request: &Request) -> Result<Response<Body>, ApiError> {
    // Precedence of docs/api.md: 401, 413, 400, 422.
    let user = caller(request)?;
    let body = request.body().as_ref();
    if body.len() > BODY_LIMIT {
        return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
    }
    let key = idempotency_key(request)?;
    let order = PlaceOrderRequest::parse(body)?;
    let placed = service.place(user, &order.coin, order.amount, key).await.map_err(|e| match e {
        PlaceOrderError::UnknownCoin(e) => ApiError::UnknownCoin(e),
        PlaceOrderError::InvalidAmount(e) => ApiError::InvalidAmount(e),
        PlaceOrderError::BelowMinimum(e) => ApiError::BelowMinimum(e),
        PlaceOrderError::Place(PlaceError::InsufficientFunds { balance, cost }) => {
            ApiError::InsufficientFunds { balance, cost }
        }
        PlaceOrderError::Place(PlaceError::IdempotencyKeyReused) => ApiError::IdempotencyKeyReused,
        PlaceOrderError::Place(PlaceError::PoolOverflow(e)) => ApiError::PoolOverflow(e),
        PlaceOrderError::Place(PlaceError::Busy) => ApiError::Busy,
        PlaceOrderError::Place(PlaceError::OutcomeUnknown(e)) => ApiError::OutcomeUnknown(e),
        PlaceOrderError::Place(PlaceError::Infra(e)) => ApiError::Internal(e),
    })?;
    let status = if placed.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let mut response = json(status, &OrderResponse::from(&placed.order));
    let location = format!("/orders/{}", placed.order.order.id);
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if placed.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn get_order(service: &OrderService, request: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let user = caller(request)?;
    // An id that cannot exist is simply not found.
    let id = OrderId::parse(id).map_err(|_| ApiError::NotFound)?;
    let view = service.order(&user, id).await.map_err(ApiError::Internal)?.ok_or(ApiError::NotFound)?;
    Ok(json(StatusCode::OK, &OrderResponse::from(&view)))
}

/// `POST /orders/{id}/cancel`: a pending order leaves its pool, its cost
/// back in the balance; a canceled one is answered as it is.
async fn cancel_order(service: &OrderService, request: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let user = caller(request)?;
    let body = request.body().as_ref();
    if body.len() > BODY_LIMIT {
        return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
    }
    wire::CancelRequest::parse(body)?;
    let id = OrderId::parse(id).map_err(|_| ApiError::NotFound)?;
    let canceled = service.cancel(&user, id).await.map_err(|e| match e {
        CancelError::NotFound => ApiError::NotFound,
        CancelError::NotPending(view) => {
            ApiError::OrderNotPending { id: view.order.id.to_string(), status: view.status.as_str() }
        }
        CancelError::Busy => ApiError::Busy,
        CancelError::Infra(e) => ApiError::CancelOutcomeUnknown(e),
    })?;
    Ok(json(StatusCode::OK, &OrderResponse::from(&canceled.order)))
}

/// `GET /orders?limit=&cursor=&status=`: the caller's orders, newest first.
async fn list_orders(service: &OrderService, request: &Request) -> Result<Response<Body>, ApiError> {
    let user = caller(request)?;
    let page = ListQuery::parse(&request.query_string_parameters())?;
    let list = service.orders(&user, page).await.map_err(ApiError::Internal)?;
    Ok(json(StatusCode::OK, &OrderListResponse::from(&list)))
}

async fn get_account(service: &OrderService, request: &Request) -> Result<Response<Body>, ApiError> {
    let user = caller(request)?;
    let balance = service.balance(&user).await.map_err(ApiError::Internal)?;
    Ok(json(StatusCode::OK, &AccountResponse::new(&user, balance)))
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(text) => {
            let mut response = Response::new(Body::Text(text));
            *response.status_mut() = status;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => ApiError::Internal(shared::ports::InfraError::new("serialize response", error)).into_response(),
    }
}
