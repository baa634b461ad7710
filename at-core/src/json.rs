//! A small strict JSON reader and writer over borrowed bytes (RFC 8259).
//!
//! The reader validates everything it passes over (strings, escapes and
//! surrogate pairs, numbers, nesting up to [`MAX_DEPTH`]) and hands back
//! borrowed values; it never allocates and never recurses deeper than
//! [`MAX_DEPTH`]. The writer formats into a caller's slice: integers by a
//! plain digit loop, doubles with ryu (shortest round trip), nothing through
//! `core::fmt`, so a firmware links only what it uses.
//!
//! serde-json-core was the first choice for both sides: it cannot read a
//! mixed-type argument list without `deserialize_any`, and writing numbers
//! through it cost flash for no gain over calling ryu (which it uses)
//! directly; docs/EMBEDDED.md has the measurements.

use core::fmt;

use crate::error::BodyError;
use crate::frame::BufferTooSmall;
use crate::value::{JsonStr, RawJson, Value};

/// The deepest nesting of arrays and objects the reader accepts.
pub const MAX_DEPTH: usize = 32;

/// A number as its text says: an integer (possibly outside i64) or a double.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Number {
    Int(i64),
    /// An integer literal outside i64.
    BigInt,
    #[cfg_attr(not(feature = "float"), allow(dead_code))]
    Float(f64),
    /// A number with a fraction or exponent, read by a build without the
    /// `float` feature: validated, but its value is not computed.
    #[cfg_attr(feature = "float", allow(dead_code))]
    NoFloat,
}

