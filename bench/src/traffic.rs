//! The orders a run places: which coin (one, or many with Zipf
//! popularity), which user (uniform over many), what size (small, pooled;
//! or the minimum and more, bought alone), with or without an
//! `Idempotency-Key`; and when (Poisson arrivals at a rate).

use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rust_decimal::Decimal;
use shared::domain::{Coin, IdempotencyKey, NewOrder, OrderId, Quantity, Usd, UserId};

pub fn usd(text: &str) -> Usd {
    Usd::new(Decimal::from_str(text).unwrap()).unwrap()
}

/// Every coin costs this much here: sizes are what matter.
pub const PRICE: &str = "4";

/// What a run's orders look like.
#[derive(Debug, Clone)]
pub struct Mix {
    pub coins: Vec<Coin>,
    /// Cumulative popularity of `coins` (Zipf, exponent 1), ending at 1.
    cumulative: Vec<f64>,
    pub users: usize,
    /// Share of orders of the minimum or more ($10 to $50).
    pub big_share: f64,
    /// Share of orders sent with an `Idempotency-Key`.
    pub key_share: f64,
}

impl Mix {
    /// `coins` coins (one: ABAN; more: C000, C001, … with Zipf popularity).
    pub fn new(coins: usize, users: usize, big_share: f64, key_share: f64) -> Mix {
        let coins: Vec<Coin> = if coins <= 1 {
            vec![Coin::from_trusted("ABAN")]
        } else {
            (0..coins).map(|i| Coin::from_trusted(&format!("C{i:03}"))).collect()
        };
        let weights: Vec<f64> = (1..=coins.len()).map(|rank| 1.0 / rank as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut running = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                running += w / total;
                running
            })
            .collect();
        Mix { coins, cumulative, users, big_share, key_share }
    }

    /// The share of all orders that go to the most popular coin.
    pub fn top_share(&self) -> f64 {
        self.cumulative.first().copied().unwrap_or(1.0)
    }

    pub fn user(index: usize) -> UserId {
        UserId::parse(&format!("u{index}")).unwrap()
    }

    fn coin(&self, rng: &mut StdRng) -> Coin {
        let x: f64 = rng.random_range(0.0..1.0);
        let at = self.cumulative.partition_point(|c| *c < x).min(self.coins.len() - 1);
        self.coins[at].clone()
    }

    pub fn order(&self, rng: &mut StdRng, serial: u64) -> NewOrder {
        let big = rng.random_range(0.0..1.0) < self.big_share;
        // $1 to $8, or $10 to $50, in quarters of a coin at $4.
        let quarters = if big { rng.random_range(10..=50) } else { rng.random_range(1..=8) };
        let amount = Quantity::from_decimal(Decimal::new(quarters * 25, 2)).unwrap();
        let price = usd(PRICE);
        let key = (rng.random_range(0.0..1.0) < self.key_share)
            .then(|| IdempotencyKey::parse(&format!("k{serial}")).unwrap());
        NewOrder {
            id: OrderId::generate(),
            user: Mix::user(rng.random_range(0..self.users)),
            coin: self.coin(rng),
            amount,
            price,
            cost: Usd::cost(price, amount).unwrap(),
            idempotency_key: key,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }
}

/// The time to the next arrival of a Poisson process of `rate` a second.
pub fn next_arrival(rng: &mut StdRng, rate: f64) -> Duration {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    Duration::from_secs_f64(-u.ln() / rate)
}
