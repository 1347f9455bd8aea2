//! How soon the buy reaches the exchange after the order that crosses $10:
//! from the crossing order's response (as the client sees it) to the POST
//! arriving at a fake exchange on 127.0.0.1. Reports percentiles; negative
//! means the buy arrived before the response did (settlement starts before
//! the response is sent).
//!
//!   cargo bench -p e2e-tests --bench crossing_delay

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use e2e_tests::spawn_app;

const ROUNDS: usize = 300;

#[tokio::main]
async fn main() {
    let app = spawn_app(&[("a", "1000000"), ("b", "1000000"), ("c", "1000000")]).await;
    let mut from_response = Vec::with_capacity(ROUNDS);
    let mut from_request = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        app.place("a", "ABAN", "1").await;
        app.place("b", "ABAN", "1").await;
        let sent = Instant::now();
        let crossing = app.place("c", "ABAN", "1").await;
        let answered = Instant::now();
        assert_eq!(crossing.text("status"), "settling");
        let batch = crossing.text("batch_id");
        app.exchange.wait_for_fills(round + 1).await;
        let call = app.exchange.calls().into_iter().find(|c| c.method == "POST" && c.client_order_id == batch).unwrap();
        let signed_micros = |from: Instant| {
            if call.at >= from { (call.at - from).as_micros() as i64 } else { -((from - call.at).as_micros() as i64) }
        };
        from_response.push(signed_micros(answered));
        from_request.push(signed_micros(sent));
    }
    report(
        "crossing response -> exchange POST",
        &mut from_response,
        "the exchange was called before the response arrived",
    );
    report("crossing request sent -> exchange POST", &mut from_request, "negative");
    app.stop().await;
}

fn report(what: &str, samples: &mut [i64], negative: &str) {
    samples.sort_unstable();
    let at = |p: usize| samples[(samples.len() - 1) * p / 100] as f64 / 1000.0;
    let before = samples.iter().filter(|s| **s < 0).count();
    println!(
        "{what}: n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms; {negative}: {before} of {}",
        samples.len(),
        at(50),
        at(90),
        at(99),
        at(100),
        samples.len()
    );
}
