//! Typed functions in a function table: conversions, range checks, counts,
//! optional trailing parameters, results and signatures.

use at_core::typed::{FromArg, IntoResult};
use at_core::{CallError, ErrorCode, Function, Functions, JsonStr, Reply, Type, Value, function};
use proptest::prelude::*;

mod common;

fn scale(x: f64, k: i32) -> Result<f64, CallError> {
    Ok(x * f64::from(k))
}

fn led(on: bool) -> Result<bool, CallError> {
    Ok(on)
}

fn byte(b: u8) -> u8 {
    b
}

fn greet(name: &str, times: Option<u16>) -> Option<u16> {
    let _ = name;
    times
}

fn nothing() {}

fn huge() -> u64 {
    u64::MAX
}

fn not_finite(x: f64) -> f64 {
    x * 1e308
}

fn length(s: JsonStr<'_>) -> u32 {
    u32::try_from(s.len()).unwrap_or(u32::MAX)
}

/// A fixed array, a bounded list and a bounded string: no allocation.
fn mean(xs: [i32; 3]) -> f64 {
    xs.iter().map(|&x| f64::from(x)).sum::<f64>() / 3.0
}

fn total(xs: heapless::Vec<u8, 4>) -> u32 {
    xs.iter().map(|&x| u32::from(x)).sum()
}

fn label(name: heapless::String<8>) -> u32 {
    name.len() as u32
}

fn pairs(xs: heapless::Vec<[i64; 2], 2>) -> i64 {
    xs.iter().map(|[a, b]| a * b).sum()
}

static DEVICE: [Function; 4] = [
    function!("mean", mean, ""),
    function!("total", total, ""),
    function!("label", label, ""),
    function!("pairs", pairs, ""),
];

static TABLE: [Function; 8] = [
    function!("scale", scale, "x times k"),
    function!("led", led, "switch the LED"),
    function!("byte", byte, ""),
    function!("greet", greet, "a name and how often"),
    function!("nothing", nothing, "does nothing"),
    function!("huge", huge, ""),
    function!("not_finite", not_finite, ""),
    function!("length", length, "a string's length"),
];

