/* net_bench.h - C load generators for the net benchmarks (benchmarks/
 * bench_udp.py): a kernel UDP client and a blaster that hold no GIL, so the
 * server under test (osvrt, a Python thread, asyncio) has the interpreter
 * to itself, and the classifier's own per-packet cost without the kernel.
 * A cpu of -1 leaves the calling thread where it is. */
#ifndef OSVRT_NET_BENCH_H
#define OSVRT_NET_BENCH_H

#include <stdint.h>

struct osvrt_rr_result {
    uint64_t done;          /* replies received */
    uint64_t lost;          /* requests given up after timeout_ms without a reply */
    double elapsed_ns;      /* first send to last reply */
    double mean_ns, p50_ns, p99_ns;   /* round trip per request */
};

/* n request/response exchanges with an echo server at ip:port from a
 * connected kernel UDP socket, `window` requests in flight, `payload` bytes
 * each (>= 16: a sequence number and the send time lead; the server echoes
 * the datagram).  0, or a negative errno. */
int osvrt_net_bench_rr(const char *ip, uint16_t port, uint64_t n, uint32_t payload,
                       uint32_t window, int cpu, int timeout_ms, struct osvrt_rr_result *out);

/* Send n datagrams of `payload` bytes to ip:port as fast as one thread can:
 * sendmmsg batches of 64, or, with gso > 1, UDP_SEGMENT super-packets of gso
 * datagrams.  ns elapsed, or a negative errno. */
double osvrt_net_bench_blast(const char *ip, uint16_t port, uint64_t n, uint32_t payload,
                             uint32_t gso, int cpu);

/* A C UDP echo on the bound socket `fd`, in the calling thread until a
 * datagram equal to stop[0..stop_len) arrives: recvmmsg/sendmmsg in batches of
 * up to 64, each datagram (any size) sent back to its sender as it came, or
 * (dns) with the DNS response bits set as the bench's dns_reply sets them;
 * datagrams after the stop in its batch are dropped.  busy: poll with
 * MSG_DONTWAIT instead of sleeping in recvmmsg.  A server that runs no Python,
 * for the floors and ceilings of benchmarks/client_ceiling.py.  The number of
 * replies sent, or a negative errno. */
int64_t osvrt_net_bench_echo(int fd, int cpu, int busy, int dns, const char *stop,
                             uint32_t stop_len);

/* The classifier's cost per packet without the kernel: n UDP frames of
 * `payload` bytes spread over `flows` flows, through osvrt_net_rx_frame in
 * bursts of 64, channels drained as they go.  ns per packet, < 0 on error. */
double osvrt_net_bench_classify(uint64_t n, uint32_t payload, uint32_t flows);

#endif
