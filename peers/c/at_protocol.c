/*
 * at_protocol.c - the C peer of the AT remote-call protocol, version 1.
 * See at_protocol.h for the interface and ../../../shared/AT-PROTOCOL.md for
 * the wire contract.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "at_protocol.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ======================================================================== */
/* Names                                                                    */
/* ======================================================================== */

const char *at_status_str(at_status_t status)
{
    switch (status) {
    case AT_OK: return "ok";
    case AT_NEED_MORE: return "incomplete frame";
    case AT_E_BAD_MAGIC: return "bad magic";
    case AT_E_TOO_LARGE: return "frame too large";
    case AT_E_BAD_FLAGS: return "no single message type bit in flags";
    case AT_E_CHECKSUM: return "checksum mismatch";
    case AT_E_ARG: return "invalid argument";
    case AT_E_NOSPACE: return "buffer too small";
    case AT_E_BAD_BODY: return "invalid reply body";
    case AT_E_RESOLVE: return "cannot resolve host";
    case AT_E_CONNECT: return "cannot connect";
    case AT_E_IO: return "i/o error";
    case AT_E_TIMEOUT: return "timed out";
    case AT_E_CLOSED: return "connection closed before a reply";
    case AT_E_SEQ: return "reply with an unexpected seq";
    case AT_E_NOT_REPLY: return "a request where a reply was expected";
    case AT_E_AUTH: return "a reply that fails authentication";
    case AT_E_UNAUTHORIZED: return "unauthorized";
    case AT_E_UNAUTHENTICATED:
        return "an unauthenticated error reply to an authenticated request";
    case AT_E_REMOTE: return "the server answered with an error";
    case AT_E_BAD_PROOF:
        return "the server's proof does not verify: it does not hold this key";
    }
    return "unknown status";
}

static const char *const code_names[] = {
    NULL,
    "bad_frame",
    "checksum_mismatch",
    "frame_too_large",
    "bad_request",
    "unknown_function",
    "invalid_arguments",
    "division_by_zero",
    "overflow",
    "busy",
    "internal",
    "unauthorized",
    "deadline_exceeded",
    "cancelled",
    "unknown_topic",
};

#define N_CODES (sizeof code_names / sizeof code_names[0])

const char *at_code_name(at_code_t code)
{
    if ((size_t)code < N_CODES)
        return code_names[code];
    return NULL;
}

at_code_t at_code_from_name(const char *name)
{
    size_t i;
    if (name == NULL)
        return AT_CODE_OTHER;
    for (i = 1; i < N_CODES; i++)
        if (strcmp(name, code_names[i]) == 0)
            return (at_code_t)i;
    return AT_CODE_OTHER;
}

at_code_t at_status_code(at_status_t status)
{
    switch (status) {
    case AT_E_BAD_MAGIC:
    case AT_E_BAD_FLAGS:
        return AT_CODE_BAD_FRAME;
    case AT_E_TOO_LARGE:
        return AT_CODE_FRAME_TOO_LARGE;
    case AT_E_CHECKSUM:
        return AT_CODE_CHECKSUM_MISMATCH;
    default:
        return AT_CODE_OTHER;
    }
}

/* ======================================================================== */
/* CRC-32/ISO-HDLC                                                          */
/* ======================================================================== */

