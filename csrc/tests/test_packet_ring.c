/* test_packet_ring.c - packet_ring.h on rings in plain memory, written the
 * way the kernel writes them (frame, then TP_STATUS_USER with release):
 * frame addressing across blocks; which of two rings goes next (empty, one,
 * both: the older stamp; a tie); a merged drain over several laps; a
 * two-thread stress in which a "kernel" thread writes an ordered sequence
 * into both rings while the reader drains them (every frame in order); and a
 * stress with several writers ("CPUs") that take slots under a ring lock and
 * stamp them after, as the kernel does, stalling at random in between:
 * every frame is taken once, each writer's frames of one ring in order, and
 * the writers' frames that came out of order across the two rings (see
 * packet_ring.h) are counted. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "packet_ring.h"

#define FS 128        /* frame size */
#define PER_BLOCK 3   /* frames per block: a block is not a whole number of frames */
#define BLOCK 512

static void ring_init(struct osvrt_pkt_ring *r, uint32_t frames)
{
    uint32_t blocks = (frames + PER_BLOCK - 1) / PER_BLOCK;
    memset(r, 0, sizeof *r);
    r->fd = -1;
    r->bytes = (size_t)blocks * BLOCK;
    r->base = aligned_alloc(64, r->bytes);
    CHECK(r->base);
    memset(r->base, 0, r->bytes);             /* TP_STATUS_KERNEL everywhere */
    r->frame_size = FS;
    r->frame_nr = frames;
    r->block_size = BLOCK;
    r->frames_per_block = PER_BLOCK;
    atomic_init(&r->pos, 0);
    atomic_init(&r->taken, 0);
}

/* The kernel's side: write frame i with stamp `seq` (seconds and
 * nanoseconds from it), then hand it over (release, as its smp_wmb). */
static void put(struct osvrt_pkt_ring *r, uint32_t i, uint64_t seq)
{
    struct tpacket2_hdr *h = osvrt_pkt_ring_frame(r, i);
    h->tp_sec = (uint32_t)(seq / 1000000000u);
    h->tp_nsec = (uint32_t)(seq % 1000000000u);
    h->tp_len = (uint32_t)seq;
    __atomic_store_n(&h->tp_status, TP_STATUS_USER, __ATOMIC_RELEASE);
}

static void test_frame_addressing(void)
{
    struct osvrt_pkt_ring r;
    ring_init(&r, 7);
    /* frames 0-2 in block 0, 3-5 in block 1, 6 in block 2: never straddling */
    CHECK((uint8_t *)osvrt_pkt_ring_frame(&r, 2) == r.base + 2 * FS);
    CHECK((uint8_t *)osvrt_pkt_ring_frame(&r, 3) == r.base + BLOCK);
    CHECK((uint8_t *)osvrt_pkt_ring_frame(&r, 6) == r.base + 2 * BLOCK);
    /* advance hands the frame back and wraps after the last */
    atomic_store(&r.pos, 6);
    put(&r, 6, 1);
    osvrt_pkt_ring_advance(&r);
    CHECK(atomic_load(&r.pos) == 0);
    CHECK(osvrt_pkt_frame_status(osvrt_pkt_ring_frame(&r, 6)) == TP_STATUS_KERNEL);
    free(r.base);
}

static void test_next(void)
{
    struct osvrt_pkt_ring r[2];
    uint32_t st;
    ring_init(&r[0], 4);
    ring_init(&r[1], 4);
    CHECK(osvrt_pkt_rings_next(r, 2, &st) == -1);
    CHECK(osvrt_pkt_rings_next(r, 1, &st) == -1);
    put(&r[1], 0, 5);
    CHECK(osvrt_pkt_rings_next(r, 2, &st) == 1 && (st & TP_STATUS_USER));
    CHECK(osvrt_pkt_rings_next(r, 1, &st) == -1);          /* one ring: ring 1 unseen */
    put(&r[0], 0, 7);
    CHECK(osvrt_pkt_rings_next(r, 2, &st) == 1);           /* 5 before 7 */
    osvrt_pkt_ring_advance(&r[1]);
    CHECK(osvrt_pkt_rings_next(r, 2, &st) == 0);
    put(&r[1], 1, 7);
    CHECK(osvrt_pkt_rings_next(r, 2, &st) == 0);           /* a tie: ring 0 */
    osvrt_pkt_ring_advance(&r[0]);
    put(&r[0], 1, 2000000003ull);                          /* 2 s 3 ns */
    put(&r[1], 2, 1999999999ull);                          /* (after ring 1's 7) */
    CHECK(osvrt_pkt_rings_next(r, 2, &st) == 1);           /* 7 */
    osvrt_pkt_ring_advance(&r[1]);
    CHECK(osvrt_pkt_rings_next(r, 2, &st) == 1);           /* 1 s 999999999 ns: seconds first */
    osvrt_pkt_ring_advance(&r[1]);
    CHECK(osvrt_pkt_rings_next(r, 2, &st) == 0);
    osvrt_pkt_ring_advance(&r[0]);
    CHECK(osvrt_pkt_rings_next(r, 2, &st) == -1);
    free(r[0].base);
    free(r[1].base);
}

