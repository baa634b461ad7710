//! Typed host functions: closures and `fn`s with Rust parameter and result
//! types, sync or `async`. The registry checks the count and the type of
//! every argument and answers `invalid_arguments` naming the argument
//! (`argument 2: expected an integer, got "x"`), so the function body only
//! sees values of its types. The signature is kept for `rpc.functions`.
//!
//! | parameter | accepts | type |
//! |---|---|---|
//! | `i8` ... `i64`, `u8` ... `u64` | an integer in range (never wrapped) | `integer` |
//! | `f64` | an integer or a double | `number` |
//! | [`Number`](crate::shared::number::Number) | an integer or a double, kept apart | `number` |
//! | `bool` | a boolean | `bool` |
//! | `String` | a string | `string` |
//! | [`Value`] | anything | `any` |
//! | [`Json<T>`] | any JSON that deserialises to `T` | `any` |
//! | `Option<T>` | `null` or `T`; may be left out at the end | `T`'s |
//!
//! Results: the same types (an integer beyond i64 is `overflow`), `()`
//! (`null`), `&'static str`, each bare or in `Result<T, HandlerError>`.
//!
//! Integer and double checks are at-core's own ([`at_core::typed`]), so a
//! host and a device accept exactly the same arguments.

use std::future::Future;
use std::pin::Pin;

use at_core::typed::FromArg;
use at_core::{ErrorCode, Signature, Type};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::registry::HandlerError;
use crate::shared::convert;
use crate::shared::value::Value;

/// The outcome of an async function, still to come.
pub type Pending = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// A parameter type of a typed host function.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a parameter of a typed function",
    label = "not an argument type",
    note = "parameters are integers, f64, bool, String, Number, Value, Option<T> or Json<T> (T: Deserialize)"
)]
pub trait Param: Sized + Send + 'static {
    /// The type `rpc.functions` shows.
    const TYPE: Type;
    /// What a wrong argument should have been: "an integer from 0 to 255".
    const EXPECTED: &'static str;
    /// Whether it may be left out at the end of the argument list.
    const OPTIONAL: bool = false;
    /// The converted argument, or `None` if it does not fit.
    fn from_arg(value: &at_core::Value<'_>) -> Option<Self>;
    /// The value of a left-out argument (`Some` only for optional ones).
    fn missing() -> Option<Self> {
        None
    }
}

/// A result type of a typed host function.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the result of a typed function",
    note = "results are integers, f64, bool, String, &'static str, (), Number, Value, Option<T>, Json<T> (T: Serialize), or Result<T, HandlerError> of them"
)]
pub trait Returns: Send + 'static {
    /// The type `rpc.functions` shows.
    const TYPE: Type;
    /// The reply's value, or the call's error.
    fn into_value(self) -> Result<Value, HandlerError>;
}

/// at-core's checks, for the types both sides share.
macro_rules! core_types {
    ($($t:ty),*) => {$(
        impl Param for $t {
            const TYPE: Type = <$t as FromArg<'static>>::TYPE;
            const EXPECTED: &'static str = <$t as FromArg<'static>>::EXPECTED;
            fn from_arg(value: &at_core::Value<'_>) -> Option<Self> {
                <$t as FromArg<'_>>::from_arg(value)
            }
        }

        impl Returns for $t {
            const TYPE: Type = <$t as at_core::typed::IntoResult<'static>>::TYPE;
            fn into_value(self) -> Result<Value, HandlerError> {
                at_core::typed::IntoResult::into_result(self)
                    .map(Value::from)
                    .map_err(HandlerError::from)
            }
        }
    )*};
}

core_types!(i8, i16, i32, i64, u8, u16, u32, u64, f64, bool);

impl Param for String {
    const TYPE: Type = Type::String;
    const EXPECTED: &'static str = "a string";
    fn from_arg(value: &at_core::Value<'_>) -> Option<Self> {
        value.as_str().map(|s| s.to_string())
    }
}

impl Returns for String {
    const TYPE: Type = Type::String;
    fn into_value(self) -> Result<Value, HandlerError> {
        Ok(Value::Str(self))
    }
}

impl Returns for &'static str {
    const TYPE: Type = Type::String;
    fn into_value(self) -> Result<Value, HandlerError> {
        Ok(Value::Str(self.to_owned()))
    }
}