/* Table for the reflected polynomial 0xEDB88320 (zlib's crc32). */
static const uint32_t crc_table[256] = {
    0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau, 0x076dc419u, 0x706af48fu,
    0xe963a535u, 0x9e6495a3u, 0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u,
    0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u, 0x90bf1d91u, 0x1db71064u, 0x6ab020f2u,
    0xf3b97148u, 0x84be41deu, 0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u,
    0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu, 0x14015c4fu, 0x63066cd9u,
    0xfa0f3d63u, 0x8d080df5u, 0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u, 0xa2677172u,
    0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu, 0x35b5a8fau, 0x42b2986cu,
    0xdbbbc9d6u, 0xacbcf940u, 0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u,
    0x26d930acu, 0x51de003au, 0xc8d75180u, 0xbfd06116u, 0x21b4f4b5u, 0x56b3c423u,
    0xcfba9599u, 0xb8bda50fu, 0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u,
    0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du, 0x76dc4190u, 0x01db7106u,
    0x98d220bcu, 0xefd5102au, 0x71b18589u, 0x06b6b51fu, 0x9fbfe4a5u, 0xe8b8d433u,
    0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u, 0x7f6a0dbbu, 0x086d3d2du,
    0x91646c97u, 0xe6635c01u, 0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
    0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u, 0x65b0d9c6u, 0x12b7e950u,
    0x8bbeb8eau, 0xfcb9887cu, 0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u,
    0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u, 0x4adfa541u, 0x3dd895d7u,
    0xa4d1c46du, 0xd3d6f4fbu, 0x4369e96au, 0x346ed9fcu, 0xad678846u, 0xda60b8d0u,
    0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u, 0x5005713cu, 0x270241aau,
    0xbe0b1010u, 0xc90c2086u, 0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
    0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u, 0x59b33d17u, 0x2eb40d81u,
    0xb7bd5c3bu, 0xc0ba6cadu, 0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au,
    0xead54739u, 0x9dd277afu, 0x04db2615u, 0x73dc1683u, 0xe3630b12u, 0x94643b84u,
    0x0d6d6a3eu, 0x7a6a5aa8u, 0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u,
    0xf00f9344u, 0x8708a3d2u, 0x1e01f268u, 0x6906c2feu, 0xf762575du, 0x806567cbu,
    0x196c3671u, 0x6e6b06e7u, 0xfed41b76u, 0x89d32be0u, 0x10da7a5au, 0x67dd4accu,
    0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u, 0xd6d6a3e8u, 0xa1d1937eu,
    0x38d8c2c4u, 0x4fdff252u, 0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
    0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u, 0xdf60efc3u, 0xa867df55u,
    0x316e8eefu, 0x4669be79u, 0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u,
    0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu, 0xc5ba3bbeu, 0xb2bd0b28u,
    0x2bb45a92u, 0x5cb36a04u, 0xc2d7ffa7u, 0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du,
    0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au, 0x9c0906a9u, 0xeb0e363fu,
    0x72076785u, 0x05005713u, 0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u,
    0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u, 0x86d3d2d4u, 0xf1d4e242u,
    0x68ddb3f8u, 0x1fda836eu, 0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u,
    0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu, 0x8f659effu, 0xf862ae69u,
    0x616bffd3u, 0x166ccf45u, 0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u,
    0xa7672661u, 0xd06016f7u, 0x4969474du, 0x3e6e77dbu, 0xaed16a4au, 0xd9d65adcu,
    0x40df0b66u, 0x37d83bf0u, 0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
    0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u, 0xbad03605u, 0xcdd70693u,
    0x54de5729u, 0x23d967bfu, 0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
    0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

uint32_t at_crc32_update(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

uint32_t at_crc32(const void *data, size_t len)
{
    return at_crc32_update(0, data, len);
}

/* ======================================================================== */
/* Header and frames                                                        */
/* ======================================================================== */

void at_header_pack(const at_header_t *h, uint8_t out[AT_HEADER_LEN])
{
    at_header_t net;
    net.magic = htons(h->magic);
    net.flags = htons(h->flags);
    net.seq = htonl(h->seq);
    net.length = htonl(h->length);
    net.crc = htonl(h->crc);
    memcpy(out, &net, AT_HEADER_LEN);
}

void at_header_unpack(const uint8_t in[AT_HEADER_LEN], at_header_t *h)
{
    at_header_t net;
    memcpy(&net, in, AT_HEADER_LEN);
    h->magic = ntohs(net.magic);
    h->flags = ntohs(net.flags);
    h->seq = ntohl(net.seq);
    h->length = ntohl(net.length);
    h->crc = ntohl(net.crc);
}

uint16_t at_flags_kind(uint16_t flags)
{
    uint16_t t = (uint16_t)(flags & AT_FLAG_TYPE_MASK);
    if (t == AT_FLAG_REQUEST || t == AT_FLAG_RESPONSE ||
        t == AT_FLAG_ERROR || t == AT_FLAG_NOTIFY)
        return t;
    return 0;
}

static void make_header(at_header_t *h, uint16_t flags, uint32_t seq,
                        const void *body, size_t body_len)
{
    h->magic = (uint16_t)AT_MAGIC;
    h->flags = flags;
    h->seq = seq;
    h->length = (uint32_t)body_len;
    h->crc = body_len ? at_crc32(body, body_len) : 0;
}

at_status_t at_encode_frame(uint16_t flags, uint32_t seq,
                            const void *body, size_t body_len,
                            uint8_t *out, size_t cap, size_t *out_len)
{
    at_header_t h;
    if (out == NULL || (body == NULL && body_len != 0))
        return AT_E_ARG;
    if (body_len > (size_t)UINT32_MAX)
        return AT_E_ARG;
    if (cap < AT_HEADER_LEN || cap - AT_HEADER_LEN < body_len)
        return AT_E_NOSPACE;
    make_header(&h, flags, seq, body, body_len);
    at_header_pack(&h, out);
    if (body_len)
        memmove(out + AT_HEADER_LEN, body, body_len);
    if (out_len)
        *out_len = AT_HEADER_LEN + body_len;
    return AT_OK;
}

/* ======================================================================== */
/* Incremental reader                                                       */
/* ======================================================================== */

at_status_t at_reader_init(at_reader_t *r, uint8_t *buf, size_t cap,
                           uint32_t max_body)
{
    size_t room;
    if (r == NULL || buf == NULL || cap < AT_HEADER_LEN)
        return AT_E_ARG;
    r->buf = buf;
    r->cap = cap;
    room = cap - AT_HEADER_LEN;
    r->max_body = (size_t)max_body < room ? max_body
                  : (room > (size_t)UINT32_MAX ? UINT32_MAX : (uint32_t)room);
    at_reader_reset(r);
    return AT_OK;
}

void at_reader_reset(at_reader_t *r)
{
    r->start = r->end = 0;
    r->skip = 0;
    r->fatal = AT_OK;
    memset(&r->fatal_frame, 0, sizeof r->fatal_frame);
}

uint32_t at_reader_max_body(const at_reader_t *r)
{
    return r->max_body;
}

size_t at_reader_buffered(const at_reader_t *r)
{
    return r->end - r->start;
}

/* Moves the unconsumed bytes to the front of the buffer. */
static void reader_compact(at_reader_t *r)
{
    if (r->start == 0)
        return;
    if (r->end > r->start)
        memmove(r->buf, r->buf + r->start, r->end - r->start);
    r->end -= r->start;
    r->start = 0;
}

size_t at_reader_space(at_reader_t *r, uint8_t **where)
{
    reader_compact(r);
    *where = r->buf + r->end;
    return r->cap - r->end;
}

void at_reader_commit(at_reader_t *r, size_t n)
{
    size_t drop;
    if (n > r->cap - r->end)
        n = r->cap - r->end; /* a caller bug; never write past the buffer */
    drop = r->skip < n ? r->skip : n;
    if (drop) {
        memmove(r->buf + r->end, r->buf + r->end + drop, n - drop);
        r->skip -= drop;
        n -= drop;
    }
    r->end += n;
}

size_t at_reader_feed(at_reader_t *r, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    size_t taken = 0, room, n;
    uint8_t *where;

    /* Bytes the caller asked to skip are taken without being buffered. */
    if (r->skip) {
        n = r->skip < len ? r->skip : len;
        r->skip -= n;
        p += n;
        len -= n;
        taken += n;
    }
    if (len == 0)
        return taken;
    room = r->cap - r->end;
    if (room < len && r->start > 0) {
        reader_compact(r);
        room = r->cap - r->end;
    }
    where = r->buf + r->end;
    n = len < room ? len : room;
    memcpy(where, p, n);
    r->end += n;
    return taken + n;
}

at_status_t at_reader_next(at_reader_t *r, at_frame_t *frame)
{
    at_frame_t dummy;
    at_header_t h;
    const uint8_t *p;
    size_t avail, total;
    at_status_t st = AT_OK;

    if (frame == NULL)
        frame = &dummy;
    if (r->fatal != AT_OK) {
        *frame = r->fatal_frame;
        return r->fatal;
    }
    p = r->buf + r->start;
    avail = r->end - r->start;
    /* 1. magic, as soon as two bytes show it */
    if (avail >= 2 && (p[0] != (uint8_t)(AT_MAGIC >> 8) ||
                       p[1] != (uint8_t)(AT_MAGIC & 0xFFu))) {
        memset(&r->fatal_frame, 0, sizeof r->fatal_frame);
        r->fatal_frame.flags = 0;
        r->fatal_frame.seq = 0;
        r->fatal = AT_E_BAD_MAGIC;
        *frame = r->fatal_frame;
        return r->fatal;
    }
    if (avail < AT_HEADER_LEN)
        return AT_NEED_MORE;
    at_header_unpack(p, &h);
    frame->flags = h.flags;
    frame->seq = h.seq;
    frame->length = h.length;
    frame->crc = h.crc;
    frame->body = NULL;
    /* 2. length, from the header alone */
    if (h.length > r->max_body) {
        r->fatal_frame = *frame;
        r->fatal = AT_E_TOO_LARGE;
        return r->fatal;
    }
    total = AT_HEADER_LEN + (size_t)h.length;
    if (avail < total)
        return AT_NEED_MORE;
    frame->body = p + AT_HEADER_LEN;
    r->start += total;
    if (r->start == r->end)
        r->start = r->end = 0; /* the bytes stay where they are until fed */
    /* 3. type bits, 4. CRC: the frame is consumed either way */
    if (at_flags_kind(h.flags) == 0)
        st = AT_E_BAD_FLAGS;
    else if (at_crc32(frame->body, h.length) != h.crc)
        st = AT_E_CHECKSUM;
    return st;
}

void at_reader_skip(at_reader_t *r, size_t n)
{
    size_t avail = r->end - r->start;
    if (n < avail) {
        r->start += n;
    } else {
        r->skip += n - avail;
        r->start = r->end = 0;
    }
    r->fatal = AT_OK;
}

size_t at_reader_resync(at_reader_t *r)
{
    const uint8_t *p = r->buf + r->start;
    size_t avail = r->end - r->start, i;
    r->fatal = AT_OK;
    if (avail == 0)
        return 0;
    for (i = 1; i < avail; i++) {
        if (p[i] != (uint8_t)(AT_MAGIC >> 8))
            continue;
        if (i + 1 == avail || p[i + 1] == (uint8_t)(AT_MAGIC & 0xFFu))
            break; /* a magic, or a trailing first magic byte */
    }
    r->start += i;
    if (r->start == r->end)
        r->start = r->end = 0;
    return i;
}

/* ======================================================================== */
/* JSON                                                                     */
/* ======================================================================== */

/* Nesting depth allowed in a body (arrays and objects, the outer one
 * included), as the project's servers. */
#define JSON_MAX_DEPTH 32

/* Length of the valid UTF-8 sequence at p (before end), or 0 if invalid:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_len(const uint8_t *p, const uint8_t *end)
{
    size_t avail = (size_t)(end - p), n, i;
    uint8_t c = p[0], lo = 0x80, hi = 0xBF;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (avail < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* Length of the JSON number at the start of [p, end), or 0 if there is
 * none. */
static size_t number_len(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *s = p;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return 0;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else
        return 0;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    return (size_t)(p - s);
}

int at_json_is_number(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    if (s == NULL || len == 0)
        return 0;
    return number_len(p, p + len) == len;
}

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    int depth;
} json_t;

static void json_ws(json_t *j)
{
    while (j->p < j->end &&
           (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* Appends a byte to out[0..cap) at *n; counts it even when out of room. */
static void put(char *out, size_t cap, size_t *n, uint8_t c)
{
    if (out != NULL && *n < cap)
        out[*n] = (char)c;
    (*n)++;
}

static int hex4(const uint8_t *p, const uint8_t *end, unsigned *v)
{
    int i;
    *v = 0;
    if (end - p < 4)
        return -1;
    for (i = 0; i < 4; i++) {
        uint8_t c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return -1;
        *v = (*v << 4) | d;
    }
    return 0;
}

/* Parses the string at j->p (which must be '"'), checking it fully, and
 * writes it unescaped to out[0..cap) (out may be NULL). *len gets the full
 * unescaped length, which may exceed cap. Returns 0, or -1 if invalid. */
static int json_string(json_t *j, char *out, size_t cap, size_t *len)
{
    size_t n = 0;
    const uint8_t *p = j->p, *end = j->end;

    if (p >= end || *p != '"')
        return -1;
    p++;
    for (;;) {
        uint8_t c;
        if (p >= end)
            return -1;
        c = *p;
        if (c == '"') {
            p++;
            break;
        }
        if (c < 0x20)
            return -1; /* raw control characters are not allowed */
        if (c == '\\') {
            unsigned u, lo;
            if (end - p < 2)
                return -1;
            c = p[1];
            p += 2;
            switch (c) {
            case '"': put(out, cap, &n, '"'); break;
            case '\\': put(out, cap, &n, '\\'); break;
            case '/': put(out, cap, &n, '/'); break;
            case 'b': put(out, cap, &n, '\b'); break;
            case 'f': put(out, cap, &n, '\f'); break;
            case 'n': put(out, cap, &n, '\n'); break;
            case 'r': put(out, cap, &n, '\r'); break;
            case 't': put(out, cap, &n, '\t'); break;
            case 'u':
                if (hex4(p, end, &u) != 0)
                    return -1;
                p += 4;
                if (u >= 0xDC00 && u <= 0xDFFF)
                    return -1; /* a lone low surrogate */
                if (u >= 0xD800 && u <= 0xDBFF) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                        hex4(p + 2, end, &lo) != 0 ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return -1; /* a lone high surrogate */
                    p += 6;
                    u = 0x10000u + ((u - 0xD800u) << 10) + (lo - 0xDC00u);
                }
                if (u < 0x80) {
                    put(out, cap, &n, (uint8_t)u);
                } else if (u < 0x800) {
                    put(out, cap, &n, (uint8_t)(0xC0 | (u >> 6)));
                    put(out, cap, &n, (uint8_t)(0x80 | (u & 0x3F)));
                } else if (u < 0x10000) {
                    put(out, cap, &n, (uint8_t)(0xE0 | (u >> 12)));
                    put(out, cap, &n, (uint8_t)(0x80 | ((u >> 6) & 0x3F)));
                    put(out, cap, &n, (uint8_t)(0x80 | (u & 0x3F)));
                } else {
                    put(out, cap, &n, (uint8_t)(0xF0 | (u >> 18)));
                    put(out, cap, &n, (uint8_t)(0x80 | ((u >> 12) & 0x3F)));
                    put(out, cap, &n, (uint8_t)(0x80 | ((u >> 6) & 0x3F)));
                    put(out, cap, &n, (uint8_t)(0x80 | (u & 0x3F)));
                }
                break;
            default:
                return -1;
            }
        } else {
            size_t k = utf8_len(p, end), i;
            if (k == 0)
                return -1;
            for (i = 0; i < k; i++)
                put(out, cap, &n, p[i]);
            p += k;
        }
    }
    j->p = p;
    if (len)
        *len = n;
    return 0;
}

static int json_literal(json_t *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return -1;
    j->p += n;
    return 0;
}

/* Parses (and checks) any JSON value at j->p. Returns 0 or -1. */
static int json_value(json_t *j)
{
    size_t n;
    if (j->p >= j->end)
        return -1;
    switch (*j->p) {
    case '{':
    case '[': {
        uint8_t close = *j->p == '{' ? '}' : ']';
        int object = close == '}';
        if (++j->depth > JSON_MAX_DEPTH)
            return -1;
        j->p++;
        json_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return 0;
        }
        for (;;) {
            if (object) {
                if (json_string(j, NULL, 0, NULL) != 0)
                    return -1;
                json_ws(j);
                if (j->p >= j->end || *j->p != ':')
                    return -1;
                j->p++;
                json_ws(j);
            }
            if (json_value(j) != 0)
                return -1;
            json_ws(j);
            if (j->p >= j->end)
                return -1;
            if (*j->p == ',') {
                j->p++;
                json_ws(j);
                continue;
            }
            if (*j->p == close) {
                j->p++;
                break;
            }
            return -1;
        }
        j->depth--;
        return 0;
    }
    case '"':
        return json_string(j, NULL, 0, NULL);
    case 't':
        return json_literal(j, "true");
    case 'f':
        return json_literal(j, "false");
    case 'n':
        return json_literal(j, "null");
    default:
        n = number_len(j->p, j->end);
        if (n == 0)
            return -1;
        j->p += n;
        return 0;
    }
}

/* Appends the NUL-terminated text s to out[0..cap) at *n. */
static void put_str(char *out, size_t cap, size_t *n, const char *s)
{
    while (*s)
        put(out, cap, n, (uint8_t)*s++);
}

at_status_t at_build_request(const char *func, const char *const *args,
                             size_t nargs, char *out, size_t cap,
                             size_t *out_len)
{
    return at_build_request_deadline(func, args, nargs, NULL, out, cap,
                                     out_len);
}

at_status_t at_build_request_deadline(const char *func,
                                      const char *const *args, size_t nargs,
                                      const uint32_t *deadline_ms, char *out,
                                      size_t cap, size_t *out_len)
{
    static const char hexd[] = "0123456789abcdef";
    const uint8_t *p, *end;
    size_t n = 0, i;

    if (func == NULL || out == NULL || (args == NULL && nargs != 0))
        return AT_E_ARG;
    for (i = 0; i < nargs; i++)
        if (args[i] == NULL || !at_json_is_number(args[i], strlen(args[i])))
            return AT_E_ARG;
    p = (const uint8_t *)func;
    end = p + strlen(func);

    put_str(out, cap, &n, "{\"func\": \"");
    while (p < end) {
        uint8_t c = *p;
        size_t k;
        if (c < 0x20 || c == '"' || c == '\\') {
            put(out, cap, &n, '\\');
            switch (c) {
            case '"': put(out, cap, &n, '"'); break;
            case '\\': put(out, cap, &n, '\\'); break;
            case '\b': put(out, cap, &n, 'b'); break;
            case '\f': put(out, cap, &n, 'f'); break;
            case '\n': put(out, cap, &n, 'n'); break;
            case '\r': put(out, cap, &n, 'r'); break;
            case '\t': put(out, cap, &n, 't'); break;
            default:
                put_str(out, cap, &n, "u00");
                put(out, cap, &n, (uint8_t)hexd[c >> 4]);
                put(out, cap, &n, (uint8_t)hexd[c & 15]);
            }
            p++;
            continue;
        }
        k = utf8_len(p, end);
        if (k == 0)
            return AT_E_ARG;
        while (k--)
            put(out, cap, &n, *p++);
    }
    put_str(out, cap, &n, "\", \"args\": [");
    for (i = 0; i < nargs; i++) {
        if (i)
            put_str(out, cap, &n, ", ");
        put_str(out, cap, &n, args[i]);
    }
    put_str(out, cap, &n, "]");
    if (deadline_ms != NULL) {
        char num[16];
        snprintf(num, sizeof num, "%lu", (unsigned long)*deadline_ms);
        put_str(out, cap, &n, ", \"deadline_ms\": ");
        put_str(out, cap, &n, num);
    }
    put_str(out, cap, &n, "}");
    if (n >= cap) {
        if (cap)
            out[0] = '\0';
        return AT_E_NOSPACE;
    }
    out[n] = '\0';
    if (out_len)
        *out_len = n;
    return AT_OK;
}

enum { M_STATUS, M_RESULT, M_CODE, M_MESSAGE, M_COUNT };
static const char *const reply_members[M_COUNT] = {
    "status", "result", "code", "message"
};

at_status_t at_parse_reply(const uint8_t *body, size_t len,
                           char *scratch, size_t scratch_cap,
                           at_reply_t *reply)
{
    json_t j;
    size_t used = 0;
    int seen[M_COUNT] = {0, 0, 0, 0};

    if ((body == NULL && len != 0) || scratch == NULL || reply == NULL)
        return AT_E_ARG;
    memset(reply, 0, sizeof *reply);
    if (len == 0)
        return AT_E_BAD_BODY;
    j.p = body;
    j.end = body + len;
    j.depth = 1;

    json_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return AT_E_BAD_BODY;
    j.p++;
    json_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            char key[16];
            size_t key_len, m, n;
            const uint8_t *start;

            if (json_string(&j, key, sizeof key, &key_len) != 0)
                return AT_E_BAD_BODY;
            json_ws(&j);
            if (j.p >= j.end || *j.p != ':')
                return AT_E_BAD_BODY;
            j.p++;
            json_ws(&j);
            for (m = 0; m < M_COUNT; m++)
                if (key_len == strlen(reply_members[m]) &&
                    memcmp(key, reply_members[m], key_len) == 0)
                    break;
            if (m < M_COUNT && seen[m])
                return AT_E_BAD_BODY; /* a known member named twice */
            if (m == M_RESULT) {
                start = j.p;
                if (json_value(&j) != 0)
                    return AT_E_BAD_BODY;
                n = (size_t)(j.p - start);
                if (scratch_cap - used < n + 1)
                    return AT_E_NOSPACE;
                memcpy(scratch + used, start, n);
                scratch[used + n] = '\0';
                reply->result = scratch + used;
                reply->result_len = n;
                used += n + 1;
            } else if (m < M_COUNT) {
                char *dst = scratch + used;
                size_t room = scratch_cap - used;
                if (j.p >= j.end || *j.p != '"')
                    return AT_E_BAD_BODY; /* must be a string */
                if (json_string(&j, dst, room, &n) != 0)
                    return AT_E_BAD_BODY;
                if (room < n + 1)
                    return AT_E_NOSPACE;
                dst[n] = '\0';
                used += n + 1;
                if (m == M_STATUS) {
                    reply->status = dst;
                    reply->status_len = n;
                } else if (m == M_CODE) {
                    reply->code = dst;
                    reply->code_len = n;
                } else {
                    reply->message = dst;
                    reply->message_len = n;
                }
            } else if (json_value(&j) != 0) {
                return AT_E_BAD_BODY;
            }
            if (m < M_COUNT)
                seen[m] = 1;
            json_ws(&j);
            if (j.p >= j.end)
                return AT_E_BAD_BODY;
            if (*j.p == ',') {
                j.p++;
                json_ws(&j);
                continue;
            }
            if (*j.p == '}') {
                j.p++;
                break;
            }
            return AT_E_BAD_BODY;
        }
    }
    json_ws(&j);
    if (j.p != j.end)
        return AT_E_BAD_BODY; /* trailing bytes */

    if (reply->status == NULL)
        return AT_E_BAD_BODY;
    if (reply->status_len == 7 && memcmp(reply->status, "success", 7) == 0) {
        if (reply->result == NULL)
            return AT_E_BAD_BODY;
        reply->kind = AT_REPLY_SUCCESS;
    } else if (reply->status_len == 5 &&
               memcmp(reply->status, "error", 5) == 0) {
        if (reply->code == NULL)
            return AT_E_BAD_BODY;
        reply->kind = AT_REPLY_ERROR;
    } else {
        return AT_E_BAD_BODY;
    }
    if (reply->code != NULL && strlen(reply->code) == reply->code_len)
        reply->code_id = at_code_from_name(reply->code);
    if (reply->message == NULL) {
        reply->message = "";
        reply->message_len = 0;
    }
    return AT_OK;
}

