//! Typed host functions: closures and `fn`s with Rust parameter and result
//! types, sync or `async`. The registry checks the count and the type of
//! every argument and answers `invalid_arguments` naming the argument and,
//! inside a struct or a list, the field or element (`argument 1: field
//! "celsius": expected a number, got "x"`), so the function body only sees
//! values of its types. The signature is kept for `rpc.functions`.
//!
//! The supported types and their rules are on [`Param`].

use std::future::Future;
use std::pin::Pin;

use at_core::{ErrorCode, Type};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::shared::app_error::HandlerError;
use crate::shared::convert::{self, Shape};
use crate::shared::value::Value;

/// The outcome of an async function, still to come.
pub type Pending = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// A parameter type of a typed host function: every
/// `serde::de::DeserializeOwned` type.
///
/// # Supported types
///
/// A parameter is any `serde::de::DeserializeOwned` type; a result any
/// `Serialize + DeserializeOwned` type (the client reads it back: a
/// `String` or `Cow<'static, str>`, not a `&'static str`), bare or in
/// `Result<T, E>` with `E: Into<HandlerError>` (see
/// [`AppError`](crate::AppError)).
///
/// | Rust type | accepts | `rpc.functions` |
/// |---|---|---|
/// | `i8` ... `i64`, `u8` ... `u64` | an integer in range (never wrapped, never from a double) | `integer` |
/// | `f64`, `f32` | an integer or a double (`f32`: within its range) | `number` (result: `double`) |
/// | [`Number`](crate::Number) | an integer or a double, kept apart | `number` |
/// | `bool` | a boolean | `bool` |
/// | `String`, `char` (and `&str` in a `#[service]`) | a string | `string` |
/// | `()` | `null` | `null` |
/// | `Vec<T>`, `[T; N]`, tuples, `HashSet<T>`, ... | an array (of exactly `N`, or the tuple's length) | `array` |
/// | structs, `HashMap<String, T>`, `BTreeMap<K, T>` | an object (unknown members ignored unless `deny_unknown_fields`) | `object` |
/// | enums | serde's form: `"Variant"` or `{"Variant": ...}` | `any` |
/// | [`Value`], `serde_json::Value` | anything | `any` |
/// | `Option<T>` | `null` or `T`; may be left out at the end | `T?` |
///
/// Integer checks are at-core's own (the same ranges and messages), so a
/// host and a device accept exactly the same arguments. A result integer
/// beyond i64 is `overflow`, as is a bare `f64` result that is not finite
/// (inside a struct or a list serde writes it as `null`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a parameter of a typed function",
    label = "not an argument type",
    note = "a parameter is any type that implements `serde::Deserialize` (add `#[derive(serde::Deserialize)]` to `{Self}`), owned (`String`, not `&str`, outside a #[service])"
)]
pub trait Param: Sized + Send + 'static {
    /// What `rpc.functions` shows, and whether it is optional.
    #[doc(hidden)]
    fn shape() -> Shape;
    /// The argument converted, or why it does not fit.
    #[doc(hidden)]
    fn from_arg(value: &at_core::Value<'_>) -> Result<Self, convert::Mismatch>;
}

impl<T: DeserializeOwned + Send + 'static> Param for T {
    fn shape() -> Shape {
        convert::shape_of::<T>()
    }

    fn from_arg(value: &at_core::Value<'_>) -> Result<Self, convert::Mismatch> {
        convert::from_core(value)
    }
}

/// Which [`Returns`] impl a result type takes. Inferred; never named.
#[doc(hidden)]
pub mod kind {
    /// A serde value.
    pub enum Serde {}
    /// `Result<T, E>` of a `T` of kind `K`.
    pub struct Fallible<K>(std::marker::PhantomData<K>);
}

