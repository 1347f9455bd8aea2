//! What a million orders cost on AWS, from the units and requests a run
//! counted and AWS's published on-demand prices.

use std::time::Duration;

use crate::run::Outcome;

/// Prices in US dollars, us-east-1, as AWS published them in November 2024
/// (DynamoDB's on-demand prices after the cut of 1 November 2024). This
/// machine cannot reach aws.amazon.com: check them before relying on them.
pub struct Prices {
    pub date: &'static str,
    /// DynamoDB on-demand, per million write request units.
    pub write_units: f64,
    /// Per million read request units.
    pub read_units: f64,
    /// Lambda, arm64, per GB-second and per million requests.
    pub lambda_gb_second: f64,
    pub lambda_requests: f64,
    /// API Gateway HTTP API, per million requests (the first 300 million a
    /// month).
    pub http_api: f64,
    /// SQS standard queue, per million requests.
    pub sqs: f64,
}

pub const PRICES: Prices = Prices {
    date: "November 2024",
    write_units: 0.625,
    read_units: 0.125,
    lambda_gb_second: 0.000_013_333_4,
    lambda_requests: 0.20,
    http_api: 1.00,
    sqs: 0.40,
};

/// The template's memory for every function (`Globals.Function.MemorySize`).
pub const LAMBDA_GB: f64 = 0.25;
/// Time a place-order invocation spends outside DynamoDB (parsing,
/// deciding, answering): 12.8 µs in-process by criterion; taken as a whole
/// billed millisecond.
const OWN_TIME: Duration = Duration::from_millis(1);
/// A settle invocation: the claim and the fill's write (the run's model
/// times) and the exchange's answer, taken as 100 ms.
const EXCHANGE_TIME: Duration = Duration::from_millis(100);
/// Requests to SQS per batch: the send, the event source's receive and
/// delete (each may carry up to ten messages; counted as one each).
const SQS_PER_BATCH: f64 = 3.0;

/// Dollars per million orders, by line.
pub struct Cost {
    pub dynamodb_writes: f64,
    pub dynamodb_reads: f64,
    pub http_api: f64,
    pub place_lambda: f64,
    pub settle_lambda: f64,
    pub sqs: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.dynamodb_writes + self.dynamodb_reads + self.http_api + self.place_lambda + self.settle_lambda + self.sqs
    }
}

fn billed_ms(time: Duration) -> f64 {
    (time.as_secs_f64() * 1000.0).ceil()
}

pub fn per_million(outcome: &Outcome) -> Cost {
    let orders = outcome.placed.max(1) as f64;
    let million = 1_000_000.0;
    let all = [&outcome.placement, &outcome.sweep, &outcome.settle].map(|l| l.total());
    let write_units: u64 = all.iter().map(|c| c.write_units + c.index_write_units).sum();
    let read_units: f64 = all.iter().map(|c| c.read_half_units as f64 / 2.0).sum();
    let batches_per_order = outcome.batches as f64 / orders;
    let mean_latency = outcome.latencies.iter().sum::<Duration>().as_secs_f64() / outcome.latencies.len().max(1) as f64;
    let place_ms = billed_ms(Duration::from_secs_f64(mean_latency) + OWN_TIME);
    let settle_writes = outcome.settle.total();
    let settle_time = settle_writes.time.as_secs_f64() / outcome.batches.max(1) as f64;
    let settle_ms = billed_ms(Duration::from_secs_f64(settle_time) + EXCHANGE_TIME + OWN_TIME);
    let lambda = |ms: f64| PRICES.lambda_requests / million + ms / 1000.0 * LAMBDA_GB * PRICES.lambda_gb_second;
    Cost {
        dynamodb_writes: write_units as f64 / orders * PRICES.write_units,
        dynamodb_reads: read_units / orders * PRICES.read_units,
        http_api: PRICES.http_api,
        place_lambda: lambda(place_ms) * million,
        settle_lambda: lambda(settle_ms) * million * batches_per_order,
        sqs: SQS_PER_BATCH * batches_per_order * PRICES.sqs,
    }
}
