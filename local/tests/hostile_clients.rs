//! `orders-local` against clients that misbehave: malformed and oversized
//! requests, duplicated identity headers, clients that stall, and floods
//! of connections within a file-descriptor budget. Raw sockets, since an
//! HTTP client library would refuse to send most of these.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_orders-local");
const DEMO_SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../seed/demo.json");

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// `orders-local` with 1-second request timeouts (unless `extra` sets
    /// its own), optionally under a file-descriptor limit.
    fn start(extra: &[&str], open_files: Option<u32>) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--listen", &listen, "--seed", DEMO_SEED];
        if !extra.contains(&"--request-timeout") {
            args.extend_from_slice(&["--request-timeout", "1"]);
        }
        args.extend_from_slice(extra);
        let mut command = match open_files {
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={limit}:{limit}")).arg(BIN).args(&args);
                command
            }
            None => {
                let mut command = Command::new(BIN);
                command.args(&args);
                command
            }
        };
        let child = command.env("RUST_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "orders-local did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream
    }

    /// Sends `raw` and reads until the server closes or `wait` passes.
    fn exchange(&self, raw: &[u8], wait: Duration) -> Answer {
        let mut stream = self.connect();
        stream.write_all(raw).unwrap();
        stream.set_read_timeout(Some(wait)).unwrap();
        let started = Instant::now();
        let mut bytes = Vec::new();
        let closed = stream.read_to_end(&mut bytes).is_ok();
        Answer { text: String::from_utf8_lossy(&bytes).into_owned(), closed, after: started.elapsed() }
    }

    fn balance(&self, user: &str) -> String {
        let request = format!("GET /account HTTP/1.1\r\nHost: x\r\nX-User-Id: {user}\r\nConnection: close\r\n\r\n");
        let answer = self.exchange(request.as_bytes(), Duration::from_secs(30));
        assert_eq!(answer.status(), 200, "{}", answer.text);
        answer.body().to_owned()
    }

    /// SIGTERM, then everything it logged.
    fn stop(&mut self) -> String {
        let terminated = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(terminated.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "orders-local did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut logs = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut logs).unwrap();
        self.child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
        assert!(status.success(), "{logs}");
        logs
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test must not leave the process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Answer {
    text: String,
    /// The server closed the connection (rather than the wait running out).
    closed: bool,
    after: Duration,
}

impl Answer {
    fn status(&self) -> u16 {
        self.text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }

    /// The problem's `type`, checking that the answer is problem+json.
    fn problem(&self) -> String {
        assert!(self.text.to_ascii_lowercase().contains("content-type: application/problem+json"), "{}", self.text);
        let value: serde_json::Value = serde_json::from_str(self.body()).unwrap_or_else(|_| panic!("{}", self.text));
        assert_eq!(value["status"], self.status(), "{}", self.text);
        value["type"].as_str().unwrap().to_owned()
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn what_the_http_layer_refuses_is_answered_as_problem_json() {
    let mut server = Server::start(&[], None);
    let before = server.balance("alice");
    let cases: [(&str, Vec<u8>, u16, &str); 7] = [
        (
            "a byte HTTP forbids in the Idempotency-Key",
            b"POST /orders HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\nIdempotency-Key: a\x7fb\r\nContent-Length: 28\r\n\r\n{\"coin\":\"ABAN\",\"amount\":\"1\"}".to_vec(),
            400,
            "invalid-idempotency-key",
        ),
        (
            "conflicting Content-Lengths",
            b"POST /orders HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\nContent-Length: 28\r\nContent-Length: 27\r\n\r\n{\"coin\":\"ABAN\",\"amount\":\"1\"}".to_vec(),
            400,
            "malformed-request",
        ),
        (
            "a control byte in another header",
            b"GET /account HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\nX-Note: a\x01b\r\n\r\n".to_vec(),
            400,
            "malformed-request",
        ),
        ("a URI too long", [b"GET /".as_slice(), &[b'a'; 70_000], b" HTTP/1.1\r\n\r\n"].concat(), 414, "uri-too-long"),
        (
            "headers too large",
            [b"GET /account HTTP/1.1\r\nHost: x\r\nX-Pad: ".as_slice(), &[b'b'; 500_000], b"\r\n\r\n"].concat(),
            431,
            "headers-too-large",
        ),
        (
            "a declared body over 16 KiB, answered before it is sent",
            b"POST /orders HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\nContent-Length: 20000\r\n\r\n".to_vec(),
            413,
            "payload-too-large",
        ),
        (
            "the same without a caller: 401 comes first, and the body is never read",
            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n".to_vec(),
            401,
            "unauthorized",
        ),
    ];
    for (case, raw, status, kind) in cases {
        let answer = server.exchange(&raw, WAIT);
        assert_eq!((answer.status(), answer.problem().as_str()), (status, kind), "{case}: {}", answer.text);
    }

    // A chunked body is cut at the limit, not read to its end.
    let mut stream = server.connect();
    stream
        .write_all(b"POST /orders HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = [b"4000\r\n".as_slice(), &[b' '; 0x4000], b"\r\n"].concat();
    let mut sent = 0;
    while sent < 64 && stream.write_all(&chunk).is_ok() {
        sent += 1;
    }
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let answer = Answer { text: String::from_utf8_lossy(&bytes).into_owned(), closed: true, after: Duration::ZERO };
    assert_eq!((answer.status(), answer.problem().as_str()), (413, "payload-too-large"), "{}", answer.text);

    assert_eq!(server.balance("alice"), before, "a refused request changed the balance");
    server.stop();
}

#[test]
fn duplicated_identity_headers_and_inexact_paths_are_refused() {
    let mut server = Server::start(&[], None);
    let before = server.balance("alice");
    let body = r#"{"coin":"ABAN","amount":"1"}"#;
    let post = |path: &str, headers: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len())
    };
    let cases = [
        (post("/orders", "X-User-Id: alice\r\nX-User-Id: bob\r\n"), 400, "malformed-request"),
        (
            post("/orders", "X-User-Id: alice\r\nIdempotency-Key: k1\r\nIdempotency-Key: k2\r\n"),
            400,
            "invalid-idempotency-key",
        ),
        (post("/orders/", "X-User-Id: alice\r\n"), 404, "not-found"),
        ("GET /account/ HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\n\r\n".to_owned(), 404, "not-found"),
        ("GET /orders/ HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\n\r\n".to_owned(), 404, "not-found"),
    ];
    for (raw, status, kind) in cases {
        let raw = raw.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        let answer = server.exchange(raw.as_bytes(), WAIT);
        assert_eq!((answer.status(), answer.problem().as_str()), (status, kind), "{raw}: {}", answer.text);
    }
    let allowed =
        server.exchange(b"DELETE /account HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\nConnection: close\r\n\r\n", WAIT);
    assert_eq!(allowed.status(), 405);
    assert!(allowed.text.to_ascii_lowercase().contains("allow: get, head\r\n"), "{}", allowed.text);
    assert_eq!(server.balance("alice"), before, "a refused request changed the balance");
    server.stop();
}

#[test]
fn stalled_clients_are_cut_off_and_idle_connections_closed() {
    let mut server = Server::start(&[], None);
    // Half a request line: closed once the head's time is up.
    let head = server.exchange(b"GET /acc", WAIT);
    assert!(head.closed && head.after < WAIT, "a stalled head kept its connection for {:?}", head.after);
    // A body that never comes: 408, nothing placed.
    let body = server
        .exchange(b"POST /orders HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\nContent-Length: 28\r\n\r\n{\"coin\"", WAIT);
    assert_eq!((body.status(), body.problem().as_str()), (408, "request-timeout"), "{}", body.text);
    // A kept-alive connection that goes quiet after its answer.
    let idle = server.exchange(b"GET /account HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\n\r\n", WAIT);
    assert_eq!(idle.status(), 200, "{}", idle.text);
    assert!(idle.closed && idle.after < WAIT, "an idle connection stayed open {:?}", idle.after);
    assert_eq!(server.balance("alice"), r#"{"user_id":"alice","balance_usd":"100"}"#);
    server.stop();
}

/// Opens `count` connections that send half a request line and stall.
fn flood(server: &Server, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", server.port)).ok()?;
            stream.write_all(b"GET /acc").ok()?;
            Some(stream)
        })
        .collect()
}

#[test]
fn a_connection_flood_past_the_file_descriptor_limit_backs_off_and_recovers() {
    // Connections allowed far past the 64 descriptors the process has:
    // accept fails with EMFILE until the stalled clients are cut off.
    let mut server = Server::start(&["--max-connections", "10000"], Some(64));
    let stalled = flood(&server, 300);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.balance("alice"), r#"{"user_id":"alice","balance_usd":"100"}"#);
    drop(stalled);
    let logs = server.stop();
    let failures = logs.matches("accept failed").count();
    assert!(failures >= 1, "the flood never exhausted the descriptors:\n{logs}");
    assert!(failures <= 20, "accept errors logged {failures} times, not once per burst");
    assert!(logs.contains("accepting connections again"), "{logs}");
}

#[test]
fn a_connection_flood_within_the_connection_cap_never_runs_out_of_descriptors() {
    let mut server = Server::start(&["--max-connections", "32"], Some(64));
    let stalled = flood(&server, 300);
    // Answered while the flood is still open: stalled connections are cut
    // after their second, and the queue moves.
    assert_eq!(server.balance("alice"), r#"{"user_id":"alice","balance_usd":"100"}"#);
    drop(stalled);
    let logs = server.stop();
    assert!(!logs.contains("accept failed"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "logs to a pipe carry terminal colour codes:\n{logs}");
    assert!(logs.contains("signal=\"SIGTERM\"") || logs.contains("SIGTERM"), "{logs}");
}

/// A client holding `count` idle connections, more than the cap: half
/// never send a byte, half send one kept-alive request and go quiet. Each
/// one the server closes is opened again, until `stop`.
fn hold_idle_connections(port: u16, count: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let open = move |index: usize| {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        if index % 2 == 1 {
            stream.write_all(b"GET /account HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\n\r\n").ok()?;
        }
        stream.set_nonblocking(true).ok()?;
        Some(stream)
    };
    std::thread::spawn(move || {
        let mut held: Vec<Option<TcpStream>> = (0..count).map(open).collect();
        let mut reopened = 0;
        while !stop.load(Ordering::Relaxed) {
            for (index, slot) in held.iter_mut().enumerate() {
                let mut scratch = [0; 4096];
                let closed = match slot.as_mut().map(|stream| stream.read(&mut scratch)) {
                    Some(Err(error)) => error.kind() != std::io::ErrorKind::WouldBlock,
                    Some(Ok(0)) | None => true,
                    // An answer to the one request: read, and the connection kept idle.
                    Some(Ok(_)) => false,
                };
                if closed {
                    *slot = open(index);
                    reopened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        reopened
    })
}

/// Stops the idle client when the test ends, passed or not.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn idle_connections_past_the_cap_give_way_to_new_clients() {
    // Idle connections would be closed after 30 s: a request answered
    // within seconds did not wait for that.
    let mut server = Server::start(&["--max-connections", "16", "--request-timeout", "30"], None);
    // A request under way when the idle ones arrive (its head in, its body
    // to come): served, or, when no idle connection was there to ask, cut
    // to make room with a 408 that changed nothing (a request the handler
    // has is never cut: `slots::tests`).
    let order = r#"{"coin":"ABAN","amount":"1"}"#;
    let mut slow = server.connect();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nX-User-Id: bob\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        order.len()
    );
    slow.write_all(head.as_bytes()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(Arc::clone(&stop));
    let hostile = hold_idle_connections(server.port, 48, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(500));
    let patience = Duration::from_secs(5);
    for attempt in 1..=5 {
        let request = b"GET /account HTTP/1.1\r\nHost: x\r\nX-User-Id: bob\r\nConnection: close\r\n\r\n";
        let answer = server.exchange(request, patience);
        assert!(
            answer.status() == 200 && answer.after < patience,
            "request {attempt} behind the idle connections: {:?} after {:?}",
            answer.text,
            answer.after
        );
    }
    slow.write_all(order.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    let balance = server.balance("bob");
    match answer.get(..13) {
        Some("HTTP/1.1 201 ") => assert!(balance.contains(r#""balance_usd":"96""#), "{balance}"),
        Some("HTTP/1.1 408 ") | None => assert!(balance.contains(r#""balance_usd":"100""#), "{balance}"),
        _ => panic!("the request under way: {answer:?}"),
    }
    stop.store(true, Ordering::Relaxed);
    let reopened = hostile.join().unwrap();
    assert!(reopened > 0, "the server closed none of the idle connections");
    server.stop();
}

/// `count` connections that each send `first` and then `drop` every
/// `every`, never ending their request; each one the server closes is
/// opened again. Returns once all are open, with the thread that drips
/// (and answers how many were opened again).
fn drip(
    port: u16,
    count: usize,
    (first, drop): (&'static [u8], &'static [u8]),
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let open = move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.write_all(first).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(stream)
    };
    let mut held: Vec<Option<TcpStream>> = (0..count).map(|_| open()).collect();
    assert!(held.iter().all(Option::is_some), "could not open {count} connections");
    std::thread::spawn(move || {
        let mut reopened = 0;
        while !stop.load(Ordering::Relaxed) {
            for slot in held.iter_mut() {
                let mut scratch = [0; 4096];
                let closed = match slot.as_mut() {
                    None => true,
                    Some(stream) => match stream.read(&mut scratch) {
                        Ok(_) => true,
                        Err(error) if error.kind() != std::io::ErrorKind::WouldBlock => true,
                        Err(_) => stream.write_all(drop).is_err(),
                    },
                };
                if closed && !stop.load(Ordering::Relaxed) {
                    *slot = open();
                    reopened += 1;
                }
            }
            std::thread::sleep(every);
        }
        reopened
    })
}

/// A head sent a header line at a time.
const DRIPPING_HEAD: (&[u8], &[u8]) = (b"POST /orders HTTP/1.1\r\nHost: x\r\n", b"X-Drip: 1\r\n");
/// A whole head, then a body of 1,000 bytes sent a byte at a time.
const DRIPPING_BODY: (&[u8], &[u8]) =
    (b"POST /orders HTTP/1.1\r\nHost: x\r\nX-User-Id: carol\r\nContent-Length: 1000\r\n\r\n{", b" ");

/// 600 clients sending their requests a piece every 2 s hold every slot
/// (512); a fresh order does not wait behind them: at the cap, the head
/// (then the body) under way the longest gives way. The deadlines are set
/// long here, so that only the giving way can answer in time.
fn fresh_orders_are_answered_behind(dripping: (&'static [u8], &'static [u8])) {
    let mut server = Server::start(&["--head-timeout", "60", "--request-timeout", "60"], None);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(Arc::clone(&stop));
    let drippers = drip(server.port, 600, dripping, Duration::from_secs(2), Arc::clone(&stop));
    std::thread::sleep(Duration::from_secs(3));
    let order = r#"{"coin":"ABAN","amount":"1"}"#;
    let request = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nX-User-Id: bob\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{order}",
        order.len()
    );
    let patience = Duration::from_secs(10);
    for attempt in 1..=5 {
        let answer = server.exchange(request.as_bytes(), patience);
        assert!(
            answer.status() == 201 && answer.after < patience,
            "order {attempt} behind the dripping requests: {:?} after {:?}",
            answer.text,
            answer.after
        );
    }
    stop.store(true, Ordering::Relaxed);
    let reopened = drippers.join().unwrap();
    assert!(reopened > 0, "the server closed none of the dripping requests");
    assert_eq!(server.balance("carol"), r#"{"user_id":"carol","balance_usd":"100"}"#);
    server.stop();
}

#[test]
fn heads_sent_a_line_at_a_time_give_way_to_a_fresh_order() {
    fresh_orders_are_answered_behind(DRIPPING_HEAD);
}

#[test]
fn bodies_sent_a_byte_at_a_time_give_way_to_a_fresh_order() {
    fresh_orders_are_answered_behind(DRIPPING_BODY);
}

/// The head's time is a deadline, not an idle timer: a head that keeps
/// trickling in is cut when its time is up.
#[test]
fn a_head_that_trickles_is_cut_at_its_deadline() {
    let mut server = Server::start(&["--head-timeout", "1", "--request-timeout", "30"], None);
    let mut stream = server.connect();
    stream.write_all(b"GET /account HTTP/1.1\r\nHost: x\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let started = Instant::now();
    let mut scratch = [0; 4096];
    let cut = loop {
        match stream.read(&mut scratch) {
            Ok(_) => break true,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut => {
                break true;
            }
            Err(_) if started.elapsed() > WAIT => break false,
            Err(_) => {
                if stream.write_all(b"X-Drip: 1\r\n").is_err() {
                    break true;
                }
            }
        }
    };
    assert!(cut, "a trickling head kept its connection for {:?}", started.elapsed());
    server.stop();
}

#[test]
fn routes_are_the_raw_path_whatever_the_forwarded_headers_say() {
    let mut server = Server::start(&[], None);
    let before = server.balance("bob");
    let order = r#"{"coin":"ABAN","amount":"1"}"#;
    let post = |path: &str, extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nX-User-Id: bob\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{order}",
            order.len()
        )
    };
    let cases = [
        (post("/nope/../orders", ""), 404, "not-found"),
        (post("/orders/%2e%2e/orders", ""), 404, "not-found"),
        (post("/account", "X-Forwarded-Proto: http://h/orders#\r\n"), 405, "method-not-allowed"),
        (post("/nothing-here", "X-Forwarded-Proto: http://h/orders#\r\n"), 404, "not-found"),
        (
            "GET /x/%2e%2e/account HTTP/1.1\r\nHost: x\r\nX-User-Id: bob\r\nConnection: close\r\n\r\n".to_owned(),
            404,
            "not-found",
        ),
    ];
    for (raw, status, kind) in cases {
        let answer = server.exchange(raw.as_bytes(), WAIT);
        assert_eq!((answer.status(), answer.problem().as_str()), (status, kind), "{raw}: {}", answer.text);
    }
    // Headers lambda_http would have panicked on: still answered.
    for header in ["X-Forwarded-Proto: 1", "X-Forwarded-Proto: a b", "Host: x:65536", "Host: [zz]"] {
        let raw =
            format!("GET /account HTTP/1.1\r\nHost: x\r\nX-User-Id: bob\r\n{header}\r\nConnection: close\r\n\r\n");
        let raw = raw.replacen("Host: x\r\n", if header.starts_with("Host") { "" } else { "Host: x\r\n" }, 1);
        let answer = server.exchange(raw.as_bytes(), WAIT);
        assert_eq!(answer.status(), 200, "{header}: {}", answer.text);
    }
    assert_eq!(server.balance("bob"), before, "a request that is not POST /orders moved money");
    server.stop();
}

#[test]
fn a_client_that_stops_reading_loses_its_connection_not_the_service() {
    let mut server = Server::start(&["--max-connections", "4"], None);
    // Four connections take every slot, ask for far more than the socket
    // buffers hold, and never read.
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3000);
    let hogs: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = server.connect();
            stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = stream.write_all(&request);
            stream
        })
        .collect();
    assert_eq!(server.balance("alice"), r#"{"user_id":"alice","balance_usd":"100"}"#);
    drop(hogs);
    server.stop();
}
