/*
 * at_protocol.h - the C peer of the AT remote-call protocol, version 1.
 *
 * The wire contract is ../../../shared/AT-PROTOCOL.md (this project restates
 * it in docs/PROTOCOL.md). In short: a frame is a 16-byte big-endian header
 * (magic 0x4154 "AT", flags, seq, length, CRC-32 of the body) followed by
 * `length` bytes of UTF-8 JSON body.
 *
 * This library needs only C99, libc and POSIX sockets. It never allocates
 * memory itself (getaddrinfo aside): every buffer is the caller's. Build with
 * -D_POSIX_C_SOURCE=200809L.
 *
 * No function keeps global state: distinct readers and calls may run in
 * distinct threads.
 */
#ifndef AT_PROTOCOL_H
#define AT_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Constants                                                                */
/* ------------------------------------------------------------------------ */

/** The first two bytes of every frame: ASCII 'A', 'T'. */
#define AT_MAGIC 0x4154u

/** Flag bit: a call from a client. */
#define AT_FLAG_REQUEST 0x0001u
/** Flag bit: a successful reply. */
#define AT_FLAG_RESPONSE 0x0002u
/** Flag bit: a failed reply (the body says why). */
#define AT_FLAG_ERROR 0x0004u
/** Flag bit: the frame is authenticated (contract section 9; at_auth.h).
 *  Not a type bit: an AUTH frame still carries exactly one type bit. */
#define AT_FLAG_AUTH 0x0008u
/** Flag bit (contract section 10): a one-way frame, a call that gets no
 *  reply (its body has "func") or an event (its body has "topic"). A type
 *  bit: NOTIFY with REQUEST, RESPONSE or ERROR is a bad frame. */
#define AT_FLAG_NOTIFY 0x0010u
/** The four message-type bits (REQUEST, RESPONSE, ERROR, NOTIFY; AUTH is
 *  not one); a frame carries exactly one of them. All other bits are
 *  reserved: senders set them to 0, receivers ignore them. */
#define AT_FLAG_TYPE_MASK 0x0017u

/** Default port for TCP and UDP alike (0x4154). */
#define AT_DEFAULT_PORT 16724

/** The default limit on a frame's body, in bytes. */
#define AT_MAX_BODY 65536u

/** Size of the frame header on the wire. */
#define AT_HEADER_LEN 16u

/** Largest frame with a body of at most AT_MAX_BODY bytes. */
#define AT_MAX_FRAME (AT_HEADER_LEN + AT_MAX_BODY)

/** Default total time bound of one call, in milliseconds. */
#define AT_DEFAULT_TIMEOUT_MS 5000

/* ------------------------------------------------------------------------ */
/* Header                                                                   */
/* ------------------------------------------------------------------------ */

/** C view of the header: fields are big-endian on the wire.
 *  at_header_pack()/at_header_unpack() convert between a host-order
 *  at_header_t and the 16 wire bytes. */
typedef struct __attribute__((packed)) {
    uint16_t magic;   /* 0x4154 */
    uint16_t flags;
    uint32_t seq;
    uint32_t length;
    uint32_t crc;
} at_header_t;        /* sizeof(at_header_t) == 16 */

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(at_header_t) == 16, "at_header_t must be 16 bytes");
#else
/* C99 has no _Static_assert: an array of negative size fails to compile. */
typedef char at_header_size_check[(sizeof(at_header_t) == 16) ? 1 : -1];
#endif

/* ------------------------------------------------------------------------ */
/* Results                                                                  */
/* ------------------------------------------------------------------------ */

/** What a library function reports. AT_OK is 0; everything else is a
 *  problem, described by at_status_str(). */
