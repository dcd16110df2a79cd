/* test_wake.c - the wake protocol: deterministic cases, then a stress of
 * 1,000,000 cross-thread wait/wake cycles (250,000 under TSan) with a
 * watchdog that turns a lost wake-up into a failure instead of a hang. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "osvrt.h"
#include "relax.h"

static struct osvrt_rt *rt;

static struct osvrt_cpu_stats stats(uint32_t cpu)
{
    struct osvrt_cpu_stats s;
    osvrt_cpu_get_stats(&rt->cpus[cpu], &s);
    return s;
}


/* ---- deterministic cases (one OS thread) ---- */

static void test_wake_not_waiting(void)
{
    uint64_t h, key[4];
    CHECK_EQ(osvrt_table_alloc(&rt->table, 0, &h, 1), 1);
    uint64_t p = stats(0).pushes;

    /* wake of a thread in any state but WAITING: 0, nothing pushed, state kept. */
    static const uint32_t states[] = {OSVRT_UNSTARTED, OSVRT_RUNNING, OSVRT_QUEUED, OSVRT_TERMINATED};
    for (unsigned i = 0; i < sizeof states / sizeof *states; i++) {
        if (states[i] != OSVRT_UNSTARTED)
            CHECK_EQ(osvrt_set_state(rt, h, states[i]), 1);
        CHECK_EQ(osvrt_get_state(rt, h), states[i]);
        CHECK_EQ(osvrt_wake(rt, h), 0);
        CHECK_EQ(osvrt_get_state(rt, h), states[i]);
        CHECK_EQ(stats(0).pushes, p);
        CHECK(osvrt_pushlist_empty(&rt->cpus[0].incoming));
        CHECK_EQ(osvrt_drain(rt, 0, key, 4), 0);
    }

    /* WAITING: the first wake pushes once; a second wake (WAKING) is a no-op. */
    CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
    CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 1);
    CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 1);              /* idempotent while WAITING */
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_WAITING);
    CHECK_EQ(osvrt_wake(rt, h), 1);
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_WAKING);
    CHECK_EQ(stats(0).pushes, p + 1);
    CHECK_EQ(osvrt_wake(rt, h), 0);
    CHECK_EQ(osvrt_wake(rt, h), 0);
    CHECK_EQ(stats(0).pushes, p + 1);
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 1);
    CHECK_EQ(key[0], h | OSVRT_KEY_CWAKE);   /* pushed by osvrt_wake */
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_QUEUED);
    CHECK_EQ(osvrt_wake(rt, h), 0);                       /* QUEUED again: no-op */
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 0);

    /* The waker wins before the waiter aborts: abort fails, the thread is on
     * its pushlist (WAKING), a new wait is refused until it is drained. */
    CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
    CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 1);
    CHECK_EQ(osvrt_wake(rt, h), 1);
    CHECK_EQ(osvrt_wait_abort(rt, h), 0);
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_WAKING);
    CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 0);
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_WAKING);
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 1);
    CHECK_EQ(key[0], h | OSVRT_KEY_CWAKE);   /* pushed by osvrt_wake */
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_QUEUED);
    /* ...and after the drain the thread can wait again; a plain abort works. */
    CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 1);
    CHECK_EQ(osvrt_wait_abort(rt, h), 1);
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_RUNNING);
    CHECK_EQ(osvrt_wait_abort(rt, h), 0);                 /* not WAITING: nothing to abort */
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_RUNNING);

    /* ready() hands the thread to a CPU on its `link` node and leaves the
     * state word alone (it belongs to the C protocol). */
    CHECK_EQ(osvrt_ready(rt, h, 1), 1);
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_RUNNING);
    CHECK_EQ(atomic_load(&osvrt_thread_get(&rt->table, h)->linked), 1);
    CHECK_EQ(osvrt_table_free(&rt->table, &h, 1), 0);   /* `link` still on a list */
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 0);
    CHECK_EQ(osvrt_drain(rt, 1, key, 4), 1);
    CHECK_EQ(key[0], h);
    CHECK_EQ(atomic_load(&osvrt_thread_get(&rt->table, h)->linked), 0);
    CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
    CHECK_EQ(osvrt_wait_prepare(rt, h, 1), 1);
    uint64_t p1 = stats(1).pushes;
    p = stats(0).pushes;
    CHECK_EQ(osvrt_wake(rt, h), 1);
    CHECK_EQ(stats(1).pushes, p1 + 1);
    CHECK_EQ(stats(0).pushes, p);
    CHECK_EQ(osvrt_drain(rt, 1, key, 4), 1);
    CHECK_EQ(key[0], h | OSVRT_KEY_CWAKE);   /* pushed by osvrt_wake */

    /* A C wake and a hand-over race (a classifier wake and a cancel()): each
     * uses its own node, so both arrive, once each, and nothing is linked twice. */
    CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
    CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 1);
    CHECK_EQ(osvrt_wake(rt, h), 1);                  /* cwake on CPU 0's list */
    CHECK_EQ(osvrt_ready(rt, h, 0), 1);              /* link on CPU 0's list too */
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 2);         /* both arrive, in push order */
    CHECK_EQ(key[0], h | OSVRT_KEY_CWAKE);
    CHECK_EQ(key[1], h);
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 0);         /* and the list ends (no cycle) */
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_QUEUED);

    /* drain hands out keys in push order and keeps the rest for the next call. */
    uint64_t hs[6];
    CHECK_EQ(osvrt_table_alloc(&rt->table, 0, hs, 6), 6);
    for (int i = 0; i < 6; i++)
        CHECK_EQ(osvrt_ready(rt, hs[i], 0), 1);
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 4);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(key[i], hs[i]);
        CHECK_EQ(atomic_load(&osvrt_thread_get(&rt->table, hs[i])->linked), 0);
    }
    CHECK_EQ(atomic_load(&osvrt_thread_get(&rt->table, hs[4])->linked), 1);  /* not taken yet */
    CHECK(osvrt_cpu_has_work(&rt->cpus[0]));
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 2);
    CHECK_EQ(key[0], hs[4]);
    CHECK_EQ(key[1], hs[5]);
    CHECK(!osvrt_cpu_has_work(&rt->cpus[0]));
    CHECK_EQ(osvrt_table_free(&rt->table, hs, 6), 6);
    CHECK_EQ(osvrt_table_free(&rt->table, &h, 1), 1);
}

