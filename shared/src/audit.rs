//! The audit: the money invariants, checked on the data at rest.
//!
//! - every balance is its deposits, minus its orders' costs, plus what was
//!   refunded to it;
//! - every order is in exactly one place: its own batch, the members of
//!   one open pool of its shard, or the members of one closed pool's record
//!   (whose batch it is in), unless it was canceled (then in none, its cost
//!   back); and its cost is exactly price × amount;
//! - every batch is exactly its members (count, dollars, coin quantity),
//!   is worth at least the minimum, and its status agrees with its members'
//!   refunds; every pool it closed has a record that names it;
//! - every open pool's counters are its members' orders, below the minimum
//!   (a coin's pool may be spread over shards: each shard's open pool);
//! - with a bound on the wait (`AgeLimit`), no order has been pending longer.
//!
//! It reads nothing but a [`Ledger`] and says what is wrong, so the same
//! checks run on the embedded table after every step of a simulation, on an
//! emulator's table after an end-to-end test, and on a deployed table
//! (`orders-admin audit`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use rust_decimal::Decimal;

use time::OffsetDateTime;

use crate::domain::{
    Batch, BatchId, BatchStatus, Coin, DepositId, ExactSum, Member, Membership, Order, OrderId, PoolId, ShardPool, Usd,
    UserId, exact_product,
};

/// A credit to an account that is not a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRecord {
    pub user: UserId,
    pub id: DepositId,
    pub usd: Usd,
}

/// One shard's open pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPool {
    pub coin: Coin,
    pub shard: u32,
    pub state: ShardPool,
}

/// The record of a pool a batch closed: the batch, and the members it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedPool {
    pub coin: Coin,
    pub pool: PoolId,
    pub batch: BatchId,
    pub members: Vec<Member>,
}

/// How long an order may be pending, as of `now` (the operator's bound on
/// the wait, and the time its policy needs to act).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeLimit {
    pub now: OffsetDateTime,
    pub max: time::Duration,
}

/// Everything the money invariants are about, as stored.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub accounts: Vec<(UserId, Usd)>,
    pub deposits: Vec<DepositRecord>,
    pub orders: Vec<Order>,
    pub batches: Vec<Batch>,
    /// Each coin's open pools, one per shard.
    pub pools: Vec<OpenPool>,
    /// The record of each closed pool.
    pub closed_pools: Vec<ClosedPool>,
}

/// One discrepancy: what it is about (an account, an order, a batch, a
/// pool), and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub subject: String,
    pub detail: String,
}

fn problem(subject: String, detail: String) -> Problem {
    Problem { subject, detail }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// What the audit found, and the totals it checked.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub problems: Vec<Problem>,
    pub accounts: usize,
    pub deposited: ExactSum,
    pub balances: ExactSum,
    /// Costs of orders not refunded: what customers paid for coins.
    pub paid: ExactSum,
    pub orders: usize,
    pub pending_orders: usize,
    pub pending_usd: ExactSum,
    /// Orders canceled out of their pools, their costs back in the balances.
    pub canceled_orders: usize,
    pub canceled_usd: ExactSum,
    pub batches: BTreeMap<&'static str, usize>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} accounts: deposited {}, balances {}, paid for orders {}",
            self.accounts, self.deposited, self.balances, self.paid
        )?;
        writeln!(
            f,
            "{} orders, {} pending worth {}, {} canceled worth {}",
            self.orders, self.pending_orders, self.pending_usd, self.canceled_orders, self.canceled_usd
        )?;
        let batches: Vec<String> = self.batches.iter().map(|(status, n)| format!("{n} {status}")).collect();
        writeln!(f, "batches: {}", if batches.is_empty() { "none".to_owned() } else { batches.join(", ") })?;
        if self.problems.is_empty() {
            write!(f, "no discrepancies")
        } else {
            writeln!(f, "{} discrepancies:", self.problems.len())?;
            for problem in &self.problems {
                writeln!(f, "- {problem}")?;
            }
            Ok(())
        }
    }
}