typedef enum {
    AT_OK = 0,          /**< success */
    AT_NEED_MORE,       /**< reader: no whole frame is buffered yet */

    /* Frame errors found by a receiver (at_reader_next). */
    AT_E_BAD_MAGIC,     /**< the first two bytes are not 0x4154; the stream is
                             out of step (sticky until skip/resync/reset) */
    AT_E_TOO_LARGE,     /**< header's length is over the receiver's limit;
                             reported from the header alone (sticky) */
    AT_E_BAD_FLAGS,     /**< no type bit, or several (NOTIFY with another
                             included); frame consumed */
    AT_E_CHECKSUM,      /**< body's CRC-32 differs; frame consumed */

    /* Caller errors. */
    AT_E_ARG,           /**< an invalid argument (NULL, not a JSON number...) */
    AT_E_NOSPACE,       /**< the caller's output buffer is too small */

    /* Body errors. */
    AT_E_BAD_BODY,      /**< a reply body that is not valid JSON, or not a
                             valid reply object */

    /* Call (transport) errors. */
    AT_E_RESOLVE,       /**< getaddrinfo failed */
    AT_E_CONNECT,       /**< could not connect (refused, unreachable) */
    AT_E_IO,            /**< a send or receive failed */
    AT_E_TIMEOUT,       /**< no reply within the time bound */
    AT_E_CLOSED,        /**< the peer closed the connection before a reply */
    AT_E_SEQ,           /**< a reply with another seq than the one asked
                             for (at_session_verify_frame(); calls drop
                             such replies and go on waiting) */
    AT_E_NOT_REPLY,     /**< at_session_verify_frame(): a REQUEST or NOTIFY
                             frame where a reply was expected (calls answer
                             or drop such frames and go on waiting) */

    /* Authentication (section 9, at_auth.h). */
    AT_E_AUTH,          /**< a reply that fails authentication: a bad
                             rpc.hello reply (values, proof), or a reply to an
                             authenticated request without AUTH or with a bad
                             SID or tag (a transport failure) */
    AT_E_UNAUTHORIZED,  /**< a plain `unauthorized` reply to an authenticated
                             request: the call failed, the session is gone */
    AT_E_UNAUTHENTICATED, /**< a plain busy, checksum_mismatch,
                             frame_too_large or bad_frame reply to an
                             authenticated request (a transport failure) */
    AT_E_REMOTE,        /**< the server answered rpc.hello with an error
                             reply (e.g. `unauthorized`: unknown key id, or a
                             server without keys) */
    AT_E_BAD_PROOF      /**< a well-formed rpc.hello reply whose proof does
                             not verify: the server does not hold this key
                             (calc_client: `error: unauthorized`, exit 1) */
} at_status_t;

/** A short English description of a status ("checksum mismatch", ...). */
const char *at_status_str(at_status_t status);

/** The error codes of the contract (sections 3 and 10.1), as carried in a reply body's
 *  "code" member. */
typedef enum {
    AT_CODE_OTHER = 0,          /**< a code this version does not know */
    AT_CODE_BAD_FRAME,          /**< "bad_frame" */
    AT_CODE_CHECKSUM_MISMATCH,  /**< "checksum_mismatch" */
    AT_CODE_FRAME_TOO_LARGE,    /**< "frame_too_large" */
    AT_CODE_BAD_REQUEST,        /**< "bad_request" */
    AT_CODE_UNKNOWN_FUNCTION,   /**< "unknown_function" */
    AT_CODE_INVALID_ARGUMENTS,  /**< "invalid_arguments" */
    AT_CODE_DIVISION_BY_ZERO,   /**< "division_by_zero" */
    AT_CODE_OVERFLOW,           /**< "overflow" */
    AT_CODE_BUSY,               /**< "busy" */
    AT_CODE_INTERNAL,           /**< "internal" */
    AT_CODE_UNAUTHORIZED,       /**< "unauthorized" (section 9) */
    AT_CODE_DEADLINE_EXCEEDED,  /**< "deadline_exceeded" (10.4): the
                                     function was not called */
    AT_CODE_CANCELLED,          /**< "cancelled" (10.4): the call was
                                     stopped; it may have partly run */
    AT_CODE_UNKNOWN_TOPIC       /**< "unknown_topic" (10.3) */
} at_code_t;

/** The wire name of a code ("bad_frame", ...); NULL for AT_CODE_OTHER. */
const char *at_code_name(at_code_t code);

/** The code named `name` (NUL-terminated); AT_CODE_OTHER if unknown. */
at_code_t at_code_from_name(const char *name);

