//! What the service counts, named once. The code records through the
//! `metrics` facade; the Lambda functions export it as CloudWatch Embedded
//! Metric Format lines in their logs (CloudWatch turns those into metrics),
//! `orders-local` as Prometheus text. Without an exporter installed, the
//! recording calls do nothing.
//!
//! Every label takes a value from a fixed, short list: a dimension per
//! customer or per batch would make a metric per customer or per batch.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use time::OffsetDateTime;

use crate::domain::Membership;
use crate::ports::Placed;

/// The CloudWatch namespace the functions' metrics land in.
pub const NAMESPACE: &str = "PurchaseOrders";

pub const ORDERS_PLACED: &str = "orders_placed";
pub const PROBLEMS: &str = "problems_answered";
pub const BATCHES_FORMED: &str = "batches_formed";
pub const SETTLE_ATTEMPTS: &str = "settle_attempts";
pub const SETTLE_OUTCOMES: &str = "settle_outcomes";
pub const FORMED_TO_FILL: &str = "batch_formed_to_fill_seconds";
pub const ORDERS_REFUNDED: &str = "orders_refunded";
pub const BATCHES_RESENT: &str = "batches_resent";
pub const ORDERS_CANCELED: &str = "orders_canceled";
pub const TOP_UPS: &str = "pool_top_ups";
pub const OLDEST_PENDING: &str = "oldest_pending_order_seconds";
pub const OLDEST_PENDING_ANY: &str = "oldest_pending_order_any_coin_seconds";
pub const HOUSE_BALANCE: &str = "house_balance_usd";

/// Units and help texts, for exporters that show them (Prometheus' `# HELP`,
/// EMF's `Unit`). Call once an exporter is installed.
pub fn describe() {
    describe_counter!(ORDERS_PLACED, Unit::Count, "Orders placed, by placement: own_batch, joined, crossed.");
    describe_counter!(
        PROBLEMS,
        Unit::Count,
        "Error answers of the Order API, by problem type (busy, outcome-unknown, …)."
    );
    describe_counter!(
        BATCHES_FORMED,
        Unit::Count,
        "Batches formed, by what formed them: an order, or the reconciler's sweep."
    );
    describe_counter!(SETTLE_ATTEMPTS, Unit::Count, "Settle attempts that claimed a batch.");
    describe_counter!(
        SETTLE_OUTCOMES,
        Unit::Count,
        "Settle attempts by outcome: filled, refused, unknown, misconfigured, lease_lost, filled_after_refusal."
    );
    describe_histogram!(FORMED_TO_FILL, Unit::Seconds, "Time from a batch forming to its fill being recorded.");
    describe_counter!(ORDERS_REFUNDED, Unit::Count, "Orders credited back after the exchange refused their batch.");
    describe_counter!(BATCHES_RESENT, Unit::Count, "Batches the reconciler sent to the settle queue again.");
    describe_counter!(
        ORDERS_CANCELED,
        Unit::Count,
        "Pending orders canceled, their costs back: by their owner, or by the wait policy."
    );
    describe_counter!(
        TOP_UPS,
        Unit::Count,
        "Pools the house completed after they waited too long (formed), or could not pay for (house_short)."
    );
    describe_gauge!(OLDEST_PENDING, Unit::Seconds, "How long each coin's oldest pending order has waited.");
    describe_gauge!(OLDEST_PENDING_ANY, Unit::Seconds, "How long the oldest pending order of any coin has waited.");
    describe_gauge!(HOUSE_BALANCE, Unit::Count, "The house account's balance in USD (for display and alarms only).");
}

const PLACEMENTS: [&str; 3] = ["own_batch", "joined", "crossed"];

/// A metric's label and the values it takes (`None`: any, as a coin's symbol).
pub type Label = (&'static str, Option<Vec<&'static str>>);

/// Every metric the service emits: its name, and its label if it has one.
/// The template's dashboard and alarms are checked against it.
pub fn catalogue() -> Vec<(&'static str, Option<Label>)> {
    let settle: Vec<&str> = SettleOutcome::ALL.iter().map(|o| o.label()).collect();
    let formed: Vec<&str> = [FormedBy::Order, FormedBy::Sweep, FormedBy::TopUp].iter().map(|b| b.label()).collect();
    let canceled: Vec<&str> = CanceledBy::ALL.iter().map(|b| b.label()).collect();
    let top_ups: Vec<&str> = [TopUpOutcome::Formed, TopUpOutcome::HouseShort].iter().map(|o| o.label()).collect();
    vec![
        (ORDERS_PLACED, Some(("placement", Some(PLACEMENTS.to_vec())))),
        // Every problem type is a value; those an alarm watches are these.
        (PROBLEMS, Some(("type", Some(ALARMING_PROBLEMS.to_vec())))),
        (BATCHES_FORMED, Some(("by", Some(formed)))),
        (SETTLE_ATTEMPTS, None),
        (SETTLE_OUTCOMES, Some(("outcome", Some(settle)))),
        (FORMED_TO_FILL, None),
        (ORDERS_REFUNDED, None),
        (BATCHES_RESENT, None),
        (ORDERS_CANCELED, Some(("by", Some(canceled)))),
        (TOP_UPS, Some(("outcome", Some(top_ups)))),
        (OLDEST_PENDING, Some(("coin", None))),
        (OLDEST_PENDING_ANY, None),
        (HOUSE_BALANCE, None),
    ]
}

