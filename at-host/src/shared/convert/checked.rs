//! A serde [`Deserializer`] over a JSON value that checks it against the
//! target type the way the contract's typed functions do, and says where
//! and what went wrong: `field "celsius": expected a number, got "x"`.
//!
//! - integers must be written as integers and fit the type (never
//!   wrapped or truncated): `2.5` or `300` is no `u8`;
//! - `f64` (and `f32`, when it fits) takes an integer or a double;
//! - strings, booleans, `null`, arrays (sequences, tuples, fixed arrays)
//!   and objects (structs, maps) must be exactly that;
//! - an enum is its variant's name (`"Red"`) or an object of one member
//!   (`{"Rgb": [1, 2, 3]}`), as serde writes it.
//!
//! Serde's own checks (a missing or unknown field, a wrong tuple length, no
//! matching variant) come back through the same [`Mismatch`], with the path.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};
use serde_json::Value as Json;

/// The newtype-struct name [`Number`](crate::Number) deserialises through,
/// so that the shape probe can tell it from any other value.
pub(crate) const NUMBER_TOKEN: &str = "$at_host::Number";

/// Where in a value a [`Mismatch`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// A member of an object.
    Field(String),
    /// An element of an array (0-based here, shown 1-based).
    Element(usize),
}

/// Why a JSON value is not of the type asked for, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// From the innermost step outwards.
    path: Vec<Step>,
    message: String,
}

impl Mismatch {
    /// A mismatch at the top of the value.
    pub(crate) fn from_message(message: String) -> Self {
        Mismatch::new(message)
    }

