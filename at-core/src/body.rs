//! Request and reply bodies: reading them from bytes without allocating, and
//! writing them into a caller's buffer.
//!
//! Bodies are written in one canonical form, the contract's own:
//! `{"func": "add", "args": [10, 20]}`,
//! `{"status": "success", "result": 30}` and
//! `{"status": "error", "code": "...", "message": "..."}`.
//! Readers accept any valid JSON with the members in any order and unknown
//! members (of any type, nested too) ignored.

pub use crate::error::BodyError;
use crate::error::ErrorCode;
use crate::json::{EncodeError, Reader, Scalar, Writer};
use crate::value::{JsonStr, Value};

/// The most arguments a request may carry.
pub const MAX_ARGS: usize = 16;

impl core::error::Error for BodyError {}

pub(crate) fn utf8(body: &[u8]) -> Result<&str, BodyError> {
    core::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)
}

pub(crate) fn object_start(reader: &mut Reader<'_>) -> Result<(), BodyError> {
    match reader.peek() {
        Some(b'{') => Ok(()),
        // Say "not JSON" rather than "not an object" for garbage.
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            reader.skip()?;
            reader.expect_end()?;
            Err(BodyError::NotAnObject)
        }
        _ => Err(reader.expect(b'{').err().unwrap_or(BodyError::NotAnObject)),
    }
}

pub(crate) fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    member: &'static str,
) -> Result<(), BodyError> {
    if slot.is_some() {
        return Err(BodyError::Duplicate { member });
    }
    *slot = Some(value);
    Ok(())
}

/// A call: a function name and positional arguments, borrowed from the body.
#[derive(Clone, Debug, PartialEq)]
pub struct Request<'a> {
    /// The function's name.
    pub func: JsonStr<'a>,
    /// The arguments, in order.
    pub args: heapless::Vec<Value<'a>, MAX_ARGS>,
    /// `deadline_ms` (contract section 10.4): how many milliseconds the
    /// caller still waits, counted from when the whole frame arrived.
    pub deadline_ms: Option<u32>,
}

impl<'a> Request<'a> {
    /// Reads a request body: one JSON object with a string `func` and an
    /// optional array `args` (missing means `[]`); other members are
    /// validated and ignored.
    ///
    /// ```
    /// use at_core::{Request, Value};
    /// let r = Request::parse(br#"{"args": [10, 2.5, "x", true, null], "func": "f", "v": {"n": [1]}}"#).unwrap();
    /// assert!(r.func == "f");
    /// assert_eq!(r.args[0], Value::Int(10));
    /// assert_eq!(r.args[1], Value::Float(2.5));
    /// assert_eq!(Request::parse(br#"{"func": "f", "args": [9223372036854775808]}"#),
    ///            Err(at_core::BodyError::IntegerOverflow));
    /// // A deadline (contract section 10.4): an integer 0 to 4294967295.
    /// let r = Request::parse(br#"{"func": "add", "args": [10, 20], "deadline_ms": 250}"#).unwrap();
    /// assert_eq!(r.deadline_ms, Some(250));
    /// assert!(Request::parse(br#"{"func": "f", "deadline_ms": -1}"#).is_err());
    /// assert!(Request::parse(br#"{"func": "f", "deadline_ms": 2.5}"#).is_err());
    /// ```
    pub fn parse(body: &'a [u8]) -> Result<Request<'a>, BodyError> {
        let mut reader = Reader::new(utf8(body)?);
        object_start(&mut reader)?;
        let mut func = None;
        // Filled in place: a Request is over 500 bytes, so every move counts.
        let mut args: heapless::Vec<Value<'a>, MAX_ARGS> = heapless::Vec::new();
        let mut seen_args = false;
        let mut too_many = false;
        let mut overflow = false;
        let mut no_float = false;
        let mut deadline_ms = None;
        reader.object(|reader, key| {
            if key == "func" {
                if reader.peek() != Some(b'"') {
                    reader.skip()?;
                    return Err(BodyError::WrongType { member: "func" });
                }
                set_once(&mut func, reader.string()?, "func")
            } else if key == "args" {
                if reader.peek() != Some(b'[') {
                    reader.skip()?;
                    return Err(BodyError::WrongType { member: "args" });
                }
                if seen_args {
                    return Err(BodyError::Duplicate { member: "args" });
                }
                seen_args = true;
                reader.array(|reader| {
                    match reader.value()? {
                        Scalar::Value(v) => too_many |= args.push(v).is_err(),
                        Scalar::BigInt => overflow = true,
                        Scalar::NoFloat => no_float = true,
                    }
                    Ok(())
                })
            } else if key == "deadline_ms" {
                // An integer 0 to 4294967295; anything else is bad_request.
                let wrong = BodyError::WrongType {
                    member: "deadline_ms",
                };
                match reader.value()? {
                    Scalar::Value(Value::Int(d)) => set_once(
                        &mut deadline_ms,
                        u32::try_from(d).map_err(|_| wrong)?,
                        "deadline_ms",
                    ),
                    _ => Err(wrong),
                }
            } else {
                reader.skip()
            }
        })?;
        reader.expect_end()?;
        let func = func.ok_or(BodyError::Missing { member: "func" })?;
        if too_many {
            return Err(BodyError::TooManyArgs);
        }
        if overflow {
            return Err(BodyError::IntegerOverflow);
        }
        if no_float {
            return Err(BodyError::FloatUnsupported);
        }
        Ok(Request {
            func,
            args,
            deadline_ms,
        })
    }

    /// Writes a request body for `func(args...)` into `out` and returns its
    /// length.
    ///
    /// ```
    /// use at_core::{Request, Value};
    /// let mut out = [0u8; 64];
    /// let n = Request::write("add", &[Value::Int(10), Value::Int(20)], &mut out).unwrap();
    /// assert_eq!(&out[..n], br#"{"func": "add", "args": [10, 20]}"#);
    /// ```
    pub fn write(func: &str, args: &[Value<'_>], out: &mut [u8]) -> Result<usize, EncodeError> {
        Request::write_with_deadline(func, args, None, out)
    }

    /// [`write`](Self::write) with `"deadline_ms": D` last when `deadline_ms`
    /// is given (contract section 10.4, vector D1).
    ///
    /// ```
    /// use at_core::{Request, Value};
    /// let mut out = [0u8; 64];
    /// let n = Request::write_with_deadline("add", &[Value::Int(10), Value::Int(20)], Some(0), &mut out).unwrap();
    /// assert_eq!(&out[..n], br#"{"func": "add", "args": [10, 20], "deadline_ms": 0}"#);
    /// ```
    pub fn write_with_deadline(
        func: &str,
        args: &[Value<'_>],
        deadline_ms: Option<u32>,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let mut w = Writer::new(out);
        w.raw("{\"func\": ")?;
        w.string(&JsonStr::new(func))?;
        w.raw(", \"args\": [")?;
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                w.raw(", ")?;
            }
            w.value(arg)?;
        }
        w.raw("]")?;
        if let Some(d) = deadline_ms {
            w.raw(", \"deadline_ms\": ")?;
            w.int(i64::from(d))?;
        }
        w.raw("}")?;
        Ok(w.len())
    }
}

/// The members of an error reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorBody<'a> {
    /// The error code as sent (see [`ErrorBody::error_code`]).
    pub code: JsonStr<'a>,
    /// The message for people (empty when the sender left it out).
    pub message: JsonStr<'a>,
}