/// The answers an alarm watches: present (at zero) before the first one.
const ALARMING_PROBLEMS: [&str; 3] = ["busy", "outcome-unknown", "internal"];

/// Every counter and every label value it takes (the problem types an alarm
/// watches), at zero, for an exporter that shows a series only once it
/// exists (Prometheus): an alert on `busy` then has a series before the
/// first busy answer.
pub fn register_at_zero() {
    for placement in PLACEMENTS {
        counter!(ORDERS_PLACED, "placement" => placement).absolute(0);
    }
    for kind in ALARMING_PROBLEMS {
        counter!(PROBLEMS, "type" => kind).absolute(0);
    }
    for by in [FormedBy::Order, FormedBy::Sweep, FormedBy::TopUp] {
        counter!(BATCHES_FORMED, "by" => by.label()).absolute(0);
    }
    counter!(SETTLE_ATTEMPTS).absolute(0);
    for outcome in SettleOutcome::ALL {
        counter!(SETTLE_OUTCOMES, "outcome" => outcome.label()).absolute(0);
    }
    counter!(ORDERS_REFUNDED).absolute(0);
    counter!(BATCHES_RESENT).absolute(0);
    for by in CanceledBy::ALL {
        counter!(ORDERS_CANCELED, "by" => by.label()).absolute(0);
    }
    for outcome in [TopUpOutcome::Formed, TopUpOutcome::HouseShort] {
        counter!(TOP_UPS, "outcome" => outcome.label()).absolute(0);
    }
}

/// What a top-up came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopUpOutcome {
    Formed,
    HouseShort,
}

impl TopUpOutcome {
    fn label(self) -> &'static str {
        match self {
            TopUpOutcome::Formed => "formed",
            TopUpOutcome::HouseShort => "house_short",
        }
    }
}

pub fn top_up(outcome: TopUpOutcome) {
    counter!(TOP_UPS, "outcome" => outcome.label()).increment(1);
}

/// A coin's oldest pending order's wait. The coin is a label: coins are a
/// short list the operator configures.
pub fn oldest_pending(coin: &crate::domain::Coin, seconds: f64) {
    gauge!(OLDEST_PENDING, "coin" => coin.as_str().to_owned()).set(seconds);
}

/// The longest wait of any coin's oldest pending order (what an alarm
/// watches: one metric, whatever the coins).
pub fn oldest_pending_any(seconds: f64) {
    gauge!(OLDEST_PENDING_ANY).set(seconds);
}

/// The house account's balance, for a dashboard and an alarm only: a
/// metric is a float, so it is never read back as money.
pub fn house_balance(balance: crate::domain::Usd) {
    use rust_decimal::prelude::ToPrimitive;
    gauge!(HOUSE_BALANCE).set(balance.value().to_f64().unwrap_or(f64::MAX));
}

/// Who canceled a pending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanceledBy {
    Owner,
    WaitPolicy,
}

impl CanceledBy {
    pub const ALL: [CanceledBy; 2] = [CanceledBy::Owner, CanceledBy::WaitPolicy];

    pub fn label(self) -> &'static str {
        match self {
            CanceledBy::Owner => "owner",
            CanceledBy::WaitPolicy => "wait_policy",
        }
    }
}

pub fn order_canceled(by: CanceledBy, orders: u64) {
    counter!(ORDERS_CANCELED, "by" => by.label()).increment(orders);
}

/// An order placed now (a replay of an earlier request placed nothing).
pub fn order_placed(placed: &Placed) {
    if placed.replayed {
        return;
    }
    let placement = match (placed.order.order.membership, placed.formed) {
        (Membership::Own(_), _) => PLACEMENTS[0],
        (Membership::Pool { .. }, None) => PLACEMENTS[1],
        (Membership::Pool { .. }, Some(_)) => PLACEMENTS[2],
    };
    counter!(ORDERS_PLACED, "placement" => placement).increment(1);
    if placed.formed.is_some() {
        batch_formed(FormedBy::Order, 1);
    }
}

