/*
 * test_vectors - runs the shared AT test vectors (tests/vectors/frames.tsv)
 * and unit tests through the C peer.
 *
 *   test_vectors PATH/TO/frames.tsv [SEED]
 *
 * For every vector: encoding a good frame reproduces it byte for byte; the
 * reader decodes it (whole and byte by byte) to the expected kind and seq or
 * error code and seq; the expected reply frame decodes, re-encodes, and its
 * body parses to the expected kind and result or code. Then all frames glued
 * together are fed to one reader in 200 seeded random chunkings and must come
 * out the same, in order.
 *
 *   test_vectors frames.tsv [SEED] [section10.tsv]
 *
 * With tests/vectors/section10.tsv (contract section 10.7 and the vectors
 * of 10.8 rule 12): every frame encodes byte for byte (sealed ones with
 * at_seal_frame() under the section 9 vector session's K_req or K_rep, SID
 * c0..c7), decodes (whole and byte by byte) to its flags, seq and body, a
 * sealed one verifies under its key and fails under the other (a reflected
 * frame fails its tag), a NOTIFY with another type bit is a bad frame, and
 * all of them glued together with calls' replies come out in order.
 * Prints "N passed, M failed" last; exits 1 on any failure.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "test_check.h"
#include "at_auth.h"
#include "at_protocol.h"
#include "section9_vectors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Vectors                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *name;
    uint8_t *frame;
    size_t frame_len;
    char *decode;           /* request|response|error or an error code */
    uint32_t decode_seq;
    char *reply_kind;       /* response|error|- */
    uint32_t reply_seq;
    char *reply_value;      /* result JSON or error code */
    uint8_t *reply_frame;   /* NULL if none */
    size_t reply_frame_len;
} vec_t;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes hex text into a fresh buffer of exactly the decoded size. */
static uint8_t *unhex_alloc(const char *s, size_t *len)
{
    size_t n = strlen(s), i;
    uint8_t *out;
    if (n % 2)
        return NULL;
    out = xmalloc(n / 2);
    for (i = 0; i < n / 2; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(out);
            return NULL;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n / 2;
    return out;
}

static int parse_u32(const char *s, uint32_t *v)
{
    char *end;
    unsigned long long x;
    if (*s < '0' || *s > '9')
        return -1;
    x = strtoull(s, &end, 10);
    if (*end != '\0' || x > 0xFFFFFFFFull)
        return -1;
    *v = (uint32_t)x;
    return 0;
}

/* Reads frames.tsv; returns the number of vectors, or -1. */
static int load(const char *path, vec_t **out)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int count = 0, alloc = 0, lineno = 0;
    vec_t *v = NULL;

    if (f == NULL) {
        perror(path);
        return -1;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        char *field[8], *p = line;
        int nf = 0;
        vec_t *x;
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        for (;;) {
            char *tab = strchr(p, '\t');
            if (nf == 8)
                break;
            field[nf++] = p;
            if (tab == NULL)
                break;
            *tab = '\0';
            p = tab + 1;
        }
        if (nf != 8) {
            fprintf(stderr, "%s:%d: expected 8 fields, got %d\n", path,
                    lineno, nf);
            goto fail;
        }
        if (count == alloc) {
            alloc = alloc ? alloc * 2 : 64;
            v = realloc(v, (size_t)alloc * sizeof *v);
            if (v == NULL)
                goto fail;
        }
        x = &v[count];
        memset(x, 0, sizeof *x);
        x->name = xstrdup(field[0]);
        x->frame = unhex_alloc(field[1], &x->frame_len);
        x->decode = xstrdup(field[2]);
        x->reply_kind = xstrdup(field[4]);
        x->reply_value = xstrdup(field[6]);
        if (x->frame == NULL || parse_u32(field[3], &x->decode_seq) != 0) {
            fprintf(stderr, "%s:%d: bad frame or seq\n", path, lineno);
            goto fail;
        }
        if (strcmp(field[4], "-") != 0) {
            x->reply_frame = unhex_alloc(field[7], &x->reply_frame_len);
            if (x->reply_frame == NULL ||
                parse_u32(field[5], &x->reply_seq) != 0) {
                fprintf(stderr, "%s:%d: bad reply frame or seq\n", path,
                        lineno);
                goto fail;
            }
        }
        count++;
    }
    free(line);
    fclose(f);
    *out = v;
    return count;
fail:
    free(line);
    fclose(f);
    return -1;
}

static uint16_t kind_flag(const char *kind)
{
    if (strcmp(kind, "request") == 0)
        return AT_FLAG_REQUEST;
    if (strcmp(kind, "response") == 0)
        return AT_FLAG_RESPONSE;
    if (strcmp(kind, "error") == 0)
        return AT_FLAG_ERROR;
    return 0;
}

/* Is the outcome (st, frame) the one the vector expects? Writes what was
 * found into got[]. */
static int outcome_ok(const vec_t *v, at_status_t st, const at_frame_t *f,
                      char *got, size_t gotcap)
{
    uint16_t want = kind_flag(v->decode);
    if (st == AT_OK) {
        uint16_t k = at_flags_kind(f->flags);
        snprintf(got, gotcap, "%s seq %lu",
                 k == AT_FLAG_REQUEST ? "request"
                 : k == AT_FLAG_RESPONSE ? "response" : "error",
                 (unsigned long)f->seq);
        return want != 0 && k == want && f->seq == v->decode_seq &&
               f->length == v->frame_len - AT_HEADER_LEN &&
               memcmp(f->body, v->frame + AT_HEADER_LEN, f->length) == 0;
    }
    {
        const char *code = at_code_name(at_status_code(st));
        snprintf(got, gotcap, "%s (%s) seq %lu", code ? code : "-",
                 at_status_str(st), (unsigned long)f->seq);
        return want == 0 && code != NULL && strcmp(code, v->decode) == 0 &&
               f->seq == v->decode_seq;
    }
}

static int is_fatal(at_status_t st)
{
    return st == AT_E_BAD_MAGIC || st == AT_E_TOO_LARGE;
}

/* The same JSON result? Texts equal, or both doubles (fraction or exponent)
 * of the same value: Python writes 1e300 as 1e+300. */
