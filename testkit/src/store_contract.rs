//! The store contract: what every store must do, as one suite, run on the
//! embedded table and on DynamoDB Local and ministack. A backend's tests
//! call [`store_contract_tests!`] with a factory of [`Stores`]: fresh store
//! instances on one fresh, empty table, each instance another process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use shared::adapters::dynamodb::DynamoStore;
use shared::adapters::dynamodb::item::{shards_grown, shards_key};
use shared::adapters::dynamodb::table::Table;
use shared::audit::audit;
use shared::domain::{
    BatchId, BatchStatus, Coin, DepositId, IdempotencyKey, NewOrder, OrderId, OrderStatus, Quantity, Usd, UserId,
};
use shared::pooling::Pooling;
use shared::ports::{
    CancelError, Claim, Clock, DepositError, Deposited, Fence, PlaceError, Placed, Store, WaitAction, WaitPolicy,
};
use time::{Duration, OffsetDateTime};

/// Store instances on one table: every call of [`Stores::instance`] is
/// another process sharing the table and nothing else.
pub struct Stores {
    table: Arc<dyn Table>,
}

impl Stores {
    pub fn new(table: Arc<dyn Table>) -> Stores {
        crate::test_logs();
        Stores { table }
    }

    pub fn instance(&self) -> Arc<dyn Store> {
        Arc::new(DynamoStore::on(Arc::clone(&self.table)))
    }

    /// The table itself, for what only an operator or another process
    /// would write.
    pub fn table(&self) -> &Arc<dyn Table> {
        &self.table
    }
}

pub fn usd(text: &str) -> Usd {
    Usd::new(Decimal::from_str(text).unwrap()).unwrap()
}

pub fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn ten() -> Usd {
    usd("10")
}

/// An ABAN order at $4.
pub fn order(user_name: &str, amount: &str) -> NewOrder {
    let amount = Quantity::parse(amount).unwrap();
    let price = usd("4");
    NewOrder {
        id: OrderId::generate(),
        user: user(user_name),
        coin: Coin::from_trusted("ABAN"),
        amount,
        price,
        cost: Usd::cost(price, amount).unwrap(),
        idempotency_key: None,
        created_at: OffsetDateTime::now_utc().replace_millisecond(0).unwrap(),
    }
}

/// The order in another coin (at the same price).
fn in_coin(order: NewOrder, coin: &str) -> NewOrder {
    NewOrder { coin: Coin::from_trusted(coin), ..order }
}

async fn funded(store: &dyn Store, users: &[(&str, &str)]) {
    for (name, balance) in users {
        assert!(store.open_account(&user(name), usd(balance)).await.unwrap(), "{name} existed");
    }
}

async fn place(store: &dyn Store, order: NewOrder) -> Placed {
    store.place_order(order, ten()).await.unwrap()
}

/// A clock that says `at`.
struct At(OffsetDateTime);

impl Clock for At {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// Pooling (the sweep, the bounded wait) over `store`, as the reconciler
/// runs it at `at`.
pub fn pooling(store: &Arc<dyn Store>, at: OffsetDateTime) -> Pooling {
    Pooling::new(Arc::clone(store) as Arc<dyn shared::ports::Pools>, Arc::new(At(at)), ten())
}

/// The audit of everything the store holds finds nothing wrong.
pub async fn assert_audit_clean(store: &dyn Store) {
    let report = audit(&store.ledger().await.unwrap(), ten());
    assert!(report.is_clean(), "{report}");
}

pub async fn placing_an_order_debits_and_records_it(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100")]).await;
    let new = order("alice", "1.5");
    let placed = place(store.as_ref(), new.clone()).await;

    assert!(!placed.replayed);
    assert_eq!(placed.formed, None);
    assert_eq!(placed.order.status, OrderStatus::Pending);
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("94"));
    let view = store.order(&user("alice"), new.id).await.unwrap().unwrap();
    assert_eq!(view.order.amount, new.amount);
    assert_eq!(view.order.cost, usd("6"));
    assert_eq!(view.order.price, usd("4"));
    assert_eq!(view.order.created_at, new.created_at);
    assert_eq!(view.status, OrderStatus::Pending);
    assert_eq!(store.order(&user("mallory"), new.id).await.unwrap(), None, "only the owner sees it");
    assert_audit_clean(store.as_ref()).await;
}

pub async fn insufficient_funds_change_nothing(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "11.99")]).await;
    let new = order("alice", "3");
    let result = store.place_order(new.clone(), ten()).await;
    assert!(matches!(result, Err(PlaceError::InsufficientFunds { .. })), "{result:?}");
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("11.99"));
    assert_eq!(store.order(&user("alice"), new.id).await.unwrap(), None);
    // A user without an account has nothing.
    assert_eq!(store.balance(&user("nobody")).await.unwrap(), Usd::ZERO);
    let result = store.place_order(order("nobody", "0.00000001"), ten()).await;
    assert!(matches!(result, Err(PlaceError::InsufficientFunds { .. })));
    assert_audit_clean(store.as_ref()).await;
}

pub async fn an_order_of_the_minimum_is_its_own_ready_batch(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100")]).await;
    let pooled = place(store.as_ref(), order("alice", "1")).await;
    let placed = place(store.as_ref(), order("alice", "2.5")).await;

    let batch_id = placed.formed.expect("a batch");
    let batch = store.batch(batch_id).await.unwrap().unwrap();
    assert_eq!(
        (batch.status, batch.usd, batch.qty.to_string(), batch.count),
        (BatchStatus::Ready, usd("10"), "2.5".into(), 1)
    );
    assert!(batch.pools.is_empty());
    assert_eq!(placed.order.status, OrderStatus::Settling);
    assert_eq!(placed.order.batch_id, Some(batch_id));
    // The pool was not touched.
    let view = store.order(&user("alice"), pooled.order.order.id).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Pending);
    assert_audit_clean(store.as_ref()).await;
}