/// A cursor over a UTF-8 body.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Reader { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn syntax(&self) -> BodyError {
        BodyError::Syntax { offset: self.pos }
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next non-whitespace byte, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes().get(self.pos).copied()
    }

    /// Consumes `byte` (after whitespace) or fails.
    pub(crate) fn expect(&mut self, byte: u8) -> Result<(), BodyError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// Succeeds at the end of input (trailing whitespace allowed).
    pub(crate) fn expect_end(&mut self) -> Result<(), BodyError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.syntax()),
        }
    }

    /// Visits each member of an object: `member(reader, key)` must consume
    /// the member's value.
    pub(crate) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, JsonStr<'a>) -> Result<(), BodyError>,
    ) -> Result<(), BodyError> {
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            member(self, key)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax()),
            }
        }
    }

    /// Visits each element of an array: `element(reader)` must consume it.
    pub(crate) fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), BodyError>,
    ) -> Result<(), BodyError> {
        self.expect(b'[')?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            element(self)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax()),
            }
        }
    }

    /// Reads a string (after whitespace), validating its escapes.
    pub(crate) fn string(&mut self) -> Result<JsonStr<'a>, BodyError> {
        self.expect(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            // Skip plain bytes in one pass; stop at a quote, an escape or a
            // control character (which JSON forbids raw in strings).
            let rest = self.bytes().get(self.pos..).unwrap_or_default();
            let Some(i) = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            else {
                self.pos += rest.len();
                return Err(self.syntax());
            };
            self.pos += i;
            match rest[i] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    self.escape()?;
                }
                _ => return Err(self.syntax()),
            }
        }
        let text = self.text.get(start..self.pos).ok_or(self.syntax())?;
        self.pos += 1;
        Ok(JsonStr::from_validated_json(text, escaped))
    }

    /// Validates one escape; `pos` is just after the backslash.
    fn escape(&mut self) -> Result<(), BodyError> {
        match self.bytes().get(self.pos) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by a low one.
                        if self.bytes().get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.syntax());
                        }
                        self.pos += 2;
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => Err(self.syntax()),
                        }
                    }
                    0xDC00..=0xDFFF => Err(self.syntax()),
                    _ => Ok(()),
                }
            }
            _ => Err(self.syntax()),
        }
    }

    fn hex4(&mut self) -> Result<u32, BodyError> {
        let digits = self
            .bytes()
            .get(self.pos..self.pos + 4)
            .ok_or(self.syntax())?;
        let mut unit = 0;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or(self.syntax())?;
            unit = unit * 16 + v;
        }
        self.pos += 4;
        Ok(unit)
    }

    /// Reads a number (after whitespace); its text decides integer or double.
    pub(crate) fn number(&mut self) -> Result<Number, BodyError> {
        self.skip_ws();
        let start = self.pos;
        let bytes = self.bytes();
        let mut end = start;
        if bytes.get(end) == Some(&b'-') {
            end += 1;
        }
        let int_start = end;
        match bytes.get(end) {
            Some(b'0') => end += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = bytes.get(end) {
                    end += 1;
                }
            }
            _ => return Err(BodyError::Syntax { offset: end }),
        }
        let int_end = end;
        let mut is_float = false;
        if bytes.get(end) == Some(&b'.') {
            end += 1;
            end = digits(bytes, end)?;
            is_float = true;
        }
        if let Some(b'e' | b'E') = bytes.get(end) {
            end += 1;
            if let Some(b'+' | b'-') = bytes.get(end) {
                end += 1;
            }
            end = digits(bytes, end)?;
            is_float = true;
        }
        self.pos = end;
        if is_float {
            #[cfg(feature = "float")]
            {
                let text = self.text.get(start..end).ok_or(self.syntax())?;
                #[cfg(not(all(feature = "float", feature = "small-float")))]
                let value: f64 = text
                    .parse()
                    .map_err(|_| BodyError::Syntax { offset: start })?;
                #[cfg(all(feature = "float", feature = "small-float"))]
                let value = crate::float::parse(text);
                return Ok(Number::Float(value));
            }
            #[cfg(not(feature = "float"))]
            return Ok(Number::NoFloat);
        }
        let negative = int_start > start;
        let mut value: i64 = 0;
        for &d in &bytes[int_start..int_end] {
            let digit = i64::from(d - b'0');
            let next = value.checked_mul(10).and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            });
            match next {
                Some(v) => value = v,
                None => return Ok(Number::BigInt),
            }
        }
        Ok(Number::Int(value))
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), BodyError> {
        self.skip_ws();
        if self.bytes().get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// Reads any value. Numbers come back as [`Number`] so the caller
    /// decides what an out-of-range integer means.
    pub(crate) fn value(&mut self) -> Result<Scalar<'a>, BodyError> {
        Ok(match self.peek() {
            Some(b'"') => Scalar::Value(Value::Str(self.string()?)),
            Some(b'{' | b'[') => Scalar::Value(Value::Raw(self.raw()?)),
            Some(b't') => {
                self.literal(b"true")?;
                Scalar::Value(Value::Bool(true))
            }
            Some(b'f') => {
                self.literal(b"false")?;
                Scalar::Value(Value::Bool(false))
            }
            Some(b'n') => {
                self.literal(b"null")?;
                Scalar::Value(Value::Null)
            }
            _ => match self.number()? {
                Number::Int(i) => Scalar::Value(Value::Int(i)),
                Number::Float(x) => Scalar::Value(Value::Float(x)),
                Number::BigInt => Scalar::BigInt,
                Number::NoFloat => Scalar::NoFloat,
            },
        })
    }

    /// Passes over any value, validating it.
    pub(crate) fn skip(&mut self) -> Result<(), BodyError> {
        self.value().map(|_| ())
    }

    /// Reads an array or object and returns its text.
    fn raw(&mut self) -> Result<RawJson<'a>, BodyError> {
        self.skip_ws();
        let start = self.pos;
        self.skip_container()?;
        let text = self.text.get(start..self.pos).ok_or(self.syntax())?;
        Ok(RawJson::from_validated(text))
    }

    /// Validates one array or object without recursion: a bit stack records
    /// whether each open level is an object (1) or an array (0).
    fn skip_container(&mut self) -> Result<(), BodyError> {
        let mut stack: u64 = 0;
        let mut depth = 0usize;
        loop {
            // Expecting a value.
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if depth == MAX_DEPTH {
                        return Err(BodyError::TooDeep);
                    }
                    self.pos += 1;
                    depth += 1;
                    stack = (stack << 1) | u64::from(open == b'{');
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        depth -= 1;
                        stack >>= 1;
                    } else {
                        if open == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                // Not a container: `value` reads it without recursing.
                _ => {
                    self.value()?;
                }
            }
            // After a value: ',' then the next value, or closing brackets.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let in_object = stack & 1 == 1;
                let close = if in_object { b'}' } else { b']' };
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.member_key()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.pos += 1;
                        depth -= 1;
                        stack >>= 1;
                    }
                    _ => return Err(self.syntax()),
                }
            }
        }
    }

    fn member_key(&mut self) -> Result<(), BodyError> {
        self.string()?;
        self.expect(b':')
    }
}

