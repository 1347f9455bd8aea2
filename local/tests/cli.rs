//! The `orders-local` binary as a developer runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_orders-local");
const DEMO_SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../seed/demo.json");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN).args(args).env("RUST_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn output(mut child: Child) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "orders-local did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    child.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut text).unwrap();
    (status.success(), text)
}

/// `orders-local` on a free port with the demo accounts, answering.
struct Demo {
    child: Child,
    client: reqwest::Client,
    base: String,
    /// Alice's account, its first answer.
    account: String,
}

async fn demo() -> Demo {
    let port = free_port();
    let child = spawn(&["--listen", &format!("127.0.0.1:{port}"), "--seed", DEMO_SEED]);
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let account = wait_until_serving(&client, &base).await;
    Demo { child, client, base, account }
}

/// Ctrl-C, as a developer stops it: it must exit cleanly; what it printed.
fn interrupt(child: Child) -> String {
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let (success, logs) = output(child);
    assert!(success, "{logs}");
    logs
}

/// Alice's account, once orders-local answers.
async fn wait_until_serving(client: &reqwest::Client, base: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.get(format!("{base}/account")).header("x-user-id", "alice").send().await {
            Ok(response) => return response.text().await.unwrap(),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => panic!("orders-local never answered: {error}"),
        }
    }
}

