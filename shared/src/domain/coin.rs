use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rust_decimal::Decimal;

use super::money::{Usd, prices_every_amount_exactly};

/// A coin symbol that is on the price list. Only [`PriceList::quote`] makes
/// one from client input, so holding a `Coin` means the coin is sold here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Coin(Arc<str>);

impl Coin {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For symbols read back from storage or configuration, which were
    /// checked when they were written.
    pub fn from_trusted(symbol: &str) -> Coin {
        Coin(Arc::from(symbol))
    }
}

impl fmt::Display for Coin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{symbol:?} is not a coin sold here; known coins: {known}")]
pub struct UnknownCoin {
    pub symbol: String,
    pub known: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPriceList {
    #[error("the price list is empty")]
    Empty,
    #[error("entry {0:?} is not SYMBOL=PRICE")]
    Entry(String),
    #[error("coin symbol {0:?} must be 1 to 16 characters A-Z or 0-9")]
    Symbol(String),
    #[error("price of {0} must be a positive decimal")]
    Price(String),
    #[error(
        "price of {0} has too many digits for every cost and sum of costs to be exact: at most 8 decimal places, and at most 792281625142 with the point removed"
    )]
    Inexact(String),
    #[error("coin {0} is priced twice")]
    Twice(String),
}

/// The coins sold and their USD prices. Configuration, not code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceList {
    prices: BTreeMap<Coin, Usd>,
}

impl PriceList {
    /// Parses `"ABAN=4,BTC=95000.5"`.
    pub fn parse(spec: &str) -> Result<PriceList, InvalidPriceList> {
        let mut prices = BTreeMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (symbol, price) = entry.split_once('=').ok_or_else(|| InvalidPriceList::Entry(entry.to_owned()))?;
            let symbol = symbol.trim();
            let valid_symbol = (1..=16).contains(&symbol.len())
                && symbol.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !valid_symbol {
                return Err(InvalidPriceList::Symbol(symbol.to_owned()));
            }
            let price = Decimal::from_str_exact(price.trim())
                .ok()
                .filter(|p| *p > Decimal::ZERO)
                .and_then(Usd::new)
                .ok_or_else(|| InvalidPriceList::Price(symbol.to_owned()))?;
            if !prices_every_amount_exactly(price) {
                return Err(InvalidPriceList::Inexact(symbol.to_owned()));
            }
            if prices.insert(Coin::from_trusted(symbol), price).is_some() {
                return Err(InvalidPriceList::Twice(symbol.to_owned()));
            }
        }
        if prices.is_empty() {
            return Err(InvalidPriceList::Empty);
        }
        Ok(PriceList { prices })
    }

    /// The coin and its price, for an exact, case-sensitive symbol.
    pub fn quote(&self, symbol: &str) -> Result<(Coin, Usd), UnknownCoin> {
        self.prices.get_key_value(symbol).map(|(coin, price)| (coin.clone(), *price)).ok_or_else(|| UnknownCoin {
            symbol: symbol.chars().take(32).collect(),
            known: self.prices.keys().map(Coin::as_str).collect::<Vec<_>>().join(", "),
        })
    }

    pub fn coins(&self) -> impl Iterator<Item = &Coin> {
        self.prices.keys()
    }
}

impl std::borrow::Borrow<str> for Coin {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Default for PriceList {
    /// ABAN at 4 USD, the challenge's example.
    fn default() -> Self {
        PriceList {
            prices: BTreeMap::from([(Coin::from_trusted("ABAN"), Usd::new(Decimal::from(4)).unwrap_or_default())]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_price_list_sells_aban_at_four_dollars() {
        let (coin, price) = PriceList::default().quote("ABAN").unwrap();
        assert_eq!(coin.as_str(), "ABAN");
        assert_eq!(price.to_string(), "4");
    }

    #[test]
    fn symbols_are_case_sensitive() {
        let err = PriceList::default().quote("aban").unwrap_err();
        assert_eq!(err.symbol, "aban");
        assert_eq!(err.known, "ABAN");
    }

    #[test]
    fn price_lists_parse_from_configuration() {
        let list = PriceList::parse("ABAN=4, BTC=95000.50").unwrap();
        assert_eq!(list.quote("BTC").unwrap().1.to_string(), "95000.5");
        assert_eq!(PriceList::parse(""), Err(InvalidPriceList::Empty));
        assert_eq!(PriceList::parse("ABAN"), Err(InvalidPriceList::Entry("ABAN".into())));
        assert_eq!(PriceList::parse("aban=4"), Err(InvalidPriceList::Symbol("aban".into())));
        assert_eq!(PriceList::parse("ABAN=0"), Err(InvalidPriceList::Price("ABAN".into())));
        assert_eq!(PriceList::parse("ABAN=4,ABAN=5"), Err(InvalidPriceList::Twice("ABAN".into())));
        assert_eq!(PriceList::parse("ABAN=-4"), Err(InvalidPriceList::Price("ABAN".into())));
    }

    #[test]
    fn prices_that_could_make_a_cost_inexact_are_refused() {
        // 1e-21 × 0.00000001 has 29 decimal places: a Decimal would round it to 0.
        assert!(PriceList::parse("TINY=0.000000000000000000001").is_err());
    }
}