/** The wire code a receiver answers a frame error with: AT_E_BAD_MAGIC and
 *  AT_E_BAD_FLAGS give AT_CODE_BAD_FRAME, AT_E_TOO_LARGE
 *  AT_CODE_FRAME_TOO_LARGE, AT_E_CHECKSUM AT_CODE_CHECKSUM_MISMATCH; any
 *  other status gives AT_CODE_OTHER. */
at_code_t at_status_code(at_status_t status);

/* ------------------------------------------------------------------------ */
/* CRC-32 and header                                                        */
/* ------------------------------------------------------------------------ */

/** CRC-32/ISO-HDLC (zlib's crc32) of `len` bytes at `data`.
 *  at_crc32("123456789", 9) == 0xCBF43926; the CRC of no bytes is 0. */
uint32_t at_crc32(const void *data, size_t len);

/** Continues a CRC: at_crc32_update(at_crc32(a, n), b, m) is the CRC of a
 *  followed by b. Start from 0. */
uint32_t at_crc32_update(uint32_t crc, const void *data, size_t len);

/** Writes the host-order header `h` as 16 big-endian bytes at `out`. */
void at_header_pack(const at_header_t *h, uint8_t out[AT_HEADER_LEN]);

/** Reads 16 big-endian bytes at `in` into the host-order header `h`. No
 *  field is checked. */
void at_header_unpack(const uint8_t in[AT_HEADER_LEN], at_header_t *h);

/** The message-type bit of `flags` (AT_FLAG_REQUEST, _RESPONSE, _ERROR or
 *  _NOTIFY), ignoring AUTH and the reserved bits; 0 if `flags` has no type
 *  bit or several (NOTIFY with another type bit: a bad frame). */
uint16_t at_flags_kind(uint16_t flags);

/* ------------------------------------------------------------------------ */
/* Frames                                                                   */
/* ------------------------------------------------------------------------ */

/** A decoded frame (host byte order). `body` points into the buffer it was
 *  decoded from and stays valid until that buffer is written again (for a
 *  reader: the next at_reader_feed/space/commit/skip/resync/reset). */
typedef struct {
    uint16_t flags;
    uint32_t seq;
    uint32_t length;        /**< body length */
    uint32_t crc;           /**< CRC from the header */
    const uint8_t *body;    /**< `length` bytes; NULL if the frame is not
                                 whole (a sticky reader error) */
} at_frame_t;

/** Encodes a frame with the given flags, seq and body into `out` (capacity
 *  `cap`). The flags are written as given. On AT_OK `*out_len` (if not NULL)
 *  is 16 + body_len. Fails with AT_E_NOSPACE if `cap` is too small and
 *  AT_E_ARG if body_len does not fit in 32 bits. `body` may be NULL when
 *  body_len is 0. */
at_status_t at_encode_frame(uint16_t flags, uint32_t seq,
                            const void *body, size_t body_len,
                            uint8_t *out, size_t cap, size_t *out_len);

/* ------------------------------------------------------------------------ */
/* Incremental reader                                                       */
/* ------------------------------------------------------------------------ */

/** An incremental frame reader over a caller-provided fixed buffer: bytes
 *  in, in any chunking (partial recv()s, several frames at once); whole
 *  frames out, in order, zero-copy.
 *
 *  Checks, in this project's order (docs/PROTOCOL.md, section 1):
 *   1. magic, as soon as two bytes are in: AT_E_BAD_MAGIC (seq 0);
 *   2. length, as soon as the header is in, before any body is buffered:
 *      AT_E_TOO_LARGE (the header's seq);
 *   3. once the whole body is in, type bits: AT_E_BAD_FLAGS;
 *   4. CRC: AT_E_CHECKSUM.
 *  Errors 3 and 4 consume the frame: the stream stays in step. Errors 1 and
 *  2 leave the stream out of step; they are sticky: at_reader_next() keeps
 *  reporting them until the caller drops the stream (TCP: reply, close),
 *  calls at_reader_resync() (serial links) or at_reader_skip() (the caller
 *  knows where the next frame starts), or at_reader_reset().
 *
 *  The fields are private; use the functions below. */
