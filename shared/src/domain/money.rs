use std::fmt;
use std::ops::Add;

use rust_decimal::Decimal;

use super::quantity::Quantity;

/// An exact, non-negative amount of US dollars.
///
/// Costs are `price × amount` computed exactly; nothing is ever rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(Decimal);

impl Usd {
    pub const ZERO: Usd = Usd(Decimal::ZERO);

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

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(|v| Usd(v.normalize()))
    }

    /// A plain decimal's exact text (`"100"`, `"12.50"`: digits and at most
    /// one point; no sign, no exponent), or `None`. Never rounded: text with
    /// more digits than a `Decimal` holds is refused.
    pub fn parse(text: &str) -> Option<Usd> {
        let (int_part, frac_part) = text.split_once('.').unwrap_or((text, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int_part) || !digits(frac_part) {
            return None;
        }
        let significant = int_part.trim_start_matches('0').len() + frac_part.trim_end_matches('0').len();
        if significant > MAX_SCALE as usize {
            return None;
        }
        text.parse::<Decimal>().ok().and_then(Usd::new)
    }

    /// `price × amount`, exactly, or `None` when a `Decimal` cannot hold the
    /// exact product (it would round it).
    pub fn cost(price: Usd, amount: Quantity) -> Option<Usd> {
        exact_product(price.0, amount.value()).and_then(Usd::new)
    }
}

/// The largest mantissa a `Decimal` holds: 2^96 − 1.
const MAX_MANTISSA: i128 = (1i128 << 96) - 1;
/// The most decimal places a `Decimal` holds.
const MAX_SCALE: u32 = 28;

/// `a × b` without rounding: `Decimal`'s own multiplication rounds a
/// product whose digits do not fit, silently. Here the product of the
/// mantissas is computed in 128 bits and only trailing zeros may be
/// dropped to make it fit; otherwise `None`.
pub fn exact_product(a: Decimal, b: Decimal) -> Option<Decimal> {
    let (a, b) = (a.normalize(), b.normalize());
    let mut mantissa = a.mantissa().checked_mul(b.mantissa())?;
    let mut scale = a.scale() + b.scale();
    while (scale > MAX_SCALE || mantissa.abs() > MAX_MANTISSA) && scale > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    if scale > MAX_SCALE || mantissa.abs() > MAX_MANTISSA {
        return None;
    }
    Decimal::try_from_i128_with_scale(mantissa, scale).ok()
}

/// Whether every cost `price × amount` of a valid amount (at most
/// [`Quantity::MAX`] with [`Quantity::MAX_SCALE`] decimals) is exact.
pub fn prices_every_amount_exactly(price: Usd) -> bool {
    let price = price.0.normalize();
    let largest_amount_mantissa = Quantity::MAX.value().mantissa() * 10i128.pow(Quantity::MAX_SCALE);
    price.scale() + Quantity::MAX_SCALE <= MAX_SCALE
        && price.mantissa().checked_mul(largest_amount_mantissa).is_some_and(|m| m <= MAX_MANTISSA)
}

impl Add for Usd {
    type Output = Usd;

    /// Sums of costs stay far below `Decimal::MAX` (amounts are capped at
    /// 1e9 and prices are configuration), so this saturates only in theory.
    fn add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0).normalize())
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_decimal(self.0))
    }
}

/// A decimal as the API and the exchange want it: no exponent, no trailing
/// zeros (`"12.5"`, `"88"`).
pub fn format_decimal(value: Decimal) -> String {
    let normalized = value.normalize();
    if normalized.is_zero() {
        return "0".to_owned();
    }
    normalized.to_string()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap_or_default()
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
        assert!(prices_every_amount_exactly(Usd::new(dec("0.00000000000000000001")).unwrap()));
        assert!(!prices_every_amount_exactly(Usd::new(dec("0.000000000000000000001")).unwrap()));
        assert!(!prices_every_amount_exactly(Usd::new(dec("1234567890123.5")).unwrap()));
        let largest = Quantity::MAX;
        for price in ["4", "95000.5", "0.00000000000000000001", "792281625142"] {
            let price = Usd::new(dec(price)).unwrap();
            assert!(prices_every_amount_exactly(price), "{price}");
            assert!(Usd::cost(price, largest).is_some(), "{price}");
        }
    }

    #[test]
    fn subtraction_refuses_to_go_below_zero() {
        let ten = Usd::new(dec("10")).unwrap_or_default();
        let twelve = Usd::new(dec("12")).unwrap_or_default();
        assert_eq!(ten.checked_sub(twelve), None);
        assert_eq!(twelve.checked_sub(ten).map(|u| u.to_string()), Some("2".into()));
    }
}
