/*
 * test_auth - tests of at_auth (contract section 9, the client side):
 *   - the contract's section 9 frames built by the client code paths: the
 *     hello (seq 1), authenticated add(10, 20) seq 2 and div(1, 0) seq 3,
 *     byte for byte, from the vector's key, Nc and hello reply;
 *   - the reply verifier: the contract's replies accepted, and rejected with
 *     any byte changed (body, SID, tag, seq, length, flags), with or without
 *     a CRC that matches the change;
 *   - hello replies: bad values, proofs, flags; error replies;
 *   - key parsing (KID:HEX) and key files (syntax, permissions); messages
 *     never contain key material;
 *   - calls against scripted servers (forked, on loopback): UDP ignores
 *     replies that do not verify and retransmits the same bytes; TCP fails
 *     on them; plain unauthorized / busy / checksum_mismatch replies;
 *   - contract section 10 on both transports: events and notifications
 *     (NOTIFY frames, plain or sealed) and replies to seqs the call does not
 *     await are dropped while waiting, and the call still succeeds, plain
 *     or authenticated; notifications sent by at_notify() and
 *     at_session_notify() are, byte for byte, vectors N1 and X3
 *     (tests/vectors/section10.tsv), and nothing is awaited after them.
 *
 *   test_auth
 *
 * Prints "N passed, M failed" last; exits 1 on any failure.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "test_check.h"
#include "at_auth.h"
#include "section9_vectors.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* The contract's section 9 vectors (section9_vectors.h)                    */
/* ------------------------------------------------------------------------ */

static at_key_t vkey;                   /* demo, bytes 0..31 */
static uint8_t vnc[16];                 /* a0..af */
static at_session_t vsession;           /* from the hello reply vector */

/* A frame as at_frame_t over a whole frame in memory (CRC not checked). */
static at_frame_t frame_of(const uint8_t *f, size_t n)
{
    at_header_t h;
    at_frame_t fr;
    at_header_unpack(f, &h);
    fr.flags = h.flags;
    fr.seq = h.seq;
    fr.length = (uint32_t)(n - AT_HEADER_LEN);
    fr.crc = h.crc;
    fr.body = f + AT_HEADER_LEN;
    return fr;
}

/* Rewrites the CRC of a whole frame of n bytes to match its body. */
static void fix_crc(uint8_t *f, size_t n)
{
    at_header_t h;
    at_header_unpack(f, &h);
    h.crc = at_crc32(f + AT_HEADER_LEN, n - AT_HEADER_LEN);
    at_header_pack(&h, f);
}

/* Rewrites the length field of a frame to n - 16. */
static void fix_length(uint8_t *f, size_t n)
{
    at_header_t h;
    at_header_unpack(f, &h);
    h.length = (uint32_t)(n - AT_HEADER_LEN);
    at_header_pack(&h, f);
}

static void setup_vectors(void)
{
    char err[200];
    int i;
    for (i = 0; i < 16; i++)
        vnc[i] = (uint8_t)(0xa0 + i);
    if (at_key_parse(S9_KEY_TEXT, &vkey, err, sizeof err) != AT_OK) {
        fprintf(stderr, "cannot parse the vector key: %s\n", err);
        exit(2);
    }
}

static void test_handshake_vector(void)
{
    uint8_t want[256], got[256], reply[256];
    char body[128], hex[65];
    size_t n, wn, rn, body_len;
    at_frame_t f;
    const char *why = NULL;
    at_status_t st;

    /* The hello request: body from at_hello_body, framed with seq 1. */
    wn = unhex(S9_HELLO_HEX, want, sizeof want);
    st = at_hello_body(&vkey, vnc, body, sizeof body, &body_len);
    result(st == AT_OK, "at_hello_body: %s", at_status_str(st));
    st = at_encode_frame(AT_FLAG_REQUEST, 1, body, body_len, got, sizeof got,
                         &n);
    result(st == AT_OK && n == wn && memcmp(got, want, n) == 0,
           "hello seq 1: not the contract's bytes (body %s)", body);

    /* The hello reply: the session of the contract. */
    rn = unhex(S9_HELLO_REPLY_HEX, reply, sizeof reply);
    f = frame_of(reply, rn);
    memset(&vsession, 0, sizeof vsession);
    st = at_hello_accept(&vkey, vnc, &f, &vsession, &why);
    result(st == AT_OK, "hello reply vector refused: %s",
           why ? why : at_status_str(st));
    tohex(vsession.k_req, 32, hex);
    result(strcmp(hex, S9_K_REQ_HEX) == 0, "session K_req %s", hex);
    tohex(vsession.k_rep, 32, hex);
    result(strcmp(hex, S9_K_REP_HEX) == 0, "session K_rep %s", hex);
    tohex(vsession.sid, 8, hex);
    result(strcmp(hex, "c0c1c2c3c4c5c6c7") == 0, "session SID %s", hex);
    result(vsession.open == 1 && vsession.seq == 0 &&
           at_session_usable(&vsession),
           "a new session is open, at seq 0, usable");
    if (st != AT_OK) {
        fprintf(stderr, "no session: later tests cannot run\n");
        exit(1);
    }
}

/* The request builder: at_build_request + at_session_encode. */
static void test_request_vector(const char *name, const char *func,
                                const char *a, const char *b, uint32_t seq,
                                const char *want_hex)
{
    const char *args[2];
    char body[128];
    size_t body_len, n, wn;
    uint8_t want[256], got[256];
    at_status_t st;

    args[0] = a;
    args[1] = b;
    wn = unhex(want_hex, want, sizeof want);
    st = at_build_request(func, args, 2, body, sizeof body, &body_len);
    result(st == AT_OK, "%s: at_build_request: %s", name, at_status_str(st));
    st = at_session_encode(&vsession, seq, body, body_len, got, sizeof got,
                           &n);
    result(st == AT_OK && n == wn && memcmp(got, want, wn) == 0,
           "%s: at_session_encode does not give the contract's bytes", name);
    /* Too small a buffer, a closed session. */
    result(at_session_encode(&vsession, seq, body, body_len, got, wn - 1,
                             &n) == AT_E_NOSPACE,
           "%s: encode into a buffer one byte short", name);
    {
        at_session_t closed = vsession;
        at_session_close(&closed);
        result(at_session_encode(&closed, seq, body, body_len, got,
                                 sizeof got, &n) == AT_E_ARG &&
               closed.open == 0,
               "%s: encode in a closed session", name);
    }
}