typedef struct {
    uint8_t *buf;       /* caller's buffer */
    size_t cap;         /* its size */
    uint32_t max_body;  /* min(limit, cap - 16) */
    size_t start;       /* first buffered byte not yet consumed */
    size_t end;         /* one past the last buffered byte */
    size_t skip;        /* bytes still to drop from future input */
    at_status_t fatal;  /* AT_OK, AT_E_BAD_MAGIC or AT_E_TOO_LARGE */
    at_frame_t fatal_frame; /* header fields of a sticky error */
} at_reader_t;

/** Prepares `r` to read frames into `buf` (capacity `cap`, at least 16
 *  bytes). Bodies are accepted up to min(max_body, cap - 16) bytes; give
 *  cap >= 16 + max_body (AT_MAX_FRAME for the default limit) to honour
 *  max_body fully. Returns AT_E_ARG if cap < 16. */
at_status_t at_reader_init(at_reader_t *r, uint8_t *buf, size_t cap,
                           uint32_t max_body);

/** Forgets all buffered bytes, any pending skip and any sticky error. */
void at_reader_reset(at_reader_t *r);

/** The body limit in force: min(max_body, cap - 16). */
uint32_t at_reader_max_body(const at_reader_t *r);

/** Copies up to `len` bytes of `data` into the reader and returns how many
 *  it took; fewer than `len` (maybe 0) when the buffer is full: call
 *  at_reader_next() to consume frames, then feed the rest. */
size_t at_reader_feed(at_reader_t *r, const void *data, size_t len);

/** Zero-copy input: makes room and sets `*where` to the free space at the
 *  end of the buffer; returns its size (0 when full). recv() into it, then
 *  call at_reader_commit() with the number of bytes received. */
size_t at_reader_space(at_reader_t *r, uint8_t **where);

/** Accepts `n` bytes written at the address given by at_reader_space()
 *  (n must not exceed the size it returned). */
void at_reader_commit(at_reader_t *r, size_t n);

/** Decodes the next frame. Returns
 *   AT_OK           a good frame in `*frame` (consumed);
 *   AT_NEED_MORE    no whole frame yet: feed more bytes;
 *   AT_E_BAD_FLAGS, AT_E_CHECKSUM
 *                   a bad frame, consumed; `*frame` has its header fields
 *                   and body (the stream is still in step);
 *   AT_E_BAD_MAGIC, AT_E_TOO_LARGE
 *                   sticky: `*frame` has seq 0 (bad magic) or the header's
 *                   fields (too large) and body NULL.
 *  `frame` may be NULL. */
at_status_t at_reader_next(at_reader_t *r, at_frame_t *frame);

/** Drops the next `n` bytes of the stream, counting from the first
 *  unconsumed byte (buffered or yet to come), and clears a sticky error.
 *  For a caller that knows where the next frame starts. */
void at_reader_skip(at_reader_t *r, size_t n);

/** Drops buffered bytes up to the next place the magic bytes 0x41 0x54
 *  could start (always at least one byte if any is buffered) and clears a
 *  sticky error. Returns the number of bytes dropped. For links with line
 *  noise; a TCP receiver closes the connection instead. */
size_t at_reader_resync(at_reader_t *r);

/** Bytes buffered and not yet consumed. */
size_t at_reader_buffered(const at_reader_t *r);

/* ------------------------------------------------------------------------ */
/* JSON bodies                                                              */
/* ------------------------------------------------------------------------ */

/** 1 if the `len` bytes at `s` are exactly one JSON number (RFC 8259:
 *  -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?), else 0. */
int at_json_is_number(const char *s, size_t len);

/** Builds a request body in the canonical form
 *      {"func": "add", "args": [10, 20]}
 *  from a function name (NUL-terminated UTF-8, escaped as RFC 8259 requires)
 *  and `nargs` NUL-terminated JSON number texts, copied as they are. The
 *  result is NUL-terminated in `out` (capacity `cap`); `*out_len` (if not
 *  NULL) gets its length without the NUL. Fails with AT_E_ARG if `func` is
 *  not valid UTF-8 or an argument is not a JSON number, and AT_E_NOSPACE if
 *  `cap` is too small. */
