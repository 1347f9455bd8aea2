//! A proxy between the AWS SDK and an emulator that loses replies for real:
//! it forwards a request (a transaction, or an update its rule picks),
//! waits for the emulator's whole answer (the write is done), then closes
//! the connection without answering. The SDK sees a
//! broken connection after sending, as it would on a flaky network, and
//! retries; when the retries are lost too, the store must find out itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Which replies are lost.
#[derive(Debug, Clone, Copy)]
pub struct LossRule {
    /// Only transactions whose client request token has no `-` (a store's
    /// refunds and deposits; placements use `{order id}-{attempt}`).
    pub only_undashed_tokens: bool,
    /// Of every `every`-th distinct transaction (by client request token)…
    pub every: usize,
    /// …lose the replies of the first `sends` sends (SDK retries and the
    /// store's own resends included); `usize::MAX`: all of them.
    pub sends: usize,
    /// Lose the replies of reads too, once a transaction's reply was lost:
    /// then nothing can tell the caller what happened.
    pub reads_after_a_loss: bool,
    /// Also lose the replies of the first `sends` sends of each distinct
    /// `UpdateItem` whose request contains this text (settlement's claim
    /// and fenced writes carry `SUBMITTING`).
    pub updates_containing: Option<&'static str>,
}

impl LossRule {
    /// Nothing is lost.
    pub const NONE: LossRule = LossRule {
        only_undashed_tokens: false,
        every: 0,
        sends: 0,
        reads_after_a_loss: false,
        updates_containing: None,
    };
}

#[derive(Default)]
struct State {
    rule: Option<LossRule>,
    /// Per client request token: whether its replies are lost, and sends so far.
    tokens: HashMap<String, (bool, usize)>,
    /// Sends so far of each distinct update chosen by `updates_containing`.
    updates: HashMap<Bytes, usize>,
    distinct: usize,
    lost: usize,
    /// Replies lost since a transaction's was.
    losing_reads: bool,
}

pub struct LossyProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl LossyProxy {
    pub async fn start(upstream: String, rule: LossRule) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(State { rule: Some(rule), ..State::default() }));
        let client = reqwest::Client::new();
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (state, client, upstream) = (Arc::clone(&shared), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        forward(Arc::clone(&state), client.clone(), upstream.clone(), request)
                    });
                    // A lost reply ends the connection with an error: expected.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        LossyProxy { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Loses replies by another rule from now on.
    pub fn set_rule(&self, rule: LossRule) {
        let mut state = self.state.lock().expect("proxy state");
        state.rule = Some(rule);
        state.losing_reads = false;
    }

    /// Replies lost so far.
    pub fn lost(&self) -> usize {
        self.state.lock().expect("proxy state").lost
    }
}

#[derive(Debug, thiserror::Error)]
#[error("reply lost on purpose")]
struct Lost;

async fn forward(
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let target = parts.headers.get("x-amz-target").and_then(|t| t.to_str().ok()).unwrap_or_default().to_owned();
    let mut upstream_request = client.request(parts.method.clone(), format!("{upstream}{}", parts.uri));
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            upstream_request = upstream_request.header(name, value);
        }
    }
    let answer = upstream_request.body(body.clone()).send().await?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let answer_body = answer.bytes().await?;

    let lose = {
        let mut state = state.lock().map_err(|_| "proxy state poisoned")?;
        let rule = state.rule.unwrap_or(LossRule::NONE);
        let token = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["ClientRequestToken"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let lose = if target.ends_with(".TransactWriteItems") && (!rule.only_undashed_tokens || !token.contains('-')) {
            if !state.tokens.contains_key(&token) {
                state.distinct += 1;
                let chosen = rule.every > 0 && state.distinct.is_multiple_of(rule.every);
                state.tokens.insert(token.clone(), (chosen, 0));
            }
            let (chosen, sends) = state.tokens.entry(token).or_insert((false, 0));
            *sends += 1;
            let lose = *chosen && *sends <= rule.sends;
            if lose && rule.reads_after_a_loss {
                state.losing_reads = true;
            }
            lose
        } else if target.ends_with(".UpdateItem")
            && rule.updates_containing.is_some_and(|text| String::from_utf8_lossy(&body).contains(text))
        {
            let sends = state.updates.entry(body.clone()).or_insert(0);
            *sends += 1;
            *sends <= rule.sends
        } else {
            state.losing_reads
        };
        state.lost += usize::from(lose);
        lose
    };
    if lose {
        return Err(Box::new(Lost));
    }
    let mut response = hyper::Response::new(Full::new(answer_body));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}