impl<'a> ErrorBody<'a> {
    /// An error body with one of the contract's codes.
    pub const fn new(code: ErrorCode, message: &'a str) -> Self {
        ErrorBody {
            code: JsonStr::new(code.as_str()),
            message: JsonStr::new(message),
        }
    }

    /// The code, if it is one the contract defines.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| self.code == c.as_str())
    }
}

impl From<crate::CallError> for ErrorBody<'_> {
    fn from(e: crate::CallError) -> Self {
        ErrorBody::new(e.code, e.message)
    }
}

/// A reply body: success with a result, or an error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reply<'a> {
    /// `{"status": "success", "result": ...}`, sent with the RESPONSE flag.
    Success(Value<'a>),
    /// `{"status": "error", "code": ..., "message": ...}`, sent with the ERROR flag.
    Error(ErrorBody<'a>),
}

impl<'a> From<Result<Value<'a>, crate::CallError>> for Reply<'a> {
    fn from(result: Result<Value<'a>, crate::CallError>) -> Self {
        match result {
            Ok(v) => Reply::Success(v),
            Err(e) => Reply::Error(e.into()),
        }
    }
}

impl<'a> Reply<'a> {
    /// The frame kind that carries this reply.
    pub fn kind(&self) -> crate::Kind {
        match self {
            Reply::Success(_) => crate::Kind::Response,
            Reply::Error(_) => crate::Kind::Error,
        }
    }