at_status_t at_build_request(const char *func, const char *const *args,
                             size_t nargs, char *out, size_t cap,
                             size_t *out_len);

/** Like at_build_request(), with a deadline (contract 10.4): when
 *  `deadline_ms` is not NULL the member "deadline_ms" is written last,
 *      {"func": "add", "args": [10, 20], "deadline_ms": 0}
 *  (the server calls the function only if fewer than *deadline_ms ms have
 *  passed since it read the frame). With `deadline_ms` NULL it is
 *  at_build_request(). */
at_status_t at_build_request_deadline(const char *func,
                                      const char *const *args, size_t nargs,
                                      const uint32_t *deadline_ms, char *out,
                                      size_t cap, size_t *out_len);

/** The kind of reply a body describes. */
typedef enum {
    AT_REPLY_SUCCESS = 1,   /**< "status": "success" (with "result") */
    AT_REPLY_ERROR = 2      /**< "status": "error" (with "code") */
} at_reply_kind_t;

/** A parsed reply body. All strings are NUL-terminated and live in the
 *  scratch buffer given to at_parse_reply(); the _len fields give their
 *  lengths (a string may contain an escaped NUL, \u0000). */
typedef struct {
    at_reply_kind_t kind;
    const char *status;     /**< unescaped "status" */
    size_t status_len;
    const char *result;     /**< raw JSON text of "result" (5.0 stays 5.0,
                                 30 stays 30); NULL for an error reply */
    size_t result_len;
    const char *code;       /**< unescaped "code"; NULL for a success */
    size_t code_len;
    at_code_t code_id;      /**< `code` as an enum (AT_CODE_OTHER if unknown
                                 or absent) */
    const char *message;    /**< unescaped "message"; "" when missing */
    size_t message_len;
} at_reply_t;

/** Parses the reply body of `len` bytes at `body` (need not be
 *  NUL-terminated; never read past `len`). The body must be one JSON object
 *  (RFC 8259, valid UTF-8, nesting at most 32 deep) with nothing after it
 *  but whitespace. Members may come in any order; unknown ones (any type)
 *  are skipped. "status" must be the string "success" (then "result", any
 *  JSON value, is required) or "error" (then the string "code" is required,
 *  and the string "message" optional). A known member named twice is an
 *  error.
 *
 *  Strings are copied, unescaped, into `scratch` (capacity `scratch_cap`;
 *  len + 1 bytes always suffice). Returns AT_OK, AT_E_BAD_BODY or
 *  AT_E_NOSPACE. */
at_status_t at_parse_reply(const uint8_t *body, size_t len,
                           char *scratch, size_t scratch_cap,
                           at_reply_t *reply);

/** Finds the member `name` (NUL-terminated) of the JSON object that is the
 *  whole of the `len` bytes at `json` (checked as at_parse_reply() checks a
 *  body: RFC 8259, valid UTF-8, nesting at most 32 deep, nothing after it
 *  but whitespace). On AT_OK `*value` and `*value_len` give the member's raw
 *  JSON text, inside `json`. AT_E_BAD_BODY: not such an object, or `name`
 *  missing or given twice. Reads no byte past `len`; allocates nothing. */
at_status_t at_json_member(const uint8_t *json, size_t len, const char *name,
                           const uint8_t **value, size_t *value_len);

/** Like at_json_member(), for a member whose value must be a string: it is
 *  unescaped into `out` (capacity `cap`, at least 1), truncated to cap - 1
 *  bytes and NUL-terminated; `*str_len` (if not NULL) gets its full
 *  unescaped length, which may exceed cap - 1. AT_E_BAD_BODY also when the
 *  value is not a string. */
at_status_t at_json_member_string(const uint8_t *json, size_t len,
                                  const char *name, char *out, size_t cap,
                                  size_t *str_len);

/* ------------------------------------------------------------------------ */
/* Calls                                                                    */
/* ------------------------------------------------------------------------ */

