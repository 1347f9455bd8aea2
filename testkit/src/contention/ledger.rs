//! What the model counted, by kind of request: requests, the units billed
//! (the table's and its indexes'), conflicts, and each throttle with the
//! limit that caused it. A kind is read off the request itself (which
//! items it writes or reads), so the store needs no hooks.

use std::collections::BTreeMap;
use std::time::Duration;

use shared::adapters::dynamodb::table::{Query, Write};

use super::{Key, write_key};

/// A documented limit that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// 1,000 write units a second on one partition key of the table.
    PartitionWrite,
    /// 3,000 read units a second on one partition key, or the table's read
    /// units.
    PartitionRead,
    /// 1,000 write units a second on one partition key of an index.
    IndexPartitionWrite,
    /// The table's (or an index's) write units a second.
    TableWrite,
}

impl Limit {
    pub const ALL: [Limit; 4] =
        [Limit::PartitionWrite, Limit::PartitionRead, Limit::IndexPartitionWrite, Limit::TableWrite];

    pub fn describe(self) -> &'static str {
        match self {
            Limit::PartitionWrite => "a partition's 1,000 write units a second",
            Limit::PartitionRead => "a partition's 3,000 read units a second, or the table's read units",
            Limit::IndexPartitionWrite => "an index partition's 1,000 write units a second",
            Limit::TableWrite => "the table's (or an index's) write units a second",
        }
    }
}

/// What a request is for, read off what it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A placement transaction (it puts an order).
    Place,
    /// A transaction that closes pools without an order: the sweep.
    Sweep,
    /// A transaction that credits an order back (refunds, cancels).
    Refund,
    /// A deposit or an account opened.
    Accounts,
    /// A single write on a batch: claims, fenced settlement writes,
    /// re-sends.
    SettleWrite,
    /// The coin's shard count, read or written.
    ShardCount,
    /// Pool shards read together (a view, a sweep, a top-up).
    ReadShards,
    /// One order, account, batch or pointer read.
    ReadItem,
    /// The open-batches index (the reconciler).
    QueryOpenBatches,
    /// The batch-members index (refunds).
    QueryClosedPools,
    /// A customer's orders.
    QueryOrders,
    Scan,
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Place => "place (TransactWriteItems)",
            Kind::Sweep => "sweep (TransactWriteItems)",
            Kind::Refund => "refund or cancel (TransactWriteItems)",
            Kind::Accounts => "accounts and deposits",
            Kind::SettleWrite => "settlement (UpdateItem on a batch)",
            Kind::ShardCount => "shard count (GetItem, UpdateItem)",
            Kind::ReadShards => "pool shards (BatchGetItem)",
            Kind::ReadItem => "one item (GetItem)",
            Kind::QueryOpenBatches => "open batches (Query, index)",
            Kind::QueryClosedPools => "a shard's closed pools (Query)",
            Kind::QueryOrders => "a customer's orders (Query)",
            Kind::Scan => "scan",
            Kind::Other => "other",
        }
    }

    pub(super) fn of_transaction(writes: &[Write]) -> Kind {
        let keys: Vec<Key> = writes.iter().map(write_key).collect();
        let puts_order = writes.iter().any(|w| matches!(w, Write::Put { .. }) && write_key(w).1.starts_with("ORDER#"));
        let pools = keys.iter().filter(|k| k.1 == "POOL").count();
        if puts_order {
            Kind::Place
        } else if pools > 1 || keys.iter().any(|k| k.1.starts_with("CLOSED#")) {
            Kind::Sweep
        } else if keys.iter().any(|k| k.1.starts_with("DEPOSIT#") || k.1 == "ACCOUNT")
            && keys.iter().all(|k| k.0.starts_with("ACCOUNT#"))
        {
            Kind::Accounts
        } else if keys.iter().any(|k| k.1.starts_with("ORDER#")) {
            Kind::Refund
        } else if keys.iter().any(|k| k.1 == "POOL") {
            Kind::Sweep
        } else {
            Kind::Other
        }
    }

    pub(super) fn of_write(write: &Write) -> Kind {
        let (pk, sk) = write_key(write);
        match sk.as_str() {
            "BATCH" if pk.starts_with("BATCH#") => Kind::SettleWrite,
            "SHARDS" => Kind::ShardCount,
            _ if pk.starts_with("ACCOUNT#") => Kind::Accounts,
            _ => Kind::Other,
        }
    }

    pub(super) fn of_read(key: &Key) -> Kind {
        match key.1.as_str() {
            "SHARDS" => Kind::ShardCount,
            "POOL" => Kind::ReadShards,
            _ => Kind::ReadItem,
        }
    }

    pub(super) fn of_batch_read(first: &Key) -> Kind {
        match first.1.as_str() {
            "POOL" => Kind::ReadShards,
            "SHARDS" => Kind::ShardCount,
            _ => Kind::ReadItem,
        }
    }

    pub(super) fn of_query(query: &Query) -> Kind {
        match query.index {
            Some(shared::adapters::dynamodb::item::OPEN_BATCHES_INDEX) => Kind::QueryOpenBatches,
            Some(_) => Kind::Other,
            None if query.partition.1.starts_with("COIN#") => Kind::QueryClosedPools,
            None if query.partition.1.starts_with("ACCOUNT#") => Kind::QueryOrders,
            None => Kind::Other,
        }
    }
}

