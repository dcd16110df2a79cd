/* channel.h - a net channel: a single-producer single-consumer ring of packet
 * slots, with the payloads in a byte arena beside it.
 *
 * Producer: the classifier thread (C).  Consumer: the green thread that owns
 * the flow (Python, reading this memory through memoryviews with no call; or
 * C, in the tests and benchmarks).
 *
 * Slots are a ring of `capacity` fixed 32-byte descriptors; indexes are
 * free-running 64-bit counters (slot = index % capacity), so head - tail is
 * the number of queued packets and wrap-around never needs a special case.
 * Payloads live in an arena of `arena_size` bytes used as a byte ring: the
 * payload of a packet is contiguous (a payload that would straddle the end
 * starts over at offset 0) and `off` in its slot is an absolute, free-running
 * arena offset (position = off % arena_size).  Packets are consumed in order,
 * so the oldest queued slot's `off` is where the live bytes begin.
 *
 * Full means: no free slot, or not enough contiguous arena bytes.  A full
 * channel drops the NEW packet (tail drop: the oldest are kept, in order),
 * and the producer counts it; nothing ever waits for the consumer.
 *
 * Publishing is batched: the producer fills slots up to its private
 * `pending` index and makes them visible with one release store of `head`
 * per burst (osvrt_chan_publish), so the consumer's cache line is touched
 * once per burst, not once per packet.
 *
 * Cache lines: `tail` and `waiter` (written by the consumer), `head`
 * (written by the producer, read by the consumer), the producer's private
 * state and counters, and the constants are each on their own line.
 */
#ifndef OSVRT_CHANNEL_H
#define OSVRT_CHANNEL_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "pushlist.h"   /* OSVRT_CACHELINE */
#include "stat.h"

#define OSVRT_CHAN_MAX_CAPACITY (1u << 20)
#define OSVRT_CHAN_MAX_ARENA    (1u << 30)
/* Arena bytes osvrt_chan_new faults in (channel.c says why). */
#define OSVRT_CHAN_PREFAULT     (1u << 20)

/* One packet.  32 bytes; Python unpacks it with struct format "<QIIIHHII". */
struct osvrt_chan_slot {
    uint64_t off;        /* absolute arena offset of the data (position = off % arena_size) */
    uint32_t len;        /* bytes of data: the UDP payload, or the whole TCP segment */
    uint32_t saddr;      /* IPv4 source address, network byte order (as on the wire) */
    uint32_t daddr;      /* IPv4 destination address, network byte order */
    uint16_t sport;      /* source port, host byte order */
    uint16_t dport;      /* destination port, host byte order */
    uint32_t info;       /* TCP: header length in bytes (data starts there); UDP: 0 */
    uint32_t proto;      /* IPPROTO_UDP or IPPROTO_TCP */
};

enum osvrt_chan_push_result {
    OSVRT_CHAN_OK = 0,
    OSVRT_CHAN_FULL = 1,      /* no free slot or arena room: dropped (tail drop) */
    OSVRT_CHAN_TOO_BIG = 2,   /* larger than the whole arena: it could never fit */
};

struct osvrt_chan_stats {
    uint64_t received;        /* packets posted (published or about to be) */
    uint64_t dropped_full;
    uint64_t dropped_too_big;
    uint64_t wakes;           /* wake-ups of the consumer that this channel caused */
};

struct osvrt_chan {
    /* Written by the consumer. */
    _Alignas(OSVRT_CACHELINE) _Atomic uint64_t tail;   /* next index the consumer reads */
    _Atomic uint64_t waiter;   /* thread handle | OSVRT_CHAN_WAITER, or 0: who to wake */

    /* Written by the producer, read by the consumer. */
    _Alignas(OSVRT_CACHELINE) _Atomic uint64_t head;   /* published: indexes < head are readable */

    /* Producer only (counters are read racily by stats). */
    _Alignas(OSVRT_CACHELINE) uint64_t pending;        /* filled, not yet published: [head, pending) */
    uint64_t tail_cache;                               /* last tail the producer read */
    uint64_t arena_head;                               /* absolute offset of the next payload */
    _Atomic uint64_t received, dropped_full, dropped_too_big, wakes;
    uint64_t burst_mark;                               /* classifier: last burst that touched it */

    /* Constant after osvrt_chan_new. */
    _Alignas(OSVRT_CACHELINE) uint32_t capacity;
    uint32_t arena_size;
    struct osvrt_chan_slot *slots;
    uint8_t *arena;
};

/* Bit 63 of `waiter` says "a handle is stored" (a thread handle can be 0). */
#define OSVRT_CHAN_WAITER (1ull << 63)

/* capacity in 1..OSVRT_CHAN_MAX_CAPACITY, arena_size in 1..OSVRT_CHAN_MAX_ARENA;
 * NULL with errno EINVAL or ENOMEM.  One allocation, freed by osvrt_chan_free. */
