/* test_pushlist.c - the MPSC pushlist: FIFO order, "first push" return value,
 * and N producers x M pushes against one draining consumer with no loss, no
 * duplicate and per-producer FIFO order. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "osvrt.h"

/* ---- single-threaded ---- */

static void test_single_thread(void)
{
    struct osvrt_pushlist l;
    struct osvrt_pushnode n[5];
    osvrt_pushlist_init(&l);

    CHECK(osvrt_pushlist_empty(&l));
    CHECK(osvrt_pushlist_take_all(&l) == NULL);

    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5; i++) {
            n[i].key = (uint64_t)(round * 10 + i);
            n[i].next = (struct osvrt_pushnode *)&l;   /* garbage the push must overwrite */
            int first = osvrt_pushlist_push(&l, &n[i]);
            /* 1 only for the push into an empty list. */
            CHECK_EQ(first, i == 0);
            CHECK(!osvrt_pushlist_empty(&l));
        }
        struct osvrt_pushnode *got = osvrt_pushlist_take_all(&l);
        CHECK(osvrt_pushlist_empty(&l));
        CHECK(osvrt_pushlist_take_all(&l) == NULL);
        for (int i = 0; i < 5; i++) {              /* oldest first */
            CHECK(got == &n[i]);
            CHECK_EQ(got->key, round * 10 + i);
            got = got->next;
        }
        CHECK(got == NULL);
    }

    /* A single node round-trips and terminates the list. */
    CHECK_EQ(osvrt_pushlist_push(&l, &n[0]), 1);
    struct osvrt_pushnode *one = osvrt_pushlist_take_all(&l);
    CHECK(one == &n[0] && one->next == NULL);
}

/* ---- N producers, one consumer ---- */

#define NPROD 4

struct item {
    struct osvrt_pushnode node;   /* first: a pushnode* is an item* */
    uint32_t producer;
    uint32_t seq;
};

static struct osvrt_pushlist list;
static struct item *items;
static uint64_t per_producer;
static _Atomic int go;
static _Atomic uint64_t first_pushes;   /* pushes that returned 1 */

static void *producer(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    struct item *mine = &items[(uint64_t)id * per_producer];
    uint64_t firsts = 0;
    while (!atomic_load_explicit(&go, memory_order_acquire))
        sched_yield();
    for (uint64_t i = 0; i < per_producer; i++) {
        struct item *it = &mine[i];
        it->producer = id;
        it->seq = (uint32_t)i;
        it->node.key = (uint64_t)id * per_producer + i;
        firsts += (uint64_t)osvrt_pushlist_push(&list, &it->node);
        if ((i & 4095) == 4095)
            sched_yield();   /* 5 threads on 2 cores: let the others interleave */
    }
    atomic_fetch_add(&first_pushes, firsts);
    return NULL;
}

static void test_producers_consumer(int verbose)
{
    per_producer = SCALED(250000);
    uint64_t total = NPROD * per_producer;
    items = calloc(total, sizeof *items);
    uint8_t *seen = calloc(total / 8 + 1, 1);
    uint64_t next_seq[NPROD] = {0};
    CHECK(items && seen);
    osvrt_pushlist_init(&list);
    atomic_store(&go, 0);
    atomic_store(&first_pushes, 0);

    pthread_t th[NPROD];
    for (uintptr_t i = 0; i < NPROD; i++)
        CHECK(pthread_create(&th[i], NULL, producer, (void *)i) == 0);

    int64_t t0 = osvrt_now_ns();
    int64_t deadline = t0 + 30LL * 1000000000 * (OSVRT_TEST_SLOW > 1 ? 4 : 1);
    atomic_store_explicit(&go, 1, memory_order_release);

    uint64_t got = 0, batches = 0, polls = 0, max_batch = 0;
    while (got < total) {
        struct osvrt_pushnode *n = osvrt_pushlist_take_all(&list);
        if (!n) {
            if ((++polls & 1023) == 0) {
                CHECK_MSG(osvrt_now_ns() < deadline,
                          "consumer stalled: %llu of %llu items received (lost items?)",
                          (unsigned long long)got, (unsigned long long)total);
                sched_yield();
            }
            continue;
        }
        batches++;
        uint64_t in_batch = 0;
        for (; n; n = n->next, in_batch++) {
            struct item *it = (struct item *)n;
            CHECK_MSG(it >= items && it < items + total, "node %p is not one of the items", (void *)n);
            uint64_t idx = (uint64_t)(it - items);
            CHECK_EQ(n->key, idx);
            CHECK_MSG(!(seen[idx / 8] & (1u << (idx % 8))),
                      "item %llu received twice", (unsigned long long)idx);
            seen[idx / 8] |= (uint8_t)(1u << (idx % 8));
            uint32_t p = it->producer;
            CHECK(p < NPROD);
            CHECK_EQ(idx, (uint64_t)p * per_producer + it->seq);
            CHECK_MSG(it->seq == next_seq[p], "producer %u: got seq %u, expected %llu (FIFO broken or item lost)",
                      p, it->seq, (unsigned long long)next_seq[p]);
            next_seq[p]++;
            got++;
        }
        if (in_batch > max_batch)
            max_batch = in_batch;
    }
    int64_t t1 = osvrt_now_ns();
    for (int i = 0; i < NPROD; i++)
        CHECK(pthread_join(th[i], NULL) == 0);

    CHECK(osvrt_pushlist_take_all(&list) == NULL);   /* nothing extra */
    for (int p = 0; p < NPROD; p++)
        CHECK_EQ(next_seq[p], per_producer);
    for (uint64_t i = 0; i < total; i++)
        CHECK(seen[i / 8] & (1u << (i % 8)));
    /* The list goes empty -> non-empty only by a push that returns 1, and
     * non-empty -> empty only by a take_all that returns a batch; they
     * alternate, starting and ending empty. */
    CHECK_EQ(atomic_load(&first_pushes), batches);

    if (verbose)
        printf("pushlist: %d producers x %llu items: %llu batches (max %llu), %.1f ns/item\n",
           NPROD, (unsigned long long)per_producer, (unsigned long long)batches,
           (unsigned long long)max_batch, (double)(t1 - t0) / (double)total);
    free(items);
    free(seen);
}

int main(void)
{
    test_single_thread();
    for (int i = 0; i < SCALED(20) + 1; i++)   /* many interleavings, fresh list each time */
        test_producers_consumer(i == 0);
    printf("test_pushlist: OK\n");
    return 0;
}