static int same_result(const char *a, const char *b)
{
    int da, db;
    if (strcmp(a, b) == 0)
        return 1;
    if (!at_json_is_number(a, strlen(a)) || !at_json_is_number(b, strlen(b)))
        return 0;
    da = strpbrk(a, ".eE") != NULL;
    db = strpbrk(b, ".eE") != NULL;
    return da && db && strtod(a, NULL) == strtod(b, NULL);
}

static uint8_t reader_buf[AT_MAX_FRAME];

static void test_vector(const vec_t *v)
{
    at_reader_t r;
    at_frame_t f;
    at_status_t st;
    char got[160];
    size_t i;
    uint16_t want = kind_flag(v->decode);
    int ok;

    /* 1. encoding a good frame reproduces it */
    if (want != 0) {
        at_header_t h;
        uint8_t *out = xmalloc(v->frame_len);
        size_t n = 0;
        at_header_unpack(v->frame, &h);
        st = at_encode_frame(h.flags, h.seq, v->frame + AT_HEADER_LEN,
                             v->frame_len - AT_HEADER_LEN, out, v->frame_len,
                             &n);
        result(st == AT_OK && n == v->frame_len &&
                   memcmp(out, v->frame, n) == 0,
               "%s: encoding does not reproduce the frame", v->name);
        /* and one byte less of room is refused */
        st = at_encode_frame(h.flags, h.seq, v->frame + AT_HEADER_LEN,
                             v->frame_len - AT_HEADER_LEN, out,
                             v->frame_len - 1, &n);
        result(st == AT_E_NOSPACE, "%s: encoding into a short buffer: %s",
               v->name, at_status_str(st));
        free(out);
    }

    /* 2. decoding the whole frame at once */
    at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
    result(at_reader_feed(&r, v->frame, v->frame_len) == v->frame_len,
           "%s: feed refused bytes", v->name);
    memset(&f, 0, sizeof f);
    st = at_reader_next(&r, &f);
    ok = outcome_ok(v, st, &f, got, sizeof got);
    result(ok, "%s: decoded %s, want %s seq %lu", v->name, got, v->decode,
           (unsigned long)v->decode_seq);
    if (!is_fatal(st)) {
        result(at_reader_buffered(&r) == 0 &&
                   at_reader_next(&r, &f) == AT_NEED_MORE,
               "%s: frame not fully consumed", v->name);
    } else {
        at_frame_t g;
        at_status_t again = at_reader_next(&r, &g);
        result(again == st && g.seq == f.seq,
               "%s: a stream error is not sticky", v->name);
    }

    /* 3. decoding byte by byte: nothing before the last byte needed */
    at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
    ok = 1;
    for (i = 0; i < v->frame_len && ok; i++) {
        at_reader_feed(&r, v->frame + i, 1);
        st = at_reader_next(&r, &f);
        if (st == AT_NEED_MORE)
            continue;
        ok = outcome_ok(v, st, &f, got, sizeof got);
        /* errors found from the header must be found as early as possible:
         * a wrong magic at 2 bytes, a length at 16 */
        if (st == AT_E_BAD_MAGIC)
            ok = ok && i == 1;
        else if (st == AT_E_TOO_LARGE)
            ok = ok && i == AT_HEADER_LEN - 1;
        else
            ok = ok && i == v->frame_len - 1;
        break;
    }
    result(ok && i < v->frame_len, "%s: byte by byte: %s at byte %lu",
           v->name, i < v->frame_len ? got : "nothing", (unsigned long)i);

    /* 4. the expected reply frame */
    if (v->reply_frame != NULL) {
        uint16_t rk = kind_flag(v->reply_kind);
        at_reply_t rep;
        char *scratch;
        uint8_t *body, *out;
        size_t n = 0, blen;

        at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
        at_reader_feed(&r, v->reply_frame, v->reply_frame_len);
        st = at_reader_next(&r, &f);
        result(st == AT_OK && at_flags_kind(f.flags) == rk &&
                   f.seq == v->reply_seq &&
                   f.length == v->reply_frame_len - AT_HEADER_LEN,
               "%s: reply frame decodes as %s seq %lu, want %s seq %lu",
               v->name, at_status_str(st), (unsigned long)f.seq,
               v->reply_kind, (unsigned long)v->reply_seq);
        if (st != AT_OK)
            return;

        out = xmalloc(v->reply_frame_len);
        st = at_encode_frame(f.flags, f.seq, f.body, f.length, out,
                             v->reply_frame_len, &n);
        result(st == AT_OK && n == v->reply_frame_len &&
                   memcmp(out, v->reply_frame, n) == 0,
               "%s: re-encoding the reply frame differs", v->name);
        free(out);

        /* the body alone, in a buffer of its exact size, so that a read
         * past its end is caught by the address sanitizer; the scratch
         * buffer of len + 1 bytes must always suffice */
        blen = f.length;
        body = xmalloc(blen);
        memcpy(body, f.body, blen);
        scratch = xmalloc(blen + 1);
        st = at_parse_reply(body, blen, scratch, blen + 1, &rep);
        if (rk == AT_FLAG_RESPONSE) {
            result(st == AT_OK && rep.kind == AT_REPLY_SUCCESS &&
                       rep.result != NULL &&
                       same_result(rep.result, v->reply_value),
                   "%s: reply parses as %s result %s, want result %s",
                   v->name, at_status_str(st),
                   st == AT_OK && rep.result ? rep.result : "-",
                   v->reply_value);
        } else {
            result(st == AT_OK && rep.kind == AT_REPLY_ERROR &&
                       rep.code != NULL &&
                       strcmp(rep.code, v->reply_value) == 0 &&
                       rep.code_id == at_code_from_name(v->reply_value) &&
                       rep.code_id != AT_CODE_OTHER &&
                       rep.message != NULL && rep.message_len > 0,
                   "%s: reply parses as %s code %s, want code %s", v->name,
                   at_status_str(st),
                   st == AT_OK && rep.code ? rep.code : "-",
                   v->reply_value);
        }
        free(scratch);
        free(body);
    }
}

/* ------------------------------------------------------------------------ */
/* All vectors glued together, in random chunkings                          */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Drains every frame the reader has; advances *next (the index of the
 * vector expected next). Returns 0 if all matched. */
