/*
 * at_auth.c - the client side of authentication in the AT protocol
 * (contract section 9). See at_auth.h.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "at_auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ======================================================================== */
/* Helpers                                                                  */
/* ======================================================================== */

/* Zeros that the compiler does not drop. */
static void wipe(void *p, size_t n)
{
    volatile uint8_t *v = (volatile uint8_t *)p;
    while (n--)
        *v++ = 0;
}

static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static void set_detail(at_call_result_t *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->detail, sizeof res->detail, fmt, ap);
    va_end(ap);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
           c == '\f';
}

/* Value of a hex digit (either case), or -1. */
static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1 if s[0..len) are all [0-9a-f]. */
static int is_lower_hex(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Decodes 2 * n hex digits (already checked) into n bytes. */
static void unhex(const char *s, uint8_t *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = (uint8_t)(hex_digit(s[2 * i]) << 4 | hex_digit(s[2 * i + 1]));
}

static void tohex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* ======================================================================== */
/* Keys                                                                     */
/* ======================================================================== */

static const char kid_rule[] = "1 to 32 of A-Z a-z 0-9 . _ -";

int at_kid_valid(const char *kid, size_t len)
{
    size_t i;
    if (kid == NULL || len < 1 || len > AT_KID_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        char c = kid[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

void at_key_wipe(at_key_t *key)
{
    if (key != NULL)
        wipe(key, sizeof *key);
}

/* The 64 hex digits of a key into key->key; on failure a message (without
 * the digits) in err and -1. */
static int parse_key_hex(const char *s, size_t len, at_key_t *key,
                         char *err, size_t err_cap)
{
    size_t i;
    if (len != 2 * AT_AUTH_KEY_LEN) {
        set_err(err, err_cap, "a key is %u hex digits, this one has %lu "
                "characters", 2 * AT_AUTH_KEY_LEN, (unsigned long)len);
        return -1;
    }
    for (i = 0; i < len; i++)
        if (hex_digit(s[i]) < 0) {
            set_err(err, err_cap, "a key is hex digits only, this one has "
                    "other characters");
            return -1;
        }
    unhex(s, key->key, AT_AUTH_KEY_LEN);
    return 0;
}

static void set_kid(at_key_t *key, const char *kid, size_t len)
{
    memcpy(key->kid, kid, len);
    key->kid[len] = '\0';
    key->kid_len = len;
}

at_status_t at_key_parse(const char *text, at_key_t *key, char *err,
                         size_t err_cap)
{
    const char *start, *end, *colon;

    if (err != NULL && err_cap > 0)
        err[0] = '\0';
    if (key == NULL)
        return AT_E_ARG;
    wipe(key, sizeof *key);
    if (text == NULL) {
        set_err(err, err_cap, "no key given");
        return AT_E_ARG;
    }
    start = text;
    end = text + strlen(text);
    while (start < end && is_space(*start))
        start++;
    while (end > start && is_space(end[-1]))
        end--;
    colon = memchr(start, ':', (size_t)(end - start));
    if (colon == NULL) {
        set_err(err, err_cap, "a key is written KID:HEX, and there is no "
                "':'");
        return AT_E_ARG;
    }
    if (!at_kid_valid(start, (size_t)(colon - start))) {
        set_err(err, err_cap, "the key id (before ':') must be %s",
                kid_rule);
        return AT_E_ARG;
    }
    if (parse_key_hex(colon + 1, (size_t)(end - colon - 1), key, err,
                      err_cap) != 0) {
        wipe(key, sizeof *key);
        return AT_E_ARG;
    }
    set_kid(key, start, (size_t)(colon - start));
    return AT_OK;
}

/* One line of a key file (without its newline). Returns 0 (a key stored in
 * `key` unless one already was, or a blank or comment line), or -1 with
 * `err` set. `over`: the line was longer than `len` bytes. */
static int key_file_line(const char *path, unsigned long number, char *line,
                         size_t len, int over, at_key_t *key, int *found,
                         char *err, size_t err_cap)
{
    char *p = line, *end = line + len, *f1, *f1_end, *f2, *f2_end;
    char msg[96];

    while (p < end && is_space(*p))
        p++;
    while (end > p && is_space(end[-1]))
        end--;
    if (p < end && *p == '#')
        return 0;                       /* a comment, however long */
    if (over) {
        set_err(err, err_cap, "%s:%lu: line too long for 'KID HEX'", path,
                number);
        return -1;
    }
    if (p == end)
        return 0;                       /* blank */
    f1 = p;
    while (p < end && !is_space(*p))
        p++;
    f1_end = p;
    while (p < end && is_space(*p))
        p++;
    f2 = p;
    while (p < end && !is_space(*p))
        p++;
    f2_end = p;
    if (f2 == f2_end || p != end) {
        set_err(err, err_cap, "%s:%lu: expected 'KID HEX' (two fields)",
                path, number);
        return -1;
    }
    if (!at_kid_valid(f1, (size_t)(f1_end - f1))) {
        set_err(err, err_cap, "%s:%lu: the key id must be %s", path, number,
                kid_rule);
        return -1;
    }
    if (*found) {
        /* Check the syntax of later keys without keeping them. */
        at_key_t scratch;
        int rc = parse_key_hex(f2, (size_t)(f2_end - f2), &scratch, msg,
                               sizeof msg);
        wipe(&scratch, sizeof scratch);
        if (rc != 0) {
            set_err(err, err_cap, "%s:%lu: %s", path, number, msg);
            return -1;
        }
        return 0;
    }
    if (parse_key_hex(f2, (size_t)(f2_end - f2), key, msg, sizeof msg) != 0) {
        set_err(err, err_cap, "%s:%lu: %s", path, number, msg);
        return -1;
    }
    set_kid(key, f1, (size_t)(f1_end - f1));
    *found = 1;
    return 0;
}

#define KEY_FILE_MAX (1L << 20)     /* bytes read at most */

at_status_t at_key_load_file(const char *path, at_key_t *key, char *err,
                             size_t err_cap)
{
    char chunk[512], line[256];
    size_t line_len = 0;
    long total = 0;
    unsigned long number = 1;
    int fd, over = 0, found = 0, failed = 0;
    at_status_t st = AT_OK;
    struct stat sb;

    if (err != NULL && err_cap > 0)
        err[0] = '\0';
    if (key == NULL)
        return AT_E_ARG;
    wipe(key, sizeof *key);
    if (path == NULL || path[0] == '\0') {
        set_err(err, err_cap, "no key file given");
        return AT_E_ARG;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        set_err(err, err_cap, "%s: cannot open: %s", path, strerror(errno));
        return AT_E_IO;
    }
    if (fstat(fd, &sb) != 0) {
        set_err(err, err_cap, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return AT_E_IO;
    }
    if (S_ISDIR(sb.st_mode)) {
        set_err(err, err_cap, "%s: is a directory", path);
        close(fd);
        return AT_E_ARG;
    }
    if ((sb.st_mode & 077) != 0) {
        set_err(err, err_cap, "%s: group or others have access (mode %04o); "
                "a key file must be private (chmod 600 %s)", path,
                (unsigned)(sb.st_mode & 07777), path);
        close(fd);
        return AT_E_ARG;
    }
    while (!failed) {
        ssize_t n = read(fd, chunk, sizeof chunk), i;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            set_err(err, err_cap, "%s: cannot read: %s", path,
                    strerror(errno));
            st = AT_E_IO;
            failed = 1;
            break;
        }
        if (n == 0)
            break;
        total += (long)n;
        if (total > KEY_FILE_MAX) {
            set_err(err, err_cap, "%s: too large for a key file", path);
            st = AT_E_ARG;
            failed = 1;
            break;
        }
        for (i = 0; i < n && !failed; i++) {
            unsigned char c = (unsigned char)chunk[i];
            if (c == '\n') {
                if (key_file_line(path, number, line, line_len, over, key,
                                  &found, err, err_cap) != 0) {
                    st = AT_E_ARG;
                    failed = 1;
                }
                number++;
                line_len = 0;
                over = 0;
            } else if (c == 0 || c >= 0x80) {
                set_err(err, err_cap, "%s:%lu: not ASCII text", path, number);
                st = AT_E_ARG;
                failed = 1;
            } else if (line_len < sizeof line) {
                line[line_len++] = (char)c;
            } else {
                over = 1;
            }
        }
    }
    if (!failed && (line_len > 0 || over) &&
        key_file_line(path, number, line, line_len, over, key, &found, err,
                      err_cap) != 0) {
        st = AT_E_ARG;
        failed = 1;
    }
    close(fd);
    wipe(chunk, sizeof chunk);
    wipe(line, sizeof line);
    if (!failed && !found) {
        set_err(err, err_cap, "%s: no keys in it", path);
        st = AT_E_ARG;
        failed = 1;
    }
    if (failed)
        wipe(key, sizeof *key);
    return st;
}

at_status_t at_random_bytes(void *out, size_t len)
{
    uint8_t *p = (uint8_t *)out;
    int fd;

    if (out == NULL && len != 0)
        return AT_E_ARG;
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return AT_E_IO;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return AT_E_IO;
        }
        p += n;
        len -= (size_t)n;
    }
    close(fd);
    return AT_OK;
}

/* ======================================================================== */
/* Handshake                                                                */
/* ======================================================================== */

at_status_t at_hello_body(const at_key_t *key,
                          const uint8_t nc[AT_AUTH_NONCE_LEN],
                          char *out, size_t cap, size_t *out_len)
{
    char nonce[2 * AT_AUTH_NONCE_LEN + 1];
    int n;

    if (key == NULL || nc == NULL || out == NULL ||
        key->kid_len != strlen(key->kid) ||
        !at_kid_valid(key->kid, key->kid_len))
        return AT_E_ARG;
    tohex(nc, AT_AUTH_NONCE_LEN, nonce);
    /* The kid and the nonce need no JSON escaping. */
    n = snprintf(out, cap, "{\"func\": \"rpc.hello\", \"args\": [\"%s\", "
                 "\"%s\"]}", key->kid, nonce);
    if (n < 0 || (size_t)n >= cap) {
        if (cap)
            out[0] = '\0';
        return AT_E_NOSPACE;
    }
    if (out_len)
        *out_len = (size_t)n;
    return AT_OK;
}

/* A string member of exactly `digits` lowercase hex digits, decoded into
 * `out` (digits / 2 bytes). Returns 0 or -1. */
static int hex_member(const uint8_t *obj, size_t len, const char *name,
                      size_t digits, uint8_t *out)
{
    char text[2 * AT_AUTH_NONCE_LEN + 2];
    size_t n = 0;
    if (at_json_member_string(obj, len, name, text, sizeof text, &n) != AT_OK
        || n != digits || !is_lower_hex(text, n))
        return -1;
    unhex(text, out, digits / 2);
    return 0;
}

at_status_t at_hello_accept(const at_key_t *key,
                            const uint8_t nc[AT_AUTH_NONCE_LEN],
                            const at_frame_t *reply, at_session_t *s,
                            const char **why)
{
    const char *reason;
    char status[16], code[8];
    size_t status_len = 0;
    const uint8_t *result;
    size_t result_len;
    uint16_t kind;
    uint8_t sid[AT_AUTH_SID_LEN], ns[AT_AUTH_NONCE_LEN];
    uint8_t proof[AT_AUTH_PROOF_LEN], want[AT_AUTH_PROOF_LEN];
    uint8_t k_req[AT_AUTH_KEY_LEN], k_rep[AT_AUTH_KEY_LEN];
    int ok;

    if (key == NULL || nc == NULL || reply == NULL || s == NULL) {
        reason = "invalid argument";
        goto bad;
    }
    if (reply->flags & AT_FLAG_AUTH) {
        reason = "it carries AUTH";
        goto bad;
    }
    kind = at_flags_kind(reply->flags);
    if (reply->body == NULL ||
        at_json_member_string(reply->body, reply->length, "status", status,
                              sizeof status, &status_len) != AT_OK) {
        reason = "its body is not a valid reply";
        goto bad;
    }
    if (kind == AT_FLAG_ERROR) {
        if (status_len == 5 && memcmp(status, "error", 5) == 0 &&
            at_json_member_string(reply->body, reply->length, "code", code,
                                  sizeof code, NULL) == AT_OK)
            return AT_E_REMOTE;
        reason = "its flags and its body disagree";
        goto bad;
    }
    if (kind != AT_FLAG_RESPONSE || status_len != 7 ||
        memcmp(status, "success", 7) != 0) {
        reason = "its flags and its body disagree";
        goto bad;
    }
    if (at_json_member(reply->body, reply->length, "result", &result,
                       &result_len) != AT_OK ||
        hex_member(result, result_len, "session", 2 * AT_AUTH_SID_LEN,
                   sid) != 0 ||
        hex_member(result, result_len, "nonce", 2 * AT_AUTH_NONCE_LEN,
                   ns) != 0 ||
        hex_member(result, result_len, "proof", 2 * AT_AUTH_PROOF_LEN,
                   want) != 0) {
        reason = "session, nonce or proof missing, or not lowercase hex of "
                 "the right length";
        goto bad;
    }
    at_derive_keys(key->key, key->kid, key->kid_len, nc, ns, k_req, k_rep);
    at_hello_proof(k_rep, sid, proof);
    ok = at_ct_equal(proof, want, AT_AUTH_PROOF_LEN);
    if (ok) {
        memcpy(s->sid, sid, sizeof sid);
        memcpy(s->k_req, k_req, sizeof k_req);
        memcpy(s->k_rep, k_rep, sizeof k_rep);
        s->seq = 0;
        s->open = 1;
        s->last_ms = now_ms();
    }
    wipe(k_req, sizeof k_req);
    wipe(k_rep, sizeof k_rep);
    wipe(proof, sizeof proof);
    if (ok)
        return AT_OK;
    if (why != NULL)
        *why = "the server's proof does not verify (a different key?)";
    return AT_E_BAD_PROOF;
bad:
    if (why != NULL)
        *why = reason;
    return AT_E_AUTH;
}

/* ======================================================================== */
/* Sessions                                                                 */
/* ======================================================================== */

int at_session_usable(const at_session_t *s)
{
    return s != NULL && s->open && s->seq < UINT32_MAX &&
           now_ms() - s->last_ms < AT_SESSION_IDLE_MS;
}

void at_session_close(at_session_t *s)
{
    if (s != NULL)
        wipe(s, sizeof *s);
}

/* The header and trailer (SID, tag) of a sealed frame with `flags`, under
 * `key` (section 9; 10.6 for the other frame kinds). */
static void seal_head(uint16_t flags, uint32_t seq,
                      const uint8_t key[AT_AUTH_KEY_LEN],
                      const uint8_t sid[AT_AUTH_SID_LEN],
                      const void *body, size_t body_len,
                      uint8_t head[AT_HEADER_LEN],
                      uint8_t trailer[AT_AUTH_TRAILER])
{
    at_header_t h;
    uint32_t crc;

    h.magic = (uint16_t)AT_MAGIC;
    h.flags = flags;
    h.seq = seq;
    h.length = (uint32_t)(body_len + AT_AUTH_TRAILER);
    h.crc = 0;
    at_header_pack(&h, head);           /* bytes 0..11 are final */
    memcpy(trailer, sid, AT_AUTH_SID_LEN);
    at_frame_tag(key, head, body, body_len, trailer,
                 trailer + AT_AUTH_SID_LEN);
    crc = at_crc32_update(at_crc32(body, body_len), trailer, AT_AUTH_TRAILER);
    h.crc = crc;
    at_header_pack(&h, head);
}

/* The header and trailer of an authenticated request. */
static void seal_request(const at_session_t *s, uint32_t seq,
                         const void *body, size_t body_len,
                         uint8_t head[AT_HEADER_LEN],
                         uint8_t trailer[AT_AUTH_TRAILER])
{
    seal_head((uint16_t)(AT_FLAG_REQUEST | AT_FLAG_AUTH), seq, s->k_req,
              s->sid, body, body_len, head, trailer);
}

at_status_t at_seal_frame(uint16_t flags, uint32_t seq, const void *body,
                          size_t body_len, const uint8_t key[AT_AUTH_KEY_LEN],
                          const uint8_t sid[AT_AUTH_SID_LEN], uint8_t *out,
                          size_t cap, size_t *out_len)
{
    uint8_t head[AT_HEADER_LEN], trailer[AT_AUTH_TRAILER];

    if (key == NULL || sid == NULL || out == NULL ||
        (body == NULL && body_len != 0) || body_len > AT_AUTH_MAX_BODY ||
        !(flags & AT_FLAG_AUTH))
        return AT_E_ARG;
    if (cap < AT_HEADER_LEN + AT_AUTH_TRAILER ||
        cap - AT_HEADER_LEN - AT_AUTH_TRAILER < body_len)
        return AT_E_NOSPACE;
    seal_head(flags, seq, key, sid, body, body_len, head, trailer);
    if (body_len)
        memmove(out + AT_HEADER_LEN, body, body_len);
    memcpy(out, head, AT_HEADER_LEN);
    memcpy(out + AT_HEADER_LEN + body_len, trailer, AT_AUTH_TRAILER);
    if (out_len)
        *out_len = AT_HEADER_LEN + body_len + AT_AUTH_TRAILER;
    return AT_OK;
}

/* Checks a sealed frame's SID and tag under `key` in constant time; sets
 * *sid_ok and returns 1 if both are good. The frame has AUTH and at least
 * 24 bytes. */
static int sealed_ok(const uint8_t key[AT_AUTH_KEY_LEN],
                     const uint8_t sid[AT_AUTH_SID_LEN], const at_frame_t *f,
                     int *sid_ok)
{
    uint8_t head[AT_HEADER_LEN], tag[AT_AUTH_TAG_LEN];
    at_header_t h;
    size_t n = f->length - AT_AUTH_TRAILER;
    int tag_ok;

    /* H: the received header's first 12 bytes. Packing the exact integers
     * read gives back the same bytes (reserved flag bits included). */
    h.magic = (uint16_t)AT_MAGIC;
    h.flags = f->flags;
    h.seq = f->seq;
    h.length = f->length;
    h.crc = f->crc;
    at_header_pack(&h, head);
    at_frame_tag(key, head, f->body, n, f->body + n, tag);
    *sid_ok = at_ct_equal(f->body + n, sid, AT_AUTH_SID_LEN);
    tag_ok = at_ct_equal(tag, f->body + n + AT_AUTH_SID_LEN, AT_AUTH_TAG_LEN);
    wipe(tag, sizeof tag);
    return *sid_ok & tag_ok;
}

at_status_t at_unseal_frame(const at_frame_t *f,
                            const uint8_t key[AT_AUTH_KEY_LEN],
                            const uint8_t sid[AT_AUTH_SID_LEN],
                            at_frame_t *inner, const char **why)
{
    const char *reason;
    int sid_ok = 0;

    if (f == NULL || key == NULL || sid == NULL || inner == NULL) {
        reason = "invalid argument";
    } else if (!(f->flags & AT_FLAG_AUTH)) {
        reason = "a frame without AUTH";
    } else if (f->body == NULL || f->length < AT_AUTH_TRAILER) {
        reason = "an AUTH frame too short for SID and tag";
    } else if (sealed_ok(key, sid, f, &sid_ok)) {
        *inner = *f;
        inner->length = f->length - AT_AUTH_TRAILER;
        return AT_OK;
    } else {
        reason = sid_ok ? "a tag that does not verify"
                        : "a frame of another session";
    }
    if (why != NULL)
        *why = reason;
    return AT_E_AUTH;
}

at_status_t at_session_encode(const at_session_t *s, uint32_t seq,
                              const void *body, size_t body_len,
                              uint8_t *out, size_t cap, size_t *out_len)
{
    uint8_t head[AT_HEADER_LEN], trailer[AT_AUTH_TRAILER];

    if (s == NULL || !s->open || out == NULL ||
        (body == NULL && body_len != 0) || body_len > AT_AUTH_MAX_BODY)
        return AT_E_ARG;
    if (cap < AT_HEADER_LEN + AT_AUTH_TRAILER ||
        cap - AT_HEADER_LEN - AT_AUTH_TRAILER < body_len)
        return AT_E_NOSPACE;
    seal_request(s, seq, body, body_len, head, trailer);
    if (body_len)
        memmove(out + AT_HEADER_LEN, body, body_len);
    memcpy(out, head, AT_HEADER_LEN);
    memcpy(out + AT_HEADER_LEN + body_len, trailer, AT_AUTH_TRAILER);
    if (out_len)
        *out_len = AT_HEADER_LEN + body_len + AT_AUTH_TRAILER;
    return AT_OK;
}

at_status_t at_session_verify(const at_session_t *s, const at_frame_t *reply,
                              at_frame_t *inner, const char **why)
{
    const char *reason;
    int sid_ok = 0;

    if (s == NULL || reply == NULL || inner == NULL || !s->open) {
        reason = "no open session";
        goto bad;
    }
    if (!(reply->flags & AT_FLAG_AUTH)) {
        reason = "a reply without AUTH";
        goto bad;
    }
    if (reply->body == NULL || reply->length < AT_AUTH_TRAILER) {
        reason = "an AUTH reply too short for SID and tag";
        goto bad;
    }
    if (sealed_ok(s->k_rep, s->sid, reply, &sid_ok)) {
        *inner = *reply;
        inner->length = reply->length - AT_AUTH_TRAILER;
        return AT_OK;
    }
    reason = sid_ok ? "a reply whose tag does not verify"
                    : "a reply for another session";
bad:
    if (why != NULL)
        *why = reason;
    return AT_E_AUTH;
}

at_status_t at_session_verify_frame(const at_session_t *s,
                                    const uint8_t *data, size_t len,
                                    uint32_t seq, at_frame_t *inner,
                                    const char **why)
{
    at_header_t h;
    at_frame_t f;
    uint16_t kind;
    const char *dummy;

    if (why == NULL)
        why = &dummy;
    if (data == NULL || len < AT_HEADER_LEN) {
        *why = "shorter than a header";
        return AT_E_ARG;
    }
    at_header_unpack(data, &h);
    if (h.magic != AT_MAGIC) {
        *why = "bad magic";
        return AT_E_BAD_MAGIC;
    }
    if ((size_t)h.length != len - AT_HEADER_LEN) {
        *why = "length differs from the frame's size";
        return AT_E_ARG;
    }
    kind = at_flags_kind(h.flags);
    if (kind == 0) {
        *why = "no single message type bit in flags";
        return AT_E_BAD_FLAGS;
    }
    if (at_crc32(data + AT_HEADER_LEN, h.length) != h.crc) {
        *why = "checksum mismatch";
        return AT_E_CHECKSUM;
    }
    if (kind == AT_FLAG_REQUEST) {
        *why = "a request, not a reply";
        return AT_E_NOT_REPLY;
    }
    if (kind == AT_FLAG_NOTIFY) {
        *why = "a NOTIFY frame (event or notification), not a reply";
        return AT_E_NOT_REPLY;
    }
    if (h.seq != seq) {
        *why = "a reply with another seq";
        return AT_E_SEQ;
    }
    f.flags = h.flags;
    f.seq = h.seq;
    f.length = h.length;
    f.crc = h.crc;
    f.body = data + AT_HEADER_LEN;
    return at_session_verify(s, &f, inner, why);
}

/* ======================================================================== */
/* Calls                                                                    */
/* ======================================================================== */

/* Server text made printable in place: control characters become '?'. */
static void clean_text(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7F)
            *s = '?';
}

typedef struct {
    const at_key_t *key;
    const uint8_t *nc;
    at_session_t *s;
    int udp;
    int refused;        /* hello: the server answered with an error */
} check_ctx_t;

static at_status_t hello_check(void *vctx, at_frame_t *reply,
                               const char **why, at_call_result_t *res)
{
    check_ctx_t *c = (check_ctx_t *)vctx;
    const char *reason = NULL;
    at_status_t st = at_hello_accept(c->key, c->nc, reply, c->s, &reason);

    if (st == AT_OK)
        return AT_OK;
    if (st == AT_E_REMOTE) {
        c->refused = 1;
        return AT_OK;   /* the call returns it; the caller sees `refused` */
    }
    if (c->udp) {
        *why = reason;  /* counts as not received */
        return AT_NEED_MORE;
    }
    if (st == AT_E_BAD_PROOF) {
        set_detail(res, "%s", at_status_str(st));
        return st;
    }
    set_detail(res, "authentication failed: bad rpc.hello reply: %s", reason);
    return AT_E_AUTH;
}

static at_status_t hello(int udp, const char *host, const char *port,
                         uint32_t seq, const at_key_t *key,
                         const uint8_t nc[AT_AUTH_NONCE_LEN],
                         uint8_t *buf, size_t cap,
                         const at_call_opts_t *opts, at_session_t *s,
                         at_call_result_t *res)
{
    char body[128];
    size_t body_len;
    uint8_t head[AT_HEADER_LEN];
    check_ctx_t c;
    at_status_t st;

    if (res == NULL)
        return AT_E_ARG;
    if (s == NULL || at_hello_body(key, nc, body, sizeof body, &body_len)
                     != AT_OK) {
        memset(res, 0, sizeof *res);
        set_detail(res, "invalid argument");
        return AT_E_ARG;
    }
    {
        at_header_t h;
        h.magic = (uint16_t)AT_MAGIC;
        h.flags = (uint16_t)AT_FLAG_REQUEST;
        h.seq = seq;
        h.length = (uint32_t)body_len;
        h.crc = at_crc32(body, body_len);
        at_header_pack(&h, head);
    }
    memset(&c, 0, sizeof c);
    c.key = key;
    c.nc = nc;
    c.s = s;
    c.udp = udp;
    if (udp)
        st = at_call_udp_frame(host, port, seq, head, body, body_len, NULL, 0,
                               buf, cap, AT_MAX_BODY, opts, hello_check, &c,
                               res);
    else
        st = at_call_tcp_frame(host, port, seq, head, body, body_len, NULL, 0,
                               buf, cap, AT_MAX_BODY, opts, hello_check, &c,
                               res);
    if (st == AT_OK && c.refused) {
        set_detail(res, "the server answered rpc.hello with an error");
        return AT_E_REMOTE;
    }
    return st;
}

at_status_t at_hello_tcp(const char *host, const char *port, uint32_t seq,
                         const at_key_t *key,
                         const uint8_t nc[AT_AUTH_NONCE_LEN],
                         uint8_t *buf, size_t cap,
                         const at_call_opts_t *opts, at_session_t *s,
                         at_call_result_t *res)
{
    return hello(0, host, port, seq, key, nc, buf, cap, opts, s, res);
}

at_status_t at_hello_udp(const char *host, const char *port, uint32_t seq,
                         const at_key_t *key,
                         const uint8_t nc[AT_AUTH_NONCE_LEN],
                         uint8_t *buf, size_t cap,
                         const at_call_opts_t *opts, at_session_t *s,
                         at_call_result_t *res)
{
    return hello(1, host, port, seq, key, nc, buf, cap, opts, s, res);
}

/* The reply check of an authenticated call (section 9, "The client"). */
static at_status_t session_check(void *vctx, at_frame_t *reply,
                                 const char **why, at_call_result_t *res)
{
    check_ctx_t *c = (check_ctx_t *)vctx;
    const char *reason = NULL;
    char code[32], message[96];
    size_t code_len = 0;

    if (reply->flags & AT_FLAG_AUTH) {
        at_frame_t inner;
        if (at_session_verify(c->s, reply, &inner, &reason) == AT_OK) {
            *reply = inner;
            return AT_OK;
        }
        if (c->udp) {
            *why = reason;
            return AT_NEED_MORE;
        }
        set_detail(res, "authentication failed: %s", reason);
        return AT_E_AUTH;
    }
    /* A plain reply: unauthenticated, whatever it says. */
    if (at_flags_kind(reply->flags) == AT_FLAG_ERROR && reply->body != NULL &&
        at_json_member_string(reply->body, reply->length, "code", code,
                              sizeof code, &code_len) == AT_OK &&
        code_len < sizeof code) {
        at_code_t id = at_code_from_name(code);
        if (id == AT_CODE_UNAUTHORIZED) {
            /* Never resent in a new session on its strength; later calls
             * start a new one. */
            at_session_close(c->s);
            res->reply = *reply;
            set_detail(res, "the server answered unauthorized");
            return AT_E_UNAUTHORIZED;
        }
        if (id == AT_CODE_BUSY || id == AT_CODE_CHECKSUM_MISMATCH ||
            id == AT_CODE_FRAME_TOO_LARGE || id == AT_CODE_BAD_FRAME) {
            if (at_json_member_string(reply->body, reply->length, "message",
                                      message, sizeof message, NULL) != AT_OK)
                message[0] = '\0';
            clean_text(message);
            set_detail(res, "the server answered %s (unauthenticated)%s%s",
                       code, message[0] ? ": " : "", message);
            return AT_E_UNAUTHENTICATED;
        }
    }
    if (c->udp) {
        *why = "a reply without AUTH";
        return AT_NEED_MORE;
    }
    set_detail(res, "authentication failed: a reply without AUTH to an "
               "authenticated request");
    return AT_E_AUTH;
}

static at_status_t session_call(int udp, const char *host, const char *port,
                                at_session_t *s, const void *body,
                                size_t body_len, uint8_t *buf, size_t cap,
                                const at_call_opts_t *opts,
                                at_call_result_t *res)
{
    uint8_t head[AT_HEADER_LEN], trailer[AT_AUTH_TRAILER];
    check_ctx_t c;
    uint32_t seq;
    at_status_t st;

    if (res == NULL)
        return AT_E_ARG;
    if (!at_session_usable(s)) {
        memset(res, 0, sizeof *res);
        set_detail(res, "no usable session: run rpc.hello first");
        return AT_E_ARG;
    }
    if ((body == NULL && body_len != 0) || body_len > AT_AUTH_MAX_BODY) {
        memset(res, 0, sizeof *res);
        set_detail(res, "request body of %lu bytes is over the limit of %u "
                   "for an authenticated call", (unsigned long)body_len,
                   AT_AUTH_MAX_BODY);
        return AT_E_ARG;
    }
    seq = ++s->seq;
    s->last_ms = now_ms();
    seal_request(s, seq, body, body_len, head, trailer);
    memset(&c, 0, sizeof c);
    c.s = s;
    c.udp = udp;
    if (udp)
        st = at_call_udp_frame(host, port, seq, head, body, body_len, trailer,
                               sizeof trailer, buf, cap,
                               AT_MAX_BODY + AT_AUTH_TRAILER, opts,
                               session_check, &c, res);
    else
        st = at_call_tcp_frame(host, port, seq, head, body, body_len, trailer,
                               sizeof trailer, buf, cap,
                               AT_MAX_BODY + AT_AUTH_TRAILER, opts,
                               session_check, &c, res);
    if (s->open)
        s->last_ms = now_ms();
    return st;
}

at_status_t at_session_call_tcp(const char *host, const char *port,
                                at_session_t *s, const void *body,
                                size_t body_len, uint8_t *buf, size_t cap,
                                const at_call_opts_t *opts,
                                at_call_result_t *res)
{
    return session_call(0, host, port, s, body, body_len, buf, cap, opts,
                        res);
}

at_status_t at_session_call_udp(const char *host, const char *port,
                                at_session_t *s, const void *body,
                                size_t body_len, uint8_t *buf, size_t cap,
                                const at_call_opts_t *opts,
                                at_call_result_t *res)
{
    return session_call(1, host, port, s, body, body_len, buf, cap, opts,
                        res);
}

at_status_t at_session_notify(int udp, const char *host, const char *port,
                              at_session_t *s, const void *body,
                              size_t body_len, const at_call_opts_t *opts,
                              at_call_result_t *res)
{
    uint8_t head[AT_HEADER_LEN], trailer[AT_AUTH_TRAILER];
    at_status_t st;
    uint32_t seq;

    if (res == NULL)
        return AT_E_ARG;
    if (!at_session_usable(s)) {
        memset(res, 0, sizeof *res);
        set_detail(res, "no usable session: run rpc.hello first");
        return AT_E_ARG;
    }
    if ((body == NULL && body_len != 0) || body_len > AT_AUTH_MAX_BODY) {
        memset(res, 0, sizeof *res);
        set_detail(res, "notification body of %lu bytes is over the limit "
                   "of %u for a sealed frame", (unsigned long)body_len,
                   AT_AUTH_MAX_BODY);
        return AT_E_ARG;
    }
    /* From the request counter (10.1): one counter for calls and
     * notifications in a session. */
    seq = ++s->seq;
    s->last_ms = now_ms();
    seal_head((uint16_t)(AT_FLAG_NOTIFY | AT_FLAG_AUTH), seq, s->k_req,
              s->sid, body, body_len, head, trailer);
    if (udp)
        st = at_notify_udp_frame(host, port, head, body, body_len, trailer,
                                 sizeof trailer, opts, res);
    else
        st = at_notify_tcp_frame(host, port, head, body, body_len, trailer,
                                 sizeof trailer, opts, res);
    wipe(trailer, sizeof trailer);
    return st;
}
