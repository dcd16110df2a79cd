/* test_peers.c - the C peers the benchmarks compare osvrt with: they run,
 * return sane figures, and the queue peers find no loss/dup/reorder. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>

#include "check.h"
#include "osvrt.h"
#include "peers.h"

/* The first two CPUs this process may run on (-1 if there is only one). */
static void two_cpus(int *a, int *b)
{
    cpu_set_t set;
    *a = *b = -1;
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0);
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set))
            continue;
        if (*a < 0)
            *a = c;
        else if (*b < 0)
            *b = c;
    }
}

int main(void)
{
    const uint64_t items = SCALED(200000);
    for (int kind = OSVRT_PEER_PUSHLIST; kind <= OSVRT_PEER_MUTEX_POP; kind++) {
        for (int producers = 1; producers <= 3; producers++) {
            double ns = osvrt_peer_queue(kind, producers, items);
            printf("queue kind %d, %d producer(s): %.1f ns/item\n", kind, producers, ns);
            CHECK_MSG(ns >= 0, "osvrt_peer_queue(%d, %d, %llu) = %f (lost, duplicated or reordered items)",
                      kind, producers, (unsigned long long)items, ns);
        }
        CHECK(osvrt_peer_queue(kind, 2, 0) == 0.0);
    }
    CHECK(osvrt_peer_queue(7, 2, 10) < 0);          /* bad kind */
    CHECK(osvrt_peer_queue(OSVRT_PEER_PUSHLIST, 0, 10) < 0);
    CHECK(osvrt_peer_queue(OSVRT_PEER_PUSHLIST, 65, 10) < 0);

    int a, b;
    two_cpus(&a, &b);
    const uint64_t rounds = SCALED(2000);
    double f = osvrt_peer_futex_pingpong(-1, -1, rounds);
    double c = osvrt_peer_condvar_pingpong(-1, -1, rounds);
    double s = osvrt_peer_spin_pingpong(-1, -1, rounds);
    printf("ping-pong unpinned: futex %.0f ns, condvar %.0f ns, spin %.0f ns\n", f, c, s);
    CHECK(f > 0 && c > 0 && s > 0);
    if (b >= 0) {
        f = osvrt_peer_futex_pingpong(a, b, rounds);
        s = osvrt_peer_spin_pingpong(a, b, rounds);
        printf("ping-pong on CPUs %d and %d: futex %.0f ns, spin %.0f ns\n", a, b, f, s);
        CHECK(f > 0 && s > 0);
    }
    /* Colocated: a spinning peer only gets the CPU back at a time slice, so few rounds. */
    c = osvrt_peer_condvar_pingpong(a, a, rounds);
    s = osvrt_peer_spin_pingpong(a, a, 5);
    printf("ping-pong both on CPU %d: condvar %.0f ns, spin %.0f ns\n", a, c, s);
    CHECK(c > 0 && s > 0);
    printf("test_peers: OK\n");
    return 0;
}
