//! Typed functions for function tables: a firmware author writes
//! `fn led(on: bool) -> Result<(), CallError>` and puts it in a `static`
//! table with [`function!`](crate::function); the arguments are checked and
//! converted, the result written, and the signature kept for
//! `rpc.functions`. No heap, no `unsafe`.
//!
//! ```
//! use at_core::{CallError, Function, Functions, Reply, Value, function};
//!
//! /// x times k
//! fn scale(x: f64, k: i32) -> Result<f64, CallError> {
//!     Ok(x * f64::from(k))
//! }
//! fn led(on: bool) -> Result<(), CallError> {
//!     let _ = on; // drive the pin
//!     Ok(())
//! }
//!
//! static TABLE: [Function; 2] = [
//!     function!("scale", scale, "x times k"),
//!     function!("led", led, "turn the LED on or off"),
//! ];
//!
//! let ok = TABLE.call("scale", &[Value::Float(1.5), Value::Int(4)], |r| r == Reply::Success(Value::Float(6.0)));
//! assert!(ok);
//! // An argument of the wrong type or range is `invalid_arguments`, named
//! // (static text: no formatting code on a device):
//! let mut message = String::new();
//! TABLE.call("scale", &[Value::Float(1.5), Value::Int(1 << 40)], |r| match r {
//!     Reply::Error(e) => message = e.message.chars().collect(),
//!     _ => {}
//! });
//! assert_eq!(message, "argument 2: expected an integer from -2147483648 to 2147483647");
//! let sig = TABLE[0].signature.unwrap();
//! assert_eq!((sig.params[0].as_str(), sig.params[1].as_str(), sig.result.as_str()), ("number", "integer", "double"));
//! ```
//!
//! # Conversions
//! | Rust parameter | accepts | `rpc.functions` type |
//! |---|---|---|
//! | `i8` ... `i64`, `u8` ... `u64` | an integer in the type's range (never wrapped) | `integer` |
//! | `f64` | an integer or a double | `number` |
//! | `bool` | `true`, `false` | `bool` |
//! | `&str` | a string without escape sequences | `string` |
//! | [`JsonStr`] | any string (escapes resolved when read) | `string` |
//! | [`Value`] | anything | `any` |
//! | `Option<T>` | `null` or what `T` accepts; may be left out at the end | `T?` |
//! | `[T; N]` | an array of exactly `N` elements `T` accepts | `array` |
//! | `heapless::Vec<T, N>` | an array of at most `N` such elements | `array` |
//! | `heapless::String<N>` | a string of at most `N` bytes (escapes resolved) | `string` |
//!
//! None of these allocates: arrays are read in place from the request.
//!
//! Results: the integers (a `u64` above `i64::MAX` is `overflow`), `f64`
//! (`double`; not finite is `overflow`), `bool`, `()` (`null`), `&str`,
//! [`JsonStr`], [`Value`], `Option<T>` (`None` is `null`), each bare or in
//! `Result<T, CallError>`. Functions take up to 6 parameters.

use crate::dispatch::Function;
use crate::error::{CallError, ErrorCode};
use crate::signature::{Signature, Type, optional_mask};
use crate::value::{JsonStr, Value};

/// The most parameters a typed function takes.
pub const MAX_PARAMS: usize = 6;

/// `EXPECTED` and `MESSAGES` of a [`FromArg`] impl, from one literal.
macro_rules! expected {
    ($text:literal) => {
        const EXPECTED: &'static str = $text;
        const MESSAGES: [&'static str; MAX_PARAMS] = [
            concat!("argument 1: expected ", $text),
            concat!("argument 2: expected ", $text),
            concat!("argument 3: expected ", $text),
            concat!("argument 4: expected ", $text),
            concat!("argument 5: expected ", $text),
            concat!("argument 6: expected ", $text),
        ];
    };
}