/* Walks the members of the object that is the whole of json[0..len), and
 * sets *value / *value_len to the raw text of the member named `name`.
 * Returns 0, or -1 if the text is not such an object or the member is
 * missing or named twice. */
static int json_find_member(const uint8_t *json, size_t len, const char *name,
                            const uint8_t **value, size_t *value_len)
{
    json_t j;
    size_t name_len = strlen(name);
    int found = 0;

    if (json == NULL || len == 0)
        return -1;
    j.p = json;
    j.end = json + len;
    j.depth = 1;
    json_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return -1;
    j.p++;
    json_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            char key[64];
            size_t key_len;
            const uint8_t *start;
            int match;

            if (json_string(&j, key, sizeof key, &key_len) != 0)
                return -1;
            match = key_len == name_len && key_len < sizeof key &&
                    memcmp(key, name, key_len) == 0;
            json_ws(&j);
            if (j.p >= j.end || *j.p != ':')
                return -1;
            j.p++;
            json_ws(&j);
            start = j.p;
            if (json_value(&j) != 0)
                return -1;
            if (match) {
                if (found)
                    return -1; /* named twice */
                found = 1;
                *value = start;
                *value_len = (size_t)(j.p - start);
            }
            json_ws(&j);
            if (j.p >= j.end)
                return -1;
            if (*j.p == ',') {
                j.p++;
                json_ws(&j);
                continue;
            }
            if (*j.p == '}') {
                j.p++;
                break;
            }
            return -1;
        }
    }
    json_ws(&j);
    if (j.p != j.end)
        return -1; /* trailing bytes */
    return found ? 0 : -1;
}

