//! The client's connection as hyper sees it, with three things hyper does
//! not do.
//!
//! It tells its slot (`crate::slots`) when a request's bytes arrive, and
//! ends itself, as if the client had closed it, when its slot is wanted
//! while it is idle or still receiving a request.
//!
//! A write timeout: a client that stops reading (its receive window full)
//! would hold its connection, and a slot of the cap, for ever; a write
//! that makes no progress for the request timeout ends the connection.
//!
//! hyper answers a request it cannot parse (invalid header bytes,
//! conflicting `Content-Length`s, a URI or head too large) itself, before
//! any service sees it, with an empty `400`/`414`/`431` and a closed
//! connection. hyper has no hook for that answer, so this wrapper around
//! the connection recognises it as hyper writes it and sends a
//! problem+json body in its place, diagnosed from the bytes the client
//! sent: a client gets the same kind of error body from every layer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use place_order::problem::ApiError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::slots::Activity;

/// The request bytes kept for a diagnosis; a head longer than this is
/// still answered, with a less specific detail.
const KEPT_FOR_DIAGNOSIS: usize = 16 * 1024;

/// A connection with a write timeout, whose canned parse-error answers
/// become problem+json.
pub struct ClientConnection<T> {
    inner: T,
    /// What the client sent since the last response began.
    received: Vec<u8>,
    /// The replacement answer, and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
    write_timeout: Duration,
    /// Since when a write has made no progress.
    stalled: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
}

impl<T> ClientConnection<T> {
    pub fn new(inner: T, write_timeout: Duration, activity: Arc<Activity>) -> ClientConnection<T> {
        ClientConnection { inner, received: Vec::new(), replacing: None, write_timeout, stalled: None, activity }
    }

    /// A write is pending: fine, until it has been for the write timeout.
    fn poll_stalled<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let timeout = self.write_timeout;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// `result` of a write to the client, with the write timeout applied.
    fn progress<R>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match result {
            Poll::Pending => self.poll_stalled(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> ClientConnection<T> {
    /// Writes what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacing {
            if *written == bytes.len() {
                self.replacing = None;
                break;
            }
            let result = Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]);
            let n = ready!(self.progress(cx, result))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if let Some((_, written)) = &mut self.replacing {
                *written += n;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientConnection<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // Nothing from the client: if idle or in a head and asked for
            // its slot, the connection ends as if the client had closed it
            // (between requests, hyper closes quietly on that). Only once
            // the read found nothing, so that a request already sent is
            // served.
            Poll::Pending if this.activity.gives_way(cx) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result?,
        }
        if buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        let room = KEPT_FOR_DIAGNOSIS.saturating_sub(this.received.len());
        let new = &buf.filled()[before..];
        this.received.extend_from_slice(&new[..new.len().min(room)]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientConnection<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if let Some(status) = canned_error_status(buf) {
            let answer = answer(&diagnose(status, &this.received));
            this.received.clear();
            this.replacing = Some((answer, 0));
            // The canned bytes count as written: hyper moves on to flush
            // and close, which write the replacement first.
            ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        this.received.clear();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        let flushed = this.progress(cx, result);
        if let Poll::Ready(Ok(())) = flushed {
            this.activity.flushed();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The status of hyper's own parse-error answer, if `written` is one: a
/// whole head of `400`, `414` or `431` with `connection: close` and no
/// body. The service's responses always carry a body, so never match.
fn canned_error_status(written: &[u8]) -> Option<u16> {
    let status = match written.get(..13)? {
        b"HTTP/1.1 400 " => 400,
        b"HTTP/1.1 414 " => 414,
        b"HTTP/1.1 431 " => 431,
        _ => return None,
    };
    let head = std::str::from_utf8(written).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n").skip(1);
    let closes = lines.clone().any(|l| l.eq_ignore_ascii_case("connection: close"));
    let empty = lines.any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    (closes && empty).then_some(status)
}

/// What was wrong with the request, as the API's error for it.
fn diagnose(status: u16, received: &[u8]) -> ApiError {
    match status {
        414 => return ApiError::UriTooLong,
        431 => return ApiError::HeadersTooLarge,
        _ => {}
    }
    let head = received.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let mut lengths = Vec::new();
    for (index, line) in head.enumerate() {
        if line.is_empty() {
            break;
        }
        if index == 0 {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return ApiError::Malformed(format!("header line {index} has no ':'"));
        };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase();
        let value = &line[colon + 1..];
        if let Some(&bad) = value.iter().find(|&&b| !(b == b'\t' || b >= 0x20) || b == 0x7f) {
            let reason = format!("header {name} carries the byte 0x{bad:02x}, which HTTP does not allow");
            return match name.as_str() {
                "idempotency-key" => ApiError::InvalidIdempotencyKey(shared::domain::InvalidId {
                    what: "Idempotency-Key",
                    reason: "must be 1 to 128 visible ASCII characters",
                }),
                _ => ApiError::Malformed(reason),
            };
        }
        if name == "content-length" {
            lengths.push(String::from_utf8_lossy(value).trim().to_owned());
        }
    }
    lengths.dedup();
    if lengths.len() > 1 {
        return ApiError::Malformed(format!("conflicting Content-Length headers: {}", lengths.join(", ")));
    }
    ApiError::Malformed("the request is not valid HTTP/1.1".to_owned())
}

/// A whole HTTP/1.1 response carrying the problem, closing the connection
/// as hyper would have.
fn answer(error: &ApiError) -> Vec<u8> {
    let (status, body) = error.problem();
    let reason = status.canonical_reason().unwrap_or("Error");
    format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_hypers_bodiless_closing_errors_are_replaced() {
        let canned = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(canned_error_status(canned), Some(400));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 90\r\n\r\n";
        assert_eq!(canned_error_status(ours), None);
        let fine = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(canned_error_status(fine), None);
    }

    #[test]
    fn the_diagnosis_names_the_faulty_header() {
        let key = diagnose(400, b"GET /account HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\x7fb\r\n\r\n");
        assert!(matches!(key, ApiError::InvalidIdempotencyKey(_)));
        let lengths = diagnose(400, b"POST /orders HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello");
        assert!(lengths.to_string().contains("conflicting Content-Length headers: 5, 6"), "{lengths}");
        let other = diagnose(400, b"GET /account HTTP/1.1\r\nX-Thing: a\x01b\r\n\r\n");
        assert!(other.to_string().contains("x-thing carries the byte 0x01"), "{other}");
        assert!(matches!(diagnose(431, b""), ApiError::HeadersTooLarge));
    }
}
