//! The table's items: keys, and the mapping between domain types and
//! DynamoDB attributes. Numbers are written from their exact decimal text and
//! parsed back into `Decimal`s (DynamoDB normalizes them, so their text is
//! never compared).

use std::collections::HashMap;

use super::table::Changes;
use aws_sdk_dynamodb::types::AttributeValue;
use rust_decimal::Decimal;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use super::table::Item;
use crate::domain::{
    Batch, BatchId, BatchQuantity, BatchStatus, Coin, DepositId, Member, Membership, Order, OrderId, PoolId, Quantity,
    ShardCount, ShardPool, Usd, UserId,
};

pub const PK: &str = "PK";
pub const SK: &str = "SK";
/// Sparse index of batches not yet settled or refunded.
pub const OPEN_BATCHES_INDEX: &str = "open-batches";
pub const OPEN_PK: &str = "GSI1PK";
pub const OPEN_SK: &str = "GSI1SK";
/// The open-batches index's partition keys: each batch goes under one of
/// these, by a hash of its id. One key of an index takes at most 1,000
/// write units a second, and each batch writes its entry twice (formed,
/// finished); so one key would cap the whole service near 500 batches a
/// second, and a sort key that only grows is never split for heat. Spread
/// over 64, the index takes some 32,000 batches a second, past a table's
/// default quota; the reconciler reads them all.
pub const OPEN_PARTITIONS: u32 = 64;
/// Where every open batch was before the index was spread: still read, for
/// batches a table holds from then.
pub const LEGACY_OPEN_PARTITION: &str = "OPEN";

#[derive(Debug, thiserror::Error)]
#[error("item attribute {attribute}: {problem}")]
pub struct ItemError {
    pub attribute: String,
    pub problem: &'static str,
}

fn missing(attribute: &str) -> ItemError {
    ItemError { attribute: attribute.to_owned(), problem: "missing or of the wrong type" }
}

fn invalid(attribute: &str) -> ItemError {
    ItemError { attribute: attribute.to_owned(), problem: "invalid value" }
}

pub fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([(PK.to_owned(), AttributeValue::S(pk)), (SK.to_owned(), AttributeValue::S(sk.into()))])
}

pub fn account_key(user: &UserId) -> Item {
    key(format!("ACCOUNT#{user}"), "ACCOUNT")
}

pub fn order_key(user: &UserId, id: OrderId) -> Item {
    key(format!("ACCOUNT#{user}"), format!("ORDER#{id}"))
}

pub fn idempotency_key(user: &UserId, key_text: &str) -> Item {
    key(format!("ACCOUNT#{user}"), format!("IDEMPOTENCY#{key_text}"))
}

pub fn deposit_key(user: &UserId, id: &DepositId) -> Item {
    key(format!("ACCOUNT#{user}"), format!("DEPOSIT#{id}"))
}

/// The deposit an account is opened with (seeding).
pub fn opening_deposit() -> DepositId {
    DepositId::parse("opening").unwrap_or_else(|_| unreachable!("a valid literal"))
}

/// The partition of shard `shard` of a coin's pool: shard 0 is the coin's
/// own (where a pool that never grew lives); each other shard has its own
/// partition, so that it has its own throughput.
fn shard_partition(coin: &Coin, shard: u32) -> String {
    match shard {
        0 => format!("COIN#{coin}"),
        shard => format!("COIN#{coin}#{shard}"),
    }
}

/// The coin and shard of a pool partition's key (`COIN#ABAN`, `COIN#ABAN#3`).
pub fn parse_shard_partition(pk: &str) -> Option<(Coin, u32)> {
    let rest = pk.strip_prefix("COIN#")?;
    match rest.split_once('#') {
        None => Some((Coin::from_trusted(rest), 0)),
        Some((coin, shard)) => Some((Coin::from_trusted(coin), shard.parse().ok()?)),
    }
}

pub fn pool_key(coin: &Coin, shard: u32) -> Item {
    key(shard_partition(coin, shard), "POOL")
}

/// The record of pool `seq` of a shard, closed at `closed_ms` into a batch:
/// the batch and the members it took. Keyed by when it closed, so that an
/// order finds the record of its pool among those closed after it was
/// placed (see `orders`).
pub fn closed_pool_key(coin: &Coin, shard: u32, closed_ms: i64, seq: u64) -> Item {
    key(shard_partition(coin, shard), closed_sort_key(closed_ms, seq))
}

