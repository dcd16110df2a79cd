/* test_idle.c - per-CPU idle (poll, then sleep in epoll_wait on the CPU's
 * epfd) and kick (a write of the CPU's eventfd, registered in epfd). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "osvrt.h"

#define MS 1000000LL
#define SEC 1000000000LL

static struct osvrt_rt *rt;
static struct osvrt_cpu *cpu0;

static struct osvrt_cpu_stats stats(void)
{
    struct osvrt_cpu_stats s;
    osvrt_cpu_get_stats(cpu0, &s);
    return s;
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {ns / SEC, ns % SEC};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- a helper OS thread that acts once CPU 0 is in a given idle state ---- */

enum action { ACT_READY, ACT_WAKE, ACT_BURST, ACT_KICK };

struct helper {
    pthread_t th;
    uint32_t wait_state;      /* OSVRT_CPU_POLLING or OSVRT_CPU_SLEEPING */
    int64_t delay_ns;         /* then wait this long (into epoll_wait, or deep in the poll) */
    enum action act;
    uint64_t h;
    struct osvrt_pushnode *nodes;
    uint32_t nnodes;
    _Atomic int64_t acted_at; /* when the wake was made */
};

static void *helper_main(void *p)
{
    struct helper *hp = p;
    int64_t give_up = osvrt_now_ns() + 10 * SEC;
    while (OSVRT_IDLE_STATE(atomic_load(&cpu0->idle_state)) != hp->wait_state) {
        CHECK_MSG(osvrt_now_ns() < give_up, "CPU 0 never reached idle state %u", hp->wait_state);
        sched_yield();
    }
    sleep_ns(hp->delay_ns);
    CHECK_EQ(OSVRT_IDLE_STATE(atomic_load(&cpu0->idle_state)), hp->wait_state);  /* still idle: nothing else woke it */
    atomic_store(&hp->acted_at, osvrt_now_ns());
    switch (hp->act) {
    case ACT_READY:
        CHECK_EQ(osvrt_ready(rt, hp->h, 0), 1);
        break;
    case ACT_WAKE:
        CHECK_EQ(osvrt_wake(rt, hp->h), 1);
        break;
    case ACT_BURST:
        for (uint32_t i = 0; i < hp->nnodes; i++)
            osvrt_cpu_post(cpu0, &hp->nodes[i]);
        break;
    case ACT_KICK:
        osvrt_cpu_kick(cpu0);
        break;
    }
    return NULL;
}

static void helper_start(struct helper *hp, uint32_t state, int64_t delay_ns, enum action act)
{
    hp->wait_state = state;
    hp->delay_ns = delay_ns;
    hp->act = act;
    atomic_store(&hp->acted_at, 0);
    CHECK(pthread_create(&hp->th, NULL, helper_main, hp) == 0);
}

/* The owner idles: the doorbell sequence is read just before, as a worker
 * reads it before its last look at its own state.  Idle may return 0 on a
 * kick whose push it has not seen yet (the caller then looks again), so
 * "work arrived" is: it returned 1, or work is there now. */
static int idle(int64_t timeout_ns, int64_t spin_ns)
{
    int r = osvrt_cpu_idle(cpu0, timeout_ns, spin_ns, osvrt_cpu_kick_seq(cpu0), NULL, 0);
    CHECK_EQ(atomic_load(&cpu0->idle_state), OSVRT_CPU_BUSY);
    return r || osvrt_cpu_has_work(cpu0);
}

static void expect_drain(uint64_t h)
{
    uint64_t key[4];
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 1);
    CHECK_EQ(key[0] & ~OSVRT_KEY_CWAKE, h);         /* from osvrt_wake or osvrt_ready */
    CHECK(osvrt_get_state(rt, h) != OSVRT_WAKING);  /* off every list */
    CHECK_EQ(atomic_load(&osvrt_thread_get(&rt->table, h)->linked), 0);
    CHECK_EQ(osvrt_drain(rt, 0, key, 4), 0);
}