    fn new(message: impl Into<String>) -> Self {
        Mismatch {
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// `expected WHAT, got VALUE`.
    fn expected(what: &str, got: &Json) -> Self {
        Mismatch::new(format!("expected {what}, got {}", shown(got)))
    }

    fn at(mut self, step: Step) -> Self {
        self.path.push(step);
        self
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in self.path.iter().rev() {
            match step {
                Step::Field(name) => write!(f, "field {}: ", Json::String(name.clone()))?,
                Step::Element(i) => write!(f, "element {}: ", i + 1)?,
            }
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Mismatch {}

impl de::Error for Mismatch {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Mismatch::new(msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Mismatch::new(format!("expected {exp}, got {unexp}"))
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        Mismatch::new(format!("expected {exp}, got {len} elements"))
    }

    fn missing_field(field: &'static str) -> Self {
        Mismatch::new(format!("missing field {}", Json::from(field)))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Mismatch::new(format!(
            "unknown field {}, expected one of {}",
            Json::from(field),
            names(expected)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Mismatch::new(format!(
            "unknown variant {}, expected one of {}",
            Json::from(variant),
            names(expected)
        ))
    }
}

fn names(list: &[&str]) -> String {
    let quoted: Vec<String> = list.iter().map(|n| Json::from(*n).to_string()).collect();
    quoted.join(", ")
}

/// The value as AT writes it, cut short when long.
fn shown(value: &Json) -> String {
    const MAX: usize = 40;
    let text = super::from_json(value.clone()).to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// `value` as a `T`, checked.
pub(crate) fn from_json<T: de::DeserializeOwned>(value: &Json) -> Result<T, Mismatch> {
    T::deserialize(Checked(value))
}

/// The checking deserializer over one JSON value.
struct Checked<'a>(&'a Json);

macro_rules! integer {
    ($method:ident, $visit:ident, $t:ty, $expected:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
            let fits = match self.0 {
                Json::Number(n) if !n.is_f64() => n
                    .as_i64()
                    .and_then(|i| <$t>::try_from(i).ok())
                    .or_else(|| n.as_u64().and_then(|u| <$t>::try_from(u).ok())),
                _ => None,
            };
            match fits {
                Some(x) => visitor.$visit(x),
                None => Err(Mismatch::expected($expected, self.0)),
            }
        }
    };
}

impl<'de> Deserializer<'de> for Checked<'de> {
    type Error = Mismatch;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0 {
            Json::Null => visitor.visit_unit(),
            Json::Bool(b) => visitor.visit_bool(*b),
            Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => visitor.visit_i64(i),
                (None, Some(u), _) => visitor.visit_u64(u),
                (None, None, Some(x)) => visitor.visit_f64(x),
                _ => Err(Mismatch::expected("a number", self.0)),
            },
            Json::String(s) => visitor.visit_borrowed_str(s),
            Json::Array(items) => visit_array(items, visitor),
            Json::Object(members) => visit_object(members, visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0 {
            Json::Bool(b) => visitor.visit_bool(*b),
            other => Err(Mismatch::expected("a boolean", other)),
        }
    }

    integer!(deserialize_i8, visit_i8, i8, "an integer from -128 to 127");
    integer!(
        deserialize_i16,
        visit_i16,
        i16,
        "an integer from -32768 to 32767"
    );
    integer!(
        deserialize_i32,
        visit_i32,
        i32,
        "an integer from -2147483648 to 2147483647"
    );
    integer!(deserialize_i64, visit_i64, i64, "an integer");
    integer!(deserialize_i128, visit_i128, i128, "an integer");
    integer!(deserialize_u8, visit_u8, u8, "an integer from 0 to 255");
    integer!(
        deserialize_u16,
        visit_u16,
        u16,
        "an integer from 0 to 65535"
    );
    integer!(
        deserialize_u32,
        visit_u32,
        u32,
        "an integer from 0 to 4294967295"
    );
    integer!(
        deserialize_u64,
        visit_u64,
        u64,
        "an integer from 0 to 9223372036854775807"
    );
    integer!(
        deserialize_u128,
        visit_u128,
        u128,
        "an integer from 0 to 9223372036854775807"
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0.as_f64() {
            Some(x) if (x as f32).is_finite() => visitor.visit_f32(x as f32),
            _ => Err(Mismatch::expected("a number within f32's range", self.0)),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0.as_f64() {
            Some(x) => visitor.visit_f64(x),
            None => Err(Mismatch::expected("a number", self.0)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        let mut chars = self.0.as_str().map(str::chars);
        match chars.as_mut().map(|c| (c.next(), c.next())) {
            Some((Some(c), None)) => visitor.visit_char(c),
            _ => Err(Mismatch::expected("a string of one character", self.0)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0 {
            Json::String(s) => visitor.visit_borrowed_str(s),
            other => Err(Mismatch::expected("a string", other)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0 {
            Json::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0 {
            Json::Null => visitor.visit_unit(),
            other => Err(Mismatch::expected("null", other)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        if name == NUMBER_TOKEN && !self.0.is_number() {
            return Err(Mismatch::expected("a number", self.0));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0 {
            Json::Array(items) => visit_array(items, visitor),
            other => Err(Mismatch::expected("an array", other)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        match self.0 {
            Json::Array(items) if items.len() == len => visit_array(items, visitor),
            other => Err(Mismatch::expected(
                &format!("an array of {len} elements"),
                other,
            )),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0 {
            Json::Object(members) => visit_object(members, visitor),
            other => Err(Mismatch::expected("an object", other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        match self.0 {
            Json::String(variant) => visitor.visit_enum(variant.as_str().into_deserializer()),
            Json::Object(members) if members.len() == 1 => match members.iter().next() {
                Some((variant, value)) => visitor.visit_enum(Variant { variant, value }),
                None => Err(Mismatch::expected("a variant", self.0)),
            },
            other => Err(Mismatch::expected(
                "a variant's name or an object of one member",
                other,
            )),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        visitor.visit_unit()
    }
}

fn visit_array<'de, V: Visitor<'de>>(items: &'de [Json], visitor: V) -> Result<V::Value, Mismatch> {
    let mut access = Elements {
        items: items.iter(),
        index: 0,
    };
    let value = visitor.visit_seq(&mut access)?;
    match access.items.len() {
        0 => Ok(value),
        more => Err(Mismatch::new(format!(
            "expected an array of {} elements, got {}",
            access.index,
            access.index + more
        ))),
    }
}

fn visit_object<'de, V: Visitor<'de>>(
    members: &'de serde_json::Map<String, Json>,
    visitor: V,
) -> Result<V::Value, Mismatch> {
    visitor.visit_map(Members {
        members: members.iter(),
        value: None,
    })
}

struct Elements<'de> {
    items: std::slice::Iter<'de, Json>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for &mut Elements<'de> {
    type Error = Mismatch;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Mismatch> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(Checked(item))
            .map(Some)
            .map_err(|e| e.at(Step::Element(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Members<'de> {
    members: serde_json::map::Iter<'de>,
    value: Option<(&'de str, &'de Json)>,
}

impl<'de> de::MapAccess<'de> for Members<'de> {
    type Error = Mismatch;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Mismatch> {
        let Some((key, value)) = self.members.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(Key(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Mismatch> {
        match self.value.take() {
            Some((key, value)) => seed
                .deserialize(Checked(value))
                .map_err(|e| e.at(Step::Field(key.to_owned()))),
            None => Err(Mismatch::new("a value without its key")),
        }
    }
}

/// An object's key: a string, or a number for maps keyed by integers
/// (`{"1": ...}` into `BTreeMap<u32, _>`).
struct Key<'de>(&'de str);

impl<'de> Deserializer<'de> for Key<'de> {
    type Error = Mismatch;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0.parse() {
            Ok(i) => visitor.visit_i64(i),
            Err(_) => Err(Mismatch::new(format!(
                "expected an integer key, got {}",
                Json::from(self.0)
            ))),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0.parse() {
            Ok(u) => visitor.visit_u64(u),
            Err(_) => Err(Mismatch::new(format!(
                "expected a non-negative integer key, got {}",
                Json::from(self.0)
            ))),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_u64(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// An enum written as `{"Variant": value}`.
struct Variant<'de> {
    variant: &'de str,
    value: &'de Json,
}

impl<'de> de::EnumAccess<'de> for Variant<'de> {
    type Error = Mismatch;
    type Variant = Checked<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Checked<'de>), Mismatch> {
        let name = seed.deserialize(Key(self.variant))?;
        Ok((name, Checked(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for Checked<'de> {
    type Error = Mismatch;

    fn unit_variant(self) -> Result<(), Mismatch> {
        self.deserialize_unit(de::IgnoredAny).map(|_| ())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Mismatch> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Mismatch> {
        self.deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        self.deserialize_map(visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Reading {
        celsius: f64,
        sensor: String,
        #[serde(default)]
        tags: Vec<u8>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    enum Colour {
        Red,
        Rgb(u8, u8, u8),
        Named { name: String },
    }

    fn err<T: de::DeserializeOwned + fmt::Debug>(value: Json) -> String {
        from_json::<T>(&value).unwrap_err().to_string()
    }

    #[test]
    fn structs_name_the_field() {
        let ok: Reading = from_json(&json!({"celsius": 21, "sensor": "a"})).unwrap();
        assert_eq!(ok.celsius, 21.0);
        assert_eq!(
            err::<Reading>(json!({"celsius": "x", "sensor": "a"})),
            r#"field "celsius": expected a number, got "x""#
        );
        assert_eq!(
            err::<Reading>(json!({"sensor": "a"})),
            r#"missing field "celsius""#
        );
        assert_eq!(
            err::<Reading>(json!({"celsius": 1, "sensor": "a", "tags": [1, 300]})),
            r#"field "tags": element 2: expected an integer from 0 to 255, got 300"#
        );
        assert_eq!(
            err::<Reading>(json!([1, "a"])),
            r#"expected an object, got [1,"a"]"#
        );
    }

    #[test]
    fn integers_are_never_narrowed_or_read_from_doubles() {
        assert_eq!(from_json::<u8>(&json!(255)).unwrap(), 255);
        assert_eq!(
            err::<u8>(json!(256)),
            "expected an integer from 0 to 255, got 256"
        );
        assert_eq!(err::<i64>(json!(2.5)), "expected an integer, got 2.5");
        assert_eq!(err::<i64>(json!(10.0)), "expected an integer, got 10.0");
        assert_eq!(from_json::<f64>(&json!(10)).unwrap(), 10.0);
        assert_eq!(
            err::<f32>(json!(1e300)),
            "expected a number within f32's range, got 1e300"
        );
        assert_eq!(err::<bool>(json!(1)), "expected a boolean, got 1");
    }

    #[test]
    fn lists_tuples_maps_and_enums() {
        assert_eq!(from_json::<Vec<i32>>(&json!([1, 2])).unwrap(), vec![1, 2]);
        assert_eq!(from_json::<[u8; 2]>(&json!([1, 2])).unwrap(), [1, 2]);
        assert_eq!(
            err::<[u8; 2]>(json!([1, 2, 3])),
            "expected an array of 2 elements, got [1,2,3]"
        );
        assert_eq!(
            err::<(i64, String)>(json!([1])),
            "expected an array of 2 elements, got [1]"
        );
        let m: BTreeMap<String, Option<i64>> = from_json(&json!({"a": 1, "b": null})).unwrap();
        assert_eq!(m["a"], Some(1));
        assert_eq!(m["b"], None);
        let keyed: BTreeMap<u32, bool> = from_json(&json!({"7": true})).unwrap();
        assert!(keyed[&7]);
        assert_eq!(from_json::<Colour>(&json!("Red")).unwrap(), Colour::Red);
        assert_eq!(
            from_json::<Colour>(&json!({"Rgb": [1, 2, 3]})).unwrap(),
            Colour::Rgb(1, 2, 3)
        );
        assert_eq!(
            from_json::<Colour>(&json!({"Named": {"name": "teal"}})).unwrap(),
            Colour::Named {
                name: "teal".into()
            }
        );
        assert!(err::<Colour>(json!("Blue")).starts_with(r#"unknown variant "Blue""#));
        assert_eq!(
            err::<Vec<Vec<i64>>>(json!([[1], [2, "x"]])),
            r#"element 2: element 2: expected an integer, got "x""#
        );
        let long = err::<i64>(json!("x".repeat(100)));
        assert!(long.ends_with("...") && long.len() < 80, "{long}");
    }
}