/// Where a shard's closed-pool records start (`CLOSED#`), and the sort key
/// of the one closed at `closed_ms`: times sort as text (15 digits).
pub const CLOSED_PREFIX: &str = "CLOSED#";

pub fn closed_sort_key(closed_ms: i64, seq: u64) -> String {
    format!("{CLOSED_PREFIX}{:015}#{seq:020}", closed_ms.max(0))
}

/// The sort key that closed-pool records at `ms` and later sort after.
pub fn closed_from(ms: i64) -> String {
    format!("{CLOSED_PREFIX}{:015}", ms.max(0))
}

/// The members of a pool are attributes of its item (and of its record once
/// closed), one per order, named after it, holding when it was placed (ms)
/// and its owner: `"1764921600000 alice"`.
const MEMBER_PREFIX: &str = "m:";

pub fn member_attribute(order: OrderId) -> String {
    format!("{MEMBER_PREFIX}{order}")
}

/// The members an item holds, sorted by order.
pub fn members_of(item: &Item) -> Result<Vec<Member>, ItemError> {
    let mut members = item
        .iter()
        .filter_map(|(name, value)| Some((name.strip_prefix(MEMBER_PREFIX)?, value)))
        .map(|(order, value)| {
            let order = OrderId::parse(order).map_err(|_| invalid("member"))?;
            let (placed, user) = value.as_s().ok().and_then(|v| v.split_once(' ')).ok_or_else(|| invalid("member"))?;
            let placed = placed
                .parse::<i64>()
                .ok()
                .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok());
            let user = UserId::parse(user).ok();
            match (placed, user) {
                (Some(placed), Some(user)) => Ok(Member { order, user, placed }),
                _ => Err(invalid("member")),
            }
        })
        .collect::<Result<Vec<_>, ItemError>>()?;
    members.sort();
    Ok(members)
}

/// What a member's attribute holds.
pub fn member_value(member: &Member) -> AttributeValue {
    s(format!("{} {}", millis(member.placed), member.user))
}

fn insert_members(item: &mut Item, members: &[Member]) {
    for member in members {
        item.insert(member_attribute(member.order), member_value(member));
    }
}

/// A shard's open pool as stored: its totals, how many pools it closed,
/// its version, and its members. (A shard never written reads as empty.)
pub fn shard_pool_of(shard: u32, item: Option<&Item>) -> Result<ShardPool, ItemError> {
    let Some(item) = item else { return Ok(ShardPool::empty(shard)) };
    Ok(ShardPool {
        shard,
        seq: opt(item, "seq", get_u64)?.unwrap_or(0),
        version: opt(item, "version", get_u64)?.unwrap_or(0),
        usd: opt(item, "usd", usd)?.unwrap_or(Usd::ZERO),
        qty: opt(item, "qty", get_decimal)?.unwrap_or(Decimal::ZERO),
        count: counter(item, "count")?,
        members: members_of(item)?,
        written_at: time_of_ms_opt(item, "updated_ms")?,
    })
}

/// The shard's item once its pool is closed (or emptied by a move): no
/// members, zero totals, `seq` as given, the next version. Put whole, on
/// the condition that the shard is still at the version read.
pub fn emptied_pool_item(coin: &Coin, pool: &ShardPool, seq: u64, now: OffsetDateTime) -> Item {
    let mut item = pool_key(coin, pool.shard);
    item.insert("usd".into(), n_int(0u64));
    item.insert("qty".into(), n_int(0u64));
    item.insert("count".into(), n_int(0u64));
    item.insert("seq".into(), n_int(seq));
    item.insert("version".into(), n_int(pool.version + 1));
    item.insert("updated_ms".into(), ms(now));
    item
}