/* The verifier on one contract reply and all its one-byte changes. */
static void test_reply_vector(const char *name, const char *hex,
                              uint32_t seq, uint16_t flags,
                              const char *want_body)
{
    uint8_t f[256], g[260];
    size_t n = unhex(hex, f, sizeof f), i;
    at_frame_t inner;
    const char *why = NULL;
    at_status_t st;
    int all_raw = 1, all_fixed = 1, auth_after_fix = 1;
    static const uint8_t masks[] = {0x01, 0x08, 0x80};
    size_t m;

    st = at_session_verify_frame(&vsession, f, n, seq, &inner, &why);
    result(st == AT_OK, "%s: refused: %s", name, why ? why : "");
    result(st == AT_OK && inner.flags == flags && inner.seq == seq &&
           inner.length == strlen(want_body) &&
           memcmp(inner.body, want_body, inner.length) == 0,
           "%s: the body proper is not %s", name, want_body);

    /* The same through at_session_verify on a decoded frame. */
    {
        at_frame_t fr = frame_of(f, n);
        result(at_session_verify(&vsession, &fr, &inner, NULL) == AT_OK &&
               inner.length == n - AT_HEADER_LEN - AT_AUTH_TRAILER,
               "%s: at_session_verify refuses it", name);
    }

    /* Any bit changed anywhere: refused. With the CRC made to match, any
     * change in the header (seq, length, flags) or in body, SID or tag is
     * still refused, by the tag. */
    for (i = 0; i < n; i++)
        for (m = 0; m < sizeof masks; m++) {
            at_header_t h;
            memcpy(g, f, n);
            g[i] ^= masks[m];
            if (at_session_verify_frame(&vsession, g, n, seq, &inner,
                                        NULL) == AT_OK) {
                all_raw = 0;
                printf("  %s: byte %lu ^ 0x%02x accepted\n", name,
                       (unsigned long)i, masks[m]);
            }
            if (i >= 12 && i < 16)
                continue;               /* the CRC itself */
            if (i >= AT_HEADER_LEN)
                fix_crc(g, n);
            at_header_unpack(g, &h);
            /* expect the seq as changed, so that the tag must catch it */
            st = at_session_verify_frame(&vsession, g, n, h.seq, &inner,
                                         NULL);
            if (st == AT_OK) {
                all_fixed = 0;
                printf("  %s: byte %lu ^ 0x%02x with a matching CRC "
                       "accepted\n", name, (unsigned long)i, masks[m]);
            }
            if (i >= AT_HEADER_LEN && st != AT_E_AUTH)
                auth_after_fix = 0;
        }
    result(all_raw, "%s: a frame with one byte changed was accepted", name);
    result(all_fixed, "%s: a changed frame with a matching CRC was "
           "accepted", name);
    result(auth_after_fix, "%s: a changed body, SID or tag with a matching "
           "CRC was not refused by authentication", name);

    /* Named cases, CRC matching, each refused by authentication. */
    {
        struct {
            const char *what;
            size_t at;
            uint8_t mask;
        } cases[] = {
            {"body", AT_HEADER_LEN + 2, 0x01},
            {"SID", 0, 0x01},           /* set below */
            {"tag", 0, 0x80},           /* set below */
            {"seq", 7, 0x01},
            {"flags: AUTH bit cleared", 3, 0x08},
            {"flags: a reserved bit", 2, 0x01},
            {"flags: RESPONSE <-> ERROR", 3, 0x06},
        };
        size_t k;
        cases[1].at = n - AT_AUTH_TRAILER;
        cases[2].at = n - AT_AUTH_TAG_LEN + 5;
        for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            at_header_t h;
            memcpy(g, f, n);
            g[cases[k].at] ^= cases[k].mask;
            fix_crc(g, n);
            at_header_unpack(g, &h);
            st = at_session_verify_frame(&vsession, g, n, h.seq, &inner, &why);
            result(st == AT_E_AUTH, "%s: %s changed: status %s", name,
                   cases[k].what, at_status_str(st));
        }
    }

    /* Length changed, frame made consistent (one byte fewer or more). */
    memcpy(g, f, n);
    fix_length(g, n - 1);
    fix_crc(g, n - 1);
    st = at_session_verify_frame(&vsession, g, n - 1, seq, &inner, &why);
    result(st == AT_E_AUTH, "%s: one byte shorter: %s", name,
           at_status_str(st));
    memcpy(g, f, n);
    g[n] = 0;
    fix_length(g, n + 1);
    fix_crc(g, n + 1);
    st = at_session_verify_frame(&vsession, g, n + 1, seq, &inner, &why);
    result(st == AT_E_AUTH, "%s: one byte longer: %s", name,
           at_status_str(st));
    /* Only the length field changed: not one whole frame. */
    memcpy(g, f, n);
    g[11] ^= 0x01;
    result(at_session_verify_frame(&vsession, g, n, seq, &inner, NULL) !=
           AT_OK, "%s: length field changed", name);

    /* Another seq expected; another session; the request's key. As one
     * frame's verdict a reply to another seq stays AT_E_SEQ (it is not
     * this call's reply); since contract section 10 (10.5) the calls drop
     * such a frame and go on waiting instead of failing: see
     * test_section10_calls(). */
    result(at_session_verify_frame(&vsession, f, n, seq + 1, &inner, NULL) ==
           AT_E_SEQ, "%s: accepted as the reply to another seq", name);
    {
        at_session_t other = vsession;
        other.sid[7] ^= 1;
        result(at_session_verify_frame(&other, f, n, seq, &inner, NULL) ==
               AT_E_AUTH, "%s: accepted in another session", name);
        other = vsession;
        memcpy(other.k_rep, vsession.k_req, sizeof other.k_rep);
        result(at_session_verify_frame(&other, f, n, seq, &inner, NULL) ==
               AT_E_AUTH, "%s: verifies under K_req", name);
        other = vsession;
        at_session_close(&other);
        result(at_session_verify_frame(&other, f, n, seq, &inner, NULL) ==
               AT_E_AUTH, "%s: accepted in a closed session", name);
    }
}

static void test_verify_misc(void)
{
    uint8_t f[256];
    size_t n;
    at_frame_t inner, fr;
    const char *why = NULL;
    static const char plain[] = "{\"status\": \"success\", \"result\": 30}";

    /* A request frame is not a reply. */
    n = unhex(S9_ADD_REQUEST_HEX, f, sizeof f);
    result(at_session_verify_frame(&vsession, f, n, 2, &inner, &why) ==
           AT_E_NOT_REPLY, "a request taken for a reply");

    /* A plain reply (no AUTH). */
    at_encode_frame(AT_FLAG_RESPONSE, 2, plain, strlen(plain), f, sizeof f,
                    &n);
    result(at_session_verify_frame(&vsession, f, n, 2, &inner, &why) ==
           AT_E_AUTH, "a plain reply accepted as authenticated");
    /* AUTH but shorter than SID and tag. */
    at_encode_frame(AT_FLAG_RESPONSE | AT_FLAG_AUTH, 2, "0123456789", 10, f,
                    sizeof f, &n);
    fr = frame_of(f, n);
    result(at_session_verify(&vsession, &fr, &inner, &why) == AT_E_AUTH,
           "an AUTH reply of 10 bytes accepted");
    /* Bad magic, no type bit, bad CRC, truncated. */
    n = unhex(S9_ADD_REPLY_HEX, f, sizeof f);
    f[0] = 0x42;
    result(at_session_verify_frame(&vsession, f, n, 2, &inner, NULL) ==
           AT_E_BAD_MAGIC, "bad magic");
    n = unhex(S9_ADD_REPLY_HEX, f, sizeof f);
    f[3] = 0x08;
    result(at_session_verify_frame(&vsession, f, n, 2, &inner, NULL) ==
           AT_E_BAD_FLAGS, "no type bit");
    n = unhex(S9_ADD_REPLY_HEX, f, sizeof f);
    f[20] ^= 0x20;
    result(at_session_verify_frame(&vsession, f, n, 2, &inner, NULL) ==
           AT_E_CHECKSUM, "bad CRC");
    n = unhex(S9_ADD_REPLY_HEX, f, sizeof f);
    result(at_session_verify_frame(&vsession, f, n - 1, 2, &inner, NULL) ==
           AT_E_ARG, "a truncated frame");
}

/* ------------------------------------------------------------------------ */
/* Hello replies                                                            */
/* ------------------------------------------------------------------------ */

static const char good_result[] =
    "{\"session\": \"c0c1c2c3c4c5c6c7\", "
    "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\", "
    "\"proof\": \"e5dea66ef6722f79f4d026382ed242b2\"}";

/* at_hello_accept on a reply with `flags` and `body`, under `key`/`nc`. */
static at_status_t hello_with(const at_key_t *key, const uint8_t *nc,
                              uint16_t flags, const char *body,
                              at_session_t *s, const char **why)
{
    uint8_t f[1024];
    size_t n;
    at_frame_t fr;
    if (at_encode_frame(flags, 1, body, strlen(body), f, sizeof f, &n) !=
        AT_OK) {
        fprintf(stderr, "test body too long\n");
        exit(2);
    }
    fr = frame_of(f, n);
    return at_hello_accept(key, nc, &fr, s, why);
}

