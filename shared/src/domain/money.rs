use std::fmt;

use rust_decimal::Decimal;

use super::decimal::{MAX_MANTISSA, exact_product, exact_sum, format_decimal};
use super::quantity::Quantity;

/// An exact, non-negative amount of US dollars.
///
/// Costs are `price × amount` computed exactly; nothing is ever rounded.
/// Money has at most [`Usd::MAX_SCALE`] decimal places: a price has at most
/// [`PRICE_SCALE`], an amount at most [`Quantity::MAX_SCALE`], so every cost
/// has at most their sum, and deposits are held to the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(Decimal);

/// The most decimal places a price has.
pub const PRICE_SCALE: u32 = 8;

impl Usd {
    pub const ZERO: Usd = Usd(Decimal::ZERO);
    /// The most decimal places money has: a price's and an amount's.
    pub const MAX_SCALE: u32 = PRICE_SCALE + Quantity::MAX_SCALE;
    /// The most digits before the point a deposit or a balance given as text
    /// has (under a trillion dollars): with [`Usd::MAX_SCALE`] places, 28
    /// digits, what a `Decimal` holds exactly.
    pub const MAX_WHOLE_DIGITS: usize = 12;
    /// The most an account may hold after a deposit or as its opening
    /// balance: 100,000,000,000 USD. A balance is read into a `Decimal`,
    /// exact up to about 7.9 × 10^12 at money's 16 places; the ceiling
    /// leaves 79 times itself for refunds of orders placed from it. Only a
    /// refund credits past the ceiling, and only what the account paid.
    pub const BALANCE_CEILING: Usd = Usd(Decimal::from_parts(0x4876_E800, 0x17, 0, false, 0));

    /// `None` for a negative value: a balance or a cost is never below zero.
    pub fn new(value: Decimal) -> Option<Usd> {
        (!value.is_sign_negative() || value.is_zero()).then(|| Usd(value.normalize()))
    }

    pub fn value(self) -> Decimal {
        self.0
    }

    /// `None` when the result would be negative (the debit check).
    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).and_then(Usd::new)
    }

    /// The exact sum, or `None` when a `Decimal` cannot hold it exactly
    /// (its own addition would round it).
    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        exact_sum(self.0, other.0).map(Usd)
    }

    /// A plain decimal's exact text (`"100"`, `"12.50"`: digits and at most
    /// one point; no sign, no exponent) with at most [`Usd::MAX_SCALE`]
    /// places and [`Usd::MAX_WHOLE_DIGITS`] digits before the point, or
    /// `None`. Never rounded.
    pub fn parse(text: &str) -> Option<Usd> {
        let (int_part, frac_part) = text.split_once('.').unwrap_or((text, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int_part) || !digits(frac_part) {
            return None;
        }
        let whole = int_part.trim_start_matches('0').len();
        let places = frac_part.trim_end_matches('0').len();
        if whole > Self::MAX_WHOLE_DIGITS || places > Self::MAX_SCALE as usize {
            return None;
        }
        Decimal::from_str_exact(text).ok().and_then(Usd::new)
    }

    /// `price × amount`, exactly, or `None` when a `Decimal` cannot hold the
    /// exact product (it would round it).
    pub fn cost(price: Usd, amount: Quantity) -> Option<Usd> {
        exact_product(price.0, amount.value()).and_then(Usd::new)
    }
}

