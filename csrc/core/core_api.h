/* core_api.h - the table of C-core entry points that the engine calls.
 *
 * The engine (osvrt/_engine/) is a separate CPython extension; the core is
 * built into the cffi module osvrt._core.  Rather than compile the core twice
 * (two copies of the SDT semaphores, two sets of probes), the core exports
 * this table and the engine calls through it: a direct call through a
 * pointer, with no cffi and no GIL release on the way (docs/design.md, "The GIL").
 * Bump OSVRT_CORE_API_VERSION when a member changes; the engine refuses a
 * table of another version.
 */
#ifndef OSVRT_CORE_API_H
#define OSVRT_CORE_API_H

#include <stdint.h>

#include "runtime.h"

#define OSVRT_CORE_API_VERSION 4u

struct osvrt_core_api {
    uint32_t version;
    uint32_t size;                 /* sizeof(struct osvrt_core_api) */
    uint32_t (*drain)(struct osvrt_rt *rt, uint32_t cpu, uint64_t *out, uint32_t max);
    int (*ready)(struct osvrt_rt *rt, uint64_t h, uint32_t cpu);
    int (*cpu_idle)(struct osvrt_cpu *c, int64_t timeout_ns, int64_t spin_ns, uint32_t seq,
                    _Atomic uint32_t *active, int64_t gil_wait_ns);
    void (*cpu_kick)(struct osvrt_cpu *c);
    int (*cpu_idle_io)(struct osvrt_cpu *c, int64_t timeout_ns, int64_t spin_ns, uint32_t seq,
                       _Atomic uint32_t *active, int64_t gil_wait_ns,
                       struct epoll_event *evs, int maxev, int *nev);
    int (*cpu_poll_io)(struct osvrt_cpu *c, struct epoll_event *evs, int maxev);
    void (*trace_switch)(uint32_t cpu, uint64_t from_id, uint64_t to_id);
    void (*trace_spawn)(uint32_t cpu, uint64_t id);
    void (*trace_exit)(uint32_t cpu, uint64_t id);
    /* The SDT semaphores (probes.h): non-zero while a tracer is attached.
     * Read with a plain load per switch: a stale 0 only misses an event. */
    const unsigned short *switch_semaphore;
    const unsigned short *spawn_semaphore;
    const unsigned short *exit_semaphore;
    /* Drain the CPU's packet source, if frames wait (cpu.h; version 3). */
    uint32_t (*cpu_rx_poll)(struct osvrt_cpu *c);
    /* The waiter's half of the wake protocol (runtime.h; version 4): for
     * cwait.py, called with the GIL held (a cffi call would release it). */
    int (*wait_prepare)(struct osvrt_rt *rt, uint64_t h, uint32_t cpu);
    int (*wait_abort)(struct osvrt_rt *rt, uint64_t h);
};

const struct osvrt_core_api *osvrt_core_api(void);

#endif
