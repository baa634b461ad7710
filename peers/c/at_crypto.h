/*
 * at_crypto.h - the cryptographic primitives of the C peer of the AT
 * protocol, for its section 9 (authentication): SHA-256 (FIPS 180-4),
 * HMAC-SHA-256 (RFC 2104), HKDF-SHA-256 (RFC 5869), a constant-time compare,
 * and the section-9 key derivation, hello proof and frame tag.
 *
 * Pure C99: no libc beyond <string.h>, no dynamic allocation, no global
 * state, no assumption about byte order or alignment. Every context lives
 * in the caller's memory; distinct contexts may be used in distinct threads.
 *
 * A pointer may be NULL wherever its length is 0.
 */
#ifndef AT_CRYPTO_H
#define AT_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Size of a SHA-256 digest, and of an HMAC-SHA-256 tag, in bytes. */
#define AT_SHA256_LEN 32u
/** Size of a SHA-256 input block, in bytes. */
#define AT_SHA256_BLOCK 64u
/** Longest output of one HKDF-SHA-256 expansion: 255 blocks. */
#define AT_HKDF_MAX_OUT (255u * AT_SHA256_LEN)

/** Section 9: sizes of a key, a nonce, a session id, a frame tag and a
 *  hello proof, and the part of the header a tag covers. */
#define AT_AUTH_KEY_LEN 32u
#define AT_AUTH_NONCE_LEN 16u
#define AT_AUTH_SID_LEN 8u
#define AT_AUTH_TAG_LEN 16u
#define AT_AUTH_PROOF_LEN 16u
#define AT_AUTH_HEADER_LEN 12u

/* ------------------------------------------------------------------------ */
/* SHA-256                                                                  */
/* ------------------------------------------------------------------------ */

/** An incremental SHA-256 computation. The fields are private. */
typedef struct {
    uint32_t h[8];                  /* chaining state */
    uint64_t bytes;                 /* message bytes so far */
    uint8_t buf[AT_SHA256_BLOCK];   /* partial block */
    size_t fill;                    /* bytes in buf, 0 to 63 */
} at_sha256_t;

/** Starts a new SHA-256 computation in `c`. */
void at_sha256_init(at_sha256_t *c);

/** Appends the `len` bytes at `data` to the message; any split of the
 *  message into updates gives the same digest. */
void at_sha256_update(at_sha256_t *c, const void *data, size_t len);

/** Writes the 32-byte digest of the message to `out`. `c` must be
 *  initialised again before further use. */
void at_sha256_final(at_sha256_t *c, uint8_t out[AT_SHA256_LEN]);

/** One-shot: the SHA-256 digest of the `len` bytes at `data`, into `out`. */
void at_sha256(const void *data, size_t len, uint8_t out[AT_SHA256_LEN]);

/* ------------------------------------------------------------------------ */
/* HMAC-SHA-256                                                             */
/* ------------------------------------------------------------------------ */

/** An incremental HMAC-SHA-256 computation. The fields are private; they
 *  depend on the key, so wipe the context (or let _final do it) when done. */
typedef struct {
    at_sha256_t inner;  /* H((K0 ^ ipad) || message ...) */
    at_sha256_t outer;  /* H((K0 ^ opad) ...), awaiting the inner digest */
} at_hmac_sha256_t;

/** Starts an HMAC-SHA-256 computation under the `key_len` bytes at `key`
 *  (any length: a key longer than 64 bytes is hashed first, RFC 2104). */
void at_hmac_sha256_init(at_hmac_sha256_t *c, const void *key,
                         size_t key_len);

/** Appends the `len` bytes at `data` to the authenticated message. */
void at_hmac_sha256_update(at_hmac_sha256_t *c, const void *data,
                           size_t len);

/** Writes the 32-byte tag to `out` and wipes `c`, which must be
 *  initialised again before further use. Truncate the tag by using only its
 *  first bytes. */
void at_hmac_sha256_final(at_hmac_sha256_t *c, uint8_t out[AT_SHA256_LEN]);

/** One-shot: HMAC-SHA-256 of the `len` bytes at `data` under `key`. */
void at_hmac_sha256(const void *key, size_t key_len, const void *data,
                    size_t len, uint8_t out[AT_SHA256_LEN]);

