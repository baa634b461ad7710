/*
 * test_crypto - tests of at_crypto: SHA-256 (FIPS 180-2 vectors), HMAC-SHA-256
 * (RFC 4231 cases 1-7), HKDF-SHA-256 (RFC 5869 cases 1-3), incremental
 * hashing at every split point, the constant-time compare, and the section-9
 * vectors of the AT contract: K_req, K_rep, the hello proof, and the tags and
 * CRCs of its authenticated frames.
 *
 *   test_crypto
 *
 * Prints "N passed, M failed" last; exits 1 on any failure.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "test_check.h"
#include "at_crypto.h"
#include "at_protocol.h"
#include "section9_vectors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Checks that the `len` bytes at `got` are the hex string `want`. */
static void check_hex(const char *what, const uint8_t *got, size_t len,
                      const char *want)
{
    char h[2 * 8192 + 1];
    if (len > 8192) {
        result(0, "%s: output too long to compare", what);
        return;
    }
    tohex(got, len, h);
    result(strcmp(h, want) == 0, "%s:\n  got  %s\n  want %s", what, h, want);
}

/* ------------------------------------------------------------------------ */
/* SHA-256                                                                  */
/* ------------------------------------------------------------------------ */

static const char msg448[] =
    "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
static const char msg896[] =
    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
    "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";

static uint8_t million[1000000];