/// The record of `pool` closed into `batch` at `closed_ms`, with `extra`
/// (the order that closed it, if one did) among its members.
pub fn closed_pool_item(
    coin: &Coin,
    pool: &ShardPool,
    batch: BatchId,
    closed_ms: i64,
    extra: Option<(&Member, Usd, Quantity)>,
) -> Option<Item> {
    let mut item = closed_pool_key(coin, pool.shard, closed_ms, pool.seq);
    let (mut usd, mut qty, mut count) = (pool.usd, pool.qty, pool.count);
    if let Some((member, cost, amount)) = extra {
        usd = usd.checked_add(cost)?;
        qty = crate::domain::exact_sum(qty, amount.value())?;
        count = count.checked_add(1)?;
        insert_members(&mut item, std::slice::from_ref(member));
    }
    insert_members(&mut item, &pool.members);
    item.insert("batch_id".into(), s(batch.to_string()));
    item.insert("seq".into(), n_int(pool.seq));
    item.insert("closed_ms".into(), AttributeValue::N(closed_ms.to_string()));
    item.insert("usd".into(), n(usd.value()));
    item.insert("qty".into(), n(qty));
    item.insert("count".into(), n_int(count));
    Some(item)
}

/// A closed pool's record as read: which pool, the batch, the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedRecord {
    pub coin: Coin,
    pub pool: PoolId,
    pub batch: BatchId,
    pub members: Vec<Member>,
}

pub fn closed_record_of(item: &Item) -> Result<ClosedRecord, ItemError> {
    let pk = get_s(item, PK)?;
    let (coin, shard) = parse_shard_partition(pk).ok_or_else(|| invalid(PK))?;
    Ok(ClosedRecord {
        coin,
        pool: PoolId { shard, seq: get_u64(item, "seq")? },
        batch: BatchId::parse(get_s(item, "batch_id")?).map_err(|_| invalid("batch_id"))?,
        members: members_of(item)?,
    })
}

/// The partition listing every coin that ever had a pool: the sweep's coins
/// come from it, not from the price list (a coin taken off the list keeps
/// its pending money, which must still be batched).
pub const COINS_PK: &str = "COINS";

/// A coin's entry in [`COINS_PK`], written with its first pool.
pub fn coin_entry(coin: &Coin) -> Item {
    let mut entry = key(COINS_PK.to_owned(), format!("COIN#{coin}"));
    entry.insert("coin".into(), s(coin.as_str()));
    entry
}

/// How many shards a coin's pool has now.
pub fn shards_key(coin: &Coin) -> Item {
    key(format!("COIN#{coin}"), "SHARDS")
}

/// The changes that record a coin's shards set to `count` at `at`, and
/// `high`, the most it has had (tests and tools that set a count).
pub fn shards_grown(count: u32, high: u32, at: OffsetDateTime) -> Changes {
    Changes::new().set("count", n_int(count)).set("set_ms", ms(at)).set("high", n_int(high.max(count)))
}

/// The changes that write `record`.
pub fn shards_record(record: &ShardCount) -> Changes {
    let changes = Changes::new().set("count", n_int(record.count)).set("high", n_int(record.high.max(record.count)));
    match record.set_ms {
        Some(ms) => changes.set("set_ms", AttributeValue::N(ms.to_string())),
        None => changes.remove("set_ms"),
    }
}

/// A coin's shard count record as read (`None`: it never grew).
pub fn shard_count_of(item: Option<&Item>) -> Result<ShardCount, ItemError> {
    let Some(item) = item else { return Ok(ShardCount::ONE) };
    let count = u32::try_from(opt(item, "count", get_u64)?.unwrap_or(1)).unwrap_or(u32::MAX).max(1);
    let set_ms = opt(item, "set_ms", get_u64)?.and_then(|ms| i64::try_from(ms).ok());
    let high = u32::try_from(opt(item, "high", get_u64)?.unwrap_or(0)).unwrap_or(u32::MAX).max(count);
    Ok(ShardCount { count, set_ms, high, exists: true })
}

/// The condition that a coin's shard count record is still `record`.
pub fn shard_count_unchanged(record: &ShardCount) -> super::table::Cond {
    use super::table::Cond;
    if !record.exists {
        return Cond::not_exists(PK);
    }
    let set = match record.set_ms {
        Some(ms) => Cond::eq("set_ms", AttributeValue::N(ms.to_string())),
        None => Cond::not_exists("set_ms"),
    };
    Cond::eq("count", n_int(record.count)).and(set).and(Cond::eq("high", n_int(record.high)))
}