/// One kind's counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Requests sent: answered, cancelled by a conflict, or throttled.
    pub requests: u64,
    pub conflicts: u64,
    pub condition_failures: u64,
    pub throttles: BTreeMap<Limit, u64>,
    /// Write units billed on the table.
    pub write_units: u64,
    /// Write units the table's indexes took.
    pub index_write_units: u64,
    /// Read units billed, in halves.
    pub read_half_units: u64,
    /// Time the answered requests took, together.
    pub time: Duration,
}

impl Counts {
    /// A request refused for throughput: it was sent, so it counts.
    pub(super) fn throttled(&mut self, limit: Limit) {
        self.requests += 1;
        *self.throttles.entry(limit).or_default() += 1;
    }

    pub fn throttled_total(&self) -> u64 {
        self.throttles.values().sum()
    }

    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.conflicts += other.conflicts;
        self.condition_failures += other.condition_failures;
        for (limit, n) in &other.throttles {
            *self.throttles.entry(*limit).or_default() += n;
        }
        self.write_units += other.write_units;
        self.index_write_units += other.index_write_units;
        self.read_half_units += other.read_half_units;
        self.time += other.time;
    }

    fn minus(&self, earlier: &Counts) -> Counts {
        let mut throttles = self.throttles.clone();
        for (limit, n) in &earlier.throttles {
            let entry = throttles.entry(*limit).or_default();
            *entry = entry.saturating_sub(*n);
        }
        throttles.retain(|_, n| *n > 0);
        Counts {
            requests: self.requests - earlier.requests,
            conflicts: self.conflicts - earlier.conflicts,
            condition_failures: self.condition_failures - earlier.condition_failures,
            throttles,
            write_units: self.write_units - earlier.write_units,
            index_write_units: self.index_write_units - earlier.index_write_units,
            read_half_units: self.read_half_units - earlier.read_half_units,
            time: self.time.saturating_sub(earlier.time),
        }
    }
}

/// Counts by kind of request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger(pub BTreeMap<Kind, Counts>);

impl Ledger {
    pub(super) fn entry(&mut self, kind: Kind) -> &mut Counts {
        self.0.entry(kind).or_default()
    }

    /// Everything together.
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for counts in self.0.values() {
            total.add(counts);
        }
        total
    }

    /// What happened since `earlier` (a ledger of the same table).
    pub fn since(&self, earlier: &Ledger) -> Ledger {
        let empty = Counts::default();
        Ledger(
            self.0.iter().map(|(kind, counts)| (*kind, counts.minus(earlier.0.get(kind).unwrap_or(&empty)))).collect(),
        )
    }

    pub fn get(&self, kind: Kind) -> Counts {
        self.0.get(&kind).cloned().unwrap_or_default()
    }

    /// The limits that throttled anything, most often first.
    pub fn limits_hit(&self) -> Vec<(Limit, u64)> {
        let total = self.total();
        let mut hit: Vec<(Limit, u64)> = total.throttles.into_iter().collect();
        hit.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        hit
    }
}