impl Param for Value {
    const TYPE: Type = Type::Any;
    const EXPECTED: &'static str = "a value";
    fn from_arg(value: &at_core::Value<'_>) -> Option<Self> {
        Some(Value::from(*value))
    }
}

impl Returns for Value {
    const TYPE: Type = Type::Any;
    fn into_value(self) -> Result<Value, HandlerError> {
        Ok(self)
    }
}

impl Returns for () {
    const TYPE: Type = Type::Null;
    fn into_value(self) -> Result<Value, HandlerError> {
        Ok(Value::Null)
    }
}

impl<T: Param> Param for Option<T> {
    const TYPE: Type = T::TYPE;
    const EXPECTED: &'static str = T::EXPECTED;
    const OPTIONAL: bool = true;
    fn from_arg(value: &at_core::Value<'_>) -> Option<Self> {
        match value {
            at_core::Value::Null => Some(None),
            other => T::from_arg(other).map(Some),
        }
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
}

impl<T: Returns> Returns for Option<T> {
    const TYPE: Type = T::TYPE;
    fn into_value(self) -> Result<Value, HandlerError> {
        self.map_or(Ok(Value::Null), Returns::into_value)
    }
}

impl<T: Returns> Returns for Result<T, HandlerError> {
    const TYPE: Type = T::TYPE;
    fn into_value(self) -> Result<Value, HandlerError> {
        self.and_then(Returns::into_value)
    }
}

/// Any JSON value that serde converts to or from `T`: arrays, objects,
/// structs.
///
/// ```
/// use at_host::{Json, Server};
/// let server = Server::builder().function("sum", |Json(xs): Json<Vec<i64>>| xs.iter().sum::<i64>());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> Param for Json<T> {
    const TYPE: Type = Type::Any;
    const EXPECTED: &'static str = "a JSON value of the function's type";
    fn from_arg(value: &at_core::Value<'_>) -> Option<Self> {
        convert::decode(&Value::from(*value)).ok().map(Json)
    }
}

impl<T: Serialize + Send + 'static> Returns for Json<T> {
    const TYPE: Type = Type::Any;
    fn into_value(self) -> Result<Value, HandlerError> {
        convert::encode(&self.0).map_err(|e| {
            HandlerError::new(ErrorCode::Internal, format!("result not serialisable: {e}"))
        })
    }
}