at_status_t at_json_member(const uint8_t *json, size_t len, const char *name,
                           const uint8_t **value, size_t *value_len)
{
    const uint8_t *v = NULL;
    size_t n = 0;
    if (name == NULL || value == NULL || value_len == NULL ||
        (json == NULL && len != 0))
        return AT_E_ARG;
    if (json_find_member(json, len, name, &v, &n) != 0)
        return AT_E_BAD_BODY;
    *value = v;
    *value_len = n;
    return AT_OK;
}

at_status_t at_json_member_string(const uint8_t *json, size_t len,
                                  const char *name, char *out, size_t cap,
                                  size_t *str_len)
{
    const uint8_t *v = NULL;
    size_t n = 0, full = 0;
    json_t j;

    if (name == NULL || out == NULL || cap == 0 ||
        (json == NULL && len != 0))
        return AT_E_ARG;
    out[0] = '\0';
    if (json_find_member(json, len, name, &v, &n) != 0 || *v != '"')
        return AT_E_BAD_BODY;
    j.p = v;
    j.end = v + n;
    j.depth = 1;
    if (json_string(&j, out, cap - 1, &full) != 0)
        return AT_E_BAD_BODY; /* cannot happen: checked above */
    out[full < cap - 1 ? full : cap - 1] = '\0';
    if (str_len)
        *str_len = full;
    return AT_OK;
}