/// A result type of a typed host function: any `Serialize +
/// DeserializeOwned` type, or `Result<T, E>` of one with `E:
/// Into<HandlerError>`. `K` tells the two apart and is inferred.
///
/// A borrowed `&'static str` is no result (serde cannot read one back):
/// return a `String`, or `Cow<'static, str>` to keep a literal uncopied.
///
/// An error type `E` that is itself `Serialize + Deserialize` makes
/// `Result<T, E>` both a value and an outcome, and the compiler asks which
/// (`type annotations needed`): an error type needs neither serde trait
/// (map it with [`AppError`](crate::AppError)), so leave them off it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the result of a typed function",
    label = "not a result type",
    note = "a result is a type that implements `serde::Serialize` and `serde::Deserialize` (the client reads it back; `String` or `Cow<'static, str>`, not `&str`), or `Result<T, E>` of one where `E: Into<at_host::HandlerError>` (implement `at_host::AppError` for E)"
)]
pub trait Returns<K>: Send + 'static {
    /// The type `rpc.functions` shows.
    #[doc(hidden)]
    fn result_type() -> Type;
    /// The reply's value, or the call's error.
    #[doc(hidden)]
    fn into_value(self) -> Result<Value, HandlerError>;
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Returns<kind::Serde> for T {
    fn result_type() -> Type {
        convert::shape_of::<T>().result
    }

    fn into_value(self) -> Result<Value, HandlerError> {
        convert::encode_result(&self, convert::shape_of::<T>()).map_err(|e| match e {
            convert::ResultError::Overflow(why) => HandlerError::new(ErrorCode::Overflow, why),
            convert::ResultError::Unserialisable(why) => HandlerError::new(
                ErrorCode::Internal,
                format!("result not serialisable: {why}"),
            ),
        })
    }
}

impl<T, E, K> Returns<kind::Fallible<K>> for Result<T, E>
where
    T: Returns<K>,
    E: Into<HandlerError> + Send + 'static,
    K: 'static,
{
    fn result_type() -> Type {
        T::result_type()
    }

    fn into_value(self) -> Result<Value, HandlerError> {
        self.map_err(Into::into).and_then(Returns::into_value)
    }
}

/// Any JSON value that serde converts to or from `T`. Kept from earlier
/// versions: today every serde type is a parameter and a result as it is,
/// so `Json<T>` is only a transparent wrapper.
///
/// ```
/// use at_host::{Json, Server};
/// let server = Server::builder()
///     .function("sum", |xs: Vec<i64>| xs.iter().sum::<i64>())
///     .function("sum_wrapped", |Json(xs): Json<Vec<i64>>| xs.iter().sum::<i64>());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Json<T>(pub T);