static void hello_case(const char *name, uint16_t flags, const char *result_text,
                       at_status_t want)
{
    char body[1024];
    at_session_t s;
    const char *why = NULL;
    at_status_t st;

    snprintf(body, sizeof body, "{\"status\": \"success\", \"result\": %s}",
             result_text);
    memset(&s, 0, sizeof s);
    st = hello_with(&vkey, vnc, flags, body, &s, &why);
    result(st == want, "hello %s: %s (%s), want %s", name, at_status_str(st),
           why ? why : "", at_status_str(want));
    if (want != AT_OK)
        result(s.open == 0, "hello %s: session opened anyway", name);
}

static void test_hello_replies(void)
{
    at_session_t s;
    const char *why = NULL;
    at_status_t st;
    at_key_t other;
    uint8_t nc2[16];
    char body[1024];

    hello_case("good", AT_FLAG_RESPONSE, good_result, AT_OK);
    hello_case("members reordered, one more", AT_FLAG_RESPONSE,
               "{\"proof\": \"e5dea66ef6722f79f4d026382ed242b2\", "
               "\"x\": [1, {\"y\": null}], "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\", "
               "\"session\": \"c0c1c2c3c4c5c6c7\"}", AT_OK);
    hello_case("with AUTH", AT_FLAG_RESPONSE | AT_FLAG_AUTH, good_result,
               AT_E_AUTH);
    hello_case("flags ERROR", AT_FLAG_ERROR, good_result, AT_E_AUTH);
    hello_case("uppercase proof", AT_FLAG_RESPONSE,
               "{\"session\": \"c0c1c2c3c4c5c6c7\", "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\", "
               "\"proof\": \"E5DEA66EF6722F79F4D026382ED242B2\"}", AT_E_AUTH);
    hello_case("uppercase session", AT_FLAG_RESPONSE,
               "{\"session\": \"C0C1C2C3C4C5C6C7\", "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\", "
               "\"proof\": \"e5dea66ef6722f79f4d026382ed242b2\"}", AT_E_AUTH);
    hello_case("session of 14 digits", AT_FLAG_RESPONSE,
               "{\"session\": \"c0c1c2c3c4c5c6\", "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\", "
               "\"proof\": \"e5dea66ef6722f79f4d026382ed242b2\"}", AT_E_AUTH);
    hello_case("nonce of 34 digits", AT_FLAG_RESPONSE,
               "{\"session\": \"c0c1c2c3c4c5c6c7\", "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf00\", "
               "\"proof\": \"e5dea66ef6722f79f4d026382ed242b2\"}", AT_E_AUTH);
    hello_case("proof missing", AT_FLAG_RESPONSE,
               "{\"session\": \"c0c1c2c3c4c5c6c7\", "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\"}", AT_E_AUTH);
    hello_case("proof a number", AT_FLAG_RESPONSE,
               "{\"session\": \"c0c1c2c3c4c5c6c7\", "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\", "
               "\"proof\": 1}", AT_E_AUTH);
    hello_case("session twice", AT_FLAG_RESPONSE,
               "{\"session\": \"c0c1c2c3c4c5c6c7\", "
               "\"session\": \"c0c1c2c3c4c5c6c7\", "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\", "
               "\"proof\": \"e5dea66ef6722f79f4d026382ed242b2\"}", AT_E_AUTH);
    hello_case("wrong proof", AT_FLAG_RESPONSE,
               "{\"session\": \"c0c1c2c3c4c5c6c7\", "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\", "
               "\"proof\": \"e5dea66ef6722f79f4d026382ed242b3\"}", AT_E_BAD_PROOF);
    hello_case("another session id", AT_FLAG_RESPONSE,
               "{\"session\": \"c0c1c2c3c4c5c6c8\", "
               "\"nonce\": \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf\", "
               "\"proof\": \"e5dea66ef6722f79f4d026382ed242b2\"}", AT_E_BAD_PROOF);
    hello_case("result not an object", AT_FLAG_RESPONSE, "\"c0c1\"",
               AT_E_AUTH);

    /* The right reply, but another key or another client nonce. */
    other = vkey;
    other.key[31] ^= 1;
    memset(&s, 0, sizeof s);
    snprintf(body, sizeof body, "{\"status\": \"success\", \"result\": %s}",
             good_result);
    st = hello_with(&other, vnc, AT_FLAG_RESPONSE, body, &s, &why);
    result(st == AT_E_BAD_PROOF && s.open == 0 && why != NULL &&
           strstr(why, "proof") != NULL,
           "hello under another key: %s", at_status_str(st));
    memcpy(nc2, vnc, 16);
    nc2[0] ^= 1;
    st = hello_with(&vkey, nc2, AT_FLAG_RESPONSE, body, &s, &why);
    result(st == AT_E_BAD_PROOF && s.open == 0,
           "hello with another client nonce: %s", at_status_str(st));
    at_key_wipe(&other);

    /* Error replies: the server refused. */
    st = hello_with(&vkey, vnc, AT_FLAG_ERROR,
                    "{\"status\": \"error\", \"code\": \"unauthorized\", "
                    "\"message\": \"this server does not authenticate\"}",
                    &s, &why);
    result(st == AT_E_REMOTE && s.open == 0, "hello unauthorized: %s",
           at_status_str(st));
    st = hello_with(&vkey, vnc, AT_FLAG_RESPONSE,
                    "{\"status\": \"error\", \"code\": \"unauthorized\"}",
                    &s, &why);
    result(st == AT_E_AUTH, "error body with flags RESPONSE: %s",
           at_status_str(st));
    st = hello_with(&vkey, vnc, AT_FLAG_ERROR, "{\"status\": \"error\"}", &s,
                    &why);
    result(st == AT_E_AUTH, "error reply without code: %s",
           at_status_str(st));
    st = hello_with(&vkey, vnc, AT_FLAG_RESPONSE, "not json", &s, &why);
    result(st == AT_E_AUTH, "hello reply not JSON: %s", at_status_str(st));
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */
/* ------------------------------------------------------------------------ */

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = (const uint8_t *)p;
    size_t i;
    for (i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

/* 1 if no 6-byte run of `secret` occurs in `msg`. */
static int leaks_nothing(const char *msg, const char *secret)
{
    size_t n = strlen(secret), i;
    char w[7];
    for (i = 0; i + 6 <= n; i++) {
        memcpy(w, secret + i, 6);
        w[6] = '\0';
        if (strstr(msg, w) != NULL)
            return 0;
    }
    return 1;
}

static void key_bad(const char *name, const char *text, const char *expect)
{
    at_key_t k;
    char err[256];
    at_status_t st;

    memset(&k, 0x55, sizeof k);
    st = at_key_parse(text, &k, err, sizeof err);
    result(st == AT_E_ARG, "key %s: accepted", name);
    result(err[0] != '\0' && strstr(err, expect) != NULL,
           "key %s: message \"%s\" does not say \"%s\"", name, err, expect);
    result(leaks_nothing(err, text), "key %s: message \"%s\" quotes the key",
           name, err);
    result(all_zero(&k, sizeof k), "key %s: not wiped after failure", name);
}

static void test_key_parse(void)
{
    at_key_t k;
    char err[256], text[200];
    int i, ok;

    result(at_key_parse(S9_KEY_TEXT, &k, err, sizeof err) == AT_OK &&
           strcmp(k.kid, "demo") == 0 && k.kid_len == 4,
           "good key: %s", err);
    ok = 1;
    for (i = 0; i < 32; i++)
        ok &= k.key[i] == i;
    result(ok, "good key: bytes are not 0..31");

    result(at_key_parse("  A-z_.9:000102030405060708090A0B0C0D0E0F"
                        "101112131415161718191A1B1C1D1E1F\n", &k, err,
                        sizeof err) == AT_OK &&
           strcmp(k.kid, "A-z_.9") == 0 && k.key[31] == 0x1f,
           "uppercase hex, all kid characters, whitespace around: %s", err);
    snprintf(text, sizeof text, "%s:%s",
             "abcdefghijklmnopqrstuvwxyz012345", S9_KEY_TEXT + 5);
    result(at_key_parse(text, &k, err, sizeof err) == AT_OK &&
           k.kid_len == 32, "32-character kid: %s", err);

    key_bad("63 digits", "demo:000102030405060708090a0b0c0d0e0f"
            "101112131415161718191a1b1c1d1e1", "64 hex digits");
    key_bad("65 digits", "demo:000102030405060708090a0b0c0d0e0f"
            "101112131415161718191a1b1c1d1e1f0", "64 hex digits");
    key_bad("empty hex", "demo:", "64 hex digits");
    key_bad("a g among the digits", "demo:000102030405060708090a0b0c0d0e0f"
            "101112131415161718191a1b1c1d1e1g", "hex digits only");
    key_bad("a space among the digits", "demo:000102030405060708090a0b0c0d0e"
            "0f101112131415161718191a1b1c1 1e1f", "hex digits only");
    key_bad("no colon", "000102030405060708090a0b0c0d0e0f"
            "101112131415161718191a1b1c1d1e1f", "KID:HEX");
    key_bad("empty kid", ":000102030405060708090a0b0c0d0e0f"
            "101112131415161718191a1b1c1d1e1f", "key id");
    key_bad("33-character kid", "abcdefghijklmnopqrstuvwxyz0123456:"
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "key id");
    key_bad("kid with a space", "de mo:000102030405060708090a0b0c0d0e0f"
            "101112131415161718191a1b1c1d1e1f", "key id");
    key_bad("kid with a slash", "de/mo:000102030405060708090a0b0c0d0e0f"
            "101112131415161718191a1b1c1d1e1f", "key id");
    key_bad("kid with non-ASCII", "d\xc3\xa9mo:000102030405060708090a0b0c0d"
            "0e0f101112131415161718191a1b1c1d1e1f", "key id");
    key_bad("hex typed as the kid", "000102030405060708090a0b0c0d0e0f1011"
            ":12131415161718191a1b1c1d1e1f", "key id");
    result(at_kid_valid("a", 1) && !at_kid_valid("", 0) &&
           !at_kid_valid("a:b", 3) && !at_kid_valid("a b", 3),
           "at_kid_valid");
}

static char tmpdir[64];

/* Writes a key file with `mode`; returns its path (static storage). */
static const char *key_file(const char *name, const char *content,
                            mode_t mode)
{
    static char path[200];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(content, 1, strlen(content), f) != strlen(content)
        || fclose(f) != 0 || chmod(path, mode) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    return path;
}

static const char hex1[] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
static const char hex2[] =
    "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

static void key_file_bad(const char *name, const char *content, mode_t mode,
                         at_status_t want, const char *expect)
{
    at_key_t k;
    char err[400];
    at_status_t st;
    const char *path = key_file("bad.keys", content, mode);

    memset(&k, 0x55, sizeof k);
    st = at_key_load_file(path, &k, err, sizeof err);
    result(st == want, "key file %s: %s, want %s", name, at_status_str(st),
           at_status_str(want));
    result(strstr(err, expect) != NULL,
           "key file %s: message \"%s\" does not say \"%s\"", name, err,
           expect);
    result(leaks_nothing(err, hex1) && leaks_nothing(err, hex2),
           "key file %s: message \"%s\" quotes a key", name, err);
    result(all_zero(&k, sizeof k), "key file %s: not wiped", name);
    unlink(path);
}

static void test_key_files(void)
{
    at_key_t k;
    char err[400], content[2048], longc[600];
    const char *path;
    at_status_t st;

    snprintf(tmpdir, sizeof tmpdir, "/tmp/at_test_auth.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        exit(2);
    }

    snprintf(content, sizeof content,
             "# keys of this client\n\n   \t\n  # indented comment\n"
             "demo %s\nother\t%s\n", hex1, hex2);
    path = key_file("good.keys", content, 0600);
    st = at_key_load_file(path, &k, err, sizeof err);
    result(st == AT_OK && strcmp(k.kid, "demo") == 0 && k.key[0] == 0 &&
           k.key[31] == 0x1f, "good key file: %s", err);
    unlink(path);

    snprintf(content, sizeof content, "\r\nfirst %s\r\n", hex2);
    path = key_file("crlf.keys", content, 0400);
    st = at_key_load_file(path, &k, err, sizeof err);
    result(st == AT_OK && strcmp(k.kid, "first") == 0 && k.key[0] == 0xff,
           "CRLF key file, mode 0400: %s", err);
    unlink(path);

    snprintf(content, sizeof content, "demo %s", hex1);
    path = key_file("nonl.keys", content, 0600);
    st = at_key_load_file(path, &k, err, sizeof err);
    result(st == AT_OK && strcmp(k.kid, "demo") == 0,
           "key file without a final newline: %s", err);
    unlink(path);

    memset(longc, 'x', sizeof longc);
    longc[0] = '#';
    longc[sizeof longc - 1] = '\0';
    snprintf(content, sizeof content, "%s\ndemo %s\n", longc, hex1);
    path = key_file("long.keys", content, 0600);
    st = at_key_load_file(path, &k, err, sizeof err);
    result(st == AT_OK, "key file with a 600-byte comment: %s", err);
    unlink(path);

    snprintf(content, sizeof content, "demo %s\n", hex1);
    key_file_bad("readable by group", content, 0640, AT_E_ARG,
                 "group or others have access");
    key_file_bad("readable by others", content, 0604, AT_E_ARG,
                 "chmod 600");
    key_file_bad("writable by group", content, 0620, AT_E_ARG, "mode 0620");
    snprintf(content, sizeof content, "# c\n\ndemo %.63s\n", hex1);
    key_file_bad("short key", content, 0600, AT_E_ARG, "bad.keys:3: a key is "
                 "64 hex digits");
    snprintf(content, sizeof content, "demo %s\nbad %.60sxyzw\n", hex1, hex2);
    key_file_bad("a bad second key", content, 0600, AT_E_ARG,
                 "bad.keys:2: a key is hex digits only");
    snprintf(content, sizeof content, "demo:%s\n", hex1);
    key_file_bad("KID:HEX in a file", content, 0600, AT_E_ARG,
                 "bad.keys:1: expected 'KID HEX'");
    snprintf(content, sizeof content, "demo %s extra\n", hex1);
    key_file_bad("three fields", content, 0600, AT_E_ARG, "two fields");
    snprintf(content, sizeof content, "de/mo %s\n", hex1);
    key_file_bad("bad kid", content, 0600, AT_E_ARG, "bad.keys:1: the key id");
    key_file_bad("no keys", "# nothing\n\n", 0600, AT_E_ARG, "no keys");
    key_file_bad("empty", "", 0600, AT_E_ARG, "no keys");
    snprintf(content, sizeof content, "# caf\xc3\xa9\ndemo %s\n", hex1);
    key_file_bad("not ASCII", content, 0600, AT_E_ARG, "not ASCII");

    snprintf(content, sizeof content, "%s/missing.keys", tmpdir);
    memset(&k, 0x55, sizeof k);
    st = at_key_load_file(content, &k, err, sizeof err);
    result(st == AT_E_IO && strstr(err, "cannot open") != NULL &&
           all_zero(&k, sizeof k), "missing key file: %s", err);
    rmdir(tmpdir);
}

/* ------------------------------------------------------------------------ */
/* Calls against scripted servers                                           */
/* ------------------------------------------------------------------------ */

enum reply_kind {
    R_NONE = 0,     /* the end of a list: send nothing more */
    R_GOOD,         /* the right authenticated reply */
    R_BAD_TAG,      /* authenticated, tag changed */
    R_OTHER_SID,    /* authenticated, under another SID */
    R_PLAIN_OK,     /* a plain success */
    R_PLAIN_INTERNAL,
    R_PLAIN_UNAUTH,
    R_PLAIN_BUSY,
    R_PLAIN_CHECKSUM,
    R_PLAIN_BUSY_SEQ0,
    R_HELLO_GOOD,   /* the contract's hello reply, with the request's seq */
    R_HELLO_BAD_PROOF,
    R_HELLO_UNAUTH,
    R_EVENT,        /* vector E1: a plain event, the server's seq 1 */
    R_EVENT_SEALED, /* vector E2: E1 sealed under K_rep */
    R_NOTIFY_CALL,  /* vector N1: a plain notification, seq 7 */
    R_GOOD_OTHER_SEQ, /* the right authenticated reply, to seq + 1 */
    R_PLAIN_OK_OTHER_SEQ, /* a plain success to seq + 7 */
    R_SERVER_CALL,  /* vector P3: the server calls rpc.info, its seq 1 */
    R_SERVER_CALL_SEALED /* vector X1: add(1, 2) sealed under K_rep */
};

#define E1_BODY "{\"topic\": \"temp\", \"n\": 1, \"value\": 21.5}"
#define N1_BODY "{\"func\": \"log\", \"args\": [\"boot\"]}"
/* Vectors N1 and X3 of tests/vectors/section10.tsv. */
#define N1_HEX "415400100000000700000021dfc3d8767b2266756e63223a20226c6f" \
    "67222c202261726773223a205b22626f6f74225d7d"
#define X3_HEX "4154001800000007000000391fa1fc9a7b2266756e63223a20226c6f" \
    "67222c202261726773223a205b22626f6f74225d7dc0c1c2c3c4c5c6c7ec21d1ebf1" \
    "39e5d8e53f8259d71df128"

static const char ok_body[] = "{\"status\": \"success\", \"result\": 30}";

/* An authenticated reply frame (tagged under K_rep of vsession). */
static size_t auth_reply(uint16_t flags, uint32_t seq, const char *body,
                         const uint8_t sid[8], uint8_t *out)
{
    size_t n = strlen(body);
    at_header_t h;
    h.magic = AT_MAGIC;
    h.flags = (uint16_t)(flags | AT_FLAG_AUTH);
    h.seq = seq;
    h.length = (uint32_t)(n + AT_AUTH_TRAILER);
    h.crc = 0;
    at_header_pack(&h, out);
    memcpy(out + AT_HEADER_LEN, body, n);
    memcpy(out + AT_HEADER_LEN + n, sid, 8);
    at_frame_tag(vsession.k_rep, out, out + AT_HEADER_LEN, n,
                 out + AT_HEADER_LEN + n, out + AT_HEADER_LEN + n + 8);
    fix_crc(out, AT_HEADER_LEN + n + AT_AUTH_TRAILER);
    return AT_HEADER_LEN + n + AT_AUTH_TRAILER;
}

static size_t plain_reply(uint16_t flags, uint32_t seq, const char *body,
                          uint8_t *out)
{
    size_t n;
    at_encode_frame(flags, seq, body, strlen(body), out, 1024, &n);
    return n;
}

/* The bytes of a scripted reply to the request `seq`. */
static size_t make_reply(enum reply_kind kind, uint32_t seq, uint8_t *out)
{
    uint8_t sid[8];
    char body[512];
    size_t n;
    memcpy(sid, vsession.sid, 8);
    switch (kind) {
    case R_GOOD:
        return auth_reply(AT_FLAG_RESPONSE, seq, ok_body, sid, out);
    case R_BAD_TAG:
        n = auth_reply(AT_FLAG_RESPONSE, seq, ok_body, sid, out);
        out[n - 1] ^= 1;
        fix_crc(out, n);
        return n;
    case R_OTHER_SID:
        sid[0] ^= 0xff;
        return auth_reply(AT_FLAG_RESPONSE, seq, ok_body, sid, out);
    case R_PLAIN_OK:
        return plain_reply(AT_FLAG_RESPONSE, seq, ok_body, out);
    case R_PLAIN_INTERNAL:
        return plain_reply(AT_FLAG_ERROR, seq, "{\"status\": \"error\", "
                           "\"code\": \"internal\", \"message\": \"x\"}", out);
    case R_PLAIN_UNAUTH:
        return plain_reply(AT_FLAG_ERROR, seq, "{\"status\": \"error\", "
                           "\"code\": \"unauthorized\", \"message\": "
                           "\"unknown session\"}", out);
    case R_PLAIN_BUSY:
        return plain_reply(AT_FLAG_ERROR, seq, "{\"status\": \"error\", "
                           "\"code\": \"busy\", \"message\": \"try\\nlater\"}",
                           out);
    case R_PLAIN_CHECKSUM:
        return plain_reply(AT_FLAG_ERROR, seq, "{\"status\": \"error\", "
                           "\"code\": \"checksum_mismatch\", \"message\": "
                           "\"crc\"}", out);
    case R_PLAIN_BUSY_SEQ0:
        return plain_reply(AT_FLAG_ERROR, 0, "{\"status\": \"error\", "
                           "\"code\": \"busy\", \"message\": \"full\"}", out);
    case R_HELLO_GOOD:
    case R_HELLO_BAD_PROOF:
        snprintf(body, sizeof body, "{\"status\": \"success\", \"result\": "
                 "%s}", good_result);
        if (kind == R_HELLO_BAD_PROOF)
            memcpy(strstr(body, "\"proof\": \"") + 10, "00", 2);
        return plain_reply(AT_FLAG_RESPONSE, seq, body, out);
    case R_HELLO_UNAUTH:
        return plain_reply(AT_FLAG_ERROR, seq, "{\"status\": \"error\", "
                           "\"code\": \"unauthorized\", \"message\": "
                           "\"this server does not authenticate\"}", out);
    case R_EVENT:
        return plain_reply(AT_FLAG_NOTIFY, 1, E1_BODY, out);
    case R_EVENT_SEALED:
        at_seal_frame(AT_FLAG_NOTIFY | AT_FLAG_AUTH, 1, E1_BODY,
                      strlen(E1_BODY), vsession.k_rep, sid, out, 1024, &n);
        return n;
    case R_NOTIFY_CALL:
        return plain_reply(AT_FLAG_NOTIFY, 7, N1_BODY, out);
    case R_GOOD_OTHER_SEQ:
        return auth_reply(AT_FLAG_RESPONSE, seq + 1, ok_body, sid, out);
    case R_PLAIN_OK_OTHER_SEQ:
        return plain_reply(AT_FLAG_RESPONSE, seq + 7, ok_body, out);
    case R_SERVER_CALL:
        return plain_reply(AT_FLAG_REQUEST, 1,
                           "{\"func\": \"rpc.info\", \"args\": []}", out);
    case R_SERVER_CALL_SEALED:
        return auth_reply(AT_FLAG_REQUEST, 1,
                          "{\"func\": \"add\", \"args\": [1, 2]}", sid, out);
    case R_NONE:
        break;
    }
    return 0;
}

/* A script: for the k-th request datagram received (k from 0), the replies
 * to send, ending with R_NONE. */
typedef struct {
    enum reply_kind replies[3][6];
    int hello;          /* the request is the contract's hello (seq 1) */
    uint32_t seq;       /* the seq the request must carry */
    int requests;       /* datagrams expected (UDP); all byte-identical */
    int linger;         /* UDP: then keep receiving (unanswered, checked)
                           until killed, so that a late retransmission
                           draws no ICMP port unreachable */
    int plain;          /* the request is a plain REQUEST with `seq` */
    const char *expect; /* hex of the exact frame expected (then nothing
                           else is checked) */
    const char *answer; /* TCP: the code of the plain ERROR reply (seq 1)
                           the client must send to the server's call */
} script_t;

/* Checks a received request: the contract's hello, or an authenticated
 * request of vsession with `seq` and a good tag. Returns 1 if good. */
static int request_ok(const script_t *sc, const uint8_t *d, size_t n)
{
    at_header_t h;
    uint8_t tag[16];
    size_t body_len;
    if (sc->expect != NULL) {
        uint8_t want[256];
        size_t wn = unhex(sc->expect, want, sizeof want);
        return wn == n && memcmp(want, d, n) == 0;
    }
    if (n < AT_HEADER_LEN)
        return 0;
    at_header_unpack(d, &h);
    if (h.magic != AT_MAGIC || h.length != n - AT_HEADER_LEN ||
        h.crc != at_crc32(d + AT_HEADER_LEN, h.length) || h.seq != sc->seq)
        return 0;
    if (sc->hello) {
        uint8_t want[256];
        size_t wn = unhex(S9_HELLO_HEX, want, sizeof want);
        return wn == n && memcmp(want, d, n) == 0;
    }
    if (sc->plain)
        return h.flags == AT_FLAG_REQUEST;
    if (h.flags != (AT_FLAG_REQUEST | AT_FLAG_AUTH) || h.length < 24)
        return 0;
    body_len = h.length - 24;
    if (memcmp(d + AT_HEADER_LEN + body_len, vsession.sid, 8) != 0)
        return 0;
    at_frame_tag(vsession.k_req, d, d + AT_HEADER_LEN, body_len,
                 d + AT_HEADER_LEN + body_len, tag);
    return memcmp(tag, d + AT_HEADER_LEN + body_len + 8, 16) == 0;
}

/* Waits for fd to be readable, up to 3 s; 0 on timeout. */
static int readable(int fd)
{
    struct pollfd p;
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    return poll(&p, 1, 3000) > 0;
}

/* The child's UDP server. Exit status: 0 all requests as expected, 1 a bad
 * request, 2 datagrams differ, 3 timeout. */
static void udp_server(int fd, const script_t *sc)
{
    uint8_t first[2048], d[2048], out[1024];
    size_t first_n = 0;
    int k, j;
    for (k = 0; k < sc->requests; k++) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n;
        if (!readable(fd))
            _exit(3);
        n = recvfrom(fd, d, sizeof d, 0, (struct sockaddr *)&from, &fl);
        if (n < 0)
            _exit(3);
        if (!request_ok(sc, d, (size_t)n))
            _exit(1);
        if (k == 0) {
            memcpy(first, d, (size_t)n);
            first_n = (size_t)n;
        } else if ((size_t)n != first_n || memcmp(first, d, first_n) != 0) {
            _exit(2);
        }
        for (j = 0; k < 3 && j < 6 && sc->replies[k][j] != R_NONE; j++) {
            size_t m = make_reply(sc->replies[k][j], sc->seq, out);
            sendto(fd, out, m, 0, (struct sockaddr *)&from, fl);
        }
    }
    while (sc->linger && readable(fd)) {
        ssize_t n = recv(fd, d, sizeof d, 0);
        if (n < 0 || (size_t)n != first_n || memcmp(first, d, first_n) != 0)
            _exit(2);
    }
    _exit(0);
}

/* The child's TCP server: one connection, one request, the replies. */
static void tcp_server(int lfd, const script_t *sc)
{
    uint8_t d[2048], out[1024];
    size_t got = 0;
    int fd, j;
    if (!readable(lfd))
        _exit(3);
    fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        _exit(3);
    for (;;) {
        ssize_t n;
        at_header_t h;
        if (got >= AT_HEADER_LEN) {
            at_header_unpack(d, &h);
            if (got >= AT_HEADER_LEN + (size_t)h.length)
                break;
        }
        if (!readable(fd))
            _exit(3);
        n = recv(fd, d + got, sizeof d - got, 0);
        if (n <= 0)
            _exit(3);
        got += (size_t)n;
    }
    if (!request_ok(sc, d, got))
        _exit(1);
    for (j = 0; j < 6 && sc->replies[0][j] != R_NONE; j++) {
        size_t m = make_reply(sc->replies[0][j], sc->seq, out);
        if (send(fd, out, m, 0) != (ssize_t)m)
            _exit(3);
    }
    if (sc->answer != NULL) {
        /* The client's answer to the server's call: one plain ERROR frame
         * with the call's seq (1) and the code. */
        char want[64];
        got = 0;
        for (;;) {
            ssize_t n;
            if (got >= AT_HEADER_LEN) {
                at_header_t h;
                at_header_unpack(d, &h);
                if (got >= AT_HEADER_LEN + (size_t)h.length)
                    break;
            }
            if (!readable(fd))
                _exit(4);
            n = recv(fd, d + got, sizeof d - 1 - got, 0);
            if (n <= 0)
                _exit(4);
            got += (size_t)n;
        }
        d[got] = 0;
        snprintf(want, sizeof want, "\"code\": \"%s\"", sc->answer);
        {
            at_header_t h;
            at_header_unpack(d, &h);
            if (h.flags != AT_FLAG_ERROR || h.seq != 1 ||
                h.crc != at_crc32(d + AT_HEADER_LEN, h.length) ||
                strstr((char *)d + AT_HEADER_LEN, want) == NULL)
                _exit(5);
        }
    }
    /* Wait for the client to close, then go. */
    if (readable(fd))
        (void)recv(fd, d, sizeof d, 0);
    close(fd);
    _exit(0);
}

/* Starts a scripted server on 127.0.0.1 (a child); its port into `port`. */
static pid_t start_server(int udp, const script_t *sc, char port[8])
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    int fd = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
    pid_t pid;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        (!udp && listen(fd, 4) != 0) ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        perror("test server");
        exit(2);
    }
    snprintf(port, 8, "%u", (unsigned)ntohs(a.sin_port));
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        if (udp)
            udp_server(fd, sc);
        else
            tcp_server(fd, sc);
    }
    close(fd);
    return pid;
}

