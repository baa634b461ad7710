//! Pre-shared keys: a key id (`kid`) and 32 secret bytes, and their text
//! form `KID:HEX` (64 hex digits), checked without echoing the secret.

use super::KEY_LEN;

/// A pre-shared key and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct Key<'a> {
    /// 1 to 32 ASCII letters, digits, `-`, `_` or `.`.
    pub kid: &'a str,
    /// The 32 secret bytes.
    pub secret: [u8; KEY_LEN],
}

impl core::fmt::Debug for Key<'_> {
    /// Shows the kid, never the secret.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What is wrong with a key's text (the secret itself is never shown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Not `KID:HEX` (or, in a key file, `KID HEX`).
    Form,
    /// The kid is not 1 to 32 of `A-Z a-z 0-9 - _ .`.
    Kid,
    /// The secret is not 64 hexadecimal digits (it has this many characters).
    Length(usize),
    /// The secret has a character that is not a hexadecimal digit.
    Hex,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyError::Form => f.write_str("a key is KID:HEX"),
            KeyError::Kid => f.write_str("a key id is 1 to 32 of A-Z a-z 0-9 - _ ."),
            KeyError::Length(n) => write!(f, "a key is 64 hexadecimal digits, not {n} characters"),
            KeyError::Hex => f.write_str("a key is hexadecimal digits only"),
        }
    }
}

impl core::error::Error for KeyError {}

/// Whether `kid` is a valid key id.
pub fn is_valid_kid(kid: &str) -> bool {
    (1..=32).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl<'a> Key<'a> {
    /// Reads `KID:HEX`.
    ///
    /// ```
    /// use at_core::auth::{Key, KeyError};
    /// let key = Key::parse("demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap();
    /// assert_eq!((key.kid, key.secret[31]), ("demo", 0x1f));
    /// assert_eq!(Key::parse("demo:00").unwrap_err(), KeyError::Length(2));
    /// ```
    pub fn parse(text: &'a str) -> Result<Key<'a>, KeyError> {
        let (kid, hex) = text.split_once(':').ok_or(KeyError::Form)?;
        Key::from_parts(kid, hex)
    }

    /// A key from its id and its hexadecimal secret (either case).
    pub fn from_parts(kid: &'a str, hex: &str) -> Result<Key<'a>, KeyError> {
        if !is_valid_kid(kid) {
            return Err(KeyError::Kid);
        }
        let hex = hex.trim();
        if hex.len() != 2 * KEY_LEN {
            return Err(KeyError::Length(hex.chars().count()));
        }
        let mut secret = [0u8; KEY_LEN];
        super::hex::decode(hex.as_bytes(), &mut secret, true).ok_or(KeyError::Hex)?;
        Ok(Key { kid, secret })
    }
}

/// The keys a server holds, by key id: a slice of [`Key`]s on a device, or
/// any table of the caller's (a host's, read from a file).
pub trait KeyTable {
    /// The secret of key `kid`.
    fn secret(&self, kid: &str) -> Option<[u8; KEY_LEN]>;
    /// Whether there is any key (else authentication is off).
    fn is_empty(&self) -> bool;
}

impl KeyTable for [Key<'_>] {
    fn secret(&self, kid: &str) -> Option<[u8; KEY_LEN]> {
        self.iter().find(|k| k.kid == kid).map(|k| k.secret)
    }

    fn is_empty(&self) -> bool {
        <[Key<'_>]>::is_empty(self)
    }
}

impl<const N: usize> KeyTable for [Key<'_>; N] {
    fn secret(&self, kid: &str) -> Option<[u8; KEY_LEN]> {
        self.as_slice().secret(kid)
    }

    fn is_empty(&self) -> bool {
        N == 0
    }
}

impl<T: KeyTable + ?Sized> KeyTable for &T {
    fn secret(&self, kid: &str) -> Option<[u8; KEY_LEN]> {
        (**self).secret(kid)
    }

    fn is_empty(&self) -> bool {
        (**self).is_empty()
    }
}