static int drain(at_reader_t *r, const vec_t *v, int nv, int *next,
                 char *why, size_t whycap)
{
    for (;;) {
        at_frame_t f;
        char got[160];
        at_status_t st;

        memset(&f, 0, sizeof f);
        st = at_reader_next(r, &f);
        if (st == AT_NEED_MORE)
            return 0;
        if (*next >= nv) {
            snprintf(why, whycap, "a frame after the last vector (%s)",
                     at_status_str(st));
            return -1;
        }
        if (!outcome_ok(&v[*next], st, &f, got, sizeof got)) {
            snprintf(why, whycap, "vector %s: got %s, want %s seq %lu",
                     v[*next].name, got, v[*next].decode,
                     (unsigned long)v[*next].decode_seq);
            return -1;
        }
        if (is_fatal(st)) /* out of step: the test knows where the next
                             frame starts */
            at_reader_skip(r, v[*next].frame_len);
        (*next)++;
    }
}

static void test_glued(const vec_t *v, int nv, uint64_t seed, int rounds)
{
    static const size_t max_chunks[] = {1, 2, 3, 5, 7, 16, 17, 64, 100,
                                        1000, 4096, 65552, 70000, 200000};
    size_t total = 0, off, i;
    uint8_t *all;
    int round;

    for (i = 0; i < (size_t)nv; i++)
        total += v[i].frame_len;
    all = xmalloc(total);
    for (off = 0, i = 0; i < (size_t)nv; i++) {
        memcpy(all + off, v[i].frame, v[i].frame_len);
        off += v[i].frame_len;
    }
    rng_state = seed;

    for (round = 0; round < rounds; round++) {
        at_reader_t r;
        int next = 0, bad = 0, zero_copy = round % 2;
        size_t max_chunk = max_chunks[(size_t)round %
                                      (sizeof max_chunks / sizeof max_chunks[0])];
        char why[256] = "";

        at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
        off = 0;
        while (off < total && !bad) {
            size_t chunk = 1 + (size_t)(rnd() % max_chunk);
            if (chunk > total - off)
                chunk = total - off;
            /* a chunk may not fit: feed what fits, drain, repeat */
            while (chunk > 0 && !bad) {
                size_t took;
                if (zero_copy) {
                    uint8_t *where;
                    size_t room = at_reader_space(&r, &where);
                    took = chunk < room ? chunk : room;
                    memcpy(where, all + off, took);
                    at_reader_commit(&r, took);
                } else {
                    took = at_reader_feed(&r, all + off, chunk);
                }
                off += took;
                chunk -= took;
                if (drain(&r, v, nv, &next, why, sizeof why) != 0)
                    bad = 1;
                else if (took == 0 && chunk > 0) {
                    snprintf(why, sizeof why,
                             "reader full and no frame out at offset %lu",
                             (unsigned long)off);
                    bad = 1;
                }
            }
        }
        if (!bad && next != nv) {
            snprintf(why, sizeof why, "%d of %d frames came out", next, nv);
            bad = 1;
        }
        if (!bad && at_reader_buffered(&r) != 0) {
            snprintf(why, sizeof why, "%lu bytes left over",
                     (unsigned long)at_reader_buffered(&r));
            bad = 1;
        }
        result(!bad, "glued round %d (%s, chunks 1..%lu, seed %llu): %s",
               round, zero_copy ? "space/commit" : "feed",
               (unsigned long)max_chunk, (unsigned long long)seed, why);
    }
    free(all);
}

/* ------------------------------------------------------------------------ */
/* Unit tests                                                               */
/* ------------------------------------------------------------------------ */

static void test_crc_and_header(void)
{
    static const uint8_t want[16] = {0x41, 0x54, 0x00, 0x01, 0x00, 0x00,
                                     0x00, 0x01, 0x00, 0x00, 0x00, 0x21,
                                     0x0b, 0xbc, 0xd0, 0x47};
    const char *body = "{\"func\": \"add\", \"args\": [10, 20]}";
    at_header_t h, back;
    uint8_t out[16];

    result(at_crc32("123456789", 9) == 0xCBF43926u,
           "crc32(\"123456789\") = %08lx",
           (unsigned long)at_crc32("123456789", 9));
    result(at_crc32("", 0) == 0, "crc32 of nothing is not 0");
    result(at_crc32_update(at_crc32("1234", 4), "56789", 5) == 0xCBF43926u,
           "crc32_update does not continue a CRC");
    result(sizeof(at_header_t) == 16, "sizeof(at_header_t) != 16");

    h.magic = AT_MAGIC;
    h.flags = AT_FLAG_REQUEST;
    h.seq = 1;
    h.length = (uint32_t)strlen(body);
    h.crc = at_crc32(body, strlen(body));
    at_header_pack(&h, out);
    at_header_unpack(out, &back);
    result(memcmp(out, want, 16) == 0 && h.crc == 0x0BBCD047u,
           "the contract's header does not pack as in the contract");
    result(back.magic == h.magic && back.flags == h.flags &&
               back.seq == h.seq && back.length == h.length &&
               back.crc == h.crc,
           "header unpack(pack(h)) != h");
    result(at_flags_kind(0x8001) == AT_FLAG_REQUEST &&
               at_flags_kind(0x0002) == AT_FLAG_RESPONSE &&
               at_flags_kind(0x0004) == AT_FLAG_ERROR &&
               at_flags_kind(0x0000) == 0 && at_flags_kind(0x0003) == 0 &&
               at_flags_kind(0x0100) == 0,
           "at_flags_kind");
    {
        uint8_t empty[16];
        size_t n = 0;
        result(at_encode_frame(AT_FLAG_RESPONSE, 7, NULL, 0, empty, 16,
                               &n) == AT_OK && n == 16 &&
                   memcmp(empty + 8, "\0\0\0\0\0\0\0\0", 8) == 0,
               "an empty body encodes with length 0 and CRC 0");
    }
}

static void test_numbers(void)
{
    static const char *const good[] = {
        "0", "-0", "10", "-3", "2.5", "1e3", "1E+3", "-1.5e-7", "0.0",
        "9223372036854775808", "1e300", "0e0", "-0.0e-0"};
    static const char *const bad[] = {
        "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "NaN", "inf", "0x10",
        " 1", "1 ", "1.5.", "--1", "true", "1,2", "-01", "00", "1e3.5",
        "\xef\xbc\x91"};
    size_t i;
    for (i = 0; i < sizeof good / sizeof good[0]; i++)
        result(at_json_is_number(good[i], strlen(good[i])),
               "%s is a JSON number", good[i]);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        result(!at_json_is_number(bad[i], strlen(bad[i])),
               "'%s' is not a JSON number", bad[i]);
}