/// A parameter type: how one argument is checked and converted.
pub trait FromArg<'a>: Sized {
    /// The type `rpc.functions` shows.
    const TYPE: Type;
    /// What a wrong argument should have been, for people: "a boolean",
    /// "an integer from 0 to 255".
    const EXPECTED: &'static str;
    /// The whole message for a wrong argument at each position, as static
    /// text (no formatting on a device): `MESSAGES[1]` is "argument 2:
    /// expected a boolean".
    const MESSAGES: [&'static str; MAX_PARAMS];
    /// Whether the argument may be left out at the end of the list.
    const OPTIONAL: bool = false;
    /// The converted argument, or `None` if it does not fit.
    fn from_arg(value: &Value<'a>) -> Option<Self>;
    /// The value of a left-out argument (`Some` only for optional ones).
    fn missing() -> Option<Self> {
        None
    }
}

/// A result type: how a function's result becomes the reply's value.
pub trait IntoResult<'a> {
    /// The type `rpc.functions` shows.
    const TYPE: Type;
    /// The result, or the call's error.
    fn into_result(self) -> Result<Value<'a>, CallError>;
}

macro_rules! integers {
    ($($t:ty => $expected:literal),* $(,)?) => {$(
        impl<'a> FromArg<'a> for $t {
            const TYPE: Type = Type::Integer;
            expected!($expected);
            fn from_arg(value: &Value<'a>) -> Option<Self> {
                match *value {
                    Value::Int(i) => <$t>::try_from(i).ok(),
                    _ => None,
                }
            }
        }

        impl<'a> IntoResult<'a> for $t {
            const TYPE: Type = Type::Integer;
            fn into_result(self) -> Result<Value<'a>, CallError> {
                i64::try_from(self)
                    .map(Value::Int)
                    .map_err(|_| CallError::new(ErrorCode::Overflow))
            }
        }
    )*};
}

integers! {
    i8 => "an integer from -128 to 127",
    i16 => "an integer from -32768 to 32767",
    i32 => "an integer from -2147483648 to 2147483647",
    i64 => "an integer",
    u8 => "an integer from 0 to 255",
    u16 => "an integer from 0 to 65535",
    u32 => "an integer from 0 to 4294967295",
    u64 => "an integer from 0 to 9223372036854775807",
}

impl<'a> FromArg<'a> for f64 {
    const TYPE: Type = Type::Number;
    expected!("a number");
    fn from_arg(value: &Value<'a>) -> Option<Self> {
        value.as_f64()
    }
}

impl<'a> IntoResult<'a> for f64 {
    const TYPE: Type = Type::Double;
    fn into_result(self) -> Result<Value<'a>, CallError> {
        if self.is_finite() {
            Ok(Value::Float(self))
        } else {
            Err(CallError::new(ErrorCode::Overflow))
        }
    }
}

impl<'a> FromArg<'a> for bool {
    const TYPE: Type = Type::Bool;
    expected!("a boolean");
    fn from_arg(value: &Value<'a>) -> Option<Self> {
        match *value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

impl<'a> IntoResult<'a> for bool {
    const TYPE: Type = Type::Bool;
    fn into_result(self) -> Result<Value<'a>, CallError> {
        Ok(Value::Bool(self))
    }
}

impl<'a> FromArg<'a> for &'a str {
    const TYPE: Type = Type::String;
    expected!("a string without escape sequences");
    fn from_arg(value: &Value<'a>) -> Option<Self> {
        value.as_str().and_then(|s| s.as_plain())
    }
}

impl<'a> IntoResult<'a> for &'a str {
    const TYPE: Type = Type::String;
    fn into_result(self) -> Result<Value<'a>, CallError> {
        Ok(Value::str(self))
    }
}

impl<'a> FromArg<'a> for JsonStr<'a> {
    const TYPE: Type = Type::String;
    expected!("a string");
    fn from_arg(value: &Value<'a>) -> Option<Self> {
        value.as_str()
    }
}

impl<'a> IntoResult<'a> for JsonStr<'a> {
    const TYPE: Type = Type::String;
    fn into_result(self) -> Result<Value<'a>, CallError> {
        Ok(Value::Str(self))
    }
}

impl<'a> FromArg<'a> for Value<'a> {
    const TYPE: Type = Type::Any;
    expected!("a value");
    fn from_arg(value: &Value<'a>) -> Option<Self> {
        Some(*value)
    }
}

impl<'a> IntoResult<'a> for Value<'a> {
    const TYPE: Type = Type::Any;
    fn into_result(self) -> Result<Value<'a>, CallError> {
        Ok(self)
    }
}

impl<'a> IntoResult<'a> for () {
    const TYPE: Type = Type::Null;
    fn into_result(self) -> Result<Value<'a>, CallError> {
        Ok(Value::Null)
    }
}