/// Where the ledger lists an order: among an open pool's members, or a
/// closed pool's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed<'a> {
    Open(&'a Coin, u32),
    Closed(&'a Coin, PoolId, BatchId),
}

/// Where an order is.
enum Place<'a> {
    Batch(BatchId),
    OpenPool(&'a Coin, u32),
}

/// Running sums of a group of orders, exact (a sum that cannot be held
/// exactly matches nothing, and so is reported).
#[derive(Default, Clone, Copy)]
struct Sums {
    count: u32,
    usd: ExactSum,
    qty: ExactSum,
    refunded: u32,
}

impl Sums {
    fn add(&mut self, order: &Order) {
        self.count += 1;
        self.usd += order.cost.value();
        self.qty += order.amount.value();
        self.refunded += u32::from(order.refunded);
    }
}

/// The audit of a table in use. A scan is no snapshot: an order written
/// between two of its pages can show as a discrepancy that is not one. So
/// while the audit finds problems, the ledger is read again (up to `reads`
/// times, `pause` apart), and a problem is reported only if it is found
/// word for word in every read: the same subject (an account, an order, a
/// batch, a pool) wrong by the same figures. A torn read of a busy subject
/// shows other figures each time (a hot pool's sequence and counters move
/// between reads), so it is counted as in flight, not reported. What this
/// guarantees: a discrepancy at rest is always reported; one on a subject
/// written to between the reads is reported once that subject is quiet for
/// the length of the audit (re-run it then). The problems left out are
/// counted.
pub async fn audit_live<F, Fut, E>(
    mut read: F,
    minimum: Usd,
    age: Option<AgeLimit>,
    reads: usize,
    pause: std::time::Duration,
) -> Result<LiveAudit, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Ledger, E>>,
{
    let mut report = audit_aged(&read().await?, minimum, age);
    let mut in_flight = 0;
    for _ in 1..reads.max(1) {
        if report.is_clean() {
            break;
        }
        tokio::time::sleep(pause).await;
        let again = audit_aged(&read().await?, minimum, age);
        let before = report.problems.len();
        let persistent: std::collections::HashSet<(&String, &String)> =
            report.problems.iter().map(|p| (&p.subject, &p.detail)).collect();
        let kept: Vec<Problem> =
            again.problems.iter().filter(|p| persistent.contains(&(&p.subject, &p.detail))).cloned().collect();
        in_flight += before.saturating_sub(kept.len());
        report = AuditReport { problems: kept, ..again };
    }
    Ok(LiveAudit { report, in_flight })
}

/// [`audit_live`]'s answer.
#[derive(Debug, Clone)]
pub struct LiveAudit {
    /// The last read's report, with only the problems found in every read.
    pub report: AuditReport,
    /// Problems found in a read that a later read did not find again.
    pub in_flight: usize,
}

pub fn audit(ledger: &Ledger, minimum: Usd) -> AuditReport {
    audit_aged(ledger, minimum, None)
}

/// [`audit`], and with `age`, any order pending longer than it allows is a
/// discrepancy too.
pub fn audit_aged(ledger: &Ledger, minimum: Usd, age: Option<AgeLimit>) -> AuditReport {
    let mut report = AuditReport::default();
    let problems = &mut report.problems;
    let batches: HashMap<BatchId, &Batch> = ledger.batches.iter().map(|b| (b.id, b)).collect();
    let pools: HashMap<(&Coin, u32), &ShardPool> =
        ledger.pools.iter().map(|p| ((&p.coin, p.shard), &p.state)).collect();

    // Where each order is listed.
    let mut listed: HashMap<OrderId, Vec<(Listed, &UserId)>> = HashMap::new();
    for OpenPool { coin, shard, state } in &ledger.pools {
        for member in &state.members {
            listed.entry(member.order).or_default().push((Listed::Open(coin, *shard), &member.user));
        }
    }
    let mut closed: HashMap<(&Coin, PoolId), BatchId> = HashMap::new();
    for ClosedPool { coin, pool, batch, members } in &ledger.closed_pools {
        let (shard, seq) = (pool.shard, pool.seq);
        let subject = || format!("pool {seq} of shard {shard} of {coin}");
        if closed.insert((coin, *pool), *batch).is_some() {
            problems.push(problem(subject(), format!("pool {seq} of shard {shard} of {coin} was closed twice")));
        }
        match pools.get(&(coin, shard)) {
            Some(open) if seq < open.seq => {}
            _ => problems.push(problem(
                subject(),
                format!("pool {seq} of shard {shard} of {coin} is closed but is not before its open pool"),
            )),
        }
        match batches.get(batch) {
            Some(b) if b.pools.contains(pool) && &b.coin == coin => {}
            _ => problems.push(problem(
                subject(),
                format!("pool {seq} of shard {shard} of {coin} was closed by batch {batch}, which is not that pool's"),
            )),
        }
        for member in members {
            listed.entry(member.order).or_default().push((Listed::Closed(coin, *pool, *batch), &member.user));
        }
    }
    for batch in &ledger.batches {
        for pool in &batch.pools {
            if closed.get(&(&batch.coin, *pool)) != Some(&batch.id) {
                problems.push(problem(
                    format!("batch {}", batch.id),
                    format!(
                        "batch {} closed pool {} of shard {}, which has no record of it",
                        batch.id, pool.seq, pool.shard
                    ),
                ));
            }
        }
    }

    // Orders: exact costs, and the one place each is in.
    let mut members: HashMap<BatchId, Sums> = HashMap::new();
    let mut open: HashMap<(&Coin, u32), Sums> = HashMap::new();
    let mut seen: HashMap<OrderId, ()> = HashMap::new();
    let mut account_flow: BTreeMap<&UserId, ExactSum> = BTreeMap::new();
    for order in &ledger.orders {
        let subject = || format!("order {}", order.id);
        if seen.insert(order.id, ()).is_some() {
            problems.push(problem(subject(), format!("order {} is stored twice", order.id)));
        }
        if exact_product(order.price.value(), order.amount.value()) != Some(order.cost.value()) {
            problems.push(problem(
                subject(),
                format!("order {} costs {}, not {} × {}", order.id, order.cost, order.price, order.amount),
            ));
        }
        let flow = account_flow.entry(&order.user).or_default();
        report.orders += 1;
        let places = listed.remove(&order.id).unwrap_or_default();
        if places.iter().any(|(_, user)| *user != &order.user) {
            problems.push(problem(subject(), format!("order {} is listed as another user's", order.id)));
        }
        if order.canceled {
            // Debited, then credited back; in no pool and no batch any more.
            report.canceled_orders += 1;
            report.canceled_usd += order.cost.value();
            if order.refunded || matches!(order.membership, Membership::Own(_)) || !places.is_empty() {
                problems.push(problem(
                    subject(),
                    format!("order {} is canceled, yet was refunded, bought alone, or is still in a pool", order.id),
                ));
            }
            continue;
        }
        if !order.refunded {
            *flow -= order.cost.value();
            report.paid += order.cost.value();
        }
        let place = match (order.membership, places.as_slice()) {
            (Membership::Own(id), []) => Ok(Place::Batch(id)),
            (Membership::Own(_), _) => Err("bought alone, yet listed in a pool".to_owned()),
            (Membership::Pool { shard, formed }, [(place, _)]) => match *place {
                Listed::Open(coin, listed_shard)
                    if coin == &order.coin && listed_shard == shard && formed.is_none() =>
                {
                    Ok(Place::OpenPool(coin, shard))
                }
                Listed::Closed(coin, pool, batch)
                    if coin == &order.coin && pool.shard == shard && formed.is_none_or(|f| f == batch) =>
                {
                    Ok(Place::Batch(batch))
                }
                _ => Err(format!("listed in {place:?}, which is not its shard {shard} of {}", order.coin)),
            },
            (Membership::Pool { .. }, []) => Err("in no batch and no open pool".to_owned()),
            (Membership::Pool { .. }, _) => Err(format!("listed in {} places", places.len())),
        };
        match place {
            Ok(Place::Batch(batch)) => members.entry(batch).or_default().add(order),
            Ok(Place::OpenPool(coin, shard)) => {
                open.entry((coin, shard)).or_default().add(order);
                report.pending_orders += 1;
                report.pending_usd += order.cost.value();
                if order.refunded {
                    problems.push(problem(subject(), format!("order {} is pending and refunded", order.id)));
                }
                if let Some(age) = age
                    && age.now - order.created_at > age.max
                {
                    problems.push(problem(
                        subject(),
                        format!(
                            "order {} placed at {} has been pending longer than the wait allows ({})",
                            order.id, order.created_at, age.max
                        ),
                    ));
                }
            }
            Err(where_) => problems.push(problem(subject(), format!("order {}: {where_}", order.id))),
        }
    }
    for (order, places) in &listed {
        let places: Vec<String> = places.iter().map(|(place, _)| format!("{place:?}")).collect();
        problems.push(problem(
            format!("order {order}"),
            format!("order {order} is listed in {}, but there is no such order", places.join(", ")),
        ));
    }

    // Batches: exactly their members, worth the minimum, statuses that agree.
    for batch in &ledger.batches {
        *report.batches.entry(batch.status.as_str()).or_default() += 1;
        let sums = members.get(&batch.id).copied().unwrap_or_default();
        if !(sums.count == batch.count && sums.usd.is(batch.usd.value()) && sums.qty.is(batch.qty.value())) {
            problems.push(problem(
                format!("batch {}", batch.id),
                format!(
                    "batch {} records {} orders, {} USD, {} {}; its members are {} orders, {} USD, {} {}",
                    batch.id, batch.count, batch.usd, batch.qty, batch.coin, sums.count, sums.usd, sums.qty, batch.coin
                ),
            ));
        }
        if batch.usd < minimum {
            problems.push(problem(
                format!("batch {}", batch.id),
                format!("batch {} is worth {} USD, under the minimum {minimum}", batch.id, batch.usd),
            ));
        }
        let refunds_agree = match batch.status {
            BatchStatus::Ready | BatchStatus::Submitting | BatchStatus::Settled => {
                sums.refunded == 0 && batch.refunded == 0
            }
            BatchStatus::Refused => sums.refunded == batch.refunded,
            BatchStatus::Refunded => sums.refunded == sums.count && batch.refunded == batch.count,
        };
        if !refunds_agree {
            problems.push(problem(
                format!("batch {}", batch.id),
                format!(
                    "batch {} is {} with {} of its {} orders refunded (it counts {})",
                    batch.id,
                    batch.status.as_str(),
                    sums.refunded,
                    sums.count,
                    batch.refunded
                ),
            ));
        }
        if (batch.status == BatchStatus::Settled) != batch.exchange_order_id.is_some() {
            problems.push(problem(
                format!("batch {}", batch.id),
                format!(
                    "batch {} is {} and has exchange order {:?}",
                    batch.id,
                    batch.status.as_str(),
                    batch.exchange_order_id
                ),
            ));
        }
    }
    for id in members.keys().filter(|id| !batches.contains_key(id)) {
        problems.push(problem(format!("batch {id}"), format!("orders belong to batch {id}, which does not exist")));
    }

    // Open pools: their counters are their pending orders, under the minimum.
    for OpenPool { coin, shard, state: pool } in &ledger.pools {
        let sums = open.get(&(coin, *shard)).copied().unwrap_or_default();
        if !(sums.count == pool.count && sums.usd.is(pool.usd.value()) && sums.qty.is(pool.qty)) {
            problems.push(problem(
                format!("the open pool of shard {shard} of {coin}"),
                format!(
                    "the open pool {} of shard {shard} of {coin} records {} orders, {} USD, {} {coin}; \
                 its pending orders are {} orders, {} USD, {} {coin}",
                    pool.seq, pool.count, pool.usd, pool.qty, sums.count, sums.usd, sums.qty
                ),
            ));
        }
        if pool.usd >= minimum {
            problems.push(problem(
                format!("the open pool of shard {shard} of {coin}"),
                format!(
                    "the open pool {} of shard {shard} of {coin} holds {} USD, not under the minimum",
                    pool.seq, pool.usd
                ),
            ));
        }
    }

    // Balances: deposits − costs + refunds.
    for deposit in &ledger.deposits {
        *account_flow.entry(&deposit.user).or_default() += deposit.usd.value();
        report.deposited += deposit.usd.value();
    }
    let balances: HashMap<&UserId, Usd> = ledger.accounts.iter().map(|(u, b)| (u, *b)).collect();
    report.accounts = ledger.accounts.len();
    report.balances = ledger.accounts.iter().map(|(_, b)| b.value()).sum();
    for (user, flow) in &account_flow {
        let balance = balances.get(user).map_or(Decimal::ZERO, |b| b.value());
        if !flow.is(balance) {
            problems.push(problem(
                format!("account {user}"),
                format!("account {user} holds {balance} USD; its deposits, orders and refunds make {flow}"),
            ));
        }
    }
    for (user, balance) in &ledger.accounts {
        if !account_flow.contains_key(user) && !balance.value().is_zero() {
            problems.push(problem(
                format!("account {user}"),
                format!("account {user} holds {balance} USD without any deposit"),
            ));
        }
    }
    report
}
