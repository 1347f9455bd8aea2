//! Domain types and rules. No AWS, no HTTP: everything here is pure and
//! parsed once, so the rest of the code never re-checks an amount or a coin.

pub mod coin;
pub mod decimal;
pub mod ids;
pub mod money;
pub mod order;
pub mod pooling;
pub mod quantity;

pub use coin::{Coin, PriceList, UnknownCoin};
pub use decimal::{ExactSum, exact_decimal, exact_product, exact_sum, format_decimal};
pub use ids::{BatchId, DepositId, IdempotencyKey, InvalidId, OrderId, UserId, reproducible_ids};
pub use money::{PRICE_SCALE, Usd};
pub use order::{
    Batch, BatchStatus, Membership, NewOrder, Order, OrderStatus, OrderView, RECHECKS_AFTER_REFUND, ResendPolicy,
};
pub use pooling::placement::Placement;
pub use pooling::shards::{ShardCount, ShardRules};
pub use pooling::sweep::{SweepRules, SweepStep};
pub use pooling::{BatchTotals, Member, PoolId, PoolOverflow, SHARDS_PER_CLOSE, ShardPool};
pub use quantity::{BatchQuantity, InvalidAmount, Quantity};
