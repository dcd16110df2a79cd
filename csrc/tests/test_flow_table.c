/* test_flow_table.c - SipHash-2-4 against the reference vectors; insert,
 * lookup, remove, the lookup order (connected, bound, wildcard); deferred
 * release while a reader is inside a read section; then a stress: reader
 * threads look up without a lock while a writer adds and removes flows, and
 * a node is poisoned when released (and freed: ASan catches a late reader). */
#define _GNU_SOURCE
#include <pthread.h>
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "flow_table.h"

static void test_siphash_vectors(void)
{
    /* The reference implementation's vectors (key 00..0f, message 00..n-1). */
    static const uint64_t expect[] = {
        0x726fdb47dd0e0e31ull, 0x74f839c593dc67fdull, 0x0d6c8009d9a94f5aull, 0x85676696d7fb7e2dull,
        0xcf2794e0277187b7ull, 0x18765564cd99a68dull, 0xcbc9466e58fee3ceull, 0xab0200f58b01d137ull,
        0x93f5f5799a932462ull, 0x9e0082df0ba9e4b0ull, 0x7a5dbbc594ddb9f3ull, 0xf4b32f46226bada7ull,
        0x751e8fbc860ee5fbull, 0x14ea5627c0843d90ull, 0xf723ca908e7af2eeull, 0xa129ca6149be45e5ull,
        0x3f2acc7f57c29bdbull, 0x699ae9f52cbe4794ull, 0x4bc1b3f0968dd39cull, 0xbb6dc91da77961bdull,
        0xbed65cf21aa2ee98ull, 0xd0f2cbb02e3b67c7ull, 0x93536795e3a33e88ull, 0xa80c038ccd5ccec8ull,
    };
    struct osvrt_sipkey k = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
    uint8_t msg[32];
    for (unsigned i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)i;
    for (unsigned n = 0; n < sizeof expect / sizeof *expect; n++)
        CHECK_MSG(osvrt_siphash(&k, msg, n) == expect[n], "siphash vector %u", n);
}

struct tflow {
    struct osvrt_ft_node node;
    _Atomic uint32_t magic;      /* ALIVE while linked or retired, DEAD once released */
    uint32_t id;
};
#define ALIVE 0xa11feu
#define DEAD  0xdeadu
static _Atomic uint32_t released;

static void release_tflow(struct osvrt_ft_node *n)
{
    struct tflow *f = (struct tflow *)n;
    CHECK_EQ(atomic_load(&f->magic), ALIVE);
    atomic_store(&f->magic, DEAD);
    atomic_fetch_add(&released, 1);
    free(f);
}

static struct tflow *mk(uint8_t proto, uint32_t daddr, uint16_t dport, uint32_t saddr, uint16_t sport)
{
    struct tflow *f = calloc(1, sizeof *f);
    f->node.key = (struct osvrt_flow_key){.daddr = daddr, .saddr = saddr, .dport = dport,
                                          .sport = sport, .proto = proto};
    f->node.release = release_tflow;
    atomic_init(&f->magic, ALIVE);
    return f;
}

