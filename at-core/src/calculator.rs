//! The calculator every AT calculator server registers: `add`, `sub`, `mul`
//! and `div`, with the contract's number semantics (those of Python 3).
//!
//! - Two integers: `add`, `sub` and `mul` are exact in i64; a result outside
//!   i64 is `overflow`.
//! - Otherwise both are taken as doubles and the result is a double; a
//!   result that is not finite is `overflow`.
//! - `div` always gives a double, correctly rounded even for integers above
//!   2^53 (as Python's `int / int`); a zero divisor is `division_by_zero`.
//! - Anything but two numbers is `invalid_arguments` (booleans are not
//!   numbers here).
//! - Without the `float` feature (an integers-only device build) a double
//!   argument is `invalid_arguments` too, and no double arithmetic is
//!   linked; `div` of two integers still gives its correctly rounded double.

use crate::dispatch::Function;
use crate::error::{CallError, ErrorCode};
use crate::signature::{Signature, Type};
use crate::value::Value;

/// `add(a, b)`.
pub const ADD: Function = Function::with_signature(
    "add",
    add,
    &Signature {
        params: &[Type::Number, Type::Number],
        optional: 0,
        result: Type::Number,
        doc: "a + b",
    },
);
/// `sub(a, b)`.
pub const SUB: Function = Function::with_signature(
    "sub",
    sub,
    &Signature {
        params: &[Type::Number, Type::Number],
        optional: 0,
        result: Type::Number,
        doc: "a - b",
    },
);
/// `mul(a, b)`.
pub const MUL: Function = Function::with_signature(
    "mul",
    mul,
    &Signature {
        params: &[Type::Number, Type::Number],
        optional: 0,
        result: Type::Number,
        doc: "a * b",
    },
);
/// `div(a, b)`.
pub const DIV: Function = Function::with_signature(
    "div",
    div,
    &Signature {
        params: &[Type::Number, Type::Number],
        optional: 0,
        result: Type::Double,
        doc: "a / b, always a double",
    },
);

/// The four calculator functions as a table.
///
/// ```
/// use at_core::{calculator::CALCULATOR, Functions, Reply, Value};
/// let ok = CALCULATOR.call("div", &[Value::Int(10), Value::Int(4)], |r| r == Reply::Success(Value::Float(2.5)));
/// assert!(ok);
/// ```
pub static CALCULATOR: [Function; 4] = [ADD, SUB, MUL, DIV];

const WANT_TWO_NUMBERS: CallError =
    CallError::with_message(ErrorCode::InvalidArguments, "expected two numbers");
const OVERFLOW_INT: CallError =
    CallError::with_message(ErrorCode::Overflow, "integer result outside 64-bit range");
#[cfg(feature = "float")]
const OVERFLOW_FLOAT: CallError =
    CallError::with_message(ErrorCode::Overflow, "result is not a finite number");
const DIVISION_BY_ZERO: CallError =
    CallError::with_message(ErrorCode::DivisionByZero, "division by zero");

#[cfg(not(feature = "float"))]
const WANT_INTEGERS: CallError = CallError::with_message(
    ErrorCode::InvalidArguments,
    "this server takes integers only",
);

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    #[cfg(feature = "float")]
    Float(f64),
}

#[cfg(feature = "float")]
impl Num {
    fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(x) => x,
        }
    }
}

fn two_numbers(args: &[Value<'_>]) -> Result<(Num, Num), CallError> {
    let num = |v: &Value<'_>| match *v {
        Value::Int(i) => Ok(Num::Int(i)),
        #[cfg(feature = "float")]
        Value::Float(x) => Ok(Num::Float(x)),
        #[cfg(not(feature = "float"))]
        Value::Float(_) => Err(WANT_INTEGERS),
        _ => Err(WANT_TWO_NUMBERS),
    };
    match args {
        [a, b] => Ok((num(a)?, num(b)?)),
        _ => Err(WANT_TWO_NUMBERS),
    }
}

