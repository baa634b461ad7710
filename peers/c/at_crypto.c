/*
 * at_crypto.c - SHA-256, HMAC-SHA-256, HKDF-SHA-256 and the AT section-9
 * helpers. See at_crypto.h. Bytes are assembled into words by shifts, never
 * by casts, so the code is independent of byte order and alignment.
 */
#include "at_crypto.h"

#include <string.h>

/* Overwrites `len` bytes with zeros through a volatile pointer, so that the
 * compiler keeps the stores even when the memory is dead afterwards. */
static void wipe(void *p, size_t len)
{
    volatile uint8_t *v = (volatile uint8_t *)p;
    while (len--)
        *v++ = 0;
}

/* ======================================================================== */
/* SHA-256 (FIPS 180-4, section 6.2)                                        */
/* ======================================================================== */

/* The first 32 bits of the fractional parts of the cube roots of the first
 * 64 primes (FIPS 180-4, 4.2.2). */
static const uint32_t K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u,
    0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u,
    0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu,
    0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u,
    0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u,
    0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u,
    0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u,
    0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

static uint32_t rotr(uint32_t x, unsigned n)
{
    return (uint32_t)((x >> n) | (x << (32u - n)));
}

static uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Processes one 64-byte block into the chaining state `h`. */
static void sha256_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, hh, t1, t2;
    int i;

    for (i = 0; i < 16; i++)
        w[i] = load_be32(p + 4 * i);
    for (i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^
                      (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^
                      (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }

    a = h[0]; b = h[1]; c = h[2]; d = h[3];
    e = h[4]; f = h[5]; g = h[6]; hh = h[7];
    for (i = 0; i < 64; i++) {
        t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) +
             ((e & f) ^ (~e & g)) + K[i] + w[i];
        t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) +
             ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    wipe(w, sizeof w);
}

void at_sha256_init(at_sha256_t *c)
{
    /* The first 32 bits of the fractional parts of the square roots of the
     * first 8 primes (FIPS 180-4, 5.3.3). */
    static const uint32_t iv[8] = {
        0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
        0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
    };
    memcpy(c->h, iv, sizeof iv);
    c->bytes = 0;
    c->fill = 0;
}

void at_sha256_update(at_sha256_t *c, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;

    if (len == 0)
        return;                 /* data may be NULL */
    c->bytes += len;
    if (c->fill > 0) {
        size_t n = AT_SHA256_BLOCK - c->fill;
        if (n > len)
            n = len;
        memcpy(c->buf + c->fill, p, n);
        c->fill += n;
        p += n;
        len -= n;
        if (c->fill < AT_SHA256_BLOCK)
            return;
        sha256_block(c->h, c->buf);
        c->fill = 0;
    }
    for (; len >= AT_SHA256_BLOCK; p += AT_SHA256_BLOCK, len -= AT_SHA256_BLOCK)
        sha256_block(c->h, p);
    if (len > 0) {
        memcpy(c->buf, p, len);
        c->fill = len;
    }
}

void at_sha256_final(at_sha256_t *c, uint8_t out[AT_SHA256_LEN])
{
    uint64_t bits = c->bytes << 3;  /* the length mod 2^64, as FIPS says */
    unsigned i;

    /* Padding: 0x80, zeros up to 56 mod 64, then the bit length as a
     * 64-bit big-endian integer. */
    c->buf[c->fill++] = 0x80;
    if (c->fill > AT_SHA256_BLOCK - 8) {
        memset(c->buf + c->fill, 0, AT_SHA256_BLOCK - c->fill);
        sha256_block(c->h, c->buf);
        c->fill = 0;
    }
    memset(c->buf + c->fill, 0, AT_SHA256_BLOCK - 8 - c->fill);
    for (i = 0; i < 8; i++)
        c->buf[AT_SHA256_BLOCK - 8 + i] = (uint8_t)(bits >> (56u - 8u * i));
    sha256_block(c->h, c->buf);

    for (i = 0; i < 8; i++)
        store_be32(out + 4 * i, c->h[i]);
    wipe(c, sizeof *c);
}

void at_sha256(const void *data, size_t len, uint8_t out[AT_SHA256_LEN])
{
    at_sha256_t c;
    at_sha256_init(&c);
    at_sha256_update(&c, data, len);
    at_sha256_final(&c, out);
}

