//! Pre-shared keys on a host (contract section 9): [`AuthKey`] (a key id
//! and 32 secret bytes, never shown by `Debug`), read from `KID:HEX` text
//! or a key file, or made from the OS's CSPRNG. Shared by the client and
//! server sides and the command line.

use std::path::Path;

use at_core::auth::{KEY_LEN, KeyError, KeyTable};

/// A pre-shared key: its id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    kid: String,
    secret: [u8; KEY_LEN],
}

impl std::fmt::Debug for AuthKey {
    /// Shows the key id only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Why a key file cannot be used (its contents are never shown).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read it.
    #[error("{path}: readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not `KID HEX`.
    #[error("{path}, line {line}: {error}")]
    Line {
        /// The file.
        path: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        error: KeyError,
    },
    /// Two keys with one id.
    #[error("{path}: key id {kid:?} appears twice")]
    Duplicate {
        /// The file.
        path: String,
        /// The id.
        kid: String,
    },
    /// No key in it.
    #[error("{path}: no key")]
    Empty {
        /// The file.
        path: String,
    },
}

impl AuthKey {
    /// A key from its id and secret bytes.
    pub fn new(kid: &str, secret: [u8; KEY_LEN]) -> Result<AuthKey, KeyError> {
        if !at_core::auth::is_valid_kid(kid) {
            return Err(KeyError::Kid);
        }
        Ok(AuthKey {
            kid: kid.to_owned(),
            secret,
        })
    }

    /// Reads `KID:HEX` (64 hexadecimal digits).
    ///
    /// ```
    /// let key = at_host::AuthKey::parse("demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap();
    /// assert_eq!(key.kid(), "demo");
    /// assert!(at_host::AuthKey::parse("demo:0001").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<AuthKey, KeyError> {
        let key = at_core::auth::Key::parse(text.trim())?;
        AuthKey::new(key.kid, key.secret)
    }

    /// A new key from the OS's CSPRNG.
    pub fn generate(kid: &str) -> Result<AuthKey, KeyError> {
        let mut secret = [0u8; KEY_LEN];
        fill_random(&mut secret);
        AuthKey::new(kid, secret)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as at-core takes it.
    pub fn as_core(&self) -> at_core::auth::Key<'_> {
        at_core::auth::Key {
            kid: &self.kid,
            secret: self.secret,
        }
    }

    /// `KID:HEX`, for writing a key file or a configuration (the only way
    /// the secret is ever shown).
    pub fn to_text(&self) -> String {
        let mut hex = [0u8; 2 * KEY_LEN];
        format!(
            "{}:{}",
            self.kid,
            at_core::auth::hex::encode(&self.secret, &mut hex)
        )
    }

    /// Reads a key file: lines `KID HEX`, `#` comments and blank lines. A
    /// file that group or others may read is refused.
    pub fn read_file(path: &Path) -> Result<Vec<AuthKey>, KeyFileError> {
        let name = path.display().to_string();
        let io = |source| KeyFileError::Io {
            path: name.clone(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Permissions { path: name, mode });
            }
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut keys: Vec<AuthKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |error| KeyFileError::Line {
                path: name.clone(),
                line: i + 1,
                error,
            };
            let mut words = line.split_whitespace();
            let (Some(kid), Some(hex), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad(KeyError::Form));
            };
            let key = at_core::auth::Key::from_parts(kid, hex).map_err(bad)?;
            if keys.iter().any(|k| k.kid == kid) {
                return Err(KeyFileError::Duplicate {
                    path: name,
                    kid: kid.to_owned(),
                });
            }
            keys.push(AuthKey::new(key.kid, key.secret).map_err(bad)?);
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty { path: name });
        }
        Ok(keys)
    }
}

/// A server's keys.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeySet(pub(crate) Vec<AuthKey>);

impl KeyTable for KeySet {
    fn secret(&self, kid: &str) -> Option<[u8; KEY_LEN]> {
        self.0.iter().find(|k| k.kid == kid).map(|k| k.secret)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Fills `buf` from the OS's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // The OS refused randomness: nothing secure can be made; stop.
        log::error!("the operating system's random source failed");
        std::process::abort();
    }
}