/// The open-batches partition of a batch (FNV-1a of its id: stable across
/// processes and versions).
pub fn open_partition(batch: BatchId) -> String {
    let hash = batch
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("OPEN#{:02}", hash % u64::from(OPEN_PARTITIONS))
}

/// Every partition of the open-batches index, the legacy one last.
pub fn open_partitions() -> impl Iterator<Item = String> {
    (0..OPEN_PARTITIONS).map(|k| format!("OPEN#{k:02}")).chain(std::iter::once(LEGACY_OPEN_PARTITION.to_owned()))
}

pub fn batch_key(id: BatchId) -> Item {
    key(format!("BATCH#{id}"), "BATCH")
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: Decimal) -> AttributeValue {
    AttributeValue::N(crate::domain::format_decimal(value))
}

pub fn n_int(value: impl Into<u64>) -> AttributeValue {
    AttributeValue::N(value.into().to_string())
}

pub fn ms(value: OffsetDateTime) -> AttributeValue {
    AttributeValue::N((value.unix_timestamp_nanos() / 1_000_000).to_string())
}

pub fn timestamp(value: OffsetDateTime) -> AttributeValue {
    s(value.format(&Rfc3339).unwrap_or_default())
}

pub fn get_s<'a>(item: &'a Item, attribute: &str) -> Result<&'a str, ItemError> {
    item.get(attribute).and_then(|v| v.as_s().ok()).map(String::as_str).ok_or_else(|| missing(attribute))
}

pub fn get_decimal(item: &Item, attribute: &str) -> Result<Decimal, ItemError> {
    let text = item.get(attribute).and_then(|v| v.as_n().ok()).ok_or_else(|| missing(attribute))?;
    // Exactly, or refused: an item whose number does not fit is an error,
    // never a rounded balance.
    crate::domain::exact_decimal(text).ok_or_else(|| invalid(attribute))
}

pub fn get_u64(item: &Item, attribute: &str) -> Result<u64, ItemError> {
    let value = get_decimal(item, attribute)?;
    u64::try_from(value).map_err(|_| invalid(attribute))
}

fn opt<T>(
    item: &Item,
    attribute: &str,
    get: impl Fn(&Item, &str) -> Result<T, ItemError>,
) -> Result<Option<T>, ItemError> {
    if item.contains_key(attribute) { get(item, attribute).map(Some) } else { Ok(None) }
}

fn usd(item: &Item, attribute: &str) -> Result<Usd, ItemError> {
    Usd::new(get_decimal(item, attribute)?).ok_or_else(|| invalid(attribute))
}

fn quantity(item: &Item, attribute: &str) -> Result<Quantity, ItemError> {
    Quantity::from_decimal(get_decimal(item, attribute)?).map_err(|_| invalid(attribute))
}

fn batch_quantity(item: &Item, attribute: &str) -> Result<BatchQuantity, ItemError> {
    BatchQuantity::from_decimal(get_decimal(item, attribute)?).ok_or_else(|| invalid(attribute))
}

fn u32_of(item: &Item, attribute: &str) -> Result<u32, ItemError> {
    u32::try_from(get_u64(item, attribute)?).map_err(|_| invalid(attribute))
}

/// A counter that older items may not have yet.
fn counter(item: &Item, attribute: &str) -> Result<u32, ItemError> {
    Ok(opt(item, attribute, u32_of)?.unwrap_or(0))
}

fn time_of(item: &Item, attribute: &str) -> Result<OffsetDateTime, ItemError> {
    OffsetDateTime::parse(get_s(item, attribute)?, &Rfc3339).map_err(|_| invalid(attribute))
}

fn time_of_ms(item: &Item, attribute: &str) -> Result<OffsetDateTime, ItemError> {
    let millis = get_decimal(item, attribute)?;
    let nanos = i128::try_from(millis * Decimal::from(1_000_000)).map_err(|_| invalid(attribute))?;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid(attribute))
}

/// An optional epoch-milliseconds attribute.
pub fn time_of_ms_opt(item: &Item, attribute: &str) -> Result<Option<OffsetDateTime>, ItemError> {
    opt(item, attribute, time_of_ms)
}

pub fn balance_of(item: Option<&Item>) -> Result<Usd, ItemError> {
    match item.filter(|i| i.contains_key("balance_usd")) {
        Some(item) => usd(item, "balance_usd"),
        None => Ok(Usd::ZERO),
    }
}