/// A parameter list: a tuple of [`Param`]s.
pub trait Params: Sized + Send + 'static {
    /// The shape of each parameter.
    #[doc(hidden)]
    fn shapes() -> Vec<Shape>;
    /// Converts the arguments (their count already checked), naming the
    /// first that does not fit.
    #[doc(hidden)]
    fn from_args(args: &[at_core::Value<'_>]) -> Result<Self, HandlerError>;
}

/// Argument `i` as `T`, or `invalid_arguments` naming it. A left-out
/// (optional) argument reads as `null`.
fn arg<T: Param>(args: &[at_core::Value<'_>], i: usize) -> Result<T, HandlerError> {
    T::from_arg(args.get(i).unwrap_or(&at_core::Value::Null))
        .map_err(|e| HandlerError::invalid_arguments(format!("argument {}: {e}", i + 1)))
}

/// How many arguments a function of these parameters takes: all, less a
/// trailing run of optional ones.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arity {
    min: usize,
    max: usize,
}

impl Arity {
    pub(crate) fn of(shapes: &[Shape]) -> Self {
        let max = shapes.len();
        let min = shapes
            .iter()
            .rposition(|s| !s.optional)
            .map_or(0, |i| i + 1);
        Arity { min, max }
    }

    pub(crate) fn check(self, given: usize) -> Result<(), HandlerError> {
        if (self.min..=self.max).contains(&given) {
            return Ok(());
        }
        let expected = match (self.min, self.max) {
            (0, 0) => "no arguments".to_owned(),
            (1, 1) => "1 argument".to_owned(),
            (n, m) if n == m => format!("{n} arguments"),
            (n, m) => format!("{n} to {m} arguments"),
        };
        Err(HandlerError::invalid_arguments(format!(
            "expected {expected}, got {given}"
        )))
    }
}

/// A sync function taking the parameter list `Args`: every `Fn(A, B, ...)
/// -> R` of [`Param`]s and a [`Returns`] result. What
/// [`ServerBuilder::function`](crate::ServerBuilder::function) takes.
#[diagnostic::on_unimplemented(
    message = "this is not a typed function: every parameter must be an `at_host::Param` and the result an `at_host::Returns`",
    label = "not a typed function",
    note = "a typed function is `Fn(A, B, ...) -> R + Send + Sync + 'static` with up to 8 parameters, each a `serde::Deserialize` type, and a result that is `serde::Serialize + serde::Deserialize` (or `Result<T, E>` of one, `E: Into<HandlerError>`); for raw arguments use `untyped`"
)]
pub trait TypedFunction<Args, K>: Send + Sync + 'static {
    /// The result's type.
    #[doc(hidden)]
    fn result_type() -> Type;
    /// Converts `args`, calls the function, converts its result.
    #[doc(hidden)]
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
pub trait AsyncFunction<Args, K>: Send + Sync + 'static {
    /// The result's type.
    #[doc(hidden)]
    fn result_type() -> Type;
    /// Converts `args` now and starts the function; its outcome comes
    /// later.
    #[doc(hidden)]
    fn start(&self, args: &[at_core::Value<'_>]) -> Result<Pending, HandlerError>;
}

macro_rules! tuples {
    ($( ($($t:ident $i:tt),*) ),* $(,)?) => {$(
        impl<$($t: Param),*> Params for ($($t,)*) {
            fn shapes() -> Vec<Shape> {
                vec![$($t::shape()),*]
            }
            #[allow(unused_variables)]
            fn from_args(args: &[at_core::Value<'_>]) -> Result<Self, HandlerError> {
                Ok(($(arg::<$t>(args, $i)?,)*))
            }
        }

        impl<F, R, K, $($t),*> TypedFunction<($($t,)*), K> for F
        where
            F: Fn($($t),*) -> R + Send + Sync + 'static,
            R: Returns<K>,
            $($t: Param,)*
        {
            fn result_type() -> Type {
                R::result_type()
            }
            #[allow(non_snake_case)]
            fn call_typed(&self, args: &[at_core::Value<'_>]) -> Result<Value, HandlerError> {
                let ($($t,)*) = <($($t,)*) as Params>::from_args(args)?;
                self($($t),*).into_value()
            }
        }

        impl<F, Fut, R, K, $($t),*> AsyncFunction<($($t,)*), K> for F
        where
            F: Fn($($t),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: Returns<K>,
            $($t: Param,)*
        {
            fn result_type() -> Type {
                R::result_type()
            }
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

/// A signature built at registration, owned by the registry.
#[derive(Clone, Debug)]
pub(crate) struct OwnedSignature {
    params: Vec<Type>,
    optional: u16,
    result: Type,
    doc: String,
}

impl OwnedSignature {
    /// The signature of parameters `shapes`, result `result` and `doc`.
    pub(crate) fn new(shapes: &[Shape], result: Type, doc: &str) -> Self {
        let flags: Vec<bool> = shapes.iter().map(|s| s.optional).collect();
        OwnedSignature {
            params: shapes.iter().map(|s| s.param).collect(),
            optional: at_core::optional_mask(&flags),
            result,
            doc: doc.to_owned(),
        }
    }

    /// A table function's signature, copied.
    pub(crate) fn from_core(sig: &at_core::Signature<'_>) -> Self {
        OwnedSignature {
            params: sig.params.to_vec(),
            optional: sig.optional,
            result: sig.result,
            doc: sig.doc.to_owned(),
        }
    }

    /// Borrowed in at-core's form.
    pub(crate) fn as_core(&self) -> at_core::Signature<'_> {
        at_core::Signature {
            params: &self.params,
            optional: self.optional,
            result: self.result,
            doc: &self.doc,
        }
    }
}
