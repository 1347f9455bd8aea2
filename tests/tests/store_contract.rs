//! The store contract suite on the DynamoDB adapter, on both emulators
//! (the embedded store runs it in `shared`'s unit tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use e2e_tests::emulators::{Emulator, unique_name};
use shared::adapters::dynamodb::{DynamoStore, table};
use shared::ports::Store;

async fn fresh_store(emulator: Emulator) -> Arc<dyn Store> {
    let client = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    let name = unique_name("contract");
    table::ensure_table(&client, &name).await.unwrap();
    Arc::new(DynamoStore::new(client, name))
}

mod dynamodb_local {
    use super::*;

    shared::store_contract_tests!(|| fresh_store(Emulator::DynamoDbLocal));
}

mod ministack {
    use super::*;

    shared::store_contract_tests!(|| fresh_store(Emulator::Ministack));
}