/* Nothing to do: idle returns 0, never before the timeout. */
static void test_timeout(void)
{
    struct osvrt_cpu_stats s0 = stats();
    static const struct { int64_t timeout, spin; } cases[] = {
        {50 * MS, 0},          /* straight to the sleep (epoll_wait) */
        {30 * MS, 10 * MS},    /* poll, then sleep */
        {20 * MS, 1 * SEC},    /* the timeout cuts the poll short */
        {1 * MS, -1},
        {0, 0},
    };
    int64_t total = 0;
    for (unsigned i = 0; i < sizeof cases / sizeof *cases; i++) {
        int64_t t0 = osvrt_now_ns();
        int r = idle(cases[i].timeout, cases[i].spin);
        int64_t dt = osvrt_now_ns() - t0;
        CHECK_EQ(r, 0);
        CHECK_MSG(dt >= cases[i].timeout, "idle(timeout %lld ns) returned after %lld ns",
                  (long long)cases[i].timeout, (long long)dt);
        CHECK_MSG(dt < cases[i].timeout + 1500 * MS, "idle(timeout %lld ns) took %lld ns",
                  (long long)cases[i].timeout, (long long)dt);
        total += cases[i].timeout;
    }
    struct osvrt_cpu_stats s1 = stats();
    CHECK_EQ(s1.idle_calls - s0.idle_calls, sizeof cases / sizeof *cases);
    CHECK(s1.idle_ns - s0.idle_ns >= (uint64_t)total);
    CHECK(s1.sleeps - s0.sleeps >= 3);   /* the first three reached the sleep */
    CHECK_EQ(s1.kicks_sent, s0.kicks_sent);
}

/* Work already there: idle returns 1 at once; a push to a busy CPU needs no kick. */
static void test_work_already_there(uint64_t h)
{
    struct osvrt_cpu_stats s0 = stats();
    CHECK_EQ(osvrt_ready(rt, h, 0), 1);
    int64_t t0 = osvrt_now_ns();
    CHECK_EQ(osvrt_cpu_idle(cpu0, 2 * SEC, 0, osvrt_cpu_kick_seq(cpu0), NULL, 0), 1);   /* already visible: exactly 1 */
    CHECK(osvrt_now_ns() - t0 < 1 * SEC);
    struct osvrt_cpu_stats s1 = stats();
    CHECK_EQ(s1.kicks_sent - s0.kicks_sent, 0);
    CHECK_EQ(s1.kicks_skipped - s0.kicks_skipped, 1);
    CHECK_EQ(s1.sleeps - s0.sleeps, 0);
    expect_drain(h);
}

/* A sleeping CPU is woken by the kick, long before its timeout. */
static void test_kick_wakes_sleeper(uint64_t h, enum action act)
{
    struct helper hp = {.h = h};
    if (act == ACT_WAKE) {
        CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
        CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 1);
    }
    struct osvrt_cpu_stats s0 = stats();
    helper_start(&hp, OSVRT_CPU_SLEEPING, 20 * MS, act);
    int64_t t0 = osvrt_now_ns();
    int r = idle(5 * SEC, 0);
    int64_t t1 = osvrt_now_ns();
    CHECK(pthread_join(hp.th, NULL) == 0);
    int64_t acted = atomic_load(&hp.acted_at);
    CHECK_EQ(r, 1);
    CHECK_MSG(acted > 0 && t1 - acted < 1 * SEC, "woke %lld ns after the kick",
              (long long)(t1 - acted));
    CHECK(t1 - t0 < 4 * SEC);
    struct osvrt_cpu_stats s1 = stats();
    CHECK_EQ(s1.kicks_sent - s0.kicks_sent, 1);
    CHECK_EQ(s1.kicks_skipped - s0.kicks_skipped, 0);
    CHECK_EQ(s1.sleeps - s0.sleeps, 1);
    CHECK_EQ(s1.pushes - s0.pushes, 1);
    expect_drain(h);
    printf("kick (%s): woke %.1f us after the wake\n", act == ACT_WAKE ? "wake" : "ready",
           (double)(t1 - acted) / 1e3);
}