static void test_basic(void)
{
    struct osvrt_flow_table t;
    CHECK_EQ(osvrt_ft_init(&t, 0), EINVAL);
    CHECK_EQ(osvrt_ft_init(&t, 100), 0);
    CHECK_EQ(t.mask, 127);
    int r = osvrt_ft_reader_register(&t);
    CHECK(r >= 0);
    atomic_store(&released, 0);

    uint32_t lo1 = 0x0100007f, lo2 = 0x0200007f, peer = 0x0500007f;
    struct tflow *a = mk(17, lo1, 9000, 0, 0);
    struct tflow *b = mk(17, lo2, 9000, 0, 0);       /* same port, other address */
    struct tflow *c = mk(6, lo1, 9000, 0, 0);        /* same port, TCP */
    struct tflow *d = mk(17, lo1, 9000, peer, 4444); /* connected */
    struct tflow *w = mk(17, 0, 7000, 0, 0);         /* wildcard address */
    CHECK_EQ(osvrt_ft_insert(&t, &a->node), 0);
    CHECK_EQ(osvrt_ft_insert(&t, &b->node), 0);
    CHECK_EQ(osvrt_ft_insert(&t, &c->node), 0);
    CHECK_EQ(osvrt_ft_insert(&t, &d->node), 0);
    CHECK_EQ(osvrt_ft_insert(&t, &w->node), 0);
    struct tflow *dup = mk(17, lo1, 9000, 0, 0);
    CHECK_EQ(osvrt_ft_insert(&t, &dup->node), EEXIST);
    free(dup);
    CHECK_EQ(t.count, 5);

    osvrt_ft_read_lock(&t, r);
    CHECK(osvrt_ft_classify(&t, 17, lo1, 9000, 0x0900007f, 1) == &a->node);
    CHECK(osvrt_ft_classify(&t, 17, lo2, 9000, 0x0900007f, 1) == &b->node);
    CHECK(osvrt_ft_classify(&t, 6, lo1, 9000, 0x0900007f, 1) == &c->node);
    CHECK(osvrt_ft_classify(&t, 17, lo1, 9000, peer, 4444) == &d->node);   /* exact first */
    CHECK(osvrt_ft_classify(&t, 17, lo1, 9000, peer, 4445) == &a->node);
    CHECK(osvrt_ft_classify(&t, 17, lo2, 7000, peer, 1) == &w->node);      /* wildcard last */
    CHECK(osvrt_ft_classify(&t, 17, lo1, 9001, peer, 1) == NULL);
    CHECK(osvrt_ft_classify(&t, 6, lo2, 9000, peer, 1) == NULL);

    /* Removed while this reader is in its section: unlinked at once,
     * released only after the reader leaves. */
    CHECK_EQ(osvrt_ft_remove(&t, &a->node), 0);
    CHECK_EQ(osvrt_ft_remove(&t, &a->node), ENOENT);
    CHECK(osvrt_ft_classify(&t, 17, lo1, 9000, 0x0900007f, 1) == NULL);
    CHECK_EQ(atomic_load(&a->magic), ALIVE);          /* still readable */
    CHECK_EQ(osvrt_ft_reclaim(&t), 1);
    CHECK_EQ(atomic_load(&released), 0);
    osvrt_ft_read_unlock(&t, r);
    CHECK_EQ(osvrt_ft_reclaim(&t), 0);
    CHECK_EQ(atomic_load(&released), 1);

    /* A reader that entered after the removal does not hold it back. */
    CHECK_EQ(osvrt_ft_remove(&t, &b->node), 0);
    osvrt_ft_read_lock(&t, r);
    CHECK_EQ(osvrt_ft_reclaim(&t), 0);
    CHECK_EQ(atomic_load(&released), 2);
    osvrt_ft_read_unlock(&t, r);

    /* A removed key can be added again. */
    struct tflow *a2 = mk(17, lo1, 9000, 0, 0);
    CHECK_EQ(osvrt_ft_insert(&t, &a2->node), 0);
    osvrt_ft_read_lock(&t, r);
    CHECK(osvrt_ft_classify(&t, 17, lo1, 9000, 1, 1) == &a2->node);
    osvrt_ft_read_unlock(&t, r);

    osvrt_ft_destroy(&t);                              /* releases the rest */
    CHECK_EQ(atomic_load(&released), 6);
}

