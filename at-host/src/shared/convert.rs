//! Typed values on the host: [`Value`] to and from serde types, for typed
//! calls (`Client::call_as`) and typed functions' `Json<T>` parameters and
//! results. Shared by the client and the server sides; imports neither.
//!
//! Numbers keep the contract's distinction: a serde integer travels as an
//! integer (`10`), a serde float as a double (`10.0`), so a typed call
//! writes exactly the bytes an untyped call with the same values writes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::shared::error::Error;
use crate::shared::value::Value;

/// `args` (a tuple, array or slice of serde values) as the positional
/// argument list.
pub(crate) fn to_args(func: &str, args: &impl Serialize) -> Result<Vec<Value>, Error> {
    let arguments = |reason: String| Error::Arguments {
        func: func.to_owned(),
        reason,
    };
    match serde_json::to_value(args).map_err(|e| arguments(e.to_string()))? {
        serde_json::Value::Array(items) => items.into_iter().map(from_json).collect(),
        // `()` serialises as null: no arguments.
        serde_json::Value::Null => Ok(Vec::new()),
        other => Err(arguments(format!(
            "arguments are a tuple, array or slice, not {}",
            json_kind(&other)
        ))),
    }
}

/// The result of `func` as `T`; a result that does not convert is
/// [`Error::Decode`], naming the function and the type.
pub(crate) fn from_result<T: DeserializeOwned>(func: &str, value: Value) -> Result<T, Error> {
    decode(&value).map_err(|e| Error::Decode {
        func: func.to_owned(),
        expected: std::any::type_name::<T>(),
        got: value.to_string(),
        reason: e.to_string(),
    })
}

/// `value` as `T`.
pub(crate) fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(to_json(value))
}

/// `value` as a [`Value`]: serde integers stay integers, floats doubles.
pub(crate) fn encode(value: &impl Serialize) -> Result<Value, serde_json::Error> {
    serde_json::to_value(value).and_then(from_json)
}

fn from_json<E>(json: serde_json::Value) -> Result<Value, E> {
    Ok(match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Int(i),
            // A u64 beyond i64 travels as written (the peer answers overflow).
            _ if n.is_u64() => Value::Json(n.to_string()),
            (None, Some(x)) => Value::Float(x),
            (None, None) => Value::Json(n.to_string()),
        },
        serde_json::Value::String(s) => Value::Str(s),
        composite => Value::Json(composite.to_string()),
    })
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::Str(s) => serde_json::Value::String(s.clone()),
        // `Json` holds validated JSON (see `Value::json`).
        Value::Json(text) => serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
    }
}

fn json_kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A [`Value`] is any JSON value to serde.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        to_json(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_json(serde_json::Value::deserialize(deserializer)?)
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
}