/// A value read by [`Reader::value`]: a [`Value`], an integer literal
/// outside i64, or (without the `float` feature) a number with a fraction or
/// exponent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scalar<'a> {
    Value(Value<'a>),
    BigInt,
    #[cfg_attr(feature = "float", allow(dead_code))]
    NoFloat,
}

fn digits(bytes: &[u8], mut end: usize) -> Result<usize, BodyError> {
    let start = end;
    while let Some(b'0'..=b'9') = bytes.get(end) {
        end += 1;
    }
    if end == start {
        Err(BodyError::Syntax { offset: end })
    } else {
        Ok(end)
    }
}

/// The elements of a validated JSON array, from [`RawJson::elements`]: each
/// a [`Value`], or the reason it has none in this build (an integer beyond
/// i64, a double without the `float` feature).
#[derive(Clone, Debug)]
pub struct Elements<'a> {
    reader: Reader<'a>,
    done: bool,
}

impl<'a> Elements<'a> {
    /// Elements of `text`, if it is an array.
    pub(crate) fn new(text: &'a str) -> Option<Self> {
        let mut reader = Reader::new(text);
        if reader.peek() != Some(b'[') {
            return None;
        }
        reader.pos += 1;
        let done = reader.peek() == Some(b']');
        Some(Elements { reader, done })
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Value<'a>, BodyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.reader.value() {
            Ok(Scalar::Value(v)) => Ok(v),
            Ok(Scalar::BigInt) => Err(BodyError::IntegerOverflow),
            Ok(Scalar::NoFloat) => Err(BodyError::FloatUnsupported),
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        match self.reader.peek() {
            Some(b',') => self.reader.pos += 1,
            _ => self.done = true,
        }
        Some(item)
    }
}

/// Checks that `text` is exactly one array or object.
pub(crate) fn parse_raw(text: &str) -> Result<RawJson<'_>, BodyError> {
    let mut reader = Reader::new(text);
    reader.skip_ws();
    let start = reader.pos;
    match reader.peek() {
        Some(b'{' | b'[') => {
            reader.raw()?;
        }
        _ => {
            reader.value()?;
        }
    }
    let raw = text.get(start..reader.pos).ok_or(reader.syntax())?;
    reader.expect_end()?;
    Ok(RawJson::from_validated(raw))
}

/// Reads exactly one JSON value (whitespace around it allowed).
pub(crate) fn parse_value(text: &str) -> Result<Value<'_>, BodyError> {
    let mut reader = Reader::new(text);
    let value = match reader.value()? {
        Scalar::Value(v) => v,
        Scalar::BigInt => {
            reader.expect_end()?;
            return Err(BodyError::IntegerOverflow);
        }
        Scalar::NoFloat => {
            reader.expect_end()?;
            return Err(BodyError::FloatUnsupported);
        }
    };
    reader.expect_end()?;
    Ok(value)
}

/// Calls `out` with the JSON escape of `c`, or `c` itself.
pub(crate) fn write_escaped_char<E>(
    c: char,
    mut out: impl FnMut(&str) -> Result<(), E>,
) -> Result<(), E> {
    match c {
        '"' => out("\\\""),
        '\\' => out("\\\\"),
        '\n' => out("\\n"),
        '\r' => out("\\r"),
        '\t' => out("\\t"),
        '\u{8}' => out("\\b"),
        '\u{c}' => out("\\f"),
        c if (c as u32) < 0x20 => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = c as usize;
            let esc = [b'\\', b'u', b'0', b'0', HEX[n >> 4], HEX[n & 15]];
            out(core::str::from_utf8(&esc).unwrap_or("\\u0000"))
        }
        c => out(c.encode_utf8(&mut [0; 4])),
    }
}

/// Why a body could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// A double is infinite or NaN: JSON cannot carry it.
    NotFinite,
    /// A double an integers-only build (at-core without `float`) cannot
    /// write: one of magnitude below 2^-64 or from 2^64 up. `div` of two
    /// integers never makes one.
    Unsupported,
}

impl From<BufferTooSmall> for EncodeError {
    fn from(_: BufferTooSmall) -> Self {
        EncodeError::BufferTooSmall
    }
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EncodeError::BufferTooSmall => "output buffer too small",
            EncodeError::NotFinite => "a double that is not finite has no JSON form",
            EncodeError::Unsupported => "this integers-only build cannot write that double",
        })
    }
}

impl core::error::Error for EncodeError {}