impl<'a, T: FromArg<'a>> FromArg<'a> for Option<T> {
    const TYPE: Type = T::TYPE;
    const EXPECTED: &'static str = T::EXPECTED;
    const MESSAGES: [&'static str; MAX_PARAMS] = T::MESSAGES;
    const OPTIONAL: bool = true;
    fn from_arg(value: &Value<'a>) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_arg(other).map(Some),
        }
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
}

impl<'a, T: IntoResult<'a>> IntoResult<'a> for Option<T> {
    const TYPE: Type = T::TYPE;
    fn into_result(self) -> Result<Value<'a>, CallError> {
        match self {
            Some(v) => v.into_result(),
            None => Ok(Value::Null),
        }
    }
}

impl<'a, T: IntoResult<'a>> IntoResult<'a> for Result<T, CallError> {
    const TYPE: Type = T::TYPE;
    fn into_result(self) -> Result<Value<'a>, CallError> {
        self.and_then(IntoResult::into_result)
    }
}

/// The elements of an array argument converted to `T`, into `out` (no
/// allocation); `None` if it is not an array, an element does not fit, or
/// there are more than `out` holds.
fn elements_into<'a, T: FromArg<'a>, const N: usize>(
    value: &Value<'a>,
    out: &mut heapless::Vec<T, N>,
) -> Option<()> {
    let Value::Raw(raw) = value else { return None };
    for element in raw.elements()? {
        out.push(T::from_arg(&element.ok()?)?).ok()?;
    }
    Some(())
}

/// A fixed-size array: a JSON array of exactly `N` elements of `T`.
impl<'a, T: FromArg<'a>, const N: usize> FromArg<'a> for [T; N] {
    const TYPE: Type = Type::Array;
    expected!("an array of the parameter's length and element type");
    fn from_arg(value: &Value<'a>) -> Option<Self> {
        let mut out = heapless::Vec::<T, N>::new();
        elements_into(value, &mut out)?;
        out.into_array().ok()
    }
}

/// A bounded list: a JSON array of at most `N` elements of `T`.
impl<'a, T: FromArg<'a>, const N: usize> FromArg<'a> for heapless::Vec<T, N> {
    const TYPE: Type = Type::Array;
    expected!("an array of at most the parameter's capacity of its element type");
    fn from_arg(value: &Value<'a>) -> Option<Self> {
        let mut out = heapless::Vec::new();
        elements_into(value, &mut out)?;
        Some(out)
    }
}

/// A bounded string: any JSON string (escapes resolved) of at most `N`
/// bytes of UTF-8.
impl<'a, const N: usize> FromArg<'a> for heapless::String<N> {
    const TYPE: Type = Type::String;
    expected!("a string of at most the parameter's capacity in bytes");
    fn from_arg(value: &Value<'a>) -> Option<Self> {
        let mut out = heapless::String::new();
        for c in value.as_str()?.chars() {
            out.push(c).ok()?;
        }
        Some(out)
    }
}

/// A parameter list: a tuple of [`FromArg`] types.
pub trait FromArgs<'a>: Sized {
    /// The type of each parameter.
    const PARAMS: &'static [Type];
    /// Which parameters are optional ([`Signature::optional`]).
    const OPTIONAL: u16;
    /// Checks the count and each argument, and converts them.
    fn from_args(args: &[Value<'a>]) -> Result<Self, CallError>;
}

/// A function that takes the parameter list `Args` and returns `R`:
/// implemented for every `Fn(A, B, ...) -> R` of [`FromArg`] parameters.
pub trait TypedFn<'a, Args, R> {
    /// Calls the function with the converted arguments.
    fn invoke(&self, args: Args) -> R;
}

