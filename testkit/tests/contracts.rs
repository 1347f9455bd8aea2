//! The contract suites on the embedded table (the emulators run them in
//! the e2e-tests crate).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::dynamodb::table::Table;
use shared::adapters::dynamodb::table::memory::MemoryTable;
use testkit::store_contract::Stores;

mod table {
    use super::*;

    testkit::table_contract_tests!(|| async { Arc::new(MemoryTable::new()) as Arc<dyn Table> });
}

mod store {
    use super::*;

    testkit::store_contract_tests!(|| async { Stores::new(Arc::new(MemoryTable::new())) });
}

/// A retry with a key whose order exists, while reads fail: the client is
/// told the outcome is unknown (retry with the key), never "nothing changed".
#[tokio::test]
async fn a_replay_that_cannot_be_read_is_an_unknown_outcome() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use shared::domain::{IdempotencyKey, OrderId};
    use shared::ports::{Accounts, Orders, PlaceError};
    use testkit::faults::{Fault, FaultyTable, Operation};
    use testkit::store_contract::{order, usd, user};

    let reads_fail = Arc::new(AtomicBool::new(false));
    let plan = {
        let reads_fail = Arc::clone(&reads_fail);
        move |operation: Operation| match operation {
            Operation::Get if reads_fail.load(Ordering::SeqCst) => Fault::FailBefore,
            _ => Fault::None,
        }
    };
    let table = Arc::new(FaultyTable::new(Arc::new(MemoryTable::new()), Arc::new(plan)));
    let store = DynamoStore::on(table);
    store.open_account(&user("alice"), usd("100")).await.unwrap();
    let mut new = order("alice", "3");
    new.idempotency_key = Some(IdempotencyKey::parse("k").unwrap());
    store.place_order(new.clone(), usd("10")).await.unwrap();

    reads_fail.store(true, Ordering::SeqCst);
    let mut retry = new.clone();
    retry.id = OrderId::generate();
    let result = store.place_order(retry, usd("10")).await;

    assert!(matches!(result, Err(PlaceError::OutcomeUnknown(_))), "{result:?}");
}