/* A polling CPU needs no kick. */
static void test_polling_not_kicked(uint64_t h)
{
    struct helper hp = {.h = h};
    struct osvrt_cpu_stats s0 = stats();
    helper_start(&hp, OSVRT_CPU_POLLING, 5 * MS, ACT_READY);
    int64_t t0 = osvrt_now_ns();
    int r = idle(10 * SEC, 10 * SEC);
    int64_t t1 = osvrt_now_ns();
    CHECK(pthread_join(hp.th, NULL) == 0);
    CHECK_EQ(r, 1);
    CHECK(t1 - t0 < 5 * SEC);
    struct osvrt_cpu_stats s1 = stats();
    CHECK_EQ(s1.kicks_sent - s0.kicks_sent, 0);
    CHECK_EQ(s1.kicks_skipped - s0.kicks_skipped, 1);
    CHECK_EQ(s1.sleeps - s0.sleeps, 0);
    expect_drain(h);
}

/* A burst of wakes to one sleeping CPU costs few eventfd writes. */
static void test_burst(void)
{
    const uint32_t k = 20000;
    struct osvrt_pushnode *nodes = calloc(k, sizeof *nodes);
    CHECK(nodes);
    for (uint32_t i = 0; i < k; i++)
        nodes[i].key = OSVRT_KEY_TAG | i;   /* tagged: not thread handles */
    struct helper hp = {.nodes = nodes, .nnodes = k};
    struct osvrt_cpu_stats s0 = stats();
    helper_start(&hp, OSVRT_CPU_SLEEPING, 20 * MS, ACT_BURST);
    CHECK_EQ(idle(5 * SEC, 0), 1);
    uint64_t key[256];
    uint32_t got = 0;
    int64_t give_up = osvrt_now_ns() + 10 * SEC;
    while (got < k) {
        uint32_t n = osvrt_drain(rt, 0, key, 256);
        for (uint32_t i = 0; i < n; i++, got++)
            CHECK_EQ(key[i], OSVRT_KEY_TAG | got);   /* in push order */
        if (!n) {
            CHECK_MSG(osvrt_now_ns() < give_up, "burst: only %u of %u nodes arrived", got, k);
            idle(1 * SEC, 50 * MS);   /* poll: a busy owner needs no kicks */
        }
    }
    CHECK(pthread_join(hp.th, NULL) == 0);
    struct osvrt_cpu_stats s1 = stats();
    uint64_t sent = s1.kicks_sent - s0.kicks_sent, skipped = s1.kicks_skipped - s0.kicks_skipped;
    printf("burst of %u wakes to a sleeping CPU: %llu eventfd wakes, %llu skipped\n", k,
           (unsigned long long)sent, (unsigned long long)skipped);
    CHECK_EQ(sent + skipped, k);
    CHECK(sent >= 1);
    CHECK_MSG(sent * 20 <= k, "%llu eventfd wakes for a burst of %u", (unsigned long long)sent, k);
    CHECK_EQ(s1.pushes - s0.pushes, k);
    CHECK_EQ(s1.drained - s0.drained, k);
    free(nodes);
}

/* A kick with no work still ends the idle (a stop request, say): a kick that
 * came after the owner read the sequence is never lost, asleep or not. */