/* ======================================================================== */
/* Calls                                                                    */
/* ======================================================================== */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until `deadline`, for poll(): at least 0. */
static int left_ms(long long deadline)
{
    long long d = deadline - now_ms();
    if (d < 0)
        return 0;
    if (d > 0x7FFFFFFF)
        return 0x7FFFFFFF;
    return (int)d;
}

static void set_detail(at_call_result_t *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->detail, sizeof res->detail, fmt, ap);
    va_end(ap);
}

/* "127.0.0.1 port 16724" or "::1 port 16724" */
static void addr_text(const struct addrinfo *ai, char *out, size_t cap)
{
    char host[96], serv[32];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, serv,
                    sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(out, cap, "(unprintable address)");
    else
        snprintf(out, cap, "%s port %s", host, serv);
}

static void fill_opts(const at_call_opts_t *in, at_call_opts_t *o)
{
    memset(o, 0, sizeof *o);
    if (in)
        *o = *in;
    if (o->timeout_ms <= 0)
        o->timeout_ms = AT_DEFAULT_TIMEOUT_MS;
    if (o->udp_first_wait_ms <= 0)
        o->udp_first_wait_ms = 250;
    if (o->udp_max_wait_ms <= 0)
        o->udp_max_wait_ms = 2000;
    if (o->udp_max_wait_ms < o->udp_first_wait_ms)
        o->udp_max_wait_ms = o->udp_first_wait_ms;
    if (o->udp_max_tries <= 0)
        o->udp_max_tries = 8;
}

/* The request frame of a call: head (the 16-byte header) || body || tail. */
typedef struct {
    const uint8_t *head;
    const void *body;
    size_t body_len;
    const void *tail;
    size_t tail_len;
} request_t;

/* A request_t from its three parts. */
static request_t request(const uint8_t *head, const void *body,
                         size_t body_len, const void *tail, size_t tail_len)
{
    request_t rq;
    rq.head = head;
    rq.body = body;
    rq.body_len = body_len;
    rq.tail = tail;
    rq.tail_len = tail_len;
    return rq;
}

