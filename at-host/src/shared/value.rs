//! [`Value`]: an owned argument or result, for code that keeps values past
//! the frame they came in; [`Arg`]: what an untyped call's arguments may be.

use std::borrow::Cow;
use std::fmt;

/// An owned argument or result; [`Value::as_core`] borrows it as the
/// zero-copy [`at_core::Value`] the codec reads and writes.
///
/// Values compare by meaning: two [`Value::Json`] are equal when they hold
/// the same JSON (members in any order, any spacing), and `Json("5")`
/// equals `Int(5)`; an integer never equals a double (`1` and `1.0` differ,
/// as they do on the wire).
#[derive(Clone, Debug)]
pub enum Value {
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer (written without fraction or exponent).
    Int(i64),
    /// A double (always written with a `.` or an exponent).
    Float(f64),
    /// A string.
    Str(String),
    /// Any other JSON value (an array or object), as validated JSON text.
    Json(String),
}

impl Value {
    /// Borrows this value in at-core's form.
    pub fn as_core(&self) -> at_core::Value<'_> {
        match self {
            Value::Null => at_core::Value::Null,
            Value::Bool(b) => at_core::Value::Bool(*b),
            Value::Int(i) => at_core::Value::Int(*i),
            Value::Float(x) => at_core::Value::Float(*x),
            Value::Str(s) => at_core::Value::str(s),
            Value::Json(text) => match at_core::RawJson::parse(text) {
                Ok(raw) => at_core::Value::Raw(raw),
                // Only `Value::json` makes `Json`, and it validates.
                Err(_) => at_core::Value::Null,
            },
        }
    }

    /// A `Json` value from text, checked to be exactly one JSON value.
    pub fn json(text: &str) -> Result<Value, at_core::BodyError> {
        at_core::RawJson::parse(text).map(|raw| Value::Json(raw.as_str().to_owned()))
    }

    /// A command-line argument: read as JSON if it is one (`10`, `2.5`,
    /// `true`, `"x"`, `[1, 2]`), otherwise taken as a string.
    ///
    /// ```
    /// use at_host::Value;
    /// assert_eq!(Value::from_cli_arg("10"), Value::Int(10));
    /// assert_eq!(Value::from_cli_arg("2.5"), Value::Float(2.5));
    /// assert_eq!(Value::from_cli_arg("\"x\""), Value::Str("x".into()));
    /// assert_eq!(Value::from_cli_arg("hello"), Value::Str("hello".into()));
    /// // An integer beyond i64 travels as written, for the server to judge.
    /// assert_eq!(Value::from_cli_arg("99999999999999999999"), Value::Json("99999999999999999999".into()));
    /// ```
    pub fn from_cli_arg(arg: &str) -> Value {
        match at_core::Value::parse(arg) {
            Ok(v) => Value::from(v),
            Err(at_core::BodyError::IntegerOverflow) => {
                Value::json(arg).unwrap_or_else(|_| Value::Str(arg.to_owned()))
            }
            Err(_) => Value::Str(arg.to_owned()),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Json(_), _) | (_, Value::Json(_)) => {
                crate::shared::convert::to_json(self) == crate::shared::convert::to_json(other)
            }
            _ => false,
        }
    }
}

impl From<at_core::Value<'_>> for Value {
    fn from(v: at_core::Value<'_>) -> Self {
        match v {
            at_core::Value::Null => Value::Null,
            at_core::Value::Bool(b) => Value::Bool(b),
            at_core::Value::Int(i) => Value::Int(i),
            at_core::Value::Float(x) => Value::Float(x),
            at_core::Value::Str(s) => Value::Str(s.to_string()),
            at_core::Value::Raw(raw) => Value::Json(raw.as_str().to_owned()),
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

/// The value's JSON text, as it travels: `30`, `5.0`, `"x"`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_core(), f)
    }
}

/// An argument of an untyped call ([`Client::call`](crate::Client::call),
/// [`UdpClient::call`](crate::UdpClient::call), ...): [`Value`], the owned
/// value a dynamic caller builds, or at-core's borrowed `at_core::Value`,
/// passed on without a copy. Sealed: only these two.
///
/// With no arguments, `&[]` does not say which: name it, or make the call
/// typed.
///
/// ```no_run
/// # async fn example(client: &mut at_host::Client) -> Result<(), at_host::Error> {
/// use at_host::Value;
/// let info = client.call::<Value>("rpc.info", &[]).await?;
/// let same: serde_json::Value = client.call_as("rpc.info", ()).await?;
/// # Ok(()) }
/// ```
pub trait Arg: Sync + sealed::Sealed + Sized {
    /// The arguments in at-core's form, borrowed when they already are.
    #[doc(hidden)]
    fn to_core(args: &[Self]) -> Cow<'_, [at_core::Value<'_>]>;
}

impl Arg for Value {
    fn to_core(args: &[Self]) -> Cow<'_, [at_core::Value<'_>]> {
        Cow::Owned(args.iter().map(Value::as_core).collect())
    }
}

impl Arg for at_core::Value<'_> {
    fn to_core(args: &[Self]) -> Cow<'_, [at_core::Value<'_>]> {
        Cow::Borrowed(args)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Value {}
    impl Sealed for at_core::Value<'_> {}
}