/// The order item. `formed` is the batch this order formed, if any: an
/// attempt whose reply was lost can tell from it what it did.
/// When an order was canceled, on the order: its presence is the order's
/// `canceled`.
pub const CANCELED_AT: &str = "canceled_at";

pub fn order_item(order: &Order) -> Item {
    let mut item = order_key(&order.user, order.id);
    item.insert("order_id".into(), s(order.id.to_string()));
    item.insert("user_id".into(), s(order.user.as_str()));
    item.insert("coin".into(), s(order.coin.as_str()));
    item.insert("amount".into(), n(order.amount.value()));
    item.insert("price".into(), n(order.price.value()));
    item.insert("cost".into(), n(order.cost.value()));
    item.insert("created_at".into(), timestamp(order.created_at));
    match order.membership {
        Membership::Own(batch) => {
            item.insert("batch_id".into(), s(batch.to_string()));
        }
        Membership::Pool { shard, formed } => {
            item.insert(ORDER_SHARD.into(), n_int(shard));
            if let Some(formed) = formed {
                item.insert("formed_batch_id".into(), s(formed.to_string()));
            }
        }
    }
    item
}

/// A pooled order's shard, on the order: a move of the crumbs rewrites it,
/// and a cancel is conditioned on it.
pub const ORDER_SHARD: &str = "shard";

pub fn order_of(item: &Item) -> Result<Order, ItemError> {
    let batch_id = |attribute: &str| -> Result<BatchId, ItemError> {
        BatchId::parse(get_s(item, attribute)?).map_err(|_| invalid(attribute))
    };
    let membership = match opt(item, "batch_id", |_, a| batch_id(a))? {
        Some(batch) => Membership::Own(batch),
        None => Membership::Pool {
            shard: counter(item, ORDER_SHARD)?,
            formed: opt(item, "formed_batch_id", |_, a| batch_id(a))?,
        },
    };
    Ok(Order {
        id: OrderId::parse(get_s(item, "order_id")?).map_err(|_| invalid("order_id"))?,
        user: UserId::parse(get_s(item, "user_id")?).map_err(|_| invalid("user_id"))?,
        coin: Coin::from_trusted(get_s(item, "coin")?),
        amount: quantity(item, "amount")?,
        price: usd(item, "price")?,
        cost: usd(item, "cost")?,
        membership,
        refunded: item.get("refunded").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
        canceled: item.contains_key(CANCELED_AT),
        created_at: time_of(item, "created_at")?,
    })
}

pub fn batch_item(batch: &Batch) -> Item {
    let mut item = batch_key(batch.id);
    item.insert("batch_id".into(), s(batch.id.to_string()));
    item.insert("coin".into(), s(batch.coin.as_str()));
    if !batch.pools.is_empty() {
        item.insert("pools".into(), s(pools_text(&batch.pools)));
    }
    if let Some(order) = &batch.alone {
        insert_members(&mut item, std::slice::from_ref(order));
    }
    item.insert("qty".into(), n(batch.qty.value()));
    item.insert("usd".into(), n(batch.usd.value()));
    item.insert("count".into(), n_int(batch.count));
    item.insert("status".into(), s(batch.status.as_str()));
    item.insert("attempts".into(), n_int(batch.attempts));
    item.insert("resends".into(), n_int(batch.resends));
    item.insert("refunded".into(), n_int(batch.refunded));
    if batch.rechecks > 0 {
        item.insert(RECHECKS.into(), n_int(batch.rechecks));
    }
    for (attribute, at) in [
        ("lease_until_ms", batch.lease_until),
        ("attempted_at_ms", batch.attempted_at),
        ("resent_at_ms", batch.resent_at),
        (RECHECK_AT, batch.recheck_at),
    ] {
        if let Some(at) = at {
            item.insert(attribute.into(), ms(at));
        }
    }
    if let Some(reason) = &batch.refusal {
        item.insert("refusal".into(), s(reason.as_str()));
    }
    if let Some(id) = &batch.exchange_order_id {
        item.insert("exchange_order_id".into(), s(id.as_str()));
    }
    if let Some(id) = &batch.late_fill {
        item.insert(LATE_FILL.into(), s(id.as_str()));
    }
    item.insert("created_at".into(), timestamp(batch.created_at));
    if batch.in_outbox() {
        item.insert(OPEN_PK.into(), s(open_partition(batch.id)));
        item.insert(
            OPEN_SK.into(),
            s(format!("{}#{}", batch.created_at.format(&Rfc3339).unwrap_or_default(), batch.id)),
        );
    }
    item
}

