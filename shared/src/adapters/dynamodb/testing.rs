//! What the adapter's unit tests build their orders from.

#![allow(clippy::unwrap_used)]

use std::str::FromStr;

use rust_decimal::Decimal;
use time::OffsetDateTime;

use crate::domain::{Coin, NewOrder, OrderId, Quantity, Usd, UserId};

pub fn usd(text: &str) -> Usd {
    Usd::new(Decimal::from_str(text).unwrap()).unwrap()
}

/// `user` buys `amount` ABAN at $4, at `at`.
pub fn order_at(user: &str, amount: &str, at: OffsetDateTime) -> NewOrder {
    let amount = Quantity::parse(amount).unwrap();
    NewOrder {
        id: OrderId::generate(),
        user: UserId::parse(user).unwrap(),
        coin: Coin::from_trusted("ABAN"),
        amount,
        price: usd("4"),
        cost: Usd::cost(usd("4"), amount).unwrap(),
        idempotency_key: None,
        created_at: at,
    }
}