/* The ring (of two) whose frame the reader takes next, waited for while
 * writer threads fill them (yielding now and then: a host with one CPU, or
 * a loaded one); no frame for OSVRT_TEST_STALL_S seconds fails, saying so. */
static int wait_next(struct osvrt_pkt_ring *rings)
{
    time_t since = time(NULL);
    for (uint32_t idle = 1;; idle++) {
        uint32_t st;
        int i = osvrt_pkt_rings_next(rings, 2, &st);
        if (i >= 0)
            return i;
        if (idle % 256 == 0) {
            sched_yield();
            CHECK_MSG(time(NULL) - since < OSVRT_TEST_STALL_S, "no frame for %d s", OSVRT_TEST_STALL_S);
        }
    }
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Laps of both rings, filled at random then drained: the order is the stamps'. */
static void test_merged_drain(void)
{
    struct osvrt_pkt_ring r[2];
    ring_init(&r[0], 7);
    ring_init(&r[1], 5);
    uint32_t wpos[2] = {0, 0};
    uint64_t seq = 0, want = 0;
    for (int lap = 0; lap < 200; lap++) {
        uint32_t room[2] = {r[0].frame_nr, r[1].frame_nr};
        uint32_t n = rnd() % 12;
        for (uint32_t k = 0; k < n; k++) {
            uint32_t i = rnd() & 1;
            if (!room[i])
                i ^= 1;
            if (!room[i])
                break;
            room[i]--;
            put(&r[i], wpos[i], seq++);
            wpos[i] = (wpos[i] + 1) % r[i].frame_nr;
        }
        uint32_t st;
        int i;
        while ((i = osvrt_pkt_rings_next(r, 2, &st)) >= 0) {
            CHECK_MSG(osvrt_pkt_ring_head(&r[i])->tp_len == want, "lap %d: got %u, want %llu", lap,
                      osvrt_pkt_ring_head(&r[i])->tp_len, (unsigned long long)want);
            want++;
            osvrt_pkt_ring_advance(&r[i]);
        }
        CHECK(want == seq);
    }
    free(r[0].base);
    free(r[1].base);
}

/* ---- two threads ---- */

struct stress {
    struct osvrt_pkt_ring r[2];
    uint64_t n;
};

/* The "kernel": seq 0..n-1 into a random ring each, waiting for a frame the
 * reader gave back (acquire: the reader's reads of it are done). */
static void *writer(void *arg)
{
    struct stress *s = arg;
    uint32_t wpos[2] = {0, 0};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint64_t seq = 0; seq < s->n; seq++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* runs of one ring, then the other: both rings often hold frames */
        uint32_t i = (x >> 40) % 3 == 0;
        struct osvrt_pkt_ring *r = &s->r[i];
        struct tpacket2_hdr *h = osvrt_pkt_ring_frame(r, wpos[i]);
        for (uint32_t spins = 0; __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_KERNEL;)
            if (++spins % 256 == 0)
                sched_yield();               /* a host with one CPU, or a loaded one */
        put(r, wpos[i], seq);
        wpos[i] = (wpos[i] + 1) % r->frame_nr;
    }
    return NULL;
}

static void test_stress(void)
{
    struct stress s;
    ring_init(&s.r[0], 64);
    ring_init(&s.r[1], 16);
    s.n = SCALED(2000000);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, writer, &s) == 0);
    for (uint64_t want = 0; want < s.n;) {
        int i = wait_next(s.r);
        uint32_t got = osvrt_pkt_ring_head(&s.r[i])->tp_len;
        CHECK_MSG(got == (uint32_t)want, "took %u from ring %d, want %llu", got, i,
                  (unsigned long long)want);
        want++;
        osvrt_pkt_ring_advance(&s.r[i]);
    }
    pthread_join(t, NULL);
    free(s.r[0].base);
    free(s.r[1].base);
}

/* ---- several writers ---- */

#define WRITERS 3

/* The kernel's side with several CPUs: a slot is taken under the ring's lock
 * (in slot order; when the reader still has it, the packet is dropped, as
 * the kernel drops it, and the writer tries again), then stamped and written
 * out of the lock, each writer one frame at a time. */
struct writers {
    struct osvrt_pkt_ring r[2];
    pthread_mutex_t lock[2];
    uint32_t head[2];                 /* the next slot to hand out: under lock */
    _Atomic uint8_t *owned[2];        /* taken, not yet handed over (the kernel's rx_owner_map): under lock */
    _Atomic uint64_t clock;           /* the stamps: a clock every writer reads */
    uint64_t n;                       /* frames per writer */
    uint64_t misses[WRITERS];
};

struct writer_arg {
    struct writers *w;
    uint32_t id;
};

static void spin(uint32_t n)
{
    for (volatile uint32_t i = 0; i < n; i++)
        ;
}

