/*
 * test_check - what the C peer's test programs share: counting checks,
 * printing the failed ones, the closing "N passed, M failed" line, and hex
 * for fixed test vectors. Only the tests link it.
 */
#ifndef TEST_CHECK_H
#define TEST_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Records one check's outcome; prints "FAIL: " and the formatted reason
 * when `ok` is 0. */
void result(int ok, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prints "N passed, M failed"; returns the exit status (1 on any failure). */
int test_summary(void);

/* Decodes pairs of hex digits, with spaces allowed between pairs, into `out`
 * (capacity `cap`); returns the byte count. Exits with status 2 on bad input:
 * vectors are fixed text, so that is a bug in the test. */
size_t unhex(const char *s, uint8_t *out, size_t cap);

/* Lowercase hex of `len` bytes into `out` (2 * len + 1 bytes). */
void tohex(const uint8_t *p, size_t len, char *out);

#endif