/* ---- stress: one waiter owning CPU 0, one or two wakers ---- */

static uint64_t h;                      /* the waiting thread's record */
static uint64_t rounds;
static _Atomic uint64_t last_round;     /* lowered by the waiter when the time budget runs out */
static int64_t budget_end;
static _Atomic uint64_t posted;         /* the condition: "round r is posted" */
static _Atomic uint64_t consumed;       /* last round the waiter finished */
static _Atomic uint64_t wakes_won;      /* osvrt_wake() calls that returned 1 */

/* waiter's counters (read after join) */
static uint64_t drains, aborted, lost_race, slept, spurious;

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The owner of CPU 0 takes its thread back: drain, idling in between. */
static void take_back(int64_t spin_ns)
{
    uint64_t key[4];
    for (;;) {
        uint32_t n = osvrt_drain(rt, 0, key, 4);
        if (n) {
            CHECK_EQ(n, 1);
            CHECK_EQ(key[0], h | OSVRT_KEY_CWAKE);   /* pushed by osvrt_wake */
            CHECK_EQ(osvrt_get_state(rt, h), OSVRT_QUEUED);
            drains++;
            return;
        }
        /* No timeout: a lost kick hangs here, and the watchdog reports it. */
        osvrt_cpu_idle(&rt->cpus[0], -1, spin_ns, osvrt_cpu_kick_seq(&rt->cpus[0]), NULL, 0);
    }
}

static void *waiter(void *arg)
{
    (void)arg;
    uint64_t rng = 0x2545f4914f6cdd1dull;
    for (uint64_t r = 1; r <= rounds; r++) {
        for (;;) {
            uint64_t x = xorshift(&rng);
            if (((x >> 20) & 7) == 0) {                    /* now and then let the waker post first */
                /* Until it has (up to 1 ms): a fixed spin was too short on a
                 * loaded host, where no round took the abort path. */
                int64_t until = osvrt_now_ns() + 1000000;
                while (atomic_load(&posted) < r && osvrt_now_ns() < until)
                    cpu_relax();
            }
            CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 1);       /* publish WAITING... */
            if (atomic_load(&posted) >= r) {               /* ...then re-check */
                if ((x & 7) == 0) {                        /* widen the window: let the waker win */
                    for (unsigned i = (unsigned)(x >> 8) % 256; i; i--)
                        cpu_relax();
                }
                if (osvrt_wait_abort(rt, h)) {
                    aborted++;
                    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_RUNNING);
                    break;
                }
                /* A waker's CAS won: the thread is on CPU 0's pushlist. */
                lost_race++;
                CHECK_EQ(osvrt_get_state(rt, h), OSVRT_WAKING);
                CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 0);
                take_back(1000000);
                CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
                break;
            }
            /* Condition false: sleep until a wake brings the thread back.  One
             * round in 8 goes straight to the futex, the others poll first. */
            take_back((x & 0x70) == 0 ? 0 : 200000);
            slept++;
            CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
            if (atomic_load(&posted) >= r)
                break;
            /* A late wake from an earlier round (its waker was slow): legal,
             * the waiter re-checks and waits again. */
            spurious++;
        }
        if (r < rounds && (r & 1023) == 0 && osvrt_now_ns() > budget_end) {
            /* Overloaded machine: stop early (main says so); last_round is
             * published before consumed, so every waker sees it in time. */
            atomic_store(&last_round, r);
            atomic_store(&consumed, r);
            break;
        }
        atomic_store(&consumed, r);
    }
    return NULL;
}