static void *several_writer(void *arg)
{
    struct writer_arg *a = arg;
    struct writers *w = a->w;
    uint64_t x = 0x2545f4914f6cdd1dull * (a->id + 1);
    for (uint64_t seq = 0; seq < w->n;) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int i = (x >> 33) % 3 == 0;
        pthread_mutex_lock(&w->lock[i]);
        uint32_t slot = w->head[i];
        struct tpacket2_hdr *h = osvrt_pkt_ring_frame(&w->r[i], slot);
        /* acquire: the reader's reads of a slot it gave back are done */
        int free_slot = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) == TP_STATUS_KERNEL
                        && !atomic_load_explicit(&w->owned[i][slot], memory_order_relaxed);
        if (free_slot) {
            atomic_store_explicit(&w->owned[i][slot], 1, memory_order_relaxed);
            w->head[i] = slot + 1 == w->r[i].frame_nr ? 0 : slot + 1;
        }
        pthread_mutex_unlock(&w->lock[i]);
        if (!free_slot) {
            w->misses[a->id]++;
            sched_yield();
            continue;
        }
        spin((uint32_t)(x >> 51));            /* the copy before the stamp: 0-8k loops */
        uint64_t stamp = atomic_fetch_add_explicit(&w->clock, 1, memory_order_relaxed);
        h->tp_sec = (uint32_t)(stamp / 1000000000u);
        h->tp_nsec = (uint32_t)(stamp % 1000000000u);
        h->tp_len = a->id << 24 | (uint32_t)seq;
        __atomic_store_n(&h->tp_status, TP_STATUS_USER, __ATOMIC_RELEASE);
        /* after the status, under the lock, as the kernel clears its owner
         * bit: a writer a lap ahead never takes a slot still being written */
        pthread_mutex_lock(&w->lock[i]);
        atomic_store_explicit(&w->owned[i][slot], 0, memory_order_relaxed);
        pthread_mutex_unlock(&w->lock[i]);
        seq++;
    }
    return NULL;
}

static void test_several_writers(void)
{
    struct writers w;
    memset(&w, 0, sizeof w);
    uint32_t frames[2] = {48, 12};
    for (int i = 0; i < 2; i++) {
        ring_init(&w.r[i], frames[i]);
        pthread_mutex_init(&w.lock[i], NULL);
        w.owned[i] = calloc(frames[i], 1);
        CHECK(w.owned[i]);
    }
    w.n = SCALED(200000);
    pthread_t t[WRITERS];
    struct writer_arg args[WRITERS];
    for (uint32_t i = 0; i < WRITERS; i++) {
        args[i] = (struct writer_arg){&w, i};
        CHECK(pthread_create(&t[i], NULL, several_writer, &args[i]) == 0);
    }
    /* per writer: the next frame in its own order, and per ring the last taken */
    uint32_t next[WRITERS] = {0}, last[WRITERS][2];
    memset(last, 0xff, sizeof last);
    uint8_t *seen[WRITERS];
    for (uint32_t i = 0; i < WRITERS; i++)
        CHECK((seen[i] = calloc(w.n, 1)) != NULL);
    uint64_t out_of_order = 0;
    for (uint64_t taken = 0; taken < WRITERS * w.n;) {
        int i = wait_next(w.r);
        uint32_t v = osvrt_pkt_ring_head(&w.r[i])->tp_len, id = v >> 24, seq = v & 0xffffff;
        CHECK(id < WRITERS && seq < w.n);
        CHECK_MSG(!seen[id][seq], "writer %u: frame %u taken twice", id, seq);
        seen[id][seq] = 1;
        CHECK_MSG(last[id][i] == UINT32_MAX || seq > last[id][i],
                  "writer %u: frame %u of ring %d taken after %u of that ring", id, seq, i, last[id][i]);
        last[id][i] = seq;
        out_of_order += seq != next[id];
        next[id] = seq + 1;
        osvrt_pkt_ring_advance(&w.r[i]);
        taken++;
    }
    uint64_t misses = 0;
    for (uint32_t i = 0; i < WRITERS; i++) {
        pthread_join(t[i], NULL);
        misses += w.misses[i];
    }
    /* every frame taken once (the count), each ring's in its writer's order */
    printf("test_packet_ring: %d writers, %llu frames each, all taken once; %llu taken out of "
           "their writer's order across the rings (%llu full-slot retries)\n", WRITERS,
           (unsigned long long)w.n, (unsigned long long)out_of_order, (unsigned long long)misses);
    for (uint32_t i = 0; i < WRITERS; i++)
        free(seen[i]);
    for (int i = 0; i < 2; i++) {
        free(w.r[i].base);
        free((void *)w.owned[i]);
        pthread_mutex_destroy(&w.lock[i]);
    }
}

int main(void)
{
    test_frame_addressing();
    test_next();
    test_merged_drain();
    test_stress();
    test_several_writers();
    printf("test_packet_ring: ok\n");
    return 0;
}