/// Whether every cost `price × amount` of a valid amount (at most
/// [`Quantity::MAX`] with [`Quantity::MAX_SCALE`] decimals) is exact, and
/// the price has at most [`PRICE_SCALE`] places (so every cost has at most
/// [`Usd::MAX_SCALE`], and sums of costs stay exact).
pub fn prices_every_amount_exactly(price: Usd) -> bool {
    let price = price.0.normalize();
    let largest_amount_mantissa = Quantity::MAX.value().mantissa() * 10i128.pow(Quantity::MAX_SCALE);
    price.scale() <= PRICE_SCALE
        && price.mantissa().checked_mul(largest_amount_mantissa).is_some_and(|m| m <= MAX_MANTISSA)
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_decimal(self.0))
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::domain::decimal::ExactSum;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap_or_default()
    }

    #[test]
    fn the_balance_ceiling_is_a_hundred_billion_and_readable_many_times_over() {
        assert_eq!(Usd::BALANCE_CEILING.to_string(), "100000000000");
        // 79 ceilings and the finest cent-fraction still sum exactly.
        let mut sum = Usd::ZERO;
        for _ in 0..79 {
            sum = sum.checked_add(Usd::BALANCE_CEILING).unwrap();
        }
        assert!(sum.checked_add(Usd::new(dec("0.0000000000000001")).unwrap()).is_some());
    }

    #[test]
    fn negative_amounts_are_not_dollars() {
        assert!(Usd::new(dec("-0.01")).is_none());
        assert!(Usd::new(dec("0")).is_some());
    }

    #[test]
    fn dollars_print_without_trailing_zeros() {
        assert_eq!(Usd::new(dec("12.50")).map(|u| u.to_string()), Some("12.5".into()));
        assert_eq!(Usd::new(dec("88.000")).map(|u| u.to_string()), Some("88".into()));
        assert_eq!(format_decimal(dec("-0.0")), "0");
        assert_eq!(format_decimal(dec("4000000000")), "4000000000");
    }

    #[test]
    fn dollars_parse_from_plain_decimals_only_and_exactly() {
        assert_eq!(Usd::parse("100").map(|u| u.to_string()), Some("100".into()));
        assert_eq!(Usd::parse("012.50").map(|u| u.to_string()), Some("12.5".into()));
        for bad in ["", "-1", "+1", "1e3", "1.", ".5", "1.2.3", "NaN", " 1", "1,5", "99999999999999999999999999999"] {
            assert_eq!(Usd::parse(bad), None, "{bad:?}");
        }
        // At most the precision money has: 16 places, under a trillion.
        assert!(Usd::parse("0.0000000000000001").is_some());
        assert!(Usd::parse("999999999999.9999999999999999").is_some());
        for too_precise in ["0.000000000000000000000000001", "0.00000000000000001", "1000000000000"] {
            assert_eq!(Usd::parse(too_precise), None, "{too_precise:?}");
        }
    }

    #[test]
    fn costs_are_exact_or_refused() {
        let price = Usd::new(dec("4")).unwrap();
        let amount = Quantity::parse("0.00000001").unwrap();
        assert_eq!(Usd::cost(price, amount).map(|c| c.to_string()), Some("0.00000004".into()));
        // Decimal's own product rounds 1e-21 × 1e-8 to zero.
        let tiny = Usd::new(dec("0.000000000000000000001")).unwrap();
        assert_eq!(tiny.value() * amount.value(), Decimal::ZERO);
        assert_eq!(Usd::cost(tiny, amount), None);
        // Trailing zeros may go: 2.5 × 4 = 10 whatever the scales.
        assert_eq!(exact_product(dec("2.50000000"), dec("4.0")), Some(dec("10")));
        assert_eq!(exact_product(dec("79228162514264337593543950335"), dec("2")), None);
    }

    #[test]
    fn a_price_list_entry_is_exact_for_every_amount_or_refused() {
        assert!(prices_every_amount_exactly(Usd::new(dec("4")).unwrap()));
        assert!(prices_every_amount_exactly(Usd::new(dec("95000.5")).unwrap()));
        assert!(prices_every_amount_exactly(Usd::new(dec("0.00000001")).unwrap()));
        // More places than a price has: sums of its costs could round.
        assert!(!prices_every_amount_exactly(Usd::new(dec("0.000000001")).unwrap()));
        assert!(!prices_every_amount_exactly(Usd::new(dec("0.00000000000000000001")).unwrap()));
        assert!(!prices_every_amount_exactly(Usd::new(dec("1234567890123.5")).unwrap()));
        let largest = Quantity::MAX;
        for price in ["4", "95000.5", "0.00000001", "792281625142"] {
            let price = Usd::new(dec(price)).unwrap();
            assert!(prices_every_amount_exactly(price), "{price}");
            assert!(Usd::cost(price, largest).is_some(), "{price}");
        }
    }

    #[test]
    fn sums_are_exact_or_refused() {
        // Decimal's own sum drops the last digit of 8e27 + 0.1.
        let (big, tenth) = (dec("8000000000000000000000000000"), dec("0.1"));
        assert_ne!((big + tenth) - big, tenth);
        assert_eq!(exact_sum(big, tenth), None);
        assert_eq!(exact_sum(dec("9.99"), dec("0.01")), Some(dec("10")));
        assert_eq!(
            exact_sum(dec("79228162514264337593543950330"), dec("5")),
            Some(dec("79228162514264337593543950335"))
        );
        let mut sum = ExactSum::default();
        sum += dec("0.1");
        sum += dec("0.2");
        assert!(sum.is(dec("0.3")));
        // Wider than a Decimal: 8e27 + 0.3 is summed exactly, and printed,
        // though no Decimal holds it.
        sum += big;
        assert_eq!(sum.value(), None);
        assert_eq!(sum.to_string(), "8000000000000000000000000000.3");
        assert!(!sum.is(big));
        sum -= big;
        assert!(sum.is(dec("0.3")));
        // Eight deposits each at the most digits a deposit has: more than a
        // Decimal holds, summed exactly all the same.
        let most = dec("999999999999.9999999999999999");
        let eight: ExactSum = std::iter::repeat_n(most, 8).sum();
        assert_eq!(eight.to_string(), "7999999999999.9999999999999992");
        let mut past = ExactSum::default();
        past += dec("0.0000000000000000000000000001");
        past += big;
        assert_eq!(past.value(), None);
        assert_eq!(past.to_string(), "(more digits than can be summed exactly)");
        let mut negative = ExactSum::default();
        negative -= dec("2.50");
        assert_eq!(negative.to_string(), "-2.5");
    }

    #[test]
    fn subtraction_refuses_to_go_below_zero() {
        let ten = Usd::new(dec("10")).unwrap_or_default();
        let twelve = Usd::new(dec("12")).unwrap_or_default();
        assert_eq!(ten.checked_sub(twelve), None);
        assert_eq!(twelve.checked_sub(ten).map(|u| u.to_string()), Some("2".into()));
    }
}