static void test_build_request(void)
{
    const char *args[2] = {"10", "20"};
    const char *want = "{\"func\": \"add\", \"args\": [10, 20]}";
    const char *bad_args[2] = {"10", "x"};
    char out[128];
    size_t n = 0, cap;
    at_status_t st;

    st = at_build_request("add", args, 2, out, sizeof out, &n);
    result(st == AT_OK && n == strlen(want) && strcmp(out, want) == 0,
           "build_request(add, 10, 20) = %s", out);

    st = at_build_request("a\"b\\c\n\x01/\xc3\xa4", NULL, 0, out, sizeof out,
                          &n);
    result(st == AT_OK &&
               strcmp(out, "{\"func\": \"a\\\"b\\\\c\\n\\u0001/\xc3\xa4\", "
                           "\"args\": []}") == 0,
           "build_request escapes func: %s", out);
    result(at_build_request("\xff", args, 2, out, sizeof out, &n) == AT_E_ARG,
           "build_request accepts invalid UTF-8");
    result(at_build_request("\xed\xa0\x80", args, 2, out, sizeof out, &n) ==
               AT_E_ARG,
           "build_request accepts an encoded surrogate");
    result(at_build_request("add", bad_args, 2, out, sizeof out, &n) ==
               AT_E_ARG,
           "build_request accepts a non-number argument");

    /* every buffer too small by any amount is refused, never overrun */
    for (cap = 0; cap <= strlen(want); cap++) {
        char *small = xmalloc(cap);
        st = at_build_request("add", args, 2, small, cap, &n);
        free(small);
        if (st != AT_E_NOSPACE)
            break;
    }
    result(cap == strlen(want) + 1,
           "build_request into a %lu-byte buffer", (unsigned long)cap);
}

/* Parses a NUL-terminated text as a reply body held in a buffer of its exact
 * size. */
static at_status_t parse_text(const char *text, at_reply_t *rep,
                              char *scratch, size_t scratch_cap)
{
    size_t n = strlen(text);
    uint8_t *body = xmalloc(n);
    at_status_t st;
    memcpy(body, text, n);
    st = at_parse_reply(body, n, scratch, scratch_cap, rep);
    free(body);
    return st;
}

