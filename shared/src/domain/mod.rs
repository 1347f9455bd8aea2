//! Domain types and rules. No AWS, no HTTP: everything here is pure and
//! parsed once, so the rest of the code never re-checks an amount or a coin.

pub mod batching;
pub mod coin;
pub mod ids;
pub mod money;
pub mod order;
pub mod quantity;

pub use batching::{Placement, PoolState, decide};
pub use coin::{Coin, PriceList, UnknownCoin};
pub use ids::{BatchId, IdempotencyKey, InvalidId, OrderId, UserId};
pub use money::{Usd, format_decimal};
pub use order::{Batch, BatchStatus, Membership, Order, OrderStatus, OrderView};
pub use quantity::{InvalidAmount, Quantity};
