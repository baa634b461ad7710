//! Function signatures, as `rpc.functions` describes them (contract
//! section 7): the type of each parameter and of the result, and one line
//! for people.

/// The type of a parameter or a result, with the contract's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// A JSON number without fraction or exponent (in i64 range).
    Integer,
    /// A JSON number with a fraction or exponent (IEEE 754 binary64).
    Double,
    /// Either of the two.
    Number,
    /// A JSON string.
    String,
    /// `true` or `false`.
    Bool,
    /// `null`.
    Null,
    /// A JSON array.
    Array,
    /// A JSON object.
    Object,
    /// Any JSON value.
    Any,
}

impl Type {
    /// The contract's name: `"integer"`, `"double"`, `"number"`, `"string"`,
    /// `"bool"`, `"null"`, `"array"`, `"object"` or `"any"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Type::Integer => "integer",
            Type::Double => "double",
            Type::Number => "number",
            Type::String => "string",
            Type::Bool => "bool",
            Type::Null => "null",
            Type::Array => "array",
            Type::Object => "object",
            Type::Any => "any",
        }
    }

    /// The type of that name.
    pub fn from_name(name: &str) -> Option<Type> {
        [
            Type::Integer,
            Type::Double,
            Type::Number,
            Type::String,
            Type::Bool,
            Type::Null,
            Type::Array,
            Type::Object,
            Type::Any,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

impl core::fmt::Display for Type {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a function takes and gives, for `rpc.functions`.
///
/// A function table's signatures are `'static` (built at compile time by
/// [`function!`](crate::function)); a host registry lends out signatures it
/// built at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature<'a> {
    /// The type of each positional parameter.
    pub params: &'a [Type],
    /// Bit `i` set: parameter `i` is optional: it accepts `null`, and a
    /// trailing run of optional parameters may be left out. `rpc.functions`
    /// writes its type with a `?` (`"number?"`).
    pub optional: u16,
    /// The type of the result.
    pub result: Type,
    /// One line for people (may be empty).
    pub doc: &'a str,
}

impl Signature<'_> {
    /// Whether parameter `index` is optional (see [`Signature::optional`]).
    pub const fn is_optional(&self, index: usize) -> bool {
        index < 16 && self.optional & (1 << index) != 0
    }
}

/// The [`Signature::optional`] mask of these per-parameter flags (only the
/// first 16 are kept).
pub const fn optional_mask(flags: &[bool]) -> u16 {
    let mut mask = 0u16;
    let mut i = 0;
    while i < flags.len() && i < 16 {
        if flags[i] {
            mask |= 1 << i;
        }
        i += 1;
    }
    mask
}
