//! `orders-admin` as an operator runs it, against a table on ministack
//! (started by ./scripts/test; its endpoint is MINISTACK_ENDPOINT).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Command, Output};

use aws_sdk_dynamodb::types::AttributeValue;
use shared::adapters::dynamodb::schema;

const BIN: &str = env!("CARGO_BIN_EXE_orders-admin");

fn endpoint() -> String {
    std::env::var("MINISTACK_ENDPOINT")
        .expect("MINISTACK_ENDPOINT is not set: run ./scripts/test, which starts ministack, or point it at one")
}

fn admin(table: &str, args: &[&str]) -> (Output, String) {
    let output = Command::new(BIN)
        .args(["--table", table])
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output, text)
}

/// A client of ministack's DynamoDB and a fresh table of the service's schema on it.
async fn fresh_table() -> (aws_sdk_dynamodb::Client, String) {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test"))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("admin-{}", ulid::Ulid::new().to_string().to_lowercase());
    schema::ensure_table(&client, &table).await.unwrap();
    (client, table)
}

#[tokio::test]
async fn deposits_credit_once_per_id_and_the_audit_finds_money_that_came_from_nowhere() {
    let (client, table) = fresh_table().await;

    let (output, text) = admin(&table, &["deposit", "--user", "alice", "--usd", "100.50", "--id", "wire-1"]);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("credited 100.5 USD to alice; balance 100.5 USD"), "{text}");
    let (output, text) = admin(&table, &["deposit", "--user", "alice", "--usd", "100.50", "--id", "wire-1"]);
    assert!(output.status.success() && text.contains("credited before; nothing changed"), "{text}");
    let (output, text) = admin(&table, &["deposit", "--user", "alice", "--usd", "7", "--id", "wire-1"]);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("deposit wire-1 was credited before with 100.5 USD, not 7 USD"), "{text}");
    // More precision than money has is refused, never rounded away: 1e-27,
    // then 1e11, used to leave a balance of 1e11 and a clean audit.
    for bad in [["--usd", "-5"], ["--usd", "1e3"], ["--usd", "0"], ["--usd", "0.000000000000000000000000001"]] {
        let (output, text) = admin(&table, &["deposit", "--user", "bob", bad[0], bad[1], "--id", "x"]);
        assert_eq!(output.status.code(), Some(2), "{text}");
        let refused = format!("--usd \"{}\" is not a positive plain decimal of at most 16 decimal places", bad[1]);
        assert!(text.contains(&refused), "{text}");
    }
    let (output, text) = admin(&table, &["deposit", "--user", "bob", "--usd", "100000000000", "--id", "w2"]);
    assert!(output.status.success() && text.contains("balance 100000000000 USD"), "{text}");
    // The ceiling: a cent more is refused, naming the account and the ceiling.
    let (output, text) = admin(&table, &["deposit", "--user", "bob", "--usd", "0.01", "--id", "w3"]);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("would take account bob (holding 100000000000 USD) past the balance ceiling of 100000000000 USD"),
        "{text}"
    );

    let (output, text) = admin(&table, &["audit"]);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("no discrepancies") && text.contains("deposited 100000000100.5"), "{text}");

    // A balance written by hand, as the old seeding did: money from nowhere.
    let account = HashMap::from([
        ("PK".to_owned(), AttributeValue::S("ACCOUNT#alice".into())),
        ("SK".to_owned(), AttributeValue::S("ACCOUNT".into())),
        ("user_id".to_owned(), AttributeValue::S("alice".into())),
        ("balance_usd".to_owned(), AttributeValue::N("1000".into())),
    ]);
    client.put_item().table_name(&table).set_item(Some(account)).send().await.unwrap();
    let (output, text) = admin(&table, &["audit"]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("account alice holds 1000 USD; its deposits, orders and refunds make 100.5"), "{text}");
}

/// `orders-admin pools`: what each coin's pool holds, and its oldest
/// pending order, as a person at a terminal reads it.
#[tokio::test]
async fn pools_shows_what_each_coins_pool_holds_and_its_oldest_order() {
    use shared::adapters::dynamodb::DynamoStore;
    use shared::domain::{Coin, NewOrder, OrderId, Quantity, Usd, UserId};
    use shared::ports::{Accounts, Orders};

    let (client, table) = fresh_table().await;
    let (output, text) = admin(&table, &["pools"]);
    assert!(output.status.success() && !text.contains("ABAN"), "{text}");

    let store = DynamoStore::new(client, table.clone());
    let alice = UserId::parse("alice").unwrap();
    store.open_account(&alice, Usd::new(100.into()).unwrap()).await.unwrap();
    let placed_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(3);
    for amount in ["1", "0.5"] {
        let amount = Quantity::parse(amount).unwrap();
        let price = Usd::new(4.into()).unwrap();
        let order = NewOrder {
            id: OrderId::generate(),
            user: alice.clone(),
            coin: Coin::from_trusted("ABAN"),
            amount,
            price,
            cost: Usd::cost(price, amount).unwrap(),
            idempotency_key: None,
            created_at: placed_at,
        };
        store.place_order(order, Usd::new(10.into()).unwrap()).await.unwrap();
    }

    let (output, text) = admin(&table, &["pools"]);
    assert!(output.status.success(), "{text}");
    let line = text.lines().find(|l| l.starts_with("ABAN")).unwrap_or_else(|| panic!("{text}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[..5], ["ABAN", "1/1", "6", "1.5", "2"], "{text}");
    assert!(line.contains("(3m "), "{text}");

    // Once it is bought, nothing pending: a pool of nothing.
    let order = NewOrder {
        id: OrderId::generate(),
        user: alice.clone(),
        coin: Coin::from_trusted("ABAN"),
        amount: Quantity::parse("1").unwrap(),
        price: Usd::new(4.into()).unwrap(),
        cost: Usd::new(4.into()).unwrap(),
        idempotency_key: None,
        created_at: time::OffsetDateTime::now_utc(),
    };
    assert!(store.place_order(order, Usd::new(10.into()).unwrap()).await.unwrap().formed.is_some());
    let (output, text) = admin(&table, &["pools"]);
    assert!(output.status.success(), "{text}");
    let line = text.lines().find(|l| l.starts_with("ABAN")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["ABAN", "0/1", "0", "0", "0", "-"], "{text}");
}
