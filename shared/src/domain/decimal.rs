//! Exact decimal arithmetic: sums and products that are exact or refused,
//! never rounded (`Decimal`'s own operators round digits that do not fit,
//! silently), and the text money and quantities travel as.

use std::fmt;
use std::ops::AddAssign;

use rust_decimal::Decimal;

/// The largest mantissa a `Decimal` holds: 2^96 − 1.
pub(super) const MAX_MANTISSA: i128 = (1i128 << 96) - 1;
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

/// `a + b` without rounding: `Decimal`'s own addition drops the last digits
/// of a sum that does not fit, silently. Here the mantissas are added at
/// the larger scale in 128 bits, and only trailing zeros may be dropped to
/// make the sum fit; otherwise `None`.
pub fn exact_sum(a: Decimal, b: Decimal) -> Option<Decimal> {
    let (a, b) = (a.normalize(), b.normalize());
    let scale = a.scale().max(b.scale());
    let lift = |d: Decimal| d.mantissa().checked_mul(10i128.checked_pow(scale - d.scale())?);
    let mut mantissa = lift(a)?.checked_add(lift(b)?)?;
    let mut scale = scale;
    while mantissa.abs() > MAX_MANTISSA && scale > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    if mantissa.abs() > MAX_MANTISSA {
        return None;
    }
    Decimal::try_from_i128_with_scale(mantissa, scale).ok().map(|d| d.normalize())
}

/// A decimal's text, plain or with an exponent (`-3`, `3.50`, `1e9`,
/// `2.5E-3`), read exactly: `None` for anything else, or for a value a
/// `Decimal` could only hold rounded (`Decimal::from_str` rounds digits
/// past 28 silently).
pub fn exact_decimal(text: &str) -> Option<Decimal> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.strip_prefix('+').unwrap_or(exponent).parse::<i32>().ok()?),
        None => (text, 0),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let plain = match mantissa.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(mantissa),
    };
    // Past 28 either way no quantity fits (and `0e2000000000` must not loop).
    if !plain || exponent.unsigned_abs() > 28 {
        return None;
    }
    let mut value = Decimal::from_str_exact(mantissa).ok()?;
    if exponent >= 0 {
        for _ in 0..exponent {
            value = exact_product(value, Decimal::TEN)?;
        }
    } else {
        let scale = value.scale().checked_add(exponent.unsigned_abs())?;
        if scale > 28 {
            return None;
        }
        value.set_scale(scale).ok()?;
    }
    value.set_sign_negative(negative);
    Some(value)
}

/// A running sum that is exact, or knows it is not (the audit's totals).
///
/// It counts in 128 bits, wider than a `Decimal`'s 96: a whole table's
/// deposits, or one account's over its lifetime, may hold more digits
/// than any one balance (at money's 16 places, sums up to about 10^22
/// dollars stay exact), and the audit must be able to sum them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactSum(Option<Wide>);

/// `mantissa × 10^-scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wide {
    mantissa: i128,
    scale: u32,
}

impl Wide {
    fn of(value: Decimal) -> Wide {
        let value = value.normalize();
        Wide { mantissa: value.mantissa(), scale: value.scale() }
    }

    /// Both at the larger scale, or `None` when that does not fit.
    fn aligned(self, other: Wide) -> Option<(i128, i128, u32)> {
        let scale = self.scale.max(other.scale);
        let lift = |w: Wide| w.mantissa.checked_mul(10i128.checked_pow(scale - w.scale)?);
        Some((lift(self)?, lift(other)?, scale))
    }

    fn plus(self, other: Wide) -> Option<Wide> {
        let (a, b, scale) = self.aligned(other)?;
        let mut sum = Wide { mantissa: a.checked_add(b)?, scale };
        while sum.scale > 0 && sum.mantissa % 10 == 0 {
            sum.mantissa /= 10;
            sum.scale -= 1;
        }
        Some(sum)
    }
}

impl ExactSum {
    /// The sum as a `Decimal`, if every addition was exact and it fits one.
    pub fn value(self) -> Option<Decimal> {
        let sum = self.0?;
        (sum.mantissa.abs() <= MAX_MANTISSA && sum.scale <= MAX_SCALE)
            .then(|| Decimal::try_from_i128_with_scale(sum.mantissa, sum.scale).ok())
            .flatten()
    }

    /// Whether the sum is exactly `value`.
    pub fn is(self, value: Decimal) -> bool {
        self.0.and_then(|sum| sum.aligned(Wide::of(value))).is_some_and(|(a, b, _)| a == b)
    }
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum(Some(Wide { mantissa: 0, scale: 0 }))
    }
}

impl AddAssign<Decimal> for ExactSum {
    fn add_assign(&mut self, value: Decimal) {
        self.0 = self.0.and_then(|sum| sum.plus(Wide::of(value)));
    }
}

impl AddAssign<ExactSum> for ExactSum {
    fn add_assign(&mut self, other: ExactSum) {
        self.0 = self.0.zip(other.0).and_then(|(a, b)| a.plus(b));
    }
}

impl std::ops::SubAssign<Decimal> for ExactSum {
    fn sub_assign(&mut self, value: Decimal) {
        *self += -value;
    }
}

impl std::iter::Sum<Decimal> for ExactSum {
    fn sum<I: Iterator<Item = Decimal>>(values: I) -> ExactSum {
        let mut sum = ExactSum::default();
        for value in values {
            sum += value;
        }
        sum
    }
}

impl fmt::Display for ExactSum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(sum) = self.0 else { return f.write_str("(more digits than can be summed exactly)") };
        let unit = 10u128.pow(sum.scale);
        let (whole, fraction) = (sum.mantissa.unsigned_abs() / unit, sum.mantissa.unsigned_abs() % unit);
        let sign = if sum.mantissa < 0 { "-" } else { "" };
        if fraction == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{fraction:0width$}", width = sum.scale as usize);
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
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
