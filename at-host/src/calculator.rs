//! The AT calculator (contract section 4) as a service: the
//! [`Calculator`] trait, its typed client [`CalculatorClient`] (which
//! sends exactly the bytes an untyped call sends: `add(10, 20)` is
//! `{"func": "add", "args": [10, 20]}`), and [`Builtin`], at-core's
//! calculator behind the trait.
//!
//! ```no_run
//! # async fn example() -> Result<(), at_host::Error> {
//! use at_host::calculator::CalculatorClient;
//! use at_host::{Client, Number};
//!
//! let client = Client::connect("192.168.1.20:16724", std::time::Duration::from_secs(5)).await?;
//! let calc = CalculatorClient::new(client);
//! assert_eq!(calc.add(Number::Int(10), Number::Int(20)).await?, Number::Int(30));
//! assert_eq!(calc.div(Number::Int(10), Number::Int(4)).await?, 2.5);
//! # Ok(()) }
//! ```

use crate::{HandlerError, Number, Value};

/// The calculator every AT calculator server serves.
#[crate::service]
pub trait Calculator {
    /// a + b
    async fn add(&self, a: Number, b: Number) -> Result<Number, HandlerError>;
    /// a - b
    async fn sub(&self, a: Number, b: Number) -> Result<Number, HandlerError>;
    /// a * b
    async fn mul(&self, a: Number, b: Number) -> Result<Number, HandlerError>;
    /// a / b, always a double
    async fn div(&self, a: Number, b: Number) -> Result<f64, HandlerError>;
}

/// at-core's calculator behind the [`Calculator`] trait: the same answers
/// as [`ServerBuilder::calculator`](crate::ServerBuilder::calculator).
#[derive(Clone, Copy, Debug, Default)]
pub struct Builtin;

fn core(func: at_core::Function, a: Number, b: Number) -> Result<Value, HandlerError> {
    let arg = |n: Number| match n {
        Number::Int(i) => at_core::Value::Int(i),
        Number::Float(x) => at_core::Value::Float(x),
    };
    (func.handler)(&[arg(a), arg(b)])
        .map(Value::from)
        .map_err(HandlerError::from)
}

fn number(value: Value) -> Result<Number, HandlerError> {
    match value {
        Value::Int(i) => Ok(Number::Int(i)),
        Value::Float(x) => Ok(Number::Float(x)),
        other => Err(HandlerError::new(
            at_core::ErrorCode::Internal,
            format!("not a number: {other}"),
        )),
    }
}

impl Calculator for Builtin {
    async fn add(&self, a: Number, b: Number) -> Result<Number, HandlerError> {
        number(core(at_core::calculator::ADD, a, b)?)
    }
    async fn sub(&self, a: Number, b: Number) -> Result<Number, HandlerError> {
        number(core(at_core::calculator::SUB, a, b)?)
    }
    async fn mul(&self, a: Number, b: Number) -> Result<Number, HandlerError> {
        number(core(at_core::calculator::MUL, a, b)?)
    }
    async fn div(&self, a: Number, b: Number) -> Result<f64, HandlerError> {
        number(core(at_core::calculator::DIV, a, b)?).map(Number::as_f64)
    }
}
