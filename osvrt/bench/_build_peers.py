"""cffi build script: osvrt.bench._peers, the benchmarks' C peers (pthread
ping-pongs, a mutex queue: csrc/bench/peers.c) and the UDP load generator
(csrc/bench/net_bench.c), kept out of the runtime's osvrt._core.  They use the
core's pushlist, pin and clock and the classifier, so this module carries its
own copy of those sources (a benchmark tool; nothing is shared at run time)."""
import os
import sys

from cffi import FFI

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from _build import CFLAGS, CSRC, SOURCES  # noqa: E402  (the core's sources and flags)

CDEF = """
enum osvrt_peer_queue { OSVRT_PEER_PUSHLIST = 0, OSVRT_PEER_MUTEX_QUEUE = 1, OSVRT_PEER_MUTEX_POP = 2 };
double osvrt_peer_futex_pingpong(int cpu_a, int cpu_b, uint64_t round_trips);
double osvrt_peer_condvar_pingpong(int cpu_a, int cpu_b, uint64_t round_trips);
double osvrt_peer_spin_pingpong(int cpu_a, int cpu_b, uint64_t round_trips);
double osvrt_peer_queue(int kind, int producers, uint64_t per_producer);

struct osvrt_rr_result { uint64_t done, lost; double elapsed_ns, mean_ns, p50_ns, p99_ns; };
int osvrt_net_bench_rr(const char *ip, uint16_t port, uint64_t n, uint32_t payload,
                       uint32_t window, int cpu, int timeout_ms, struct osvrt_rr_result *out);
double osvrt_net_bench_blast(const char *ip, uint16_t port, uint64_t n, uint32_t payload,
                             uint32_t gso, int cpu);
double osvrt_net_bench_classify(uint64_t n, uint32_t payload, uint32_t flows);
int64_t osvrt_net_bench_echo(int fd, int cpu, int busy, int dns, const char *stop,
                             uint32_t stop_len);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "osvrt.bench._peers",
    '#include "peers.h"\n#include "net_bench.h"\n',
    sources=[os.path.relpath(os.path.join(CSRC, s))
             for s in SOURCES + ["bench/peers.c", "bench/net_bench.c"]],
    include_dirs=[os.path.relpath(os.path.join(CSRC, d)) for d in ("core", "net", "bench")],
    extra_compile_args=CFLAGS,
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
