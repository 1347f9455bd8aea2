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

/// A placement whose first send went unanswered (it may still reach the
/// table) and whose later sends are all cancelled or throttled: the client
/// is told the outcome is unknown, never busy ("nothing changed").
#[tokio::test]
async fn a_placement_with_an_unanswered_send_is_never_answered_nothing_changed() {
    use std::sync::atomic::{AtomicU64, Ordering};

    use shared::ports::{Accounts, Orders, PlaceError};
    use testkit::faults::{Fault, FaultyTable, Operation};
    use testkit::store_contract::{order, usd, user};

    for after in [Fault::Conflict, Fault::Throttle] {
        let transactions = Arc::new(AtomicU64::new(0));
        let plan = {
            let transactions = Arc::clone(&transactions);
            move |operation: Operation| match operation {
                Operation::Transact if transactions.fetch_add(1, Ordering::SeqCst) == 0 => Fault::NoAnswer,
                Operation::Transact => after,
                _ => Fault::None,
            }
        };
        let memory = Arc::new(MemoryTable::new());
        let setup = DynamoStore::on(Arc::clone(&memory) as Arc<dyn Table>);
        setup.open_account(&user("alice"), usd("100")).await.unwrap();
        let store = DynamoStore::on(Arc::new(FaultyTable::new(memory, Arc::new(plan))));
        for amount in ["1", "3"] {
            transactions.store(0, Ordering::SeqCst);
            let result = store.place_order(order("alice", amount), usd("10")).await;
            assert!(matches!(result, Err(PlaceError::OutcomeUnknown(_))), "{after:?}, ${amount}: {result:?}");
        }
    }
}

/// A deposit whose first send committed and whose replies, resends' too,
/// were all lost: the retry is the same logical write (one token), so it is
/// answered as credited by this call, not as a deposit credited before.
#[tokio::test]
async fn a_write_whose_every_reply_was_lost_is_not_taken_for_someone_elses() {
    use std::sync::atomic::{AtomicU64, Ordering};

    use shared::domain::DepositId;
    use shared::ports::{Accounts, Deposited, Orders};
    use testkit::faults::{Fault, FaultyTable, Operation};
    use testkit::store_contract::{usd, user};

    let transactions = Arc::new(AtomicU64::new(0));
    let plan = {
        let transactions = Arc::clone(&transactions);
        move |operation: Operation| match operation {
            Operation::Transact if transactions.fetch_add(1, Ordering::SeqCst) < 3 => Fault::LoseReply,
            _ => Fault::None,
        }
    };
    let store = DynamoStore::on(Arc::new(FaultyTable::new(Arc::new(MemoryTable::new()), Arc::new(plan))));
    let deposited = store.deposit(&user("alice"), &DepositId::parse("wire-1").unwrap(), usd("25")).await.unwrap();
    assert_eq!(deposited, Deposited::Credited { balance: usd("25") });
    assert_eq!(store.balance(&user("alice")).await.unwrap(), usd("25"));
}

/// An audit of a live table: a read torn by writes between its pages shows
/// a discrepancy the next read does not; one at rest shows in every read and
/// is named.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_live_audit_tells_writes_in_flight_from_discrepancies() {
    use std::sync::Mutex;

    use shared::audit::audit_live;
    use shared::ports::{Accounts, LedgerRecords, Orders};
    use testkit::store_contract::{order, usd, user};

    let store = DynamoStore::on(Arc::new(MemoryTable::new()) as Arc<dyn Table>);
    store.open_account(&user("alice"), usd("100")).await.unwrap();
    for amount in ["1", "0.5", "3"] {
        store.place_order(order("alice", amount), usd("10")).await.unwrap();
    }
    let at_rest = store.ledger().await.unwrap();
    // A scan that read alice's account before her last order and the
    // order's pool after it: her balance and her orders disagree.
    let mut torn = at_rest.clone();
    torn.orders.pop();
    let reads = Mutex::new(vec![at_rest.clone(), torn]);
    let next = || {
        let ledger = reads.lock().unwrap().pop().unwrap_or_else(|| at_rest.clone());
        async move { Ok::<_, std::convert::Infallible>(ledger) }
    };
    let live = audit_live(next, usd("10"), None, 3, std::time::Duration::from_secs(2)).await.unwrap();
    assert!(live.report.is_clean(), "{}", live.report);
    assert!(live.in_flight > 0);

    // A busy account and pool, torn in every read, but each time by other
    // figures (each read misses the order placed just before it).
    let mut torn_reads = Vec::new();
    for amount in ["0.25", "0.75", "1.25"] {
        store.place_order(order("alice", amount), usd("10")).await.unwrap();
        let mut torn = store.ledger().await.unwrap();
        torn.orders.retain(|o| o.amount.to_string() != amount);
        torn_reads.insert(0, torn);
    }
    let reads = Mutex::new(torn_reads);
    let next = || {
        let ledger = reads.lock().unwrap().pop().expect("three reads");
        async move { Ok::<_, std::convert::Infallible>(ledger) }
    };
    let live = audit_live(next, usd("10"), None, 3, std::time::Duration::from_secs(2)).await.unwrap();
    assert!(live.report.is_clean(), "{}", live.report);
    assert!(live.in_flight > 0);
    let at_rest = store.ledger().await.unwrap();

    // A balance written by hand is wrong in every read, and named.
    let mut corrupt = at_rest.clone();
    corrupt.accounts[0].1 = usd("1000");
    let read = || {
        let ledger = corrupt.clone();
        async move { Ok::<_, std::convert::Infallible>(ledger) }
    };
    let live = audit_live(read, usd("10"), None, 3, std::time::Duration::from_secs(2)).await.unwrap();
    assert_eq!(live.report.problems.len(), 1, "{}", live.report);
    assert!(live.report.to_string().contains("account alice holds 1000 USD"), "{}", live.report);
}

