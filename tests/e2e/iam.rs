//! The template's least-privilege policies against the code. The emulators
//! enforce no IAM, so a missing grant would first show on AWS as
//! `AccessDeniedException` on a payment path, and a needless one never.
//! Each function's flows run here as its `main` wires them, over a table
//! and a queue that note the permission each request needs (in the
//! contention model, so the hot-coin paths run too); what they needed
//! must be exactly what the function's policy grants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde_norway::Value;
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::dynamodb::item::{
    member_attribute, member_value, n, n_int, order_item, pool_key, shards_grown, shards_key,
};
use shared::adapters::dynamodb::table::Changes;
use shared::adapters::dynamodb::table::Table;
use shared::adapters::dynamodb::table::memory::MemoryTable;
use shared::adapters::memory_queue::{QueuedMessage, memory_queue};
use shared::config::{POOL_SWEEP_EVERY, RESEND_POLICY, ServiceConfig, WAIT_CHECK_EVERY, sweep_rules};
use shared::domain::{
    BatchId, Coin, IdempotencyKey, Member, Membership, Order, OrderId, OrderStatus, PriceList, Quantity, Usd, UserId,
};
use shared::ports::{
    Accounts, Clock, Exchange, ExchangeError, ExchangeOrder, Fill, Lookup, OrderPage, Orders, Outbox, SettleQueue,
    SystemClock, WaitAction, WaitPolicy,
};
use shared::reconcile::{BoundedWait, PoolSweep, Reconciler};
use shared::service::OrderService;
use shared::settlement::Settler;
use testkit::contention::{ContendedTable, ContentionRules};
use testkit::permissions::{Permission, Permissions, PermissionsQueue, PermissionsTable};
use testkit::store_contract::usd;
use time::OffsetDateTime;

/// What each function's policy grants, as `(action, resource)`.
fn granted() -> BTreeMap<String, BTreeSet<Permission>> {
    let template = crate::template::template();
    let mut functions = BTreeMap::new();
    for function in ["PlaceOrderFunction", "SettleFunction", "ReconcilerFunction"] {
        let mut grants = BTreeSet::new();
        for policy in template["Resources"][function]["Properties"]["Policies"].as_sequence().unwrap() {
            for statement in policy["Statement"].as_sequence().unwrap() {
                assert_eq!(statement["Effect"], "Allow", "{function}");
                let actions = match &statement["Action"] {
                    Value::Sequence(actions) => actions.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
                    action => vec![action.as_str().unwrap().to_owned()],
                };
                let resource = resource(&statement["Resource"]);
                grants.extend(actions.into_iter().map(|action| (action, resource.clone())));
            }
        }
        functions.insert(function.to_owned(), grants);
    }
    functions
}

/// `!GetAtt Table.Arn` is `table`, `!Sub "${Table.Arn}/index/x"` is
/// `table/index/x`, `!GetAtt SettleQueue.Arn` is `queue`.
fn resource(value: &Value) -> String {
    let Value::Tagged(tagged) = value else { panic!("a resource of its own stack: {value:?}") };
    let text = tagged.value.as_str().unwrap();
    match (tagged.tag.to_string().trim_start_matches('!'), text) {
        ("GetAtt", "Table.Arn") => "table".to_owned(),
        ("GetAtt", "SettleQueue.Arn") => "queue".to_owned(),
        ("Sub", sub) if sub.starts_with("${Table.Arn}/index/") => sub.replace("${Table.Arn}", "table"),
        other => panic!("a resource this test does not know: {other:?}"),
    }
}

/// The store and queue one function instance gets, noting what it needs.
struct Instance {
    store: Arc<DynamoStore>,
    queue: Arc<dyn SettleQueue>,
    /// What it sent, kept so that sending succeeds.
    _sent: tokio::sync::mpsc::UnboundedReceiver<QueuedMessage>,
}

fn instance(table: &Arc<dyn Table>, permissions: &Permissions, seed: u64) -> Instance {
    let noted = Arc::new(PermissionsTable::new(Arc::clone(table), permissions.clone()));
    let (queue, sent) = memory_queue();
    Instance {
        store: Arc::new(DynamoStore::on(noted).with_jitter_seed(seed)),
        queue: Arc::new(PermissionsQueue::new(Arc::new(queue), permissions.clone())),
        _sent: sent,
    }
}

/// An exchange that answers every buy one way.
struct Answers(fn(&ExchangeOrder) -> Result<Fill, ExchangeError>);

#[async_trait]
impl Exchange for Answers {
    async fn buy(&self, order: &ExchangeOrder) -> Result<Fill, ExchangeError> {
        (self.0)(order)
    }

    async fn lookup(&self, _: BatchId) -> Result<Lookup, ExchangeError> {
        Ok(Lookup::NotFound)
    }