#[cfg(feature = "float")]
fn finite<'a>(x: f64) -> Result<Value<'a>, CallError> {
    if x.is_finite() {
        Ok(Value::Float(x))
    } else {
        Err(OVERFLOW_FLOAT)
    }
}

fn arithmetic<'a>(
    args: &[Value<'a>],
    int: fn(i64, i64) -> Option<i64>,
    #[cfg_attr(not(feature = "float"), allow(unused_variables))] float: fn(f64, f64) -> f64,
) -> Result<Value<'a>, CallError> {
    match two_numbers(args)? {
        (Num::Int(a), Num::Int(b)) => int(a, b).map(Value::Int).ok_or(OVERFLOW_INT),
        #[cfg(feature = "float")]
        (a, b) => finite(float(a.f64(), b.f64())),
    }
}

/// `a + b`.
pub fn add<'a>(args: &[Value<'a>]) -> Result<Value<'a>, CallError> {
    arithmetic(args, i64::checked_add, |a, b| a + b)
}

/// `a - b`.
pub fn sub<'a>(args: &[Value<'a>]) -> Result<Value<'a>, CallError> {
    arithmetic(args, i64::checked_sub, |a, b| a - b)
}

/// `a * b`.
pub fn mul<'a>(args: &[Value<'a>]) -> Result<Value<'a>, CallError> {
    arithmetic(args, i64::checked_mul, |a, b| a * b)
}

/// `a / b`, always a double.
pub fn div<'a>(args: &[Value<'a>]) -> Result<Value<'a>, CallError> {
    match two_numbers(args)? {
        (_, Num::Int(0)) => Err(DIVISION_BY_ZERO),
        // A float pattern compares with `==`, so -0.0 matches too.
        #[cfg(feature = "float")]
        (_, Num::Float(0.0)) => Err(DIVISION_BY_ZERO),
        (Num::Int(a), Num::Int(b)) => Ok(Value::Float(int_div(a, b))),
        #[cfg(feature = "float")]
        (a, b) => finite(a.f64() / b.f64()),
    }
}

/// `a / b` for integers, correctly rounded to the nearest double (ties to
/// even), as Python's true division of integers. `b` is not 0.
///
/// Long division by shifts and subtractions: 64 quotient bits and a sticky
/// bit for the remainder, so `as f64` rounds correctly. (A `u128` division
/// would be right too, but a 32-bit MCU has no routine for it: the
/// compiler writes one out in place, about 1 KiB of flash.)
fn int_div(a: i64, b: i64) -> f64 {
    let (n, d) = (a.unsigned_abs(), b.unsigned_abs());
    if n == 0 {
        return if (a < 0) != (b < 0) { -0.0 } else { 0.0 };
    }
    // Align the top bits: n / d = (r / d) * 2^e with d <= r < 2d.
    let (lz_n, lz_d) = (n.leading_zeros(), d.leading_zeros());
    let (mut r, d) = match lz_n <= lz_d {
        true => (u128::from(n), u128::from(d) << (lz_d - lz_n)),
        false => (u128::from(n) << (lz_n - lz_d), u128::from(d)),
    };
    let mut e = lz_d as i32 - lz_n as i32;
    if r < d {
        r <<= 1;
        e -= 1;
    }
    // 64 quotient bits, the first one 1: q is in [2^63, 2^64).
    let mut q: u64 = 0;
    for _ in 0..64 {
        q <<= 1;
        if r >= d {
            r -= d;
            q |= 1;
        }
        r <<= 1;
    }
    let sticky = u64::from(r != 0);
    // n / d = q * 2^(e - 63), e - 63 in -127..=0.
    let magnitude = scale_down((q | sticky) as f64, (63 - e) as u32);
    if (a < 0) != (b < 0) {
        -magnitude
    } else {
        magnitude
    }
}