/// The API answered with this problem type.
pub fn problem_answered(kind: &'static str) {
    counter!(PROBLEMS, "type" => kind).increment(1);
}

#[derive(Debug, Clone, Copy)]
pub enum FormedBy {
    /// The order that reached the minimum (alone, or by crossing a pool).
    Order,
    /// The reconciler's sweep of quiet pool shards.
    Sweep,
    /// The house completing a pool that waited too long.
    TopUp,
}

impl FormedBy {
    fn label(self) -> &'static str {
        match self {
            FormedBy::Order => "order",
            FormedBy::Sweep => "sweep",
            FormedBy::TopUp => "top_up",
        }
    }
}

pub fn batch_formed(by: FormedBy, batches: u64) {
    counter!(BATCHES_FORMED, "by" => by.label()).increment(batches);
}

pub fn settle_attempted() {
    counter!(SETTLE_ATTEMPTS).increment(1);
}

#[derive(Debug, Clone, Copy)]
pub enum SettleOutcome {
    Filled,
    /// Refused for good: the batch's orders are refunded.
    Refused,
    /// Neither filled nor refused as far as anyone can tell: tried again.
    Unknown,
    /// The exchange rejects our requests (address, credentials).
    Misconfigured,
    /// A later attempt took the batch over; it finishes the work.
    LeaseLost,
    /// The exchange filled a batch already refused and refunded: an
    /// operator must reconcile (logged as an error).
    FilledAfterRefusal,
}

impl SettleOutcome {
    pub const ALL: [SettleOutcome; 6] = [
        SettleOutcome::Filled,
        SettleOutcome::Refused,
        SettleOutcome::Unknown,
        SettleOutcome::Misconfigured,
        SettleOutcome::LeaseLost,
        SettleOutcome::FilledAfterRefusal,
    ];

    fn label(self) -> &'static str {
        match self {
            SettleOutcome::Filled => "filled",
            SettleOutcome::Refused => "refused",
            SettleOutcome::Unknown => "unknown",
            SettleOutcome::Misconfigured => "misconfigured",
            SettleOutcome::LeaseLost => "lease_lost",
            SettleOutcome::FilledAfterRefusal => "filled_after_refusal",
        }
    }
}

pub fn settle_outcome(outcome: SettleOutcome) {
    counter!(SETTLE_OUTCOMES, "outcome" => outcome.label()).increment(1);
}

/// A fill recorded now for a batch formed at `formed_at`.
pub fn filled_after(formed_at: OffsetDateTime, now: OffsetDateTime) {
    histogram!(FORMED_TO_FILL).record((now - formed_at).as_seconds_f64().max(0.0));
}

pub fn orders_refunded(orders: u32) {
    counter!(ORDERS_REFUNDED).increment(u64::from(orders));
}

pub fn batches_resent(batches: usize) {
    counter!(BATCHES_RESENT).increment(batches as u64);
}

/// The Lambda functions' exporter: CloudWatch Embedded Metric Format,
/// written to stdout at the end of each invocation (the log line is the
/// metric; CloudWatch extracts it).
#[derive(Clone, Copy)]
pub struct Emf(Option<&'static metrics_cloudwatch_embedded::Collector>);

impl Emf {
    /// Installs the exporter as the process's recorder. If one is already
    /// installed, says so in the log and exports nothing.
    pub fn install() -> Emf {
        match metrics_cloudwatch_embedded::Builder::new().cloudwatch_namespace(NAMESPACE).init() {
            Ok(collector) => {
                describe();
                Emf(Some(collector))
            }
            Err(error) => {
                tracing::warn!(%error, "metrics are not exported: could not install the EMF recorder");
                Emf(None)
            }
        }
    }

    /// Runs one invocation, then writes what it counted before the
    /// invocation's response is sent (after it, Lambda may freeze the
    /// process before the line is written).
    pub async fn around<T>(self, invocation: impl Future<Output = T>) -> T {
        let output = invocation.await;
        self.flush();
        output
    }

    /// Writes what was counted since the last flush, one document per label
    /// set, in one write: no log line of another task lands inside one.
    pub fn flush(&self) {
        let Some(collector) = self.0 else { return };
        let mut documents = Vec::new();
        if let Err(error) = collector.flush(&mut documents) {
            tracing::warn!(%error, "could not format the metrics");
            return;
        }
        if let Err(error) = std::io::Write::write_all(&mut std::io::stdout().lock(), &documents) {
            tracing::warn!(%error, "could not write the metrics");
        }
    }
}
