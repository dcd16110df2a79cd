/* check.h - the C tests' assertions: print file:line and exit(1).
 * Unlike assert(), they stay on under NDEBUG (the tests run at -O2). */
#ifndef OSVRT_TEST_CHECK_H
#define OSVRT_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

/* Set by CMake: how much slower a sanitized build runs; stress tests divide
 * their iteration counts by it. */
#ifndef OSVRT_TEST_SLOW
#define OSVRT_TEST_SLOW 1
#endif
#define SCALED(n) ((n) / OSVRT_TEST_SLOW)
#ifdef OSVRT_TEST_SANITIZED
#define OSVRT_TEST_STALL_S 15    /* seconds without progress that a watchdog calls a hang */
#else
#define OSVRT_TEST_STALL_S 5
#endif

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

/* CHECK with a printf-style explanation. */
#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

/* Integer equality, printing both values. */
#define CHECK_EQ(a, b)                                                           \
    do {                                                                         \
        unsigned long long a_ = (unsigned long long)(a);                         \
        unsigned long long b_ = (unsigned long long)(b);                         \
        if (a_ != b_) {                                                          \
            fprintf(stderr, "%s:%d: CHECK_EQ(%s, %s) failed: %llu (0x%llx) != %llu (0x%llx)\n", \
                    __FILE__, __LINE__, #a, #b, a_, a_, b_, b_);                  \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

#endif