pub async fn the_order_that_reaches_the_minimum_closes_the_pool(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100"), ("bob", "100"), ("carol", "100")]).await;
    let a = place(store.as_ref(), order("alice", "1")).await;
    let b = place(store.as_ref(), order("bob", "1")).await;
    assert_eq!((a.formed, b.formed), (None, None));
    let c = place(store.as_ref(), order("carol", "1")).await;

    let batch_id = c.formed.expect("the third order forms the batch");
    let batch = store.batch(batch_id).await.unwrap().unwrap();
    assert_eq!((batch.usd, batch.qty.to_string(), batch.count), (usd("12"), "3".into(), 3));
    assert_eq!(batch.coin.as_str(), "ABAN");
    for (name, placed) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        let view = store.order(&user(name), placed.order.order.id).await.unwrap().unwrap();
        assert_eq!((view.status, view.batch_id), (OrderStatus::Settling, Some(batch_id)), "{name}");
    }
    // A fresh pool opens.
    let d = place(store.as_ref(), order("alice", "1")).await;
    assert_eq!((d.formed, d.order.status), (None, OrderStatus::Pending));
    assert_audit_clean(store.as_ref()).await;
}

/// A pending order leaves its pool with its cost back, once; what is not
/// pending, or not the caller's, is not canceled; the pool's next batch
/// forms without it, and a refusal of that batch never credits it again.
pub async fn a_pending_order_is_canceled_once_and_its_pool_forms_without_it(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100"), ("bob", "100"), ("carol", "100")]).await;
    let a = place(store.as_ref(), order("alice", "1")).await.order.order.id;
    let b = place(store.as_ref(), order("bob", "1")).await.order.order.id;

    let canceled = store.cancel_order(&user("alice"), a).await.unwrap();
    assert!(canceled.now);
    assert_eq!((canceled.order.status, canceled.order.batch_id), (OrderStatus::Canceled, None));
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("100"));
    assert_audit_clean(store.as_ref()).await;
    // Idempotent: the same order again, nothing credited twice.
    let again = store.cancel_order(&user("alice"), a).await.unwrap();
    assert_eq!((again.now, again.order.status), (false, OrderStatus::Canceled));
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("100"));
    // Another user's order, an unknown one: not found, nothing changes.
    assert!(matches!(store.cancel_order(&user("carol"), b).await, Err(CancelError::NotFound)));
    assert!(matches!(store.cancel_order(&user("carol"), OrderId::generate()).await, Err(CancelError::NotFound)));
    assert_eq!(store.balance(&user("bob")).await.unwrap(), usd("96"));

    // $4 + $6 closes the pool: bob's and carol's orders, not alice's.
    let c = place(store.as_ref(), order("carol", "1.5")).await;
    let id = c.formed.expect("$4 + $6 reaches the minimum");
    let batch = store.batch(id).await.unwrap().unwrap();
    assert_eq!((batch.count, batch.usd, batch.qty.to_string()), (2, usd("10"), "2.5".into()));
    let status = |name: &'static str, id| {
        let store = Arc::clone(&store);
        async move { store.order(&user(name), id).await.unwrap().unwrap().status }
    };
    assert_eq!(status("alice", a).await, OrderStatus::Canceled);
    // In a batch now: not pending any more, nothing changes.
    match store.cancel_order(&user("bob"), b).await {
        Err(CancelError::NotPending(view)) => assert_eq!(view.status, OrderStatus::Settling),
        other => panic!("canceled an order in a batch: {other:?}"),
    }
    let own = place(store.as_ref(), order("carol", "2.5")).await.order.order.id;
    assert!(matches!(store.cancel_order(&user("carol"), own).await, Err(CancelError::NotPending(_))));
    assert_eq!(store.balance(&user("bob")).await.unwrap(), usd("96"));
    assert_audit_clean(store.as_ref()).await;

    // The batch refused and refunded: bob and carol are credited, alice
    // (canceled before) is not credited again.
    let now = now();
    let Claim::Claimed(claimed) = store.claim_batch(id, now, now + Duration::seconds(30)).await.unwrap() else {
        panic!("not claimed")
    };
    store.refuse_batch(id, claimed.attempts, "400: halted", None).await.unwrap();
    let mut calls = 0;
    while !store.refund_batch(id, 10).await.unwrap().finished {
        calls += 1;
        assert!(calls < 5, "the refund never finishes: {:?}", store.batch(id).await.unwrap());
    }
    // carol's $10 order bought alone is still settling.
    for (name, balance) in [("alice", "100"), ("bob", "100"), ("carol", "90")] {
        assert_eq!(store.balance(&user(name)).await.unwrap(), usd(balance), "{name}");
    }
    assert_eq!(status("alice", a).await, OrderStatus::Canceled);
    assert_audit_clean(store.as_ref()).await;
}

/// A cancel racing the order that brings the pool to the minimum, from
/// other processes: exactly one takes the order. Either the cancel answers
/// the order canceled and no batch holds it, or the order is in the batch
/// and the cancel answers "not pending"; never both, never neither.
pub async fn a_cancel_racing_the_crossing_order_takes_the_order_or_leaves_it(stores: Stores) {
    const ROUNDS: usize = 24;
    let instances: Vec<Arc<dyn Store>> = (0..3).map(|_| stores.instance()).collect();
    let (mut canceled, mut batched) = (0, 0);
    for round in 0..ROUNDS {
        let (owner, crosser) = (format!("owner-{round}"), format!("crosser-{round}"));
        funded(instances[0].as_ref(), &[(&owner, "100"), (&crosser, "100")]).await;
        // A coin of its own each round (priced as ABAN): $6 of someone
        // else's and the owner's $2 make $8; the crossing order's $2 reaches
        // the minimum only with the owner's order still in the pool.
        let coin = format!("RACE{round}");
        place(instances[0].as_ref(), in_coin(order(&crosser, "1.5"), &coin)).await;
        let target = place(instances[0].as_ref(), in_coin(order(&owner, "0.5"), &coin)).await;
        assert!(target.formed.is_none());
        let id = target.order.order.id;
        let canceler = Arc::clone(&instances[1 + round % 2]);
        let placer = Arc::clone(&instances[2 - round % 2]);
        let crossing = in_coin(order(&crosser, "0.5"), &coin);
        let (cancel, placed) = tokio::join!(
            tokio::spawn({
                let owner = user(&owner);
                async move {
                    // Every other round the cancel starts a little late.
                    if round % 2 == 1 {
                        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                    }
                    canceler.cancel_order(&owner, id).await
                }
            }),
            tokio::spawn(async move {
                loop {
                    match placer.place_order(crossing.clone(), usd("10")).await {
                        Err(PlaceError::Busy) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                        other => return other.unwrap(),
                    }
                }
            }),
        );
        let (cancel, _placed) = (cancel.unwrap(), placed.unwrap());
        let view = instances[0].order(&user(&owner), id).await.unwrap().unwrap();
        match cancel {
            Ok(answer) => {
                assert_eq!((answer.order.status, view.status), (OrderStatus::Canceled, OrderStatus::Canceled));
                assert_eq!(instances[0].balance(&user(&owner)).await.unwrap(), usd("100"));
                canceled += 1;
            }
            Err(CancelError::NotPending(_)) => {
                assert!(view.batch_id.is_some() && view.status == OrderStatus::Settling, "{view:?}");
                assert_eq!(instances[0].balance(&user(&owner)).await.unwrap(), usd("98"));
                batched += 1;
            }
            Err(other) => panic!("round {round}: {other:?}"),
        }
        assert_audit_clean(instances[0].as_ref()).await;
    }
    eprintln!("cancels racing crossing orders: {canceled} canceled, {batched} batched");
    assert!(canceled + batched > ROUNDS / 2, "canceled {canceled}, batched {batched}");
}

