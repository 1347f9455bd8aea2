//! The table contract: the DynamoDB semantics the store relies on, run on
//! the in-memory table and on DynamoDB Local and ministack, so that the
//! embedded table is known to behave as the real ones do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use shared::adapters::dynamodb::item::{self, Item, key};
use shared::adapters::dynamodb::table::{Changes, Cond, Query, Reason, Table, TableError, Transacted, Write};

fn n(text: &str) -> AttributeValue {
    AttributeValue::N(text.to_owned())
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn with(mut item: Item, attributes: &[(&str, AttributeValue)]) -> Item {
    for (name, value) in attributes {
        item.insert((*name).to_owned(), value.clone());
    }
    item
}

fn number(item: &Item, name: &str) -> rust_decimal::Decimal {
    item::get_decimal(item, name).unwrap()
}

pub async fn conditional_writes_return_the_item_as_it_was(table: Arc<dyn Table>) {
    let k = key("T#1".into(), "A");
    let first = with(k.clone(), &[("v", n("1"))]);
    assert_eq!(table.put(first.clone(), Some(Cond::not_exists("PK"))).await.unwrap(), Ok(()));
    let again = table.put(with(k.clone(), &[("v", n("2"))]), Some(Cond::not_exists("PK"))).await.unwrap();
    let old = again.unwrap_err().expect("the old item");
    assert_eq!(number(&old, "v"), 1.into());

    let failed = table.update(k.clone(), Changes::new().add("v", n("1")), Some(Cond::eq("v", n("5")))).await.unwrap();
    assert_eq!(number(&failed.unwrap_err().unwrap(), "v"), 1.into());
    let missing = table.update(key("T#9".into(), "A"), Changes::new().add("v", n("1")), Some(Cond::exists("PK"))).await;
    assert_eq!(missing.unwrap(), Err(None), "a missing item has no old image");
    assert_eq!(table.get(key("T#9".into(), "A")).await.unwrap(), None, "a failed update created the item");
}

pub async fn updates_set_add_remove_and_create_missing_items(table: Arc<dyn Table>) {
    let k = key("T#2".into(), "A");
    let created = table
        .update(k.clone(), Changes::new().add("usd", n("9.5")).add("count", n("1")).set("s", s("x")), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((number(&created, "usd"), number(&created, "count")), ("9.5".parse().unwrap(), 1.into()));
    let after = table
        .update(k.clone(), Changes::new().add("usd", n("-0.50")).remove("s"), Some(Cond::ge("usd", n("0.5"))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(number(&after, "usd"), 9.into());
    assert!(!after.contains_key("s"));
    assert_eq!(table.get(k).await.unwrap(), Some(after));
}

pub async fn numbers_compare_as_numbers_whatever_their_text(table: Arc<dyn Table>) {
    let k = key("T#3".into(), "A");
    table.put(with(k.clone(), &[("usd", n("12.50")), ("seq", n("10"))]), None).await.unwrap().unwrap();
    for (cond, holds) in [
        (Cond::eq("usd", n("12.5")), true),
        (Cond::eq("usd", n("12.500000")), true),
        (Cond::lt("usd", n("12.5")), false),
        (Cond::le("usd", n("12.5")), true),
        (Cond::lt("seq", n("9.5")), false),
        (Cond::ge("seq", n("9.99999999")), true),
        (Cond::eq("missing", n("0")), false),
        (Cond::eq("usd", n("12.5")).and(Cond::eq("seq", n("11"))), false),
        (Cond::eq("usd", n("1")).or(Cond::eq("seq", n("10"))), true),
    ] {
        let result = table.update(k.clone(), Changes::new().add("touched", n("1")), Some(cond.clone())).await.unwrap();
        assert_eq!(result.is_ok(), holds, "{cond:?}");
    }
}

pub async fn a_transaction_is_all_or_nothing_with_a_reason_per_write(table: Arc<dyn Table>) {
    let account = key("T#4".into(), "ACCOUNT");
    table.put(with(account.clone(), &[("balance", n("5"))]), None).await.unwrap().unwrap();
    let order = key("T#4".into(), "ORDER#1");
    let writes = vec![
        Write::Put { item: with(order.clone(), &[("cost", n("6"))]), condition: Some(Cond::not_exists("PK")) },
        Write::Update {
            key: account.clone(),
            changes: Changes::new().add("balance", n("-6")),
            condition: Some(Cond::ge("balance", n("6"))),
        },
    ];
    match table.transact(writes.clone(), &ulid::Ulid::new().to_string()).await.unwrap() {
        Transacted::Cancelled(reasons) => {
            assert_eq!(reasons.len(), 2);
            assert_eq!(reasons[0], Reason::None);
            let Reason::ConditionFailed(Some(old)) = &reasons[1] else { panic!("{reasons:?}") };
            assert_eq!(number(old, "balance"), 5.into());
        }
        other => panic!("committed without the funds: {other:?}"),
    }
    assert_eq!(table.get(order.clone()).await.unwrap(), None, "half a transaction was written");

    table.update(account.clone(), Changes::new().add("balance", n("1")), None).await.unwrap().unwrap();
    assert_eq!(table.transact(writes, &ulid::Ulid::new().to_string()).await.unwrap(), Transacted::Committed);
    assert_eq!(number(&table.get(account).await.unwrap().unwrap(), "balance"), 0.into());
    assert!(table.get(order).await.unwrap().is_some());
}

/// A transaction resent after it committed (its reply was lost) is answered
/// as the first send was, from its client request token, and applied once:
/// what DynamoDB documents, and what the store's resends rely on.
pub async fn a_resent_committed_transaction_is_never_applied_twice(table: Arc<dyn Table>) {
    let counter = key("T#5".into(), "COUNTER");
    let marker = key("T#5".into(), "MARKER");
    let writes = vec![
        Write::Put { item: marker.clone(), condition: Some(Cond::not_exists("PK")) },
        Write::Update { key: counter.clone(), changes: Changes::new().add("n", n("1")), condition: None },
    ];
    let token = ulid::Ulid::new().to_string();
    assert_eq!(table.transact(writes.clone(), &token).await.unwrap(), Transacted::Committed);
    assert_eq!(table.transact(writes, &token).await.unwrap(), Transacted::Committed);
    assert_eq!(number(&table.get(counter).await.unwrap().unwrap(), "n"), 1.into(), "applied twice");
}

/// DynamoDB refuses a transaction with two writes on one item
/// (`ValidationException`); DynamoDB Local instead evaluates them in turn
/// and cancels on the second's condition. The store never sends one; what
/// it may rely on is that such a transaction never commits.
pub async fn two_writes_on_one_item_in_a_transaction_are_refused(table: Arc<dyn Table>) {
    let k = key("T#6".into(), "A");
    let writes = vec![
        Write::Update { key: k.clone(), changes: Changes::new().add("n", n("1")), condition: None },
        Write::Check { key: k.clone(), condition: Cond::not_exists("PK") },
    ];
    let result = table.transact(writes, &ulid::Ulid::new().to_string()).await;
    assert!(matches!(result, Err(TableError::Failed { .. }) | Ok(Transacted::Cancelled(_))), "{result:?}");
    assert_eq!(table.get(k).await.unwrap(), None);
}

pub async fn queries_read_a_partition_or_an_index_page_by_page(table: Arc<dyn Table>) {
    for i in 0..7 {
        let item = with(
            key("T#7".into(), format!("ORDER#{i:02}")),
            &[
                (item::OPEN_PK, s("OPEN#X")),
                (item::OPEN_SK, s(&format!("ORDER#{i:02}"))),
                ("odd", AttributeValue::Bool(i % 2 == 1)),
            ],
        );
        table.put(item, None).await.unwrap().unwrap();
    }
    table.put(key("T#7".into(), "ACCOUNT"), None).await.unwrap().unwrap();
    // A sparse index: an item without the index's keys is not in it.
    table.put(with(key("T#7".into(), "ORDER#99"), &[(item::OPEN_PK, s("OPEN#X"))]), None).await.unwrap().unwrap();

    let sks =
        |page: &[Item]| -> Vec<String> { page.iter().map(|i| item::get_s(i, item::SK).unwrap().to_owned()).collect() };
    for index in [None, Some(item::OPEN_BATCHES_INDEX)] {
        let partition = match index {
            None => (item::PK, "T#7".to_owned()),
            Some(_) => (item::OPEN_PK, "OPEN#X".to_owned()),
        };
        let prefix = index.is_none().then(|| (item::SK, "ORDER#0".to_owned()));
        let mut seen = Vec::new();
        let mut start = None;
        loop {
            let query = Query {
                index,
                partition: partition.clone(),
                sort_prefix: prefix.clone(),
                limit: Some(3),
                start,
                ..Query::default()
            };
            let page = table.query(query).await.unwrap();
            assert!(page.items.len() <= 3);
            seen.extend(sks(&page.items));
            start = page.next;
            if start.is_none() {
                break;
            }
        }
        let expected: Vec<String> = (0..7).map(|i| format!("ORDER#{i:02}")).collect();
        assert_eq!(seen, expected, "index {index:?}");

        let newest = table
            .query(Query {
                index,
                partition: partition.clone(),
                sort_prefix: prefix.clone(),
                newest_first: true,
                limit: Some(2),
                ..Query::default()
            })
            .await
            .unwrap();
        assert_eq!(sks(&newest.items), vec!["ORDER#06", "ORDER#05"]);
    }
    let odd = table
        .query(Query {
            partition: (item::PK, "T#7".to_owned()),
            sort_prefix: Some((item::SK, "ORDER#0".to_owned())),
            filter: Some(Cond::eq("odd", AttributeValue::Bool(true))),
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(sks(&odd.items), vec!["ORDER#01", "ORDER#03", "ORDER#05"]);
}

/// A pool's members are attributes named after their orders (`m:{id}`):
/// set, removed and checked by name; a pool is closed by putting it back
/// whole on the condition of its version. The records of closed pools are
/// found by a range of their sort keys, filtered on a member's attribute,
/// either way round.
pub async fn attributes_named_at_run_time_and_sort_key_ranges(table: Arc<dyn Table>) {
    let pool = key("T#10".into(), "POOL");
    let (alice, bob) = ("m:01KBFJ8PYV0Q5N3E4W7Z2X6C9A".to_owned(), "m:01KBFJ8PYV0Q5N3E4W7Z2X6C9B".to_owned());
    let join = |member: &str| {
        Changes::new().add("version", n("1")).add("count", n("1")).set(member.to_owned(), s("1764900000000 a b"))
    };
    table.update(pool.clone(), join(&alice), Some(Cond::not_exists("PK"))).await.unwrap().unwrap();
    let joined = table.update(pool.clone(), join(&bob), Some(Cond::exists("PK"))).await.unwrap().unwrap();
    assert_eq!(joined[&bob], s("1764900000000 a b"));
    // A cancel: out, if it is still in.
    let out = Changes::new().remove(alice.clone()).add("version", n("1")).add("count", n("-1"));
    table.update(pool.clone(), out.clone(), Some(Cond::exists(alice.clone()))).await.unwrap().unwrap();
    let again = table.update(pool.clone(), out, Some(Cond::exists(alice.clone()))).await.unwrap();
    assert!(again.unwrap_err().is_some_and(|now| !now.contains_key(&alice) && now.contains_key(&bob)));
    // A close: the pool back whole, empty, on its version.
    let emptied = with(pool.clone(), &[("version", n("4")), ("count", n("0"))]);
    let stale = table.put(emptied.clone(), Some(Cond::eq("version", n("2")))).await.unwrap();
    assert!(stale.is_err(), "a close on an old version");
    table.put(emptied, Some(Cond::eq("version", n("3")))).await.unwrap().unwrap();
    let now = table.get(pool).await.unwrap().unwrap();
    assert!(!now.contains_key(&bob) && number(&now, "version") == 4.into());

    for (at, member) in [("000000000000100", &alice), ("000000000000200", &bob), ("000000000000300", &alice)] {
        let record = with(key("T#10".into(), format!("CLOSED#{at}#1")), &[(member.as_str(), s("x"))]);
        table.put(record, None).await.unwrap().unwrap();
    }
    let find = |from: &str, to: &str, newest_first: bool, member: &String| Query {
        partition: (item::PK, "T#10".to_owned()),
        sort_between: Some((item::SK, from.to_owned(), to.to_owned())),
        filter: Some(Cond::exists(member.clone())),
        newest_first,
        ..Query::default()
    };
    let sks = |page: Vec<Item>| -> Vec<String> {
        page.iter().map(|i| item::get_s(i, item::SK).unwrap().to_owned()).collect()
    };
    let forward = table.query(find("CLOSED#000000000000150", "CLOSED#~", false, &alice)).await.unwrap();
    assert_eq!(sks(forward.items), vec!["CLOSED#000000000000300#1"]);
    let backward = table.query(find("CLOSED#", "CLOSED#000000000000250", true, &bob)).await.unwrap();
    assert_eq!(sks(backward.items), vec!["CLOSED#000000000000200#1"]);
    let none = table.query(find("CLOSED#000000000000301", "CLOSED#~", false, &bob)).await.unwrap();
    assert!(none.items.is_empty());
}

/// A page resumes after where its start key sorts, whether or not an item
/// has that key: a cursor whose order went away, or one a client made up,
/// goes on from there rather than from the start.
pub async fn a_query_resumes_after_a_start_key_no_item_has(table: Arc<dyn Table>) {
    for sk in ["ORDER#01", "ORDER#03", "ORDER#05"] {
        table.put(key("T#8".into(), sk.to_owned()), None).await.unwrap().unwrap();
    }
    let sks = |page: Vec<Item>| -> Vec<String> {
        page.iter().map(|i| item::get_s(i, item::SK).unwrap().to_owned()).collect()
    };
    for (newest_first, expected) in [(false, vec!["ORDER#05"]), (true, vec!["ORDER#03", "ORDER#01"])] {
        let query = Query {
            partition: (item::PK, "T#8".to_owned()),
            newest_first,
            start: Some(key("T#8".into(), "ORDER#04".to_owned())),
            ..Query::default()
        };
        assert_eq!(sks(table.query(query).await.unwrap().items), expected, "newest first: {newest_first}");
    }
}

pub async fn a_batch_get_reads_the_items_that_exist(table: Arc<dyn Table>) {
    for i in 0..5 {
        table.put(with(key(format!("T#9#{i}"), "A"), &[("n", n(&i.to_string()))]), None).await.unwrap().unwrap();
    }
    let keys: Vec<Item> = (0..7).map(|i| key(format!("T#9#{i}"), "A")).collect();
    let mut found: Vec<rust_decimal::Decimal> =
        table.get_many(keys).await.unwrap().iter().map(|i| number(i, "n")).collect();
    found.sort();
    assert_eq!(found, (0..5).map(rust_decimal::Decimal::from).collect::<Vec<_>>());
}

pub async fn a_scan_reads_every_item(table: Arc<dyn Table>) {
    for i in 0..25 {
        table.put(key(format!("T#8#{i}"), "A"), None).await.unwrap().unwrap();
    }
    let mut count = 0;
    let mut start = None;
    loop {
        let page = table.scan(start).await.unwrap();
        count += page.items.len();
        start = page.next;
        if start.is_none() {
            break;
        }
    }
    assert_eq!(count, 25);
}

/// The open-batches index projects keys only: a query of it answers each
/// entry's table and index keys, nothing else (the reconciler reads the
/// batches themselves).
pub async fn an_index_of_keys_answers_keys_only(table: Arc<dyn Table>) {
    let entry = with(
        key("BATCH#T7".to_owned(), "BATCH"),
        &[(item::OPEN_PK, s("OPEN#T7")), (item::OPEN_SK, s("2026#T7")), ("status", s("READY")), ("usd", n("12"))],
    );
    table.put(entry, None).await.unwrap().unwrap();
    let query = Query {
        index: Some(item::OPEN_BATCHES_INDEX),
        partition: (item::OPEN_PK, "OPEN#T7".to_owned()),
        ..Query::default()
    };
    let mut found = Vec::new();
    // The index is eventually consistent on DynamoDB: wait for the entry.
    for _ in 0..50 {
        found = table.query(query.clone()).await.unwrap().items;
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(found.len(), 1);
    let mut names: Vec<&str> = found[0].keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, vec![item::OPEN_PK, item::OPEN_SK, item::PK, item::SK]);
}

/// Generates one `#[tokio::test]` per case for a factory of fresh tables.
#[macro_export]
macro_rules! table_contract_tests {
    ($factory:expr) => {
        $crate::table_contract_tests!(@cases $factory;
            conditional_writes_return_the_item_as_it_was,
            updates_set_add_remove_and_create_missing_items,
            numbers_compare_as_numbers_whatever_their_text,
            a_transaction_is_all_or_nothing_with_a_reason_per_write,
            a_resent_committed_transaction_is_never_applied_twice,
            two_writes_on_one_item_in_a_transaction_are_refused,
            queries_read_a_partition_or_an_index_page_by_page,
            attributes_named_at_run_time_and_sort_key_ranges,
            a_query_resumes_after_a_start_key_no_item_has,
            a_batch_get_reads_the_items_that_exist,
            a_scan_reads_every_item,
            an_index_of_keys_answers_keys_only,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let table = ($factory)().await;
                $crate::table_contract::$case(table).await;
            }
        )*
    };
}
