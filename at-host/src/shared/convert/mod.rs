//! Typed values on the host: [`Value`] to and from serde types, for typed
//! calls (`Client::call_as`) and typed functions. Shared by the client and
//! the server sides; imports neither.
//!
//! - `checked`: the checking deserializer (errors with a path);
//! - `shape`: a type's JSON shape, for `rpc.functions`.
//!
//! Numbers keep the contract's distinction: a serde integer travels as an
//! integer (`10`), a serde float as a double (`10.0`), so a typed call
//! writes exactly the bytes an untyped call with the same values writes.

mod checked;
mod shape;

pub use checked::Mismatch;
pub(crate) use checked::NUMBER_TOKEN;
pub use shape::Shape;
pub(crate) use shape::shape_of;

use at_core::Type;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::shared::error::Error;
use crate::shared::value::Value;

/// `value` (any serde type) as a [`Value`]: integers stay integers, floats
/// doubles, arrays and objects [`Value::Json`].
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Reading { celsius: f64 }
/// let v = at_host::to_value(&Reading { celsius: 21.5 }).unwrap();
/// assert_eq!(v, at_host::Value::json(r#"{"celsius": 21.5}"#).unwrap());
/// assert_eq!(at_host::to_value(&10).unwrap(), at_host::Value::Int(10));
/// ```
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, Mismatch> {
    serde_json::to_value(value)
        .map(from_json)
        .map_err(|e| Mismatch::from_message(e.to_string()))
}

/// `value` as a `T`, checked as a typed function checks its arguments: an
/// error names the field or element and what it should have been.
///
/// ```
/// #[derive(serde::Deserialize, Debug)]
/// struct Reading { celsius: f64 }
/// let v = at_host::Value::json(r#"{"celsius": "x"}"#).unwrap();
/// let e = at_host::from_value::<Reading>(&v).unwrap_err();
/// assert_eq!(e.to_string(), r#"field "celsius": expected a number, got "x""#);
/// ```
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Mismatch> {
    checked::from_json(&to_json(value))
}

/// An argument in at-core's form as a `T`, checked.
pub(crate) fn from_core<T: DeserializeOwned>(value: &at_core::Value<'_>) -> Result<T, Mismatch> {
    checked::from_json(&core_to_json(value))
}

/// `args` (a tuple, array or slice of serde values) as the positional
/// argument list.
pub(crate) fn to_args(func: &str, args: &impl Serialize) -> Result<Vec<Value>, Error> {
    let arguments = |reason: String| Error::Arguments {
        func: func.to_owned(),
        reason,
    };
    match serde_json::to_value(args).map_err(|e| arguments(e.to_string()))? {
        Json::Array(items) => Ok(items.into_iter().map(from_json).collect()),
        // `()` serialises as null: no arguments.
        Json::Null => Ok(Vec::new()),
        other => Err(arguments(format!(
            "arguments are a tuple, array or slice, not {}",
            json_kind(&other)
        ))),
    }
}

/// The result of `func` as `T`; a result that does not convert is
/// [`Error::Decode`], naming the function, the type and where it differs.
pub(crate) fn from_result<T: DeserializeOwned>(func: &str, value: Value) -> Result<T, Error> {
    from_value(&value).map_err(|e| Error::Decode {
        func: func.to_owned(),
        expected: std::any::type_name::<T>(),
        got: value.to_string(),
        reason: e.to_string(),
    })
}

/// Why a function's result cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ResultError {
    /// An integer beyond i64, or a bare double that is not finite.
    Overflow(&'static str),
    /// serde refused it (a map with keys that are not strings, say).
    Unserialisable(String),
}

/// A function's result as the reply's value, for a result of shape
/// `declared`.
pub(crate) fn encode_result<T: Serialize + ?Sized>(
    value: &T,
    declared: Shape,
) -> Result<Value, ResultError> {
    let json =
        serde_json::to_value(value).map_err(|e| ResultError::Unserialisable(e.to_string()))?;
    // serde_json writes a double that is not finite as null: for a result
    // that is a number (and not optional), that null is the contract's
    // overflow.
    let number = matches!(declared.result, Type::Double | Type::Number | Type::Integer);
    if json.is_null() && number && !declared.optional {
        return Err(ResultError::Overflow("the result is not a finite number"));
    }
    if beyond_i64(&json) {
        return Err(ResultError::Overflow(
            "the result holds an integer beyond the 64-bit signed range",
        ));
    }
    Ok(from_json(json))
}

