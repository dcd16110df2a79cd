/* test_channel.c - the SPSC packet channel: order, tail drop (slots full,
 * arena full), payloads that wrap the arena, too-big packets, batched
 * publishing, the arena faulted in at creation; then a two-thread stress
 * (2,000,000 packets, fewer under sanitizers) that checks every byte and that
 * received + dropped == sent. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "check.h"

static struct osvrt_chan_slot meta(uint16_t sport)
{
    return (struct osvrt_chan_slot){.saddr = 0x0100007f, .sport = sport, .dport = 9, .proto = 17};
}

/* Consume one packet: its sport and payload. */
static int take(struct osvrt_chan *c, uint16_t *sport, uint8_t *out, uint32_t *len)
{
    uint64_t t;
    if (osvrt_chan_ready(c, &t) == 0)
        return 0;
    const struct osvrt_chan_slot *s = osvrt_chan_slot_at(c, t);
    *sport = s->sport;
    *len = s->len;
    memcpy(out, osvrt_chan_data(c, s), s->len);
    osvrt_chan_release(c, t + 1);
    return 1;
}

static void test_basic(void)
{
    struct osvrt_chan *c = osvrt_chan_new(4, 1024);
    CHECK(c);
    uint8_t out[2048];
    uint16_t sp;
    uint32_t len;
    CHECK_EQ(take(c, &sp, out, &len), 0);
    struct osvrt_chan_slot m = meta(1);
    CHECK_EQ(osvrt_chan_push(c, "a", 1, &m), OSVRT_CHAN_OK);
    /* not visible before publish */
    CHECK_EQ(take(c, &sp, out, &len), 0);
    CHECK_EQ(osvrt_chan_publish(c), 1);
    CHECK_EQ(osvrt_chan_publish(c), 0);       /* nothing new */
    CHECK_EQ(take(c, &sp, out, &len), 1);
    CHECK_EQ(sp, 1);
    CHECK_EQ(len, 1);
    CHECK_EQ(out[0], 'a');

    /* slots full: tail drop keeps the oldest four, in order */
    for (uint16_t i = 0; i < 6; i++) {
        m = meta(i);
        int r = osvrt_chan_push(c, &i, sizeof i, &m);
        CHECK_EQ(r, i < 4 ? OSVRT_CHAN_OK : OSVRT_CHAN_FULL);
    }
    osvrt_chan_publish(c);
    for (uint16_t i = 0; i < 4; i++) {
        CHECK_EQ(take(c, &sp, out, &len), 1);
        CHECK_EQ(sp, i);
        uint16_t v;
        memcpy(&v, out, 2);
        CHECK_EQ(v, i);
    }
    CHECK_EQ(take(c, &sp, out, &len), 0);
    struct osvrt_chan_stats st;
    osvrt_chan_get_stats(c, &st);
    CHECK_EQ(st.received, 5);
    CHECK_EQ(st.dropped_full, 2);
    CHECK_EQ(st.dropped_too_big, 0);

    /* too big for the arena: never fits */
    static uint8_t big[1025];
    CHECK_EQ(osvrt_chan_push(c, big, sizeof big, &m), OSVRT_CHAN_TOO_BIG);
    /* exactly the arena fits when the channel is empty */
    CHECK_EQ(osvrt_chan_push(c, big, 1024, &m), OSVRT_CHAN_OK);
    CHECK_EQ(osvrt_chan_push(c, big, 1, &m), OSVRT_CHAN_FULL);   /* arena full, slots free */
    osvrt_chan_publish(c);
    CHECK_EQ(take(c, &sp, out, &len), 1);
    CHECK_EQ(len, 1024);
    osvrt_chan_get_stats(c, &st);
    CHECK_EQ(st.dropped_too_big, 1);
    CHECK_EQ(st.dropped_full, 3);
    osvrt_chan_free(c);

    CHECK(osvrt_chan_new(0, 10) == NULL);
    CHECK(osvrt_chan_new(10, 0) == NULL);
    CHECK(osvrt_chan_new(OSVRT_CHAN_MAX_CAPACITY + 1, 10) == NULL);
}

/* Pages of [p, p + n) the process has in memory (mincore). */
static size_t resident_pages(const uint8_t *p, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = (uintptr_t)p & ~(page - 1), end = ((uintptr_t)p + n + page - 1) & ~(page - 1);
    size_t pages = (end - first) / page, in = 0;
    unsigned char *v = malloc(pages);
    CHECK(v != NULL);
    CHECK_EQ(mincore((void *)first, end - first, v), 0);
    for (size_t i = 0; i < pages; i++)
        in += v[i] & 1;
    free(v);
    return in;
}

/* A new channel's first OSVRT_CHAN_PREFAULT arena bytes are in memory before
 * the first push, so the producer takes no page fault on that part's first
 * lap, and no more than that is (a large buffer costs its size only as
 * traffic reaches it).  Run first: a block of 8 MiB or more in a fresh
 * process is a fresh mmap, whose pages come in only when written. */