/// The power of ten below `power` (itself a power of ten), or 0 below 1,
/// by a table rather than a 64-bit division.
fn next_lower_power(power: u64) -> u64 {
    const POWERS: [u64; 20] = {
        let mut table = [0u64; 20];
        let mut i = 1;
        let mut p = 1u64;
        while i < 20 {
            table[i] = p;
            p = p.wrapping_mul(10);
            i += 1;
        }
        table
    };
    // POWERS = [0, 1, 10, ..., 10^18]: the entry before `power`.
    let mut i = POWERS.len() - 1;
    while i > 0 && POWERS[i] >= power {
        i -= 1;
    }
    POWERS[i]
}

/// Formats JSON into a caller's slice.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Forgets what was written after the first `len` bytes.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub(crate) fn raw(&mut self, text: &str) -> Result<(), BufferTooSmall> {
        let end = self.len + text.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(BufferTooSmall)?
            .copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// An integer in decimal.
    pub(crate) fn int(&mut self, i: i64) -> Result<(), BufferTooSmall> {
        // "-9223372036854775808" is 20 bytes.
        let mut text = [0u8; 20];
        let len = if cfg!(target_pointer_width = "64") {
            int_by_division(i, &mut text)
        } else {
            int_by_subtraction(i, &mut text)
        };
        self.bytes(&text[..len])
    }

    /// A double in shortest round-trip form, always with `.` or an exponent.
    pub(crate) fn float(&mut self, x: f64) -> Result<(), EncodeError> {
        if !x.is_finite() {
            return Err(EncodeError::NotFinite);
        }
        #[cfg(feature = "float")]
        {
            let mut buffer = ryu::Buffer::new();
            self.raw(buffer.format_finite(x))?;
        }
        #[cfg(not(feature = "float"))]
        {
            let mut text = [0u8; 32];
            let n = crate::float::write_shortest(x, &mut text).ok_or(EncodeError::Unsupported)?;
            self.bytes(&text[..n])?;
        }
        Ok(())
    }

    pub(crate) fn string(&mut self, s: &JsonStr<'_>) -> Result<(), BufferTooSmall> {
        self.raw("\"")?;
        match (s.escaped_source(), s.as_plain()) {
            (Some(src), _) => self.raw(src)?,
            // Nothing to escape: copy it whole.
            (None, Some(text)) if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') => {
                self.raw(text)?
            }
            _ => {
                for c in s.chars() {
                    write_escaped_char(c, |part| self.raw(part))?;
                }
            }
        }
        self.raw("\"")
    }

    pub(crate) fn value(&mut self, value: &Value<'_>) -> Result<(), EncodeError> {
        match *value {
            Value::Null => self.raw("null")?,
            Value::Bool(true) => self.raw("true")?,
            Value::Bool(false) => self.raw("false")?,
            Value::Int(i) => self.int(i)?,
            Value::Float(x) => self.float(x)?,
            Value::Str(ref s) => self.string(s)?,
            Value::Raw(raw) => self.raw(raw.as_str())?,
        }
        Ok(())
    }
}

/// Writes `i` in decimal into `text` and returns the length, with 64-bit
/// division by ten: fast where the CPU divides 64-bit numbers.
fn int_by_division(i: i64, text: &mut [u8; 20]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = i.unsigned_abs();
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let sign = usize::from(i < 0);
    text[0] = b'-';
    let len = sign + digits.len() - start;
    text[sign..len].copy_from_slice(&digits[start..]);
    len
}

/// Writes `i` in decimal into `text` and returns the length, by
/// subtracting powers of ten: a 32-bit MCU then links no 64-bit division
/// routine.
fn int_by_subtraction(i: i64, text: &mut [u8; 20]) -> usize {
    let mut len = 0;
    if i < 0 {
        text[0] = b'-';
        len = 1;
    }
    let mut n = i.unsigned_abs();
    let mut power = 10_000_000_000_000_000_000u64;
    while power > 0 {
        let mut digit = b'0';
        while n >= power {
            n -= power;
            digit += 1;
        }
        // Leading zeros are skipped; the last digit is always written.
        if digit != b'0' || len > usize::from(i < 0) || power == 1 {
            text[len] = digit;
            len += 1;
        }
        power = next_lower_power(power);
    }
    len
}

// Reading and writing the value types of `value`, which hold data only.

