//! The section 9 primitives: session keys from HKDF-SHA-256, the hello
//! proof and frame tags from HMAC-SHA-256 (RustCrypto's `hkdf`, `hmac`,
//! `sha2`), tags checked in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{KEY_LEN, NONCE_LEN, SID_LEN, TAG_LEN};

type HmacSha256 = Hmac<Sha256>;

/// The two keys of a session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// `K_req`: clients tag requests, servers check them.
    pub request: [u8; 32],
    /// `K_rep`: servers tag replies, clients check them.
    pub reply: [u8; 32],
}

impl core::fmt::Debug for SessionKeys {
    /// Never shows the keys.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// `K_req` and `K_rep` for a session of `key` (kid `kid`) with nonces
/// `nc` (client) and `ns` (server):
/// `PRK = HKDF-Extract(Nc || Ns, key)`, `K = HKDF-Expand(PRK, label || kid, 32)`.
pub fn derive(
    key: &[u8; KEY_LEN],
    kid: &str,
    nc: &[u8; NONCE_LEN],
    ns: &[u8; NONCE_LEN],
) -> SessionKeys {
    let mut salt = [0u8; 2 * NONCE_LEN];
    salt[..NONCE_LEN].copy_from_slice(nc);
    salt[NONCE_LEN..].copy_from_slice(ns);
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&salt), key);
    let expand = |label: &[u8]| {
        let mut out = [0u8; 32];
        // 32 bytes is one block: never too long for HKDF-SHA-256.
        let _ = hkdf.expand_multi_info(&[label, kid.as_bytes()], &mut out);
        out
    };
    SessionKeys {
        request: expand(b"AT1 request"),
        reply: expand(b"AT1 reply"),
    }
}

fn mac(key: &[u8; 32]) -> HmacSha256 {
    // HMAC takes a key of any length.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_mac(),
    }
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    // `new_from_slice` fails only for fixed-length-key MACs; HMAC is not one.
    <HmacSha256 as Mac>::new(&Default::default())
}

/// `P`: the first 16 bytes of HMAC-SHA-256(K_rep, "AT1 hello" || SID).
pub fn proof(reply_key: &[u8; 32], sid: &[u8; SID_LEN]) -> [u8; TAG_LEN] {
    let mut m = mac(reply_key);
    m.update(b"AT1 hello");
    m.update(sid);
    truncate(m)
}

/// Whether `p` is the proof for `sid` (constant time).
pub fn proof_is_valid(reply_key: &[u8; 32], sid: &[u8; SID_LEN], p: &[u8; TAG_LEN]) -> bool {
    let mut m = mac(reply_key);
    m.update(b"AT1 hello");
    m.update(sid);
    m.verify_truncated_left(p).is_ok()
}

/// The tag of a frame: the first 16 bytes of HMAC-SHA-256(K, H || body ||
/// SID), `H` being the header's first 12 bytes as sent.
pub fn tag(key: &[u8; 32], head: &[u8; 12], body: &[u8], sid: &[u8; SID_LEN]) -> [u8; TAG_LEN] {
    let mut m = mac(key);
    m.update(head);
    m.update(body);
    m.update(sid);
    truncate(m)
}

/// Whether `t` is the tag of that frame (constant time).
pub fn tag_is_valid(
    key: &[u8; 32],
    head: &[u8; 12],
    body: &[u8],
    sid: &[u8; SID_LEN],
    t: &[u8; TAG_LEN],
) -> bool {
    let mut m = mac(key);
    m.update(head);
    m.update(body);
    m.update(sid);
    m.verify_truncated_left(t).is_ok()
}

fn truncate(m: HmacSha256) -> [u8; TAG_LEN] {
    let full = m.finalize().into_bytes();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full[..TAG_LEN]);
    out
}