/* ======================================================================== */
/* HMAC-SHA-256 (RFC 2104)                                                  */
/* ======================================================================== */

void at_hmac_sha256_init(at_hmac_sha256_t *c, const void *key, size_t key_len)
{
    uint8_t k0[AT_SHA256_BLOCK], pad[AT_SHA256_BLOCK];
    size_t i;

    /* K0: the key, hashed if longer than a block, padded with zeros. */
    memset(k0, 0, sizeof k0);
    if (key_len > AT_SHA256_BLOCK)
        at_sha256(key, key_len, k0);
    else if (key_len > 0)
        memcpy(k0, key, key_len);

    for (i = 0; i < AT_SHA256_BLOCK; i++)
        pad[i] = (uint8_t)(k0[i] ^ 0x36u);
    at_sha256_init(&c->inner);
    at_sha256_update(&c->inner, pad, sizeof pad);

    for (i = 0; i < AT_SHA256_BLOCK; i++)
        pad[i] = (uint8_t)(k0[i] ^ 0x5cu);
    at_sha256_init(&c->outer);
    at_sha256_update(&c->outer, pad, sizeof pad);

    wipe(k0, sizeof k0);
    wipe(pad, sizeof pad);
}

void at_hmac_sha256_update(at_hmac_sha256_t *c, const void *data, size_t len)
{
    at_sha256_update(&c->inner, data, len);
}

void at_hmac_sha256_final(at_hmac_sha256_t *c, uint8_t out[AT_SHA256_LEN])
{
    uint8_t ih[AT_SHA256_LEN];

    at_sha256_final(&c->inner, ih);
    at_sha256_update(&c->outer, ih, sizeof ih);
    at_sha256_final(&c->outer, out);
    wipe(ih, sizeof ih);
}

void at_hmac_sha256(const void *key, size_t key_len, const void *data,
                    size_t len, uint8_t out[AT_SHA256_LEN])
{
    at_hmac_sha256_t c;
    at_hmac_sha256_init(&c, key, key_len);
    at_hmac_sha256_update(&c, data, len);
    at_hmac_sha256_final(&c, out);
}

/* ======================================================================== */
/* HKDF-SHA-256 (RFC 5869)                                                  */
/* ======================================================================== */

void at_hkdf_sha256_extract(const void *salt, size_t salt_len,
                            const void *ikm, size_t ikm_len,
                            uint8_t prk[AT_SHA256_LEN])
{
    /* A missing salt is HashLen zeros; as an HMAC key, zero padding makes
     * that the same as an empty key, so nothing special is needed. */
    at_hmac_sha256(salt, salt_len, ikm, ikm_len, prk);
}

/* HKDF-Expand with info = info1 || info2, so that a label and a kid need
 * not be copied together. `prk` is read before `out` is written, so the two
 * may overlap. */
static int hkdf_expand2(const void *prk, size_t prk_len,
                        const void *info1, size_t info1_len,
                        const void *info2, size_t info2_len,
                        uint8_t *out, size_t out_len)
{
    at_hmac_sha256_t keyed, c;
    uint8_t t[AT_SHA256_LEN];
    uint8_t counter = 0;
    size_t done = 0;

    if (out_len > AT_HKDF_MAX_OUT)
        return -1;
    at_hmac_sha256_init(&keyed, prk, prk_len);
    while (done < out_len) {
        size_t n = out_len - done;
        c = keyed;                      /* HMAC(PRK, ...) without rekeying */
        if (counter > 0)
            at_hmac_sha256_update(&c, t, sizeof t);     /* T(i-1) */
        at_hmac_sha256_update(&c, info1, info1_len);
        at_hmac_sha256_update(&c, info2, info2_len);
        counter++;
        at_hmac_sha256_update(&c, &counter, 1);
        at_hmac_sha256_final(&c, t);
        if (n > sizeof t)
            n = sizeof t;
        memcpy(out + done, t, n);
        done += n;
    }
    wipe(&keyed, sizeof keyed);
    wipe(t, sizeof t);
    return 0;
}