static void test_kick_without_work(void)
{
    struct osvrt_cpu_stats s0 = stats();
    uint32_t seq = osvrt_cpu_kick_seq(cpu0);
    osvrt_cpu_kick(cpu0);                             /* before the idle: still counts */
    int64_t t0 = osvrt_now_ns();
    CHECK_EQ(osvrt_cpu_idle(cpu0, 5 * SEC, 0, seq, NULL, 0), 0);
    CHECK(osvrt_now_ns() - t0 < 1 * SEC);
    CHECK(osvrt_cpu_kick_seq(cpu0) != seq);
    seq = osvrt_cpu_kick_seq(cpu0);                   /* the same, seen by the poll */
    osvrt_cpu_kick(cpu0);
    t0 = osvrt_now_ns();
    CHECK_EQ(osvrt_cpu_idle(cpu0, 5 * SEC, 5 * SEC, seq, NULL, 0), 0);
    CHECK(osvrt_now_ns() - t0 < 1 * SEC);

    struct helper hp0 = {0};                          /* kicked while polling */
    helper_start(&hp0, OSVRT_CPU_POLLING, 5 * MS, ACT_KICK);
    t0 = osvrt_now_ns();
    CHECK_EQ(idle(5 * SEC, 5 * SEC), 0);
    CHECK(pthread_join(hp0.th, NULL) == 0);
    CHECK_MSG(osvrt_now_ns() - t0 < 1 * SEC, "a kick did not end the poll");

    struct helper hp = {0};                           /* and while asleep */
    helper_start(&hp, OSVRT_CPU_SLEEPING, 20 * MS, ACT_KICK);
    t0 = osvrt_now_ns();
    CHECK_EQ(idle(5 * SEC, 0), 0);
    int64_t t1 = osvrt_now_ns();
    CHECK(pthread_join(hp.th, NULL) == 0);
    CHECK_MSG(t1 - atomic_load(&hp.acted_at) < 1 * SEC, "woke %lld ns after the kick",
              (long long)(t1 - atomic_load(&hp.acted_at)));
    CHECK(t1 - t0 < 4 * SEC);
    struct osvrt_cpu_stats s1 = stats();
    CHECK_EQ(s1.kicks_sent - s0.kicks_sent, 1);       /* only the sleeping one needed an eventfd write */
    CHECK_EQ(s1.kicks_skipped - s0.kicks_skipped, 3);
    CHECK_EQ(s1.pushes, s0.pushes);
}

/* `active`: work found while another worker is active (holds the GIL) is
 * returned after gil_wait_ns, or as soon as no other worker is active. */
static _Atomic uint32_t active;

static void *leave_active(void *arg)
{
    sleep_ns((int64_t)(intptr_t)arg);
    atomic_fetch_sub(&active, 1);
    return NULL;
}

static void test_active(uint64_t h)
{
    /* Alone (active 1 -> 0 while idle): work is returned at once. */
    atomic_store(&active, 1);
    CHECK_EQ(osvrt_ready(rt, h, 0), 1);
    int64_t t0 = osvrt_now_ns();
    CHECK_EQ(osvrt_cpu_idle(cpu0, 5 * SEC, 5 * SEC, osvrt_cpu_kick_seq(cpu0), &active, 2 * SEC), 1);
    CHECK(osvrt_now_ns() - t0 < 1 * SEC);
    CHECK_EQ(atomic_load(&active), 1);                /* restored on the way out */
    expect_drain(h);

    /* Another worker stays active: the poll holds the work for gil_wait_ns. */
    atomic_store(&active, 2);
    CHECK_EQ(osvrt_ready(rt, h, 0), 1);
    t0 = osvrt_now_ns();
    CHECK_EQ(osvrt_cpu_idle(cpu0, 5 * SEC, 5 * SEC, osvrt_cpu_kick_seq(cpu0), &active, 30 * MS), 1);
    int64_t dt = osvrt_now_ns() - t0;
    CHECK_MSG(dt >= 30 * MS && dt < 2 * SEC, "returned after %lld ns", (long long)dt);
    CHECK_EQ(atomic_load(&active), 2);
    expect_drain(h);

    /* ...until that worker goes idle too: then it returns at once. */
    atomic_store(&active, 2);
    CHECK_EQ(osvrt_ready(rt, h, 0), 1);
    pthread_t th;
    t0 = osvrt_now_ns();   /* before the leaver starts its 20 ms: it may run before we do */
    CHECK(pthread_create(&th, NULL, leave_active, (void *)(intptr_t)(20 * MS)) == 0);
    CHECK_EQ(osvrt_cpu_idle(cpu0, 5 * SEC, 5 * SEC, osvrt_cpu_kick_seq(cpu0), &active, 3 * SEC), 1);
    dt = osvrt_now_ns() - t0;
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_MSG(dt >= 20 * MS && dt < 2 * SEC, "returned after %lld ns", (long long)dt);
    CHECK_EQ(atomic_load(&active), 1);
    expect_drain(h);
}