fn policy(action: WaitAction) -> WaitPolicy {
    WaitPolicy { max_wait: Duration::minutes(15), action }
}

/// A pool whose oldest order waited longer than the policy allows is
/// completed by the house: one batch of at least the minimum, the house's
/// order in it, the house debited exactly. Before the limit, nothing.
pub async fn a_pool_that_waited_too_long_is_completed_by_the_house(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100"), ("bob", "100"), ("house", "50")]).await;
    let a = place(store.as_ref(), order("alice", "1")).await.order.order;
    place(store.as_ref(), order("bob", "0.5")).await;
    let top_up = policy(WaitAction::TopUp { house: user("house") });
    let price = Some(usd("4"));

    let early =
        pooling(&store, a.created_at + Duration::minutes(14)).bound_wait(&a.coin, price, Some(&top_up)).await.unwrap();
    assert_eq!((early.oldest, early.topped_up, early.house_balance), (Some(a.created_at), None, Some(usd("50"))));
    assert_eq!(store.order(&user("alice"), a.id).await.unwrap().unwrap().status, OrderStatus::Pending);

    let late =
        pooling(&store, a.created_at + Duration::minutes(16)).bound_wait(&a.coin, price, Some(&top_up)).await.unwrap();
    let id = late.topped_up.expect("the house completes the pool");
    let batch = store.batch(id).await.unwrap().unwrap();
    // $6 of customers' orders, $4 of the house's (1 ABAN).
    assert_eq!(
        (batch.status, batch.usd, batch.qty.to_string(), batch.count),
        (BatchStatus::Ready, ten(), "2.5".into(), 3)
    );
    assert_eq!((store.balance(&user("house")).await.unwrap(), late.house_balance), (usd("46"), Some(usd("46"))));
    let view = store.order(&user("alice"), a.id).await.unwrap().unwrap();
    assert_eq!((view.status, view.batch_id), (OrderStatus::Settling, Some(id)));
    assert_audit_clean(store.as_ref()).await;
    // Nothing waits any more: nothing more happens.
    let after =
        pooling(&store, a.created_at + Duration::minutes(30)).bound_wait(&a.coin, price, Some(&top_up)).await.unwrap();
    assert_eq!((after.oldest, after.topped_up), (None, None));
}

/// A house account that cannot pay the top-up: nothing is bought, nothing
/// changes, and the report says what it would have cost.
pub async fn a_house_that_cannot_pay_buys_nothing(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100"), ("house", "3.99")]).await;
    let a = place(store.as_ref(), order("alice", "1.5")).await.order.order;
    let top_up = policy(WaitAction::TopUp { house: user("house") });
    let late = a.created_at + Duration::hours(1);

    let report = pooling(&store, late).bound_wait(&a.coin, Some(usd("4")), Some(&top_up)).await.unwrap();

    assert_eq!((report.topped_up, report.house_short, report.house_balance), (None, Some(usd("4")), Some(usd("3.99"))));
    assert_eq!(store.order(&user("alice"), a.id).await.unwrap().unwrap().status, OrderStatus::Pending);
    assert_eq!(store.balance(&user("house")).await.unwrap(), usd("3.99"));
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("94"));
    assert_audit_clean(store.as_ref()).await;
    // No house account at all: the same.
    let nobody = policy(WaitAction::TopUp { house: user("nobody") });
    let report = pooling(&store, late).bound_wait(&a.coin, Some(usd("4")), Some(&nobody)).await.unwrap();
    assert_eq!((report.topped_up, report.house_short), (None, Some(usd("4"))));
    assert_audit_clean(store.as_ref()).await;
}

/// The refund policy cancels the orders that waited longer than allowed,
/// and only those, each once.
pub async fn the_refund_policy_cancels_the_orders_that_waited_too_long(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100"), ("bob", "100")]).await;
    let old = place(store.as_ref(), order("alice", "1")).await.order.order;
    let young = NewOrder { created_at: old.created_at + Duration::minutes(10), ..order("bob", "0.5") };
    let young = place(store.as_ref(), young).await.order.order;
    let refund = policy(WaitAction::Refund);
    let at = old.created_at + Duration::minutes(16);

    let report = pooling(&store, at).bound_wait(&old.coin, Some(usd("4")), Some(&refund)).await.unwrap();

    assert_eq!(report.canceled, 1);
    assert_eq!(store.order(&user("alice"), old.id).await.unwrap().unwrap().status, OrderStatus::Canceled);
    assert_eq!(store.order(&user("bob"), young.id).await.unwrap().unwrap().status, OrderStatus::Pending);
    assert_eq!(
        (store.balance(&user("alice")).await.unwrap(), store.balance(&user("bob")).await.unwrap()),
        (usd("100"), usd("98"))
    );
    assert_audit_clean(store.as_ref()).await;
    let again = pooling(&store, at).bound_wait(&old.coin, Some(usd("4")), Some(&refund)).await.unwrap();
    assert_eq!((again.canceled, again.oldest), (0, Some(young.created_at)));
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("100"));
}