static void test_parse_reply(void)
{
    static char scratch[4096];
    static const char *const invalid[] = {
        "",
        " ",
        "[]",
        "{}",
        "{,}",
        "null",
        "{\"status\": \"success\"}",
        "{\"status\": \"error\"}",
        "{\"status\": \"error\", \"code\": 3}",
        "{\"status\": \"error\", \"code\": \"x\", \"message\": null}",
        "{\"status\": \"ok\", \"result\": 1}",
        "{\"status\": 1, \"result\": 1}",
        "{\"result\": 1}",
        "{\"status\": \"success\", \"result\": 1} x",
        "{\"status\": \"success\", \"result\": 1}}",
        "{\"status\": \"success\", \"result\": 01}",
        "{\"status\": \"success\", \"result\": 1.}",
        "{\"status\": \"success\", \"result\": -}",
        "{\"status\": \"success\", \"result\": tru}",
        "{\"status\": \"success\", \"result\": 1,}",
        "{\"status\": \"success\" \"result\": 1}",
        "{\"status\": \"success\", \"result\" 1}",
        "{\"status\": \"success\", \"result\": [1, 2,]}",
        "{\"status\": \"success\", \"result\": {\"a\" 1}}",
        "{\"status\": \"success\", \"result\": {1: 1}}",
        "{\"status\": \"success\", \"status\": \"success\", \"result\": 1}",
        "{\"status\": \"success\", \"result\": 1, \"result\": 2}",
        "{\"status\": \"succ\\x65ss\", \"result\": 1}",
        "{\"status\": \"success\", \"result\": \"\\ud83d\"}",
        "{\"status\": \"success\", \"result\": \"\\ude00\"}",
        "{\"status\": \"success\", \"result\": \"\\ud83d\\u0041\"}",
        "{\"status\": \"success\", \"result\": \"\\u12\"}",
        "{\"status\": \"success\", \"result\": \"a\tb\"}",
        "{\"status\": \"success\", \"result\": \"\xff\"}",
        "{\"status\": \"success\", \"result\": \"\xc0\xaf\"}",
        "{\"status\": \"success\", \"result\": \"\xed\xa0\x80\"}",
        "{\"status\": \"success\", \"result\": \"\xf4\x90\x80\x80\"}",
        "{\"status\": \"success\", \"result\": \"\xe2\x98\"}",
        "{\"st\\u0061tus\": \"success\", \"result\": 1, \"x\": [}",
        "\xef\xbb\xbf{\"status\": \"success\", \"result\": 1}",
    };
    const char *full =
        "{\"status\": \"error\", \"code\": \"division_by_zero\", "
        "\"message\": \"division by zero\"}";
    at_reply_t rep;
    at_status_t st;
    size_t i, n;
    char deep[200];

    st = parse_text("{\"result\": 5.0, \"status\": \"success\"}", &rep,
                    scratch, sizeof scratch);
    result(st == AT_OK && rep.kind == AT_REPLY_SUCCESS &&
               strcmp(rep.result, "5.0") == 0 && rep.result_len == 3,
           "members in any order; 5.0 stays 5.0");

    st = parse_text("{\"x\": {\"a\": [1, {\"b\": null}, true, false], "
                    "\"c\": \"\\u00e4\\\"\"}, \"status\": \"success\", "
                    "\"result\": [1, {\"k\": \"v\"}], \"y\": -1.5e-3}",
                    &rep, scratch, sizeof scratch);
    result(st == AT_OK && strcmp(rep.result, "[1, {\"k\": \"v\"}]") == 0,
           "unknown members skipped; result kept as raw JSON text");

    st = parse_text(" \r\n\t{ \"status\" : \"error\" , \"code\":\"overflow\","
                    "\"message\": \"a\\\"b\\\\c\\/d\\ne\\tf \\u00e9 "
                    "\\ud83d\\ude00 \\u2603\\b\\f\\r\"} \n",
                    &rep, scratch, sizeof scratch);
    result(st == AT_OK && rep.kind == AT_REPLY_ERROR &&
               strcmp(rep.code, "overflow") == 0 &&
               rep.code_id == AT_CODE_OVERFLOW &&
               strcmp(rep.message, "a\"b\\c/d\ne\tf \xc3\xa9 \xf0\x9f\x98\x80 "
                                   "\xe2\x98\x83\b\f\r") == 0 &&
               rep.message_len == strlen(rep.message),
           "escapes in strings, whitespace anywhere");

    st = parse_text("{\"status\": \"error\", \"code\": \"quota\"}", &rep,
                    scratch, sizeof scratch);
    result(st == AT_OK && rep.kind == AT_REPLY_ERROR &&
               strcmp(rep.code, "quota") == 0 &&
               rep.code_id == AT_CODE_OTHER && strcmp(rep.message, "") == 0,
           "an unknown code passes as text; a missing message reads as \"\"");

    st = parse_text("{\"st\\u0061tus\": \"succ\\u0065ss\", \"result\": "
                    "\"\\u0000x\"}", &rep, scratch, sizeof scratch);
    result(st == AT_OK && rep.kind == AT_REPLY_SUCCESS &&
               strcmp(rep.result, "\"\\u0000x\"") == 0,
           "escaped member names and status");

    st = parse_text("{\"status\": \"error\", \"code\": \"c\", \"message\": "
                    "\"a\\u0000b\"}", &rep, scratch, sizeof scratch);
    result(st == AT_OK && rep.message_len == 3 &&
               memcmp(rep.message, "a\0b", 3) == 0,
           "an escaped NUL is kept, with its length");

    for (i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        st = parse_text(invalid[i], &rep, scratch, sizeof scratch);
        result(st == AT_E_BAD_BODY, "invalid reply accepted (%s): %s",
               at_status_str(st), invalid[i]);
    }

    /* every proper prefix of a valid body is invalid (and not overread) */
    n = strlen(full);
    for (i = 0; i < n; i++) {
        uint8_t *body = xmalloc(i);
        memcpy(body, full, i);
        st = at_parse_reply(body, i, scratch, sizeof scratch, &rep);
        free(body);
        if (st != AT_E_BAD_BODY)
            break;
    }
    result(i == n, "a %lu-byte prefix of a body is accepted",
           (unsigned long)i);

    /* a scratch buffer too small is reported, never overrun */
    for (i = 0; i <= n; i++) {
        char *small = xmalloc(i);
        st = parse_text(full, &rep, small, i);
        free(small);
        if (st == AT_OK)
            break;
        if (st != AT_E_NOSPACE) {
            i = (size_t)-1;
            break;
        }
    }
    result(i != (size_t)-1 && i <= n + 1,
           "scratch too small is not reported as AT_E_NOSPACE");

    /* nesting: 32 levels (the outer object included) pass, 33 do not */
    for (i = 30; i <= 31; i++) {
        size_t k, p = 0;
        p += (size_t)sprintf(deep + p, "{\"status\": \"success\", \"result\": ");
        for (k = 0; k < i; k++)
            deep[p++] = '[';
        for (k = 0; k < i; k++)
            deep[p++] = ']';
        deep[p++] = '}';
        deep[p] = '\0';
        st = parse_text(deep, &rep, scratch, sizeof scratch);
        result(st == AT_OK, "%lu nested arrays in a reply: %s", (unsigned long)i,
               at_status_str(st));
    }
    {
        size_t k, p = 0;
        p += (size_t)sprintf(deep + p, "{\"status\": \"success\", \"result\": ");
        for (k = 0; k < 32; k++)
            deep[p++] = '[';
        for (k = 0; k < 32; k++)
            deep[p++] = ']';
        deep[p++] = '}';
        deep[p] = '\0';
        st = parse_text(deep, &rep, scratch, sizeof scratch);
        result(st == AT_E_BAD_BODY, "33 levels of nesting accepted");
    }
}