    /// It answers in the call: nothing is left on its way.
    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

fn filled(order: &ExchangeOrder) -> Result<Fill, ExchangeError> {
    Ok(Fill::unstated(format!("EX-{}", order.client_order_id)))
}

fn refused(_: &ExchangeOrder) -> Result<Fill, ExchangeError> {
    Err(ExchangeError::Refused { reason: "400: halted".to_owned() })
}

fn no_answer(_: &ExchangeOrder) -> Result<Fill, ExchangeError> {
    Err(ExchangeError::Unknown { reason: "timed out".to_owned(), source: None })
}

/// The reconciler's clock, an hour on: every batch is due again and every
/// pool shard is quiet.
struct AnHourLater;

impl Clock for AnHourLater {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::hours(1)
    }
}

fn amount(text: &str) -> Quantity {
    Quantity::parse(text).unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_function_is_granted_exactly_what_its_code_calls() {
    let model = Arc::new(ContendedTable::new(Arc::new(MemoryTable::new()), ContentionRules::default()));
    let table: Arc<dyn Table> = model.clone();
    let admin = DynamoStore::on(Arc::clone(&table));
    let users: Vec<UserId> = (0..32).map(|i| UserId::parse(&format!("user-{i}")).unwrap()).collect();
    for user in &users {
        admin.open_account(user, usd("1000")).await.unwrap();
    }
    // Two coins of their own: one for a cancel, one for a pool that waits.
    let config =
        ServiceConfig { prices: PriceList::parse("ABAN=4,IAMC=4,IAMW=4").unwrap(), ..ServiceConfig::default() };
    let mut used = BTreeMap::new();

    // place-order: eight instances. An order bought alone, pooled ones,
    // a replay and a reused key, refusals; a burst that contends on the
    // coin's pool (its shards grow); one customer's orders read back.
    let permissions = Permissions::new();
    let instances: Vec<Instance> = (0..8).map(|seed| instance(&table, &permissions, seed)).collect();
    let services: Vec<Arc<OrderService>> = instances
        .iter()
        .map(|i| Arc::new(OrderService::new(i.store.clone(), i.queue.clone(), Arc::new(SystemClock), config.clone())))
        .collect();
    let key = Some(IdempotencyKey::parse("iam-1").unwrap());
    services[0].place(users[0].clone(), "ABAN", amount("3"), key.clone()).await.unwrap();
    services[0].place(users[0].clone(), "ABAN", amount("3"), key.clone()).await.unwrap();
    assert!(services[0].place(users[0].clone(), "ABAN", amount("1"), key).await.is_err());
    assert!(services[0].place(users[1].clone(), "ABAN", amount("1000"), None).await.is_err());
    let burst: Vec<_> = (0..256)
        .map(|i| {
            let service = Arc::clone(&services[i % services.len()]);
            let user = users[i % users.len()].clone();
            tokio::spawn(async move { service.place(user, "ABAN", amount("0.25"), None).await })
        })
        .collect();
    for placed in burst {
        placed.await.unwrap().unwrap();
    }
    let grown: u64 = instances.iter().map(|i| i.store.stats().shards_grown).sum();
    assert!(model.stats.conflicts.load(Ordering::Relaxed) > 0 && grown > 0, "the burst never grew the coin's shards");
    let first_page = OrderPage { limit: 2, after: None, status: None };
    let page = services[1].orders(&users[0], first_page).await.unwrap();
    let after = page.orders.last().map(|view| view.order.id);
    services[1].orders(&users[0], OrderPage { limit: 2, after, status: Some(OrderStatus::Settled) }).await.unwrap();
    services[1].order(&users[0], page.orders[0].order.id).await.unwrap();
    services[1].balance(&users[0]).await.unwrap();
    // A cancel of a pending order (of a coin of its own, so it is pending),
    // and of one in a batch.
    let pending = services[2].place(users[2].clone(), "IAMC", amount("0.5"), None).await.unwrap();
    services[3].cancel(&users[2], pending.order.order.id).await.unwrap();
    assert!(services[3].cancel(&users[0], page.orders[0].order.id).await.is_err());
    used.insert("PlaceOrderFunction", permissions.used());

    // settle: a fill, a refusal (refunded, a chunk at a time), no answer.
    let permissions = Permissions::new();
    let Instance { store, queue, _sent } = instance(&table, &permissions, 0);
    let settler = |answers| {
        Settler::new(
            store.clone(),
            Arc::new(Answers(answers)),
            queue.clone(),
            Arc::new(SystemClock),
            Duration::from_secs(30),
        )
    };
    let batches: Vec<BatchId> = admin.open_batches().await.unwrap().into_iter().map(|batch| batch.id).take(3).collect();
    assert_eq!(batches.len(), 3, "the orders above formed at least three batches");
    settler(filled).settle(batches[0]).await.unwrap();
    settler(refused).with_refund_chunk(1).settle(batches[1]).await.unwrap();
    assert!(settler(no_answer).settle(batches[2]).await.is_err());
    used.insert("SettleFunction", permissions.used());

    // reconciler: an hour on, the batches left are due again and what the
    // pool shards hold is swept into a batch.
    let permissions = Permissions::new();
    let Instance { store, queue, _sent } = instance(&table, &permissions, 0);
    // A second coin whose rally left fifty shards of $0.20, its count long
    // since down to one: more shards hold its money than one transaction
    // closes for the minimum, so the sweep moves crumbs together, the next
    // closes them, and the one after finds the shards above the count empty
    // and stops reading them. (Orders and pools written directly: this test
    // asks what is called.)
    let crumbs = Coin::from_trusted("IAMX");
    let long_ago = OffsetDateTime::now_utc() - time::Duration::minutes(30);
    // Placed a minute before the reconciler's clock: due for the sweep, not
    // yet for the wait policy.
    let placed = OffsetDateTime::now_utc() + time::Duration::minutes(59);
    admin.table().update(shards_key(&crumbs), shards_grown(1, 64, long_ago), None).await.unwrap().unwrap();
    for shard in 0..50 {
        let order = Order {
            id: OrderId::generate(),
            user: users[0].clone(),
            coin: crumbs.clone(),
            amount: amount("0.05"),
            price: usd("4"),
            cost: Usd::new(Decimal::new(2, 1)).unwrap(),
            membership: Membership::Pool { shard, formed: None },
            refunded: false,
            canceled: false,
            created_at: placed,
        };
        admin.table().put(order_item(&order), None).await.unwrap().unwrap();
        let member = Member { order: order.id, user: order.user.clone(), placed };
        let changes = Changes::new()
            .set("usd", n(Decimal::new(2, 1)))
            .set("qty", n(Decimal::new(5, 2)))
            .set("count", n_int(1u64))
            .set("version", n_int(1u64))
            .set(member_attribute(order.id), member_value(&member));
        admin.table().update(pool_key(&crumbs, shard), changes, None).await.unwrap().unwrap();
    }
    let mut coins: Vec<Coin> = config.prices.coins().cloned().collect();
    coins.push(crumbs);
    let sweep = PoolSweep {
        coins,
        minimum: config.minimum,
        rules: sweep_rules(),
        shards: shared::domain::ShardRules::default(),
        every: POOL_SWEEP_EVERY,
    };
    // The wait policy as deployed with top-up: an order of its own coin
    // has waited an hour, and the house completes its pool.
    let house = UserId::parse("house").unwrap();
    admin.open_account(&house, usd("100")).await.unwrap();
    let waiting = OrderService::new(
        Arc::new(DynamoStore::on(Arc::clone(&table))),
        Arc::new(memory_queue().0),
        Arc::new(SystemClock),
        config.clone(),
    );
    waiting.place(users[3].clone(), "IAMW", amount("0.5"), None).await.unwrap();
    let policy = WaitPolicy { max_wait: time::Duration::minutes(15), action: WaitAction::TopUp { house } };
    let wait = BoundedWait { policy: Some(policy), prices: config.prices.clone(), every: WAIT_CHECK_EVERY };
    let reconciler = Reconciler::new(store.clone(), queue, Arc::new(AnHourLater), RESEND_POLICY)
        .sweeping(store, sweep)
        .bounding_wait(Some(wait));
    let report = reconciler.run_once().await.unwrap();
    assert!(!report.resent.is_empty() && report.swept.len() >= 2, "{report:?}");
    assert!(admin.balance(&UserId::parse("house").unwrap()).await.unwrap() < usd("100"), "no top-up");
    assert_eq!(reconciler.sweep().await.swept.len(), 1, "the crumbs moved together, then closed");
    reconciler.sweep().await;
    let record = admin.table().get(shards_key(&Coin::from_trusted("IAMX"))).await.unwrap().unwrap();
    assert_eq!(record["high"], n_int(1u64), "the sweep went on reading shards nobody can write");
    used.insert("ReconcilerFunction", permissions.used());

    let granted = granted();
    for (function, needed) in used {
        let policy = &granted[function];
        let denied: Vec<_> = needed.difference(policy).collect();
        let needless: Vec<_> = policy.difference(&needed).collect();
        assert!(
            denied.is_empty() && needless.is_empty(),
            "{function}: its code needs {denied:?}, which its policy does not grant; \
             its policy grants {needless:?}, which its code never needed"
        );
    }
}
