//! What a request costs in capacity units, by DynamoDB's published rules:
//! item sizes (*Item sizes and formats*), write and read units
//! (*DynamoDB throughput capacity*: one write unit per 1 KB written, one
//! read unit per 4 KB read strongly consistent, half that eventually
//! consistent, twice for transactions), and the writes a table write makes
//! to each global secondary index (*Global secondary indexes*, "Provisioned
//! throughput considerations": a new entry is one write, a removed entry
//! one, a changed key two, a changed projected attribute one; nothing when
//! neither changes).

use aws_sdk_dynamodb::types::AttributeValue;
use shared::adapters::dynamodb::schema::{IndexSchema, Projection, TABLE_SCHEMA};
use shared::adapters::dynamodb::table::Item;

const KB: u64 = 1024;

/// The size DynamoDB bills for one value.
fn value_size(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(text) => text.len() as u64,
        // "approximately 1 byte per two significant digits, plus 1 byte".
        AttributeValue::N(text) => {
            let digits = text.trim_start_matches('-').chars().filter(char::is_ascii_digit).count() as u64;
            digits.div_ceil(2) + 1
        }
        AttributeValue::B(bytes) => bytes.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(set) => set.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| value_size(&AttributeValue::N(n.clone()))).sum(),
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<u64>(),
        AttributeValue::M(map) => 3 + map.iter().map(|(k, v)| 1 + k.len() as u64 + value_size(v)).sum::<u64>(),
        _ => 1,
    }
}

/// An item's size: each attribute's name and value.
pub fn item_size(item: &Item) -> u64 {
    item.iter().map(|(name, value)| name.len() as u64 + value_size(value)).sum()
}

/// Write units of a write whose item was `before` and is `after`: "the
/// larger of the item size before and after", per started kilobyte, at
/// least one; twice in a transaction.
pub fn write_units(before: Option<&Item>, after: Option<&Item>, transactional: bool) -> u64 {
    let size = before.map_or(0, item_size).max(after.map_or(0, item_size));
    size.div_ceil(KB).max(1) * if transactional { 2 } else { 1 }
}

/// How a read is made, for its price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    Strong,
    Eventual,
}

/// Read units, in halves (an eventually consistent read of 4 KB is one
/// half): per started 4 KB of `bytes`, at least one unit's worth.
pub fn read_half_units(bytes: u64, kind: ReadKind) -> u64 {
    let blocks = bytes.div_ceil(4 * KB).max(1);
    match kind {
        ReadKind::Strong => blocks * 2,
        ReadKind::Eventual => blocks,
    }
}

/// One write to an index partition that a table write causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexWrite {
    /// `{index}#{partition key}`: the index partition that takes it.
    pub partition: String,
    pub units: u64,
}

fn entry<'a>(index: &IndexSchema, item: Option<&'a Item>) -> Option<(&'a str, &'a str)> {
    let item = item?;
    let pk = item.get(index.pk)?.as_s().ok()?;
    let sk = item.get(index.sk)?.as_s().ok()?;
    Some((pk.as_str(), sk.as_str()))
}

fn projected_size(index: &IndexSchema, item: &Item) -> u64 {
    match index.projection {
        Projection::All => item_size(item),
        Projection::KeysOnly => item
            .iter()
            .filter(|(name, _)| ["PK", "SK", index.pk, index.sk].contains(&name.as_str()))
            .map(|(name, value)| name.len() as u64 + value_size(value))
            .sum(),
    }
}

fn projected_changed(index: &IndexSchema, before: &Item, after: &Item) -> bool {
    match index.projection {
        Projection::All => before != after,
        Projection::KeysOnly => false,
    }
}

/// The index writes of a table write from `before` to `after`.
pub fn index_writes(before: Option<&Item>, after: Option<&Item>) -> Vec<IndexWrite> {
    let mut writes = Vec::new();
    for index in TABLE_SCHEMA.indexes {
        let mut write = |pk: &str, item: &Item| {
            let units = projected_size(index, item).div_ceil(KB).max(1);
            writes.push(IndexWrite { partition: format!("{}#{pk}", index.name), units });
        };
        match (entry(index, before), entry(index, after)) {
            (None, None) => {}
            (Some((pk, _)), None) => write(pk, before.unwrap_or_else(|| unreachable!("an entry has an item"))),
            (None, Some((pk, _))) => write(pk, after.unwrap_or_else(|| unreachable!("an entry has an item"))),
            (Some(old), Some(new)) => {
                let (Some(before), Some(after)) = (before, after) else { unreachable!("entries have items") };
                if old != new {
                    write(old.0, before);
                    write(new.0, after);
                } else if projected_changed(index, before, after) {
                    write(new.0, after);
                }
            }
        }
    }
    writes
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<HashMap<_, _>>()
    }

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    #[test]
    fn sizes_and_units_follow_the_published_rules() {
        let small = item(&[("PK", s("ACCOUNT#alice")), ("n", AttributeValue::N("12345".into()))]);
        assert_eq!(item_size(&small), 2 + 13 + 1 + 4);
        assert_eq!(write_units(None, Some(&small), false), 1);
        assert_eq!(write_units(None, Some(&small), true), 2);
        let big = item(&[("PK", s(&"x".repeat(1500)))]);
        assert_eq!(write_units(Some(&big), Some(&small), false), 2, "the larger of before and after");
        assert_eq!(read_half_units(100, ReadKind::Strong), 2);
        assert_eq!(read_half_units(100, ReadKind::Eventual), 1);
        assert_eq!(read_half_units(9000, ReadKind::Eventual), 3);
    }

    #[test]
    fn an_index_is_written_when_its_entry_appears_moves_or_goes() {
        let open =
            |sk: &str| item(&[("PK", s("BATCH#1")), ("SK", s("BATCH")), ("GSI1PK", s("OPEN#3")), ("GSI1SK", s(sk))]);
        let closed = item(&[("PK", s("BATCH#1")), ("SK", s("BATCH"))]);
        let put = index_writes(None, Some(&open("a")));
        assert_eq!(put.len(), 1);
        assert!(put[0].partition.ends_with("#OPEN#3"), "{put:?}");
        assert_eq!(index_writes(Some(&open("a")), Some(&closed)).len(), 1, "removed");
        assert_eq!(index_writes(Some(&open("a")), Some(&open("b"))).len(), 2, "moved");
        assert!(index_writes(Some(&closed), Some(&closed)).is_empty());
    }
}