impl<'a> RawJson<'a> {
    /// Checks that `text` is exactly one JSON value and wraps it (without
    /// the whitespace around it).
    ///
    /// ```
    /// assert!(at_core::RawJson::parse("[1, {\"a\": null}]").is_ok());
    /// assert!(at_core::RawJson::parse("[1,]").is_err());
    /// assert_eq!(at_core::RawJson::parse(" 99999999999999999999 ").unwrap().as_str(), "99999999999999999999");
    /// assert!(at_core::RawJson::parse("7 8").is_err());
    /// ```
    pub fn parse(text: &'a str) -> Result<Self, BodyError> {
        parse_raw(text)
    }

    /// The elements of an array, in order, each as a [`Value`] (a nested
    /// array or object as [`Value::Raw`]); `None` if this is not an array.
    /// No allocation: each element borrows the text.
    ///
    /// ```
    /// use at_core::{RawJson, Value};
    /// let raw = RawJson::parse("[1, 2.5, \"x\", [3]]").unwrap();
    /// let items: Vec<_> = raw.elements().unwrap().collect();
    /// assert_eq!(items[0], Ok(Value::Int(1)));
    /// assert_eq!(items[1], Ok(Value::Float(2.5)));
    /// assert_eq!(items[3].unwrap().to_string(), "[3]");
    /// assert!(RawJson::parse("{}").unwrap().elements().is_none());
    /// ```
    pub fn elements(&self) -> Option<Elements<'a>> {
        Elements::new(self.as_str())
    }
}

impl<'a> Value<'a> {
    /// Reads exactly one JSON value from `text`; arrays and objects become
    /// [`Value::Raw`], an integer literal outside i64 is
    /// [`BodyError::IntegerOverflow`].
    ///
    /// ```
    /// use at_core::Value;
    /// assert_eq!(Value::parse("10"), Ok(Value::Int(10)));
    /// assert_eq!(Value::parse(" 10.0 "), Ok(Value::Float(10.0)));
    /// assert!(Value::parse("hello").is_err());
    /// ```
    pub fn parse(text: &'a str) -> Result<Self, BodyError> {
        parse_value(text)
    }
}

/// Writes the value as JSON: doubles in shortest round-trip form with a `.`
/// or an exponent, strings escaped. A double that is not finite has no JSON
/// form and is written as `null`; [`crate::write_reply`] turns it into the
/// error `overflow` before it gets here.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 40];
        match *self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => {
                let mut w = Writer::new(&mut buf);
                match w.float(x) {
                    Ok(()) => f.write_str(w.as_str()),
                    Err(_) => f.write_str("null"),
                }
            }
            Value::Str(s) => {
                f.write_str("\"")?;
                match s.escaped_source() {
                    Some(src) => f.write_str(src)?,
                    None => {
                        for c in s.chars() {
                            write_escaped_char(c, |part| f.write_str(part))?;
                        }
                    }
                }
                f.write_str("\"")
            }
            Value::Raw(raw) => f.write_str(raw.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(value: Value<'_>) -> heapless::String<64> {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.value(&value).unwrap();
        heapless::String::try_from(w.as_str()).unwrap()
    }

    #[test]
    fn integers_and_doubles_are_written_as_the_contract_says() {
        assert_eq!(written(Value::Int(0)), "0");
        assert_eq!(written(Value::Int(-7)), "-7");
        assert_eq!(written(Value::Int(i64::MAX)), "9223372036854775807");
        assert_eq!(written(Value::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(written(Value::Float(5.0)), "5.0");
        assert_eq!(written(Value::Float(2.5)), "2.5");
        assert_eq!(written(Value::Float(0.1)), "0.1");
        assert_eq!(written(Value::Float(-0.0)), "-0.0");
        // The integers-only writer covers [2^-64, 2^64), all that `div` of
        // two integers can give; ryu covers every double.
        if cfg!(feature = "float") {
            assert_eq!(written(Value::Float(1e300)), "1e300");
        }
        let mut small = [0u8; 3];
        assert!(Writer::new(&mut small).int(-1000).is_err());
    }

    #[test]
    fn both_integer_writers_agree() {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut samples = [
            0,
            1,
            -1,
            9,
            10,
            -10,
            99,
            100,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ]
        .to_vec();
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push((x as i64) >> (x % 64));
        }
        for i in samples {
            let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
            let (m, n) = (int_by_division(i, &mut a), int_by_subtraction(i, &mut b));
            assert_eq!(&a[..m], &b[..n], "{i}");
            let mut expected = [0u8; 24];
            let mut w = Writer::new(&mut expected);
            w.int(i).unwrap();
            assert_eq!(w.as_str().parse::<i64>().unwrap(), i);
        }
    }
}
