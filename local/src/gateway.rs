//! What API Gateway does in front of the place-order Lambda: turns an HTTP
//! request into the HTTP API payload 2.0 event (with the JWT authorizer's
//! claims), hands `lambda_http`'s request to the real handler, and sends its
//! response back.

use std::net::SocketAddr;
use std::sync::Arc;

use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequest,
    ApiGatewayV2httpRequestContext,
};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use lambda_http::request::LambdaRequest;
use place_order::BODY_LIMIT;
use place_order::problem::ApiError;
use shared::domain::UserId;
use shared::service::OrderService;

use crate::openapi;
use crate::server::ServerLimits;
use crate::slots::Activity;

/// The header `orders-local` trusts in place of a verified JWT.
pub const USER_HEADER: &str = "x-user-id";

pub async fn serve(
    service: Arc<OrderService>,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
    limits: ServerLimits,
    activity: Arc<Activity>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let mut response = answer(service, request, remote, limits, &activity).await;
    // A kept-alive connection is closed after `head_timeout` idle; a
    // client that reads this closes it first, rather than sending a
    // request into a connection as it closes.
    let idle = limits.head_timeout.as_secs().saturating_sub(1);
    if idle > 0
        && let Ok(value) = HeaderValue::from_str(&format!("timeout={idle}"))
    {
        response.headers_mut().insert("keep-alive", value);
    }
    Ok(response)
}

async fn answer(
    service: Arc<OrderService>,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
    limits: ServerLimits,
    activity: &Activity,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if let Some(response) = served_here(&parts) {
        return response;
    }
    // The caller's id sent more than once: which one would be the caller?
    if parts.headers.get_all(USER_HEADER).iter().nth(1).is_some() {
        return problem(ApiError::Malformed("X-User-Id must be sent once; the request carries several".to_owned()));
    }
    // Without a caller the answer is 401 (or the route's 404 or 405),
    // whatever the body: as API Gateway's authorizer, never read it.
    let body = if identified(&parts) {
        match read_body(&parts, body, limits, activity).await {
            Ok(body) => body,
            Err(refused) => return problem(refused),
        }
    } else {
        Bytes::new()
    };
    activity.request_began();
    handle(&service, &parts, body, remote).await
}

/// The body, read within the API's limits: a declared body over the limit
/// is refused before it is sent, a larger one is never held.
async fn read_body(
    parts: &http::request::Parts,
    body: Incoming,
    limits: ServerLimits,
    activity: &Activity,
) -> Result<Bytes, ApiError> {
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > BODY_LIMIT as u64) {
        return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
    }
    match tokio::time::timeout(limits.body_timeout, Limited::new(body, BODY_LIMIT).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT }),
        // Cut to make room for others at the connection cap: too slow.
        Ok(Err(_)) if activity.was_asked() => Err(ApiError::RequestTimeout),
        Ok(Err(error)) => {
            tracing::debug!(%error, "the request body could not be read");
            Err(ApiError::Malformed("the request body could not be read".to_owned()))
        }
        Err(_) => Err(ApiError::RequestTimeout),
    }
}

/// The handler's answer to the request, as API Gateway invokes it.
async fn handle(
    service: &OrderService,
    parts: &http::request::Parts,
    body: Bytes,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    let event = api_gateway_event(parts, body, remote);
    // lambda_http panics on an event it cannot make a URL of; the headers
    // that could cause it are checked above, and this keeps any other such
    // request an answer rather than a dropped connection.
    let converted = std::panic::catch_unwind(|| lambda_http::Request::from(LambdaRequest::ApiGatewayV2(event)));
    let Ok(lambda_request) = converted else {
        return problem(ApiError::Malformed("the request cannot be made into an API Gateway event".to_owned()));
    };
    let response = match place_order::handle(service, lambda_request).await {
        Ok(response) => response,
        Err(error) => {
            // What API Gateway does with a failed invocation.
            tracing::error!(error = %shared::telemetry::ErrorChain(&*error), "the handler failed");
            let error = shared::ports::InfraError::new("invoke the handler", error);
            return problem(ApiError::Internal(error));
        }
    };
    let (parts, body) = response.into_parts();
    let body = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    Response::from_parts(parts, Full::new(body))
}

/// The request names a caller the handler will accept.
fn identified(parts: &http::request::Parts) -> bool {
    parts.headers.get(USER_HEADER).and_then(|v| v.to_str().ok()).is_some_and(|user| UserId::parse(user).is_ok())
}

/// What `orders-local` serves itself: the API description and its metrics.
fn served_here(parts: &http::request::Parts) -> Option<Response<Full<Bytes>>> {
    let (body, content_type) = match parts.uri.path() {
        "/openapi.json" => (openapi::json(), "application/json"),
        "/metrics" => (Bytes::from(crate::metrics::render()?), "text/plain; version=0.0.4; charset=utf-8"),
        _ => return None,
    };
    if parts.method != http::Method::GET && parts.method != http::Method::HEAD {
        return Some(problem(ApiError::MethodNotAllowed { allow: "GET, HEAD" }));
    }
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Some(response)
}

fn api_gateway_event(parts: &http::request::Parts, body: Bytes, remote: SocketAddr) -> ApiGatewayV2httpRequest {
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        // lambda_http builds the request URI from Host and X-Forwarded-Proto
        // (and panics on a URL it cannot parse). API Gateway sets the
        // latter itself; keep only a Host that makes a valid URL.
        if name == X_FORWARDED_PROTO || (name == header::HOST && !valid_host(value)) {
            continue;
        }
        headers.append(name, value.clone());
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));

    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".to_owned());
    event.route_key = Some("$default".to_owned());
    event.raw_path = Some(parts.uri.path().to_owned());
    event.raw_query_string = Some(parts.uri.query().unwrap_or_default().to_owned());
    event.headers = headers;
    match String::from_utf8(body.to_vec()) {
        Ok(text) => event.body = (!text.is_empty()).then_some(text),
        Err(_) => {
            event.body = Some(base64::engine::general_purpose::STANDARD.encode(&body));
            event.is_base64_encoded = true;
        }
    }

    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some("$default".to_owned());
    context.stage = Some("$default".to_owned());
    context.request_id = Some(ulid::Ulid::new().to_string());
    context.time_epoch = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    context.http.method = parts.method.clone();
    context.http.path = Some(parts.uri.path().to_owned());
    context.http.protocol = Some(format!("{:?}", parts.version));
    context.http.source_ip = Some(remote.ip().to_string());
    context.http.user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // The JWT authorizer, emulated: the caller's id becomes the `sub` claim.
    if let Some(user) = parts.headers.get(USER_HEADER).and_then(|v| v.to_str().ok()) {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims.insert("sub".to_owned(), user.to_owned());
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        context.authorizer = Some(authorizer);
    }
    event.request_context = context;
    event
}

const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

fn valid_host(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|host| {
        host.parse::<http::uri::Authority>().is_ok() && url::Url::parse(&format!("http://{host}/")).is_ok()
    })
}

/// An error the gateway answers itself, in the API's problem format.
fn problem(error: ApiError) -> Response<Full<Bytes>> {
    let (parts, body) = error.into_response().into_parts();
    Response::from_parts(parts, Full::new(Bytes::copy_from_slice(body.as_ref())))
}
