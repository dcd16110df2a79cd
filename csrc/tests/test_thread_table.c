/* test_thread_table.c - handles, generations and reuse of thread records. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "osvrt.h"

static struct osvrt_rt *rt;

static uint64_t alloc1(uint32_t cpu)
{
    uint64_t h;
    CHECK_EQ(osvrt_table_alloc(&rt->table, cpu, &h, 1), 1);
    return h;
}

static int free1(uint64_t h)
{
    return (int)osvrt_table_free(&rt->table, &h, 1);
}

static uint64_t pushes(uint32_t cpu)
{
    struct osvrt_cpu_stats s;
    osvrt_cpu_get_stats(&rt->cpus[cpu], &s);
    return s.pushes;
}

/* alloc/free/realloc: the generation changes, stale handles are refused everywhere. */
static void test_stale_handles(void)
{
    uint64_t h1 = alloc1(0);
    /* The table's very first handle (record 0) is not 0, the engine's "none". */
    CHECK_EQ(osvrt_handle_idx(h1), 0);
    CHECK(h1 != 0);
    struct osvrt_thread *th = osvrt_thread_get(&rt->table, h1);
    CHECK(th != NULL);
    CHECK_EQ(th->idx, osvrt_handle_idx(h1));
    CHECK_EQ(osvrt_get_state(rt, h1), OSVRT_UNSTARTED);
    CHECK_EQ(atomic_load(&th->cpu), 0);

    CHECK_EQ(free1(h1), 1);
    CHECK(osvrt_thread_get(&rt->table, h1) == NULL);
    CHECK_EQ(osvrt_get_state(rt, h1), OSVRT_FREE);
    CHECK_EQ(free1(h1), 0);                          /* double free */

    /* The slot is reused (LIFO free stack) under a new generation. */
    uint64_t h2 = alloc1(1);
    CHECK_EQ(osvrt_handle_idx(h2), osvrt_handle_idx(h1));
    CHECK(osvrt_handle_gen(h2) != osvrt_handle_gen(h1));
    CHECK(h2 != h1);
    CHECK(osvrt_thread_get(&rt->table, h2) == th);  /* same record, stable pointer */
    CHECK(osvrt_thread_get(&rt->table, h1) == NULL);
    CHECK_EQ(atomic_load(&th->cpu), 1);

    /* Stale h1 must not touch the new incarnation, in any state of it. */
    CHECK_EQ(free1(h1), 0);
    CHECK_EQ(osvrt_get_state(rt, h2), OSVRT_UNSTARTED);
    CHECK_EQ(osvrt_set_state(rt, h1, OSVRT_RUNNING), 0);
    CHECK_EQ(osvrt_get_state(rt, h2), OSVRT_UNSTARTED);
    CHECK_EQ(osvrt_wait_prepare(rt, h1, 0), 0);
    CHECK_EQ(osvrt_get_state(rt, h2), OSVRT_UNSTARTED);

    uint64_t p0 = pushes(0), p1 = pushes(1);
    CHECK_EQ(osvrt_ready(rt, h1, 0), 0);
    CHECK_EQ(osvrt_get_state(rt, h2), OSVRT_UNSTARTED);
    CHECK_EQ(atomic_load(&th->cpu), 1);

    CHECK_EQ(osvrt_wait_prepare(rt, h2, 1), 1);      /* h2 WAITING on CPU 1: a wake could succeed... */
    CHECK_EQ(osvrt_wake(rt, h1), 0);                 /* ...but not through the stale handle */
    CHECK_EQ(osvrt_wait_abort(rt, h1), 0);
    CHECK_EQ(osvrt_get_state(rt, h2), OSVRT_WAITING);
    CHECK_EQ(pushes(0), p0);
    CHECK_EQ(pushes(1), p1);
    CHECK(osvrt_pushlist_empty(&rt->cpus[0].incoming));
    CHECK(osvrt_pushlist_empty(&rt->cpus[1].incoming));

    /* A record in WAKING (still linked on a pushlist) is refused by free. */
    CHECK_EQ(osvrt_wake(rt, h2), 1);
    CHECK_EQ(osvrt_get_state(rt, h2), OSVRT_WAKING);
    CHECK_EQ(free1(h2), 0);
    CHECK(osvrt_thread_get(&rt->table, h2) == th);
    CHECK_EQ(osvrt_set_state(rt, h2, OSVRT_RUNNING), 0);   /* WAKING belongs to the protocol */
    uint64_t key[4];
    CHECK_EQ(osvrt_drain(rt, 1, key, 4), 1);
    CHECK_EQ(key[0], h2 | OSVRT_KEY_CWAKE);          /* pushed by osvrt_wake */
    CHECK_EQ(osvrt_get_state(rt, h2), OSVRT_QUEUED);
    CHECK_EQ(free1(h2), 1);                          /* drained: free now works */
    CHECK_EQ(free1(h2), 0);

    /* A WAITING record may be freed; a late wake through the old handle is a no-op. */
    uint64_t h3 = alloc1(0);
    CHECK_EQ(osvrt_wait_prepare(rt, h3, 0), 1);
    CHECK_EQ(free1(h3), 1);
    p0 = pushes(0);
    CHECK_EQ(osvrt_wake(rt, h3), 0);
    CHECK_EQ(pushes(0), p0);
    uint64_t h4 = alloc1(0);                          /* reuse, then the old handle again */
    CHECK_EQ(osvrt_handle_idx(h4), osvrt_handle_idx(h3));
    CHECK_EQ(osvrt_wait_prepare(rt, h4, 0), 1);
    CHECK_EQ(osvrt_wake(rt, h3), 0);
    CHECK_EQ(osvrt_get_state(rt, h4), OSVRT_WAITING);
    CHECK_EQ(osvrt_wait_abort(rt, h4), 1);
    CHECK_EQ(osvrt_get_state(rt, h4), OSVRT_RUNNING);

    /* set_state: never into WAITING/WAKING/FREE or past TERMINATED, never out of WAITING. */
    CHECK_EQ(osvrt_set_state(rt, h4, OSVRT_WAITING), 0);
    CHECK_EQ(osvrt_set_state(rt, h4, OSVRT_WAKING), 0);
    CHECK_EQ(osvrt_set_state(rt, h4, OSVRT_FREE), 0);
    CHECK_EQ(osvrt_set_state(rt, h4, OSVRT_TERMINATED + 1), 0);
    CHECK_EQ(osvrt_get_state(rt, h4), OSVRT_RUNNING);
    CHECK_EQ(osvrt_set_state(rt, h4, OSVRT_QUEUED), 1);
    CHECK_EQ(osvrt_get_state(rt, h4), OSVRT_QUEUED);
    CHECK_EQ(osvrt_wait_prepare(rt, h4, 0), 1);
    CHECK_EQ(osvrt_set_state(rt, h4, OSVRT_RUNNING), 0);
    CHECK_EQ(osvrt_get_state(rt, h4), OSVRT_WAITING);
    CHECK_EQ(osvrt_wait_abort(rt, h4), 1);
    CHECK_EQ(osvrt_set_state(rt, h4, OSVRT_TERMINATED), 1);
    CHECK_EQ(free1(h4), 1);

    /* Handles that never named a record. */
    CHECK(osvrt_thread_get(&rt->table, osvrt_handle_make(0, 4000000)) == NULL);   /* unmapped chunk */
    CHECK(osvrt_thread_get(&rt->table, osvrt_handle_make(0, 0xffffffffu)) == NULL);  /* beyond the table */
    CHECK(osvrt_thread_get(&rt->table, h4 | OSVRT_KEY_TAG) == NULL);               /* a tagged key */
    CHECK_EQ(osvrt_wake(rt, osvrt_handle_make(0, 0xffffffffu)), 0);
    CHECK_EQ(free1(osvrt_handle_make(0, 0xffffffffu)), 0);
    uint64_t h5 = alloc1(0);
    CHECK_EQ(osvrt_ready(rt, h5, rt->ncpu), 0);      /* bad cpu */
    CHECK_EQ(osvrt_get_state(rt, h5), OSVRT_UNSTARTED);
    CHECK_EQ(osvrt_drain(rt, rt->ncpu, key, 4), 0);
    CHECK_EQ(free1(h5), 1);

    /* The generation moves on at every reuse of one slot. */
    uint64_t prev = alloc1(0);
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(free1(prev), 1);
        uint64_t h = alloc1(0);
        CHECK_EQ(osvrt_handle_idx(h), osvrt_handle_idx(prev));
        CHECK_EQ(osvrt_handle_gen(h), osvrt_handle_gen(prev) + 1);
        CHECK(h != 0);
        CHECK(osvrt_thread_get(&rt->table, prev) == NULL);
        CHECK_EQ(free1(prev), 0);
        prev = h;
    }
    CHECK_EQ(free1(prev), 1);
}

