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
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use lambda_http::request::LambdaRequest;
use shared::service::OrderService;

/// API Gateway's own payload limit; the handler enforces the API's smaller one.
const GATEWAY_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// The header `orders-local` trusts in place of a verified JWT.
pub const USER_HEADER: &str = "x-user-id";

pub async fn serve(
    service: Arc<OrderService>,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, GATEWAY_BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"));
        }
    };
    let event = api_gateway_event(&parts, body, remote);
    let lambda_request: lambda_http::Request = LambdaRequest::ApiGatewayV2(event).into();
    let response = match place_order::handle(&service, lambda_request).await {
        Ok(response) => response,
        Err(error) => {
            // What API Gateway does with a failed invocation.
            tracing::error!(error = %error, "the handler failed");
            return Ok(gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"));
        }
    };
    let (parts, body) = response.into_parts();
    let body = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn api_gateway_event(parts: &http::request::Parts, body: Bytes, remote: SocketAddr) -> ApiGatewayV2httpRequest {
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        // lambda_http builds the request URI from Host; keep only a valid one.
        if name == header::HOST && value.to_str().ok().and_then(|h| h.parse::<http::uri::Authority>().ok()).is_none() {
            continue;
        }
        headers.append(name, value.clone());
    }

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

/// An error API Gateway produces itself, in its own format.
fn gateway_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