static void test_arena_prefaulted(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    struct osvrt_chan *c = osvrt_chan_new(256, 8 * OSVRT_CHAN_PREFAULT);
    CHECK(c != NULL);
    /* whole pages inside the arena: its first and last may share a page with
     * the slots or with malloc's bookkeeping */
    uintptr_t lo = ((uintptr_t)c->arena + page - 1) & ~(page - 1);
    uintptr_t cap = ((uintptr_t)c->arena + OSVRT_CHAN_PREFAULT) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)c->arena + c->arena_size) & ~(page - 1);
    CHECK_EQ(resident_pages((const uint8_t *)lo, cap - lo), (cap - lo) / page);
    /* Past the cap, from 4 MiB on: with transparent huge pages "always", a
     * touch may bring in the whole 2 MiB page around it, never beyond. */
    uintptr_t far = (uintptr_t)c->arena + (4u << 20);
    CHECK_EQ(resident_pages((const uint8_t *)far, hi - far), 0);
    osvrt_chan_free(c);
}

/* Payloads that do not fit before the arena's end start over at 0, and the
 * producer never overwrites bytes the consumer has not released. */
static void test_arena_wrap(void)
{
    struct osvrt_chan *c = osvrt_chan_new(64, 1000);
    uint8_t data[400], out[1000];
    uint16_t sp;
    uint32_t len;
    uint32_t seq = 0, next = 0;
    for (int round = 0; round < 2000; round++) {
        /* push a few of varying size (some are dropped when the arena is full) */
        for (int k = 0; k < 3; k++) {
            uint32_t l = 1 + (uint32_t)((round * 7 + k * 131) % 399);
            memset(data, (int)(seq & 0xff), l);
            struct osvrt_chan_slot m = meta((uint16_t)seq);
            if (osvrt_chan_push(c, data, l, &m) == OSVRT_CHAN_OK)
                seq++;
        }
        osvrt_chan_publish(c);
        /* take one or two */
        for (int k = 0; k < 1 + round % 2; k++) {
            if (!take(c, &sp, out, &len))
                break;
            CHECK_EQ(sp, (uint16_t)next);
            for (uint32_t i = 0; i < len; i++)
                CHECK_EQ(out[i], next & 0xff);
            next++;
        }
    }
    while (take(c, &sp, out, &len)) {
        CHECK_EQ(sp, (uint16_t)next);
        next++;
    }
    CHECK_EQ(next, seq);
    struct osvrt_chan_stats st;
    osvrt_chan_get_stats(c, &st);
    CHECK_EQ(st.received, seq);
    CHECK(st.dropped_full > 0);
    osvrt_chan_free(c);
}

/* ---- stress: one producer thread, one consumer thread ---- */

#define STRESS_N SCALED(2000000ull)
static struct osvrt_chan *sc;
static _Atomic int producer_done;

static void fill(uint8_t *p, uint32_t len, uint64_t seq)
{
    for (uint32_t i = 0; i < len; i++)
        p[i] = (uint8_t)(seq * 31 + i);
}

static void *producer(void *arg)
{
    (void)arg;
    uint8_t buf[300];
    uint64_t x = 88172645463325252ull;
    for (uint64_t seq = 0; seq < STRESS_N;) {
        uint32_t burst = 1 + (uint32_t)(x % 16);
        for (uint32_t b = 0; b < burst && seq < STRESS_N; b++, seq++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            uint32_t len = 8 + (uint32_t)(x % 290);
            memcpy(buf, &seq, 8);
            fill(buf + 8, len - 8, seq);
            struct osvrt_chan_slot m = meta(0);
            m.daddr = (uint32_t)seq;
            osvrt_chan_push(sc, buf, len, &m);
        }
        osvrt_chan_publish(sc);
    }
    /* release: the last publish is seen before the flag (the consumer then
     * drains what is left). */
    atomic_store_explicit(&producer_done, 1, memory_order_release);
    return NULL;
}

static void *consumer(void *arg)
{
    uint64_t *got = arg;
    uint64_t last = 0;
    int first = 1;
    for (;;) {
        int done = atomic_load_explicit(&producer_done, memory_order_acquire);
        uint64_t t;
        uint64_t n = osvrt_chan_ready(sc, &t);
        for (uint64_t i = 0; i < n; i++) {
            const struct osvrt_chan_slot *s = osvrt_chan_slot_at(sc, t + i);
            const uint8_t *d = osvrt_chan_data(sc, s);
            uint64_t seq;
            memcpy(&seq, d, 8);
            CHECK_EQ(s->daddr, (uint32_t)seq);     /* slot and payload belong together */
            CHECK_MSG(first || seq > last, "out of order: %llu after %llu",
                      (unsigned long long)seq, (unsigned long long)last);
            for (uint32_t k = 8; k < s->len; k++)
                CHECK_EQ(d[k], (uint8_t)(seq * 31 + (k - 8)));
            last = seq;
            first = 0;
            (*got)++;
        }
        if (n)
            osvrt_chan_release(sc, t + n);
        else if (done)
            break;
    }
    return NULL;
}

static void test_stress(void)
{
    sc = osvrt_chan_new(256, 16384);
    uint64_t got = 0;
    pthread_t p, c;
    pthread_create(&c, NULL, consumer, &got);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    struct osvrt_chan_stats st;
    osvrt_chan_get_stats(sc, &st);
    CHECK_EQ(st.received, got);
    CHECK_EQ(st.received + st.dropped_full + st.dropped_too_big, STRESS_N);
    printf("stress: %llu sent, %llu received, %llu dropped (channel full)\n",
           (unsigned long long)STRESS_N, (unsigned long long)got,
           (unsigned long long)st.dropped_full);
    osvrt_chan_free(sc);
}

int main(void)
{
    test_arena_prefaulted();
    test_basic();
    test_arena_wrap();
    test_stress();
    printf("test_channel: ok\n");
    return 0;
}