/// A parameter list: a tuple of [`Param`]s.
pub trait Params: Sized + Send + 'static {
    /// The type of each parameter.
    const PARAMS: &'static [Type];
    /// Checks the count and each argument, and converts them.
    fn from_args(args: &[at_core::Value<'_>]) -> Result<Self, HandlerError>;
}

/// Argument `i` as `T`, or `invalid_arguments` naming it and showing it.
fn arg<T: Param>(args: &[at_core::Value<'_>], i: usize) -> Result<T, HandlerError> {
    let converted = match args.get(i) {
        Some(value) => T::from_arg(value),
        None => T::missing(),
    };
    converted.ok_or_else(|| {
        let got = args.get(i).map_or("nothing".to_owned(), |v| v.to_string());
        HandlerError::invalid_arguments(format!(
            "argument {}: expected {}, got {got}",
            i + 1,
            T::EXPECTED
        ))
    })
}

fn check_count(optional: &[bool], given: usize) -> Result<(), HandlerError> {
    let max = optional.len();
    let min = optional.iter().rposition(|o| !o).map_or(0, |last| last + 1);
    if (min..=max).contains(&given) {
        return Ok(());
    }
    let expected = match (min, max) {
        (0, 0) => "no arguments".to_owned(),
        (1, 1) => "1 argument".to_owned(),
        (n, m) if n == m => format!("{n} arguments"),
        (n, m) => format!("{n} to {m} arguments"),
    };
    Err(HandlerError::invalid_arguments(format!(
        "expected {expected}, got {given}"
    )))
}

/// A sync function taking the parameter list `Args`: every `Fn(A, B, ...)
/// -> R` of [`Param`]s and a [`Returns`]. What
/// [`ServerBuilder::function`](crate::ServerBuilder::function) takes.
#[diagnostic::on_unimplemented(
    message = "this is not a typed function: every parameter must be an `at_host::Param` and the result an `at_host::Returns`",
    label = "not a typed function",
    note = "a typed function is `Fn(A, B, ...) -> R + Send + Sync + 'static` with up to 8 parameters; for raw arguments use `untyped`"
)]
pub trait TypedFunction<Args>: Send + Sync + 'static {
    /// The result's type.
    const RESULT: Type;
    /// Checks and converts `args`, calls the function, converts its result.
    fn call_typed(&self, args: &[at_core::Value<'_>]) -> Result<Value, HandlerError>;
}

/// An async function taking the parameter list `Args`: every `Fn(A, B,
/// ...) -> impl Future<Output = R>`. What
/// [`ServerBuilder::async_function`](crate::ServerBuilder::async_function)
/// takes.
#[diagnostic::on_unimplemented(
    message = "this is not a typed async function: every parameter must be an `at_host::Param`, and the future `Send + 'static` with an `at_host::Returns` output",
    label = "not a typed async function"
)]
pub trait AsyncFunction<Args>: Send + Sync + 'static {
    /// The result's type.
    const RESULT: Type;
    /// Checks and converts `args` now and starts the function; its outcome
    /// comes later.
    fn start(&self, args: &[at_core::Value<'_>]) -> Result<Pending, HandlerError>;
}

macro_rules! tuples {
    ($( ($($t:ident $i:tt),*) ),* $(,)?) => {$(
        impl<$($t: Param),*> Params for ($($t,)*) {
            const PARAMS: &'static [Type] = &[$($t::TYPE),*];
            #[allow(unused_variables)]
            fn from_args(args: &[at_core::Value<'_>]) -> Result<Self, HandlerError> {
                check_count(&[$($t::OPTIONAL),*], args.len())?;
                Ok(($(arg::<$t>(args, $i)?,)*))
            }
        }

        impl<F, R, $($t),*> TypedFunction<($($t,)*)> for F
        where
            F: Fn($($t),*) -> R + Send + Sync + 'static,
            R: Returns,
            $($t: Param,)*
        {
            const RESULT: Type = R::TYPE;
            #[allow(non_snake_case)]
            fn call_typed(&self, args: &[at_core::Value<'_>]) -> Result<Value, HandlerError> {
                let ($($t,)*) = <($($t,)*) as Params>::from_args(args)?;
                self($($t),*).into_value()
            }
        }

        impl<F, Fut, R, $($t),*> AsyncFunction<($($t,)*)> for F
        where
            F: Fn($($t),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: Returns,
            $($t: Param,)*
        {
            const RESULT: Type = R::TYPE;
            #[allow(non_snake_case)]
            fn start(&self, args: &[at_core::Value<'_>]) -> Result<Pending, HandlerError> {
                let ($($t,)*) = <($($t,)*) as Params>::from_args(args)?;
                let future = self($($t),*);
                Ok(Box::pin(async move { future.await.into_value() }))
            }
        }
    )*};
}

tuples! {
    (),
    (A 0),
    (A 0, B 1),
    (A 0, B 1, C 2),
    (A 0, B 1, C 2, D 3),
    (A 0, B 1, C 2, D 3, E 4),
    (A 0, B 1, C 2, D 3, E 4, G 5),
    (A 0, B 1, C 2, D 3, E 4, G 5, H 6),
    (A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7),
}

/// The signature of a function of parameter list `Args` and result type
/// `result`.
pub(crate) fn signature<Args: Params>(result: Type, doc: &'static str) -> Signature {
    Signature {
        params: Args::PARAMS,
        result,
        doc,
    }
}

impl Param for crate::shared::number::Number {
    const TYPE: Type = Type::Number;
    const EXPECTED: &'static str = "a number";
    fn from_arg(value: &at_core::Value<'_>) -> Option<Self> {
        match *value {
            at_core::Value::Int(i) => Some(crate::shared::number::Number::Int(i)),
            at_core::Value::Float(x) => Some(crate::shared::number::Number::Float(x)),
            _ => None,
        }
    }
}

impl Returns for crate::shared::number::Number {
    const TYPE: Type = Type::Number;
    fn into_value(self) -> Result<Value, HandlerError> {
        match self {
            crate::shared::number::Number::Int(i) => Ok(Value::Int(i)),
            crate::shared::number::Number::Float(x) => x.into_value(),
        }
    }
}