/** Options of a call; zero (or a NULL pointer) selects each default. */
typedef struct {
    int timeout_ms;         /**< total time bound of the call: resolve aside,
                                 connect + send + receive, or all UDP tries
                                 (default AT_DEFAULT_TIMEOUT_MS) */
    int udp_first_wait_ms;  /**< UDP: wait for a reply before the first
                                 retransmission (default 250); each later
                                 wait doubles, with +-20% random jitter */
    int udp_max_wait_ms;    /**< UDP: cap on one wait (default 2000) */
    int udp_max_tries;      /**< UDP: datagrams sent at most (default 8) */
    int family;             /**< AF_UNSPEC (default 0), AF_INET or AF_INET6 */
} at_call_opts_t;

/** What a call found. */
typedef struct {
    at_frame_t reply;   /**< on AT_OK: the reply frame (RESPONSE or ERROR);
                             its body points into the caller's buffer */
    int sys_errno;      /**< errno of the system call that failed, or 0 */
    unsigned tries;     /**< datagrams (UDP) or connections (TCP) tried */
    unsigned ignored;   /**< frames received and dropped while waiting:
                             UDP datagrams (other seq, corrupt, not a
                             reply), and on either transport NOTIFY frames
                             (events, notifications: contract 10.2, 10.3)
                             and replies with a seq the call does not
                             await (10.5); TCP: calls from the server
                             (answered or dropped, 10.5) */
    char detail[192];   /**< what happened, for people ("" on AT_OK) */
} at_call_result_t;

/** Calls over TCP: resolves `host` (a name, IPv4 or IPv6 address) and
 *  `port` with getaddrinfo, connects to the first address that accepts,
 *  sends one REQUEST frame with `seq` and the body, and reads one reply
 *  frame into `buf` (capacity `cap`; AT_MAX_FRAME takes any reply up to the
 *  default limit), all within opts->timeout_ms.
 *
 *  On AT_OK, res->reply is a RESPONSE or ERROR frame whose seq is `seq`, or
 *  an ERROR frame with seq 0 (a server that could not attribute its error,
 *  such as "busy", to a request). While waiting, the call drops (and
 *  counts in res->ignored) NOTIFY frames, the server's events and
 *  notifications (contract 10.2, 10.3), and replies with another seq, not
 *  0 (10.5: a reply it does not await). A REQUEST frame, a call towards
 *  this client, which serves nothing and never calls rpc.peer (10.5), is
 *  answered with an ERROR reply `unknown_function` and counted there too.
 *  A corrupt frame is AT_E_BAD_MAGIC, AT_E_TOO_LARGE, AT_E_BAD_FLAGS or
 *  AT_E_CHECKSUM. `body` must be at most AT_MAX_BODY bytes. */
at_status_t at_call_tcp(const char *host, const char *port, uint32_t seq,
                        const void *body, size_t body_len,
                        uint8_t *buf, size_t cap,
                        const at_call_opts_t *opts, at_call_result_t *res);

/** Calls over UDP: one frame per datagram. Sends the REQUEST frame, waits
 *  for the reply, and retransmits it with the same `seq` while none comes,
 *  each wait twice the previous one with random jitter, up to
 *  opts->udp_max_tries datagrams and never beyond opts->timeout_ms in
 *  total (then AT_E_TIMEOUT). Datagrams that are not a whole good reply
 *  frame with `seq` (late duplicates, replies to earlier calls, corrupt
 *  ones, NOTIFY frames) are ignored and counted in res->ignored. If the
 *  server's port
 *  refuses (ICMP port unreachable), the next resolved address is tried;
 *  with none left the call fails with AT_E_CONNECT. */
at_status_t at_call_udp(const char *host, const char *port, uint32_t seq,
                        const void *body, size_t body_len,
                        uint8_t *buf, size_t cap,
                        const at_call_opts_t *opts, at_call_result_t *res);

/** A check of each reply frame, for at_call_tcp_frame() and
 *  at_call_udp_frame(). It sees a whole reply frame with a good CRC and the
 *  request's seq (TCP: or an ERROR frame with seq 0) and returns
 *   AT_OK         accept it: the call returns AT_OK with res->reply = *reply
 *                 (the check may change *reply, e.g. to drop a trailer);
 *   AT_NEED_MORE  it counts as not received: the call goes on waiting (UDP:
 *                 and retransmitting) within its time bound; `*why` may give
 *                 a static reason, reported if the call then times out;
 *   other         the call fails with this status; the check sets
 *                 res->detail (and res->reply if the caller needs it). */
