/*
 * at_auth.h - the client side of authentication in the AT protocol
 * (contract section 9): pre-shared keys, the rpc.hello handshake, and
 * authenticated calls over TCP and UDP.
 *
 *     at_key_t key;                    at_key_parse("demo:0001...1f", ...)
 *     uint8_t nc[16];                  at_random_bytes(nc, 16)
 *     at_session_t s;
 *     at_hello_tcp(host, port, seq, &key, nc, buf, cap, &opts, &s, &res);
 *     at_session_call_tcp(host, port, &s, body, len, buf, cap, &opts, &res);
 *
 * A session's frames carry the AUTH flag and, after the body, the 8-byte
 * session id and a 16-byte tag (HMAC-SHA-256 under K_req for requests, K_rep
 * for replies, over header bytes 0..11 || body || SID). Tags and proofs are
 * compared in constant time. Nothing here prints, logs or formats a key;
 * error messages never contain key material.
 *
 * Like at_protocol.h: C99 + POSIX, no allocation, no global state.
 */
#ifndef AT_AUTH_H
#define AT_AUTH_H

#include "at_crypto.h"
#include "at_protocol.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** SID and tag after the body of an authenticated frame: 24 bytes. */
#define AT_AUTH_TRAILER (AT_AUTH_SID_LEN + AT_AUTH_TAG_LEN)
/** Longest key id. */
#define AT_KID_MAX 32u
/** A reply buffer that holds any authenticated reply whose body proper is
 *  up to AT_MAX_BODY bytes. */
#define AT_AUTH_MAX_FRAME (AT_MAX_FRAME + AT_AUTH_TRAILER)
/** Largest request body of an authenticated call: the frame's length
 *  (body, SID and tag) stays within AT_MAX_BODY. */
#define AT_AUTH_MAX_BODY (AT_MAX_BODY - AT_AUTH_TRAILER)
/** A client starts a new session after this long idle (5 minutes). */
#define AT_SESSION_IDLE_MS (5L * 60L * 1000L)

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */
/* ------------------------------------------------------------------------ */

/** A client's pre-shared key. Wipe it with at_key_wipe() when done. */
typedef struct {
    char kid[AT_KID_MAX + 1];       /**< key id, NUL-terminated */
    size_t kid_len;                 /**< 1 to 32 */
    uint8_t key[AT_AUTH_KEY_LEN];   /**< the 32 key bytes */
} at_key_t;

/** 1 if the `len` bytes at `kid` are a key id: 1 to 32 ASCII letters,
 *  digits, '.', '_' or '-'; else 0. */
int at_kid_valid(const char *kid, size_t len);

/** Parses `KID:HEX` (surrounding whitespace ignored; HEX is 64 hex digits,
 *  either case) into `key`. On failure returns AT_E_ARG and writes to
 *  `err` (capacity `err_cap`) what is wrong, never quoting the text (it
 *  may be a key typed in the wrong place); `key` is then wiped. */
at_status_t at_key_parse(const char *text, at_key_t *key, char *err,
                         size_t err_cap);

/** Reads the first key of the key file `path`: lines `KID HEX` (fields
 *  separated by spaces or tabs), blank lines and lines starting with '#'
 *  skipped; every line is checked. A file that group or others may access
 *  (st_mode & 077) is refused. On failure returns AT_E_ARG (a bad file) or
 *  AT_E_IO (cannot read it) with `err` saying why, naming the file and the
 *  line but never the key; `key` is then wiped. */
at_status_t at_key_load_file(const char *path, at_key_t *key, char *err,
                             size_t err_cap);

/** Overwrites `key` with zeros (in a way the compiler keeps). */
void at_key_wipe(at_key_t *key);

/** Fills `out` with `len` bytes from the system's CSPRNG (/dev/urandom).
 *  Returns AT_OK or AT_E_IO. */
at_status_t at_random_bytes(void *out, size_t len);

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */
/* ------------------------------------------------------------------------ */

/** A client session. The fields are private but for `seq` and `open`. */
typedef struct {
    uint8_t sid[AT_AUTH_SID_LEN];
    uint8_t k_req[AT_AUTH_KEY_LEN];
    uint8_t k_rep[AT_AUTH_KEY_LEN];
    uint32_t seq;       /**< the last seq used in the session (0: none) */
    int open;           /**< 1 after a good hello, 0 once dropped */
    long long last_ms;  /**< CLOCK_MONOTONIC ms of the last use */
} at_session_t;

/** The rpc.hello request body,
 *      {"func": "rpc.hello", "args": ["<kid>", "<Nc: 32 lowercase hex>"]}
 *  NUL-terminated in `out` (capacity `cap`); *out_len (if not NULL) its
 *  length. AT_E_ARG for a bad key id, AT_E_NOSPACE if `cap` is too small. */
