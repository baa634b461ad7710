//! The shape of a serde type, for `rpc.functions`: which JSON type its
//! values take (`integer`, `number`, `array`, `object`, ...), and whether it
//! is optional (`Option<T>`). Found by asking the type's `Deserialize` what
//! it would read first: a probe deserializer records the request and stops,
//! so no value is needed and nothing runs but the type's own
//! `deserialize`.

use std::fmt;

use at_core::Type;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use super::checked::NUMBER_TOKEN;

/// What a type reads, as the probe saw it (an implementation detail of
/// [`Param`](crate::Param), not part of the stable API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The JSON type of its values as a parameter (`f64` takes integers
    /// too: `number`).
    pub param: Type,
    /// The JSON type of its values as a result (`f64` always gives a
    /// double).
    pub result: Type,
    /// `Option<T>`: `null` or `T`.
    pub optional: bool,
}

/// The shape of `T`.
pub(crate) fn shape_of<T: DeserializeOwned>() -> Shape {
    let mut seen = Seen {
        param: Type::Any,
        result: Type::Any,
        optional: false,
    };
    let _ = T::deserialize(Probe { seen: &mut seen });
    Shape {
        param: seen.param,
        result: seen.result,
        optional: seen.optional,
    }
}

struct Seen {
    param: Type,
    result: Type,
    optional: bool,
}

/// Records the first request and answers it with [`Stop`].
struct Probe<'s> {
    seen: &'s mut Seen,
}

/// The probe's way of ending a `deserialize` early.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shape probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl Probe<'_> {
    fn saw<V>(self, ty: Type) -> Result<V, Stop> {
        self.seen.param = ty;
        self.seen.result = ty;
        Err(Stop)
    }
}

macro_rules! probe {
    ($($method:ident => $ty:expr),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            self.saw($ty)
        }
    )*};
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    probe! {
        deserialize_any => Type::Any,
        deserialize_ignored_any => Type::Any,
        deserialize_bool => Type::Bool,
        deserialize_i8 => Type::Integer,
        deserialize_i16 => Type::Integer,
        deserialize_i32 => Type::Integer,
        deserialize_i64 => Type::Integer,
        deserialize_i128 => Type::Integer,
        deserialize_u8 => Type::Integer,
        deserialize_u16 => Type::Integer,
        deserialize_u32 => Type::Integer,
        deserialize_u64 => Type::Integer,
        deserialize_u128 => Type::Integer,
        deserialize_char => Type::String,
        deserialize_str => Type::String,
        deserialize_string => Type::String,
        deserialize_identifier => Type::String,
        deserialize_bytes => Type::Array,
        deserialize_byte_buf => Type::Array,
        deserialize_unit => Type::Null,
        deserialize_seq => Type::Array,
        deserialize_map => Type::Object,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.deserialize_float()
    }

    fn deserialize_f64<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.deserialize_float()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        // The inner type decides the JSON type; `Option<Option<T>>` is
        // optional once.
        self.seen.optional = true;
        visitor.visit_some(Probe { seen: self.seen })
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.saw(Type::Null)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        if name == NUMBER_TOKEN {
            return self.saw(Type::Number);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Stop> {
        self.saw(Type::Array)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.saw(Type::Array)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.saw(Type::Object)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        // A variant's name or an object of one member.
        self.saw(Type::Any)
    }
}

impl Probe<'_> {
    fn deserialize_float<V>(self) -> Result<V, Stop> {
        self.seen.param = Type::Number;
        self.seen.result = Type::Double;
        Err(Stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Reading {
        celsius: f64,
    }

    #[derive(serde::Deserialize)]
    #[serde(transparent)]
    #[allow(dead_code)]
    struct Celsius(f64);

    fn params<T: DeserializeOwned>() -> (&'static str, bool) {
        let s = shape_of::<T>();
        (s.param.as_str(), s.optional)
    }

    #[test]
    fn shapes() {
        assert_eq!(params::<u8>(), ("integer", false));
        assert_eq!(params::<f64>(), ("number", false));
        assert_eq!(shape_of::<f64>().result, Type::Double);
        assert_eq!(params::<String>(), ("string", false));
        assert_eq!(params::<bool>(), ("bool", false));
        assert_eq!(params::<()>(), ("null", false));
        assert_eq!(params::<Vec<i64>>(), ("array", false));
        assert_eq!(params::<[u8; 4]>(), ("array", false));
        assert_eq!(params::<(i64, String)>(), ("array", false));
        assert_eq!(params::<HashMap<String, i64>>(), ("object", false));
        assert_eq!(params::<Reading>(), ("object", false));
        assert_eq!(params::<Celsius>(), ("number", false));
        assert_eq!(params::<Option<f64>>(), ("number", true));
        assert_eq!(params::<Option<Vec<u8>>>(), ("array", true));
        assert_eq!(params::<crate::Value>(), ("any", false));
        assert_eq!(params::<crate::Number>(), ("number", false));
        assert_eq!(shape_of::<crate::Number>().result, Type::Number);
        assert_eq!(params::<serde_json::Value>(), ("any", false));
    }
}