static void test_reader_edges(void)
{
    static uint8_t small[16 + 10];
    uint8_t frame[64], two[128];
    at_reader_t r;
    at_frame_t f;
    at_status_t st;
    size_t n = 0, m = 0, dropped;

    /* the magic is judged as soon as two bytes are in, not on one */
    at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
    at_reader_feed(&r, "A", 1);
    result(at_reader_next(&r, &f) == AT_NEED_MORE, "'A' alone is no error");
    at_reader_feed(&r, "X", 1);
    st = at_reader_next(&r, &f);
    result(st == AT_E_BAD_MAGIC && f.seq == 0, "'AX' is a bad magic");

    /* a small buffer clamps the body limit */
    at_reader_init(&r, small, sizeof small, 100);
    result(at_reader_max_body(&r) == 10, "limit clamped to the buffer");
    at_encode_frame(AT_FLAG_REQUEST, 5, "0123456789", 10, frame, sizeof frame,
                    &n);
    at_reader_feed(&r, frame, n);
    st = at_reader_next(&r, &f);
    result(st == AT_OK && f.length == 10 && f.seq == 5,
           "a frame filling the buffer exactly");
    at_encode_frame(AT_FLAG_REQUEST, 6, "0123456789a", 11, frame,
                    sizeof frame, &n);
    at_reader_feed(&r, frame, 16);
    st = at_reader_next(&r, &f);
    result(st == AT_E_TOO_LARGE && f.seq == 6 && f.length == 11,
           "over the clamped limit");
    result(at_reader_init(&r, small, 15, 0) == AT_E_ARG,
           "a buffer below 16 bytes is refused");

    /* resync after line noise finds the next frame */
    at_encode_frame(AT_FLAG_REQUEST, 9, "{}", 2, frame, sizeof frame, &n);
    memcpy(two, "xAxxA", 5);
    memcpy(two + 5, frame, n);
    at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
    at_reader_feed(&r, two, 5 + n);
    st = at_reader_next(&r, &f);
    dropped = 0;
    while (st == AT_E_BAD_MAGIC) {
        dropped += at_reader_resync(&r);
        st = at_reader_next(&r, &f);
    }
    result(st == AT_OK && f.seq == 9 && dropped == 5,
           "resync skips noise (%lu bytes) to the next frame",
           (unsigned long)dropped);

    /* a trailing first magic byte is kept by resync */
    at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
    at_reader_feed(&r, "zzA", 3);
    at_reader_next(&r, &f);
    dropped = at_reader_resync(&r);
    at_reader_feed(&r, frame + 1, n - 1);
    st = at_reader_next(&r, &f);
    result(dropped == 2 && st == AT_OK && f.seq == 9,
           "resync keeps a trailing 'A'");

    /* skip beyond the buffered bytes drops bytes yet to come */
    at_encode_frame(AT_FLAG_RESPONSE, 10, "[1]", 3, two, sizeof two, &m);
    at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
    at_reader_feed(&r, "TAxx", 4);
    result(at_reader_next(&r, &f) == AT_E_BAD_MAGIC, "bad magic TA");
    at_reader_skip(&r, 20);
    at_reader_feed(&r, "0123456789abcdef", 16);
    result(at_reader_next(&r, &f) == AT_NEED_MORE &&
               at_reader_buffered(&r) == 0,
           "skip drops future bytes");
    {
        uint8_t *where;
        size_t room = at_reader_space(&r, &where);
        memcpy(where, two, m); /* m < room */
        at_reader_commit(&r, room < m ? room : m);
    }
    st = at_reader_next(&r, &f);
    result(st == AT_OK && f.seq == 10 && f.length == 3 &&
               memcmp(f.body, "[1]", 3) == 0,
           "a frame after a skip");

    /* a CRC error keeps the stream in step */
    at_encode_frame(AT_FLAG_REQUEST, 11, "{}", 2, two, sizeof two, &n);
    two[15] ^= 1;
    at_encode_frame(AT_FLAG_REQUEST, 12, "{}", 2, two + n, sizeof two - n,
                    &m);
    at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
    at_reader_feed(&r, two, n + m);
    st = at_reader_next(&r, &f);
    result(st == AT_E_CHECKSUM && f.seq == 11 &&
               at_status_code(st) == AT_CODE_CHECKSUM_MISMATCH,
           "checksum mismatch");
    st = at_reader_next(&r, &f);
    result(st == AT_OK && f.seq == 12, "the frame after a checksum error");

    /* code names */
    result(at_code_from_name("busy") == AT_CODE_BUSY &&
               strcmp(at_code_name(AT_CODE_INTERNAL), "internal") == 0 &&
               at_code_name(AT_CODE_OTHER) == NULL &&
               at_code_from_name("nope") == AT_CODE_OTHER,
           "code names");
}

/* ------------------------------------------------------------------------ */
/* Section 10 vectors (tests/vectors/section10.tsv)                         */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *name;
    uint16_t flags;
    uint32_t seq;
    char *key;              /* "req", "rep" or "-" */
    char *body;
    uint8_t *frame;
    size_t frame_len;
} vec10_t;

/* Reads section10.tsv (name, flags hex, seq, key, body, frame hex);
 * returns the number of vectors, or -1. */
static int load10(const char *path, vec10_t **out)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int count = 0, alloc = 0, lineno = 0;
    vec10_t *v = NULL;

    if (f == NULL) {
        perror(path);
        return -1;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        char *field[6], *p = line, *end;
        int nf = 0;
        unsigned long flags;
        vec10_t *x;
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        for (;;) {
            char *tab = strchr(p, '\t');
            if (nf == 6)
                break;
            field[nf++] = p;
            if (tab == NULL)
                break;
            *tab = '\0';
            p = tab + 1;
        }
        if (nf != 6) {
            fprintf(stderr, "%s:%d: expected 6 fields, got %d\n", path,
                    lineno, nf);
            goto fail;
        }
        if (count == alloc) {
            vec10_t *grown;
            alloc = alloc ? alloc * 2 : 32;
            grown = realloc(v, (size_t)alloc * sizeof *v);
            if (grown == NULL)
                goto fail;
            v = grown;
        }
        x = &v[count];
        memset(x, 0, sizeof *x);
        flags = strtoul(field[1], &end, 16);
        if (*field[1] == '\0' || *end != '\0' || flags > 0xFFFFu ||
            parse_u32(field[2], &x->seq) != 0) {
            fprintf(stderr, "%s:%d: bad flags or seq\n", path, lineno);
            goto fail;
        }
        x->flags = (uint16_t)flags;
        x->name = xstrdup(field[0]);
        x->key = xstrdup(field[3]);
        x->body = xstrdup(field[4]);
        x->frame = unhex_alloc(field[5], &x->frame_len);
        count++;
        if (x->frame == NULL) {
            fprintf(stderr, "%s:%d: bad frame hex\n", path, lineno);
            goto fail;
        }
        if (strcmp(x->key, "req") != 0 && strcmp(x->key, "rep") != 0 &&
            strcmp(x->key, "-") != 0) {
            fprintf(stderr, "%s:%d: key must be req, rep or -\n", path,
                    lineno);
            goto fail;
        }
    }
    free(line);
    fclose(f);
    *out = v;
    return count;
fail:
    free(line);
    fclose(f);
    *out = v;
    return -1 - count;
}

static uint8_t k_req[32], k_rep[32], vsid[8];

/* The frame `f` of a section 10 vector, checked as a receiver reads it. */
static void check10_decoded(const vec10_t *v, const char *how, at_status_t st,
                            const at_frame_t *f)
{
    size_t body_len = strlen(v->body);
    size_t extra = strcmp(v->key, "-") == 0 ? 0 : AT_AUTH_TRAILER;
    result(st == AT_OK && f->flags == v->flags && f->seq == v->seq &&
               f->length == body_len + extra &&
               memcmp(f->body, v->body, body_len) == 0,
           "%s: %s: decodes as %s flags 0x%04x seq %lu", v->name, how,
           at_status_str(st), (unsigned)f->flags, (unsigned long)f->seq);
}

