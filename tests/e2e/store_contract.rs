//! The table and store contract suites on DynamoDB Local and ministack
//! (the embedded table runs them in the testkit crate). Every store
//! instance a case asks for is another process on the same table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use e2e_tests::emulators::{Emulator, unique_name};
use shared::adapters::dynamodb::schema;
use shared::adapters::dynamodb::table::Table;
use shared::adapters::dynamodb::table::sdk::SdkTable;
use testkit::store_contract::Stores;

async fn fresh_table(emulator: Emulator) -> (aws_sdk_dynamodb::Client, String) {
    let client = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    let name = unique_name("contract");
    schema::ensure_table(&client, &name).await.unwrap();
    (client, name)
}

async fn fresh_stores(emulator: Emulator) -> Stores {
    let (client, name) = fresh_table(emulator).await;
    Stores::new(Arc::new(SdkTable::new(client, name)))
}

async fn fresh_sdk_table(emulator: Emulator) -> Arc<dyn Table> {
    let (client, name) = fresh_table(emulator).await;
    Arc::new(SdkTable::new(client, name))
}

mod dynamodb_local {
    use super::*;

    mod table {
        use super::*;
        testkit::table_contract_tests!(|| fresh_sdk_table(Emulator::DynamoDbLocal));
    }

    mod store {
        use super::*;
        testkit::store_contract_tests!(|| fresh_stores(Emulator::DynamoDbLocal));
    }
}

mod ministack {
    use super::*;

    mod table {
        use super::*;
        testkit::table_contract_tests!(|| fresh_sdk_table(Emulator::Ministack));
    }

    mod store {
        use super::*;
        testkit::store_contract_tests!(|| fresh_stores(Emulator::Ministack));
    }
}