/// `func(args)` through the table: the result, or (code, message).
fn call(func: &str, args: &[Value<'_>]) -> Result<String, (ErrorCode, String)> {
    TABLE.call(func, args, |reply| match reply {
        Reply::Success(v) => Ok(v.to_string()),
        Reply::Error(e) => Err((
            e.error_code().expect("a contract code"),
            e.message.chars().collect(),
        )),
    })
}

fn invalid(message: &str) -> Result<String, (ErrorCode, String)> {
    Err((ErrorCode::InvalidArguments, message.to_owned()))
}

#[test]
fn arguments_are_converted_and_checked() {
    assert_eq!(
        call("scale", &[Value::Float(1.5), Value::Int(4)]),
        Ok("6.0".into())
    );
    // An integer where a double is expected is a number.
    assert_eq!(
        call("scale", &[Value::Int(3), Value::Int(2)]),
        Ok("6.0".into())
    );
    // Narrowing is checked, never wrapped.
    assert_eq!(
        call("scale", &[Value::Float(1.0), Value::Int(1 << 40)]),
        invalid("argument 2: expected an integer from -2147483648 to 2147483647")
    );
    assert_eq!(
        call("byte", &[Value::Int(300)]),
        invalid("argument 1: expected an integer from 0 to 255")
    );
    assert_eq!(
        call("byte", &[Value::Int(-1)]),
        invalid("argument 1: expected an integer from 0 to 255")
    );
    assert_eq!(call("byte", &[Value::Int(255)]), Ok("255".into()));
    // A double is not an integer.
    assert_eq!(
        call("byte", &[Value::Float(1.0)]),
        invalid("argument 1: expected an integer from 0 to 255")
    );
    assert_eq!(
        call("led", &[Value::str("on")]),
        invalid("argument 1: expected a boolean")
    );
    assert_eq!(call("led", &[Value::Bool(true)]), Ok("true".into()));
    assert_eq!(
        call("scale", &[Value::str("x"), Value::Int(1)]),
        invalid("argument 1: expected a number")
    );
}

#[test]
fn counts_and_optional_trailing_parameters() {
    assert_eq!(call("led", &[]), invalid("expected 1 argument"));
    assert_eq!(
        call("led", &[Value::Bool(true), Value::Bool(false)]),
        invalid("expected 1 argument")
    );
    assert_eq!(
        call("scale", &[Value::Int(1)]),
        invalid("expected 2 arguments")
    );
    assert_eq!(
        call("nothing", &[Value::Null]),
        invalid("expected no arguments")
    );
    assert_eq!(call("nothing", &[]), Ok("null".into()));
    // Option at the end: may be left out, or null.
    assert_eq!(call("greet", &[Value::str("ada")]), Ok("null".into()));
    assert_eq!(
        call("greet", &[Value::str("ada"), Value::Null]),
        Ok("null".into())
    );
    assert_eq!(
        call("greet", &[Value::str("ada"), Value::Int(3)]),
        Ok("3".into())
    );
    assert_eq!(
        call("greet", &[Value::str("ada"), Value::Int(70000)]),
        invalid("argument 2: expected an integer from 0 to 65535")
    );
    assert_eq!(call("greet", &[]), invalid("expected at least 1 argument"));
}

#[test]
fn strings_with_and_without_escapes() {
    let escaped = Value::parse(r#""a\"b""#).unwrap();
    assert_eq!(
        call("greet", &[escaped]),
        invalid("argument 1: expected a string without escape sequences")
    );
    // JsonStr takes any string and resolves escapes.
    assert_eq!(call("length", &[escaped]), Ok("3".into()));
}

#[test]
fn results_that_do_not_fit_are_overflow() {
    assert_eq!(call("huge", &[]).unwrap_err().0, ErrorCode::Overflow);
    assert_eq!(
        call("not_finite", &[Value::Float(1e10)]).unwrap_err().0,
        ErrorCode::Overflow
    );
}

#[test]
fn signatures_come_from_the_types() {
    let sig = |i: usize| {
        TABLE[i]
            .signature
            .expect("typed functions have a signature")
    };
    assert_eq!(sig(0).params, &[Type::Number, Type::Integer]);
    assert_eq!((sig(0).result, sig(0).doc), (Type::Double, "x times k"));
    assert_eq!(
        (sig(1).params, sig(1).result),
        (&[Type::Bool][..], Type::Bool)
    );
    assert_eq!(sig(3).params, &[Type::String, Type::Integer]);
    assert_eq!((sig(4).params, sig(4).result), (&[][..], Type::Null));
    assert_eq!(
        at_core::calculator::DIV
            .signature
            .map(|s| (s.params, s.result)),
        Some((&[Type::Number, Type::Number][..], Type::Double))
    );
    assert!(
        Function::new("raw", |_| Ok(Value::Null))
            .signature
            .is_none()
    );
}

fn device(func: &str, args: &str) -> Result<String, String> {
    let raw = at_core::RawJson::parse(args).unwrap();
    let arg = Value::Raw(raw);
    let arg = match Value::parse(args) {
        Ok(scalar) => scalar,
        Err(_) => arg,
    };
    DEVICE.call(func, &[arg], |reply| match reply {
        Reply::Success(v) => Ok(v.to_string()),
        Reply::Error(e) => Err(e.message.chars().collect()),
    })
}

#[test]
fn arrays_bounded_lists_and_strings_without_alloc() {
    assert_eq!(device("mean", "[1, 2, 6]"), Ok("3.0".into()));
    let wrong =
        Err("argument 1: expected an array of the parameter's length and element type".into());
    assert_eq!(device("mean", "[1, 2]"), wrong);
    assert_eq!(device("mean", "[1, 2, 3, 4]"), wrong);
    assert_eq!(device("mean", "[1, 2.5, 3]"), wrong);
    assert_eq!(device("mean", "{\"a\": 1}"), wrong);
    assert_eq!(device("total", "[]"), Ok("0".into()));
    assert_eq!(device("total", "[255, 255, 1, 1]"), Ok("512".into()));
    assert!(device("total", "[1, 2, 3, 4, 5]").is_err());
    assert!(device("total", "[256]").is_err());
    assert_eq!(device("label", "\"pump\\n1\""), Ok("6".into()));
    assert!(device("label", "\"longer than 8\"").is_err());
    assert_eq!(device("pairs", "[[2, 3], [4, 5]]"), Ok("26".into()));
    assert!(device("pairs", "[[2, 3], [4]]").is_err());
    let sig = DEVICE[0].signature.unwrap();
    assert_eq!((sig.params, sig.result), (&[Type::Array][..], Type::Double));
    assert_eq!(DEVICE[2].signature.unwrap().params, &[Type::String]);
}

#[test]
fn optional_parameters_are_marked() {
    let greet = TABLE[3].signature.unwrap();
    assert!(!greet.is_optional(0) && greet.is_optional(1));
    assert_eq!(greet.optional, 0b10);
    assert_eq!(TABLE[0].signature.unwrap().optional, 0);
}

fn accepts<'a, T: FromArg<'a>>(i: i64) -> bool {
    T::from_arg(&Value::Int(i)).is_some()
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// Every integer width takes exactly the values in its range.
    #[test]
    fn integer_parameters_take_exactly_their_range(i in any::<i64>()) {
        prop_assert_eq!(accepts::<i8>(i), i8::try_from(i).is_ok());
        prop_assert_eq!(accepts::<i16>(i), i16::try_from(i).is_ok());
        prop_assert_eq!(accepts::<i32>(i), i32::try_from(i).is_ok());
        prop_assert!(accepts::<i64>(i));
        prop_assert_eq!(accepts::<u8>(i), u8::try_from(i).is_ok());
        prop_assert_eq!(accepts::<u16>(i), u16::try_from(i).is_ok());
        prop_assert_eq!(accepts::<u32>(i), u32::try_from(i).is_ok());
        prop_assert_eq!(accepts::<u64>(i), i >= 0);
        prop_assert_eq!(f64::from_arg(&Value::Int(i)), Some(i as f64));
    }

    /// Integer results are written exactly, or `overflow` past i64.
    #[test]
    fn integer_results_round_trip(u in any::<u64>()) {
        let r = IntoResult::into_result(u);
        match i64::try_from(u) {
            Ok(i) => prop_assert_eq!(r, Ok(Value::Int(i))),
            Err(_) => prop_assert_eq!(r.map_err(|e| e.code), Err(ErrorCode::Overflow)),
        }
    }
}