#[tokio::test]
async fn serves_the_demo_accounts_and_stops_cleanly_on_ctrl_c() {
    let Demo { child, client, base, account } = demo().await;
    assert_eq!(account, r#"{"user_id":"alice","balance_usd":"100"}"#);
    let placed = client
        .post(format!("{base}/orders"))
        .header("x-user-id", "alice")
        .body(r#"{"coin":"ABAN","amount":"3"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    // Idle kept-alive connections close after the head's 5 s; clients are
    // told 4.
    assert_eq!(placed.headers()["keep-alive"], "timeout=4");

    let logs = interrupt(child);
    assert!(logs.contains("simulated exchange filled a market buy"), "{logs}");
    assert!(logs.contains("audit:") && logs.contains("no discrepancies"), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
}

#[tokio::test]
async fn counts_orders_batches_and_settlements_at_get_metrics_and_when_stopped() {
    let Demo { child, client, base, .. } = demo().await;

    // 3 ABAN ($12): bought alone, then replayed (nothing placed). Three ×
    // 1 ABAN ($4): two join the pool, the third crosses $10 and closes it.
    // Then two refusals by the handler and one by the gateway.
    for (user, amount, key, status) in [
        ("alice", "3", Some("k1"), 201),
        ("alice", "3", Some("k1"), 200),
        ("bob", "1", None, 201),
        ("carol", "1", None, 201),
        ("alice", "1", None, 201),
        ("alice", "0", None, 422),
        ("dave", "2", None, 422),
    ] {
        let mut request = client
            .post(format!("{base}/orders"))
            .header("x-user-id", user)
            .body(format!(r#"{{"coin":"ABAN","amount":"{amount}"}}"#));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        assert_eq!(request.send().await.unwrap().status(), status, "{user} {amount}");
    }
    let twice = client.get(format!("{base}/account")).header("x-user-id", "alice").header("x-user-id", "bob");
    assert_eq!(twice.send().await.unwrap().status(), 400);
    let deadline = Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let response = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        let text = response.text().await.unwrap();
        if text.contains(r#"settle_outcomes{outcome="filled"} 2"#) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = metrics.lines().collect();
    for expected in [
        r#"orders_placed{placement="own_batch"} 1"#,
        r#"orders_placed{placement="joined"} 2"#,
        r#"orders_placed{placement="crossed"} 1"#,
        r#"batches_formed{by="order"} 2"#,
        "settle_attempts 2",
        r#"settle_outcomes{outcome="filled"} 2"#,
        "batch_formed_to_fill_seconds_count 2",
        r#"problems_answered{type="invalid-amount"} 1"#,
        r#"problems_answered{type="insufficient-funds"} 1"#,
        r#"problems_answered{type="malformed-request"} 1"#,
        // There before the first one, for an alert to watch.
        r#"problems_answered{type="busy"} 0"#,
        r#"settle_outcomes{outcome="refused"} 0"#,
    ] {
        assert!(lines.contains(&expected), "{expected} is not in:\n{metrics}");
    }
    let refused = client.post(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!((refused.status().as_u16(), &refused.headers()["allow"]), (405, &"GET, HEAD".parse().unwrap()));

    let logs = interrupt(child);
    assert!(logs.contains(r#"orders_placed{placement="crossed"} 1"#), "the counters are printed when it stops: {logs}");
}

#[test]
fn a_bad_seed_file_is_refused_with_its_reason() {
    let cases = [
        (r#"{"accounts": [{"user_id": "alice", "balance_usd": "-5"}]}"#, "seed account #0", "-5"),
        (
            r#"{"accounts": [{"user_id": "bob", "balance_usd": "5"}, {"user_id": "bob", "balance_usd": "500"}]}"#,
            "seed account #1",
            "listed twice",
        ),
        (r#"{"accounts": [{"user_id": "zoë", "balance_usd": "5"}]}"#, "seed account #0", "X-User-Id"),
        (
            r#"{"accounts": [{"user_id": "rich", "balance_usd": "100000000000.01"}]}"#,
            "seed account #0",
            "balance_usd \"100000000000.01\" of rich is over the balance ceiling of 100000000000 USD",
        ),
        // HTTP drops a header value's outer spaces: never reachable.
        (
            r#"{"accounts": [{"user_id": " lead", "balance_usd": "5"}]}"#,
            "seed account #0",
            "must not begin or end with a space",
        ),
    ];
    for (n, (seed, account, reason)) in cases.into_iter().enumerate() {
        let path = std::env::temp_dir().join(format!("bad-seed-{}-{n}.json", std::process::id()));
        std::fs::write(&path, seed).unwrap();
        let (success, logs) = output(spawn(&["--listen", "127.0.0.1:0", "--seed", path.to_str().unwrap()]));
        std::fs::remove_file(&path).unwrap();
        assert!(!success);
        assert!(logs.contains(account) && logs.contains(reason), "{logs}");
    }
}

/// Each configuration error names the variable and the value as written,
/// never in Rust's debug notation (`Some("bogus")`).
#[test]
fn a_bad_setting_is_refused_naming_the_variable_and_the_value_as_written() {
    let cases: [(&[(&str, &str)], &str); 7] = [
        (
            &[("POOL_MAX_WAIT", "15m"), ("POOL_WAIT_POLICY", "bogus")],
            r#"POOL_WAIT_POLICY: "bogus" is not a wait policy"#,
        ),
        (&[("POOL_MAX_WAIT", "15m")], r#"POOL_WAIT_POLICY: unset, but POOL_MAX_WAIT is "15m""#),
        (&[("POOL_WAIT_POLICY", "refund")], r#"POOL_WAIT_POLICY: "refund" is set, but POOL_MAX_WAIT is not"#),
        (&[("POOL_MAX_WAIT", "soon"), ("POOL_WAIT_POLICY", "refund")], r#"POOL_MAX_WAIT: "soon" is not"#),
        (&[("MIN_ORDER_USD", "a cent")], r#"MIN_ORDER_USD: "a cent" is not a positive decimal"#),
        (&[("MIN_ORDER_USD", "11.000")], r#"MIN_ORDER_USD: "11.000" is over the exchange minimum (10 by default)"#),
        (
            &[("EXCHANGE_MINIMUM_USD", "0.005")],
            r#"EXCHANGE_MINIMUM_USD: EXCHANGE_MINIMUM_USD="0.005" is under the smallest order"#,
        ),
    ];
    for (vars, expected) in cases {
        let mut command = Command::new(BIN);
        command.args(["--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        for var in
            ["POOL_MAX_WAIT", "POOL_WAIT_POLICY", "HOUSE_USER_ID", "MIN_ORDER_USD", "PRICES", "EXCHANGE_MINIMUM_USD"]
        {
            command.env_remove(var);
        }
        let (success, logs) = output(command.envs(vars.iter().copied()).spawn().unwrap());
        assert!(!success, "{vars:?} was accepted");
        assert!(logs.contains(&format!("orders-local: configuration variable {expected}")), "{vars:?}: {logs}");
        assert!(!logs.contains("Some(") && !logs.contains("None"), "{logs}");
    }
}

/// `orders-admin`'s bad arguments are refused before it reaches DynamoDB,
/// each naming its flag and the value as written.
#[test]
fn orders_admin_names_the_flag_and_the_value_it_refuses() {
    let cases: [(&[&str], &str); 5] = [
        (&["--table", "", "pools"], r#"--table "" is not a DynamoDB table name"#),
        (&["deposit", "--user", "a", "--usd", "-5", "--id", "w1"], r#"--usd "-5" is not a positive plain decimal"#),
        (
            &["deposit", "--user", " ws", "--usd", "5", "--id", "w1"],
            r#"--user " ws": user id is not valid: must not begin or end with a space"#,
        ),
        (&["deposit", "--user", "a", "--usd", "5", "--id", "has space"], r#"--id "has space""#),
        (&["audit", "--minimum", "-1"], r#"--minimum "-1" is not a positive plain decimal"#),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_orders-admin"))
            .args(args)
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
    }
}

#[test]
fn a_missing_seed_file_is_refused_with_its_path() {
    let (success, logs) = output(spawn(&["--listen", "127.0.0.1:0", "--seed", "/nonexistent/seed.json"]));
    assert!(!success);
    assert!(logs.contains("/nonexistent/seed.json"), "{logs}");
}