/* Many records across several chunks: pointers stay put while the table grows. */
static void test_many(void)
{
    const uint32_t n = 3 * OSVRT_CHUNK_SIZE + 1234;   /* > 4096: at least 4 chunks */
    uint64_t *h = malloc(n * sizeof *h);
    struct osvrt_thread **ptr = malloc(n * sizeof *ptr);
    uint8_t *used = calloc(OSVRT_CHUNK_SIZE * 8, 1);
    CHECK(h && ptr && used);

    uint32_t got = 0;
    while (got < n) {                                 /* uneven batches */
        uint32_t b = n - got < 777 ? n - got : 777;
        CHECK_EQ(osvrt_table_alloc(&rt->table, got % rt->ncpu, h + got, b), b);
        for (uint32_t i = got; i < got + b; i++) {
            ptr[i] = osvrt_thread_get(&rt->table, h[i]);
            CHECK(ptr[i] != NULL);
        }
        got += b;
    }
    CHECK(rt->table.nchunks >= 4);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = osvrt_handle_idx(h[i]);
        CHECK(idx < OSVRT_CHUNK_SIZE * 8);
        CHECK_MSG(!used[idx], "index %u handed out twice", idx);
        used[idx] = 1;
        CHECK(osvrt_thread_get(&rt->table, h[i]) == ptr[i]);   /* stable after growth */
        CHECK_EQ(ptr[i]->idx, idx);
        CHECK(osvrt_thread_at(&rt->table, idx) == ptr[i]);
        CHECK_EQ(osvrt_get_state(rt, h[i]), OSVRT_UNSTARTED);
        CHECK_EQ(atomic_load(&ptr[i]->cpu), (i / 777 * 777) % rt->ncpu);
    }
    /* Records of one chunk are contiguous, so distinct indexes never alias. */
    CHECK(ptr[0] != ptr[n - 1]);

    uint32_t nchunks = rt->table.nchunks;
    CHECK_EQ(osvrt_table_free(&rt->table, h, n), n);
    CHECK_EQ(osvrt_table_free(&rt->table, h, n), 0);   /* all stale now */
    for (uint32_t i = 0; i < n; i++)
        CHECK(osvrt_thread_get(&rt->table, h[i]) == NULL);

    /* Realloc the same number: no new chunk, every old handle still stale. */
    uint64_t *h2 = malloc(n * sizeof *h2);
    CHECK(h2);
    CHECK_EQ(osvrt_table_alloc(&rt->table, 0, h2, n), n);
    CHECK_EQ(rt->table.nchunks, nchunks);
    for (uint32_t i = 0; i < n; i++) {
        CHECK(osvrt_thread_get(&rt->table, h[i]) == NULL);
        struct osvrt_thread *th = osvrt_thread_get(&rt->table, h2[i]);
        CHECK(th != NULL && th == osvrt_thread_at(&rt->table, osvrt_handle_idx(h2[i])));
    }
    CHECK_EQ(osvrt_table_free(&rt->table, h2, n), n);
    free(h);
    free(h2);
    free(ptr);
    free(used);
}

