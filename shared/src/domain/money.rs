use std::fmt;
use std::ops::Add;

use rust_decimal::Decimal;

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
    fn subtraction_refuses_to_go_below_zero() {
        let ten = Usd::new(dec("10")).unwrap_or_default();
        let twelve = Usd::new(dec("12")).unwrap_or_default();
        assert_eq!(ten.checked_sub(twelve), None);
        assert_eq!(twelve.checked_sub(ten).map(|u| u.to_string()), Some("2".into()));
    }
}
