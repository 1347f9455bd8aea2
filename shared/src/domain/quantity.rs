use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

use super::decimal::{exact_sum, format_decimal};

/// An amount of a coin that a customer may order: a plain decimal, greater
/// than zero, at most [`Quantity::MAX_SCALE`] decimal places (trailing zeros
/// aside) and at most [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(Decimal);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAmount {
    #[error(
        "the amount must be a plain decimal such as \"3\" or \"0.25\" (digits and at most one point; no sign, exponent, NaN or Infinity)"
    )]
    NotPlainDecimal,
    #[error("the amount must be greater than zero")]
    NotPositive,
    #[error("the amount may have at most {max} decimal places")]
    TooPrecise { max: u32 },
    #[error("the amount may be at most {max}")]
    TooLarge { max: &'static str },
    #[error("the cost of this amount at the coin's price cannot be computed exactly")]
    CostNotExact,
}

impl Quantity {
    pub const MAX_SCALE: u32 = 8;
    /// The largest amount an order may have.
    pub const MAX: Quantity = Quantity(Decimal::from_parts(1_000_000_000, 0, 0, false, 0));
    const MAX_TEXT: &'static str = "1000000000";
    /// Digits allowed before the point once leading zeros are dropped.
    const MAX_INTEGER_DIGITS: usize = 10;

    /// Parses the exact text of a decimal. Works on the characters, never on
    /// a float, and checks sizes before building a `Decimal`, because
    /// `Decimal::from_str` silently rounds digits beyond its 28-digit range.
    pub fn parse(text: &str) -> Result<Quantity, InvalidAmount> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (int_part, frac_part) = match text.split_once('.') {
            Some((int_part, frac_part)) => (int_part, frac_part),
            None => (text, "0"),
        };
        let well_formed = digits(int_part) && digits(frac_part);
        if !well_formed {
            return Err(InvalidAmount::NotPlainDecimal);
        }
        let significant_int = int_part.trim_start_matches('0');
        if significant_int.len() > Self::MAX_INTEGER_DIGITS {
            return Err(InvalidAmount::TooLarge { max: Self::MAX_TEXT });
        }
        let significant_frac = frac_part.trim_end_matches('0');
        if significant_frac.len() > Self::MAX_SCALE as usize {
            return Err(InvalidAmount::TooPrecise { max: Self::MAX_SCALE });
        }
        let exact = format!(
            "{}.{}",
            if significant_int.is_empty() { "0" } else { significant_int },
            if significant_frac.is_empty() { "0" } else { significant_frac }
        );
        let value = Decimal::from_str(&exact).map_err(|_| InvalidAmount::NotPlainDecimal)?;
        Quantity::from_decimal(value)
    }

    /// Checks an already exact decimal (read back from storage, or a sum).
    pub fn from_decimal(value: Decimal) -> Result<Quantity, InvalidAmount> {
        let value = value.normalize();
        if value <= Decimal::ZERO {
            return Err(InvalidAmount::NotPositive);
        }
        if value.scale() > Self::MAX_SCALE {
            return Err(InvalidAmount::TooPrecise { max: Self::MAX_SCALE });
        }
        if value > Decimal::from(1_000_000_000u64) {
            return Err(InvalidAmount::TooLarge { max: Self::MAX_TEXT });
        }
        Ok(Quantity(value))
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_decimal(self.0))
    }
}

/// What a batch buys: the sum of its orders' amounts. Positive, with at
/// most [`Quantity::MAX_SCALE`] decimals like its parts, and without their
/// cap (a batch of many large orders may hold more than one order may).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchQuantity(Decimal);

impl BatchQuantity {
    /// A positive decimal of at most [`Quantity::MAX_SCALE`] places.
    pub fn from_decimal(value: Decimal) -> Option<BatchQuantity> {
        let value = value.normalize();
        (value > Decimal::ZERO && value.scale() <= Quantity::MAX_SCALE).then_some(BatchQuantity(value))
    }