/// Whether `json` holds an integer above i64::MAX anywhere.
fn beyond_i64(json: &Json) -> bool {
    match json {
        Json::Number(n) => n.is_u64() && n.as_i64().is_none(),
        Json::Array(items) => items.iter().any(beyond_i64),
        Json::Object(members) => members.values().any(beyond_i64),
        _ => false,
    }
}

pub(crate) fn from_json(json: Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Int(i),
            // A u64 beyond i64 travels as written (the peer answers overflow).
            _ if n.is_u64() => Value::Json(n.to_string()),
            (None, Some(x)) => Value::Float(x),
            (None, None) => Value::Json(n.to_string()),
        },
        Json::String(s) => Value::Str(s),
        composite => Value::Json(composite.to_string()),
    }
}

pub(crate) fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(x) => float(*x),
        Value::Str(s) => Json::String(s.clone()),
        // `Json` holds validated JSON (see `Value::json`).
        Value::Json(text) => serde_json::from_str(text).unwrap_or(Json::Null),
    }
}

/// An argument in at-core's form as serde's JSON value.
fn core_to_json(value: &at_core::Value<'_>) -> Json {
    match value {
        at_core::Value::Null => Json::Null,
        at_core::Value::Bool(b) => Json::Bool(*b),
        at_core::Value::Int(i) => Json::from(*i),
        at_core::Value::Float(x) => float(*x),
        at_core::Value::Str(s) => Json::String(s.chars().collect()),
        // Validated by at-core's reader.
        at_core::Value::Raw(raw) => serde_json::from_str(raw.as_str()).unwrap_or(Json::Null),
    }
}

/// A double as serde's JSON number, kept a double even when whole (`10.0`).
fn float(x: f64) -> Json {
    serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
}

fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A [`Value`] is any JSON value to serde.
impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        to_json(self).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Json::deserialize(deserializer).map(from_json)
    }
}

/// The result of a pipelined call ([`Client::send_as`](crate::Client::send_as),
/// then [`Client::receive`](crate::Client::receive)) as `T`; a result that
/// does not convert is [`Error::Decode`] naming `func`.
pub fn decode_result<T: DeserializeOwned>(
    func: &str,
    result: Result<Value, Error>,
) -> Result<T, Error> {
    from_result(func, result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_keep_integers_and_doubles_apart() {
        let args = to_args("f", &(10, 2.5, "x", true, (), [1, 2])).unwrap();
        assert_eq!(
            args,
            vec![
                Value::Int(10),
                Value::Float(2.5),
                Value::Str("x".into()),
                Value::Bool(true),
                Value::Null,
                Value::Json("[1,2]".into()),
            ]
        );
        assert_eq!(to_args("f", &()).unwrap(), vec![]);
        assert_eq!(
            to_args("f", &[1u64 << 63]).unwrap(),
            vec![Value::Json("9223372036854775808".into())]
        );
        assert!(matches!(to_args("f", &5), Err(Error::Arguments { .. })));
    }

    #[test]
    fn results_convert_or_name_the_function() {
        assert_eq!(from_result::<f64>("div", Value::Int(5)).unwrap(), 5.0);
        assert_eq!(from_result::<Option<i64>>("f", Value::Null).unwrap(), None);
        assert_eq!(
            from_result::<Vec<u8>>("f", Value::Json("[1, 2]".into())).unwrap(),
            vec![1, 2]
        );
        let e = from_result::<i64>("div", Value::Float(2.5)).unwrap_err();
        assert!(
            matches!(&e, Error::Decode { func, expected: "i64", got, .. } if func == "div" && got == "2.5"),
            "{e:?}"
        );
        let e = from_result::<u8>("f", Value::Int(300)).unwrap_err();
        assert!(matches!(e, Error::Decode { .. }), "{e:?}");
    }

    #[test]
    fn results_that_do_not_fit_are_overflow() {
        fn encode<T: Serialize + DeserializeOwned>(v: T) -> Result<Value, ResultError> {
            encode_result(&v, shape_of::<T>())
        }
        assert_eq!(
            encode(f64::INFINITY),
            Err(ResultError::Overflow("the result is not a finite number"))
        );
        assert!(matches!(
            encode(vec![u64::MAX]),
            Err(ResultError::Overflow(_))
        ));
        assert_eq!(encode(Option::<f64>::None), Ok(Value::Null));
        assert_eq!(encode(10.0), Ok(Value::Float(10.0)));
        assert_eq!(encode(u64::MAX >> 1), Ok(Value::Int(i64::MAX)));
    }
}