/// Another process's writes, landing between this one's requests: `first`
/// runs before this table's `get` number `at_get` (from 1), or, with none,
/// before its first transaction.
mod meanwhile {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::BoxFuture;
    use shared::adapters::dynamodb::table::intercepted::Intercepted;

    use super::*;

    /// A pool holding bob's $6 and alice's $2, on a fresh table; the store
    /// of another process on it; alice's order.
    pub async fn alices_order_in_a_pool() -> (Arc<dyn Table>, Arc<DynamoStore>, shared::domain::OrderId) {
        use shared::ports::{Accounts, Orders};
        use testkit::store_contract::{order, usd, user};
        let memory: Arc<dyn Table> = Arc::new(MemoryTable::new());
        let other = Arc::new(DynamoStore::on(Arc::clone(&memory)));
        for name in ["alice", "bob"] {
            other.open_account(&user(name), usd("100")).await.unwrap();
        }
        other.place_order(order("bob", "1.5"), usd("10")).await.unwrap();
        let target = other.place_order(order("alice", "0.5"), usd("10")).await.unwrap().order.order.id;
        (memory, other, target)
    }

    pub async fn assert_audit_clean(store: &DynamoStore) {
        use shared::ports::LedgerRecords;
        let report = shared::audit::audit(&store.ledger().await.unwrap(), testkit::store_contract::usd("10"));
        assert!(report.is_clean(), "{report}");
    }

    /// A store whose table lets `first` land at that point.
    pub fn store(inner: &Arc<dyn Table>, at_get: Option<usize>, first: BoxFuture<'static, ()>) -> DynamoStore {
        let first = Arc::new(Mutex::new(Some(first)));
        let gets = Arc::new(AtomicUsize::new(0));
        DynamoStore::on(Arc::new(Intercepted::new(Arc::clone(inner), move |request| {
            let now = match (request, at_get) {
                ("get", Some(at)) => gets.fetch_add(1, Ordering::SeqCst) + 1 == at,
                ("transact", None) => true,
                _ => false,
            };
            let first = if now { first.lock().unwrap().take() } else { None };
            Box::pin(async move {
                if let Some(first) = first {
                    first.await;
                }
                Ok(())
            })
        })))
    }
}

/// The pool closes after a cancel read it open and before the cancel's
/// transaction: the shard's condition (the pool still open) refuses the
/// cancel, which then answers the order in its batch. Without the
/// condition the order would be both in the batch and canceled.
#[tokio::test]
async fn a_pool_closed_between_a_cancels_read_and_its_write_keeps_the_order() {
    use shared::domain::OrderStatus;
    use shared::ports::{CancelError, Orders};
    use testkit::store_contract::{order, usd, user};

    let (memory, other, target) = meanwhile::alices_order_in_a_pool().await;
    let crossing = {
        let other = Arc::clone(&other);
        Box::pin(async move {
            let placed = other.place_order(order("bob", "0.5"), usd("10")).await.unwrap();
            assert!(placed.formed.is_some(), "$6 + $2 + $2 closes the pool");
        })
    };
    let canceling = meanwhile::store(&memory, None, crossing);

    match canceling.cancel_order(&user("alice"), target).await {
        Err(CancelError::NotPending(view)) => assert_eq!(view.status, OrderStatus::Settling),
        other => panic!("the cancel took an order its pool had closed over: {other:?}"),
    }
    assert_eq!(other.balance(&user("alice")).await.unwrap(), usd("98"));
    meanwhile::assert_audit_clean(&other).await;
}

/// A cancel reads the order pending; before it reads the order's pool,
/// another cancel of the same order commits and the pool closes without
/// it. The first cancel finds the pool closed: the order is canceled (the
/// batch it sees is not the order's), not "settling". (Found by the
/// simulation's seed 81.)
#[tokio::test]
async fn a_cancel_that_finds_the_pool_closed_reads_the_order_again() {
    use shared::domain::OrderStatus;
    use shared::ports::Orders;
    use testkit::store_contract::{order, usd, user};

    let (memory, other, target) = meanwhile::alices_order_in_a_pool().await;
    let meanwhile = {
        let other = Arc::clone(&other);
        Box::pin(async move {
            assert!(other.cancel_order(&user("alice"), target).await.unwrap().now);
            let placed = other.place_order(order("bob", "1"), usd("10")).await.unwrap();
            assert!(placed.formed.is_some(), "$6 + $4 closes the pool without alice's order");
        })
    };
    // Its first read is the order; its second, the pool's pointer.
    let canceling = meanwhile::store(&memory, Some(2), meanwhile);

    let answer = canceling.cancel_order(&user("alice"), target).await.unwrap();
    assert_eq!((answer.now, answer.order.status, answer.order.batch_id), (false, OrderStatus::Canceled, None));
    assert_eq!(other.balance(&user("alice")).await.unwrap(), usd("100"));
    meanwhile::assert_audit_clean(&other).await;
}
