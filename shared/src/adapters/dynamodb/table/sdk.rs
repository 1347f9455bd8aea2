//! The table on DynamoDB, through the AWS SDK.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::expr::Placeholders;
use super::{Changes, Cond, ConditionFailed, Item, Page, Query, Reason, Table, TableError, Transacted, Write};

#[derive(Clone)]
pub struct SdkTable {
    client: Client,
    name: String,
}

impl SdkTable {
    pub fn new(client: Client, name: impl Into<String>) -> SdkTable {
        SdkTable { client, name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// What an SDK failure lets the caller conclude. A service error is an
/// answer: nothing was applied, unless DynamoDB itself failed (5xx). A
/// timeout, a broken connection or an unreadable response leave the
/// outcome open.
fn classify<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> TableError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    // A single write on an item a transaction holds is refused as a whole,
    // like a throttled one: nothing applied, worth trying again later.
    let throttled = matches!(
        error.code(),
        Some(
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TransactionConflictException"
        )
    );
    let ambiguous = match &error {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(service) => service.raw().status().is_server_error(),
        SdkError::DispatchFailure(dispatch) => !dispatch.is_user(),
        _ => true,
    };
    // The whole chain as text: the SDK's errors print only their top line.
    let source = DisplayErrorContext(&error).to_string().into();
    match (throttled, ambiguous) {
        (true, _) => TableError::Throttled { operation, source },
        (false, true) => TableError::Ambiguous { operation, source },
        (false, false) => TableError::Failed { operation, source },
    }
}

fn build_error(operation: &'static str, error: aws_sdk_dynamodb::error::BuildError) -> TableError {
    TableError::Failed { operation, source: Box::new(error) }
}

fn reason(cancelled: &CancellationReason) -> Reason {
    match cancelled.code() {
        None | Some("None") => Reason::None,
        Some("ConditionalCheckFailed") => Reason::ConditionFailed(cancelled.item().cloned()),
        Some("TransactionConflict") => Reason::Conflict,
        Some("ThrottlingError" | "ProvisionedThroughputExceeded") => Reason::Throttled,
        Some(other) => Reason::Other(format!("{other}: {}", cancelled.message().unwrap_or_default())),
    }
}

impl SdkTable {
    fn transact_item(&self, write: Write) -> Result<TransactWriteItem, TableError> {
        let on_failure = ReturnValuesOnConditionCheckFailure::AllOld;
        let mut p = Placeholders::default();
        let built = match write {
            Write::Put { item, condition } => {
                let condition = condition.as_ref().map(|c| p.condition(c));
                let (names, values) = p.into_parts();
                let put = Put::builder()
                    .table_name(&self.name)
                    .set_item(Some(item))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .return_values_on_condition_check_failure(on_failure)
                    .build()
                    .map_err(|e| build_error("build transaction", e))?;
                TransactWriteItem::builder().put(put).build()
            }
            Write::Update { key, changes, condition } => {
                let expression = p.update(&changes);
                let condition = condition.as_ref().map(|c| p.condition(c));
                let (names, values) = p.into_parts();
                let update = Update::builder()
                    .table_name(&self.name)
                    .set_key(Some(key))
                    .update_expression(expression)
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .return_values_on_condition_check_failure(on_failure)
                    .build()
                    .map_err(|e| build_error("build transaction", e))?;
                TransactWriteItem::builder().update(update).build()
            }
            Write::Check { key, condition } => {
                let condition = p.condition(&condition);
                let (names, values) = p.into_parts();
                let check = ConditionCheck::builder()
                    .table_name(&self.name)
                    .set_key(Some(key))
                    .condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .return_values_on_condition_check_failure(on_failure)
                    .build()
                    .map_err(|e| build_error("build transaction", e))?;
                TransactWriteItem::builder().condition_check(check).build()
            }
        };
        Ok(built)
    }
}

#[async_trait]
impl Table for SdkTable {
    async fn get(&self, key: Item) -> Result<Option<Item>, TableError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("get item", e))?;
        Ok(output.item)
    }