/// Orders of every size, from several processes at once: pooled orders,
/// orders bought alone, orders that close the pool. "Busy" answers are
/// retried, as their clients would.
pub async fn racing_orders_of_mixed_sizes_on_several_instances_form_each_batch_exactly_once(stores: Stores) {
    const ORDERS: usize = 96;
    const AMOUNTS: [&str; 8] = ["0.25", "0.5", "0.75", "1", "1.5", "2", "3", "5"];
    let instances: Vec<Arc<dyn Store>> = (0..3).map(|_| stores.instance()).collect();
    let users: Vec<String> = (0..12).map(|i| format!("racer-{i}")).collect();
    for name in &users {
        instances[0].open_account(&user(name), usd("1000")).await.unwrap();
    }
    let tasks: Vec<_> = (0..ORDERS)
        .map(|i| {
            let store = Arc::clone(&instances[i % instances.len()]);
            let new = order(&users[i % users.len()], AMOUNTS[(i * 5 + i / 8) % AMOUNTS.len()]);
            tokio::spawn(async move {
                loop {
                    match store.place_order(new.clone(), usd("10")).await {
                        Err(PlaceError::Busy) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                        other => return (new, other.unwrap()),
                    }
                }
            })
        })
        .collect();
    let mut formed = Vec::new();
    let mut spent: HashMap<String, Decimal> = HashMap::new();
    for task in tasks {
        let (new, placed) = task.await.unwrap();
        formed.extend(placed.formed);
        *spent.entry(new.user.to_string()).or_default() += new.cost.value();
    }
    for id in &formed {
        let batch = instances[1].batch(*id).await.unwrap().unwrap();
        assert!(batch.usd >= usd("10"), "{batch:?}");
    }
    for name in &users {
        let balance = instances[2].balance(&user(name)).await.unwrap();
        assert_eq!(balance.value() + spent[name.as_str()], Decimal::from(1000), "{name}");
    }
    // Every order is in exactly one batch or the open pool, with exact totals.
    assert_audit_clean(instances[0].as_ref()).await;
}