static void test_vector10(const vec10_t *v)
{
    static uint8_t out[AT_AUTH_MAX_FRAME];
    size_t n = 0, i, body_len = strlen(v->body);
    int sealed = strcmp(v->key, "-") != 0;
    const uint8_t *key = strcmp(v->key, "req") == 0 ? k_req : k_rep;
    const uint8_t *other = key == k_req ? k_rep : k_req;
    uint16_t kind = (uint16_t)(v->flags & AT_FLAG_TYPE_MASK);
    at_reader_t r;
    at_frame_t f, inner;
    at_status_t st;
    const char *why = NULL;

    /* 1. encoding reproduces the frame byte for byte */
    if (sealed)
        st = at_seal_frame(v->flags, v->seq, v->body, body_len, key, vsid,
                           out, sizeof out, &n);
    else
        st = at_encode_frame(v->flags, v->seq, v->body, body_len, out,
                             sizeof out, &n);
    result(st == AT_OK && n == v->frame_len && memcmp(out, v->frame, n) == 0,
           "%s: encoding does not reproduce the frame (%s)", v->name,
           at_status_str(st));
    result(((v->flags & AT_FLAG_AUTH) != 0) == sealed,
           "%s: AUTH flag and key disagree", v->name);

    /* 2. its type: exactly one of the four type bits */
    result(at_flags_kind(v->flags) == kind && kind != 0,
           "%s: at_flags_kind(0x%04x) is 0x%04x", v->name,
           (unsigned)v->flags, (unsigned)at_flags_kind(v->flags));

    /* 3. decoding: whole, then byte by byte */
    at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
    at_reader_feed(&r, v->frame, v->frame_len);
    memset(&f, 0, sizeof f);
    st = at_reader_next(&r, &f);
    check10_decoded(v, "whole", st, &f);
    result(at_reader_next(&r, NULL) == AT_NEED_MORE,
           "%s: frame not fully consumed", v->name);
    at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
    st = AT_NEED_MORE;
    for (i = 0; i < v->frame_len && st == AT_NEED_MORE; i++) {
        at_reader_feed(&r, v->frame + i, 1);
        st = at_reader_next(&r, &f);
    }
    result(i == v->frame_len, "%s: byte by byte: a frame before the last "
           "byte", v->name);
    check10_decoded(v, "byte by byte", st, &f);

    /* 4. sealed: verifies under its key, fails under the other (a frame
     * reflected back to its sender fails its tag), and in another session;
     * a plain one is no sealed frame. */
    if (st != AT_OK)
        return;
    if (sealed) {
        uint8_t sid2[8];
        st = at_unseal_frame(&f, key, vsid, &inner, &why);
        result(st == AT_OK && inner.length == body_len &&
                   memcmp(inner.body, v->body, body_len) == 0 &&
                   inner.flags == v->flags && inner.seq == v->seq,
               "%s: does not verify under K_%s: %s", v->name, v->key,
               st == AT_OK ? "body" : why);
        st = at_unseal_frame(&f, other, vsid, &inner, &why);
        result(st == AT_E_AUTH, "%s: verifies under the other key (a "
               "reflected frame passes)", v->name);
        memcpy(sid2, vsid, 8);
        sid2[3] ^= 0x40;
        result(at_unseal_frame(&f, key, sid2, &inner, &why) == AT_E_AUTH,
               "%s: verifies in another session", v->name);
        /* The tag covers the flags: the same frame with another type bit
         * (CRC made good) fails. */
        memcpy(out, v->frame, v->frame_len);
        out[3] ^= (uint8_t)(kind == AT_FLAG_NOTIFY ? 0x11 : 0x03);
        {
            at_frame_t g;
            at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
            at_reader_feed(&r, out, v->frame_len);
            at_reader_next(&r, &g);
            g.flags = (uint16_t)((out[2] << 8) | out[3]);
            result(at_unseal_frame(&g, key, vsid, &inner, NULL) == AT_E_AUTH,
                   "%s: verifies with its flags changed", v->name);
        }
        /* What a client's session sees: only a server's reply (K_rep) is
         * one; a frame under K_req is the client's own, reflected. */
        if (kind == AT_FLAG_RESPONSE || kind == AT_FLAG_ERROR) {
            at_session_t s;
            memset(&s, 0, sizeof s);
            memcpy(s.sid, vsid, 8);
            memcpy(s.k_req, k_req, 32);
            memcpy(s.k_rep, k_rep, 32);
            s.open = 1;
            st = at_session_verify_frame(&s, v->frame, v->frame_len, v->seq,
                                         &inner, &why);
            result(key == k_rep ? st == AT_OK : st == AT_E_AUTH,
                   "%s: a client session's verdict: %s", v->name,
                   at_status_str(st));
        }
    } else {
        result(at_unseal_frame(&f, k_rep, vsid, &inner, &why) == AT_E_AUTH,
               "%s: a plain frame passes as sealed", v->name);
    }

    /* 5. NOTIFY with another type bit, and any two type bits: bad_frame
     * (CRC made good: the frame is consumed, the stream stays in step). */
    {
        static const uint16_t extra[] = {AT_FLAG_REQUEST, AT_FLAG_RESPONSE,
                                         AT_FLAG_ERROR, AT_FLAG_NOTIFY};
        size_t k;
        for (k = 0; k < sizeof extra / sizeof extra[0]; k++) {
            uint16_t bad = (uint16_t)(v->flags | extra[k]);
            if (bad == v->flags)
                continue;
            memcpy(out, v->frame, v->frame_len);
            out[2] = (uint8_t)(bad >> 8);
            out[3] = (uint8_t)bad;
            at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
            at_reader_feed(&r, out, v->frame_len);
            memcpy(out + v->frame_len, v->frame, v->frame_len);
            at_reader_feed(&r, out + v->frame_len, v->frame_len);
            st = at_reader_next(&r, &f);
            result(at_flags_kind(bad) == 0 && st == AT_E_BAD_FLAGS &&
                       at_status_code(st) == AT_CODE_BAD_FRAME &&
                       f.seq == v->seq,
                   "%s: flags 0x%04x decode as %s", v->name, (unsigned)bad,
                   at_status_str(st));
            st = at_reader_next(&r, &f);
            result(st == AT_OK && f.flags == v->flags,
                   "%s: the frame after flags 0x%04x: %s", v->name,
                   (unsigned)bad, at_status_str(st));
        }
    }

    /* 6. replies parse; the new codes have names */
    if (kind == AT_FLAG_RESPONSE || kind == AT_FLAG_ERROR) {
        at_reply_t rep;
        char *scratch = xmalloc(body_len + 1);
        uint8_t *body = xmalloc(body_len);
        memcpy(body, v->body, body_len);
        st = at_parse_reply(body, body_len, scratch, body_len + 1, &rep);
        result(st == AT_OK &&
                   rep.kind == (kind == AT_FLAG_RESPONSE ? AT_REPLY_SUCCESS
                                                         : AT_REPLY_ERROR) &&
                   (kind == AT_FLAG_RESPONSE || rep.code_id != AT_CODE_OTHER),
               "%s: reply body parses as %s", v->name, at_status_str(st));
        free(scratch);
        free(body);
    }
}