typedef at_status_t (*at_reply_check_t)(void *ctx, at_frame_t *reply,
                                        const char **why,
                                        at_call_result_t *res);

/** Like at_call_tcp(), but sends the request frame
 *      head (16 bytes) || body (body_len bytes) || tail (tail_len bytes)
 *  built by the caller (for an authenticated request: the header, the body,
 *  and the SID and tag), without copying it. The header's magic must be
 *  0x4154 and its length body_len + tail_len, at most AT_MAX_BODY (else
 *  AT_E_ARG); its seq should be `seq`. Replies may have a `length` of up to
 *  `max_reply_body` bytes (0: AT_MAX_BODY; `cap` must hold 16 + that many
 *  to honour it); each reply frame goes to `check` (NULL: accept any).
 *  A plain call from the server is answered `unknown_function` as in
 *  at_call_tcp(), or `unauthorized` when `check` is given (the calls of
 *  at_auth.h, whose client holds a key: contract 10.6); a sealed one is
 *  dropped. Both count in res->ignored. */
at_status_t at_call_tcp_frame(const char *host, const char *port,
                              uint32_t seq, const uint8_t *head,
                              const void *body, size_t body_len,
                              const void *tail, size_t tail_len,
                              uint8_t *buf, size_t cap,
                              uint32_t max_reply_body,
                              const at_call_opts_t *opts,
                              at_reply_check_t check, void *check_ctx,
                              at_call_result_t *res);

/** Like at_call_udp(), with a caller-built request frame, a reply limit
 *  and a check, as at_call_tcp_frame(). Every retransmission sends the
 *  same bytes. */
at_status_t at_call_udp_frame(const char *host, const char *port,
                              uint32_t seq, const uint8_t *head,
                              const void *body, size_t body_len,
                              const void *tail, size_t tail_len,
                              uint8_t *buf, size_t cap,
                              uint32_t max_reply_body,
                              const at_call_opts_t *opts,
                              at_reply_check_t check, void *check_ctx,
                              at_call_result_t *res);

/** Sends one notification (contract 10.2) over TCP: connects as
 *  at_call_tcp() does, sends the frame head || body || tail (a NOTIFY frame
 *  built by the caller: magic 0x4154, length body_len + tail_len, at most
 *  AT_MAX_BODY), then closes its sending side and the connection. No reply
 *  is awaited: a NOTIFY is never answered, and delivery is best effort (the
 *  receiver may drop it). Whatever the peer sends back (a v1 server's
 *  bad_frame) is read and discarded while the connection closes, for at
 *  most 1 s (and within opts->timeout_ms). Returns AT_OK once the frame was sent, or a
 *  transport status as at_call_tcp() (res->detail says what happened). */
at_status_t at_notify_tcp_frame(const char *host, const char *port,
                                const uint8_t *head, const void *body,
                                size_t body_len, const void *tail,
                                size_t tail_len, const at_call_opts_t *opts,
                                at_call_result_t *res);

/** Sends one notification over UDP: one datagram with the frame head ||
 *  body || tail, to the first resolved address; never retransmitted (10.2:
 *  the sender keeps no state for it). Returns AT_OK once sent. */
at_status_t at_notify_udp_frame(const char *host, const char *port,
                                const uint8_t *head, const void *body,
                                size_t body_len, const void *tail,
                                size_t tail_len, const at_call_opts_t *opts,
                                at_call_result_t *res);

/** A plain notification: the NOTIFY frame (flags 0x0010) with `seq` (from
 *  the sender's request counter: never 0) and `body` (a call body, as
 *  at_build_request() makes), sent over TCP (udp 0) or UDP (udp 1) by
 *  at_notify_tcp_frame() / at_notify_udp_frame(). */
at_status_t at_notify(int udp, const char *host, const char *port,
                      uint32_t seq, const void *body, size_t body_len,
                      const at_call_opts_t *opts, at_call_result_t *res);

#ifdef __cplusplus
}
#endif

#endif /* AT_PROTOCOL_H */