/// A batch's pools as its `pools` attribute holds them: `shard:seq,…`.
pub fn pools_text(pools: &[PoolId]) -> String {
    let text: Vec<String> = pools.iter().map(|p| format!("{}:{}", p.shard, p.seq)).collect();
    text.join(",")
}

fn pools_of(item: &Item) -> Result<Vec<PoolId>, ItemError> {
    if let Some(text) = opt(item, "pools", |i, a| get_s(i, a).map(str::to_owned))? {
        return text
            .split(',')
            .map(|pool| {
                let (shard, seq) = pool.split_once(':').ok_or_else(|| invalid("pools"))?;
                Ok(PoolId {
                    shard: shard.parse().map_err(|_| invalid("pools"))?,
                    seq: seq.parse().map_err(|_| invalid("pools"))?,
                })
            })
            .collect();
    }
    Ok(Vec::new())
}

/// The time a batch closed its pools, as their records' keys hold it.
pub fn closed_ms(batch: &Batch) -> i64 {
    millis(batch.created_at)
}

pub fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// When a refused batch's refunds may start (see [`Batch::refunds_from`]).
pub const REFUNDS_FROM: &str = "refunds_from_ms";
/// A refunded batch's next look at the exchange, the looks made, and a
/// fill found by one (see [`Batch::recheck_at`]).
pub const RECHECK_AT: &str = "recheck_at_ms";
pub const RECHECKS: &str = "rechecks";
pub const LATE_FILL: &str = "late_fill_id";

