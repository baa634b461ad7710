//! The values that travel as arguments and results: [`Value`], with strings
//! as [`JsonStr`] and arrays or objects as [`RawJson`], all borrowed from the
//! frame body they were read from.

use core::fmt;

/// A JSON string, borrowed: either plain text, or the still-escaped text
/// between the quotes of a string read from a body (escapes are resolved
/// lazily, so reading never needs a second buffer).
///
/// ```
/// use at_core::JsonStr;
/// let s = JsonStr::new("caf\u{e9}");
/// assert!(s == "café");
/// assert_eq!(s.as_plain(), Some("café"));
/// ```
#[derive(Clone, Copy)]
pub struct JsonStr<'a> {
    text: &'a str,
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    /// A string holding exactly `text` (escaped when written).
    pub const fn new(text: &'a str) -> Self {
        JsonStr {
            text,
            escaped: false,
        }
    }

    /// A string from the text between the quotes of a JSON string that the
    /// reader has already validated.
    pub(crate) const fn from_validated_json(text: &'a str, escaped: bool) -> Self {
        JsonStr { text, escaped }
    }

    /// The text itself when it holds no escapes (no copy needed).
    #[inline]
    pub const fn as_plain(&self) -> Option<&'a str> {
        if self.escaped { None } else { Some(self.text) }
    }

    /// The JSON source between the quotes, when the string was read with
    /// escapes in it.
    pub(crate) const fn escaped_source(&self) -> Option<&'a str> {
        if self.escaped { Some(self.text) } else { None }
    }

    /// The string's characters, escapes resolved.
    pub fn chars(&self) -> Chars<'a> {
        Chars {
            rest: self.text.chars(),
            escaped: self.escaped,
        }
    }

    /// True when the string holds no characters.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Length in bytes of the unescaped UTF-8 text.
    pub fn len(&self) -> usize {
        if self.escaped {
            self.chars().map(char::len_utf8).sum()
        } else {
            self.text.len()
        }
    }

    /// Writes the unescaped text into `buf` and returns it as a `&str`, or
    /// `None` when it does not fit.
    ///
    /// ```
    /// let body = br#"{"func": "f", "args": ["a\"b\u00e9\ud83d\ude00"]}"#;
    /// let request = at_core::Request::parse(body).unwrap();
    /// let at_core::Value::Str(s) = request.args[0] else { panic!() };
    /// let mut buf = [0u8; 16];
    /// assert_eq!(s.unescape_into(&mut buf), Some("a\"bé😀"));
    /// ```
    pub fn unescape_into<'b>(&self, buf: &'b mut [u8]) -> Option<&'b str> {
        let mut len = 0;
        for c in self.chars() {
            let n = c.len_utf8();
            let dest = buf.get_mut(len..len + n)?;
            c.encode_utf8(dest);
            len += n;
        }
        core::str::from_utf8(&buf[..len]).ok()
    }
}

impl PartialEq for JsonStr<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self.as_plain(), other.as_plain()) {
            (Some(a), Some(b)) => a == b,
            _ => self.chars().eq(other.chars()),
        }
    }
}

impl PartialEq<str> for JsonStr<'_> {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        match self.as_plain() {
            Some(text) => text == other,
            None => self.chars().eq(other.chars()),
        }
    }
}

impl PartialEq<&str> for JsonStr<'_> {
    #[inline]
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_plain() {
            Some(text) => f.write_str(text),
            None => self.chars().try_for_each(|c| fmt::Write::write_char(f, c)),
        }
    }
}

impl fmt::Debug for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        self.chars()
            .try_for_each(|c| fmt::Display::fmt(&c.escape_debug(), f))?;
        f.write_str("\"")
    }
}

/// The characters of a [`JsonStr`], escapes resolved.
#[derive(Clone, Debug)]
pub struct Chars<'a> {
    rest: core::str::Chars<'a>,
    escaped: bool,
}

impl Iterator for Chars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let c = self.rest.next()?;
        if c != '\\' || !self.escaped {
            return Some(c);
        }
        // The reader validated every escape, so the fallbacks never run.
        Some(match self.rest.next()? {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let high = hex4(&mut self.rest);
                if (0xD800..0xDC00).contains(&high) {
                    self.rest.next(); // '\\'
                    self.rest.next(); // 'u'
                    let low = hex4(&mut self.rest);
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00));
                    char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
                } else {
                    char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER)
                }
            }
            other => other, // '"', '\\', '/'
        })
    }
}

fn hex4(chars: &mut core::str::Chars<'_>) -> u32 {
    (0..4).fold(0, |acc, _| {
        acc * 16 + chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0)
    })
}

/// A JSON value kept as its validated source text, written verbatim.
///
/// Arguments and results are usually scalars; an array or object in a
/// request reaches a function as raw JSON, to read with the JSON library of
/// its choice. A sender may also pass any value verbatim this way (an integer
/// literal beyond i64, say, to let the server answer `overflow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    pub(crate) const fn from_validated(text: &'a str) -> Self {
        RawJson(text)
    }

    /// The JSON text.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

/// One argument or result.
///
/// Integers and doubles are told apart by the number's text, as the contract
/// says: `10` is [`Value::Int`], `10.0` and `1e3` are [`Value::Float`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// JSON `null`.
    Null,
    /// JSON `true` or `false`.
    Bool(bool),
    /// A number written without fraction or exponent, in i64 range.
    Int(i64),
    /// Any other number (IEEE 754 binary64).
    Float(f64),
    /// A string.
    Str(JsonStr<'a>),
    /// An array or object, as raw JSON text.
    Raw(RawJson<'a>),
}

impl<'a> Value<'a> {
    /// A string value holding `text`.
    pub const fn str(text: &'a str) -> Self {
        Value::Str(JsonStr::new(text))
    }

    /// The number as an f64 (integers converted), or `None` if not a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The integer, or `None` if not an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The string, or `None` if not a string.
    pub fn as_str(&self) -> Option<JsonStr<'a>> {
        match *self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The name of the JSON type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "double",
            Value::Str(_) => "string",
            Value::Raw(_) => "array or object",
        }
    }
}
