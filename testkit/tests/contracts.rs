//! The contract suites on the embedded table (the emulators run them in
//! the e2e-tests crate).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::dynamodb::table::Table;
use shared::adapters::dynamodb::table::memory::MemoryTable;
use shared::ports::Store;
use testkit::store_contract::Stores;

mod table {
    use super::*;

    testkit::table_contract_tests!(|| async { Arc::new(MemoryTable::new()) as Arc<dyn Table> });
}

mod store {
    use super::*;

    testkit::store_contract_tests!(|| async {
        let table: Arc<dyn Table> = Arc::new(MemoryTable::new());
        Stores::new(move || Arc::new(DynamoStore::on(Arc::clone(&table))) as Arc<dyn Store>)
    });
}