    async fn get_many(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        super::read_every_key(keys, |keys| async move {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| build_error("batch get item", e))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(self.name.clone(), request)
                .send()
                .await
                .map_err(|e| classify("batch get item", e))?;
            let found = output.responses.and_then(|mut r| r.remove(&self.name)).unwrap_or_default();
            let left = output
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.name))
                .map(|left| left.keys().to_vec())
                .unwrap_or_default();
            Ok((found, left))
        })
        .await
    }

    async fn put(&self, item: Item, condition: Option<Cond>) -> Result<Result<(), ConditionFailed>, TableError> {
        let mut p = Placeholders::default();
        let condition = condition.as_ref().map(|c| p.condition(c));
        let (names, values) = p.into_parts();
        let result = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(SdkError::ServiceError(error)) if error.err().is_conditional_check_failed_exception() => {
                match error.into_err() {
                    PutItemError::ConditionalCheckFailedException(failed) => Ok(Err(failed.item)),
                    _ => Ok(Err(None)),
                }
            }
            Err(error) => Err(classify("put item", error)),
        }
    }

    async fn update(
        &self,
        key: Item,
        changes: Changes,
        condition: Option<Cond>,
    ) -> Result<Result<Item, ConditionFailed>, TableError> {
        let mut p = Placeholders::default();
        let expression = p.update(&changes);
        let condition = condition.as_ref().map(|c| p.condition(c));
        let (names, values) = p.into_parts();
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .update_expression(expression)
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Ok(output.attributes.unwrap_or_default())),
            Err(SdkError::ServiceError(error)) if error.err().is_conditional_check_failed_exception() => {
                match error.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(failed) => Ok(Err(failed.item)),
                    _ => Ok(Err(None)),
                }
            }
            Err(error) => Err(classify("update item", error)),
        }
    }

    async fn transact(&self, writes: Vec<Write>, token: &str) -> Result<Transacted, TableError> {
        let items = writes.into_iter().map(|w| self.transact_item(w)).collect::<Result<Vec<_>, _>>()?;
        let result =
            self.client.transact_write_items().set_transact_items(Some(items)).client_request_token(token).send().await;
        match result {
            Ok(_) => Ok(Transacted::Committed),
            Err(SdkError::ServiceError(error)) if error.err().is_transaction_canceled_exception() => {
                match error.into_err() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        Ok(Transacted::Cancelled(cancelled.cancellation_reasons().iter().map(reason).collect()))
                    }
                    _ => Ok(Transacted::Cancelled(Vec::new())),
                }
            }
            Err(error) => Err(classify("transact write items", error)),
        }
    }

    async fn query(&self, query: Query) -> Result<Page, TableError> {
        let mut p = Placeholders::default();
        let partition = AttributeValue::S(query.partition.1);
        let mut key_expression = p.condition(&Cond::eq(query.partition.0, partition));
        if let Some((attribute, prefix)) = &query.sort_prefix {
            let prefix = AttributeValue::S(prefix.clone());
            key_expression = format!("{key_expression} AND {}", p.begins_with(attribute, &prefix));
        }
        if let Some((attribute, from, to)) = &query.sort_between {
            let (from, to) = (AttributeValue::S(from.clone()), AttributeValue::S(to.clone()));
            key_expression = format!("{key_expression} AND {}", p.between(attribute, &from, &to));
        }
        let filter = query.filter.as_ref().map(|f| p.condition(f));
        let (names, values) = p.into_parts();
        let output = self
            .client
            .query()
            .table_name(&self.name)
            .set_index_name(query.index.map(str::to_owned))
            .key_condition_expression(key_expression)
            .set_filter_expression(filter)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .scan_index_forward(!query.newest_first)
            .set_limit(query.limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
            .set_exclusive_start_key(query.start)
            .send()
            .await
            .map_err(|e| classify("query", e))?;
        Ok(Page { items: output.items.unwrap_or_default(), next: output.last_evaluated_key })
    }

    async fn scan(&self, start: Option<Item>) -> Result<Page, TableError> {
        let output = self
            .client
            .scan()
            .table_name(&self.name)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| classify("scan", e))?;
        Ok(Page { items: output.items.unwrap_or_default(), next: output.last_evaluated_key })
    }
}
