"""cffi build script: the out-of-line API-mode module osvrt._core over csrc/.

The cdef declares only what Python uses.  Python reads the words on its hot
path (a CPU's incoming head, the tracepoint semaphores) as plain memory, with
no call: every cffi call releases the GIL, and while another worker runs
Python that release costs tens of microseconds (DESIGN.md, "The GIL").
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.normpath(os.path.join(HERE, "..", "csrc"))
SOURCES = ["cpu.c", "peers.c", "pin.c", "thread_table.c", "trace.c", "wake.c"]

CDEF = """

enum osvrt_state {
    OSVRT_FREE = 0, OSVRT_UNSTARTED = 1, OSVRT_WAITING = 2, OSVRT_WAKING = 3,
    OSVRT_QUEUED = 4, OSVRT_RUNNING = 5, OSVRT_TERMINATED = 6,
};
#define OSVRT_KEY_TAG ...
#define OSVRT_KEY_CWAKE ...

struct osvrt_cpu_stats {
    uint64_t kicks_sent, kicks_skipped, pushes, drained, idle_ns, idle_calls, sleeps;
};
struct osvrt_rt { uint32_t ncpu; ...; };

struct osvrt_rt *osvrt_rt_new(uint32_t ncpu);
void osvrt_rt_free(struct osvrt_rt *rt);
uint32_t osvrt_table_alloc(void *table, uint32_t cpu, uint64_t *out, uint32_t n);
uint32_t osvrt_table_free(void *table, const uint64_t *h, uint32_t n);
void *osvrt_rt_table(struct osvrt_rt *rt);

int osvrt_wait_prepare(struct osvrt_rt *rt, uint64_t h, uint32_t cpu);
int osvrt_wait_abort(struct osvrt_rt *rt, uint64_t h);
int osvrt_wake(struct osvrt_rt *rt, uint64_t h);
int osvrt_ready(struct osvrt_rt *rt, uint64_t h, uint32_t cpu);
uint32_t osvrt_drain(struct osvrt_rt *rt, uint32_t cpu, uint64_t *out, uint32_t max);
int osvrt_set_state(struct osvrt_rt *rt, uint64_t h, uint32_t state);
uint32_t osvrt_get_state(struct osvrt_rt *rt, uint64_t h);

int osvrt_rt_idle(struct osvrt_rt *rt, uint32_t cpu, int64_t timeout_ns, int64_t spin_ns,
                  uint32_t seq, int64_t gil_wait_ns);
const uint32_t *osvrt_kick_word(struct osvrt_rt *rt, uint32_t cpu);
const uint32_t *osvrt_idle_word(struct osvrt_rt *rt, uint32_t cpu);
const uint64_t *osvrt_pushes_word(struct osvrt_rt *rt, uint32_t cpu);
const uint64_t *osvrt_drained_word(struct osvrt_rt *rt, uint32_t cpu);
void osvrt_rt_kick(struct osvrt_rt *rt, uint32_t cpu);
void osvrt_rt_cpu_stats(struct osvrt_rt *rt, uint32_t cpu, struct osvrt_cpu_stats *out);
const uintptr_t *osvrt_incoming_word(struct osvrt_rt *rt, uint32_t cpu);
int osvrt_pin_self(int cpu);
int64_t osvrt_now_ns(void);

unsigned short osvrt_switch_semaphore;
unsigned short osvrt_spawn_semaphore;
unsigned short osvrt_exit_semaphore;
unsigned short osvrt_migrate_semaphore;
void osvrt_trace_switch(uint32_t cpu, uint64_t from_id, uint64_t to_id);
void osvrt_trace_spawn(uint32_t cpu, uint64_t id);
void osvrt_trace_exit(uint32_t cpu, uint64_t id);
void osvrt_trace_migrate(uint64_t id, uint32_t from_cpu, uint32_t to_cpu);

enum osvrt_peer_queue { OSVRT_PEER_PUSHLIST = 0, OSVRT_PEER_MUTEX_QUEUE = 1, OSVRT_PEER_MUTEX_POP = 2 };
double osvrt_peer_futex_pingpong(int cpu_a, int cpu_b, uint64_t round_trips);
double osvrt_peer_condvar_pingpong(int cpu_a, int cpu_b, uint64_t round_trips);
double osvrt_peer_spin_pingpong(int cpu_a, int cpu_b, uint64_t round_trips);
double osvrt_peer_queue(int kind, int producers, uint64_t per_producer);
"""

# Thin adapters kept out of the C core: they only re-shape arguments for cffi.
GLUE = """
#include "osvrt.h"
static void *osvrt_rt_table(struct osvrt_rt *rt) { return &rt->table; }
static int osvrt_rt_idle(struct osvrt_rt *rt, uint32_t cpu, int64_t t, int64_t spin,
                         uint32_t seq, int64_t gil_wait)
{ return osvrt_cpu_idle(&rt->cpus[cpu], t, spin, seq, &rt->active, gil_wait); }
static const uint32_t *osvrt_kick_word(struct osvrt_rt *rt, uint32_t cpu)
{ return (const uint32_t *)&rt->cpus[cpu].futex; }
static const uint32_t *osvrt_idle_word(struct osvrt_rt *rt, uint32_t cpu)
{ return (const uint32_t *)&rt->cpus[cpu].idle_state; }
static const uint64_t *osvrt_pushes_word(struct osvrt_rt *rt, uint32_t cpu)
{ return (const uint64_t *)&rt->cpus[cpu].pushes; }
static const uint64_t *osvrt_drained_word(struct osvrt_rt *rt, uint32_t cpu)
{ return (const uint64_t *)&rt->cpus[cpu].drained; }
static void osvrt_rt_kick(struct osvrt_rt *rt, uint32_t cpu) { osvrt_cpu_kick(&rt->cpus[cpu]); }
static void osvrt_rt_cpu_stats(struct osvrt_rt *rt, uint32_t cpu, struct osvrt_cpu_stats *o)
{ osvrt_cpu_get_stats(&rt->cpus[cpu], o); }
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "osvrt._core",
    GLUE,
    sources=[os.path.relpath(os.path.join(CSRC, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(CSRC)],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wno-unused-function"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