static int server_status(pid_t pid)
{
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

static at_call_opts_t fast_opts(int timeout_ms)
{
    at_call_opts_t o;
    memset(&o, 0, sizeof o);
    o.timeout_ms = timeout_ms;
    o.udp_first_wait_ms = 100;
    o.udp_max_wait_ms = 200;
    return o;
}

static uint8_t call_buf[AT_AUTH_MAX_FRAME];

/* One authenticated add(10, 20), seq 2 (the contract's request), against a
 * scripted server. */
static void call_case(const char *name, int udp, const script_t *sc0,
                      at_status_t want, unsigned want_ignored, int timeout)
{
    script_t sc = *sc0;
    at_session_t s = vsession;
    at_call_result_t res;
    at_call_opts_t o = fast_opts(timeout);
    static const char body[] = "{\"func\": \"add\", \"args\": [10, 20]}";
    char port[8];
    pid_t pid;
    at_status_t st;
    int status;

    s.seq = 1;              /* the next call is seq 2 */
    sc.seq = 2;
    sc.linger = udp;        /* late retransmissions find the port open */
    pid = start_server(udp, &sc, port);
    if (udp)
        st = at_session_call_udp("127.0.0.1", port, &s, body, strlen(body),
                                 call_buf, sizeof call_buf, &o, &res);
    else
        st = at_session_call_tcp("127.0.0.1", port, &s, body, strlen(body),
                                 call_buf, sizeof call_buf, &o, &res);
    if (sc.linger)
        kill(pid, SIGTERM);
    status = server_status(pid);
    result(st == want, "%s: %s (%s), want %s", name, at_status_str(st),
           res.detail, at_status_str(want));
    result(status == 0 || (sc.linger && status == 100),
           "%s: the server saw a bad request (status %d)", name, status);
    result(res.ignored == want_ignored, "%s: %u replies ignored, want %u",
           name, res.ignored, want_ignored);
    result(s.seq == 2 || !s.open, "%s: the session's seq is %lu, not 2",
           name, (unsigned long)s.seq);
    if (want == AT_E_TIMEOUT)
        result(strstr(res.detail, "ignored") != NULL,
               "%s: the timeout does not say why replies were ignored: %s",
               name, res.detail);
    if (want == AT_OK)
        result(st == AT_OK && (res.reply.flags & AT_FLAG_AUTH) &&
               res.reply.length == strlen(ok_body) &&
               memcmp(res.reply.body, ok_body, res.reply.length) == 0,
               "%s: the reply's body proper is not %s", name, ok_body);
    if (want == AT_E_UNAUTHORIZED) {
        at_reply_t r;
        char scratch[512];
        result(s.open == 0 && !at_session_usable(&s),
               "%s: the session survives a plain unauthorized", name);
        result(at_parse_reply(res.reply.body, res.reply.length, scratch,
                              sizeof scratch, &r) == AT_OK &&
               r.code_id == AT_CODE_UNAUTHORIZED &&
               strcmp(r.message, "unknown session") == 0,
               "%s: res->reply is not the plain unauthorized reply", name);
    } else {
        result(s.open == 1, "%s: the session was dropped", name);
    }
    if (want == AT_E_UNAUTHENTICATED)
        result(strchr(res.detail, '\n') == NULL &&
               (strstr(res.detail, "busy") != NULL ||
                strstr(res.detail, "checksum_mismatch") != NULL),
               "%s: detail \"%s\"", name, res.detail);
}

static void hello_call_case(const char *name, int udp, const script_t *sc0,
                            at_status_t want, unsigned want_ignored)
{
    script_t sc = *sc0;
    at_session_t s;
    at_call_result_t res;
    at_call_opts_t o = fast_opts(udp ? 800 : 2000);
    char port[8], hex[17];
    pid_t pid;
    at_status_t st;
    int status;

    sc.seq = 1;
    sc.hello = 1;
    sc.linger = udp;
    memset(&s, 0, sizeof s);
    pid = start_server(udp, &sc, port);
    if (udp)
        st = at_hello_udp("127.0.0.1", port, 1, &vkey, vnc, call_buf,
                          sizeof call_buf, &o, &s, &res);
    else
        st = at_hello_tcp("127.0.0.1", port, 1, &vkey, vnc, call_buf,
                          sizeof call_buf, &o, &s, &res);
    if (sc.linger)
        kill(pid, SIGTERM);
    status = server_status(pid);
    result(st == want, "%s: %s (%s), want %s", name, at_status_str(st),
           res.detail, at_status_str(want));
    result(status == 0 || (sc.linger && status == 100),
           "%s: the server saw a bad hello (status %d)", name, status);
    result(res.ignored == want_ignored, "%s: %u replies ignored, want %u",
           name, res.ignored, want_ignored);
    if (want == AT_OK) {
        tohex(s.sid, 8, hex);
        result(s.open && strcmp(hex, "c0c1c2c3c4c5c6c7") == 0 &&
               memcmp(s.k_req, vsession.k_req, 32) == 0,
               "%s: not the contract's session", name);
    } else {
        result(s.open == 0, "%s: a session was opened", name);
    }
    if (want == AT_E_REMOTE)
        result((res.reply.flags & AT_FLAG_ERROR) &&
               res.reply.length > 0, "%s: res->reply is not the error", name);
}

static void test_calls(void)
{
    /* UDP: replies that do not verify count as not received. */
    script_t ignore_then_good = {
        {{R_BAD_TAG, R_OTHER_SID, R_PLAIN_OK, R_PLAIN_INTERNAL, R_GOOD,
          R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t resend = {{{R_NONE}, {R_BAD_TAG, R_NONE}, {R_GOOD, R_NONE}},
                       0, 0, 3, 0, 0, NULL, NULL};
    script_t only_forged = {{{R_BAD_TAG, R_PLAIN_OK, R_NONE}}, 0, 0, 1, 1, 0, NULL, NULL};
    script_t unauth = {{{R_PLAIN_UNAUTH, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t busy = {{{R_PLAIN_BUSY, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t checksum = {{{R_PLAIN_CHECKSUM, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t good = {{{R_GOOD, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t bad_tag = {{{R_BAD_TAG, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t other_sid = {{{R_OTHER_SID, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t plain_ok = {{{R_PLAIN_OK, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t plain_internal = {{{R_PLAIN_INTERNAL, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t busy0 = {{{R_PLAIN_BUSY_SEQ0, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t hello_good = {{{R_HELLO_GOOD, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t hello_bad_then_good = {{{R_HELLO_BAD_PROOF, R_PLAIN_INTERNAL,
                                      R_HELLO_GOOD, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t hello_bad = {{{R_HELLO_BAD_PROOF, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};
    script_t hello_bad_good = {{{R_HELLO_BAD_PROOF, R_HELLO_GOOD, R_NONE}},
                               0, 0, 1, 0, 0, NULL, NULL};
    script_t hello_bad_linger = {{{R_HELLO_BAD_PROOF, R_NONE}}, 0, 0, 1, 1, 0, NULL, NULL};
    script_t hello_unauth = {{{R_HELLO_UNAUTH, R_NONE}}, 0, 0, 1, 0, 0, NULL, NULL};

    call_case("udp: forged replies, then the good one", 1, &ignore_then_good,
              AT_OK, 4, 2000);
    call_case("udp: retransmitted, same bytes", 1, &resend, AT_OK, 1, 3000);
    call_case("udp: only replies that do not verify", 1, &only_forged,
              AT_E_TIMEOUT, 2, 700);
    call_case("udp: plain unauthorized", 1, &unauth, AT_E_UNAUTHORIZED, 0,
              2000);
    call_case("udp: plain busy", 1, &busy, AT_E_UNAUTHENTICATED, 0, 2000);
    call_case("udp: plain checksum_mismatch", 1, &checksum,
              AT_E_UNAUTHENTICATED, 0, 2000);

    call_case("tcp: good reply", 0, &good, AT_OK, 0, 2000);
    call_case("tcp: bad tag", 0, &bad_tag, AT_E_AUTH, 0, 2000);
    call_case("tcp: another session's reply", 0, &other_sid, AT_E_AUTH, 0,
              2000);
    call_case("tcp: plain success", 0, &plain_ok, AT_E_AUTH, 0, 2000);
    call_case("tcp: plain internal", 0, &plain_internal, AT_E_AUTH, 0, 2000);
    call_case("tcp: plain unauthorized", 0, &unauth, AT_E_UNAUTHORIZED, 0,
              2000);
    call_case("tcp: plain checksum_mismatch", 0, &checksum,
              AT_E_UNAUTHENTICATED, 0, 2000);
    call_case("tcp: plain busy with seq 0", 0, &busy0, AT_E_UNAUTHENTICATED,
              0, 2000);

    hello_call_case("udp hello: good", 1, &hello_good, AT_OK, 0);
    hello_call_case("udp hello: a bad proof ignored, then an error reply", 1,
                    &hello_bad_then_good, AT_E_REMOTE, 1);
    hello_call_case("udp hello: a bad proof ignored, then the good reply", 1,
                    &hello_bad_good, AT_OK, 1);
    hello_call_case("udp hello: only a bad proof", 1, &hello_bad_linger,
                    AT_E_TIMEOUT, 1);
    hello_call_case("udp hello: unauthorized", 1, &hello_unauth, AT_E_REMOTE,
                    0);
    hello_call_case("tcp hello: good", 0, &hello_good, AT_OK, 0);
    hello_call_case("tcp hello: bad proof", 0, &hello_bad, AT_E_BAD_PROOF, 0);
    hello_call_case("tcp hello: unauthorized", 0, &hello_unauth, AT_E_REMOTE,
                    0);

    /* No usable session: nothing is sent. */
    {
        at_session_t s;
        at_call_result_t res;
        at_call_opts_t o = fast_opts(500);
        memset(&s, 0, sizeof s);
        result(at_session_call_tcp("127.0.0.1", "9", &s, "{}", 2, call_buf,
                                   sizeof call_buf, &o, &res) == AT_E_ARG,
               "a call without a session");
        s = vsession;
        s.seq = UINT32_MAX;
        result(!at_session_usable(&s) &&
               at_session_call_udp("127.0.0.1", "9", &s, "{}", 2, call_buf,
                                   sizeof call_buf, &o, &res) == AT_E_ARG,
               "a call after seq 0xFFFFFFFF");
        s = vsession;
        s.last_ms -= AT_SESSION_IDLE_MS;
        result(!at_session_usable(&s), "a session idle for 5 minutes");
    }
}

/* Section 10: a plain add(10, 20) with `seq` against a scripted server;
 * what it should find. */
static void plain_call_case(const char *name, int udp, const script_t *sc0,
                            at_status_t want, unsigned want_ignored)
{
    script_t sc = *sc0;
    at_call_result_t res;
    at_call_opts_t o = fast_opts(2000);
    static const char body[] = "{\"func\": \"add\", \"args\": [10, 20]}";
    char port[8];
    pid_t pid;
    at_status_t st;
    int status;

    sc.seq = 0x51;
    sc.plain = 1;
    sc.linger = udp;
    pid = start_server(udp, &sc, port);
    if (udp)
        st = at_call_udp("127.0.0.1", port, sc.seq, body, strlen(body),
                         call_buf, sizeof call_buf, &o, &res);
    else
        st = at_call_tcp("127.0.0.1", port, sc.seq, body, strlen(body),
                         call_buf, sizeof call_buf, &o, &res);
    if (sc.linger)
        kill(pid, SIGTERM);
    status = server_status(pid);
    result(st == want, "%s: %s (%s), want %s", name, at_status_str(st),
           res.detail, at_status_str(want));
    result(status == 0 || (sc.linger && status == 100),
           "%s: the server saw a bad request (status %d)", name, status);
    result(res.ignored == want_ignored, "%s: %u frames dropped, want %u",
           name, res.ignored, want_ignored);
    if (want == AT_E_TIMEOUT)
        result(strstr(res.detail, "another seq") != NULL,
               "%s: the timeout does not say what was dropped: %s", name,
               res.detail);
    if (want == AT_OK)
        result(st == AT_OK && res.reply.seq == sc.seq &&
               res.reply.flags == AT_FLAG_RESPONSE &&
               res.reply.length == strlen(ok_body) &&
               memcmp(res.reply.body, ok_body, res.reply.length) == 0,
               "%s: the reply is not the awaited one", name);
}

/* Section 10.2: a notification goes out as exactly the vector's frame,
 * and nothing is awaited (the scripted server answers nothing). */
static void notify_case(const char *name, int udp, int sealed)
{
    script_t sc;
    at_call_result_t res;
    at_call_opts_t o = fast_opts(2000);
    at_session_t s = vsession;
    static const char body[] = N1_BODY;
    char port[8];
    pid_t pid;
    at_status_t st;
    int status;

    memset(&sc, 0, sizeof sc);
    sc.requests = 1;
    sc.seq = 7;
    sc.expect = sealed ? X3_HEX : N1_HEX;
    pid = start_server(udp, &sc, port);
    if (sealed) {
        s.seq = 6;          /* the next seq of the session is 7 */
        st = at_session_notify(udp, "127.0.0.1", port, &s, body,
                               strlen(body), &o, &res);
    } else {
        st = at_notify(udp, "127.0.0.1", port, 7, body, strlen(body), &o,
                       &res);
    }
    status = server_status(pid);
    result(st == AT_OK, "%s: %s (%s)", name, at_status_str(st), res.detail);
    result(status == 0, "%s: the server did not get the vector's frame "
           "(status %d)", name, status);
    if (sealed)
        result(s.seq == 7 && s.open, "%s: the session's seq is %lu, not 7",
               name, (unsigned long)s.seq);
}

static void test_section10_calls(void)
{
    script_t chatty = {{{R_EVENT, R_EVENT_SEALED, R_NOTIFY_CALL,
                         R_GOOD_OTHER_SEQ, R_PLAIN_OK_OTHER_SEQ, R_GOOD}},
                       0, 0, 1, 0, 0, NULL, NULL};
    script_t calls_back = {{{R_SERVER_CALL_SEALED, R_SERVER_CALL, R_EVENT,
                             R_GOOD, R_NONE}}, 0, 0, 1, 0, 0, NULL,
                           "unauthorized"};
    script_t plain_chatty = {{{R_EVENT, R_PLAIN_OK_OTHER_SEQ, R_NOTIFY_CALL,
                               R_SERVER_CALL, R_PLAIN_OK, R_NONE}},
                             0, 0, 1, 0, 0, NULL, NULL};
    script_t only_events = {{{R_EVENT, R_PLAIN_OK_OTHER_SEQ, R_NONE}},
                            0, 0, 1, 0, 0, NULL, NULL};
    at_session_t s = vsession;
    uint8_t f[256];
    size_t n;
    at_frame_t inner;
    const char *why = NULL;

    /* Authenticated calls: events (plain and sealed), a notification and
     * replies to other seqs (sealed and plain) are dropped. */
    call_case("tcp: events, a notification, stray replies, then the reply",
              0, &chatty, AT_OK, 5, 2000);
    call_case("udp: events, a notification, stray replies, then the reply",
              1, &chatty, AT_OK, 5, 2000);
    /* Calls from the server (10.5, 10.6): a plain one answered
     * unauthorized (the client holds a key), a sealed one dropped. */
    call_case("tcp: the server's calls, then the reply", 0, &calls_back,
              AT_OK, 3, 2000);
    call_case("udp: the server's calls, then the reply", 1, &calls_back,
              AT_OK, 3, 2000);
    /* Plain calls. */
    plain_call_case("tcp plain: an event, a stray reply, a notification, "
                    "a call, then the reply", 0, &plain_chatty, AT_OK, 4);
    plain_call_case("udp plain: an event, a stray reply, a notification, "
                    "a call, then the reply", 1, &plain_chatty, AT_OK, 4);
    {
        script_t answered = plain_chatty;
        answered.answer = "unknown_function";
        plain_call_case("tcp plain: the server's call answered "
                        "unknown_function", 0, &answered, AT_OK, 4);
    }
    /* Only frames to drop: the call times out (not failing on what it
     * dropped), and says what it last dropped. */
    plain_call_case("tcp plain: only an event and a stray reply", 0,
                    &only_events, AT_E_TIMEOUT, 2);

    /* What one frame is, for a client session: a NOTIFY is no reply. */
    at_seal_frame(AT_FLAG_NOTIFY | AT_FLAG_AUTH, 1, E1_BODY, strlen(E1_BODY),
                  s.k_rep, s.sid, f, sizeof f, &n);
    result(at_session_verify_frame(&s, f, n, 1, &inner, &why) ==
           AT_E_NOT_REPLY, "a sealed event taken for a reply");

    notify_case("tcp: plain notification is vector N1", 0, 0);
    notify_case("udp: plain notification is vector N1", 1, 0);
    notify_case("tcp: sealed notification is vector X3", 0, 1);
    notify_case("udp: sealed notification is vector X3", 1, 1);
}

static void test_random(void)
{
    uint8_t a[16], b[16];
    result(at_random_bytes(a, sizeof a) == AT_OK &&
           at_random_bytes(b, sizeof b) == AT_OK && memcmp(a, b, 16) != 0,
           "at_random_bytes gives two different nonces");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setup_vectors();
    test_handshake_vector();
    test_request_vector("add(10, 20) seq 2", "add", "10", "20", 2,
                        S9_ADD_REQUEST_HEX);
    test_request_vector("div(1, 0) seq 3", "div", "1", "0", 3,
                        S9_DIV_REQUEST_HEX);
    test_reply_vector("add(10, 20) reply seq 2", S9_ADD_REPLY_HEX, 2, 0x000a,
                      "{\"status\": \"success\", \"result\": 30}");
    test_reply_vector("div(1, 0) error reply seq 3", S9_DIV_REPLY_HEX, 3, 0x000c,
                      "{\"status\": \"error\", \"code\": \"division_by_zero\""
                      ", \"message\": \"division by zero\"}");
    test_verify_misc();
    test_hello_replies();
    test_key_parse();
    test_key_files();
    test_random();
    test_calls();
    test_section10_calls();
    at_key_wipe(&vkey);
    return test_summary();
}