static void *waker(void *arg)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uintptr_t)arg;
    uint64_t won = 0;
    for (uint64_t r = 1; r <= rounds; r++) {
        unsigned spins = 0;
        while (atomic_load(&consumed) < r - 1) {
            if (++spins < 200)
                cpu_relax();
            else
                sched_yield();
        }
        if (r > atomic_load(&last_round))
            break;
        uint64_t x = xorshift(&rng);
        if ((x & 1023) == 0) {
            /* Now and then wait until the waiter has stopped polling and sleeps. */
            int64_t until = osvrt_now_ns() + 300000;
            while (osvrt_now_ns() < until)
                cpu_relax();
        } else if ((x & 3) == 0) {
            for (unsigned i = (unsigned)(x >> 8) % 128; i; i--)
                cpu_relax();
        }
        /* Make the condition true (monotonic: two wakers may race here)... */
        uint64_t cur = atomic_load(&posted);
        while (cur < r && !atomic_compare_exchange_weak(&posted, &cur, r))
            ;
        /* ...then wake. */
        won += (uint64_t)osvrt_wake(rt, h);
    }
    atomic_fetch_add(&wakes_won, won);
    return NULL;
}

static void dump_and_die(const char *why)
{
    struct osvrt_cpu *c = &rt->cpus[0];
    struct osvrt_cpu_stats s = stats(0);
    fprintf(stderr,
            "test_wake: %s\n"
            "  round %llu of %llu (consumed), posted %llu, thread state %u,\n"
            "  cpu0 idle_state %u doorbell %u incoming %s, pushes %llu drained %llu\n"
            "  kicks sent %llu skipped %llu, sleeps %llu\n",
            why, (unsigned long long)atomic_load(&consumed) + 1, (unsigned long long)rounds,
            (unsigned long long)atomic_load(&posted), (unsigned)osvrt_get_state(rt, h),
            (unsigned)atomic_load(&c->idle_state), (unsigned)atomic_load(&c->doorbell),
            osvrt_pushlist_empty(&c->incoming) ? "empty" : "NON-EMPTY",
            (unsigned long long)s.pushes, (unsigned long long)s.drained,
            (unsigned long long)s.kicks_sent, (unsigned long long)s.kicks_skipped,
            (unsigned long long)s.sleeps);
    _exit(1);
}