/* Checks a call's arguments and resolves the server. */
static at_status_t call_prepare(const char *host, const char *port,
                                const request_t *rq,
                                uint8_t *buf, size_t cap, int socktype,
                                const at_call_opts_t *opts,
                                at_call_result_t *res, struct addrinfo **ai)
{
    struct addrinfo hints;
    size_t body_len;
    int rc;

    if (res == NULL)
        return AT_E_ARG;
    memset(res, 0, sizeof *res);
    if (host == NULL || port == NULL || buf == NULL || rq->head == NULL ||
        (rq->body == NULL && rq->body_len != 0) ||
        (rq->tail == NULL && rq->tail_len != 0) ||
        rq->tail_len > (size_t)UINT32_MAX) {
        set_detail(res, "invalid argument");
        return AT_E_ARG;
    }
    body_len = rq->body_len;
    if (body_len > AT_MAX_BODY || rq->tail_len > AT_MAX_BODY - body_len) {
        set_detail(res, "request body of %lu bytes is over the limit of %u",
                   (unsigned long)body_len + (unsigned long)rq->tail_len,
                   AT_MAX_BODY);
        return AT_E_ARG;
    }
    body_len += rq->tail_len;
    {
        at_header_t h;
        at_header_unpack(rq->head, &h);
        if (h.magic != AT_MAGIC || h.length != body_len) {
            set_detail(res, "invalid argument: the request header does not "
                       "match its body");
            return AT_E_ARG;
        }
    }
    if (cap < AT_HEADER_LEN) {
        set_detail(res, "reply buffer too small");
        return AT_E_NOSPACE;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = opts->family;
    hints.ai_socktype = socktype;
    rc = getaddrinfo(host, port, &hints, ai);
    if (rc != 0) {
        if (rc == EAI_SYSTEM)
            res->sys_errno = errno;
        set_detail(res, "cannot resolve %s port %s: %s", host, port,
                   rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return AT_E_RESOLVE;
    }
    return AT_OK;
}

static int set_nonblock_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
        return -1;
    return 0;
}

/* Waits until fd is ready for `events` or the deadline passes.
 * Returns 1 ready, 0 timed out, -1 error (errno set). */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        struct pollfd pfd;
        int rc;
        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;
        rc = poll(&pfd, 1, left_ms(deadline));
        if (rc > 0)
            return 1;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Connects a non-blocking TCP socket to ai before the deadline.
 * Returns the socket, -1 on failure (*err set; 0 for a timeout). */
static int tcp_connect(const struct addrinfo *ai, long long deadline,
                       int *err)
{
    int fd, rc, soerr = 0;
    socklen_t len = sizeof soerr;

    *err = 0;
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    if (set_nonblock_cloexec(fd) != 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS && errno != EINTR) {
        *err = errno;
        close(fd);
        return -1;
    }
    rc = wait_fd(fd, POLLOUT, deadline);
    if (rc <= 0) {
        *err = rc < 0 ? errno : 0;
        close(fd);
        return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        soerr = errno;
    if (soerr != 0) {
        *err = soerr;
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends the whole iovec array over a non-blocking stream socket.
 * Returns 0, or -1 (errno set; ETIMEDOUT for the deadline). */
static int send_all(int fd, struct iovec *iov, int iovcnt, long long deadline)
{
    while (iovcnt > 0) {
        struct msghdr msg;
        ssize_t n;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = iovcnt;
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            int rc;
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            rc = wait_fd(fd, POLLOUT, deadline);
            if (rc < 0)
                return -1;
            if (rc == 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            continue;
        }
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Answers a plain call from the server with an error reply, `seq` its
 * seq: unknown_function, or unauthorized if `keyed`. Best effort: a
 * failure to send is left to the reading that follows. */
static void answer_call(int fd, uint32_t seq, int keyed, long long deadline)
{
    static const char unknown[] = "{\"status\": \"error\", \"code\": "
        "\"unknown_function\", \"message\": \"this client serves no "
        "functions\"}";
    static const char unauthorized[] = "{\"status\": \"error\", \"code\": "
        "\"unauthorized\", \"message\": \"authentication required\"}";
    const char *body = keyed ? unauthorized : unknown;
    size_t len = keyed ? sizeof unauthorized - 1 : sizeof unknown - 1;
    uint8_t head[AT_HEADER_LEN];
    struct iovec iov[2];
    at_header_t h;

    make_header(&h, (uint16_t)AT_FLAG_ERROR, seq, body, len);
    at_header_pack(&h, head);
    iov[0].iov_base = head;
    iov[0].iov_len = sizeof head;
    iov[1].iov_base = (void *)(uintptr_t)body;
    iov[1].iov_len = len;
    (void)send_all(fd, iov, 2, deadline);
}

/* Reads one reply frame from a connected TCP socket: one that `check`
 * (if not NULL) accepts. *decided (if not NULL) is set to 1 when a whole
 * reply frame was read and answers the call (accepted or refused). */
static at_status_t tcp_read_reply(int fd, uint32_t seq, uint8_t *buf,
                                  size_t cap, uint32_t max_body,
                                  long long deadline, const char *peer,
                                  at_reply_check_t check, void *ctx,
                                  int *decided, at_call_result_t *res)
{
    at_reader_t r;
    at_frame_t f;
    size_t got = 0;
    const char *last_ignored = NULL;

    at_reader_init(&r, buf, cap, max_body);
    for (;;) {
        uint8_t *where;
        size_t room;
        ssize_t n;
        at_status_t st = at_reader_next(&r, &f);

        if (st == AT_OK) {
            uint16_t kind = at_flags_kind(f.flags);
            if (kind == AT_FLAG_REQUEST) {
                /* A call towards this client (contract 10.5), which never
                 * called rpc.peer and serves nothing: a plain one is
                 * answered unknown_function (unauthorized when the client
                 * holds a key, 10.6: the calls with a reply check), a
                 * sealed one dropped (its answer needs the session's
                 * window); the call goes on. */
                res->ignored++;
                if (!(f.flags & AT_FLAG_AUTH)) {
                    answer_call(fd, f.seq, check != NULL, deadline);
                    last_ignored = "a call from the server (answered)";
                } else {
                    last_ignored = "a sealed call from the server (dropped)";
                }
                continue;
            }
            if (kind == AT_FLAG_NOTIFY) {
                /* An event or a notification (contract 10.2, 10.3): never
                 * the reply, and this client holds no topic and serves no
                 * function, so it is dropped (sealed or not) and the call
                 * goes on. */
                res->ignored++;
                last_ignored = "a NOTIFY frame (event or notification)";
                continue;
            }
            if (f.seq != seq && !(kind == AT_FLAG_ERROR && f.seq == 0)) {
                /* A reply this call does not await (10.5: dropped, the
                 * connection kept). The stream is in step: go on. */
                res->ignored++;
                last_ignored = "a reply with another seq";
                continue;
            }
            if (check != NULL) {
                const char *why = NULL;
                at_status_t cs = check(ctx, &f, &why, res);
                if (cs == AT_NEED_MORE) {
                    res->ignored++;
                    last_ignored = why;
                    continue;
                }
                if (cs != AT_OK) {
                    if (decided)
                        *decided = 1;
                    return cs;
                }
            }
            if (decided)
                *decided = 1;
            res->reply = f;
            return AT_OK;
        }
        if (st != AT_NEED_MORE) {
            if (st == AT_E_TOO_LARGE)
                set_detail(res, "bad reply from %s: body length %lu is over "
                           "the limit of %lu", peer, (unsigned long)f.length,
                           (unsigned long)at_reader_max_body(&r));
            else
                set_detail(res, "bad reply from %s: %s", peer,
                           at_status_str(st));
            return st;
        }
        room = at_reader_space(&r, &where);
        if (room == 0) { /* cannot happen: the reader fits a whole frame */
            set_detail(res, "reply buffer too small");
            return AT_E_NOSPACE;
        }
        n = recv(fd, where, room, 0);
        if (n > 0) {
            at_reader_commit(&r, (size_t)n);
            got += (size_t)n;
            continue;
        }
        if (n == 0) {
            if (got == 0)
                set_detail(res, "%s closed the connection without a reply",
                           peer);
            else
                set_detail(res, "%s closed the connection in the middle of "
                           "a reply (%lu bytes received)", peer,
                           (unsigned long)got);
            return AT_E_CLOSED;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(fd, POLLIN, deadline);
            if (rc > 0)
                continue;
            if (rc == 0) {
                set_detail(res, "no reply from %s in time%s%s", peer,
                           last_ignored ? "; last frame ignored: " : "",
                           last_ignored ? last_ignored : "");
                return AT_E_TIMEOUT;
            }
        }
        res->sys_errno = errno;
        set_detail(res, "receiving from %s: %s", peer, strerror(errno));
        return AT_E_IO;
    }
}

/* The iovecs of a request frame; returns how many are used. */
static int request_iov(const request_t *rq, struct iovec iov[3])
{
    int n = 1;
    iov[0].iov_base = (void *)(uintptr_t)rq->head;
    iov[0].iov_len = AT_HEADER_LEN;
    if (rq->body_len) {
        iov[n].iov_base = (void *)(uintptr_t)rq->body;
        iov[n++].iov_len = rq->body_len;
    }
    if (rq->tail_len) {
        iov[n].iov_base = (void *)(uintptr_t)rq->tail;
        iov[n++].iov_len = rq->tail_len;
    }
    return n;
}

/* The TCP call of the request frame `rq`. */
static at_status_t call_tcp(const char *host, const char *port, uint32_t seq,
                            const request_t *rq,
                            uint8_t *buf, size_t cap, uint32_t max_body,
                            const at_call_opts_t *opts_in,
                            at_reply_check_t check, void *ctx,
                            at_call_result_t *res)
{
    at_call_opts_t opts;
    struct addrinfo *list = NULL, *ai;
    long long deadline;
    at_status_t st;
    int fd = -1, err = 0, timed_out = 0, decided = 0, niov;
    char peer[160] = "";
    struct iovec iov[3];

    fill_opts(opts_in, &opts);
    st = call_prepare(host, port, rq, buf, cap, SOCK_STREAM, &opts, res,
                      &list);
    if (st != AT_OK)
        return st;
    deadline = now_ms() + opts.timeout_ms;

    for (ai = list; ai != NULL; ai = ai->ai_next) {
        addr_text(ai, peer, sizeof peer);
        res->tries++;
        fd = tcp_connect(ai, deadline, &err);
        if (fd >= 0)
            break;
        if (err == 0) {
            timed_out = 1;
            break;
        }
    }
    freeaddrinfo(list);
    if (fd < 0) {
        if (timed_out) {
            set_detail(res, "connecting to %s: timed out", peer);
            return AT_E_TIMEOUT;
        }
        res->sys_errno = err;
        set_detail(res, "cannot connect to %s: %s", peer, strerror(err));
        return AT_E_CONNECT;
    }

    niov = request_iov(rq, iov);
    if (send_all(fd, iov, niov, deadline) != 0) {
        int e = errno;
        /* The server may have answered (frame_too_large, busy) and closed:
         * its reply, if any, says more than EPIPE. */
        if (e != ETIMEDOUT) {
            st = tcp_read_reply(fd, seq, buf, cap, max_body, deadline, peer,
                                check, ctx, &decided, res);
            if (decided) {
                close(fd);
                return st;
            }
        }
        close(fd);
        memset(res->detail, 0, sizeof res->detail);
        if (e == ETIMEDOUT) {
            set_detail(res, "sending to %s: timed out", peer);
            return AT_E_TIMEOUT;
        }
        res->sys_errno = e;
        set_detail(res, "sending to %s: %s", peer, strerror(e));
        return AT_E_IO;
    }
    st = tcp_read_reply(fd, seq, buf, cap, max_body, deadline, peer, check,
                        ctx, NULL, res);
    close(fd);
    return st;
}

/* The header of a plain request (zeros if the body is invalid: the call
 * then fails in call_prepare before anything is sent). */
static void plain_head(uint32_t seq, const void *body, size_t body_len,
                       uint8_t head[AT_HEADER_LEN])
{
    at_header_t h;
    if ((body == NULL && body_len != 0) || body_len > AT_MAX_BODY) {
        memset(head, 0, AT_HEADER_LEN);
        return;
    }
    make_header(&h, (uint16_t)AT_FLAG_REQUEST, seq, body, body_len);
    at_header_pack(&h, head);
}

at_status_t at_call_tcp(const char *host, const char *port, uint32_t seq,
                        const void *body, size_t body_len,
                        uint8_t *buf, size_t cap,
                        const at_call_opts_t *opts, at_call_result_t *res)
{
    uint8_t head[AT_HEADER_LEN];
    request_t rq;
    plain_head(seq, body, body_len, head);
    rq = request(head, body, body_len, NULL, 0);
    return call_tcp(host, port, seq, &rq, buf, cap, AT_MAX_BODY, opts, NULL,
                    NULL, res);
}

at_status_t at_call_tcp_frame(const char *host, const char *port,
                              uint32_t seq, const uint8_t *head,
                              const void *body, size_t body_len,
                              const void *tail, size_t tail_len,
                              uint8_t *buf, size_t cap,
                              uint32_t max_reply_body,
                              const at_call_opts_t *opts,
                              at_reply_check_t check, void *check_ctx,
                              at_call_result_t *res)
{
    request_t rq = request(head, body, body_len, tail, tail_len);
    return call_tcp(host, port, seq, &rq, buf, cap,
                    max_reply_body ? max_reply_body : AT_MAX_BODY, opts,
                    check, check_ctx, res);
}

/* A small PRNG for the jitter (xorshift32). */
static uint32_t next_rand(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Checks a received datagram; returns NULL if it is the awaited reply, or
 * why it is ignored. */
static const char *udp_check(const uint8_t *d, size_t n, int truncated,
                             uint32_t seq, uint32_t max_body, at_frame_t *f)
{
    at_header_t h;
    uint16_t kind;
    if (truncated)
        return "datagram larger than the reply buffer";
    if (n < AT_HEADER_LEN)
        return "datagram shorter than a header";
    at_header_unpack(d, &h);
    if (h.magic != AT_MAGIC)
        return "bad magic";
    if (h.length > max_body)
        return "frame too large";
    if (n != AT_HEADER_LEN + (size_t)h.length)
        return "datagram size differs from 16 + length";
    kind = at_flags_kind(h.flags);
    if (kind == 0)
        return "no single message type bit in flags";
    if (at_crc32(d + AT_HEADER_LEN, h.length) != h.crc)
        return "checksum mismatch";
    if (kind == AT_FLAG_REQUEST)
        return "a request, not a reply";
    if (kind == AT_FLAG_NOTIFY)
        return "a NOTIFY frame (event or notification)";
    if (h.seq != seq)
        return "a reply with another seq";
    f->flags = h.flags;
    f->seq = h.seq;
    f->length = h.length;
    f->crc = h.crc;
    f->body = d + AT_HEADER_LEN;
    return NULL;
}

/* The UDP call of the request frame `rq`. */
static at_status_t call_udp(const char *host, const char *port, uint32_t seq,
                            const request_t *rq,
                            uint8_t *buf, size_t cap, uint32_t limit,
                            const at_call_opts_t *opts_in,
                            at_reply_check_t check, void *ctx,
                            at_call_result_t *res)
{
    at_call_opts_t opts;
    struct addrinfo *list = NULL, *ai;
    long long deadline;
    at_status_t st;
    uint32_t rng, max_body;
    char peer[160] = "";
    const char *last_ignored = NULL;
    int refused_errno = 0, other_errno = 0;
    struct timespec ts;

    fill_opts(opts_in, &opts);
    st = call_prepare(host, port, rq, buf, cap, SOCK_DGRAM, &opts, res,
                      &list);
    if (st != AT_OK)
        return st;
    deadline = now_ms() + opts.timeout_ms;
    max_body = cap - AT_HEADER_LEN < limit ? (uint32_t)(cap - AT_HEADER_LEN)
                                           : limit;
    clock_gettime(CLOCK_REALTIME, &ts);
    rng = (uint32_t)ts.tv_nsec ^ ((uint32_t)ts.tv_sec << 7) ^
          ((uint32_t)getpid() << 16) ^ seq;
    if (rng == 0)
        rng = 0x9E3779B9u;

    for (ai = list; ai != NULL && left_ms(deadline) > 0; ai = ai->ai_next) {
        int fd, tries = 0, refused = 0;
        long wait = opts.udp_first_wait_ms;

        addr_text(ai, peer, sizeof peer);
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0 || set_nonblock_cloexec(fd) != 0 ||
            connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            other_errno = errno;
            if (fd >= 0)
                close(fd);
            continue;
        }
        while (!refused && tries < opts.udp_max_tries &&
               left_ms(deadline) > 0) {
            struct iovec iov[3];
            struct msghdr msg;
            long long until;
            long jittered;

            /* send (or resend the same bytes, same seq) */
            memset(&msg, 0, sizeof msg);
            msg.msg_iov = iov;
            msg.msg_iovlen = request_iov(rq, iov);
            if (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) {
                if (errno == EINTR || errno == EAGAIN ||
                    errno == EWOULDBLOCK || errno == ENOBUFS) {
                    /* treat as a lost datagram */
                } else if (errno == ECONNREFUSED) {
                    refused_errno = errno;
                    refused = 1;
                    break;
                } else {
                    res->sys_errno = errno;
                    set_detail(res, "sending to %s: %s", peer,
                               strerror(errno));
                    close(fd);
                    freeaddrinfo(list);
                    return AT_E_IO;
                }
            }
            tries++;
            res->tries++;

            /* wait for the reply: wait * [0.8, 1.2), then double */
            jittered = wait * 8 / 10 +
                       (long)(next_rand(&rng) % (uint32_t)(wait * 4 / 10 + 1));
            until = now_ms() + jittered;
            if (until > deadline)
                until = deadline;
            wait *= 2;
            if (wait > opts.udp_max_wait_ms)
                wait = opts.udp_max_wait_ms;

            for (;;) {
                int rc = wait_fd(fd, POLLIN, until);
                ssize_t n;
                struct msghdr rmsg;
                struct iovec riov;
                at_frame_t f;
                const char *why;

                if (rc == 0)
                    break; /* retransmit */
                if (rc < 0) {
                    res->sys_errno = errno;
                    set_detail(res, "waiting for %s: %s", peer,
                               strerror(errno));
                    close(fd);
                    freeaddrinfo(list);
                    return AT_E_IO;
                }
                riov.iov_base = buf;
                riov.iov_len = cap;
                memset(&rmsg, 0, sizeof rmsg);
                rmsg.msg_iov = &riov;
                rmsg.msg_iovlen = 1;
                n = recvmsg(fd, &rmsg, 0);
                if (n < 0) {
                    if (errno == EINTR || errno == EAGAIN ||
                        errno == EWOULDBLOCK)
                        continue;
                    if (errno == ECONNREFUSED) {
                        refused_errno = errno;
                        refused = 1;
                        break;
                    }
                    res->sys_errno = errno;
                    set_detail(res, "receiving from %s: %s", peer,
                               strerror(errno));
                    close(fd);
                    freeaddrinfo(list);
                    return AT_E_IO;
                }
                why = udp_check(buf, (size_t)n,
                                (rmsg.msg_flags & MSG_TRUNC) != 0, seq,
                                max_body, &f);
                if (why == NULL && check != NULL) {
                    at_status_t cs = check(ctx, &f, &why, res);
                    if (cs == AT_NEED_MORE) {
                        if (why == NULL)
                            why = "refused by the reply check";
                    } else if (cs != AT_OK) {
                        close(fd);
                        freeaddrinfo(list);
                        return cs;
                    } else {
                        why = NULL;
                    }
                }
                if (why == NULL) {
                    res->reply = f;
                    close(fd);
                    freeaddrinfo(list);
                    return AT_OK;
                }
                res->ignored++;
                last_ignored = why;
            }
        }
        close(fd);
        if (!refused) {
            /* tries or time used up on an address that did not refuse */
            set_detail(res, "no reply from %s after %u tries in %d ms%s%s",
                       peer, (unsigned)tries, opts.timeout_ms,
                       last_ignored ? "; last datagram ignored: " : "",
                       last_ignored ? last_ignored : "");
            freeaddrinfo(list);
            return AT_E_TIMEOUT;
        }
    }
    freeaddrinfo(list);
    if (refused_errno) {
        res->sys_errno = refused_errno;
        set_detail(res, "cannot reach %s over UDP: %s", peer,
                   strerror(refused_errno));
        return AT_E_CONNECT;
    }
    if (other_errno && res->tries == 0) {
        res->sys_errno = other_errno;
        set_detail(res, "cannot reach %s over UDP: %s", peer,
                   strerror(other_errno));
        return AT_E_CONNECT;
    }
    set_detail(res, "no reply from %s within %d ms", peer, opts.timeout_ms);
    return AT_E_TIMEOUT;
}

at_status_t at_call_udp(const char *host, const char *port, uint32_t seq,
                        const void *body, size_t body_len,
                        uint8_t *buf, size_t cap,
                        const at_call_opts_t *opts, at_call_result_t *res)
{
    uint8_t head[AT_HEADER_LEN];
    request_t rq;
    plain_head(seq, body, body_len, head);
    rq = request(head, body, body_len, NULL, 0);
    return call_udp(host, port, seq, &rq, buf, cap, AT_MAX_BODY, opts, NULL,
                    NULL, res);
}

at_status_t at_call_udp_frame(const char *host, const char *port,
                              uint32_t seq, const uint8_t *head,
                              const void *body, size_t body_len,
                              const void *tail, size_t tail_len,
                              uint8_t *buf, size_t cap,
                              uint32_t max_reply_body,
                              const at_call_opts_t *opts,
                              at_reply_check_t check, void *check_ctx,
                              at_call_result_t *res)
{
    request_t rq = request(head, body, body_len, tail, tail_len);
    return call_udp(host, port, seq, &rq, buf, cap,
                    max_reply_body ? max_reply_body : AT_MAX_BODY, opts,
                    check, check_ctx, res);
}

/* ======================================================================== */
/* Notifications (contract 10.2)                                            */
/* ======================================================================== */

/* How long a TCP notification lingers, at most, for the peer to close. */
#define NOTIFY_LINGER_MS 1000

/* Reads and discards what the peer sends until it closes, the deadline, or
 * 64 KiB: lets a connection whose sending side is shut close cleanly. */
static void drain(int fd, long long deadline)
{
    uint8_t junk[4096];
    size_t total = 0;
    while (total < 65536) {
        ssize_t n = recv(fd, junk, sizeof junk, 0);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (n == 0)
            return;
        if (errno == EINTR)
            continue;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) &&
            wait_fd(fd, POLLIN, deadline) > 0)
            continue;
        return;
    }
}

at_status_t at_notify_tcp_frame(const char *host, const char *port,
                                const uint8_t *head, const void *body,
                                size_t body_len, const void *tail,
                                size_t tail_len, const at_call_opts_t *opts_in,
                                at_call_result_t *res)
{
    uint8_t unused[AT_HEADER_LEN]; /* call_prepare checks a reply buffer */
    request_t rq = request(head, body, body_len, tail, tail_len);
    at_call_opts_t opts;
    struct addrinfo *list = NULL, *ai;
    long long deadline;
    at_status_t st;
    int fd = -1, err = 0, timed_out = 0, niov;
    char peer[160] = "";
    struct iovec iov[3];

    fill_opts(opts_in, &opts);
    st = call_prepare(host, port, &rq, unused, sizeof unused, SOCK_STREAM,
                      &opts, res, &list);
    if (st != AT_OK)
        return st;
    deadline = now_ms() + opts.timeout_ms;
    for (ai = list; ai != NULL; ai = ai->ai_next) {
        addr_text(ai, peer, sizeof peer);
        res->tries++;
        fd = tcp_connect(ai, deadline, &err);
        if (fd >= 0)
            break;
        if (err == 0) {
            timed_out = 1;
            break;
        }
    }
    freeaddrinfo(list);
    if (fd < 0) {
        if (timed_out) {
            set_detail(res, "connecting to %s: timed out", peer);
            return AT_E_TIMEOUT;
        }
        res->sys_errno = err;
        set_detail(res, "cannot connect to %s: %s", peer, strerror(err));
        return AT_E_CONNECT;
    }
    niov = request_iov(&rq, iov);
    if (send_all(fd, iov, niov, deadline) != 0) {
        int e = errno;
        close(fd);
        if (e == ETIMEDOUT) {
            set_detail(res, "sending to %s: timed out", peer);
            return AT_E_TIMEOUT;
        }
        res->sys_errno = e;
        set_detail(res, "sending to %s: %s", peer, strerror(e));
        return AT_E_IO;
    }
    /* Sent. A FIN after the frame; the peer answers nothing, but a v1 peer
     * may (bad_frame): read it away so that closing sends no reset that
     * could destroy the frame before the peer has read it. */
    shutdown(fd, SHUT_WR);
    drain(fd, deadline < now_ms() + NOTIFY_LINGER_MS
                  ? deadline : now_ms() + NOTIFY_LINGER_MS);
    close(fd);
    return AT_OK;
}

at_status_t at_notify_udp_frame(const char *host, const char *port,
                                const uint8_t *head, const void *body,
                                size_t body_len, const void *tail,
                                size_t tail_len, const at_call_opts_t *opts_in,
                                at_call_result_t *res)
{
    uint8_t unused[AT_HEADER_LEN]; /* call_prepare checks a reply buffer */
    request_t rq = request(head, body, body_len, tail, tail_len);
    at_call_opts_t opts;
    struct addrinfo *list = NULL, *ai;
    at_status_t st;
    char peer[160] = "";
    int last_errno = 0;

    fill_opts(opts_in, &opts);
    st = call_prepare(host, port, &rq, unused, sizeof unused, SOCK_DGRAM,
                      &opts, res, &list);
    if (st != AT_OK)
        return st;
    for (ai = list; ai != NULL; ai = ai->ai_next) {
        struct iovec iov[3];
        struct msghdr msg;
        ssize_t n;
        int fd;

        addr_text(ai, peer, sizeof peer);
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0 || set_nonblock_cloexec(fd) != 0 ||
            connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            last_errno = errno;
            if (fd >= 0)
                close(fd);
            continue;
        }
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = request_iov(&rq, iov);
        res->tries++;
        do
            n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        last_errno = errno;
        close(fd);
        if (n >= 0) {
            freeaddrinfo(list);
            return AT_OK;
        }
    }
    freeaddrinfo(list);
    res->sys_errno = last_errno;
    set_detail(res, "sending to %s over UDP: %s", peer[0] ? peer : host,
               strerror(last_errno));
    return AT_E_IO;
}

at_status_t at_notify(int udp, const char *host, const char *port,
                      uint32_t seq, const void *body, size_t body_len,
                      const at_call_opts_t *opts, at_call_result_t *res)
{
    uint8_t head[AT_HEADER_LEN];
    at_header_t h;

    if ((body == NULL && body_len != 0) || body_len > AT_MAX_BODY) {
        memset(head, 0, sizeof head); /* refused by call_prepare */
    } else {
        make_header(&h, (uint16_t)AT_FLAG_NOTIFY, seq, body, body_len);
        at_header_pack(&h, head);
    }
    if (udp)
        return at_notify_udp_frame(host, port, head, body, body_len, NULL, 0,
                                   opts, res);
    return at_notify_tcp_frame(host, port, head, body, body_len, NULL, 0,
                               opts, res);
}