/* Readiness: an fd registered in the CPU's epfd ends the sleep and is handed
 * out (never the kick's eventfd); a kick still ends a sleep with fds in epfd;
 * the non-blocking poll sees a ready fd; an fd that is not ready times out. */
struct fd_writer { int fd; int64_t delay_ns; };

static void *write_later(void *p)
{
    struct fd_writer *fw = p;
    int64_t give_up = osvrt_now_ns() + 10 * SEC;
    while (OSVRT_IDLE_STATE(atomic_load(&cpu0->idle_state)) != OSVRT_CPU_SLEEPING) {
        CHECK_MSG(osvrt_now_ns() < give_up, "CPU 0 never slept");
        sched_yield();
    }
    sleep_ns(fw->delay_ns);
    char c = 'x';
    CHECK_EQ(write(fw->fd, &c, 1), 1);
    return NULL;
}

static void test_readiness(void)
{
    int p[2];
    CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint32_t)p[0]};
    CHECK(epoll_ctl(cpu0->epfd, EPOLL_CTL_ADD, p[0], &ev) == 0);
    struct epoll_event out[8];
    int nev = -1;

    /* nothing ready: the timeout ends the sleep, no events */
    CHECK_EQ(osvrt_cpu_idle_io(cpu0, 20 * MS, 0, osvrt_cpu_kick_seq(cpu0), NULL, 0, out, 8, &nev), 0);
    CHECK_EQ(nev, 0);
    CHECK_EQ(osvrt_cpu_poll_io(cpu0, out, 8), 0);

    /* an fd that becomes ready while the CPU sleeps ends the sleep */
    struct osvrt_cpu_stats s0 = stats();
    struct fd_writer fw = {p[1], 20 * MS};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, write_later, &fw) == 0);
    int64_t t0 = osvrt_now_ns();
    CHECK_EQ(osvrt_cpu_idle_io(cpu0, 5 * SEC, 0, osvrt_cpu_kick_seq(cpu0), NULL, 0, out, 8, &nev), 1);
    int64_t dt = osvrt_now_ns() - t0;
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_EQ(nev, 1);
    CHECK_EQ((int)out[0].data.u64, p[0]);
    CHECK(out[0].events & EPOLLIN);
    CHECK_MSG(dt >= 15 * MS && dt < 2 * SEC, "returned after %lld ns", (long long)dt);
    CHECK_EQ(stats().io_events - s0.io_events, 1);

    /* still readable (level-triggered here): the busy poll sees it, and a
     * polling idle sees it without sleeping */
    CHECK_EQ(osvrt_cpu_poll_io(cpu0, out, 8), 1);
    s0 = stats();
    CHECK_EQ(osvrt_cpu_idle_io(cpu0, 5 * SEC, 1 * MS, osvrt_cpu_kick_seq(cpu0), NULL, 0, out, 8, &nev), 1);
    CHECK_EQ(nev, 1);
    CHECK_EQ(stats().sleeps, s0.sleeps);
    char buf[8];
    CHECK_EQ(read(p[0], buf, sizeof buf), 1);

    /* with an fd in epfd, a kick (the eventfd) still wakes the sleeper, and
     * the eventfd itself is never handed out as an event */
    struct helper hp = {0};
    helper_start(&hp, OSVRT_CPU_SLEEPING, 20 * MS, ACT_KICK);
    nev = -1;
    s0 = stats();
    t0 = osvrt_now_ns();
    CHECK_EQ(osvrt_cpu_idle_io(cpu0, 5 * SEC, 0, osvrt_cpu_kick_seq(cpu0), NULL, 0, out, 8, &nev), 0);
    CHECK(osvrt_now_ns() - t0 < 2 * SEC);
    CHECK(pthread_join(hp.th, NULL) == 0);
    CHECK_EQ(nev, 0);
    CHECK_EQ(stats().kicks_sent - s0.kicks_sent, 1);
    /* the eventfd was read back to zero: the next sleep is not cut short */
    t0 = osvrt_now_ns();
    CHECK_EQ(osvrt_cpu_idle_io(cpu0, 30 * MS, 0, osvrt_cpu_kick_seq(cpu0), NULL, 0, out, 8, &nev), 0);
    CHECK(osvrt_now_ns() - t0 >= 25 * MS);

    CHECK(epoll_ctl(cpu0->epfd, EPOLL_CTL_DEL, p[0], &ev) == 0);
    close(p[0]);
    close(p[1]);
}

