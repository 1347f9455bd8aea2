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
    Batch, BatchId, BatchQuantity, BatchStatus, Coin, DepositId, Membership, Order, OrderId, PoolId, PoolState,
    Quantity, Usd, UserId,
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
/// Index of the orders of each batch (for refunds).
pub const MEMBERS_INDEX: &str = "batch-members";
pub const MEMBERS_PK: &str = "GSI2PK";
pub const MEMBERS_SK: &str = "GSI2SK";

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

/// Which batch closed pool `pool` of `coin`.
pub fn pool_batch_key(coin: &Coin, pool: PoolId) -> Item {
    key(shard_partition(coin, pool.shard), format!("BATCH#{:020}", pool.seq))
}

/// The batch a sweep is gathering for a coin over several transactions,
/// while it does (`batch_id`; none once it is ready).
pub fn forming_key(coin: &Coin) -> Item {
    key(format!("COIN#{coin}"), "FORMING")
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

/// The changes that record a coin's shards grown to `count` at `at`, and
/// `high`, the most it has had.
pub fn shards_grown(count: u32, high: u32, at: OffsetDateTime) -> Changes {
    Changes::new().set("count", n_int(count)).set("grown_ms", ms(at)).set("high", n_int(high.max(count)))
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

/// Where a batch's orders are in the members index: one partition per pool
/// it closed, or its own for an order bought alone.
pub fn members_partitions(batch: &Batch) -> Vec<String> {
    if batch.pools.is_empty() {
        return vec![own_members_partition(batch.id)];
    }
    batch.pools.iter().map(|pool| pool_members_partition(&batch.coin, *pool)).collect()
}

pub(super) fn pool_members_partition(coin: &Coin, pool: PoolId) -> String {
    match pool.shard {
        0 => format!("MEMBERS#POOL#{coin}#{}", pool.seq),
        shard => format!("MEMBERS#POOL#{coin}#{shard}#{}", pool.seq),
    }
}

fn own_members_partition(batch: BatchId) -> String {
    format!("MEMBERS#BATCH#{batch}")
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

pub fn pool_of(item: &Item) -> Result<PoolState, ItemError> {
    Ok(PoolState {
        seq: get_u64(item, "seq")?,
        usd: usd(item, "usd")?,
        qty: get_decimal(item, "qty")?,
        count: u32_of(item, "count")?,
    })
}

/// The order item. `formed` is the batch this order formed, if any: an
/// attempt whose reply was lost can tell from it what it did.
/// When an order was canceled, on the order: its presence is the order's
/// `canceled`.
pub const CANCELED_AT: &str = "canceled_at";

pub fn order_item(order: &Order, formed: Option<BatchId>) -> Item {
    let mut item = order_key(&order.user, order.id);
    item.insert("order_id".into(), s(order.id.to_string()));
    item.insert("user_id".into(), s(order.user.as_str()));
    item.insert("coin".into(), s(order.coin.as_str()));
    item.insert("amount".into(), n(order.amount.value()));
    item.insert("price".into(), n(order.price.value()));
    item.insert("cost".into(), n(order.cost.value()));
    item.insert("created_at".into(), timestamp(order.created_at));
    let members = match order.membership {
        Membership::Own(batch) => {
            item.insert("batch_id".into(), s(batch.to_string()));
            own_members_partition(batch)
        }
        Membership::Pool { shard, seq } => {
            item.insert("seq".into(), n_int(seq));
            if shard != 0 {
                item.insert("shard".into(), n_int(shard));
            }
            pool_members_partition(&order.coin, PoolId { shard, seq })
        }
    };
    item.insert(MEMBERS_PK.into(), s(members));
    item.insert(MEMBERS_SK.into(), s(format!("ORDER#{}", order.id)));
    if let Some(formed) = formed {
        item.insert("formed_batch_id".into(), s(formed.to_string()));
    }
    item
}

pub fn order_of(item: &Item) -> Result<(Order, Option<BatchId>), ItemError> {
    let batch_id = |attribute: &str| -> Result<BatchId, ItemError> {
        BatchId::parse(get_s(item, attribute)?).map_err(|_| invalid(attribute))
    };
    let membership = match opt(item, "batch_id", |_, a| batch_id(a))? {
        Some(batch) => Membership::Own(batch),
        None => Membership::Pool { shard: counter(item, "shard")?, seq: get_u64(item, "seq")? },
    };
    let order = Order {
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
    };
    let formed = opt(item, "formed_batch_id", |_, a| batch_id(a))?;
    Ok((order, formed))
}

pub fn batch_item(batch: &Batch) -> Item {
    let mut item = batch_key(batch.id);
    item.insert("batch_id".into(), s(batch.id.to_string()));
    item.insert("coin".into(), s(batch.coin.as_str()));
    // One pool of shard 0 (a pool that never grew) as before: its `seq`.
    match batch.pools.as_slice() {
        [] => {}
        [PoolId { shard: 0, seq }] => {
            item.insert("seq".into(), n_int(*seq));
        }
        pools => {
            item.insert("pools".into(), s(pools_text(pools)));
        }
    }
    item.insert("qty".into(), n(batch.qty.value()));
    item.insert("usd".into(), n(batch.usd.value()));
    item.insert("count".into(), n_int(batch.count));
    item.insert("status".into(), s(batch.status.as_str()));
    item.insert("attempts".into(), n_int(batch.attempts));
    item.insert("resends".into(), n_int(batch.resends));
    item.insert("refunded".into(), n_int(batch.refunded));
    for (attribute, at) in [
        ("lease_until_ms", batch.lease_until),
        ("attempted_at_ms", batch.attempted_at),
        ("resent_at_ms", batch.resent_at),
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
    item.insert("created_at".into(), timestamp(batch.created_at));
    if !batch.status.is_final() {
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
    Ok(opt(item, "seq", get_u64)?.map(|seq| PoolId { shard: 0, seq }).into_iter().collect())
}

/// When a refused batch's refunds may start (see [`Batch::refunds_from`]).
pub const REFUNDS_FROM: &str = "refunds_from_ms";

pub fn batch_of(item: &Item) -> Result<Batch, ItemError> {
    Ok(Batch {
        id: BatchId::parse(get_s(item, "batch_id")?).map_err(|_| invalid("batch_id"))?,
        coin: Coin::from_trusted(get_s(item, "coin")?),
        pools: pools_of(item)?,
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
            membership: Membership::Pool { shard: 0, seq: 7 },
            refunded: false,
            canceled: false,
            created_at: now,
        };
        let formed = Some(BatchId::generate());
        assert_eq!(order_of(&order_item(&order, formed)).unwrap(), (order.clone(), formed));

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

        let merged = Batch { pools: vec![PoolId { shard: 3, seq: 2 }, PoolId { shard: 0, seq: 9 }], ..refused };
        assert_eq!(batch_of(&batch_item(&merged)).unwrap(), merged);
        let sharded = Order { membership: Membership::Pool { shard: 5, seq: 1 }, ..order };
        assert_eq!(order_of(&order_item(&sharded, None)).unwrap().0, sharded);
        assert_eq!(parse_shard_partition("COIN#ABAN#12"), Some((Coin::from_trusted("ABAN"), 12)));
        assert_eq!(parse_shard_partition("COIN#ABAN"), Some((Coin::from_trusted("ABAN"), 0)));
    }
}
