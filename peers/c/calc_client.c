/*
 * calc_client - call an AT calculator server once.
 *
 *   calc_client [--udp] [--notify] [--deadline MS]
 *               [--key KID:HEX | --key-file PATH] HOST PORT FUNC A B
 *
 * Sends {"func": FUNC, "args": [A, B]} (A and B are JSON number texts, sent
 * as they are) over TCP, or UDP with --udp, and prints the result's JSON text
 * on stdout. While it waits, frames that are no reply to its call (events
 * and notifications in NOTIFY frames, replies with another seq) are dropped
 * (contract 10.3, 10.5).
 *
 * --deadline MS (0 to 4294967295) adds "deadline_ms": MS, last in the body
 * (contract 10.4, vector D1): a server listing "deadline" in its rpc.info
 * ext does not start the function once MS ms have passed since it read the
 * frame, and answers deadline_exceeded.
 *
 * --notify sends the call as a notification instead (contract 10.2): a
 * NOTIFY frame (flags 0x0010; with a key sealed, 0x0018 under K_req) with a
 * seq from the request counter; no reply is awaited, exit 0 once it is
 * sent, nothing printed. Exit 0 does not mean that the function ran.
 *
 * With a key (--key KID:HEX, --key-file PATH, or else the environment
 * variable AT_KEY=KID:HEX) the call is authenticated (contract section 9):
 * rpc.hello opens a session, whose proof is checked, then the call goes in
 * an AUTH frame and its reply's tag is checked.
 *
 * The call gives up after 5 seconds in total (TCP: connect, send, receive;
 * UDP: all retransmissions; with a key, the hello included), or
 * AT_TIMEOUT_MS milliseconds if that environment variable is set.
 *
 * Exit status:
 *   0  success: the result's JSON text on stdout (5.0 stays 5.0)
 *   1  the server answered with an error: "error: CODE: MESSAGE" on stderr
 *      (also `unauthorized`: a refused key id, a server without keys, a
 *      plain `unauthorized` to the authenticated call)
 *   2  usage error (bad arguments; A or B not a JSON number; a malformed
 *      key or key file, or one that group or others may read)
 *   3  transport failure (cannot resolve, refused, timeout, bad or corrupt
 *      reply, a reply that fails authentication): what happened on stderr
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "at_auth.h"
#include "at_protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_ERROR_REPLY 1
#define EXIT_USAGE 2
#define EXIT_TRANSPORT 3

static const char *prog = "calc_client";

static void usage(FILE *to)
{
    fprintf(to,
            "usage: %s [--udp] [--notify] [--deadline MS] "
            "[--key KID:HEX | --key-file PATH] HOST PORT FUNC A B\n"
            "  Calls FUNC(A, B) on the AT calculator server at HOST:PORT\n"
            "  (TCP, or UDP with --udp) and prints the result.\n"
            "  A and B are JSON numbers (10, -3, 2.5, 1e3).\n"
            "  --notify         send it as a notification (NOTIFY frame):\n"
            "                   no reply awaited, exit 0 once sent\n"
            "  --deadline MS    add \"deadline_ms\": MS (0 to 4294967295):\n"
            "                   the server does not start it after MS ms\n"
            "  --key KID:HEX    authenticate with this key (64 hex digits)\n"
            "  --key-file PATH  authenticate with the first key of this file\n"
            "                   (lines 'KID HEX'; mode 600: no access for\n"
            "                   group or others)\n"
            "  Without them, AT_KEY=KID:HEX in the environment gives the key.\n"
            "  Gives up after 5 s (AT_TIMEOUT_MS=N in the environment: N ms).\n"
            "  Exit: 0 result, 1 error reply (also unauthorized), 2 usage,\n"
            "  3 transport failure (also a reply that fails authentication).\n",
            prog);
}

static int usage_error(const char *what, const char *arg)
{
    if (arg)
        fprintf(stderr, "%s: %s: %s\n", prog, what, arg);
    else
        fprintf(stderr, "%s: %s\n", prog, what);
    fprintf(stderr, "usage: %s [--udp] [--notify] [--deadline MS] "
            "[--key KID:HEX | --key-file PATH] HOST PORT FUNC A B "
            "(--help for more)\n", prog);
    return EXIT_USAGE;
}

/* A decimal port 1..65535. */
static int valid_port(const char *s)
{
    unsigned long v = 0;
    size_t i, n = strlen(s);
    if (n == 0 || n > 5)
        return 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

/* A decimal deadline 0..4294967295 (no sign, no spaces). */
static int parse_deadline(const char *s, uint32_t *out)
{
    unsigned long long v = 0;
    size_t i, n = strlen(s);
    if (n == 0 || n > 10)
        return 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    if (v > 0xFFFFFFFFull)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

/* Writes `len` bytes of server text with control characters shown as '?',
 * so a reply cannot drive the terminal. */
static void put_text(FILE *to, const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        fputc(c < 0x20 || c == 0x7F ? '?' : c, to);
    }
}

/* A sequence number that is not 0 (0 is the seq of replies to unreadable
 * headers) and differs from call to call. */
static uint32_t pick_seq(void)
{
    struct timespec ts;
    uint32_t x;
    clock_gettime(CLOCK_REALTIME, &ts);
    x = (uint32_t)ts.tv_nsec * 2654435761u ^ (uint32_t)ts.tv_sec ^
        ((uint32_t)getpid() << 12);
    x ^= x >> 15;
    x *= 0x2C1B3C6Du;
    x ^= x >> 12;
    return x ? x : 1;
}

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Prints "error: CODE: MESSAGE[ SUFFIX]" for an error reply body. */
static void print_error(const at_reply_t *reply, const char *suffix)
{
    fputs("error: ", stderr);
    put_text(stderr, reply->code, reply->code_len);
    fputs(": ", stderr);
    put_text(stderr, reply->message, reply->message_len);
    if (suffix)
        fputs(suffix, stderr);
    fputc('\n', stderr);
}

/* Reports a reply frame (its body proper): the result on stdout (exit 0)
 * or the error on stderr (exit 1); exit 3 for a bad reply. */
static int report_reply(const at_frame_t *frame, char *scratch, size_t cap)
{
    at_reply_t reply;
    at_status_t st;
    uint16_t kind;

    st = at_parse_reply(frame->body, frame->length, scratch, cap, &reply);
    if (st != AT_OK) {
        fprintf(stderr, "%s: bad reply: %s\n", prog, at_status_str(st));
        return EXIT_TRANSPORT;
    }
    kind = at_flags_kind(frame->flags);
    if (kind == AT_FLAG_RESPONSE && reply.kind == AT_REPLY_SUCCESS) {
        fwrite(reply.result, 1, reply.result_len, stdout);
        fputc('\n', stdout);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "%s: cannot write the result\n", prog);
            return EXIT_TRANSPORT;
        }
        return 0;
    }
    if (kind == AT_FLAG_ERROR && reply.kind == AT_REPLY_ERROR) {
        print_error(&reply, NULL);
        return EXIT_ERROR_REPLY;
    }
    fprintf(stderr, "%s: bad reply: flags 0x%04x disagree with status \"",
            prog, (unsigned)frame->flags);
    put_text(stderr, reply.status, reply.status_len);
    fputs("\"\n", stderr);
    return EXIT_TRANSPORT;
}