/* The idle poll's yield rule (osvrt_cpu_note_yield): short yields never
 * rest; one that lost the CPU for a slice rests the yields, the rest
 * doubling while it repeats, capped, and a short yield ends the doubling. */
static void test_yield_rest(void)
{
    struct osvrt_cpu *c = &rt->cpus[1];
    int64_t now = 10 * SEC;
    CHECK(osvrt_cpu_may_yield(c, now));
    osvrt_cpu_note_yield(c, now, OSVRT_YIELD_SLICE_NS - 1);      /* a client's turn */
    CHECK(osvrt_cpu_may_yield(c, now));
    CHECK_EQ(c->yield_backoff_ns, 0);
    osvrt_cpu_note_yield(c, now, OSVRT_YIELD_SLICE_NS);          /* a busy thread's slice */
    int64_t end = now + OSVRT_YIELD_SLICE_NS + OSVRT_YIELD_REST_MIN_NS;
    CHECK(!osvrt_cpu_may_yield(c, end - 1));
    CHECK(osvrt_cpu_may_yield(c, end));
    int64_t rest = OSVRT_YIELD_REST_MIN_NS;
    for (int i = 0; i < 12; i++) {                               /* it repeats: doubling, capped */
        now = end;
        osvrt_cpu_note_yield(c, now, MS);
        rest = rest * 2 > OSVRT_YIELD_REST_MAX_NS ? OSVRT_YIELD_REST_MAX_NS : rest * 2;
        CHECK_EQ(c->yield_backoff_ns, rest);
        end = now + MS + rest;
        CHECK(!osvrt_cpu_may_yield(c, end - 1));
        CHECK(osvrt_cpu_may_yield(c, end));
    }
    CHECK_EQ(c->yield_backoff_ns, OSVRT_YIELD_REST_MAX_NS);
    osvrt_cpu_note_yield(c, end, 1000);                          /* quiet again */
    CHECK_EQ(c->yield_backoff_ns, 0);
    osvrt_cpu_note_yield(c, end, MS);
    CHECK_EQ(c->yield_backoff_ns, OSVRT_YIELD_REST_MIN_NS);
}

int main(void)
{
    rt = osvrt_rt_new(2);
    CHECK(rt != NULL);
    cpu0 = &rt->cpus[0];
    uint64_t h;
    CHECK_EQ(osvrt_table_alloc(&rt->table, 0, &h, 1), 1);

    test_timeout();
    test_work_already_there(h);
    test_kick_wakes_sleeper(h, ACT_READY);
    test_kick_wakes_sleeper(h, ACT_WAKE);
    test_polling_not_kicked(h);
    test_burst();
    test_kick_without_work();
    test_active(h);
    test_readiness();
    test_yield_rest();

    osvrt_rt_free(rt);
    printf("test_idle: OK\n");
    return 0;
}