    /// `sum + amount`, or `None` if a `Decimal` cannot hold it exactly.
    pub fn sum(sum: Decimal, amount: Quantity) -> Option<BatchQuantity> {
        exact_sum(sum, amount.value()).and_then(BatchQuantity::from_decimal)
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

impl From<Quantity> for BatchQuantity {
    fn from(amount: Quantity) -> BatchQuantity {
        BatchQuantity(amount.value())
    }
}

impl fmt::Display for BatchQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_decimal(self.0))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn plain_decimals_parse_exactly() {
        for (text, shown) in [
            ("3", "3"),
            ("0.25", "0.25"),
            ("0.250000000", "0.25"),
            ("007.50", "7.5"),
            ("0.00000001", "0.00000001"),
            ("1000000000", "1000000000"),
            ("1000000000.000", "1000000000"),
        ] {
            assert_eq!(Quantity::parse(text).map(|q| q.to_string()), Ok(shown.to_owned()), "{text}");
        }
    }

    #[test]
    fn anything_but_a_plain_decimal_is_refused() {
        for text in [
            "",
            " 1",
            "1 ",
            "-1",
            "+1",
            "1e3",
            "1E3",
            "NaN",
            "nan",
            "Infinity",
            "-Infinity",
            "inf",
            "1.",
            ".5",
            "1.2.3",
            "0x10",
            "1_000",
            "１",
            "1,5",
        ] {
            assert_eq!(Quantity::parse(text), Err(InvalidAmount::NotPlainDecimal), "{text:?}");
        }
    }

    #[test]
    fn the_largest_amount_is_one_billion() {
        assert_eq!(Quantity::parse("1000000000"), Ok(Quantity::MAX));
    }

    #[test]
    fn a_batch_quantity_has_no_cap_but_stays_exact() {
        let sum = BatchQuantity::sum(Decimal::from(999_999_999), Quantity::parse("1.5").unwrap()).unwrap();
        assert_eq!(sum.to_string(), "1000000000.5");
        assert_eq!(BatchQuantity::from_decimal(Decimal::ZERO), None);
        assert_eq!(BatchQuantity::from_decimal(Decimal::new(1, 9)), None);
    }

    #[test]
    fn zero_is_not_an_amount() {
        assert_eq!(Quantity::parse("0"), Err(InvalidAmount::NotPositive));
        assert_eq!(Quantity::parse("0.000"), Err(InvalidAmount::NotPositive));
        assert_eq!(Quantity::parse("00"), Err(InvalidAmount::NotPositive));
    }

    #[test]
    fn more_than_eight_decimal_places_are_refused_even_when_tiny() {
        assert_eq!(Quantity::parse("0.000000001"), Err(InvalidAmount::TooPrecise { max: 8 }));
        // Beyond Decimal's own 28 digits: must not be rounded into something valid.
        assert_eq!(Quantity::parse("0.2500000000000000000000000000001"), Err(InvalidAmount::TooPrecise { max: 8 }));
    }

    #[test]
    fn absurdly_large_amounts_are_refused() {
        assert!(matches!(Quantity::parse("1000000000.00000001"), Err(InvalidAmount::TooLarge { .. })));
        assert!(matches!(Quantity::parse("99999999999"), Err(InvalidAmount::TooLarge { .. })));
        let huge = "9".repeat(400);
        assert!(matches!(Quantity::parse(&huge), Err(InvalidAmount::TooLarge { .. })));
    }

    proptest! {
        #[test]
        fn any_valid_quantity_round_trips_through_its_text(units in 1i128..=100_000_000_000_000_000) {
            // Every quantity is a whole number of 1e-8 units, up to 1e9.
            let value = Decimal::from_i128_with_scale(units, 8);
            let q = Quantity::from_decimal(value).unwrap();
            prop_assert_eq!(Quantity::parse(&q.to_string()), Ok(q));
            prop_assert_eq!(q.value(), value.normalize());
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}") {
            let _ = Quantity::parse(&text);
        }
    }
}
