/* fuzz_check.h - the fuzz targets' invariant check: a broken invariant says
 * which, then crashes, so libFuzzer saves the input that broke it. */
#ifndef OSVRT_FUZZ_CHECK_H
#define OSVRT_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(c)                                                            \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #c); \
            abort();                                                             \
        }                                                                        \
    } while (0)

#endif