static void stress(int wakers, uint64_t n, uint64_t min_rounds, int64_t budget_s)
{
    rounds = n;
    atomic_store(&last_round, n);
    budget_end = osvrt_now_ns() + budget_s * 1000000000LL;
    atomic_store(&posted, 0);
    atomic_store(&consumed, 0);
    atomic_store(&wakes_won, 0);
    drains = aborted = lost_race = slept = spurious = 0;
    CHECK_EQ(osvrt_table_alloc(&rt->table, 0, &h, 1), 1);
    CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
    struct osvrt_cpu_stats s0 = stats(0);

    pthread_t w, k[2];
    int64_t t0 = osvrt_now_ns();
    CHECK(pthread_create(&w, NULL, waiter, NULL) == 0);
    for (int i = 0; i < wakers; i++)
        CHECK(pthread_create(&k[i], NULL, waker, (void *)(uintptr_t)(i + 1)) == 0);

    /* Watchdog: fail if the waiter makes no progress for a few seconds. */
    const int64_t stall_ns = (int64_t)OSVRT_TEST_STALL_S * 1000000000;
    uint64_t last = 0;
    int64_t last_t = osvrt_now_ns();
    for (;;) {
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
        uint64_t c = atomic_load(&consumed);
        int64_t now = osvrt_now_ns();
        if (c == atomic_load(&last_round))
            break;
        if (c != last) {
            last = c;
            last_t = now;
        } else if (now - last_t > stall_ns) {
            /* A lost wake-up leaves the owner idle (polling or asleep) with
             * its thread still to come.  An owner that is BUSY is runnable and
             * merely not scheduled (an overloaded host): give it longer. */
            uint32_t st = OSVRT_IDLE_STATE(atomic_load(&rt->cpus[0].idle_state));
            if (st != OSVRT_CPU_BUSY || now - last_t > 6 * stall_ns)
                dump_and_die("no progress for several seconds: lost wake-up");
        }
    }
    CHECK(pthread_join(w, NULL) == 0);
    for (int i = 0; i < wakers; i++)
        CHECK(pthread_join(k[i], NULL) == 0);
    int64_t t1 = osvrt_now_ns();
    int cut_short = atomic_load(&last_round) < rounds;
    if (cut_short) {
        printf("NOTE: time budget (%lld s) spent after %llu of %llu rounds: machine overloaded?\n",
               (long long)budget_s, (unsigned long long)atomic_load(&last_round),
               (unsigned long long)rounds);
        CHECK_MSG(atomic_load(&last_round) >= min_rounds, "fewer than %llu rounds in %lld s",
                  (unsigned long long)min_rounds, (long long)budget_s);
        rounds = atomic_load(&last_round);
    }

    /* A wake that won after the last round is still on the pushlist. */
    uint64_t key[4], late = 0;
    uint32_t m;
    while ((m = osvrt_drain(rt, 0, key, 4)) != 0) {
        CHECK_EQ(m, 1);
        CHECK_EQ(key[0], h | OSVRT_KEY_CWAKE);   /* pushed by osvrt_wake */
        late++;
    }
    struct osvrt_cpu_stats s1 = stats(0);
    uint64_t won = atomic_load(&wakes_won);
    printf("wake stress, %d waker(s): %llu rounds in %.2f s: aborted %llu, waker won before abort %llu, "
           "slept %llu (spurious %llu), wakes won %llu, late %llu; kicks sent %llu skipped %llu, "
           "futex sleeps %llu\n",
           wakers, (unsigned long long)rounds, (double)(t1 - t0) / 1e9, (unsigned long long)aborted,
           (unsigned long long)lost_race, (unsigned long long)slept, (unsigned long long)spurious,
           (unsigned long long)won, (unsigned long long)late,
           (unsigned long long)(s1.kicks_sent - s0.kicks_sent),
           (unsigned long long)(s1.kicks_skipped - s0.kicks_skipped),
           (unsigned long long)(s1.sleeps - s0.sleeps));

    /* Every won wake pushed the thread exactly once, and every push came from a won wake. */
    CHECK_EQ(drains + late, won);
    CHECK_EQ(s1.pushes - s0.pushes, won);
    CHECK_EQ(s1.drained - s0.drained, won);
    CHECK_EQ(s1.kicks_sent + s1.kicks_skipped - s0.kicks_sent - s0.kicks_skipped, won);
    CHECK_EQ(aborted + lost_race + slept - spurious, rounds);
    CHECK(spurious <= slept);
    /* Both sides of every race were exercised, unless an overloaded machine
     * cut the run short (then the threads rarely overlap at all and the
     * interleavings are the scheduler's; the checks above still hold). */
    if (!cut_short) {
        CHECK_MSG(aborted > 0, "the waiter never found the condition already true");
        CHECK_MSG(lost_race > 0, "the waker never won before wait_abort");
        CHECK_MSG(slept > 0, "the waiter never had to sleep");
        CHECK_MSG(s1.kicks_sent > s0.kicks_sent, "no futex kick was ever needed");
        CHECK_MSG(s1.sleeps > s0.sleeps, "the waiter never went to futex_wait");
    }
    CHECK_EQ(osvrt_table_free(&rt->table, &h, 1), 1);
}

int main(void)
{
    rt = osvrt_rt_new(2);
    CHECK(rt != NULL);
    test_wake_not_waiting();
    /* Time budgets keep an overloaded CI machine under the ctest TIMEOUT. */
    const int64_t budget = OSVRT_TEST_SLOW > 1 ? 3 : 1;
    /* The minimum rounds are what an overloaded 2-CPU host still manages
     * (about 13,000 in 30 s with four CPU hogs beside it); a quiet one runs
     * them all in a few seconds. */
    stress(1, SCALED(800000), 5000, 30 * budget);
    stress(2, SCALED(200000), 2000, 10 * budget);
    osvrt_rt_free(rt);
    printf("test_wake: OK\n");
    return 0;
}