static void test_sha256(void)
{
    uint8_t d[32];
    at_sha256_t c;
    size_t i;

    at_sha256(NULL, 0, d);
    check_hex("SHA-256 of the empty string", d, 32,
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    at_sha256("abc", 3, d);
    check_hex("SHA-256 \"abc\"", d, 32,
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    at_sha256(msg448, strlen(msg448), d);
    check_hex("SHA-256 448-bit message", d, 32,
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    at_sha256(msg896, strlen(msg896), d);
    check_hex("SHA-256 896-bit message", d, 32,
              "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");

    memset(million, 'a', sizeof million);
    at_sha256(million, sizeof million, d);
    check_hex("SHA-256 one million 'a', one-shot", d, 32,
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* Again in uneven pieces (997 does not divide 64 or 10^6). */
    at_sha256_init(&c);
    for (i = 0; i < sizeof million; i += 997)
        at_sha256_update(&c, million + i,
                         sizeof million - i < 997 ? sizeof million - i : 997);
    at_sha256_final(&c, d);
    check_hex("SHA-256 one million 'a', in 997-byte pieces", d, 32,
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Every way to cut `msg` in two and three pieces, and byte by byte, must
 * give the one-shot digest. One check per kind of cut. */
static void test_sha256_splits(const char *name, const uint8_t *msg,
                               size_t len)
{
    uint8_t want[32], got[32];
    at_sha256_t c;
    size_t i, j;
    int bad = -1, bad_j = -1;

    at_sha256(msg, len, want);

    for (i = 0; i <= len && bad < 0; i++) {
        at_sha256_init(&c);
        at_sha256_update(&c, msg, i);
        at_sha256_update(&c, msg + i, len - i);
        at_sha256_final(&c, got);
        if (memcmp(got, want, 32) != 0)
            bad = (int)i;
    }
    result(bad < 0, "SHA-256 %s: two pieces split at %d differ from one-shot",
           name, bad);

    bad = -1;
    for (i = 0; i <= len && bad < 0; i++)
        for (j = i; j <= len && bad < 0; j++) {
            at_sha256_init(&c);
            at_sha256_update(&c, msg, i);
            at_sha256_update(&c, msg + i, j - i);
            at_sha256_update(&c, msg + j, len - j);
            at_sha256_final(&c, got);
            if (memcmp(got, want, 32) != 0) {
                bad = (int)i;
                bad_j = (int)j;
            }
        }
    result(bad < 0, "SHA-256 %s: three pieces split at %d, %d differ", name,
           bad, bad_j);

    at_sha256_init(&c);
    for (i = 0; i < len; i++)
        at_sha256_update(&c, msg + i, 1);
    at_sha256_final(&c, got);
    result(memcmp(got, want, 32) == 0, "SHA-256 %s: byte by byte differs",
           name);
}

/* Messages of every length from 0 to 200 bytes (all padding cases), whole
 * and byte by byte, must agree. */
static void test_sha256_lengths(void)
{
    uint8_t msg[200], a[32], b[32];
    at_sha256_t c;
    size_t len, i;
    int bad = -1;

    for (i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7 + 1);
    for (len = 0; len <= sizeof msg && bad < 0; len++) {
        at_sha256(msg, len, a);
        at_sha256_init(&c);
        for (i = 0; i < len; i++)
            at_sha256_update(&c, msg + i, 1);
        at_sha256_final(&c, b);
        if (memcmp(a, b, 32) != 0)
            bad = (int)len;
    }
    result(bad < 0, "SHA-256: length %d, byte by byte differs from one-shot",
           bad);
}

/* ------------------------------------------------------------------------ */
/* HMAC-SHA-256: RFC 4231                                                   */
/* ------------------------------------------------------------------------ */

static const char rfc4231_data7[] =
    "This is a test using a larger than block-size key and a larger than "
    "block-size data. The key needs to be hashed before being used by the "
    "HMAC algorithm.";

static void test_hmac(void)
{
    uint8_t key[131], data[64], mac[32];
    size_t i;

    /* 1 */
    memset(key, 0x0b, 20);
    at_hmac_sha256(key, 20, "Hi There", 8, mac);
    check_hex("RFC 4231 case 1", mac, 32,
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    /* 2 */
    at_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
    check_hex("RFC 4231 case 2", mac, 32,
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* 3 */
    memset(key, 0xaa, 20);
    memset(data, 0xdd, 50);
    at_hmac_sha256(key, 20, data, 50, mac);
    check_hex("RFC 4231 case 3", mac, 32,
              "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    /* 4 */
    for (i = 0; i < 25; i++)
        key[i] = (uint8_t)(i + 1);
    memset(data, 0xcd, 50);
    at_hmac_sha256(key, 25, data, 50, mac);
    check_hex("RFC 4231 case 4", mac, 32,
              "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    /* 5: truncated to 128 bits */
    memset(key, 0x0c, 20);
    at_hmac_sha256(key, 20, "Test With Truncation", 20, mac);
    check_hex("RFC 4231 case 5 (128 bits)", mac, 16,
              "a3b6167473100ee06e0c796c2955552b");
    /* 6 */
    memset(key, 0xaa, 131);
    at_hmac_sha256(key, 131,
                   "Test Using Larger Than Block-Size Key - Hash Key First",
                   54, mac);
    check_hex("RFC 4231 case 6", mac, 32,
              "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    /* 7 */
    at_hmac_sha256(key, 131, rfc4231_data7, strlen(rfc4231_data7), mac);
    check_hex("RFC 4231 case 7", mac, 32,
              "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

/* Case 7's data (152 bytes, over two blocks) cut in two at every point must
 * give the same MAC. */
static void test_hmac_splits(void)
{
    uint8_t key[131], want[32], got[32];
    const uint8_t *msg = (const uint8_t *)rfc4231_data7;
    size_t len = strlen(rfc4231_data7), i;
    at_hmac_sha256_t c;
    int bad = -1;

    memset(key, 0xaa, sizeof key);
    at_hmac_sha256(key, sizeof key, msg, len, want);
    for (i = 0; i <= len && bad < 0; i++) {
        at_hmac_sha256_init(&c, key, sizeof key);
        at_hmac_sha256_update(&c, msg, i);
        at_hmac_sha256_update(&c, msg + i, len - i);
        at_hmac_sha256_final(&c, got);
        if (memcmp(got, want, 32) != 0)
            bad = (int)i;
    }
    result(bad < 0, "HMAC-SHA-256: two pieces split at %d differ", bad);
}

/* ------------------------------------------------------------------------ */
/* HKDF-SHA-256: RFC 5869                                                   */
/* ------------------------------------------------------------------------ */

static void test_hkdf(void)
{
    uint8_t ikm[80], salt[80], info[80], prk[32], okm[AT_HKDF_MAX_OUT + 1];
    uint8_t zeros[32], prk2[32], okm42[42];
    size_t i;

    /* Case 1 */
    memset(ikm, 0x0b, 22);
    for (i = 0; i < 13; i++)
        salt[i] = (uint8_t)i;
    for (i = 0; i < 10; i++)
        info[i] = (uint8_t)(0xf0 + i);
    at_hkdf_sha256_extract(salt, 13, ikm, 22, prk);
    check_hex("RFC 5869 case 1 PRK", prk, 32,
              "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5");
    result(at_hkdf_sha256_expand(prk, 32, info, 10, okm, 42) == 0,
           "RFC 5869 case 1 expand failed");
    check_hex("RFC 5869 case 1 OKM", okm, 42,
              "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
              "34007208d5b887185865");

    /* Case 2 */
    for (i = 0; i < 80; i++) {
        ikm[i] = (uint8_t)i;
        salt[i] = (uint8_t)(0x60 + i);
        info[i] = (uint8_t)(0xb0 + i);
    }
    at_hkdf_sha256_extract(salt, 80, ikm, 80, prk);
    check_hex("RFC 5869 case 2 PRK", prk, 32,
              "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244");
    result(at_hkdf_sha256_expand(prk, 32, info, 80, okm, 82) == 0,
           "RFC 5869 case 2 expand failed");
    check_hex("RFC 5869 case 2 OKM", okm, 82,
              "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
              "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
              "cc30c58179ec3e87c14c01d5c1f3434f1d87");

    /* Case 3: no salt, no info */
    memset(ikm, 0x0b, 22);
    at_hkdf_sha256_extract(NULL, 0, ikm, 22, prk);
    check_hex("RFC 5869 case 3 PRK", prk, 32,
              "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04");
    result(at_hkdf_sha256_expand(prk, 32, NULL, 0, okm, 42) == 0,
           "RFC 5869 case 3 expand failed");
    check_hex("RFC 5869 case 3 OKM", okm, 42,
              "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
              "9d201395faa4b61a96c8");

    /* An absent salt is HashLen zero bytes (RFC 5869, 2.2). */
    memset(zeros, 0, sizeof zeros);
    at_hkdf_sha256_extract(zeros, sizeof zeros, ikm, 22, prk2);
    result(memcmp(prk, prk2, 32) == 0,
           "HKDF: empty salt and 32 zero bytes give different PRKs");

    /* Output length limits: 255 blocks at most, and a prefix property. */
    memcpy(okm42, okm, 42);
    memset(okm, 0x5a, sizeof okm);
    result(at_hkdf_sha256_expand(prk, 32, NULL, 0, okm,
                                 AT_HKDF_MAX_OUT + 1) == -1 &&
           okm[0] == 0x5a && okm[AT_HKDF_MAX_OUT] == 0x5a,
           "HKDF: 255 * 32 + 1 bytes not refused, or output written");
    result(at_hkdf_sha256_expand(prk, 32, NULL, 0, okm, AT_HKDF_MAX_OUT) == 0 &&
           memcmp(okm, okm42, 42) == 0 && okm[AT_HKDF_MAX_OUT] == 0x5a,
           "HKDF: 255 * 32 bytes refused, not a prefix of case 3, or overrun");
    memset(okm, 0x5a, sizeof okm);
    result(at_hkdf_sha256_expand(prk, 32, NULL, 0, okm, 0) == 0 &&
           okm[0] == 0x5a, "HKDF: 0 bytes of output not accepted as no-op");
}

/* ------------------------------------------------------------------------ */
/* Constant-time compare                                                    */
/* ------------------------------------------------------------------------ */

static void test_ct_equal(void)
{
    uint8_t a[16], b[16];
    int i, bit, bad = -1;

    for (i = 0; i < 16; i++)
        a[i] = b[i] = (uint8_t)(0xc0 + i);
    result(at_ct_equal(a, b, 16) == 1, "at_ct_equal: equal buffers not 1");
    result(at_ct_equal(a, b, 0) == 1, "at_ct_equal: empty buffers not 1");
    result(at_ct_equal(NULL, NULL, 0) == 1, "at_ct_equal: NULL, 0 not 1");
    for (i = 0; i < 16 && bad < 0; i++)
        for (bit = 0; bit < 8 && bad < 0; bit++) {
            b[i] ^= (uint8_t)(1u << bit);
            if (at_ct_equal(a, b, 16) != 0)
                bad = i * 8 + bit;
            b[i] ^= (uint8_t)(1u << bit);
        }
    result(bad < 0, "at_ct_equal: a difference in bit %d not seen", bad);
    b[15] = (uint8_t)~a[15];
    result(at_ct_equal(a, b, 15) == 1 && at_ct_equal(a, b, 16) == 0,
           "at_ct_equal: compared past len, or missed the last byte");
}

/* ------------------------------------------------------------------------ */
/* AT section 9                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    int is_request;     /* tagged under K_req, else K_rep */
    uint16_t flags;
    const char *hex;
} auth_frame_t;

static const auth_frame_t auth_frames[] = {
    {"add(10, 20) request, seq 2", 1, 0x0009,
     S9_ADD_REQUEST_HEX},
    {"add(10, 20) reply, seq 2", 0, 0x000a,
     S9_ADD_REPLY_HEX},
    {"div(1, 0) request, seq 3", 1, 0x0009,
     S9_DIV_REQUEST_HEX},
    {"div(1, 0) error reply, seq 3", 0, 0x000c,
     S9_DIV_REPLY_HEX},
};

static uint8_t key[32], nc[16], ns[16], sid[8], k_req[32], k_rep[32];

static void section9_inputs(void)
{
    int i;
    for (i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    for (i = 0; i < 16; i++) {
        nc[i] = (uint8_t)(0xa0 + i);
        ns[i] = (uint8_t)(0xb0 + i);
    }
    for (i = 0; i < 8; i++)
        sid[i] = (uint8_t)(0xc0 + i);
}

static void test_section9_keys(void)
{
    uint8_t salt[32], prk[32], info[20], k[32], proof[16], want[16];

    at_derive_keys(key, "demo", 4, nc, ns, k_req, k_rep);
    check_hex("section 9 K_req", k_req, 32, S9_K_REQ_HEX);
    check_hex("section 9 K_rep", k_rep, 32, S9_K_REP_HEX);

    /* The same from the primitives, spelled out as in the contract. */
    memcpy(salt, nc, 16);
    memcpy(salt + 16, ns, 16);
    at_hkdf_sha256_extract(salt, 32, key, 32, prk);
    memcpy(info, "AT1 requestdemo", 15);
    at_hkdf_sha256_expand(prk, 32, info, 15, k, 32);
    result(memcmp(k, k_req, 32) == 0,
           "section 9: K_req differs from HKDF spelled out");
    memcpy(info, "AT1 replydemo", 13);
    at_hkdf_sha256_expand(prk, 32, info, 13, k, 32);
    result(memcmp(k, k_rep, 32) == 0,
           "section 9: K_rep differs from HKDF spelled out");

    at_hello_proof(k_rep, sid, proof);
    check_hex("section 9 hello proof P", proof, 16, S9_PROOF_HEX);
    unhex(S9_PROOF_HEX, want, sizeof want);
    result(at_ct_equal(proof, want, 16) == 1,
           "section 9: at_ct_equal rejects the right proof");
    at_hello_proof(k_req, sid, proof);
    result(at_ct_equal(proof, want, 16) == 0,
           "section 9: a proof under K_req matches the one under K_rep");
}

/* The length and CRC of a whole frame of `n` bytes. */
static int frame_length_and_crc_ok(const uint8_t *f, size_t n)
{
    at_header_t h;
    if (n < AT_HEADER_LEN)
        return 0;
    at_header_unpack(f, &h);
    return h.magic == AT_MAGIC && h.length == n - AT_HEADER_LEN &&
           h.crc == at_crc32(f + AT_HEADER_LEN, h.length);
}

static void test_auth_frame(const auth_frame_t *af)
{
    uint8_t f[256], tag[16];
    size_t n = unhex(af->hex, f, sizeof f), body_len;
    const uint8_t *k = af->is_request ? k_req : k_rep;
    const uint8_t *other = af->is_request ? k_rep : k_req;
    at_header_t h;

    at_header_unpack(f, &h);
    result(n >= AT_HEADER_LEN + 24 && h.flags == af->flags &&
           (h.flags & 0x0008u) != 0,
           "%s: not an AUTH frame with flags 0x%04x", af->name, af->flags);
    result(frame_length_and_crc_ok(f, n),
           "%s: length or CRC-32 (over body, SID and tag) wrong", af->name);
    if (n < AT_HEADER_LEN + 24)
        return;
    body_len = n - AT_HEADER_LEN - 24;
    result(memcmp(f + n - 24, sid, 8) == 0, "%s: SID is not c0..c7",
           af->name);

    /* Tag over H (the first 12 header bytes) || body || SID, as received. */
    at_frame_tag(k, f, f + AT_HEADER_LEN, body_len, f + n - 24, tag);
    result(at_ct_equal(tag, f + n - 16, 16) == 1,
           "%s: recomputed tag differs from the frame's", af->name);

    /* The wrong role's key, a changed body or header byte: no match. */
    at_frame_tag(other, f, f + AT_HEADER_LEN, body_len, f + n - 24, tag);
    result(at_ct_equal(tag, f + n - 16, 16) == 0,
           "%s: tag verifies under the other direction's key", af->name);
    f[AT_HEADER_LEN] ^= 1;
    at_frame_tag(k, f, f + AT_HEADER_LEN, body_len, f + n - 24, tag);
    f[AT_HEADER_LEN] ^= 1;
    result(at_ct_equal(tag, f + n - 16, 16) == 0,
           "%s: tag verifies with a changed body", af->name);
    f[3] ^= 0x80;   /* a reserved flag bit: covered as it stands */
    at_frame_tag(k, f, f + AT_HEADER_LEN, body_len, f + n - 24, tag);
    f[3] ^= 0x80;
    result(at_ct_equal(tag, f + n - 16, 16) == 0,
           "%s: tag verifies with a changed reserved flag bit", af->name);
}

static void test_hello_reply(void)
{
    uint8_t f[256];
    size_t n = unhex(S9_HELLO_REPLY_HEX, f, sizeof f);
    static const char member[] = "\"proof\": \"";
    size_t i, m = sizeof member - 1;
    int found = 0;

    result(frame_length_and_crc_ok(f, n),
           "hello reply: length or CRC-32 wrong");
    for (i = AT_HEADER_LEN; i + m + 32 <= n; i++)
        if (memcmp(f + i, member, m) == 0) {
            found = memcmp(f + i + m, S9_PROOF_HEX, 32) == 0;
            break;
        }
    result(found, "hello reply: its \"proof\" is not P");
}

int main(void)
{
    size_t i;

    test_sha256();
    test_sha256_splits("448-bit message", (const uint8_t *)msg448,
                       strlen(msg448));
    test_sha256_splits("896-bit message", (const uint8_t *)msg896,
                       strlen(msg896));
    test_sha256_lengths();
    test_hmac();
    test_hmac_splits();
    test_hkdf();
    test_ct_equal();

    section9_inputs();
    test_section9_keys();
    for (i = 0; i < sizeof auth_frames / sizeof auth_frames[0]; i++)
        test_auth_frame(&auth_frames[i]);
    test_hello_reply();

    return test_summary();
}
