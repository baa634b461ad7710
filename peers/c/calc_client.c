/*
 * calc_client - call an AT calculator server once.
 *
 *   calc_client [--udp] HOST PORT FUNC A B
 *
 * Sends {"func": FUNC, "args": [A, B]} (A and B are JSON number texts, sent
 * as they are) over TCP, or UDP with --udp, and prints the result's JSON text
 * on stdout.
 *
 * The call gives up after 5 seconds in total (TCP: connect, send, receive;
 * UDP: all retransmissions), or AT_TIMEOUT_MS milliseconds if that
 * environment variable is set.
 *
 * Exit status:
 *   0  success: the result's JSON text on stdout (5.0 stays 5.0)
 *   1  the server answered with an error: "error: CODE: MESSAGE" on stderr
 *   2  usage error (bad arguments; A or B not a JSON number)
 *   3  transport failure (cannot resolve, refused, timeout, bad or corrupt
 *      reply): what happened on stderr
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

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
            "usage: %s [--udp] HOST PORT FUNC A B\n"
            "  Calls FUNC(A, B) on the AT calculator server at HOST:PORT\n"
            "  (TCP, or UDP with --udp) and prints the result.\n"
            "  A and B are JSON numbers (10, -3, 2.5, 1e3).\n"
            "  Gives up after 5 s (AT_TIMEOUT_MS=N in the environment: N ms).\n"
            "  Exit: 0 result, 1 error reply, 2 usage, 3 transport failure.\n",
            prog);
}

static int usage_error(const char *what, const char *arg)
{
    if (arg)
        fprintf(stderr, "%s: %s: %s\n", prog, what, arg);
    else
        fprintf(stderr, "%s: %s\n", prog, what);
    fprintf(stderr, "usage: %s [--udp] HOST PORT FUNC A B (--help for more)\n",
            prog);
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

int main(int argc, char **argv)
{
    static uint8_t buf[AT_MAX_FRAME];
    static char request[AT_MAX_BODY + 1];
    static char scratch[AT_MAX_BODY + 1];
    const char *pos[5];
    int npos = 0, udp = 0, options = 1, i;
    const char *args[2];
    size_t req_len;
    uint32_t seq;
    at_status_t st;
    at_call_result_t res;
    at_call_opts_t opts;
    const char *env;
    at_reply_t reply;
    uint16_t kind;

    if (argc > 0 && argv[0] && argv[0][0]) {
        const char *slash = strrchr(argv[0], '/');
        prog = slash ? slash + 1 : argv[0];
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options && npos == 0 && a[0] == '-' && a[1] == '-') {
            if (strcmp(a, "--udp") == 0) {
                udp = 1;
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
            return usage_error("unknown option", a);
        }
        if (npos == 5)
            return usage_error("too many arguments", NULL);
        pos[npos++] = a;
    }
    if (npos != 5)
        return usage_error("expected HOST PORT FUNC A B", NULL);
    if (pos[0][0] == '\0')
        return usage_error("empty HOST", NULL);
    if (!valid_port(pos[1]))
        return usage_error("PORT must be a number from 1 to 65535", pos[1]);
    if (!at_json_is_number(pos[3], strlen(pos[3])))
        return usage_error("A is not a JSON number", pos[3]);
    if (!at_json_is_number(pos[4], strlen(pos[4])))
        return usage_error("B is not a JSON number", pos[4]);
    args[0] = pos[3];
    args[1] = pos[4];
    st = at_build_request(pos[2], args, 2, request, sizeof request, &req_len);
    if (st == AT_E_ARG)
        return usage_error("FUNC is not valid UTF-8", NULL);
    if (st != AT_OK)
        return usage_error("request too large", NULL);

    memset(&opts, 0, sizeof opts);
    env = getenv("AT_TIMEOUT_MS");
    if (env != NULL && *env != '\0') {
        char *end;
        long ms = strtol(env, &end, 10);
        if (*end != '\0' || ms < 1 || ms > 86400000L)
            return usage_error("AT_TIMEOUT_MS must be a number of "
                               "milliseconds from 1 to 86400000", env);
        opts.timeout_ms = (int)ms;
    }

    seq = pick_seq();
    if (udp)
        st = at_call_udp(pos[0], pos[1], seq, request, req_len, buf,
                         sizeof buf, &opts, &res);
    else
        st = at_call_tcp(pos[0], pos[1], seq, request, req_len, buf,
                         sizeof buf, &opts, &res);
    if (st != AT_OK) {
        fprintf(stderr, "%s: %s\n", prog,
                res.detail[0] ? res.detail : at_status_str(st));
        return EXIT_TRANSPORT;
    }

    st = at_parse_reply(res.reply.body, res.reply.length, scratch,
                        sizeof scratch, &reply);
    if (st != AT_OK) {
        fprintf(stderr, "%s: bad reply: %s\n", prog, at_status_str(st));
        return EXIT_TRANSPORT;
    }
    kind = at_flags_kind(res.reply.flags);
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
        fputs("error: ", stderr);
        put_text(stderr, reply.code, reply.code_len);
        fputs(": ", stderr);
        put_text(stderr, reply.message, reply.message_len);
        fputc('\n', stderr);
        return EXIT_ERROR_REPLY;
    }
    fprintf(stderr, "%s: bad reply: flags 0x%04x disagree with status \"",
            prog, (unsigned)res.reply.flags);
    put_text(stderr, reply.status, reply.status_len);
    fputs("\"\n", stderr);
    return EXIT_TRANSPORT;
}
