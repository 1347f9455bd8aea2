//! The table's definition, the same as `template.yaml`'s, and creating it
//! when it is missing (`orders-local --backend aws`, tests). The in-memory
//! table takes its keys and indexes from the same [`TABLE_SCHEMA`].

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, ProjectionType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};

use super::item::{OPEN_BATCHES_INDEX, OPEN_PK, OPEN_SK, PK, SK};
use crate::ports::InfraError;

/// Idempotency records expire through this attribute (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// What a global secondary index copies of each item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    All,
    /// The table's and the index's keys: an update that changes neither
    /// writes nothing to the index.
    KeysOnly,
}

impl Projection {
    pub fn as_type(self) -> ProjectionType {
        match self {
            Projection::All => ProjectionType::All,
            Projection::KeysOnly => ProjectionType::KeysOnly,
        }
    }
}

/// A global secondary index: its keys (strings) and what it projects.
#[derive(Debug)]
pub struct IndexSchema {
    pub name: &'static str,
    pub pk: &'static str,
    pub sk: &'static str,
    pub projection: Projection,
}

/// The table's keys (strings) and its indexes.
#[derive(Debug)]
pub struct KeySchema {
    pub pk: &'static str,
    pub sk: &'static str,
    pub indexes: &'static [IndexSchema],
}

pub static TABLE_SCHEMA: KeySchema = KeySchema {
    pk: PK,
    sk: SK,
    indexes: &[
        // Sparse: batches not yet settled or refunded (the reconciler), under
        // 64 keys. Keys only: settlement's writes change no key, so they
        // write nothing to the index.
        IndexSchema { name: OPEN_BATCHES_INDEX, pk: OPEN_PK, sk: OPEN_SK, projection: Projection::KeysOnly },
    ],
};

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, InfraError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| InfraError::new("table definition", e))
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, InfraError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| InfraError::new("table definition", e))
}

fn index(definition: &IndexSchema) -> Result<GlobalSecondaryIndex, InfraError> {
    let &IndexSchema { name, pk, sk, projection } = definition;
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(pk, KeyType::Hash)?)
        .key_schema(key(sk, KeyType::Range)?)
        .projection(aws_sdk_dynamodb::types::Projection::builder().projection_type(projection.as_type()).build())
        .build()
        .map_err(|e| InfraError::new("table definition", e))
}

/// Creates the table if it does not exist and waits until it is active.
pub async fn ensure_table(client: &Client, table: &str) -> Result<(), InfraError> {
    match client.describe_table().table_name(table).send().await {
        Ok(_) => return wait_active(client, table).await,
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(error) => return Err(InfraError::new("describe table", error)),
    }
    let schema = &TABLE_SCHEMA;
    let mut create = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(schema.pk, KeyType::Hash)?)
        .key_schema(key(schema.sk, KeyType::Range)?)
        .attribute_definitions(string_attribute(schema.pk)?)
        .attribute_definitions(string_attribute(schema.sk)?);
    for definition in schema.indexes {
        create = create
            .global_secondary_indexes(index(definition)?)
            .attribute_definitions(string_attribute(definition.pk)?)
            .attribute_definitions(string_attribute(definition.sk)?);
    }
    match create.send().await {
        Ok(_) => {}
        // Another process created it first.
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(error) => return Err(InfraError::new("create table", error)),
    }
    wait_active(client, table).await?;
    let ttl = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(TTL_ATTRIBUTE)
        .build()
        .map_err(|e| InfraError::new("table definition", e))?;
    if let Err(error) = client.update_time_to_live().table_name(table).time_to_live_specification(ttl).send().await {
        // Emulators may not implement TTL; records then simply stay.
        tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&error), "could not enable TTL");
    }
    Ok(())
}

async fn wait_active(client: &Client, table: &str) -> Result<(), InfraError> {
    for _ in 0..300 {
        let description =
            client.describe_table().table_name(table).send().await.map_err(|e| InfraError::new("describe table", e))?;
        if description.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(InfraError::new("create table", format!("table {table} did not become active in 30 s")))
}