/// A coin whose pool is spread over shards (as contention makes it): orders
/// racing on several instances land on several shards, each batch forms
/// once and exactly; once they stop, the sweep gathers what the shards hold
/// until they hold less than the minimum together.
pub async fn a_pool_spread_over_shards_batches_exactly_and_the_sweep_leaves_less_than_the_minimum(stores: Stores) {
    stores
        .table()
        .update(shards_key(&Coin::from_trusted("ABAN")), shards_grown(8, 8, now()), None)
        .await
        .unwrap()
        .unwrap();
    let instances: Vec<Arc<dyn Store>> = (0..6).map(|_| stores.instance()).collect();
    let users: Vec<String> = (0..6).map(|i| format!("sharer-{i}")).collect();
    for name in &users {
        instances[0].open_account(&user(name), usd("1000")).await.unwrap();
    }
    let amounts = ["0.25", "0.5", "0.75", "1", "1.25", "1.5", "1.75", "2"];
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = Arc::clone(&instances[i % instances.len()]);
            let new = order(&users[i % users.len()], amounts[(i * 3) % amounts.len()]);
            tokio::spawn(async move { store.place_order(new, usd("10")).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let ledger = instances[0].ledger().await.unwrap();
    let shards = ledger.pools.iter().filter(|p| p.coin.as_str() == "ABAN").count();
    assert!(shards > 1, "the orders all went to one shard");
    assert_audit_clean(instances[0].as_ref()).await;

    let formed =
        pooling(&instances[1], now() + Duration::seconds(2)).sweep(&Coin::from_trusted("ABAN")).await.unwrap().formed;
    let ledger = instances[0].ledger().await.unwrap();
    let open: Decimal = ledger.pools.iter().map(|p| p.state.usd.value()).sum();
    assert!(open < Decimal::TEN, "the shards still hold {open} together");
    for id in &formed {
        let batch = instances[0].batch(*id).await.unwrap().unwrap();
        assert!(batch.usd >= usd("10") && batch.pools.len() > 1, "{batch:?}");
    }
    assert_audit_clean(instances[0].as_ref()).await;
}

/// Crumbs: a coin grown to 1,024 shards by a rally, and 64 new instances
/// (Lambda's, scaling out) each leaving $0.16 on a shard of its own: $10.24
/// together, yet the 48 fullest shards (what one transaction closes) hold
/// about $8. What the rally left, one instance each, placed so.
async fn crumbs(stores: &Stores) -> (Vec<Arc<dyn Store>>, Vec<Placed>) {
    let coin = Coin::from_trusted("ABAN");
    stores.table().update(shards_key(&coin), shards_grown(1024, 1024, now()), None).await.unwrap().unwrap();
    let first = stores.instance();
    funded(first.as_ref(), &[("alice", "100"), ("bob", "100"), ("house", "100")]).await;
    let mut instances = vec![first];
    let mut placed = Vec::new();
    let start = now();
    for i in 0..64 {
        let instance = stores.instance();
        // A millisecond apart: the first is the oldest.
        let crumb = NewOrder {
            created_at: start + Duration::milliseconds(i),
            ..order(["alice", "bob"][i as usize % 2], "0.04")
        };
        placed.push(place(instance.as_ref(), crumb).await);
        instances.push(instance);
    }
    let ledger = instances[0].ledger().await.unwrap();
    let holding = ledger.pools.iter().filter(|p| p.state.holds_money()).count();
    assert!(holding > 48, "the crumbs landed on {holding} shards only");
    (instances, placed)
}

/// More shards hold a coin's money than one transaction closes, and none
/// of them the minimum: the sweep moves crumbs together (each move one
/// transaction, the money in open pools all along), then closes them; no
/// state holds money out of reach meanwhile.
pub async fn crumbs_on_more_shards_than_one_close_takes_are_moved_then_batched(stores: Stores) {
    let (instances, placed) = crumbs(&stores).await;
    let sweep = pooling(&instances[1], now() + Duration::seconds(2));
    let first = sweep.sweep(&Coin::from_trusted("ABAN")).await.unwrap();
    assert_eq!((first.formed.len(), first.moved), (0, 1), "{first:?}");
    assert_audit_clean(instances[0].as_ref()).await;
    // Moved, and still pending: its owner sees it so, and can cancel it.
    let report = audit(&instances[0].ledger().await.unwrap(), ten());
    assert_eq!(report.pending_orders, 64);
    let second = sweep.sweep(&Coin::from_trusted("ABAN")).await.unwrap();
    assert_eq!(second.formed.len(), 1, "{second:?}");
    let batch = instances[0].batch(second.formed[0]).await.unwrap().unwrap();
    // Shards close whole: two crumbs that landed on one shard may both go.
    assert!(batch.usd >= ten(), "{batch:?}");
    let ledger = instances[0].ledger().await.unwrap();
    let open: Decimal = ledger.pools.iter().map(|p| p.state.usd.value()).sum();
    assert!(open < Decimal::TEN, "{open}");
    assert_eq!(batch.usd.value() + open, Decimal::new(1024, 2));
    let mut statuses: HashMap<&str, usize> = HashMap::new();
    for p in &placed {
        let view = instances[2].order(&p.order.order.user, p.order.order.id).await.unwrap().unwrap();
        *statuses.entry(view.status.as_str()).or_default() += 1;
    }
    assert_eq!(statuses.get("settling").copied().unwrap_or(0), batch.count as usize, "{statuses:?}");
    assert_audit_clean(instances[0].as_ref()).await;
}

/// Crumbs moved together are their owners' still: a cancel takes one out
/// of the shard it was moved to; the refund policy cancels every crumb that
/// waited too long, wherever it is; no batch forms without them after.
pub async fn crumbs_moved_together_are_canceled_by_their_owners_and_the_refund_policy(stores: Stores) {
    let (instances, placed) = crumbs(&stores).await;
    let sweep = pooling(&instances[1], now() + Duration::seconds(2));
    assert_eq!(sweep.sweep(&Coin::from_trusted("ABAN")).await.unwrap().moved, 1);
    let ledger = instances[0].ledger().await.unwrap();
    let moved_to = ledger.pools.iter().max_by_key(|p| p.state.count).unwrap();
    let moved = moved_to.state.members.iter().find(|m| m.order != placed[0].order.order.id).unwrap().clone();
    let canceled = instances[3].cancel_order(&moved.user, moved.order).await.unwrap();
    assert_eq!((canceled.now, canceled.order.status), (true, OrderStatus::Canceled));
    assert_audit_clean(instances[0].as_ref()).await;

    let refund = policy(WaitAction::Refund);
    let late = pooling(&instances[4], now() + Duration::hours(1));
    let report = late.bound_wait(&Coin::from_trusted("ABAN"), Some(usd("4")), Some(&refund)).await.unwrap();
    assert_eq!(report.canceled, 63, "{report:?}");
    let ledger = instances[0].ledger().await.unwrap();
    assert!(ledger.pools.iter().all(|p| !p.state.holds_money()));
    assert_eq!(
        (instances[0].balance(&user("alice")).await.unwrap(), instances[0].balance(&user("bob")).await.unwrap()),
        (usd("100"), usd("100"))
    );
    assert_audit_clean(instances[0].as_ref()).await;
}

/// The top-up over crumbs on more shards than one transaction closes: the
/// house completes the group that holds the oldest order (48 shards at
/// most), paying the minimum less what that group holds, once.
pub async fn a_top_up_over_crumbs_pays_for_the_oldest_money_once(stores: Stores) {
    let (instances, placed) = crumbs(&stores).await;
    let top_up = policy(WaitAction::TopUp { house: user("house") });
    let late = pooling(&instances[1], now() + Duration::hours(1));
    let report = late.bound_wait(&Coin::from_trusted("ABAN"), Some(usd("4")), Some(&top_up)).await.unwrap();
    let batch = instances[0].batch(report.topped_up.expect("a top-up")).await.unwrap().unwrap();
    let house_paid = usd("100").checked_sub(instances[0].balance(&user("house")).await.unwrap()).unwrap();
    let customers = batch.usd.checked_sub(house_paid).unwrap();
    assert_eq!(batch.pools.len(), 48, "{batch:?}");
    assert!(customers >= usd("7.68") && house_paid == ten().checked_sub(customers).unwrap(), "{batch:?} {house_paid}");
    let oldest = &placed[0].order.order;
    let view = instances[2].order(&oldest.user, oldest.id).await.unwrap().unwrap();
    assert_eq!(view.batch_id, Some(batch.id), "the oldest order's money first");
    // Once: the next check finds what is left under the minimum and younger.
    let again = late.bound_wait(&Coin::from_trusted("ABAN"), Some(usd("4")), Some(&top_up)).await.unwrap();
    assert!(again.house_balance.is_some());
    assert_audit_clean(instances[0].as_ref()).await;
}

/// Small orders only, many at once on several instances: batches of ten
/// dollars or more, each exactly its orders, each order debited once; the
/// pool (over however many shards the collisions made) holds the rest, and
/// once the orders stop, the sweep leaves less than the minimum.
pub async fn racing_small_orders_form_each_batch_exactly_once(stores: Stores) {
    const ORDERS: usize = 32;
    let instances: Vec<Arc<dyn Store>> = (0..2).map(|_| stores.instance()).collect();
    let users: Vec<String> = (0..ORDERS).map(|i| format!("racer-{i}")).collect();
    for name in &users {
        instances[0].open_account(&user(name), usd("1")).await.unwrap();
    }
    // 32 orders of $1 each against a $10 minimum.
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let store = Arc::clone(&instances[i % 2]);
            let new = order(name, "0.25");
            tokio::spawn(async move {
                loop {
                    match store.place_order(new.clone(), usd("10")).await {
                        Err(PlaceError::Busy) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                        other => return other,
                    }
                }
            })
        })
        .collect();
    let mut formed = Vec::new();
    for task in tasks {
        formed.extend(task.await.unwrap().unwrap().formed);
    }
    assert!(formed.len() >= 2, "formed {formed:?}");
    for name in &users {
        assert_eq!(instances[1].balance(&user(name)).await.unwrap(), Usd::ZERO);
    }
    assert_audit_clean(instances[0].as_ref()).await;

    pooling(&instances[0], now() + Duration::seconds(2)).sweep(&Coin::from_trusted("ABAN")).await.unwrap();
    let ledger = instances[0].ledger().await.unwrap();
    let batched: Decimal = ledger.batches.iter().map(|b| b.usd.value()).sum();
    let open: Decimal = ledger.pools.iter().map(|p| p.state.usd.value()).sum();
    assert!(ledger.batches.iter().all(|b| b.usd >= usd("10")));
    assert_eq!(batched + open, Decimal::from(32), "{:?}", ledger.batches);
    assert!(open < Decimal::TEN);
    assert_audit_clean(instances[0].as_ref()).await;
}