/* ---- concurrent alloc/free ---- */

#define NWORKERS 4
#define OWNER_SLOTS (OSVRT_CHUNK_SIZE * 16)
static struct osvrt_thread_table ctab;
static _Atomic uint32_t owner[OWNER_SLOTS];   /* who holds each index: 0 = nobody */
static uint64_t iters;

static void *worker(void *arg)
{
    uint32_t me = (uint32_t)(uintptr_t)arg + 1;
    uint64_t rng = 0x9e3779b97f4a7c15ull * me;
    uint64_t h[16], stale[16];
    uint32_t nstale = 0;
    for (uint64_t it = 0; it < iters; it++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        uint32_t b = 1 + (uint32_t)(rng % 16);
        CHECK_EQ(osvrt_table_alloc(&ctab, me, h, b), b);
        for (uint32_t i = 0; i < b; i++) {
            uint32_t idx = osvrt_handle_idx(h[i]);
            CHECK(idx < OWNER_SLOTS);
            uint32_t expect = 0;
            CHECK_MSG(atomic_compare_exchange_strong(&owner[idx], &expect, me),
                      "index %u handed to worker %u while worker %u holds it", idx, me, expect);
            struct osvrt_thread *th = osvrt_thread_get(&ctab, h[i]);
            CHECK(th != NULL && th->idx == idx);
            CHECK_EQ(atomic_load(&th->cpu), me);
        }
        /* Stale handles from the last round (their slots may be someone
         * else's now): every operation on them must fail. */
        CHECK_EQ(osvrt_table_free(&ctab, stale, nstale), 0);
        for (uint32_t i = 0; i < nstale; i++)
            CHECK(osvrt_thread_get(&ctab, stale[i]) == NULL);
        if ((it & 7) == 0)
            sched_yield();
        for (uint32_t i = 0; i < b; i++) {
            CHECK(osvrt_thread_get(&ctab, h[i]) != NULL);     /* nobody freed ours */
            atomic_store(&owner[osvrt_handle_idx(h[i])], 0);  /* before the free makes it reusable */
        }
        CHECK_EQ(osvrt_table_free(&ctab, h, b), b);
        memcpy(stale, h, b * sizeof *h);
        nstale = b;
    }
    return NULL;
}