    /// Reads a reply body. `status` decides which other members are
    /// required: `result` for success, `code` for an error (`message` may be
    /// missing). Unknown members are ignored.
    ///
    /// ```
    /// use at_core::{Reply, Value, ErrorCode};
    /// assert_eq!(Reply::parse(br#"{"status": "success", "result": 2.5}"#), Ok(Reply::Success(Value::Float(2.5))));
    /// let Ok(Reply::Error(e)) = Reply::parse(br#"{"status": "error", "code": "overflow", "message": "m"}"#) else { panic!() };
    /// assert_eq!(e.error_code(), Some(ErrorCode::Overflow));
    /// ```
    pub fn parse(body: &'a [u8]) -> Result<Reply<'a>, BodyError> {
        let mut reader = Reader::new(utf8(body)?);
        object_start(&mut reader)?;
        let mut status = None;
        let mut result = None;
        let mut code = None;
        let mut message = None;
        let mut overflow = false;
        let mut no_float = false;
        reader.object(|reader, key| {
            let string_member = |reader: &mut Reader<'a>, slot: &mut Option<JsonStr<'a>>, name| {
                if reader.peek() != Some(b'"') {
                    reader.skip()?;
                    return Err(BodyError::WrongType { member: name });
                }
                set_once(slot, reader.string()?, name)
            };
            if key == "status" {
                string_member(reader, &mut status, "status")
            } else if key == "code" {
                string_member(reader, &mut code, "code")
            } else if key == "message" {
                string_member(reader, &mut message, "message")
            } else if key == "result" {
                match reader.value()? {
                    Scalar::Value(v) => set_once(&mut result, v, "result"),
                    Scalar::BigInt => {
                        overflow = true;
                        set_once(&mut result, Value::Null, "result")
                    }
                    Scalar::NoFloat => {
                        no_float = true;
                        set_once(&mut result, Value::Null, "result")
                    }
                }
            } else {
                reader.skip()
            }
        })?;
        reader.expect_end()?;
        let status = status.ok_or(BodyError::Missing { member: "status" })?;
        if status == "success" {
            if overflow {
                return Err(BodyError::IntegerOverflow);
            }
            if no_float {
                return Err(BodyError::FloatUnsupported);
            }
            result
                .map(Reply::Success)
                .ok_or(BodyError::Missing { member: "result" })
        } else if status == "error" {
            Ok(Reply::Error(ErrorBody {
                code: code.ok_or(BodyError::Missing { member: "code" })?,
                message: message.unwrap_or(JsonStr::new("")),
            }))
        } else {
            Err(BodyError::WrongType { member: "status" })
        }
    }

    /// Writes the reply body into `out` and returns its length. A double
    /// result that is not finite is [`EncodeError::NotFinite`].
    ///
    /// ```
    /// use at_core::{Reply, Value, ErrorBody, ErrorCode};
    /// let mut out = [0u8; 96];
    /// let n = Reply::Success(Value::Float(5.0)).write(&mut out).unwrap();
    /// assert_eq!(&out[..n], br#"{"status": "success", "result": 5.0}"#);
    /// let e = ErrorBody::new(ErrorCode::DivisionByZero, "division by zero");
    /// let n = Reply::Error(e).write(&mut out).unwrap();
    /// assert_eq!(&out[..n], br#"{"status": "error", "code": "division_by_zero", "message": "division by zero"}"#);
    /// ```
    pub fn write(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(out);
        match self {
            Reply::Success(value) => {
                w.raw("{\"status\": \"success\", \"result\": ")?;
                w.value(value)?;
            }
            Reply::Error(e) => {
                w.raw("{\"status\": \"error\", \"code\": ")?;
                w.string(&e.code)?;
                w.raw(", \"message\": ")?;
                w.string(&e.message)?;
            }
        }
        w.raw("}")?;
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_a_fraction_or_exponent() {
        let body = br#"{"func": "add", "args": [1.5, 2e3], "v": [0.25]}"#;
        let ignored = br#"{"func": "add", "args": [1, 2], "v": {"x": -0.5e-3}}"#;
        let parsed = Request::parse(body);
        #[cfg(feature = "float")]
        assert_eq!(
            parsed.map(|r| r.args),
            Ok(heapless::Vec::from_slice(&[Value::Float(1.5), Value::Float(2000.0)]).unwrap())
        );
        #[cfg(not(feature = "float"))]
        {
            assert_eq!(parsed, Err(BodyError::FloatUnsupported));
            assert_eq!(
                BodyError::FloatUnsupported.code(),
                ErrorCode::InvalidArguments
            );
            assert_eq!(
                Reply::parse(br#"{"status": "success", "result": 2.5}"#),
                Err(BodyError::FloatUnsupported)
            );
            assert_eq!(Value::parse("1.0"), Err(BodyError::FloatUnsupported));
        }
        // Ignored members may hold doubles either way.
        assert_eq!(
            Request::parse(ignored).map(|r| r.args.len()),
            Ok(2),
            "doubles in ignored members are only validated"
        );
        // Syntax is checked either way.
        assert!(matches!(
            Request::parse(br#"{"func": "add", "args": [1., 2]}"#),
            Err(BodyError::Syntax { .. })
        ));
        // Doubles are written either way (div's results).
        let mut out = [0u8; 64];
        let n = Reply::Success(Value::Float(2.5)).write(&mut out).unwrap();
        assert_eq!(&out[..n], br#"{"status": "success", "result": 2.5}"#);
    }
}