pub async fn racing_replays_of_one_key_debit_once(stores: Stores) {
    let instances: Vec<Arc<dyn Store>> = (0..2).map(|_| stores.instance()).collect();
    funded(instances[0].as_ref(), &[("alice", "100")]).await;
    let key = IdempotencyKey::parse("pay-once").unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&instances[i % 2]);
            let mut new = order("alice", "1");
            new.idempotency_key = Some(key.clone());
            tokio::spawn(async move { store.place_order(new, usd("10")).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut fresh = 0;
    for task in tasks {
        let placed = task.await.unwrap().unwrap();
        fresh += usize::from(!placed.replayed);
        ids.push(placed.order.order.id);
    }
    assert_eq!(fresh, 1);
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert_eq!(instances[0].balance(&user("alice")).await.unwrap(), usd("96"));
    assert_audit_clean(instances[0].as_ref()).await;
}

pub async fn a_key_reused_for_another_order_is_refused(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100"), ("bob", "100")]).await;
    let key = IdempotencyKey::parse("k1").unwrap();
    let mut first = order("alice", "1");
    first.idempotency_key = Some(key.clone());
    place(store.as_ref(), first.clone()).await;

    let mut same_amount = order("alice", "1.000");
    same_amount.idempotency_key = Some(key.clone());
    let replay = place(store.as_ref(), same_amount).await;
    assert!(replay.replayed);
    assert_eq!(replay.order.order.id, first.id);

    let mut other = order("alice", "2");
    other.idempotency_key = Some(key.clone());
    let result = store.place_order(other, ten()).await;
    assert!(matches!(result, Err(PlaceError::IdempotencyKeyReused)), "{result:?}");
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("96"));

    // Scoped to the user.
    let mut bobs = order("bob", "2");
    bobs.idempotency_key = Some(key);
    assert!(!place(store.as_ref(), bobs).await.replayed);
    assert_audit_clean(store.as_ref()).await;
}

/// A retry finds the batch its first send formed still `READY` (its
/// message may never have been sent): it is handed to settlement again.
pub async fn a_replay_hands_a_batch_still_ready_to_settlement_again(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100")]).await;
    let mut new = order("alice", "3");
    new.idempotency_key = Some(IdempotencyKey::parse("again").unwrap());
    let batch = place(store.as_ref(), new.clone()).await.formed.unwrap();

    let mut retry = new.clone();
    retry.id = OrderId::generate();
    let replayed = place(store.as_ref(), retry.clone()).await;
    assert_eq!((replayed.replayed, replayed.formed), (true, Some(batch)));

    let now = now();
    store.claim_batch(batch, now, now + Duration::seconds(30)).await.unwrap();
    retry.id = OrderId::generate();
    let replayed = place(store.as_ref(), retry).await;
    assert_eq!((replayed.replayed, replayed.formed), (true, None), "a claimed batch is settlement's already");
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("88"));
}

async fn ready_batch(store: &dyn Store, name: &str) -> BatchId {
    funded(store, &[(name, "100")]).await;
    place(store, order(name, "3")).await.formed.unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_millisecond(0).unwrap()
}

pub async fn a_batch_is_claimed_by_one_attempt_at_a_time(stores: Stores) {
    let store = stores.instance();
    let id = ready_batch(store.as_ref(), "alice").await;
    let now = now();
    let lease = now + Duration::seconds(30);

    let Claim::Claimed(batch) = store.claim_batch(id, now, lease).await.unwrap() else { panic!("not claimed") };
    assert_eq!((batch.status, batch.attempts, batch.attempted_at), (BatchStatus::Submitting, 1, Some(now)));
    assert!(matches!(store.claim_batch(id, now, lease).await.unwrap(), Claim::Leased { .. }));

    // An expired lease may be taken over.
    let later = lease + Duration::seconds(1);
    let Claim::Claimed(batch) = store.claim_batch(id, later, later + Duration::seconds(30)).await.unwrap() else {
        panic!("not claimed after the lease expired")
    };
    assert_eq!(batch.attempts, 2);

    // A released lease may be taken at once.
    assert_eq!(store.release_batch(id, 2, later).await.unwrap(), Fence::Held);
    let Claim::Claimed(batch) = store.claim_batch(id, later, later + Duration::seconds(30)).await.unwrap() else {
        panic!("not claimed after release")
    };
    assert_eq!(batch.attempts, 3);

    assert_eq!(store.settle_batch(id, 3, "EX-1").await.unwrap(), Fence::Held);
    assert!(matches!(
        store.settle_batch(id, 3, "EX-1").await.unwrap(),
        Fence::Lost { status: BatchStatus::Settled, .. }
    ));
    assert!(matches!(store.claim_batch(id, later, lease).await.unwrap(), Claim::Finished(BatchStatus::Settled)));
    let batch = store.batch(id).await.unwrap().unwrap();
    assert_eq!(batch.exchange_order_id.as_deref(), Some("EX-1"));
    assert!(matches!(store.claim_batch(BatchId::generate(), now, lease).await.unwrap(), Claim::NotFound));
    assert_audit_clean(store.as_ref()).await;
}

/// A late attempt (its lease expired and another attempt claimed the batch)
/// can change nothing: not release the live lease, not settle, not refuse.
pub async fn a_late_attempt_can_change_nothing(stores: Stores) {
    let store = stores.instance();
    let id = ready_batch(store.as_ref(), "alice").await;
    let now = now();
    store.claim_batch(id, now, now + Duration::seconds(30)).await.unwrap();
    let later = now + Duration::seconds(31);
    let Claim::Claimed(live) = store.claim_batch(id, later, later + Duration::seconds(30)).await.unwrap() else {
        panic!("the expired lease was not taken over")
    };

    let lost = Fence::Lost { status: BatchStatus::Submitting, attempts: 2 };
    assert_eq!(store.release_batch(id, 1, later).await.unwrap(), lost);
    assert_eq!(store.settle_batch(id, 1, "EX-late").await.unwrap(), lost);
    assert_eq!(store.refuse_batch(id, 1, "late", None).await.unwrap(), lost);
    assert_eq!(store.batch(id).await.unwrap().unwrap(), live, "the late attempt changed the batch");
    assert!(matches!(store.claim_batch(id, later, later).await.unwrap(), Claim::Leased { .. }), "its lease was ended");
    assert_audit_clean(store.as_ref()).await;
}

