//! Pooling: how orders under the minimum wait together, and how they become
//! batches. The rules only, pure; the use case that runs them is
//! `crate::pooling` (the sweep, the bounded wait), and the store makes each
//! decision stick with one conditional transaction (`adapters::dynamodb::pools`).
//!
//! A coin's pooled money sits in one or more *shards*, each an open pool:
//! its members (the orders in it), their totals, and a version that every
//! write moves. A shard never holds the minimum: an order that would bring
//! it there closes it instead ([`placement`]), with everything it holds, into
//! a batch. Money spread over several shards is gathered by the sweep
//! ([`sweep`]): shards closed together into one batch, in one transaction,
//! each on the version it was read at. There is no other state: pooled
//! money is always in an open pool (where its owner can cancel it, the wait
//! policy sees it, and the audit counts it as pending) or in a batch.
//!
//! - [`placement`]: where one order goes (its own batch, joining its
//!   shard, or closing it);
//! - [`sweep`]: which shards close together, and when; moving crumbs
//!   together when more shards hold them than one transaction closes;
//! - [`wait`]: the operator's bound on the wait: what the house pays to
//!   complete money that waited too long, or which orders are refunded;
//! - [`shards`]: how many shards a coin has, and which one an order tries.

pub mod placement;
#[cfg(test)]
mod properties;
pub mod shards;
pub mod sweep;
pub mod wait;

use rust_decimal::Decimal;
use time::OffsetDateTime;

use super::decimal::exact_sum;
use super::ids::{OrderId, UserId};
use super::money::Usd;
use super::quantity::{BatchQuantity, Quantity};

/// One order waiting in an open pool: which, whose, and when it was placed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub order: OrderId,
    pub user: UserId,
    pub placed: OffsetDateTime,
}

/// One shard's open pool, as read (or as a process last knew it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardPool {
    pub shard: u32,
    /// Pools this shard has closed: the next close is number `seq`.
    pub seq: u64,
    /// Moved by every write of the shard. A close (or a move) conditioned
    /// on it takes exactly the members and totals that were read.
    pub version: u64,
    pub usd: Usd,
    pub qty: Decimal,
    pub count: u32,
    /// Sorted by order id (by when the orders were placed).
    pub members: Vec<Member>,
    /// When it was last written, if known.
    pub written_at: Option<OffsetDateTime>,
}

impl ShardPool {
    /// A shard nobody has written yet.
    pub fn empty(shard: u32) -> ShardPool {
        ShardPool { shard, ..ShardPool::default() }
    }

    pub fn holds_money(&self) -> bool {
        self.count > 0
    }

    /// When its oldest member was placed.
    pub fn oldest(&self) -> Option<OffsetDateTime> {
        self.members.iter().map(|m| m.placed).min()
    }

    /// The pool once closed: empty, the next number, a new version.
    pub fn closed(&self) -> ShardPool {
        ShardPool { shard: self.shard, seq: self.seq + 1, version: self.version + 1, ..ShardPool::default() }
    }
}

/// Which pool a batch closed: a shard of its coin, and that pool's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolId {
    pub shard: u32,
    pub seq: u64,
}

/// What a batch holds: computed one way, from the pools it closes (and the
/// order that closes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTotals {
    pub usd: Usd,
    pub qty: BatchQuantity,
    pub count: u32,
}

impl BatchTotals {
    /// One order alone.
    pub fn of_order(cost: Usd, amount: Quantity) -> BatchTotals {
        BatchTotals { usd: cost, qty: amount.into(), count: 1 }
    }

    /// What `pools` hold together, and `order` (cost, amount) if one closes
    /// them; `PoolOverflow` when a sum cannot be held exactly, or when
    /// nothing is held.
    pub fn of(pools: &[&ShardPool], order: Option<(Usd, Quantity)>) -> Result<BatchTotals, PoolOverflow> {
        let mut usd = Usd::ZERO;
        let mut qty = Decimal::ZERO;
        let mut count = 0u32;
        for pool in pools {
            usd = usd.checked_add(pool.usd).ok_or(PoolOverflow)?;
            qty = exact_sum(qty, pool.qty).ok_or(PoolOverflow)?;
            count = count.checked_add(pool.count).ok_or(PoolOverflow)?;
        }
        if let Some((cost, amount)) = order {
            usd = usd.checked_add(cost).ok_or(PoolOverflow)?;
            qty = exact_sum(qty, amount.value()).ok_or(PoolOverflow)?;
            count = count.checked_add(1).ok_or(PoolOverflow)?;
        }
        Ok(BatchTotals { usd, qty: BatchQuantity::from_decimal(qty).ok_or(PoolOverflow)?, count })
    }
}

/// A pool's totals cannot be held exactly: refuse the order (or the close)
/// rather than round anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the order would make its coin's pool too large to add up exactly")]
pub struct PoolOverflow;

/// The sum of what `pools` hold, `None` if it cannot be held exactly.
pub fn held(pools: &[&ShardPool]) -> Option<Usd> {
    pools.iter().try_fold(Usd::ZERO, |sum, pool| sum.checked_add(pool.usd))
}

/// Shards one transaction closes at most: each close writes the shard and
/// the record of what it held (two of a transaction's 100 writes), with the
/// batch, and with a placing order's debit and order when one closes them.
pub const SHARDS_PER_CLOSE: usize = 48;

#[cfg(test)]
pub(crate) mod testing {
    //! Pools and orders for the planners' tests.

    #![allow(clippy::unwrap_used)]

    use std::str::FromStr;

    use super::*;

    pub fn usd(text: &str) -> Usd {
        Usd::new(Decimal::from_str(text).unwrap()).unwrap()
    }

    /// An order id placed at `ms` (ms since the epoch).
    pub fn order_at(ms: u64) -> OrderId {
        OrderId::from_ulid(ulid::Ulid::from_parts(ms, u128::from(ms as u32)))
    }

    /// A shard holding `dollars` in `count` orders, the oldest placed at
    /// `oldest_ms`.
    pub fn shard(shard: u32, dollars: &str, count: u32, oldest_ms: u64) -> ShardPool {
        let usd = usd(dollars);
        let members = (0..count)
            .map(|i| Member {
                order: order_at(oldest_ms + u64::from(i)),
                user: UserId::parse("u").unwrap(),
                placed: at_ms(oldest_ms + u64::from(i)),
            })
            .collect();
        ShardPool {
            shard,
            seq: 0,
            version: 1,
            usd,
            qty: usd.value() / Decimal::from(4),
            count,
            members,
            written_at: None,
        }
    }

    pub fn at_ms(ms: u64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
    }
}