/// `x * 2^-k` for a normal `x >= 2^63` and `k <= 127`, by lowering the
/// exponent field: the result (at least 2^-63) is normal, so this is exact
/// and equal to the multiplication, without linking double arithmetic.
fn scale_down(x: f64, k: u32) -> f64 {
    f64::from_bits(x.to_bits() - (u64::from(k) << 52))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        f: crate::Handler,
        a: Value<'static>,
        b: Value<'static>,
    ) -> Result<Value<'static>, CallError> {
        f(&[a, b])
    }

    #[test]
    fn integers_stay_integers() {
        assert_eq!(
            call(add, Value::Int(10), Value::Int(20)),
            Ok(Value::Int(30))
        );
        assert_eq!(
            call(sub, Value::Int(10), Value::Int(20)),
            Ok(Value::Int(-10))
        );
        assert_eq!(
            call(mul, Value::Int(-3), Value::Int(7)),
            Ok(Value::Int(-21))
        );
    }

    #[test]
    fn div_is_always_a_double() {
        assert_eq!(
            call(div, Value::Int(10), Value::Int(4)),
            Ok(Value::Float(2.5))
        );
        assert_eq!(
            call(div, Value::Int(10), Value::Int(2)),
            Ok(Value::Float(5.0))
        );
        assert_eq!(
            call(div, Value::Int(-7), Value::Int(2)),
            Ok(Value::Float(-3.5))
        );
        assert_eq!(
            call(div, Value::Int(0), Value::Int(-5)),
            Ok(Value::Float(-0.0))
        );
        assert_eq!(
            call(div, Value::Int(1), Value::Int(3)),
            Ok(Value::Float(1.0 / 3.0))
        );
    }

    /// The first `int_div`: one `u128` division (the reference).
    fn int_div_u128(a: i64, b: i64) -> f64 {
        let (n, d) = (a.unsigned_abs() as u128, b.unsigned_abs() as u128);
        if n == 0 {
            return if (a < 0) != (b < 0) { -0.0 } else { 0.0 };
        }
        let shift = n.leading_zeros() - 2;
        let scaled = n << shift;
        let q = scaled / d;
        let sticky = u128::from(scaled % d != 0);
        let magnitude = scale_down((q | sticky) as f64, shift);
        if (a < 0) != (b < 0) {
            -magnitude
        } else {
            magnitude
        }
    }

    proptest::proptest! {
        // A few cases under Miri, which is thousands of times slower.
        #![proptest_config(proptest::test_runner::Config {
            cases: if cfg!(miri) { 4 } else { 4096 },
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]
        #[test]
        fn int_div_matches_one_u128_division(a: i64, b: i64, shift in 0u32..64) {
            // Small and large magnitudes alike; b is not 0.
            let (a, b) = (a >> shift, if b == 0 { 1 } else { b });
            proptest::prop_assert_eq!(int_div(a, b).to_bits(), int_div_u128(a, b).to_bits());
            proptest::prop_assert_eq!(int_div(b, a | 1).to_bits(), int_div_u128(b, a | 1).to_bits());
        }
    }

    #[test]
    fn int_div_at_the_edges() {
        for &(a, b) in &[
            (1, 1),
            (i64::MIN, 1),
            (i64::MIN, -1),
            (i64::MIN, i64::MIN),
            (1, i64::MIN),
            (i64::MAX, i64::MAX),
            (i64::MAX, i64::MIN),
            (1, i64::MAX),
            (-1, 7),
            (3, 1 << 62),
        ] {
            assert_eq!(
                int_div(a, b).to_bits(),
                int_div_u128(a, b).to_bits(),
                "{a} / {b}"
            );
        }
    }

    #[test]
    fn int_div_is_correctly_rounded_beyond_2_pow_53() {
        // Python: (2**53 + 1) / 1 == 9007199254740992.0 and
        // 9007199254740993 / 3 == 3002399751580331.0
        assert_eq!(int_div(9_007_199_254_740_993, 1), 9_007_199_254_740_992.0);
        assert_eq!(int_div(9_007_199_254_740_993, 3), 3_002_399_751_580_331.0);
        // Python: 9223372036854775807 / 3 == 3.0744573456182584e+18
        assert_eq!(int_div(i64::MAX, 3), 3.0744573456182584e18);
        // Python: (-2**63) / -1 == 9.223372036854776e+18
        assert_eq!(int_div(i64::MIN, -1), 9.223372036854776e18);
        // Python: 1 / 9223372036854775807 == 1.0842021724855044e-19
        assert_eq!(int_div(1, i64::MAX), 1.0842021724855044e-19);
        // Python: 9007199254740995 / 2 == 4503599627370498.0 (a tie to even)
        assert_eq!(int_div(9_007_199_254_740_995, 2), 4_503_599_627_370_498.0);
    }

    #[test]
    #[cfg(feature = "float")]
    fn overflow_and_division_by_zero() {
        let e = |r: Result<Value<'static>, CallError>| r.map_err(|e| e.code);
        assert_eq!(
            e(call(add, Value::Int(i64::MAX), Value::Int(1))),
            Err(ErrorCode::Overflow)
        );
        assert_eq!(
            e(call(sub, Value::Int(i64::MIN), Value::Int(1))),
            Err(ErrorCode::Overflow)
        );
        assert_eq!(
            e(call(mul, Value::Int(i64::MAX), Value::Int(2))),
            Err(ErrorCode::Overflow)
        );
        assert_eq!(
            e(call(mul, Value::Float(1e300), Value::Float(1e300))),
            Err(ErrorCode::Overflow)
        );
        assert_eq!(
            e(call(div, Value::Int(1), Value::Int(0))),
            Err(ErrorCode::DivisionByZero)
        );
        assert_eq!(
            e(call(div, Value::Float(1.0), Value::Float(-0.0))),
            Err(ErrorCode::DivisionByZero)
        );
        assert_eq!(
            e(call(div, Value::Int(0), Value::Float(0.0))),
            Err(ErrorCode::DivisionByZero)
        );
        assert_eq!(
            call(div, Value::Float(1e-300), Value::Float(1e300)),
            Ok(Value::Float(0.0))
        );
    }

    #[test]
    #[cfg(not(feature = "float"))]
    fn integers_only() {
        let code = |r: Result<Value<'static>, CallError>| r.err().map(|e| e.code);
        assert_eq!(
            code(add(&[Value::Int(1), Value::Float(0.5)])),
            Some(ErrorCode::InvalidArguments)
        );
        assert_eq!(
            code(div(&[Value::Int(1), Value::Int(0)])),
            Some(ErrorCode::DivisionByZero)
        );
        assert_eq!(div(&[Value::Int(10), Value::Int(4)]), Ok(Value::Float(2.5)));
    }

    #[test]
    #[cfg(feature = "float")]
    fn mixed_numbers_become_doubles() {
        assert_eq!(
            call(add, Value::Int(1), Value::Float(0.5)),
            Ok(Value::Float(1.5))
        );
        assert_eq!(
            call(mul, Value::Float(2.0), Value::Int(3)),
            Ok(Value::Float(6.0))
        );
    }

    #[test]
    fn invalid_arguments() {
        let code = |r: Result<Value<'static>, CallError>| r.err().map(|e| e.code);
        assert_eq!(
            code(add(&[Value::Int(1)])),
            Some(ErrorCode::InvalidArguments)
        );
        assert_eq!(
            code(add(&[Value::Int(1), Value::Int(2), Value::Int(3)])),
            Some(ErrorCode::InvalidArguments)
        );
        assert_eq!(
            code(add(&[Value::Int(1), Value::Bool(true)])),
            Some(ErrorCode::InvalidArguments)
        );
        assert_eq!(
            code(div(&[Value::str("1"), Value::Int(2)])),
            Some(ErrorCode::InvalidArguments)
        );
        assert_eq!(
            code(sub(&[Value::Null, Value::Int(2)])),
            Some(ErrorCode::InvalidArguments)
        );
    }
}