pub async fn racing_claims_let_one_attempt_through(stores: Stores) {
    let instances: Vec<Arc<dyn Store>> = (0..2).map(|_| stores.instance()).collect();
    let id = ready_batch(instances[0].as_ref(), "alice").await;
    let now = now();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&instances[i % 2]);
            tokio::spawn(async move { store.claim_batch(id, now, now + Duration::seconds(30)).await })
        })
        .collect();
    let mut claimed = 0;
    for task in tasks {
        claimed += usize::from(matches!(task.await.unwrap().unwrap(), Claim::Claimed(_)));
    }
    assert_eq!(claimed, 1);
}

/// A refusal is written before anyone is credited, is final (a claim finds
/// it refusing, never claimable), and its refunds go in bounded chunks that
/// resume where they stopped, each order once.
pub async fn a_refusal_is_final_and_refunds_each_member_once_in_chunks(stores: Stores) {
    let store = stores.instance();
    funded(store.as_ref(), &[("alice", "100"), ("bob", "100"), ("carol", "100")]).await;
    place(store.as_ref(), order("alice", "1")).await;
    place(store.as_ref(), order("bob", "0.5")).await;
    let id = place(store.as_ref(), order("carol", "1")).await.formed.unwrap();
    let now = now();
    let Claim::Claimed(batch) = store.claim_batch(id, now, now + Duration::seconds(30)).await.unwrap() else {
        panic!("not claimed")
    };
    // Refunds before the refusal is recorded are refused.
    assert!(store.refund_batch(id, 10).await.is_err(), "refunded a batch still submitting");

    assert_eq!(store.refuse_batch(id, batch.attempts, "400: symbol halted", None).await.unwrap(), Fence::Held);
    let refused = store.batch(id).await.unwrap().unwrap();
    assert_eq!((refused.status, refused.refusal.as_deref()), (BatchStatus::Refused, Some("400: symbol halted")));
    let later = now + Duration::minutes(5);
    assert!(
        matches!(store.claim_batch(id, later, later).await.unwrap(), Claim::Refusing(_)),
        "claimable after a refusal"
    );
    assert_audit_clean(store.as_ref()).await;

    let mut credited = Decimal::ZERO;
    let mut calls = 0;
    loop {
        let refund = store.refund_batch(id, 1).await.unwrap();
        assert!(refund.orders <= 1, "more than the chunk: {refund:?}");
        credited += refund.usd.value();
        calls += 1;
        assert_audit_clean(store.as_ref()).await;
        if refund.finished {
            break;
        }
        assert!(calls < 10, "the refund does not finish");
    }
    assert_eq!(credited, Decimal::from(10));
    let again = store.refund_batch(id, 10).await.unwrap();
    assert_eq!((again.orders, again.finished), (0, true), "refunded twice");
    for name in ["alice", "bob", "carol"] {
        assert_eq!(store.balance(&user(name)).await.unwrap(), usd("100"), "{name}");
    }
    assert_eq!(store.batch(id).await.unwrap().unwrap().status, BatchStatus::Refunded);
    assert!(matches!(store.claim_batch(id, later, later).await.unwrap(), Claim::Finished(BatchStatus::Refunded)));
    let views: Vec<_> = store.ledger().await.unwrap().orders.into_iter().map(|o| o.refunded).collect();
    assert_eq!(views, vec![true; 3]);
    assert_audit_clean(store.as_ref()).await;
}

/// Two refunders at once (a duplicate delivery) credit each order once.
pub async fn racing_refunds_credit_each_order_once(stores: Stores) {
    let instances: Vec<Arc<dyn Store>> = (0..2).map(|_| stores.instance()).collect();
    let store = &instances[0];
    let names: Vec<String> = (0..12).map(|i| format!("member-{i}")).collect();
    let mut formed = None;
    for name in &names {
        store.open_account(&user(name), usd("10")).await.unwrap();
        formed = formed.or(place(store.as_ref(), order(name, "0.25")).await.formed);
    }
    let id = formed.unwrap();
    let now = now();
    let Claim::Claimed(batch) = store.claim_batch(id, now, now + Duration::seconds(30)).await.unwrap() else {
        panic!("not claimed")
    };
    store.refuse_batch(id, batch.attempts, "422", None).await.unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let store = Arc::clone(&instances[i % 2]);
            tokio::spawn(async move {
                let mut credited = Decimal::ZERO;
                for _ in 0..20 {
                    let refund = store.refund_batch(id, 3).await.unwrap();
                    credited += refund.usd.value();
                    if refund.finished {
                        break;
                    }
                }
                credited
            })
        })
        .collect();
    let mut credited = Decimal::ZERO;
    for task in tasks {
        credited += task.await.unwrap();
    }
    assert_eq!(credited, Decimal::from(10), "credited by the refunders together");
    assert_eq!(store.batch(id).await.unwrap().unwrap().status, BatchStatus::Refunded);
    assert_audit_clean(store.as_ref()).await;
}

pub async fn open_batches_are_those_not_final_and_resends_are_recorded_once(stores: Stores) {
    let store = stores.instance();
    let ready = ready_batch(store.as_ref(), "alice").await;
    let submitting = ready_batch(store.as_ref(), "bob").await;
    let refused = ready_batch(store.as_ref(), "carol").await;
    let settled = ready_batch(store.as_ref(), "dave").await;
    let now = now();
    for id in [submitting, refused, settled] {
        store.claim_batch(id, now, now + Duration::seconds(30)).await.unwrap();
    }
    store.refuse_batch(refused, 1, "400", None).await.unwrap();
    store.settle_batch(settled, 1, "EX").await.unwrap();

    let open = store.open_batches().await.unwrap();
    let mut ids: Vec<BatchId> = open.iter().map(|b| b.id).collect();
    ids.sort();
    let mut expected = vec![ready, submitting, refused];
    expected.sort();
    assert_eq!(ids, expected);

    let batch = open.iter().find(|b| b.id == ready).unwrap();
    assert!(store.note_resent(batch, now).await.unwrap());
    assert!(!store.note_resent(batch, now).await.unwrap(), "recorded twice from one reading");
    let noted = store.batch(ready).await.unwrap().unwrap();
    assert_eq!((noted.resends, noted.resent_at), (1, Some(now)));

    // A re-send whose message could not be sent is taken back, once, to
    // exactly what was read; then it can be recorded again.
    assert!(store.withdraw_resent(batch, now).await.unwrap());
    assert!(!store.withdraw_resent(batch, now).await.unwrap(), "taken back twice");
    let restored = store.batch(ready).await.unwrap().unwrap();
    assert_eq!((restored.resends, restored.resent_at), (0, None));
    let later = now + Duration::seconds(90);
    assert!(store.note_resent(&restored, later).await.unwrap());
    assert!(!store.withdraw_resent(&restored, now).await.unwrap(), "took back a re-send recorded at another time");
    let second = store.batch(ready).await.unwrap().unwrap();
    assert!(store.note_resent(&second, later + Duration::seconds(200)).await.unwrap());
    assert!(store.withdraw_resent(&second, later + Duration::seconds(200)).await.unwrap());
    let back = store.batch(ready).await.unwrap().unwrap();
    assert_eq!((back.resends, back.resent_at), (1, Some(later)), "a second re-send taken back to the first");
}

