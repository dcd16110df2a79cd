/* probes.h - USDT (SystemTap SDT) probes of the C core, provider "osvrt".
 *
 * perf sees them as sdt_osvrt:<name> (`perf probe sdt_osvrt:wake`, then
 * `perf record -e sdt_osvrt:wake`).  A probe site is one nop until a tracer
 * attaches, so the C probes are always compiled in.  Without <sys/sdt.h>
 * (or with -DOSVRT_NO_SDT) every probe compiles to nothing.
 *
 * The Python scheduler's tracepoints (switch, spawn, exit, migrate) sit behind
 * SDT semaphores: the kernel increments the semaphore while perf is attached,
 * Python reads it as a plain global (no call, no GIL release) and calls into C
 * only when it is non-zero.  That is what makes them free when unused.
 */
#ifndef OSVRT_PROBES_H
#define OSVRT_PROBES_H

#if !defined(OSVRT_NO_SDT) && defined(__has_include)
#  if __has_include(<sys/sdt.h>)
#    define OSVRT_HAVE_SDT 1
#  endif
#endif

#ifdef OSVRT_HAVE_SDT
#  include <sys/sdt.h>   /* trace.c defines _SDT_HAS_SEMAPHORES before this */
#  define OSVRT_PROBE1(n, a)          STAP_PROBE1(osvrt, n, a)
#  define OSVRT_PROBE2(n, a, b)       STAP_PROBE2(osvrt, n, a, b)
#  define OSVRT_PROBE3(n, a, b, c)    STAP_PROBE3(osvrt, n, a, b, c)
/* Semaphore-guarded probes (trace.c only): the kernel raises the semaphore
 * while a tracer is attached (uprobe reference counters, Linux >= 4.20). */
#  define OSVRT_SEMAPHORE(n) \
        unsigned short osvrt_##n##_semaphore __attribute__((section(".probes")))
#else
#  define OSVRT_PROBE1(n, a)          ((void)(a))
#  define OSVRT_PROBE2(n, a, b)       ((void)(a), (void)(b))
#  define OSVRT_PROBE3(n, a, b, c)    ((void)(a), (void)(b), (void)(c))
#  define OSVRT_SEMAPHORE(n)          unsigned short osvrt_##n##_semaphore
#endif

#endif