/* ------------------------------------------------------------------------ */
/* HKDF-SHA-256                                                             */
/* ------------------------------------------------------------------------ */

/** HKDF-Extract (RFC 5869, 2.2): PRK = HMAC-SHA-256(salt, IKM), into
 *  `prk`. An empty salt (salt_len 0) stands for 32 zero bytes, as the RFC
 *  says; both give the same PRK. */
void at_hkdf_sha256_extract(const void *salt, size_t salt_len,
                            const void *ikm, size_t ikm_len,
                            uint8_t prk[AT_SHA256_LEN]);

/** HKDF-Expand (RFC 5869, 2.3): the first `out_len` bytes of
 *  T(1) || T(2) || ..., T(i) = HMAC-SHA-256(PRK, T(i-1) || info || i),
 *  into `out`. `prk` should be at least 32 bytes (an extract output).
 *  Returns 0, or -1 (writing nothing) if out_len exceeds AT_HKDF_MAX_OUT.
 *  A shorter output is a prefix of a longer one with the same inputs. */
int at_hkdf_sha256_expand(const void *prk, size_t prk_len,
                          const void *info, size_t info_len,
                          uint8_t *out, size_t out_len);

/* ------------------------------------------------------------------------ */
/* Constant-time comparison                                                 */
/* ------------------------------------------------------------------------ */

/** 1 if the `len` bytes at `a` and `b` are equal, else 0, in a time that
 *  depends on `len` only, never on the contents (for tags and proofs). */
int at_ct_equal(const void *a, const void *b, size_t len);

/* ------------------------------------------------------------------------ */
/* AT section 9                                                             */
/* ------------------------------------------------------------------------ */

/** Derives a session's keys from the pre-shared key `key` (32 bytes), the
 *  key id `kid` (`kid_len` raw ASCII bytes, no terminator) and the client
 *  and server nonces `nc` and `ns` (16 bytes each):
 *      PRK   = HKDF-Extract(salt = Nc || Ns, IKM = key)
 *      K_req = HKDF-Expand(PRK, "AT1 request" || kid, 32)
 *      K_rep = HKDF-Expand(PRK, "AT1 reply" || kid, 32)
 *  The kid's syntax (1 to 32 of [A-Za-z0-9._-]) is the caller's to check;
 *  any bytes are accepted here. The PRK is wiped before returning. */
void at_derive_keys(const uint8_t key[AT_AUTH_KEY_LEN],
                    const void *kid, size_t kid_len,
                    const uint8_t nc[AT_AUTH_NONCE_LEN],
                    const uint8_t ns[AT_AUTH_NONCE_LEN],
                    uint8_t k_req[AT_AUTH_KEY_LEN],
                    uint8_t k_rep[AT_AUTH_KEY_LEN]);

/** The server's hello proof: the first 16 bytes of
 *  HMAC-SHA-256(K_rep, "AT1 hello" || SID), into `proof`. A client compares
 *  it with the one received using at_ct_equal(). */
void at_hello_proof(const uint8_t k_rep[AT_AUTH_KEY_LEN],
                    const uint8_t sid[AT_AUTH_SID_LEN],
                    uint8_t proof[AT_AUTH_PROOF_LEN]);

/** The tag of an authenticated frame: the first 16 bytes of
 *  HMAC-SHA-256(K, H || body || SID), into `tag`, where `header` is the
 *  first 12 bytes of the frame's header exactly as sent or received (magic,
 *  flags, seq, length), `body` the `body_len` bytes of body (without SID and
 *  tag) and `sid` the 8-byte session id. Nothing is copied: the three parts
 *  may lie anywhere, in the frame buffer itself. `k` is K_req for requests
 *  and K_rep for replies (the key follows the role). Verify a received tag
 *  with at_ct_equal(). */
void at_frame_tag(const uint8_t k[AT_AUTH_KEY_LEN],
                  const uint8_t header[AT_AUTH_HEADER_LEN],
                  const void *body, size_t body_len,
                  const uint8_t sid[AT_AUTH_SID_LEN],
                  uint8_t tag[AT_AUTH_TAG_LEN]);

#ifdef __cplusplus
}
#endif

#endif /* AT_CRYPTO_H */
