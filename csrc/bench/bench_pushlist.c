/* bench_pushlist.c - C micro-benchmark of the wake-up path's building blocks.
 *
 *   bench_pushlist [items_per_producer [runs]]     (defaults: 1000000, 7)
 *
 * 1. 2 producers + 1 consumer: ns/item through the lock-free pushlist vs a
 *    FIFO under a pthread mutex (the two alternate, median of `runs` each),
 *    and the ratio mutex/pushlist (> 1: the pushlist is faster).
 * 2. For reference, one-way switch cost of two pthreads ping-ponging a token
 *    through a futex, a mutex+condvar, or a spin loop, both on one CPU
 *    (colocated) and on two CPUs (apart).
 * Exits non-zero if a peer reports an error (lost/duplicated items).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "osvrt.h"
#include "peers.h"

#define MAX_RUNS 101

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int failed;

static double check(double v, const char *what)
{
    if (v < 0) {
        fprintf(stderr, "bench_pushlist: %s failed (returned %f)\n", what, v);
        failed = 1;
    }
    return v;
}

typedef double (*pingpong_fn)(int, int, uint64_t);

static double pingpong_median(pingpong_fn fn, const char *what, int a, int b, uint64_t rounds, int runs)
{
    double v[MAX_RUNS];
    for (int i = 0; i < runs; i++)
        v[i] = check(fn(a, b, rounds), what);
    return median(v, runs);
}

int main(int argc, char **argv)
{
    uint64_t items = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int runs = argc > 2 ? atoi(argv[2]) : 7;
    if (items == 0 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: %s [items_per_producer (>0) [runs (1..%d)]]\n", argv[0], MAX_RUNS);
        return 2;
    }

    /* The first two CPUs we may run on. */
    cpu_set_t set;
    int cpu_a = -1, cpu_b = -1;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int c = 0; c < CPU_SETSIZE && cpu_b < 0; c++) {
            if (!CPU_ISSET(c, &set))
                continue;
            if (cpu_a < 0)
                cpu_a = c;
            else
                cpu_b = c;
        }
    }

    /* ---- queues: alternate the kinds so drift (frequency, noise) hits both ---- */
    static const struct { int kind; const char *name; } kinds[] = {
        {OSVRT_PEER_PUSHLIST, "pushlist (lock-free MPSC)"},
        {OSVRT_PEER_MUTEX_QUEUE, "mutex queue, take all"},
        {OSVRT_PEER_MUTEX_POP, "mutex queue, pop one"},
    };
    enum { NK = sizeof kinds / sizeof *kinds };
    double v[NK][MAX_RUNS], med[NK];
    osvrt_peer_queue(OSVRT_PEER_PUSHLIST, 2, items < 10000 ? items : 10000);   /* warm-up */
    for (int i = 0; i < runs; i++)
        for (int k = 0; k < NK; k++)
            v[k][i] = check(osvrt_peer_queue(kinds[k].kind, 2, items), kinds[k].name);
    printf("queue, 2 producers -> 1 consumer, %llu items per producer, median of %d runs:\n",
           (unsigned long long)items, runs);
    for (int k = 0; k < NK; k++) {
        double lo = v[k][0], hi = v[k][0];
        for (int i = 1; i < runs; i++) {
            lo = v[k][i] < lo ? v[k][i] : lo;
            hi = v[k][i] > hi ? v[k][i] : hi;
        }
        med[k] = median(v[k], runs);
        printf("  %-28s %8.1f ns/item   (min %.1f, max %.1f)\n", kinds[k].name, med[k], lo, hi);
    }
    for (int k = 1; k < NK; k++)
        printf("  ratio %s / pushlist  %6.2f\n", kinds[k].name, med[0] > 0 ? med[k] / med[0] : 0.0);

    /* ---- ping-pong, for reference ---- */
    uint64_t rounds = items / 50 < 100 ? 100 : items / 50;
    /* A spinning pair on one CPU hands over only at time-slice ends (ms each): few rounds. */
    uint64_t spin_co_rounds = items / 20000 < 5 ? 5 : items / 20000;
    int pp_runs = runs < 3 ? runs : 3;
    printf("ping-pong, ns per one-way switch, median of %d runs (%llu round trips; spin colocated: %llu):\n",
           pp_runs, (unsigned long long)rounds, (unsigned long long)spin_co_rounds);
    printf("  %-10s %14s %14s\n", "", "colocated", "apart");
    struct { const char *name; pingpong_fn fn; } pp[] = {
        {"futex", osvrt_peer_futex_pingpong},
        {"condvar", osvrt_peer_condvar_pingpong},
        {"spin", osvrt_peer_spin_pingpong},
    };
    for (unsigned i = 0; i < sizeof pp / sizeof *pp; i++) {
        uint64_t r = pp[i].fn == osvrt_peer_spin_pingpong ? spin_co_rounds : rounds;
        double co = pingpong_median(pp[i].fn, pp[i].name, cpu_a, cpu_a, r, pp_runs);
        if (cpu_b >= 0) {
            double apart = pingpong_median(pp[i].fn, pp[i].name, cpu_a, cpu_b, rounds, pp_runs);
            printf("  %-10s %11.0f ns %11.0f ns\n", pp[i].name, co, apart);
        } else {
            printf("  %-10s %11.0f ns %14s\n", pp[i].name, co, "(one CPU)");
        }
    }
    if (cpu_b >= 0)
        printf("  (colocated: both on CPU %d; apart: CPUs %d and %d)\n", cpu_a, cpu_a, cpu_b);
    return failed;
}