static void test_concurrent(void)
{
    CHECK(osvrt_table_init(&ctab) == 0);
    iters = SCALED(200000);
    pthread_t th[NWORKERS];
    for (uintptr_t i = 0; i < NWORKERS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, (void *)i) == 0);
    for (int i = 0; i < NWORKERS; i++)
        CHECK(pthread_join(th[i], NULL) == 0);
    /* Everything was given back: the free stack holds every mapped index once. */
    CHECK_EQ(ctab.nfree, ctab.nchunks * OSVRT_CHUNK_SIZE);
    uint8_t *dup = calloc(ctab.nfree, 1);
    CHECK(dup);
    for (uint32_t i = 0; i < ctab.nfree; i++) {
        uint32_t idx = ctab.free_idx[i];
        CHECK(idx < ctab.nfree && !dup[idx]);
        dup[idx] = 1;
        CHECK_EQ(osvrt_thread_state(osvrt_thread_at(&ctab, idx)), OSVRT_FREE);
    }
    free(dup);
    osvrt_table_destroy(&ctab);
}

int main(void)
{
    rt = osvrt_rt_new(2);
    CHECK(rt != NULL);
    CHECK(osvrt_rt_new(0) == NULL);
    test_stale_handles();
    test_many();
    test_concurrent();
    osvrt_rt_free(rt);
    printf("test_thread_table: OK\n");
    return 0;
}