struct osvrt_chan *osvrt_chan_new(uint32_t capacity, uint32_t arena_size);
void osvrt_chan_free(struct osvrt_chan *c);
void osvrt_chan_get_stats(const struct osvrt_chan *c, struct osvrt_chan_stats *out);

/* ---- producer side ---- */

/* osvrt_stat_add: a producer-owned counter (stat.h). */

/* Where a payload of `len` bytes would start, if it fits; else UINT64_MAX. */
static inline uint64_t osvrt_chan__place(struct osvrt_chan *c, uint64_t tail, uint32_t len)
{
    uint64_t start = c->arena_head;
    uint64_t pos = start % c->arena_size;
    if (pos + len > c->arena_size)            /* would straddle the end: start over at 0 */
        start += c->arena_size - pos;
    /* Live bytes begin at the oldest queued packet (the producer wrote its slot). */
    uint64_t oldest = tail == c->pending ? start : c->slots[tail % c->capacity].off;
    if (c->pending - tail >= c->capacity || start + len - oldest > c->arena_size)
        return UINT64_MAX;
    return start;
}

/* Copy one packet in (not yet visible: see osvrt_chan_publish).  `meta`
 * gives every slot field but off and len.  Counts what happened. */
static inline int osvrt_chan_push(struct osvrt_chan *c, const void *data, uint32_t len,
                                  const struct osvrt_chan_slot *meta)
{
    if (len > c->arena_size) {
        osvrt_stat_add(&c->dropped_too_big, 1);
        return OSVRT_CHAN_TOO_BIG;
    }
    uint64_t start = osvrt_chan__place(c, c->tail_cache, len);
    if (start == UINT64_MAX) {
        /* acquire: pairs with the consumer's release of tail, so it has
         * finished reading the slots and bytes we are about to reuse. */
        c->tail_cache = atomic_load_explicit(&c->tail, memory_order_acquire);
        start = osvrt_chan__place(c, c->tail_cache, len);
        if (start == UINT64_MAX) {
            osvrt_stat_add(&c->dropped_full, 1);
            return OSVRT_CHAN_FULL;
        }
    }
    memcpy(c->arena + start % c->arena_size, data, len);
    struct osvrt_chan_slot *s = &c->slots[c->pending % c->capacity];
    *s = *meta;
    s->off = start;
    s->len = len;
    c->arena_head = start + len;
    c->pending++;
    osvrt_stat_add(&c->received, 1);
    return OSVRT_CHAN_OK;
}

/* Make every pushed packet visible to the consumer.  Returns 1 if there was
 * anything new. */
static inline int osvrt_chan_publish(struct osvrt_chan *c)
{
    /* relaxed: only the producer writes head. */
    if (atomic_load_explicit(&c->head, memory_order_relaxed) == c->pending)
        return 0;
    /* release: the slots and payload bytes written by push happen-before a
     * consumer's acquire load that sees this head. */
    atomic_store_explicit(&c->head, c->pending, memory_order_release);
    return 1;
}

/* The handle to wake, or 0 if none (call after a seq_cst fence that follows
 * the publish: see classifier.c, the waker half of runtime.h's argument). */
static inline uint64_t osvrt_chan_waiter(struct osvrt_chan *c)
{
    /* relaxed: ordered by the caller's seq_cst fence after publishing. */
    return atomic_load_explicit(&c->waiter, memory_order_relaxed);
}

/* ---- consumer side (C consumers; Python does the same with memoryviews) ---- */

/* Packets ready to read, from index *tail_out on. */
static inline uint64_t osvrt_chan_ready(struct osvrt_chan *c, uint64_t *tail_out)
{
    /* relaxed: only the consumer writes tail. */
    uint64_t t = atomic_load_explicit(&c->tail, memory_order_relaxed);
    /* acquire: pairs with publish's release, so the slots below head and
     * their payload bytes are visible. */
    uint64_t h = atomic_load_explicit(&c->head, memory_order_acquire);
    *tail_out = t;
    return h - t;
}

static inline const struct osvrt_chan_slot *osvrt_chan_slot_at(const struct osvrt_chan *c, uint64_t i)
{
    return &c->slots[i % c->capacity];
}

static inline const uint8_t *osvrt_chan_data(const struct osvrt_chan *c, const struct osvrt_chan_slot *s)
{
    return c->arena + s->off % c->arena_size;
}

/* Give back every packet below index `tail` (the consumer is done with them). */
static inline void osvrt_chan_release(struct osvrt_chan *c, uint64_t tail)
{
    /* release: our reads of those slots and bytes happen-before the
     * producer's acquire load of tail that lets it overwrite them. */
    atomic_store_explicit(&c->tail, tail, memory_order_release);
}

#endif
