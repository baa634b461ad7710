//! [`Number`]: the calculator's argument and result type, an integer or a
//! double kept apart as the contract's JSON keeps them.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::shared::convert::NUMBER_TOKEN;

/// A JSON number as the contract reads it: an integer (written without
/// fraction or exponent) or a double. The calculator's functions take and
/// give `Number`s, so a typed call sends `10` for `Number::Int(10)` and
/// `10.0` for `Number::Float(10.0)`, as the untyped call does.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Number {
    /// An integer.
    Int(i64),
    /// A double.
    Float(f64),
}

impl From<i64> for Number {
    fn from(i: i64) -> Self {
        Number::Int(i)
    }
}

impl From<i32> for Number {
    fn from(i: i32) -> Self {
        Number::Int(i64::from(i))
    }
}

impl From<f64> for Number {
    fn from(x: f64) -> Self {
        Number::Float(x)
    }
}

impl Number {
    /// The number as a double.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(x) => x,
        }
    }
}

impl std::fmt::Display for Number {
    /// As JSON: `30`, `2.5`, `5.0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Number::Int(i) => std::fmt::Display::fmt(&at_core::Value::Int(i), f),
            Number::Float(x) => std::fmt::Display::fmt(&at_core::Value::Float(x), f),
        }
    }
}

/// Any JSON number. It asks for a newtype struct of a private name, which
/// every deserializer passes on to the number inside, so that
/// `rpc.functions` can show it as `number` rather than `any`.
impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_newtype_struct(NUMBER_TOKEN, NumberVisitor)
    }
}

struct NumberVisitor;

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Number, E> {
        Ok(Number::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Number, E> {
        i64::try_from(u).map(Number::Int).map_err(|_| {
            E::invalid_value(de::Unexpected::Unsigned(u), &"an integer in i64's range")
        })
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Number, E> {
        Ok(Number::Float(x))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, inner: D) -> Result<Number, D::Error> {
        inner.deserialize_any(self)
    }
}
