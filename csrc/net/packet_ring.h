/* packet_ring.h - one AF_PACKET socket's memory-mapped TPACKET_V2 receive
 * ring, as its reader sees it: the frame at a position, its status word, the
 * hand-back, and the order of two rings' next frames.
 *
 * The classifier (classifier.h) may read two rings of one interface, split by
 * frame length: small frames in a ring of small slots, the rest in a ring of
 * MTU-sized ones.  Every frame comes round once per lap of its ring, cold:
 * with 2 KiB slots, a ring that holds a burst of 8,192 datagrams is 16 MiB of
 * memory walked per lap (its cache and TLB misses cost dnsperf about a tenth
 * of its rate), while a ring of 512-byte slots for the small ones is 4 MiB.
 *
 * Order across two rings: each frame is stamped (tp_sec, tp_nsec) as it is
 * written, and the reader takes the older of the two rings' next frames.  A
 * CPU runs each packet through every packet socket before the next, so the
 * frames of one CPU come out in the order it received them, whichever ring
 * they are in, as long as no other CPU holds up a ring: a ring's slots are
 * handed out in one order (under the ring's lock) and stamped in another
 * (after the copy, out of the lock), so a CPU that took a slot and was then
 * held up (an interrupt, its vCPU descheduled) longer than another CPU took
 * to receive a packet can make that CPU's frames of the two rings come out
 * of order, one overtaking the other.  The frames do not say which CPU wrote
 * them, and no rule on the stamps alone keeps the order in every such case
 * (looking past the other ring's head for an older frame fixes some and
 * breaks others).  One ring (small_frame_size >= frame_size) keeps each
 * CPU's order exactly.  The stamps are the realtime clock's: a clock stepped
 * back can reorder the frames of that moment too.
 */
#ifndef OSVRT_PACKET_RING_H
#define OSVRT_PACKET_RING_H

#include <linux/if_packet.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct osvrt_pkt_ring {
    int fd;                          /* the AF_PACKET socket, or -1 */
    uint8_t *base;                   /* the mapping, or NULL */
    size_t bytes;
    uint32_t frame_size, frame_nr;
    uint32_t block_size, frames_per_block;   /* frames never straddle blocks */
    /* The next frame to read: written by the producer (the classifier
     * thread, or the worker holding the drain lock, rx_workers.h), read
     * without the lock by workers looking for frames (a stale value only
     * makes a look miss or find a frame the lock holder then reads). */
    _Atomic uint32_t pos;
    _Atomic uint64_t taken;          /* frames read: the producer's counter (stat.h) */
};

static inline struct tpacket2_hdr *osvrt_pkt_ring_frame(const struct osvrt_pkt_ring *r, uint32_t i)
{
    uint32_t b = i / r->frames_per_block, k = i % r->frames_per_block;
    return (struct tpacket2_hdr *)(r->base + (size_t)b * r->block_size + (size_t)k * r->frame_size);
}

static inline uint32_t osvrt_pkt_frame_status(struct tpacket2_hdr *h)
{
    /* acquire: the kernel sets TP_STATUS_USER after writing the frame (it
     * orders with smp_wmb); the frame's bytes are read after this load. */
    return __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
}

static inline void osvrt_pkt_frame_release(struct tpacket2_hdr *h)
{
    /* release: our reads of the frame are done before the kernel may
     * reuse it. */
    __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
}

/* The frame at the ring's read position (relaxed: see `pos`). */
static inline struct tpacket2_hdr *osvrt_pkt_ring_head(struct osvrt_pkt_ring *r)
{
    return osvrt_pkt_ring_frame(r, atomic_load_explicit(&r->pos, memory_order_relaxed));
}

/* Hand back h, the head frame (osvrt_pkt_ring_head's, passed in so the
 * burst loop finds its address once), and step past it (the producer only;
 * relaxed: the producer role moves with acquire/release, see `pos`). */
static inline void osvrt_pkt_ring_pass(struct osvrt_pkt_ring *r, struct tpacket2_hdr *h)
{
    uint32_t pos = atomic_load_explicit(&r->pos, memory_order_relaxed);
    osvrt_pkt_frame_release(h);
    atomic_store_explicit(&r->pos, pos + 1 == r->frame_nr ? 0 : pos + 1, memory_order_relaxed);
}

/* Hand the head frame back and step past it. */
static inline void osvrt_pkt_ring_advance(struct osvrt_pkt_ring *r)
{
    osvrt_pkt_ring_pass(r, osvrt_pkt_ring_head(r));
}

static inline int osvrt_pkt_frame_older(const struct tpacket2_hdr *a, const struct tpacket2_hdr *b)
{
    return a->tp_sec != b->tp_sec ? a->tp_sec < b->tp_sec : a->tp_nsec < b->tp_nsec;
}

/* Which of n (1 or 2) rings holds the next frame to take: its index, with
 * *status its frame's status, or -1 when neither has a frame.
 * Ring 0's head is looked at first.  When only ring 1 has one, ring 0 is
 * looked at again: that look comes after the acquire load that saw ring 1's
 * frame, so it sees any frame the writer of that frame wrote before it (a
 * CPU's writes are ordered), and that older frame goes first.  When ring 0
 * has one and ring 1 does not, ring 1's look already came after it. */
static inline int osvrt_pkt_rings_next(struct osvrt_pkt_ring *rings, uint32_t n, uint32_t *status)
{
    struct tpacket2_hdr *h0 = osvrt_pkt_ring_head(&rings[0]);
    uint32_t s0 = osvrt_pkt_frame_status(h0);
    if (n == 1) {
        *status = s0;
        return s0 & TP_STATUS_USER ? 0 : -1;
    }
    struct tpacket2_hdr *h1 = osvrt_pkt_ring_head(&rings[1]);
    uint32_t s1 = osvrt_pkt_frame_status(h1);
    if (!(s1 & TP_STATUS_USER)) {
        *status = s0;
        return s0 & TP_STATUS_USER ? 0 : -1;
    }
    if (!(s0 & TP_STATUS_USER))
        s0 = osvrt_pkt_frame_status(h0);
    if (!(s0 & TP_STATUS_USER) || osvrt_pkt_frame_older(h1, h0)) {
        *status = s1;
        return 1;
    }
    *status = s0;
    return 0;
}

#endif
