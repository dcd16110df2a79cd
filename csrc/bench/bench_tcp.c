/* bench_tcp.c - the TCP engine's own cost: a bulk transfer between two
 * stacks in memory (no wire, no syscalls), one direction, both stacks on
 * this thread.  Prints MB/s and ns per data segment (each segment: built
 * and checksummed by one stack, verified and reassembled by the other, and
 * its ACK the other way).  For instruction counts:
 *   valgrind --tool=callgrind build/bench_tcp 8
 * Usage: bench_tcp [MiB] (default 64). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tcp.h"

static struct osvrt_tcp_stack *stack(uint32_t addr)
{
    struct osvrt_tcp_config cfg;
    osvrt_tcp_config_init(&cfg);
    cfg.addr = addr;
    cfg.max_conns = 64;
    cfg.rcvbuf = cfg.sndbuf = 1 << 20;
    cfg.isn_key[0] = addr;
    int err;
    struct osvrt_tcp_stack *s = osvrt_tcp_new(&cfg, &err);
    if (!s) {
        fprintf(stderr, "osvrt_tcp_new: %d\n", err);
        exit(1);
    }
    return s;
}

/* Everything one side has to send, into the other. */
static int pump(struct osvrt_tcp_stack *from, struct osvrt_tcp_stack *to, int64_t now, uint64_t *segs)
{
    static uint8_t pkt[2048];
    int32_t n;
    int moved = 0;
    while ((n = osvrt_tcp_output(from, pkt, sizeof pkt, now)) > 0) {
        if (osvrt_tcp_input(to, pkt, (uint32_t)n, 0, now) != 0) {
            fprintf(stderr, "a packet was dropped\n");
            exit(1);
        }
        *segs += 1;
        moved = 1;
    }
    return moved;
}

int main(int argc, char **argv)
{
    uint64_t total = (argc > 1 ? strtoull(argv[1], NULL, 0) : 64) << 20;
    struct osvrt_tcp_stack *a = stack(0xC6120001u), *b = stack(0xC6120002u);
    int64_t now = 1000000000;
    int32_t l = osvrt_tcp_listen(b, 80, 8);
    int32_t c = osvrt_tcp_connect(a, 0xC6120002u, 80, 0, now), s = -1;
    static uint8_t buf[65536];
    memset(buf, 7, sizeof buf);
    uint64_t sent = 0, got = 0, segs = 0, acks = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (got < total) {
        if (s < 0)
            s = osvrt_tcp_accept(b, l, NULL, NULL);
        if (s >= 0 && sent < total) {
            int64_t r = osvrt_tcp_send(a, c, buf, total - sent < sizeof buf ? total - sent : sizeof buf, now);
            if (r > 0)
                sent += (uint64_t)r;
        }
        int moved = pump(a, b, now, &segs);
        moved |= pump(b, a, now, &acks);
        if (s >= 0) {
            int64_t r;
            while ((r = osvrt_tcp_recv(b, s, buf, sizeof buf, now)) > 0)
                got += (uint64_t)r;
        }
        if (!moved) {                   /* only a delayed ACK can be pending: let time pass */
            now += 1000000;
            osvrt_tcp_on_timer(a, now);
            osvrt_tcp_on_timer(b, now);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%llu MiB in %.3f s: %.0f MB/s; %llu segments one way, %llu the other; %.0f ns per data segment\n",
           (unsigned long long)(total >> 20), dt, (double)total / dt / 1e6, (unsigned long long)segs,
           (unsigned long long)acks, dt * 1e9 / (double)segs);
    osvrt_tcp_free(a);
    osvrt_tcp_free(b);
    return 0;
}