pub async fn seeding_opens_missing_accounts_only_and_deposits_credit_once(stores: Stores) {
    let store = stores.instance();
    assert!(store.open_account(&user("alice"), usd("100")).await.unwrap());
    place(store.as_ref(), order("alice", "3")).await;
    assert!(!store.open_account(&user("alice"), usd("100")).await.unwrap(), "opened twice");
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("88"));

    let deposit = DepositId::parse("wire-2026-001").unwrap();
    let credited = store.deposit(&user("alice"), &deposit, usd("50.5")).await.unwrap();
    assert_eq!(credited, Deposited::Credited { balance: usd("138.5") });
    assert_eq!(store.deposit(&user("alice"), &deposit, usd("50.5")).await.unwrap(), Deposited::AlreadyCredited);
    let reused = store.deposit(&user("alice"), &deposit, usd("60")).await;
    assert!(matches!(reused, Err(DepositError::IdReused { .. })), "{reused:?}");
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("138.5"));
    // A deposit opens an account that did not exist.
    let credited = store.deposit(&user("bob"), &deposit, usd("5")).await.unwrap();
    assert_eq!(credited, Deposited::Credited { balance: usd("5") });
    assert_audit_clean(store.as_ref()).await;
}

/// A balance never passes the ceiling by deposits or seeding: the deposit
/// that would is refused naming the account, nothing credited, its id not
/// used up; two deposits racing to the ceiling cannot pass it together.
/// (Eight deposits of 999999999999.9999999999999999 made an account
/// unreadable before: each is now past the ceiling on its own.)
pub async fn deposits_stop_at_the_balance_ceiling_racing_or_not(stores: Stores) {
    let store = stores.instance();
    let ceiling = Usd::BALANCE_CEILING;
    let most = usd("99999999999.9999999999999999");
    assert!(store.open_account(&user("rich"), most).await.unwrap());
    let past = usd("0.0000000000000002");
    let refused = store.deposit(&user("rich"), &DepositId::parse("d-1").unwrap(), past).await;
    match refused {
        Err(DepositError::OverCeiling { user: who, balance, usd: asked }) => {
            assert_eq!((who, balance, asked), (user("rich"), most, past));
        }
        other => panic!("deposited past the ceiling: {other:?}"),
    }
    let fits = usd("0.0000000000000001");
    let credited = store.deposit(&user("rich"), &DepositId::parse("d-1").unwrap(), fits).await.unwrap();
    assert_eq!(credited, Deposited::Credited { balance: ceiling });
    let again = store.deposit(&user("rich"), &DepositId::parse("d-1").unwrap(), fits).await.unwrap();
    assert_eq!(again, Deposited::AlreadyCredited, "a replay at the ceiling");
    assert!(store.open_account(&user("richer"), usd("100000000000.01")).await.is_err());
    let d2 = DepositId::parse("d-2").unwrap();
    let whole = store.deposit(&user("new"), &d2, usd("999999999999.9999999999999999")).await;
    assert!(matches!(whole, Err(DepositError::OverCeiling { .. })), "{whole:?}");
    assert_eq!(store.balance(&user("new")).await.unwrap(), Usd::ZERO);

    // Racing from two instances: at most one of two deposits of 60 billion.
    let instances: Vec<Arc<dyn Store>> = (0..2).map(|_| stores.instance()).collect();
    let tasks: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let id = DepositId::parse(&format!("race-{i}")).unwrap();
                store.deposit(&user("racer"), &id, usd("60000000000")).await
            })
        })
        .collect();
    let mut credited = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => credited += 1,
            Err(DepositError::OverCeiling { .. }) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(credited, 1);
    assert_eq!(store.balance(&user("racer")).await.unwrap(), usd("60000000000"));
    assert_audit_clean(store.as_ref()).await;
}

/// Generates one `#[tokio::test]` per contract case for a factory of
/// [`Stores`] (called once per case: a fresh table each).
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:expr) => {
        $crate::store_contract_tests!(@cases $factory;
            placing_an_order_debits_and_records_it,
            insufficient_funds_change_nothing,
            an_order_of_the_minimum_is_its_own_ready_batch,
            the_order_that_reaches_the_minimum_closes_the_pool,
            racing_orders_of_mixed_sizes_on_several_instances_form_each_batch_exactly_once,
            racing_small_orders_form_each_batch_exactly_once,
            a_pool_spread_over_shards_batches_exactly_and_the_sweep_leaves_less_than_the_minimum,
            crumbs_on_more_shards_than_one_close_takes_are_moved_then_batched,
            crumbs_moved_together_are_canceled_by_their_owners_and_the_refund_policy,
            a_top_up_over_crumbs_pays_for_the_oldest_money_once,
            racing_replays_of_one_key_debit_once,
            a_key_reused_for_another_order_is_refused,
            a_pending_order_is_canceled_once_and_its_pool_forms_without_it,
            a_cancel_racing_the_crossing_order_takes_the_order_or_leaves_it,
            a_pool_that_waited_too_long_is_completed_by_the_house,
            a_house_that_cannot_pay_buys_nothing,
            the_refund_policy_cancels_the_orders_that_waited_too_long,
            a_replay_hands_a_batch_still_ready_to_settlement_again,
            a_batch_is_claimed_by_one_attempt_at_a_time,
            a_late_attempt_can_change_nothing,
            racing_claims_let_one_attempt_through,
            a_refusal_is_final_and_refunds_each_member_once_in_chunks,
            racing_refunds_credit_each_order_once,
            open_batches_are_those_not_final_and_resends_are_recorded_once,
            seeding_opens_missing_accounts_only_and_deposits_credit_once,
            deposits_stop_at_the_balance_ceiling_racing_or_not,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let stores = ($factory)().await;
                $crate::store_contract::$case(stores).await;
            }
        )*
    };
}