/* Many keys in few buckets: chains work, removal from the middle of a chain. */
static void test_chains(void)
{
    struct osvrt_flow_table t;
    CHECK_EQ(osvrt_ft_init(&t, 4), 0);
    osvrt_ft_set_hash_key(&t, 1, 2);
    int r = osvrt_ft_reader_register(&t);
    atomic_store(&released, 0);
    enum { N = 200 };
    struct tflow *f[N];
    for (int i = 0; i < N; i++) {
        f[i] = mk(17, 0x0100007f, (uint16_t)(1000 + i), 0, 0);
        CHECK_EQ(osvrt_ft_insert(&t, &f[i]->node), 0);
    }
    for (int i = 0; i < N; i += 3)
        CHECK_EQ(osvrt_ft_remove(&t, &f[i]->node), 0);
    osvrt_ft_read_lock(&t, r);
    for (int i = 0; i < N; i++) {
        struct osvrt_ft_node *n = osvrt_ft_classify(&t, 17, 0x0100007f, (uint16_t)(1000 + i), 1, 1);
        CHECK(i % 3 == 0 ? n == NULL : n == &f[i]->node);
    }
    osvrt_ft_read_unlock(&t, r);
    osvrt_ft_synchronize(&t);
    CHECK_EQ(atomic_load(&released), (N + 2) / 3);
    osvrt_ft_destroy(&t);
    CHECK_EQ(atomic_load(&released), N);
}

/* ---- stress ---- */

#define NKEYS 64
#define READERS 3
static struct osvrt_flow_table st;
static _Atomic int stop_readers;
static _Atomic uint64_t hits;

static void *reader_main(void *arg)
{
    (void)arg;
    int r = osvrt_ft_reader_register(&st);
    CHECK(r >= 0);
    uint64_t h = 0, x = (uint64_t)(uintptr_t)&r | 1;
    while (!atomic_load_explicit(&stop_readers, memory_order_relaxed)) {
        osvrt_ft_read_lock(&st, r);
        for (int i = 0; i < 32; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            uint16_t port = (uint16_t)(2000 + x % NKEYS);
            struct osvrt_ft_node *n = osvrt_ft_classify(&st, 17, 0x0100007f, port, 7, 7);
            if (n) {
                struct tflow *f = (struct tflow *)n;
                /* The node must be alive and be the one we asked for. */
                CHECK_EQ(atomic_load_explicit(&f->magic, memory_order_relaxed), ALIVE);
                CHECK_EQ(n->key.dport, port);
                h++;
            }
        }
        osvrt_ft_read_unlock(&st, r);
    }
    atomic_fetch_add(&hits, h);
    osvrt_ft_reader_unregister(&st, r);
    return NULL;
}

static void test_stress(void)
{
    CHECK_EQ(osvrt_ft_init(&st, 16), 0);
    atomic_store(&released, 0);
    pthread_t th[READERS];
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, reader_main, NULL);
    struct tflow *cur[NKEYS] = {0};
    uint64_t x = 12345, adds = 0;
    const uint64_t ops = SCALED(400000ull);
    for (uint64_t op = 0; op < ops; op++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int k = (int)(x % NKEYS);
        if (cur[k]) {
            CHECK_EQ(osvrt_ft_remove(&st, &cur[k]->node), 0);
            cur[k] = NULL;
        } else {
            cur[k] = mk(17, 0x0100007f, (uint16_t)(2000 + k), 0, 0);
            CHECK_EQ(osvrt_ft_insert(&st, &cur[k]->node), 0);
            adds++;
        }
        if ((op & 1023) == 0)
            sched_yield();
    }
    atomic_store(&stop_readers, 1);
    for (int i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    osvrt_ft_synchronize(&st);
    uint32_t live = st.count;
    CHECK_EQ(atomic_load(&released) + live, adds);
    osvrt_ft_destroy(&st);
    CHECK_EQ(atomic_load(&released), adds);
    printf("stress: %llu adds, %llu reader hits\n", (unsigned long long)adds,
           (unsigned long long)atomic_load(&hits));
}

int main(void)
{
    test_siphash_vectors();
    test_basic();
    test_chains();
    test_stress();
    printf("test_flow_table: ok\n");
    return 0;
}
