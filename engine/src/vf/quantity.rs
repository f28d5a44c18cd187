//! Quantities and measures.
//!
//! A quantity is an exact decimal ([`rust_decimal::Decimal`]: a 96-bit integer mantissa with a
//! base-10 scale, 28 significant digits). Economic quantities are written in base 10 by people
//! (0.1 kg, 2.35 litres) and are summed many thousands of times in a fold: with binary floating
//! point `0.1 + 0.2 != 0.3` and the error grows with every event, so two replicas summing the
//! same events in the same order would agree but would not agree with the receipt on the stall.
//! A decimal is exact for every value a person types, `Copy`, allocation-free, and serialises
//! as a canonical string (`"2.5"`), which keeps the stored form and the views byte-identical
//! across platforms. See docs/data-model.md.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::vf::Id;

/// The largest magnitude a single recorded quantity may have (10^15).
///
/// With at most 10^9 events per ledger, a sum of such quantities stays below 10^24, far inside
/// the 28 digits of a [`Decimal`], so folds never overflow.
pub const MAX_QUANTITY: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0);

/// The most decimal places a recorded quantity may have.
pub const MAX_SCALE: u32 = 9;

/// An exact decimal quantity, serialised as a canonical decimal string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity(Decimal);

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity(Decimal::ZERO);

    /// The quantity as a [`Decimal`].
    pub fn value(self) -> Decimal {
        self.0
    }

    /// A quantity from an integer.
    pub fn from_i64(v: i64) -> Self {
        Quantity(Decimal::from(v))
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    /// Sum, or `None` on overflow.
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        self.0
            .checked_add(other.0)
            .map(|d| Quantity(d).normalized())
    }

    /// Difference, or `None` on overflow.
    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        self.0
            .checked_sub(other.0)
            .map(|d| Quantity(d).normalized())
    }

    fn normalized(self) -> Quantity {
        Quantity(self.0.normalize())
    }
}

impl From<Decimal> for Quantity {
    fn from(d: Decimal) -> Self {
        Quantity(d).normalized()
    }
}

impl From<i64> for Quantity {
    fn from(v: i64) -> Self {
        Quantity::from_i64(v)
    }
}

impl FromStr for Quantity {
    type Err = rust_decimal::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = Decimal::from_str_exact(s.trim())?;
        Ok(Quantity(d).normalized())
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.normalize(), f)
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept the canonical string, and plain JSON numbers as found in VF examples.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Str(String),
            Int(i64),
            Float(f64),
        }
        match Repr::deserialize(d)? {
            Repr::Str(s) => s.parse().map_err(serde::de::Error::custom),
            Repr::Int(i) => Ok(Quantity::from_i64(i)),
            Repr::Float(f) => {
                if !f.is_finite() {
                    return Err(serde::de::Error::custom("quantity is not a finite number"));
                }
                // Go through the shortest decimal text of the float, so 2.35 stays 2.35.
                f.to_string().parse().map_err(serde::de::Error::custom)
            }
        }
    }
}

/// A quantity with its unit (`om2:Measure`: `hasNumericalValue` + `hasUnit`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measure {
    /// The number.
    pub has_numerical_value: Quantity,
    /// The unit's id (see [`Unit`](crate::Unit)), e.g. `kg`, `one`, `hour`.
    pub has_unit: Id,
}

impl Measure {
    /// A measure of `value` in `unit`.
    pub fn new(value: impl Into<Quantity>, unit: impl Into<Id>) -> Self {
        Measure {
            has_numerical_value: value.into(),
            has_unit: unit.into(),
        }
    }

    /// Parse a measure from text such as `2.5 kg`.
    pub fn parse(text: &str) -> Option<Measure> {
        let (num, unit) = text.trim().split_once(char::is_whitespace)?;
        Some(Measure::new(num.parse::<Quantity>().ok()?, unit.trim()))
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.has_numerical_value, self.has_unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_sums_do_not_drift() {
        let tenth: Quantity = "0.1".parse().expect("parse");
        let mut sum = Quantity::ZERO;
        for _ in 0..1000 {
            sum = sum.checked_add(tenth).expect("no overflow");
        }
        assert_eq!(sum.to_string(), "100");
        let f: f64 = (0..1000).map(|_| 0.1).sum();
        assert_ne!(f, 100.0, "f64 would have drifted");
    }

    #[test]
    fn canonical_text_and_json() {
        let q: Quantity = "2.500".parse().expect("parse");
        assert_eq!(q.to_string(), "2.5");
        assert_eq!(serde_json::to_string(&q).expect("json"), "\"2.5\"");
        let from_num: Quantity = serde_json::from_str("2.35").expect("json number");
        assert_eq!(from_num.to_string(), "2.35");
        assert_eq!(MAX_QUANTITY.to_string(), "1000000000000000");
        assert!(Quantity::from_i64(-1).is_negative());
        assert!(!Quantity::ZERO.is_negative());
        assert_eq!(Measure::parse("2.5 kg"), Some(Measure::new(q, "kg")));
    }
}