/* The value of option `name` at argv[*i] ("--name VALUE" or
 * "--name=VALUE"), or NULL if argv[*i] is not that option. Sets *missing
 * when the value is missing. */
static char *option_value(int argc, char **argv, int *i, const char *name,
                          int *missing)
{
    size_t n = strlen(name);
    char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* Overwrites a key given on the command line, so that it shows no longer
 * in the process's argument list. */
static void hide_arg(char *s)
{
    volatile char *v = s;
    while (*v)
        *v++ = 'x';
}

/* The authenticated call: hello, then the call in the session. */
static int call_with_key(int udp, int notify, const char *host,
                         const char *port,
                         const at_key_t *key, const char *request,
                         size_t req_len, at_call_opts_t *opts, uint8_t *buf,
                         size_t cap, char *scratch, size_t scratch_cap)
{
    uint8_t nc[AT_AUTH_NONCE_LEN];
    at_session_t session;
    at_call_result_t res;
    at_status_t st;
    at_reply_t reply;
    long long start = monotonic_ms(), left;
    int total = opts->timeout_ms > 0 ? opts->timeout_ms
                                     : AT_DEFAULT_TIMEOUT_MS, rc;

    memset(&session, 0, sizeof session);
    if (at_random_bytes(nc, sizeof nc) != AT_OK) {
        fprintf(stderr, "%s: cannot read random bytes for the nonce "
                "(/dev/urandom)\n", prog);
        return EXIT_TRANSPORT;
    }
    opts->timeout_ms = total;
    if (udp)
        st = at_hello_udp(host, port, pick_seq(), key, nc, buf, cap, opts,
                          &session, &res);
    else
        st = at_hello_tcp(host, port, pick_seq(), key, nc, buf, cap, opts,
                          &session, &res);
    if (st == AT_E_REMOTE) {
        char suffix[80];
        if (at_parse_reply(res.reply.body, res.reply.length, scratch,
                           scratch_cap, &reply) != AT_OK ||
            reply.kind != AT_REPLY_ERROR) {
            fprintf(stderr, "%s: bad reply to rpc.hello\n", prog);
            return EXIT_TRANSPORT;
        }
        snprintf(suffix, sizeof suffix, " (rpc.hello with key id %s)",
                 key->kid);
        print_error(&reply, suffix);
        return EXIT_ERROR_REPLY;
    }
    if (st == AT_E_BAD_PROOF) {
        /* As at-host and the Python client say it. */
        fprintf(stderr, "error: unauthorized: %s\n", at_status_str(st));
        return EXIT_ERROR_REPLY;
    }
    if (st != AT_OK) {
        fprintf(stderr, "%s: %s\n", prog,
                res.detail[0] ? res.detail : at_status_str(st));
        return EXIT_TRANSPORT;
    }

    /* The call gets what is left of the time bound. */
    left = total - (monotonic_ms() - start);
    opts->timeout_ms = left < 1 ? 1 : (int)left;
    if (notify) {
        /* Sealed NOTIFY (0x0018 under K_req), seq 1 of the session. */
        st = at_session_notify(udp, host, port, &session, request, req_len,
                               opts, &res);
        at_session_close(&session);
        if (st != AT_OK) {
            fprintf(stderr, "%s: %s\n", prog,
                    res.detail[0] ? res.detail : at_status_str(st));
            return EXIT_TRANSPORT;
        }
        return 0;
    }
    if (udp)
        st = at_session_call_udp(host, port, &session, request, req_len, buf,
                                 cap, opts, &res);
    else
        st = at_session_call_tcp(host, port, &session, request, req_len, buf,
                                 cap, opts, &res);
    at_session_close(&session);
    if (st == AT_E_UNAUTHORIZED) {
        if (at_parse_reply(res.reply.body, res.reply.length, scratch,
                           scratch_cap, &reply) == AT_OK &&
            reply.kind == AT_REPLY_ERROR) {
            print_error(&reply, NULL);
        } else {
            fputs("error: unauthorized: the server refused the call\n",
                  stderr);
        }
        return EXIT_ERROR_REPLY;
    }
    if (st != AT_OK) {
        fprintf(stderr, "%s: %s\n", prog,
                res.detail[0] ? res.detail : at_status_str(st));
        return EXIT_TRANSPORT;
    }
    rc = report_reply(&res.reply, scratch, scratch_cap);
    return rc;
}

int main(int argc, char **argv)
{
    static uint8_t buf[AT_AUTH_MAX_FRAME];
    static char request[AT_MAX_BODY + 1];
    static char scratch[AT_AUTH_MAX_FRAME + 1];
    const char *pos[5];
    int npos = 0, udp = 0, notify = 0, options = 1, i, rc;
    uint32_t deadline = 0;
    const char *deadline_text = NULL;
    const char *args[2];
    size_t req_len;
    uint32_t seq;
    at_status_t st;
    at_call_result_t res;
    at_call_opts_t opts;
    const char *env;
    char *key_text = NULL, *key_file = NULL;
    at_key_t key;
    int have_key = 0;
    char err[256];

    if (argc > 0 && argv[0] && argv[0][0]) {
        const char *slash = strrchr(argv[0], '/');
        prog = slash ? slash + 1 : argv[0];
    }
    for (i = 1; i < argc; i++) {
        char *a = argv[i], *v;
        int missing = 0;
        if (options && npos == 0 && a[0] == '-' && a[1] == '-') {
            if (strcmp(a, "--udp") == 0) {
                udp = 1;
                continue;
            }
            if (strcmp(a, "--notify") == 0) {
                notify = 1;
                continue;
            }
            v = option_value(argc, argv, &i, "--deadline", &missing);
            if (v != NULL || missing) {
                if (missing)
                    return usage_error("--deadline needs a value: MS", NULL);
                if (deadline_text != NULL)
                    return usage_error("--deadline given twice", NULL);
                if (!parse_deadline(v, &deadline))
                    return usage_error("--deadline must be a number of "
                                       "milliseconds from 0 to 4294967295",
                                       v);
                deadline_text = v;
                continue;
            }
            if (strcmp(a, "--help") == 0) {
                usage(stdout);
                return 0;
            }
            if (strcmp(a, "--") == 0) {
                options = 0;
                continue;
            }
            v = option_value(argc, argv, &i, "--key", &missing);
            if (v != NULL || missing) {
                if (missing)
                    return usage_error("--key needs a value: KID:HEX", NULL);
                if (key_text != NULL)
                    return usage_error("--key given twice", NULL);
                key_text = v;
                continue;
            }
            v = option_value(argc, argv, &i, "--key-file", &missing);
            if (v != NULL || missing) {
                if (missing)
                    return usage_error("--key-file needs a value: PATH",
                                       NULL);
                if (key_file != NULL)
                    return usage_error("--key-file given twice", NULL);
                key_file = v;
                continue;
            }
            return usage_error("unknown option", a);
        }
        if (npos == 5)
            return usage_error("too many arguments", NULL);
        pos[npos++] = a;
    }
    if (key_text != NULL && key_file != NULL)
        return usage_error("give --key or --key-file, not both", NULL);
    if (key_text != NULL) {
        st = at_key_parse(key_text, &key, err, sizeof err);
        hide_arg(key_text);
        if (st != AT_OK)
            return usage_error("--key", err);
        have_key = 1;
    } else if (key_file != NULL) {
        if (at_key_load_file(key_file, &key, err, sizeof err) != AT_OK)
            return usage_error("--key-file", err);
        have_key = 1;
    } else {
        env = getenv("AT_KEY");
        if (env != NULL && *env != '\0') {
            if (at_key_parse(env, &key, err, sizeof err) != AT_OK)
                return usage_error("AT_KEY", err);
            have_key = 1;
        }
    }

    rc = EXIT_USAGE;
    if (npos != 5) {
        usage_error("expected HOST PORT FUNC A B", NULL);
        goto done;
    }
    if (pos[0][0] == '\0') {
        usage_error("empty HOST", NULL);
        goto done;
    }
    if (!valid_port(pos[1])) {
        usage_error("PORT must be a number from 1 to 65535", pos[1]);
        goto done;
    }
    if (!at_json_is_number(pos[3], strlen(pos[3]))) {
        usage_error("A is not a JSON number", pos[3]);
        goto done;
    }
    if (!at_json_is_number(pos[4], strlen(pos[4]))) {
        usage_error("B is not a JSON number", pos[4]);
        goto done;
    }
    args[0] = pos[3];
    args[1] = pos[4];
    st = at_build_request_deadline(pos[2], args, 2,
                                   deadline_text ? &deadline : NULL, request,
                                   sizeof request, &req_len);
    if (st == AT_E_ARG) {
        usage_error("FUNC is not valid UTF-8", NULL);
        goto done;
    }
    if (st != AT_OK || (have_key && req_len > AT_AUTH_MAX_BODY)) {
        usage_error("request too large", NULL);
        goto done;
    }

    memset(&opts, 0, sizeof opts);
    env = getenv("AT_TIMEOUT_MS");
    if (env != NULL && *env != '\0') {
        char *end;
        long ms = strtol(env, &end, 10);
        if (*end != '\0' || ms < 1 || ms > 86400000L) {
            usage_error("AT_TIMEOUT_MS must be a number of "
                        "milliseconds from 1 to 86400000", env);
            goto done;
        }
        opts.timeout_ms = (int)ms;
    }

    if (have_key) {
        rc = call_with_key(udp, notify, pos[0], pos[1], &key, request,
                           req_len,
                           &opts, buf, sizeof buf, scratch, sizeof scratch);
        goto done;
    }

    seq = pick_seq();
    if (notify) {
        /* Plain NOTIFY (0x0010): sent once, never retransmitted. */
        st = at_notify(udp, pos[0], pos[1], seq, request, req_len, &opts,
                       &res);
        if (st != AT_OK) {
            fprintf(stderr, "%s: %s\n", prog,
                    res.detail[0] ? res.detail : at_status_str(st));
            rc = EXIT_TRANSPORT;
        } else {
            rc = 0;
        }
        goto done;
    }
    if (udp)
        st = at_call_udp(pos[0], pos[1], seq, request, req_len, buf,
                         sizeof buf, &opts, &res);
    else
        st = at_call_tcp(pos[0], pos[1], seq, request, req_len, buf,
                         sizeof buf, &opts, &res);
    if (st != AT_OK) {
        fprintf(stderr, "%s: %s\n", prog,
                res.detail[0] ? res.detail : at_status_str(st));
        rc = EXIT_TRANSPORT;
        goto done;
    }
    rc = report_reply(&res.reply, scratch, sizeof scratch);
done:
    if (have_key)
        at_key_wipe(&key);
    return rc;
}