/* Builders against the vectors' bodies: D1 with at_build_request_deadline,
 * X1 with at_build_request; and the deadline's bounds. */
static void test_build10(const vec10_t *v, int nv)
{
    static const char *const args1020[] = {"10", "20"};
    static const char *const args12[] = {"1", "2"};
    char out[128];
    size_t n = 0;
    uint32_t d;
    int i;
    for (i = 0; i < nv; i++) {
        if (strcmp(v[i].name, "D1") == 0) {
            d = 0;
            result(at_build_request_deadline("add", args1020, 2, &d, out,
                                             sizeof out, &n) == AT_OK &&
                       strcmp(out, v[i].body) == 0 && n == strlen(out),
                   "D1: at_build_request_deadline gives %s", out);
        }
        if (strcmp(v[i].name, "X1") == 0)
            result(at_build_request("add", args12, 2, out, sizeof out,
                                    &n) == AT_OK &&
                       strcmp(out, v[i].body) == 0,
                   "X1: at_build_request gives %s", out);
    }
    d = 4294967295u;
    result(at_build_request_deadline("add", args12, 2, &d, out, sizeof out,
                                     &n) == AT_OK &&
               strcmp(out, "{\"func\": \"add\", \"args\": [1, 2], "
                           "\"deadline_ms\": 4294967295}") == 0,
           "deadline 4294967295: %s", out);
    result(at_build_request_deadline("add", args12, 2, NULL, out, sizeof out,
                                     &n) == AT_OK &&
               strcmp(out, "{\"func\": \"add\", \"args\": [1, 2]}") == 0,
           "no deadline: %s", out);
    /* one byte short for the deadline member: refused, not cut */
    result(at_build_request_deadline("add", args12, 2, &d, out, 58, &n) ==
               AT_E_NOSPACE, "a deadline body in a short buffer");
    result(at_code_from_name("deadline_exceeded") ==
                   AT_CODE_DEADLINE_EXCEEDED &&
               at_code_from_name("cancelled") == AT_CODE_CANCELLED &&
               strcmp(at_code_name(AT_CODE_UNKNOWN_TOPIC), "unknown_topic")
                   == 0,
           "section 10 code names");
}

/* A caller's stream: an event, a subscribe reply, a notification and the
 * awaited reply, glued, in random chunkings: every frame comes out whole
 * and in order (the call layer then drops all but the awaited one). */
static void test_glued10(const vec10_t *v, int nv, uint64_t seed)
{
    static uint8_t stream[8192];
    size_t len = 0;
    int i, round, ok = 1;
    rng_state = seed ^ 0x5EC710u;
    for (i = 0; i < nv; i++) {
        if (len + v[i].frame_len > sizeof stream)
            break;
        memcpy(stream + len, v[i].frame, v[i].frame_len);
        len += v[i].frame_len;
    }
    for (round = 0; round < 50 && ok; round++) {
        at_reader_t r;
        at_frame_t f;
        size_t pos = 0;
        int next = 0;
        at_reader_init(&r, reader_buf, sizeof reader_buf, AT_MAX_BODY);
        while (pos < len && ok) {
            size_t chunk = 1 + (size_t)(rnd() % 97);
            at_status_t st;
            if (chunk > len - pos)
                chunk = len - pos;
            at_reader_feed(&r, stream + pos, chunk);
            pos += chunk;
            while ((st = at_reader_next(&r, &f)) == AT_OK) {
                ok = next < i && f.flags == v[next].flags &&
                     f.seq == v[next].seq &&
                     f.length == v[next].frame_len - AT_HEADER_LEN;
                next++;
            }
            ok = ok && st == AT_NEED_MORE;
        }
        ok = ok && next == i;
    }
    result(ok, "section 10 vectors glued: not all whole and in order "
           "(round %d)", round);
}

static void test_section10(const char *path, uint64_t seed)
{
    vec10_t *v = NULL;
    int nv = load10(path, &v), i, n = nv < 0 ? -1 - nv : nv;
    unhex(S9_K_REQ_HEX, k_req, sizeof k_req);
    unhex(S9_K_REP_HEX, k_rep, sizeof k_rep);
    for (i = 0; i < 8; i++)
        vsid[i] = (uint8_t)(0xc0 + i);
    result(nv > 0, "%s: no section 10 vectors read", path);
    if (nv > 0) {
        printf("%d section 10 vectors from %s\n", nv, path);
        for (i = 0; i < nv; i++)
            test_vector10(&v[i]);
        test_build10(v, nv);
        test_glued10(v, nv, seed);
    }
    for (i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].key);
        free(v[i].body);
        free(v[i].frame);
    }
    free(v);
}

int main(int argc, char **argv)
{
    vec_t *v = NULL;
    int nv, i;
    uint64_t seed = 20240601u;

    const char *section10 = NULL;

    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s PATH/TO/frames.tsv [SEED] "
                "[PATH/TO/section10.tsv]\n", argv[0]);
        return 2;
    }
    for (i = 2; i < argc; i++) {
        if (argv[i][0] >= '0' && argv[i][0] <= '9')
            seed = strtoull(argv[i], NULL, 10);
        else
            section10 = argv[i];
    }
    nv = load(argv[1], &v);
    if (nv <= 0) {
        fprintf(stderr, "%s: no vectors read\n", argv[1]);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    printf("%d vectors from %s; seed %llu\n", nv, argv[1],
           (unsigned long long)seed);

    test_crc_and_header();
    test_numbers();
    test_build_request();
    test_parse_reply();
    test_reader_edges();
    for (i = 0; i < nv; i++)
        test_vector(&v[i]);
    test_glued(v, nv, seed, 200);
    if (section10 != NULL)
        test_section10(section10, seed);

    for (i = 0; i < nv; i++) {
        free(v[i].name);
        free(v[i].frame);
        free(v[i].decode);
        free(v[i].reply_kind);
        free(v[i].reply_value);
        free(v[i].reply_frame);
    }
    free(v);
    return test_summary();
}
