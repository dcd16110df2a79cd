/* probes.h - USDT (SystemTap SDT) probes of the C core, provider "osvrt".
 *
 * perf sees them as sdt_osvrt:<name> (`perf probe sdt_osvrt:wake`, then
 * `perf record -e sdt_osvrt:wake`).  A probe site is one nop until a tracer
 * attaches, so the probes are always compiled in: by default through our own
 * sdt.h, which needs no system header (a stock Debian has no <sys/sdt.h>), or
 * through <sys/sdt.h> when built with -DOSVRT_USE_SYS_SDT.  -DOSVRT_NO_SDT, or
 * an architecture sdt.h does not know (not x86-64 or aarch64), compiles every
 * probe to nothing.
 *
 * The Python scheduler's tracepoints (switch, spawn, exit, migrate) sit behind
 * SDT semaphores: the kernel increments the semaphore while perf is attached,
 * Python reads it as a plain global (no call, no GIL release) and calls into C
 * only when it is non-zero.  That is what makes them free when unused.  A file
 * whose probes have semaphores defines OSVRT_PROBE_SEMAPHORES before including
 * this header (trace.c); every probe of that file then names its semaphore.
 */
#ifndef OSVRT_PROBES_H
#define OSVRT_PROBES_H

#if defined(OSVRT_NO_SDT)
#  define OSVRT_HAVE_SDT 0
#elif defined(OSVRT_USE_SYS_SDT)
#  define OSVRT_HAVE_SDT 1
#  ifdef OSVRT_PROBE_SEMAPHORES
#    define _SDT_HAS_SEMAPHORES 1
#  endif
#  include <sys/sdt.h>
#  define OSVRT_PROBE1(n, a)          STAP_PROBE1(osvrt, n, a)
#  define OSVRT_PROBE2(n, a, b)       STAP_PROBE2(osvrt, n, a, b)
#  define OSVRT_PROBE3(n, a, b, c)    STAP_PROBE3(osvrt, n, a, b, c)
#  define OSVRT_SEMAPHORE_ATTR        __attribute__((section(".probes")))
#else
#  include "sdt.h"
#  define OSVRT_HAVE_SDT OSVRT_SDT_ENABLED
#  ifdef OSVRT_PROBE_SEMAPHORES
#    define OSVRT_PROBE_SEM_(n)       "osvrt_" #n "_semaphore"
#  else
#    define OSVRT_PROBE_SEM_(n)       "0"
#  endif
#  define OSVRT_PROBE1(n, a)          OSVRT_SDT_PROBE1(osvrt, n, OSVRT_PROBE_SEM_(n), a)
#  define OSVRT_PROBE2(n, a, b)       OSVRT_SDT_PROBE2(osvrt, n, OSVRT_PROBE_SEM_(n), a, b)
#  define OSVRT_PROBE3(n, a, b, c)    OSVRT_SDT_PROBE3(osvrt, n, OSVRT_PROBE_SEM_(n), a, b, c)
#  define OSVRT_SEMAPHORE_ATTR        OSVRT_SDT_SEMAPHORE_ATTR
#endif

#if !OSVRT_HAVE_SDT && !defined(OSVRT_PROBE1)
#  define OSVRT_PROBE1(n, a)          ((void)(a))
#  define OSVRT_PROBE2(n, a, b)       ((void)(a), (void)(b))
#  define OSVRT_PROBE3(n, a, b, c)    ((void)(a), (void)(b), (void)(c))
#endif
#ifndef OSVRT_SEMAPHORE_ATTR
#  define OSVRT_SEMAPHORE_ATTR
#endif

/* The semaphore is defined whatever the build, since Python reads it. */
#define OSVRT_SEMAPHORE(n) unsigned short osvrt_##n##_semaphore OSVRT_SEMAPHORE_ATTR

#endif