at_status_t at_hello_body(const at_key_t *key,
                          const uint8_t nc[AT_AUTH_NONCE_LEN],
                          char *out, size_t cap, size_t *out_len);

/** Takes in the reply frame to a hello sent with `key` and `nc` (a frame
 *  with a good CRC). Returns
 *   AT_OK        a good reply: `session`, `nonce` and `proof` are
 *                lowercase hex of 16, 32 and 32 digits and the proof
 *                verifies (constant time); `*s` holds the new session
 *                (seq 0: its first call uses seq 1);
 *   AT_E_REMOTE  a well-formed error reply (flags ERROR, "status": "error",
 *                a string "code"), e.g. `unauthorized`;
 *   AT_E_BAD_PROOF  a well-formed reply whose proof does not verify
 *                (another key, or a reply to another hello);
 *   AT_E_AUTH    anything else (AUTH set, body not a reply, flags and body
 *                disagree, bad values), with a static reason in *why (if
 *                `why` is not NULL; also set for AT_E_BAD_PROOF).
 *  `*s` is written only on AT_OK. */
at_status_t at_hello_accept(const at_key_t *key,
                            const uint8_t nc[AT_AUTH_NONCE_LEN],
                            const at_frame_t *reply, at_session_t *s,
                            const char **why);

/** 1 if `s` may carry another call: open, its seq below 0xFFFFFFFF, and
 *  used less than AT_SESSION_IDLE_MS ago; else 0 (run a new hello). */
int at_session_usable(const at_session_t *s);

/** Drops the session: wipes its keys; `open` becomes 0. */
void at_session_close(at_session_t *s);

/** Encodes an authenticated request: flags REQUEST|AUTH, `seq`, length
 *  body_len + 24, then body || SID || tag (tag under K_req over the 12
 *  header bytes || body || SID; the CRC covers all three). `*out_len` (if
 *  not NULL) gets 16 + body_len + 24. AT_E_ARG: `s` not open, or body_len
 *  over AT_AUTH_MAX_BODY; AT_E_NOSPACE: `cap` too small. */
at_status_t at_session_encode(const at_session_t *s, uint32_t seq,
                              const void *body, size_t body_len,
                              uint8_t *out, size_t cap, size_t *out_len);

/** Verifies a reply frame (good CRC) to an authenticated request: AUTH set,
 *  length at least 24, SID that of `s`, tag under K_rep over the header's
 *  first 12 bytes (magic, flags, seq, length as received) || body || SID
 *  (constant time). On AT_OK `*inner` is the frame with its body proper:
 *  same flags and seq, `length` without the 24 bytes. Else AT_E_AUTH with a
 *  static reason in *why (if `why` is not NULL). */
at_status_t at_session_verify(const at_session_t *s, const at_frame_t *reply,
                              at_frame_t *inner, const char **why);

/** Checks the `len` bytes at `data` as a whole reply frame to the
 *  authenticated request `seq`: magic, 16 + length == len, one type bit,
 *  CRC, a reply (not a request or a NOTIFY), the seq, then
 *  at_session_verify(). Returns AT_OK (with `*inner`), or with a static
 *  reason in *why: AT_E_ARG (not one whole frame), AT_E_BAD_MAGIC,
 *  AT_E_BAD_FLAGS, AT_E_CHECKSUM, AT_E_NOT_REPLY, AT_E_SEQ, or AT_E_AUTH.
 *  It says what one frame is; the calls below drop (and count in
 *  res->ignored) a frame found AT_E_NOT_REPLY for being a NOTIFY, or
 *  AT_E_SEQ, and go on waiting (contract 10.3, 10.5). */
at_status_t at_session_verify_frame(const at_session_t *s,
                                    const uint8_t *data, size_t len,
                                    uint32_t seq, at_frame_t *inner,
                                    const char **why);

/** Encodes a sealed frame of any kind (contract 10.6: requests,
 *  notifications, replies, events): `flags` as given (AUTH must be set),
 *  `seq`, length body_len + 24, then body || sid || tag, the tag under
 *  `key` over the 12 header bytes || body || sid; the CRC covers all three.
 *  The key follows the direction: K_req for what a session's client sends,
 *  K_rep for what its server sends. AT_E_ARG: AUTH not in `flags`, or
 *  body_len over AT_AUTH_MAX_BODY; AT_E_NOSPACE: `cap` too small. */
at_status_t at_seal_frame(uint16_t flags, uint32_t seq, const void *body,
                          size_t body_len, const uint8_t key[AT_AUTH_KEY_LEN],
                          const uint8_t sid[AT_AUTH_SID_LEN], uint8_t *out,
                          size_t cap, size_t *out_len);