/// Argument `I` of `args` as `T`: converted, taken as missing (optional
/// parameters), or `invalid_arguments` naming it.
fn arg<'a, T: FromArg<'a>, const I: usize>(args: &[Value<'a>]) -> Result<T, CallError> {
    let converted = match args.get(I) {
        Some(value) => T::from_arg(value),
        None => T::missing(),
    };
    converted.ok_or(CallError::with_message(
        ErrorCode::InvalidArguments,
        T::MESSAGES[I],
    ))
}

/// How many arguments parameters of these optionality flags need at least
/// (only trailing optional ones may be left out).
const fn min_args(optional: &[bool]) -> usize {
    let mut n = optional.len();
    while n > 0 && optional[n - 1] {
        n -= 1;
    }
    n
}

/// The message for a call with the wrong number of arguments.
const fn count_message(min: usize, max: usize) -> &'static str {
    match (min, max) {
        (0, 0) => "expected no arguments",
        (1, 1) => "expected 1 argument",
        (2, 2) => "expected 2 arguments",
        (3, 3) => "expected 3 arguments",
        (4, 4) => "expected 4 arguments",
        (5, 5) => "expected 5 arguments",
        (6, 6) => "expected 6 arguments",
        (0, _) => "too many arguments",
        (1, _) => "expected at least 1 argument",
        (2, _) => "expected at least 2 arguments",
        (3, _) => "expected at least 3 arguments",
        (4, _) => "expected at least 4 arguments",
        _ => "expected at least 5 arguments",
    }
}

macro_rules! tuples {
    ($( ($($t:ident $i:tt),*) ),* $(,)?) => {$(
        impl<'a, $($t: FromArg<'a>),*> FromArgs<'a> for ($($t,)*) {
            const PARAMS: &'static [Type] = &[$($t::TYPE),*];
            const OPTIONAL: u16 = optional_mask(&[$($t::OPTIONAL),*]);
            #[allow(unused_variables)]
            fn from_args(args: &[Value<'a>]) -> Result<Self, CallError> {
                const { assert!(Self::PARAMS.len() <= MAX_PARAMS) };
                let min = const { min_args(&[$($t::OPTIONAL),*]) };
                let max = Self::PARAMS.len();
                if args.len() < min || args.len() > max {
                    return Err(CallError::with_message(
                        ErrorCode::InvalidArguments,
                        const { count_message(min_args(&[$($t::OPTIONAL),*]), Self::PARAMS.len()) },
                    ));
                }
                Ok(($(arg::<$t, $i>(args)?,)*))
            }
        }

        impl<'a, F, R, $($t),*> TypedFn<'a, ($($t,)*), R> for F
        where
            F: Fn($($t),*) -> R,
        {
            #[allow(non_snake_case)]
            fn invoke(&self, ($($t,)*): ($($t,)*)) -> R {
                self($($t),*)
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
}

/// Calls typed function `f` with `args`: checks and converts them, runs it,
/// converts its result. What [`function!`](crate::function) puts in a
/// table.
pub fn call<'a, Args, R, F>(f: &F, args: &[Value<'a>]) -> Result<Value<'a>, CallError>
where
    F: TypedFn<'a, Args, R>,
    Args: FromArgs<'a>,
    R: IntoResult<'a>,
{
    f.invoke(Args::from_args(args)?).into_result()
}

/// The signature of typed function `f`, with `doc`.
pub const fn signature_of<'a, Args, R, F>(_f: &F, doc: &'static str) -> Signature<'static>
where
    F: TypedFn<'a, Args, R>,
    Args: FromArgs<'a>,
    R: IntoResult<'a>,
{
    Signature {
        params: Args::PARAMS,
        optional: Args::OPTIONAL,
        result: R::TYPE,
        doc,
    }
}

/// A function table entry for a typed function: `function!("name", f,
/// "one line of doc")`. The entry calls [`call`] and carries
/// [`signature_of`]`(f)`. See the [module docs](self).
#[macro_export]
macro_rules! function {
    ($name:expr, $f:expr, $doc:expr $(,)?) => {{
        fn handler<'a>(
            args: &[$crate::Value<'a>],
        ) -> ::core::result::Result<$crate::Value<'a>, $crate::CallError> {
            $crate::typed::call(&$f, args)
        }
        const SIGNATURE: $crate::Signature<'static> = $crate::typed::signature_of(&$f, $doc);
        $crate::Function::with_signature($name, handler, &SIGNATURE)
    }};
}

impl Function {
    /// A table entry with a signature (what [`function!`](crate::function)
    /// makes).
    pub const fn with_signature(
        name: &'static str,
        handler: crate::dispatch::Handler,
        signature: &'static Signature<'static>,
    ) -> Self {
        crate::dispatch::refuse_reserved(name);
        Function {
            name,
            handler,
            signature: Some(signature),
        }
    }
}
