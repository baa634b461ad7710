//! Hexadecimal as section 9 writes it: lowercase, fixed lengths.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex into `out` (twice as long).
pub fn encode<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    for (i, b) in bytes.iter().enumerate() {
        if let Some(pair) = out.get_mut(2 * i..2 * i + 2) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
    }
    let n = (2 * bytes.len()).min(out.len());
    core::str::from_utf8(&out[..n]).unwrap_or("")
}

/// `text` (exactly twice `out`'s length) decoded into `out`; uppercase
/// digits only when `any_case`. `None` for anything else.
pub fn decode(text: &[u8], out: &mut [u8], any_case: bool) -> Option<()> {
    if text.len() != 2 * out.len() {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if any_case => Some(c - b'A' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = (digit(text[2 * i])? << 4) | digit(text[2 * i + 1])?;
    }
    Some(())
}