/** Verifies a sealed frame `f` (any kind, good CRC) under `key` and `sid`:
 *  AUTH set, length at least 24, the SID and the tag over the header's
 *  first 12 bytes as received || body || SID (constant time). On AT_OK
 *  `*inner` is the frame with its body proper. Else AT_E_AUTH with a static
 *  reason in *why (if not NULL). A frame sealed in the other direction (a
 *  reflected one) fails here: its tag is under the other key. */
at_status_t at_unseal_frame(const at_frame_t *f,
                            const uint8_t key[AT_AUTH_KEY_LEN],
                            const uint8_t sid[AT_AUTH_SID_LEN],
                            at_frame_t *inner, const char **why);

/* ------------------------------------------------------------------------ */
/* Handshake and calls                                                      */
/* ------------------------------------------------------------------------ */

/** rpc.hello over TCP: sends the plain hello with `seq` (one not used
 *  before in plain calls) and the client nonce `nc` (16 bytes from a
 *  CSPRNG: at_random_bytes()), and on a good reply opens `*s`. Returns
 *  AT_OK, AT_E_REMOTE (the server answered with an error; res->reply is
 *  that frame: parse it with at_parse_reply()), AT_E_AUTH (a bad reply or
 *  proof; res->detail says why), or a transport status as at_call_tcp().
 *  `buf` (capacity `cap`) receives the reply. */
at_status_t at_hello_tcp(const char *host, const char *port, uint32_t seq,
                         const at_key_t *key,
                         const uint8_t nc[AT_AUTH_NONCE_LEN],
                         uint8_t *buf, size_t cap,
                         const at_call_opts_t *opts, at_session_t *s,
                         at_call_result_t *res);

/** rpc.hello over UDP: as at_hello_tcp(), but a bad reply or proof counts
 *  as not received (the hello is retransmitted; in the end AT_E_TIMEOUT,
 *  with the last reason in res->detail). */
at_status_t at_hello_udp(const char *host, const char *port, uint32_t seq,
                         const at_key_t *key,
                         const uint8_t nc[AT_AUTH_NONCE_LEN],
                         uint8_t *buf, size_t cap,
                         const at_call_opts_t *opts, at_session_t *s,
                         at_call_result_t *res);

/** An authenticated call over TCP with the next seq of `s` (s->seq + 1),
 *  the request body `body`. `buf` should hold AT_AUTH_MAX_FRAME bytes.
 *  Returns
 *   AT_OK                 res->reply is the verified reply, its `body` and
 *                         `length` the body proper (without SID and tag),
 *                         its flags as received (AUTH included);
 *   AT_E_UNAUTHORIZED     a plain `unauthorized`: the call failed (it is
 *                         never sent again in a new session), `s` is
 *                         closed; res->reply is that plain frame;
 *   AT_E_UNAUTHENTICATED  a plain busy, checksum_mismatch, frame_too_large
 *                         or bad_frame (a transport failure);
 *   AT_E_AUTH             a reply without AUTH or with a bad SID or tag;
 *   AT_E_ARG              `s` not usable (at_session_usable()) or the body
 *                         over AT_AUTH_MAX_BODY;
 *   or a transport status as at_call_tcp(). */
at_status_t at_session_call_tcp(const char *host, const char *port,
                                at_session_t *s, const void *body,
                                size_t body_len, uint8_t *buf, size_t cap,
                                const at_call_opts_t *opts,
                                at_call_result_t *res);

/** As at_session_call_tcp(), over UDP: the same bytes are retransmitted
 *  until a reply verifies; a reply without AUTH (other than the plain
 *  errors above) or with a bad SID or tag counts as not received. */
at_status_t at_session_call_udp(const char *host, const char *port,
                                at_session_t *s, const void *body,
                                size_t body_len, uint8_t *buf, size_t cap,
                                const at_call_opts_t *opts,
                                at_call_result_t *res);

/** A sealed notification in session `s` (contract 10.2, 10.6): a NOTIFY
 *  frame with AUTH (flags 0x0018), seq s->seq + 1 (one counter for the
 *  session's calls and notifications), tagged under K_req, sent over TCP
 *  (udp 0: at_notify_tcp_frame()) or UDP (udp 1: at_notify_udp_frame()).
 *  No reply is awaited; the server runs it only if it verifies, and never
 *  answers. AT_E_ARG: `s` not usable or the body over AT_AUTH_MAX_BODY. */
at_status_t at_session_notify(int udp, const char *host, const char *port,
                              at_session_t *s, const void *body,
                              size_t body_len, const at_call_opts_t *opts,
                              at_call_result_t *res);

#ifdef __cplusplus
}
#endif

#endif /* AT_AUTH_H */
