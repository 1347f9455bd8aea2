//! The HTTP server in front of the gateway: what API Gateway's managed
//! front door does for the deployed stack, here bounded so that slow,
//! stalled or flooding clients cannot take the process down. hyper reads
//! the whole head within `head_timeout` from when it starts waiting for it
//! (a deadline, not an idle timer: a head sent a byte at a time is cut all
//! the same; on a kept-alive connection, the wait for the next request
//! counts), the gateway reads the body within `body_timeout`, at most
//! `max_connections` are open (more wait in the listen backlog, or take
//! the slot of an idle connection, else of one still sending its head,
//! else its body: `crate::slots`), and accept errors back off instead of
//! spinning.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use shared::service::OrderService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::connection::ClientConnection;
use crate::gateway;
use crate::slots::Slots;

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once; more wait to be accepted, or take the
    /// place of the longest-idle one.
    pub max_connections: usize,
    /// To receive a request's head, whole, and the idle time allowed
    /// between requests on a kept-alive connection. Short: a client sends
    /// its head at once, and a head that trickles holds a slot.
    pub head_timeout: Duration,
    /// To receive a request's body once its head is in; also how long a
    /// write to a client that stopped reading may stall.
    pub body_timeout: Duration,
    /// How long stopping waits for open requests before closing them.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 512,
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// The largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 128 * 1024;

/// Longest back-off after repeated accept errors (out of file descriptors, say).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

pub async fn serve(
    listener: TcpListener,
    service: Arc<OrderService>,
    limits: ServerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Slots::new(limits.max_connections);
    let mut failures = AcceptFailures::default();
    let mut http = http1::Builder::new();
    // A head over 128 KiB is 431 however it arrives (without a limit of
    // its own, hyper decides by how full its read buffer happens to be).
    http.timer(TokioTimer::new()).header_read_timeout(limits.head_timeout).max_header_size(MAX_HEAD);
    loop {
        // Accepted before it has a slot, so that an idle connection gives
        // way only to one that is waiting; the ones after it still wait in
        // the listen backlog, not on a file descriptor each.
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    failures.recovered();
                    accepted
                }
                Err(error) => {
                    let pause = failures.failed(&error);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            },
            _ = shutdown.changed() => break,
        };
        let slot = tokio::select! {
            slot = slots.claim() => slot,
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        let activity = Arc::clone(&slot.activity);
        let connection = http.serve_connection(
            TokioIo::new(ClientConnection::new(stream, limits.body_timeout, Arc::clone(&slot.activity))),
            service_fn(move |request| {
                // Its head is in (its bytes may have been read with the last
                // request's); the gateway reads the body, then calls the
                // handler, from when the connection stays until answered.
                activity.body_began();
                let activity = Arc::clone(&activity);
                let answer = gateway::serve(Arc::clone(&service), request, remote, limits, Arc::clone(&activity));
                async move {
                    let response = answer.await;
                    activity.answered();
                    response
                }
            }),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(after = ?limits.drain_timeout, "connections still open; closing them");
    }
}

/// A burst of accept errors: logged once when it starts and once when it
/// ends, with a back-off doubling from 10 ms in between.
#[derive(Default)]
struct AcceptFailures {
    in_a_row: u32,
}

impl AcceptFailures {
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        if self.in_a_row == 0 {
            tracing::warn!(%error, "accept failed; backing off until it succeeds");
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        let pause = Duration::from_millis(10).saturating_mul(1 << self.in_a_row.min(7));
        pause.min(MAX_ACCEPT_BACKOFF)
    }

    fn recovered(&mut self) {
        if self.in_a_row > 0 {
            tracing::info!(failures = self.in_a_row, "accepting connections again");
            self.in_a_row = 0;
        }
    }
}