int at_hkdf_sha256_expand(const void *prk, size_t prk_len,
                          const void *info, size_t info_len,
                          uint8_t *out, size_t out_len)
{
    return hkdf_expand2(prk, prk_len, info, info_len, NULL, 0, out, out_len);
}

/* ======================================================================== */
/* Constant-time comparison                                                 */
/* ======================================================================== */

int at_ct_equal(const void *a, const void *b, size_t len)
{
    /* volatile: keeps the compiler from turning the loop into an early
     * exit. Every byte is read; only the OR of the differences is kept. */
    const volatile uint8_t *x = (const volatile uint8_t *)a;
    const volatile uint8_t *y = (const volatile uint8_t *)b;
    unsigned diff = 0;
    size_t i;

    for (i = 0; i < len; i++)
        diff |= (unsigned)(x[i] ^ y[i]);
    /* diff is 0 to 255: diff - 1 has bit 8 set exactly when diff is 0. */
    return (int)(((diff - 1u) >> 8) & 1u);
}

/* ======================================================================== */
/* AT section 9                                                             */
/* ======================================================================== */

/* Labels: ASCII, no terminator on the wire (sizeof - 1). */
static const char label_request[] = "AT1 request";
static const char label_reply[] = "AT1 reply";
static const char label_hello[] = "AT1 hello";

void at_derive_keys(const uint8_t key[AT_AUTH_KEY_LEN],
                    const void *kid, size_t kid_len,
                    const uint8_t nc[AT_AUTH_NONCE_LEN],
                    const uint8_t ns[AT_AUTH_NONCE_LEN],
                    uint8_t k_req[AT_AUTH_KEY_LEN],
                    uint8_t k_rep[AT_AUTH_KEY_LEN])
{
    uint8_t salt[2 * AT_AUTH_NONCE_LEN], prk[AT_SHA256_LEN];

    memcpy(salt, nc, AT_AUTH_NONCE_LEN);
    memcpy(salt + AT_AUTH_NONCE_LEN, ns, AT_AUTH_NONCE_LEN);
    at_hkdf_sha256_extract(salt, sizeof salt, key, AT_AUTH_KEY_LEN, prk);
    /* 32 bytes never exceed AT_HKDF_MAX_OUT: these calls cannot fail. */
    (void)hkdf_expand2(prk, sizeof prk, label_request,
                       sizeof label_request - 1, kid, kid_len,
                       k_req, AT_AUTH_KEY_LEN);
    (void)hkdf_expand2(prk, sizeof prk, label_reply, sizeof label_reply - 1,
                       kid, kid_len, k_rep, AT_AUTH_KEY_LEN);
    wipe(prk, sizeof prk);
}

void at_hello_proof(const uint8_t k_rep[AT_AUTH_KEY_LEN],
                    const uint8_t sid[AT_AUTH_SID_LEN],
                    uint8_t proof[AT_AUTH_PROOF_LEN])
{
    at_hmac_sha256_t c;
    uint8_t full[AT_SHA256_LEN];

    at_hmac_sha256_init(&c, k_rep, AT_AUTH_KEY_LEN);
    at_hmac_sha256_update(&c, label_hello, sizeof label_hello - 1);
    at_hmac_sha256_update(&c, sid, AT_AUTH_SID_LEN);
    at_hmac_sha256_final(&c, full);
    memcpy(proof, full, AT_AUTH_PROOF_LEN);
    wipe(full, sizeof full);
}

void at_frame_tag(const uint8_t k[AT_AUTH_KEY_LEN],
                  const uint8_t header[AT_AUTH_HEADER_LEN],
                  const void *body, size_t body_len,
                  const uint8_t sid[AT_AUTH_SID_LEN],
                  uint8_t tag[AT_AUTH_TAG_LEN])
{
    at_hmac_sha256_t c;
    uint8_t full[AT_SHA256_LEN];

    at_hmac_sha256_init(&c, k, AT_AUTH_KEY_LEN);
    at_hmac_sha256_update(&c, header, AT_AUTH_HEADER_LEN);
    at_hmac_sha256_update(&c, body, body_len);
    at_hmac_sha256_update(&c, sid, AT_AUTH_SID_LEN);
    at_hmac_sha256_final(&c, full);
    memcpy(tag, full, AT_AUTH_TAG_LEN);
    wipe(full, sizeof full);
}