pub fn batch_of(item: &Item) -> Result<Batch, ItemError> {
    Ok(Batch {
        id: BatchId::parse(get_s(item, "batch_id")?).map_err(|_| invalid("batch_id"))?,
        coin: Coin::from_trusted(get_s(item, "coin")?),
        pools: pools_of(item)?,
        alone: members_of(item)?.into_iter().next(),
        qty: batch_quantity(item, "qty")?,
        usd: usd(item, "usd")?,
        count: u32_of(item, "count")?,
        status: BatchStatus::parse(get_s(item, "status")?).ok_or_else(|| invalid("status"))?,
        attempts: u32_of(item, "attempts")?,
        lease_until: opt(item, "lease_until_ms", time_of_ms)?,
        attempted_at: opt(item, "attempted_at_ms", time_of_ms)?,
        resends: counter(item, "resends")?,
        resent_at: opt(item, "resent_at_ms", time_of_ms)?,
        refunded: counter(item, "refunded")?,
        refusal: opt(item, "refusal", |i, a| get_s(i, a).map(str::to_owned))?,
        refunds_from: opt(item, REFUNDS_FROM, time_of_ms)?,
        exchange_order_id: opt(item, "exchange_order_id", |i, a| get_s(i, a).map(str::to_owned))?,
        recheck_at: opt(item, RECHECK_AT, time_of_ms)?,
        rechecks: counter(item, RECHECKS)?,
        late_fill: opt(item, LATE_FILL, |i, a| get_s(i, a).map(str::to_owned))?,
        created_at: time_of(item, "created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::domain::BatchTotals;

    #[test]
    fn numbers_are_parsed_back_whatever_text_dynamodb_returns() {
        let mut item = Item::new();
        for (text, expected) in [("12.5", "12.5"), ("12.50", "12.5"), ("1E+1", "10"), ("0.00000004", "0.00000004")] {
            item.insert("v".into(), AttributeValue::N(text.into()));
            assert_eq!(get_decimal(&item, "v").unwrap(), Decimal::from_str(expected).unwrap(), "{text}");
        }
        // DynamoDB keeps 38 digits; what a Decimal cannot hold exactly is
        // refused, never rounded (from_str would read 1.00…01 as 1).
        for text in ["1.0000000000000000000000000000001", "123456789012345678901234567890", "1E+40", "abc"] {
            item.insert("v".into(), AttributeValue::N(text.into()));
            assert!(get_decimal(&item, "v").is_err(), "{text}");
        }
    }

    /// Open batches spread over every key of the index, evenly, and the
    /// reconciler's list of keys is exactly those (and the legacy one): no
    /// key takes more than its share of the index's writes.
    #[test]
    fn open_batches_spread_over_every_key_of_the_index() {
        let mut per_key: HashMap<String, u32> = HashMap::new();
        for _ in 0..6400 {
            *per_key.entry(open_partition(BatchId::generate())).or_default() += 1;
        }
        let read: Vec<String> = open_partitions().collect();
        assert_eq!(per_key.len(), OPEN_PARTITIONS as usize);
        assert!(per_key.keys().all(|key| read.contains(key)), "a key the reconciler never reads");
        assert_eq!(read.last().map(String::as_str), Some(LEGACY_OPEN_PARTITION));
        let most = per_key.values().max().copied().unwrap_or(0);
        assert!(most < 200, "one key takes {most} of 6,400 batches (100 each on average)");
    }

    #[test]
    fn orders_and_batches_round_trip_through_items() {
        let now = OffsetDateTime::now_utc();
        let order = Order {
            id: OrderId::generate(),
            user: UserId::parse("alice").unwrap(),
            coin: Coin::from_trusted("ABAN"),
            amount: Quantity::parse("0.00000001").unwrap(),
            price: Usd::new(Decimal::from(4)).unwrap(),
            cost: Usd::new(Decimal::from_str("0.00000004").unwrap()).unwrap(),
            membership: Membership::Pool { shard: 0, formed: Some(BatchId::generate()) },
            refunded: false,
            canceled: false,
            created_at: now,
        };
        assert_eq!(order_of(&order_item(&order)).unwrap(), order);

        let totals = BatchTotals {
            usd: Usd::new(Decimal::from(12)).unwrap(),
            qty: BatchQuantity::from_decimal(Decimal::from(3)).unwrap(),
            count: 3,
        };
        let pools = vec![PoolId { shard: 0, seq: 7 }];
        let batch = Batch::ready(&Coin::from_trusted("ABAN"), pools, totals, now.replace_millisecond(0).unwrap());
        let item = batch_item(&batch);
        assert!(item.contains_key(OPEN_PK), "a ready batch is in the open-batches index");
        assert_eq!(batch_of(&item).unwrap(), batch);

        let refused = Batch {
            status: BatchStatus::Refused,
            attempts: 2,
            lease_until: Some(batch.created_at),
            attempted_at: Some(batch.created_at),
            resends: 1,
            resent_at: Some(batch.created_at),
            refunded: 1,
            refusal: Some("400 symbol halted".into()),
            ..batch
        };
        assert_eq!(batch_of(&batch_item(&refused)).unwrap(), refused);
        let rechecked = Batch {
            status: BatchStatus::Refunded,
            recheck_at: Some(batch.created_at),
            rechecks: 1,
            late_fill: Some("EX-9".into()),
            ..refused.clone()
        };
        assert_eq!(batch_of(&batch_item(&rechecked)).unwrap(), rechecked);
        assert_eq!(batch_of(&batch_item(&refused)).unwrap(), refused);

        let merged = Batch { pools: vec![PoolId { shard: 3, seq: 2 }, PoolId { shard: 0, seq: 9 }], ..refused };
        assert_eq!(batch_of(&batch_item(&merged)).unwrap(), merged);
        let alone = Batch {
            pools: Vec::new(),
            alone: Some(Member { order: order.id, user: order.user.clone(), placed: merged.created_at }),
            ..merged
        };
        assert_eq!(batch_of(&batch_item(&alone)).unwrap(), alone);
        let sharded = Order { membership: Membership::Pool { shard: 5, formed: None }, ..order.clone() };
        assert_eq!(order_of(&order_item(&sharded)).unwrap(), sharded);
        let own = Order { membership: Membership::Own(alone.id), ..order };
        assert_eq!(order_of(&order_item(&own)).unwrap(), own);
        assert_eq!(parse_shard_partition("COIN#ABAN#12"), Some((Coin::from_trusted("ABAN"), 12)));
        assert_eq!(parse_shard_partition("COIN#ABAN"), Some((Coin::from_trusted("ABAN"), 0)));
    }
}
