/* tcp.c - the TCP state machine, buffers and timers (tcp.h).
 *
 * One owner thread (tcp.h, "Threading rule"): nothing here is atomic.
 *
 * Shape.  A connection (struct tcb) lives in a slot of one array; its id is
 * slot | gen << 20.  Three intrusive lists thread through the slots, each
 * with an on_* bit so a slot is on a list at most once:
 *   - the output queue: connections that may have a segment to send;
 *     output() takes the head, builds ONE segment, and puts it back at the
 *     tail while it may have more (round robin between connections);
 *   - the event queue: connections with event bits for events();
 *   - a listener's accept queue.
 * A binary min-heap orders the slots by their earliest timer.  Replies that
 * belong to no connection (RSTs) wait in a small ring (ctl[]).
 *
 * Sequence space of a synchronized connection (SYN acknowledged):
 *   snd_una <= snd_nxt <= snd_max; sbuf holds the bytes from snd_una on,
 *   so the byte at sbuf offset k has sequence number snd_una + k; the FIN,
 *   once queued, sits at fin_seq = snd_una + sbuf.len (fixed from then on,
 *   since send() refuses data after it).  snd_nxt is rewound to snd_una by
 *   an RTO (go-back-N, as BSD); snd_max remembers the highest sent.
 *   rbuf holds rbuf.len in-order bytes for recv(); the bytes at sequence
 *   rcv_nxt + k are written at rbuf offset rbuf.len + k, so out-of-order
 *   data waits in the buffer itself, its ranges in ooo[].  The window we
 *   offer is the buffer's free space, so everything we accept fits, and the
 *   right edge rcv_nxt + window never moves left (RFC 9293 3.8.6).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "siphash.h"
#include "tcp.h"
#include "tcp_seg.h"

#define SLOT_BITS 20
#define SLOT_MASK ((1u << SLOT_BITS) - 1)
#define GEN_MASK 0x7ffu                 /* 11 bits: ids stay positive int32 */
#define NONE UINT32_MAX
#define CTL_RING 64
#define MAX_WSCALE 14
#define DEFAULT_MSS 536                 /* peer sent no MSS option (RFC 9293 3.7.1) */
#define NS_MS 1000000ll
#define NS_S 1000000000ll

/* ---- byte ring ---- */
struct ring {
    uint8_t *buf;
    uint32_t cap, head, len;            /* bytes [head, head+len) mod cap are in use */
};

static void ring_copy_in(struct ring *r, uint32_t off, const uint8_t *src, uint32_t n)
{
    uint32_t at = (r->head + off) % r->cap, first = r->cap - at < n ? r->cap - at : n;
    memcpy(r->buf + at, src, first);
    memcpy(r->buf, src + first, n - first);
}

static void ring_copy_out(const struct ring *r, uint32_t off, uint8_t *dst, uint32_t n)
{
    uint32_t at = (r->head + off) % r->cap, first = r->cap - at < n ? r->cap - at : n;
    memcpy(dst, r->buf + at, first);
    memcpy(dst + first, r->buf, n - first);
}

static void ring_consume(struct ring *r, uint32_t n)
{
    r->head = (r->head + n) % r->cap;
    r->len -= n;
}

/* ---- connection ---- */
struct range {
    uint32_t start, end;                /* sequence numbers [start, end) held ahead of rcv_nxt */
};

enum { T_REXMT, T_DELACK, T_PERSIST, T_KEEP, T_LINGER, NTIMERS };   /* LINGER: TIME_WAIT, orphan FIN_WAIT_2 */

struct tcb {
    uint16_t gen;
    uint8_t used, state, orphan, hashed;
    uint8_t on_outq, on_evq, on_acceptq;
    uint32_t laddr, raddr;
    uint16_t lport, rport;
    uint32_t hnext;                     /* tuple hash chain */
    uint32_t outq_next, evq_next;
    uint32_t ev;                        /* pending event bits */
    int32_t err;                        /* 0 or -errno for recv/send */
    /* listener (state LISTEN) */
    uint32_t backlog, nsyn, nacc, acc_head, acc_tail;
    /* child of a listener until accepted */
    uint32_t parent, acc_next;
    /* send side */
    uint32_t iss, snd_una, snd_nxt, snd_max, snd_wnd, snd_wl1, snd_wl2, max_snd_wnd;
    uint32_t fin_seq, snd_mss;
    uint8_t fin_queued, snd_wscale, rcv_wscale, ws_ok;
    uint8_t rexmit_one, probe, ack_now, want_writable;
    uint8_t acks_owed;                  /* immediate ACKs still to send: one per out-of-order segment */
    struct ring sbuf;
    /* receive side */
    uint32_t irs, rcv_nxt, rcv_adv, ack_pending_bytes;
    uint32_t fin_rcv_seq;
    uint8_t fin_rcvd_ooo, eof, nooo, keep_probe;
    struct range ooo[OSVRT_TCP_MAX_HOLES];
    struct ring rbuf;
    /* congestion control (RFC 5681, 6582) */
    uint32_t cwnd, ssthresh, recover, dupacks, ca_acked;
    uint8_t in_recovery;
    /* RTT and RTO (RFC 6298); Karn: a sample only from a segment sent once;
     * syn_timed_out: the SYN's (or SYN-ACK's) RTO fired (5.7) */
    uint8_t rtt_active, retries, keep_sent, syn_timed_out;
    uint32_t rtt_seq;
    int64_t rtt_start, srtt, rttvar, rto;
    /* timers: absolute deadlines, INT64_MAX when off; deadline = their min */
    int64_t t[NTIMERS];
    int64_t deadline, last_rcv;
    uint32_t heap_pos;
    uint64_t retransmits;
};

struct ctl {
    struct osvrt_tcp_seg g;
};

struct osvrt_tcp_stack {
    struct osvrt_tcp_config cfg;
    struct osvrt_tcp_stats stats;
    struct osvrt_sipkey isn_key, hash_key;
    struct tcb *c;                      /* max_conns slots */
    uint32_t nslots, free_head;         /* free slots chained through hnext */
    uint32_t *buckets, bmask;
    uint32_t *heap, nheap;
    uint32_t outq_head, outq_tail, evq_head, evq_tail;
    struct ctl ctl[CTL_RING];
    uint32_t ctl_head, ctl_len;
    uint16_t ip_id, port_seq;
    uint8_t rcv_wscale;
};

static inline uint32_t slot_of(const struct osvrt_tcp_stack *s, const struct tcb *c)
{
    return (uint32_t)(c - s->c);
}

static inline int32_t id_of(const struct osvrt_tcp_stack *s, const struct tcb *c)
{
    return (int32_t)(slot_of(s, c) | (uint32_t)(c->gen & GEN_MASK) << SLOT_BITS);
}

/* The app's connection for id, or NULL: free, reused, or orphaned slots are refused. */
static struct tcb *by_id(const struct osvrt_tcp_stack *s, int32_t id)
{
    if (id < 0)
        return NULL;
    uint32_t slot = (uint32_t)id & SLOT_MASK;
    if (slot >= s->nslots)
        return NULL;
    struct tcb *c = &s->c[slot];
    if (!c->used || c->orphan || (c->gen & GEN_MASK) != ((uint32_t)id >> SLOT_BITS))
        return NULL;
    return c;
}

/* ---- the 4-tuple hash (listeners: remote 0:0) ---- */
static uint32_t tuple_hash(const struct osvrt_tcp_stack *s, uint32_t raddr, uint16_t rport,
                           uint16_t lport)
{
    uint32_t k[2] = {raddr, (uint32_t)rport << 16 | lport};
    return (uint32_t)osvrt_siphash(&s->hash_key, k, sizeof k) & s->bmask;
}

static struct tcb *lookup(const struct osvrt_tcp_stack *s, uint32_t raddr, uint16_t rport,
                          uint16_t lport)
{
    for (uint32_t i = s->buckets[tuple_hash(s, raddr, rport, lport)]; i != NONE; i = s->c[i].hnext) {
        struct tcb *c = &s->c[i];
        if (c->raddr == raddr && c->rport == rport && c->lport == lport)
            return c;
    }
    return NULL;
}

static void hash_insert(struct osvrt_tcp_stack *s, struct tcb *c)
{
    uint32_t *b = &s->buckets[tuple_hash(s, c->raddr, c->rport, c->lport)];
    c->hnext = *b;
    *b = slot_of(s, c);
    c->hashed = 1;
}

static void hash_remove(struct osvrt_tcp_stack *s, struct tcb *c)
{
    uint32_t *p = &s->buckets[tuple_hash(s, c->raddr, c->rport, c->lport)], me = slot_of(s, c);
    while (*p != me)
        p = &s->c[*p].hnext;
    *p = c->hnext;
}

/* ---- the timer heap: slots ordered by deadline ---- */
static void heap_swap(struct osvrt_tcp_stack *s, uint32_t i, uint32_t j)
{
    uint32_t a = s->heap[i], b = s->heap[j];
    s->heap[i] = b;
    s->heap[j] = a;
    s->c[b].heap_pos = i;
    s->c[a].heap_pos = j;
}

static void heap_fix(struct osvrt_tcp_stack *s, uint32_t i)
{
    while (i > 0 && s->c[s->heap[(i - 1) / 2]].deadline > s->c[s->heap[i]].deadline) {
        heap_swap(s, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        if (l < s->nheap && s->c[s->heap[l]].deadline < s->c[s->heap[m]].deadline)
            m = l;
        if (l + 1 < s->nheap && s->c[s->heap[l + 1]].deadline < s->c[s->heap[m]].deadline)
            m = l + 1;
        if (m == i)
            return;
        heap_swap(s, i, m);
        i = m;
    }
}

static void heap_remove(struct osvrt_tcp_stack *s, struct tcb *c)
{
    uint32_t i = c->heap_pos;
    if (i == NONE)
        return;
    c->heap_pos = NONE;
    if (i != --s->nheap) {
        s->heap[i] = s->heap[s->nheap];
        s->c[s->heap[i]].heap_pos = i;
        heap_fix(s, i);
    }
}

/* Recompute c's deadline from its timers and move it in the heap. */
static void timers_update(struct osvrt_tcp_stack *s, struct tcb *c)
{
    int64_t d = INT64_MAX;
    for (int i = 0; i < NTIMERS; i++)
        if (c->t[i] < d)
            d = c->t[i];
    c->deadline = d;
    if (d == INT64_MAX) {
        heap_remove(s, c);
    } else if (c->heap_pos == NONE) {
        c->heap_pos = s->nheap;
        s->heap[s->nheap++] = slot_of(s, c);
        heap_fix(s, c->heap_pos);
    } else {
        heap_fix(s, c->heap_pos);
    }
}

static void timer_set(struct osvrt_tcp_stack *s, struct tcb *c, int which, int64_t at)
{
    c->t[which] = at;
    timers_update(s, c);
}

/* ---- output and event queues ---- */
static void want_output(struct osvrt_tcp_stack *s, struct tcb *c)
{
    if (c->on_outq)
        return;
    c->on_outq = 1;
    c->outq_next = NONE;
    if (s->outq_tail == NONE)
        s->outq_head = slot_of(s, c);
    else
        s->c[s->outq_tail].outq_next = slot_of(s, c);
    s->outq_tail = slot_of(s, c);
}

static void outq_unlink(struct osvrt_tcp_stack *s, struct tcb *c)
{
    if (!c->on_outq)
        return;
    uint32_t me = slot_of(s, c), prev = NONE;
    for (uint32_t i = s->outq_head; i != me; i = s->c[i].outq_next)
        prev = i;
    if (prev == NONE)
        s->outq_head = c->outq_next;
    else
        s->c[prev].outq_next = c->outq_next;
    if (s->outq_tail == me)
        s->outq_tail = prev;
    c->on_outq = 0;
}

/* Queue event bits for the app; none for orphans or unaccepted children. */
static void post(struct osvrt_tcp_stack *s, struct tcb *c, uint32_t ev)
{
    if (c->orphan || c->parent != NONE)
        return;
    c->ev |= ev;
    if (c->on_evq)
        return;
    c->on_evq = 1;
    c->evq_next = NONE;
    if (s->evq_tail == NONE)
        s->evq_head = slot_of(s, c);
    else
        s->c[s->evq_tail].evq_next = slot_of(s, c);
    s->evq_tail = slot_of(s, c);
}

static void evq_unlink(struct osvrt_tcp_stack *s, struct tcb *c)
{
    if (!c->on_evq)
        return;
    uint32_t me = slot_of(s, c), prev = NONE;
    for (uint32_t i = s->evq_head; i != me; i = s->c[i].evq_next)
        prev = i;
    if (prev == NONE)
        s->evq_head = c->evq_next;
    else
        s->c[prev].evq_next = c->evq_next;
    if (s->evq_tail == me)
        s->evq_tail = prev;
    c->on_evq = 0;
    c->ev = 0;
}

/* A reply that belongs to no connection; dropped (and counted) when the ring is full. */
static void ctl_push(struct osvrt_tcp_stack *s, uint32_t saddr, uint32_t daddr, uint16_t sport,
                     uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags)
{
    if (s->ctl_len == CTL_RING) {
        s->stats.ctl_overflow++;
        return;
    }
    struct osvrt_tcp_seg *g = &s->ctl[(s->ctl_head + s->ctl_len++) % CTL_RING].g;
    memset(g, 0, sizeof *g);
    g->saddr = saddr;
    g->daddr = daddr;
    g->sport = sport;
    g->dport = dport;
    g->seq = seq;
    g->ack = ack;
    g->flags = flags;
}

/* RST for a segment nobody wants (RFC 9293 3.10.7.1): never answer a RST. */
static void reply_rst(struct osvrt_tcp_stack *s, const struct osvrt_tcp_seg *g)
{
    if (g->flags & OSVRT_TH_RST)
        return;
    if (g->flags & OSVRT_TH_ACK)
        ctl_push(s, g->daddr, g->saddr, g->dport, g->sport, g->ack, 0, OSVRT_TH_RST);
    else
        ctl_push(s, g->daddr, g->saddr, g->dport, g->sport, 0, g->seq + osvrt_tcp_seg_seqlen(g),
                 OSVRT_TH_RST | OSVRT_TH_ACK);
    s->stats.rsts_out++;
}

/* ---- slots ---- */
static void set_state(struct osvrt_tcp_stack *s, struct tcb *c, uint8_t st)
{
    s->stats.conns[c->state]--;
    s->stats.conns[st]++;
    c->state = st;
}

static struct tcb *slot_alloc(struct osvrt_tcp_stack *s)
{
    if (s->free_head == NONE)
        return NULL;
    struct tcb *c = &s->c[s->free_head];
    s->free_head = c->hnext;
    uint16_t gen = c->gen;
    memset(c, 0, sizeof *c);
    c->gen = gen;
    c->used = 1;
    c->state = OSVRT_TCP_CLOSED;
    s->stats.conns[OSVRT_TCP_CLOSED]++;
    c->heap_pos = c->parent = c->acc_next = c->acc_head = c->acc_tail = NONE;
    c->outq_next = c->evq_next = NONE;
    for (int i = 0; i < NTIMERS; i++)
        c->t[i] = INT64_MAX;
    c->deadline = INT64_MAX;
    return c;
}

static int bufs_alloc(struct osvrt_tcp_stack *s, struct tcb *c)
{
    c->sbuf.cap = s->cfg.sndbuf;
    c->rbuf.cap = s->cfg.rcvbuf;
    c->sbuf.buf = malloc(c->sbuf.cap);
    c->rbuf.buf = malloc(c->rbuf.cap);
    return c->sbuf.buf && c->rbuf.buf ? 0 : -ENOMEM;
}

static void acceptq_remove(struct osvrt_tcp_stack *s, struct tcb *l, struct tcb *c);

/* Free the slot: off every list, buffers freed, generation bumped so the
 * old id dies.  The caller has sent whatever RST was due. */
static void slot_free(struct osvrt_tcp_stack *s, struct tcb *c)
{
    if (c->parent != NONE) {
        struct tcb *l = &s->c[c->parent];
        if (c->on_acceptq)
            acceptq_remove(s, l, c);
        else if (c->state == OSVRT_TCP_SYN_RECEIVED)
            l->nsyn--;
    }
    if (c->hashed)
        hash_remove(s, c);
    heap_remove(s, c);
    outq_unlink(s, c);
    evq_unlink(s, c);
    free(c->sbuf.buf);
    free(c->rbuf.buf);
    s->stats.conns[c->state]--;
    c->used = 0;
    c->gen = (uint16_t)((c->gen + 1) & GEN_MASK);
    c->hnext = s->free_head;
    s->free_head = slot_of(s, c);
}

/* ---- RTO (RFC 6298) ---- */
static int64_t clamp_rto(const struct osvrt_tcp_stack *s, int64_t v)
{
    if (v < s->cfg.rto_min_ns)
        return s->cfg.rto_min_ns;
    return v > s->cfg.rto_max_ns ? s->cfg.rto_max_ns : v;
}

static void rtt_sample(struct osvrt_tcp_stack *s, struct tcb *c, int64_t r)
{
    if (r < 1)
        r = 1;
    if (c->srtt == 0) {                 /* 2.2: the first measurement */
        c->srtt = r;
        c->rttvar = r / 2;
    } else {                            /* 2.3: alpha 1/8, beta 1/4 */
        int64_t d = c->srtt > r ? c->srtt - r : r - c->srtt;
        c->rttvar = (3 * c->rttvar + d) / 4;
        c->srtt = (7 * c->srtt + r) / 8;
    }
    /* G (clock granularity) is 1 ns here: K*RTTVAR always dominates. */
    c->rto = clamp_rto(s, c->srtt + 4 * c->rttvar);
}

/* RFC 6298 5.7: the SYN's (or SYN-ACK's) timer fired and the handshake gave
 * no RTT sample (Karn), so data starts with three initial RTOs (RFC: 3 s
 * against 1 s), not the backed-off one nor the 1 s that already proved too
 * short.  A simultaneous open resends its SYN with no timer fired: 2.1's
 * initial RTO stands there. */
static void rto_after_handshake(struct osvrt_tcp_stack *s, struct tcb *c)
{
    if (c->srtt == 0 && c->syn_timed_out)
        c->rto = clamp_rto(s, 3 * s->cfg.rto_initial_ns);
}

/* The retransmission timer runs exactly while sequence space is unacknowledged (5.1-5.3). */
static void rexmt_restart(struct osvrt_tcp_stack *s, struct tcb *c, int64_t now)
{
    timer_set(s, c, T_REXMT, c->snd_max == c->snd_una ? INT64_MAX : now + c->rto);
}

/* ---- the window we offer ---- */
static uint32_t rcv_space(const struct tcb *c)
{
    return c->rbuf.cap - c->rbuf.len;
}

/* Receiver silly window avoidance (RFC 9293 3.8.6.2.2): the right edge moves
 * only in steps of min(buffer / 2, MSS). */
static uint32_t sws_step(const struct osvrt_tcp_stack *s, const struct tcb *c)
{
    return c->rbuf.cap / 2 < s->cfg.mss ? c->rbuf.cap / 2 : s->cfg.mss;
}

/* The window the last segment we sent left open to the peer now. */
static uint32_t offered_window(const struct tcb *c)
{
    return osvrt_seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
}

/* The window field for a segment sent now; records the right edge offered. */
static uint16_t window_field(const struct osvrt_tcp_stack *s, struct tcb *c, int syn)
{
    uint32_t w = rcv_space(c);
    /* offered <= w always: the edge offered is rcv_nxt + space at that time, and since
     * then rcv_nxt grew exactly as space shrank (in-order data) or space grew (recv). */
    uint32_t offered = offered_window(c);
    if (!syn && w >= offered && w - offered < sws_step(s, c))
        w = offered;
    if (syn) {
        w = w > 65535 ? 65535 : w;      /* RFC 7323 2.2: a SYN's window is never scaled */
    } else {
        w >>= c->rcv_wscale;
        w = w > 65535 ? 65535 : w;
    }
    uint32_t edge = c->rcv_nxt + (syn ? w : w << c->rcv_wscale);
    if (osvrt_seq_gt(edge, c->rcv_adv))
        c->rcv_adv = edge;
    return (uint16_t)w;
}

/* ---- output of one connection ---- */

/* Build one segment of c at buf; data is copied from sbuf at offset `off`. */
static uint32_t emit(struct osvrt_tcp_stack *s, struct tcb *c, uint8_t *buf, uint32_t seq,
                     uint8_t flags, uint32_t off, uint32_t n)
{
    uint8_t opts[8];
    uint32_t optlen = 0;
    int syn = flags & OSVRT_TH_SYN;
    if (syn) {                          /* MSS, and window scale when it may be used */
        opts[0] = 2;
        opts[1] = 4;
        opts[2] = (uint8_t)(s->cfg.mss >> 8);
        opts[3] = (uint8_t)s->cfg.mss;
        optlen = 4;
        if (c->state == OSVRT_TCP_SYN_SENT || c->ws_ok) {
            opts[4] = 1;
            opts[5] = 3;
            opts[6] = 3;
            opts[7] = s->rcv_wscale;
            optlen = 8;
        }
    }
    if (c->state != OSVRT_TCP_SYN_SENT)
        flags |= OSVRT_TH_ACK;
    struct osvrt_tcp_seg g = {
        .saddr = c->laddr, .daddr = c->raddr, .sport = c->lport, .dport = c->rport,
        .seq = seq, .ack = (flags & OSVRT_TH_ACK) ? c->rcv_nxt : 0, .flags = flags,
        .wnd = window_field(s, c, syn), .len = n,
    };
    if (n)
        ring_copy_out(&c->sbuf, off, buf + 40 + optlen, n);
    if (flags & OSVRT_TH_ACK) {         /* every ACK-bearing segment acknowledges all we have */
        if (c->acks_owed && !n)
            c->acks_owed--;             /* the sender counts duplicate ACKs: one per segment */
        c->ack_now = c->acks_owed != 0;
        c->ack_pending_bytes = 0;
        c->t[T_DELACK] = INT64_MAX;
    }
    s->stats.segs_out++;
    s->stats.bytes_out += n;
    return osvrt_tcp_build(buf, &g, opts, optlen, s->ip_id++);
}

/* Note a send of [seq, end) (SYN/FIN included): advance snd_nxt/snd_max,
 * start an RTT sample for new data (Karn), arm the RTO. */
static void sent(struct osvrt_tcp_stack *s, struct tcb *c, uint32_t seq, uint32_t end, int64_t now)
{
    if (osvrt_seq_lt(seq, c->snd_max)) {
        s->stats.retransmits++;
        c->retransmits++;
        if (c->rtt_active && osvrt_seq_ge(c->rtt_seq, seq) && osvrt_seq_lt(c->rtt_seq, end))
            c->rtt_active = 0;          /* its ACK would be ambiguous */
    } else if (!c->rtt_active) {
        c->rtt_active = 1;
        c->rtt_seq = seq;
        c->rtt_start = now;
    }
    if (osvrt_seq_gt(end, c->snd_nxt) && seq == c->snd_nxt)
        c->snd_nxt = end;
    if (osvrt_seq_gt(end, c->snd_max))
        c->snd_max = end;
    if (c->t[T_REXMT] == INT64_MAX)
        timer_set(s, c, T_REXMT, now + c->rto);
}

static int can_send_data(const struct tcb *c)
{
    switch (c->state) {
    case OSVRT_TCP_ESTABLISHED: case OSVRT_TCP_CLOSE_WAIT: case OSVRT_TCP_FIN_WAIT_1:
    case OSVRT_TCP_CLOSING: case OSVRT_TCP_LAST_ACK:
        return 1;
    default:
        return 0;
    }
}

/* The sequence number of a segment that carries no data, SYN or FIN (a pure
 * ACK, a window update).  RFC 9293 stamps it SND.NXT, and the RFC's SND.NXT
 * is the next NEW sequence number: its retransmissions come from the queue
 * and never move it back.  Here an RTO rewinds snd_nxt to snd_una (go back
 * N, as BSD), so the RFC's SND.NXT is snd_max; an ACK stamped with the
 * rewound snd_nxt lies left of the peer's RCV.NXT whenever the peer did get
 * the data (a spurious RTO, its ACKs lost), and a peer without our
 * allowance in sync_input (Linux: tcp_sequence) drops it, ACK field and
 * window update with it.  BSD sends snd_max for the same reason.  Except
 * when snd_max lies past the peer's window (the byte of a zero-window
 * probe, a window the peer shrank): then the window's right edge, which a
 * zero window makes the peer's RCV.NXT exactly (snd_nxt, a probe's byte
 * further, is right of it and dropped alike; Linux: tcp_acceptable_seq). */
static uint32_t ack_seq(const struct tcb *c)
{
    if (c->snd_una == c->iss)           /* our SYN unacknowledged: a window binds no SYN */
        return c->snd_max;
    uint32_t edge = c->snd_una + c->snd_wnd;
    return osvrt_seq_le(c->snd_max, edge) ? c->snd_max : edge;
}

/* Keep-alive: an old byte's sequence, no data (RFC 1122 4.2.3.6); the peer answers
 * with an ACK, which restarts the keep-alive timer. */
static uint32_t keepalive_probe(struct osvrt_tcp_stack *s, struct tcb *c, uint8_t *buf)
{
    c->keep_probe = 0;
    s->stats.keepalive_probes++;
    return emit(s, c, buf, c->snd_una - 1, 0, 0, 0);
}

/* One segment of c into buf, or 0 when c has nothing to send now. */
static uint32_t conn_output(struct osvrt_tcp_stack *s, struct tcb *c, uint8_t *buf, uint32_t cap,
                            int64_t now)
{
    uint32_t room = cap - 40;           /* payload room after headers without options */
    if ((c->state == OSVRT_TCP_SYN_SENT || c->state == OSVRT_TCP_SYN_RECEIVED)
        && c->snd_nxt == c->iss) {
        uint32_t n = emit(s, c, buf, c->iss, OSVRT_TH_SYN, 0, 0);
        sent(s, c, c->iss, c->iss + 1, now);
        return n;
    }
    if (!can_send_data(c)) {
        if (c->keep_probe && c->state == OSVRT_TCP_FIN_WAIT_2)
            return keepalive_probe(s, c, buf);      /* a half-closed peer is probed too */
        if (c->ack_now && c->state != OSVRT_TCP_SYN_SENT && c->state != OSVRT_TCP_CLOSED)
            return emit(s, c, buf, c->snd_nxt, 0, 0, 0);
        return 0;
    }
    uint32_t mss = c->snd_mss < room ? c->snd_mss : room;
    uint32_t data_end = c->snd_una + c->sbuf.len;          /* fin_seq when FIN queued */
    if (c->rexmit_one) {                /* fast retransmit / NewReno partial ACK: snd_una's segment */
        c->rexmit_one = 0;
        uint32_t n = c->sbuf.len < mss ? c->sbuf.len : mss;
        uint8_t f = 0;
        if (c->fin_queued && n == c->sbuf.len && osvrt_seq_gt(c->snd_max, c->fin_seq))
            f = OSVRT_TH_FIN;
        if (n || f) {
            uint32_t len = emit(s, c, buf, c->snd_una, f | (n ? OSVRT_TH_PSH : 0), 0, n);
            sent(s, c, c->snd_una, c->snd_una + n + !!f, now);
            return len;
        }
    }
    uint32_t off = c->snd_nxt - c->snd_una;
    uint32_t avail = osvrt_seq_lt(c->snd_nxt, data_end) ? data_end - c->snd_nxt : 0;
    uint32_t wnd = c->snd_wnd < c->cwnd ? c->snd_wnd : c->cwnd;
    int32_t usable = (int32_t)(c->snd_una + wnd - c->snd_nxt);
    if (avail && c->probe && c->snd_wnd == 0 && c->snd_nxt == c->snd_una) {
        c->probe = 0;                   /* zero-window probe: one byte past the edge */
        s->stats.zero_window_probes++;
        uint32_t len = emit(s, c, buf, c->snd_nxt, 0, off, 1);
        sent(s, c, c->snd_nxt, c->snd_nxt + 1, now);
        /* The peer drops the probe's byte while its window is 0 (3.10.7.4) and
         * acknowledges snd_una: keep snd_nxt there, so that the byte is sent
         * again with the data once the window opens (as BSD rewinds it), not
         * left as a hole that only a backed-off RTO would fill.  snd_max keeps
         * it: an ACK of the byte (the window opened in time) is still valid. */
        c->snd_nxt = c->snd_una;
        return len;
    }
    int forced = c->probe;              /* the persist timer fired: send what the window allows */
    c->probe = 0;
    uint32_t n = avail < (uint32_t)(usable > 0 ? usable : 0) ? avail : (uint32_t)(usable > 0 ? usable : 0);
    n = n < mss ? n : mss;
    /* Sender silly window avoidance (RFC 9293 3.8.6.2.1): a segment cut short by a
     * window waits for the window to open by a full segment, or for the override
     * timeout (the persist timer: then `forced`).  Never a retransmission (snd_nxt
     * behind snd_max, as BSD's tcp_output): after an RTO the RTO timer is off until
     * something is sent, and the persist timer runs only with nothing in flight, so
     * a held resend would leave the connection with data outstanding and no timer. */
    int held = 0;
    if (n && n < mss && n < avail && n < c->max_snd_wnd / 2 && !forced
        && !osvrt_seq_lt(c->snd_nxt, c->snd_max)) {
        n = 0;
        held = 1;
    }
    if (n) {
        uint8_t f = n == avail ? OSVRT_TH_PSH : 0;
        if (n == avail && c->fin_queued)
            f |= OSVRT_TH_FIN;
        uint32_t seq = c->snd_nxt;
        uint32_t len = emit(s, c, buf, seq, f, off, n);
        sent(s, c, seq, seq + n + !!(f & OSVRT_TH_FIN), now);
        timer_set(s, c, T_PERSIST, INT64_MAX);
        return len;
    }
    if (!avail && c->fin_queued && c->snd_nxt == c->fin_seq) {
        uint32_t len = emit(s, c, buf, c->fin_seq, OSVRT_TH_FIN, 0, 0);
        sent(s, c, c->fin_seq, c->fin_seq + 1, now);
        return len;
    }
    /* Data waits on a zero window with nothing in flight: the persist timer probes (3.8.6.1). */
    if (avail && (c->snd_wnd == 0 || held) && c->snd_max == c->snd_una
        && c->t[T_PERSIST] == INT64_MAX && c->t[T_REXMT] == INT64_MAX)
        timer_set(s, c, T_PERSIST, now + c->rto);
    if (c->keep_probe)
        return keepalive_probe(s, c, buf);
    if (c->ack_now)
        return emit(s, c, buf, ack_seq(c), 0, 0, 0);
    return 0;
}

/* ---- connection set-up ---- */
static uint32_t isn(const struct osvrt_tcp_stack *s, const struct tcb *c, int64_t now)
{
    uint32_t k[3] = {c->laddr, c->raddr, (uint32_t)c->lport << 16 | c->rport};
    /* RFC 6528: M (a 4 us clock) + F(4-tuple, secret) */
    return (uint32_t)((uint64_t)now / 4000) + (uint32_t)osvrt_siphash(&s->isn_key, k, sizeof k);
}

static void conn_init(struct osvrt_tcp_stack *s, struct tcb *c, int64_t now)
{
    c->iss = isn(s, c, now);
    c->snd_una = c->snd_nxt = c->snd_max = c->recover = c->iss;
    c->rto = s->cfg.rto_initial_ns;
    c->snd_mss = DEFAULT_MSS < s->cfg.mss ? DEFAULT_MSS : s->cfg.mss;
    c->ssthresh = UINT32_MAX / 2;
    c->last_rcv = now;
    c->rcv_wscale = s->rcv_wscale;
}

/* The peer's SYN options; MSS also sets the initial window (RFC 6928 / 5681 3.1). */
static void take_syn_options(struct osvrt_tcp_stack *s, struct tcb *c, const struct osvrt_tcp_seg *g)
{
    uint32_t mss = g->mss ? g->mss : DEFAULT_MSS;
    if (mss > s->cfg.mss)
        mss = s->cfg.mss;
    /* The peer's MSS is a limit (RFC 9293 3.7.1), down to Linux's floor of
     * 48: below that, segments of a few bytes would cost a packet each. */
    if (mss < 48)
        mss = 48;
    c->snd_mss = mss;
    if (g->wscale >= 0) {
        c->ws_ok = 1;
        c->snd_wscale = (uint8_t)g->wscale;
    } else {
        c->ws_ok = 0;
        c->snd_wscale = 0;
        c->rcv_wscale = 0;
    }
    uint32_t iw = 2 * mss > 14600 ? 2 * mss : 14600;
    c->cwnd = 10 * mss < iw ? 10 * mss : iw;
    c->irs = g->seq;
    c->rcv_nxt = g->seq + 1;
    c->rcv_adv = c->rcv_nxt;
}

/* ---- the state machine's pieces ---- */

/* Protocol end of a connection: CLOSED with an error or normally. */
static void conn_closed(struct osvrt_tcp_stack *s, struct tcb *c, int32_t err, uint32_t ev)
{
    if (c->orphan || (c->parent != NONE && !c->on_acceptq)) {
        slot_free(s, c);
        return;
    }
    if (err && !c->err)
        c->err = err;
    set_state(s, c, OSVRT_TCP_CLOSED);
    for (int i = 0; i < NTIMERS; i++)
        c->t[i] = INT64_MAX;
    timers_update(s, c);
    outq_unlink(s, c);
    post(s, c, ev | OSVRT_TCP_EV_CLOSED | OSVRT_TCP_EV_READABLE | OSVRT_TCP_EV_WRITABLE);
}

static void enter_time_wait(struct osvrt_tcp_stack *s, struct tcb *c, int64_t now)
{
    set_state(s, c, OSVRT_TCP_TIME_WAIT);
    c->t[T_REXMT] = c->t[T_PERSIST] = c->t[T_KEEP] = c->t[T_DELACK] = INT64_MAX;
    timer_set(s, c, T_LINGER, now + s->cfg.time_wait_ns);
    post(s, c, OSVRT_TCP_EV_CLOSED);
}

static void acceptq_push(struct osvrt_tcp_stack *s, struct tcb *l, struct tcb *c)
{
    c->on_acceptq = 1;
    c->acc_next = NONE;
    if (l->acc_tail == NONE)
        l->acc_head = slot_of(s, c);
    else
        s->c[l->acc_tail].acc_next = slot_of(s, c);
    l->acc_tail = slot_of(s, c);
    l->nacc++;
}

static void acceptq_remove(struct osvrt_tcp_stack *s, struct tcb *l, struct tcb *c)
{
    uint32_t me = slot_of(s, c), prev = NONE;
    for (uint32_t i = l->acc_head; i != me; i = s->c[i].acc_next)
        prev = i;
    if (prev == NONE)
        l->acc_head = c->acc_next;
    else
        s->c[prev].acc_next = c->acc_next;
    if (l->acc_tail == me)
        l->acc_tail = prev;
    c->on_acceptq = 0;
    l->nacc--;
}

/* A SYN for a listener: a SYN_RECEIVED child, if the backlog has room. */
static int listen_input(struct osvrt_tcp_stack *s, struct tcb *l, const struct osvrt_tcp_seg *g,
                        int64_t now)
{
    if (g->flags & OSVRT_TH_RST)
        return OSVRT_TCP_DROP_NO_CONN;
    if (g->flags & OSVRT_TH_ACK) {
        reply_rst(s, g);
        return OSVRT_TCP_DROP_NO_CONN;
    }
    if (!(g->flags & OSVRT_TH_SYN))
        return OSVRT_TCP_DROP_BAD_FLAGS;
    if (l->nsyn + l->nacc >= l->backlog)
        return OSVRT_TCP_DROP_BACKLOG;  /* no reply: the peer's SYN retransmission retries */
    struct tcb *c = slot_alloc(s);
    if (!c)
        return OSVRT_TCP_DROP_NO_ROOM;
    c->laddr = g->daddr;
    c->lport = g->dport;
    c->raddr = g->saddr;
    c->rport = g->sport;
    if (bufs_alloc(s, c)) {
        slot_free(s, c);
        return OSVRT_TCP_DROP_NO_ROOM;
    }
    hash_insert(s, c);
    conn_init(s, c, now);
    take_syn_options(s, c, g);
    c->snd_wnd = g->wnd;                /* unscaled in a SYN */
    c->snd_wl1 = g->seq;
    c->snd_wl2 = c->iss;
    c->parent = slot_of(s, l);
    l->nsyn++;
    set_state(s, c, OSVRT_TCP_SYN_RECEIVED);
    s->stats.passive_opens++;
    want_output(s, c);                  /* the SYN-ACK */
    return 0;                           /* data on a SYN is not kept: the peer resends it */
}

static int syn_sent_input(struct osvrt_tcp_stack *s, struct tcb *c, const struct osvrt_tcp_seg *g,
                          int64_t now)
{
    int ack = g->flags & OSVRT_TH_ACK;
    if (ack && (osvrt_seq_le(g->ack, c->iss) || osvrt_seq_gt(g->ack, c->snd_max))) {
        reply_rst(s, g);
        return OSVRT_TCP_DROP_BAD_ACK;
    }
    if (g->flags & OSVRT_TH_RST) {
        if (!ack)
            return OSVRT_TCP_DROP_RST_INVALID;
        s->stats.rsts_in++;
        conn_closed(s, c, -ECONNREFUSED, OSVRT_TCP_EV_ERROR);
        return 0;
    }
    if (!(g->flags & OSVRT_TH_SYN))
        return OSVRT_TCP_DROP_BAD_FLAGS;
    take_syn_options(s, c, g);
    c->snd_wnd = g->wnd;
    c->max_snd_wnd = c->snd_wnd;
    c->snd_wl1 = g->seq;
    c->snd_wl2 = g->ack;
    if (!ack) {                         /* simultaneous open: SYN-ACK from SYN_RECEIVED */
        set_state(s, c, OSVRT_TCP_SYN_RECEIVED);
        c->snd_nxt = c->iss;
        want_output(s, c);
        return 0;
    }
    if (c->rtt_active && osvrt_seq_gt(g->ack, c->rtt_seq)) {
        c->rtt_active = 0;
        rtt_sample(s, c, now - c->rtt_start);
    }
    c->snd_una = g->ack;
    /* An RTO may have rewound snd_nxt to the ISS just before this SYN-ACK
     * came in (before output() ran): the SYN is acknowledged now, so the next
     * byte is the first of the data, not the SYN's sequence number again. */
    if (osvrt_seq_lt(c->snd_nxt, c->snd_una))
        c->snd_nxt = c->snd_una;
    c->retries = 0;
    rto_after_handshake(s, c);
    set_state(s, c, OSVRT_TCP_ESTABLISHED);
    timer_set(s, c, T_REXMT, INT64_MAX);
    if (s->cfg.keepalive_ns)
        timer_set(s, c, T_KEEP, now + s->cfg.keepalive_ns);
    c->ack_now = 1;
    want_output(s, c);
    post(s, c, OSVRT_TCP_EV_ESTABLISHED | OSVRT_TCP_EV_WRITABLE);
    return 0;
}

/* RFC 9293 3.10.7.4 "first": is the segment in the receive window? */
static int seq_acceptable(const struct tcb *c, const struct osvrt_tcp_seg *g)
{
    uint32_t wnd = rcv_space(c), sl = osvrt_tcp_seg_seqlen(g);
    if (osvrt_seq_gt(c->rcv_adv, c->rcv_nxt + wnd))
        wnd = c->rcv_adv - c->rcv_nxt;  /* never refuse what we offered */
    if (sl == 0)
        return wnd == 0 ? g->seq == c->rcv_nxt
                        : osvrt_seq_ge(g->seq, c->rcv_nxt) && osvrt_seq_lt(g->seq, c->rcv_nxt + wnd);
    if (wnd == 0)
        return 0;
    uint32_t last = g->seq + sl - 1;
    return (osvrt_seq_ge(g->seq, c->rcv_nxt) && osvrt_seq_lt(g->seq, c->rcv_nxt + wnd))
        || (osvrt_seq_ge(last, c->rcv_nxt) && osvrt_seq_lt(last, c->rcv_nxt + wnd));
}

/* The ACK field of a segment for a synchronized connection. */
static void ack_input(struct osvrt_tcp_stack *s, struct tcb *c, const struct osvrt_tcp_seg *g,
                      int64_t now)
{
    uint32_t wnd = (uint32_t)g->wnd << c->snd_wscale;
    int is_dup = g->ack == c->snd_una && g->len == 0 && !(g->flags & (OSVRT_TH_SYN | OSVRT_TH_FIN))
                 && wnd == c->snd_wnd && wnd != 0 && c->snd_max != c->snd_una;
    /* (wnd != 0: answers to zero-window probes repeat one ACK; they are not loss signals) */
    /* Window update (3.10.7.4 "fifth"): only from a newer segment. */
    if (osvrt_seq_lt(c->snd_wl1, g->seq)
        || (c->snd_wl1 == g->seq && osvrt_seq_le(c->snd_wl2, g->ack))) {
        if (wnd > c->snd_wnd)
            want_output(s, c);
        c->snd_wnd = wnd;
        c->snd_wl1 = g->seq;
        c->snd_wl2 = g->ack;
        if (wnd > c->max_snd_wnd)
            c->max_snd_wnd = wnd;
        if (wnd) {
            timer_set(s, c, T_PERSIST, INT64_MAX);
        } else if (g->ack == c->snd_una && !c->orphan) {
            c->retries = 0;             /* a zero window that answers is alive (3.8.6.1); for an
                                         * orphan nobody waits: it gives up after max_retries */
        }
    }
    if (osvrt_seq_le(g->ack, c->snd_una)) {
        if (is_dup) {
            s->stats.dup_acks++;
            if (++c->dupacks == 3 && !c->in_recovery && osvrt_seq_ge(g->ack, c->recover)) {
                /* RFC 6582 3.2 step 2: fast retransmit, enter fast recovery */
                uint32_t flight = c->snd_max - c->snd_una;
                c->ssthresh = flight / 2 > 2 * c->snd_mss ? flight / 2 : 2 * c->snd_mss;
                c->recover = c->snd_max;
                c->cwnd = c->ssthresh + 3 * c->snd_mss;
                c->in_recovery = 1;
                c->rexmit_one = 1;
                s->stats.fast_retransmits++;
                want_output(s, c);
            } else if (c->in_recovery) {
                /* step 3: inflate per further duplicate, also the first ones
                 * after a partial ACK (which zeroed dupacks, RFC 6582 3.2.5) */
                c->cwnd += c->snd_mss;
                want_output(s, c);
            }
        }
        return;
    }
    /* New data acknowledged. */
    uint32_t acked = g->ack - c->snd_una;
    uint32_t data = acked;
    if (c->fin_queued && osvrt_seq_gt(g->ack, c->fin_seq))
        data--;                         /* the FIN's sequence number */
    if (data > c->sbuf.len)
        data = c->sbuf.len;
    ring_consume(&c->sbuf, data);
    c->snd_una = g->ack;
    if (osvrt_seq_lt(c->snd_nxt, c->snd_una))
        c->snd_nxt = c->snd_una;
    c->retries = 0;
    c->dupacks = 0;
    if (c->rtt_active && osvrt_seq_gt(g->ack, c->rtt_seq)) {
        c->rtt_active = 0;
        rtt_sample(s, c, now - c->rtt_start);
    } else if (c->srtt) {
        c->rto = clamp_rto(s, c->srtt + 4 * c->rttvar);     /* undo backoff: new data got through */
    }
    if (c->in_recovery) {
        if (osvrt_seq_ge(g->ack, c->recover)) {              /* full ACK: leave recovery (RFC 6582 3.2.3) */
            uint32_t flight = c->snd_max - c->snd_una;
            c->cwnd = c->ssthresh < flight + c->snd_mss ? c->ssthresh : flight + c->snd_mss;
            c->in_recovery = 0;
        } else {                                             /* partial ACK: resend the next hole */
            c->rexmit_one = 1;
            c->cwnd = c->cwnd > acked ? c->cwnd - acked : 0;
            if (acked >= c->snd_mss)
                c->cwnd += c->snd_mss;
            if (c->cwnd < c->snd_mss)
                c->cwnd = c->snd_mss;
        }
    } else if (c->cwnd < c->ssthresh) {
        /* Slow start, by bytes acknowledged (RFC 3465) without its per-ACK limit L,
         * as Linux: a receiver that drains a batch of segments before it sends
         * acknowledges them all in one ACK, and 1 MSS per such ACK would starve
         * the window.  It stops at ssthresh; congestion avoidance goes on. */
        uint32_t room = c->ssthresh - c->cwnd;
        c->cwnd += acked < room ? acked : room;
    } else {
        c->ca_acked += acked;                                /* congestion avoidance: +1 MSS per cwnd */
        if (c->ca_acked >= c->cwnd) {
            c->ca_acked -= c->cwnd;
            c->cwnd += c->snd_mss;
        }
    }
    rexmt_restart(s, c, now);
    if (data && c->want_writable) {
        c->want_writable = 0;
        post(s, c, OSVRT_TCP_EV_WRITABLE);
    }
    want_output(s, c);
}

/* Absorb the out-of-order ranges that rcv_nxt has reached.  stats.bytes_in counts
 * a held byte here, when it becomes in order, not when it arrived: a held range may
 * be sent again, overlap others and be merged (ooo_add), so only this step - rcv_nxt
 * passing it - sees each byte exactly once. */
static void ooo_absorb(struct osvrt_tcp_stack *s, struct tcb *c)
{
    for (int moved = 1; moved;) {
        moved = 0;
        for (uint32_t i = 0; i < c->nooo; i++) {
            struct range *r = &c->ooo[i];
            if (osvrt_seq_gt(r->start, c->rcv_nxt))
                continue;
            if (osvrt_seq_gt(r->end, c->rcv_nxt)) {
                s->stats.bytes_in += r->end - c->rcv_nxt;
                c->rbuf.len += r->end - c->rcv_nxt;
                c->rcv_nxt = r->end;
            }
            c->ooo[i] = c->ooo[--c->nooo];
            moved = 1;
            break;
        }
    }
}

/* Record [start, end) as held; merge with touching ranges.  0 or -1 (no room). */
static int ooo_add(struct tcb *c, uint32_t start, uint32_t end)
{
    for (uint32_t i = 0; i < c->nooo;) {
        struct range *r = &c->ooo[i];
        if (osvrt_seq_le(r->start, end) && osvrt_seq_ge(r->end, start)) {
            if (osvrt_seq_lt(r->start, start))
                start = r->start;
            if (osvrt_seq_gt(r->end, end))
                end = r->end;
            c->ooo[i] = c->ooo[--c->nooo];
            continue;
        }
        i++;
    }
    if (c->nooo == OSVRT_TCP_MAX_HOLES)
        return -1;
    c->ooo[c->nooo].start = start;
    c->ooo[c->nooo].end = end;
    c->nooo++;
    return 0;
}

static int recv_open(const struct tcb *c)
{
    return c->state == OSVRT_TCP_ESTABLISHED || c->state == OSVRT_TCP_FIN_WAIT_1
        || c->state == OSVRT_TCP_FIN_WAIT_2;
}

/* The peer's FIN is now next in order: take it (3.10.7.4 "eighth"). */
static void fin_input(struct osvrt_tcp_stack *s, struct tcb *c, int64_t now)
{
    c->rcv_nxt++;
    c->eof = 1;
    c->fin_rcvd_ooo = 0;
    c->ack_now = 1;
    want_output(s, c);
    post(s, c, OSVRT_TCP_EV_READABLE);
    int our_fin_acked = c->fin_queued && osvrt_seq_gt(c->snd_una, c->fin_seq);
    switch (c->state) {
    case OSVRT_TCP_SYN_RECEIVED:
    case OSVRT_TCP_ESTABLISHED:
        set_state(s, c, OSVRT_TCP_CLOSE_WAIT);
        break;
    case OSVRT_TCP_FIN_WAIT_1:
        if (our_fin_acked)
            enter_time_wait(s, c, now);
        else
            set_state(s, c, OSVRT_TCP_CLOSING);
        break;
    case OSVRT_TCP_FIN_WAIT_2:
        timer_set(s, c, T_LINGER, INT64_MAX);
        enter_time_wait(s, c, now);
        break;
    default:
        break;
    }
}

/* Segment text (3.10.7.4 "seventh") and FIN; g is already trimmed to start at or after rcv_nxt. */
static void data_input(struct osvrt_tcp_stack *s, struct tcb *c, const struct osvrt_tcp_seg *g,
                       int64_t now)
{
    uint32_t seq = g->seq, len = g->len;
    const uint8_t *data = g->data;
    int fin = g->flags & OSVRT_TH_FIN;
    if (osvrt_seq_lt(seq, c->rcv_nxt)) {                     /* drop what we already have */
        uint32_t skip = c->rcv_nxt - seq;
        if (skip >= len) {
            if (len || (fin && c->eof))
                s->stats.dup_segments++;
            if (skip > len)
                fin = 0;                                     /* the FIN too is old */
            skip = len;
            c->ack_now = 1;
        }
        data += skip;
        len -= skip;
        seq += skip;
    }
    uint32_t off = seq - c->rcv_nxt, space = rcv_space(c);
    if (off >= space) {
        len = 0;
        fin = 0;
    } else if (len > space - off) {
        len = space - off;                                   /* past the window: cut (and the FIN) */
        fin = 0;
    }
    if (len == 0 && !fin) {
        if (g->len)
            c->ack_now = 1;
        want_output(s, c);
        return;
    }
    if (len) {
        ring_copy_in(&c->rbuf, c->rbuf.len + off, data, len);
        if (off == 0) {
            c->rbuf.len += len;
            c->rcv_nxt += len;
            s->stats.bytes_in += len;
            int filled = c->nooo != 0;
            ooo_absorb(s, c);
            c->acks_owed = 0;           /* a new cumulative ACK replaces the duplicates not yet sent */
            post(s, c, OSVRT_TCP_EV_READABLE);
            c->ack_pending_bytes += len;
            /* RFC 1122 4.2.3.2 / RFC 5681 4.2: ACK every second full segment, and at once
             * when a hole was filled. */
            if (filled || c->ack_pending_bytes >= 2 * c->snd_mss)
                c->ack_now = 1;
            else if (c->t[T_DELACK] == INT64_MAX)
                timer_set(s, c, T_DELACK, now + s->cfg.delack_ns);
        } else {
            s->stats.ooo_segments++;
            if (ooo_add(c, seq, seq + len)) {
                s->stats.drops[OSVRT_TCP_DROP_NO_ROOM]++;
                fin = 0;
            }
            c->ack_now = 1;                                  /* a duplicate ACK at once (RFC 5681 4.2), */
            if (c->acks_owed < 64)                           /* one per segment: the sender counts them */
                c->acks_owed++;
        }
    }
    if (fin) {
        if (seq + len == c->rcv_nxt) {
            fin_input(s, c, now);
        } else {
            c->fin_rcvd_ooo = 1;
            c->fin_rcv_seq = seq + len;
            if (len == 0) {                      /* (text out of order was ACKed above) */
                c->ack_now = 1;                  /* out of order: a duplicate ACK at once */
                if (c->acks_owed < 64)
                    c->acks_owed++;
            }
        }
    } else if (c->fin_rcvd_ooo && c->fin_rcv_seq == c->rcv_nxt) {
        fin_input(s, c, now);
    }
    want_output(s, c);
}

static void reset_and_free(struct osvrt_tcp_stack *s, struct tcb *c);

/* Segments for SYN_RECEIVED and every later state (3.10.7.4). */
static int sync_input(struct osvrt_tcp_stack *s, struct tcb *c, const struct osvrt_tcp_seg *g,
                      int64_t now)
{
    uint8_t f = g->flags;
    if (c->state == OSVRT_TCP_SYN_RECEIVED && (f & OSVRT_TH_SYN) && !(f & OSVRT_TH_ACK)
        && g->seq == c->irs) {
        c->snd_nxt = c->iss;                                 /* its SYN again: resend our SYN-ACK */
        want_output(s, c);
        return 0;
    }
    /* Simultaneous open (RFC 9293 figure 8): in SYN_RECEIVED after our own
     * SYN, the peer's SYN-ACK repeats its SYN (seq = IRS, left of rcv_nxt:
     * refused below) and ACKs ours.  Taken as the ACK that completes the
     * handshake, as Linux does; otherwise we would stay until our SYN-ACK's
     * RTO, the peer (established) having nothing to send. */
    struct osvrt_tcp_seg synack_as_ack;
    if (c->state == OSVRT_TCP_SYN_RECEIVED && c->parent == NONE
        && (f & (OSVRT_TH_SYN | OSVRT_TH_ACK | OSVRT_TH_RST | OSVRT_TH_FIN))
           == (OSVRT_TH_SYN | OSVRT_TH_ACK)
        && g->seq == c->irs && osvrt_seq_gt(g->ack, c->snd_una)
        && osvrt_seq_le(g->ack, c->snd_max)) {
        synack_as_ack = *g;
        synack_as_ack.flags &= (uint8_t)~OSVRT_TH_SYN;
        synack_as_ack.seq = c->irs + 1;      /* its text, if any, follows the SYN */
        /* A SYN's window is never scaled (RFC 7323 2.2); taken as scaled below:
         * rounded down, never more room than the peer offered. */
        synack_as_ack.wnd = (uint16_t)(g->wnd >> c->snd_wscale);
        g = &synack_as_ack;
        f = g->flags;
    }
    /* text_drop: the segment's text, FIN and SYN are refused (not in the receive window);
     * its ACK field may still be taken below (ack_only). */
    int text_drop = -1, ack_only = 0;
    if (!seq_acceptable(c, g)) {
        if (f & OSVRT_TH_RST)
            return OSVRT_TCP_DROP_OUT_OF_WINDOW;
        c->ack_now = 1;
        want_output(s, c);
        if (c->state == OSVRT_TCP_TIME_WAIT)
            timer_set(s, c, T_LINGER, now + s->cfg.time_wait_ns);
        text_drop = OSVRT_TCP_DROP_OUT_OF_WINDOW;
        if (osvrt_tcp_seg_seqlen(g) && osvrt_seq_le(g->seq + osvrt_tcp_seg_seqlen(g), c->rcv_nxt)) {
            s->stats.dup_segments++;        /* all old: a retransmission or a copy, not an attack */
            text_drop = 0;
        }
        /* RFC 9293 3.10.7.4: "If the RCV.WND is zero, no segments will be acceptable, but
         * special allowance should be made to accept valid ACKs".  Without it two echoing
         * peers deadlock: our window is zero because our application is blocked sending,
         * the peer's sender has gone back N (rexmt_fire: snd_nxt = snd_una), so every
         * segment it sends - retransmitted old text, and pure ACKs stamped with that
         * rolled-back snd_nxt - lies left of our rcv_nxt, which a zero window refuses
         * (only seq == rcv_nxt passes); the ACKs of OUR data ride only on those segments,
         * so our send buffer never drains and our application never reads.  So the ACK
         * field of a segment refused only for its sequence number is still processed,
         * when the segment does not reach past the window's right edge (old, or at a zero
         * window: never text we did not offer) and is not a SYN; the RFC 5961 ACK range
         * check below still applies.  Nor does it reach further left than one receive
         * buffer: everything we acknowledged the peer has not yet seen was in a window we
         * offered, and no window exceeds rbuf.cap (window_field), so a go-back-N peer's
         * snd_una and snd_nxt are >= rcv_nxt - rbuf.cap; older sequence numbers are not
         * this peer's, and a blind injector must still hit this span, as before the
         * allowance it had to hit the window.  SYN_RECEIVED keeps the strict rule (its
         * window is open, and an ACK there moves the state). */
        uint32_t edge = osvrt_seq_gt(c->rcv_adv, c->rcv_nxt + rcv_space(c)) ? c->rcv_adv
                                                                             : c->rcv_nxt + rcv_space(c);
        if (!(f & OSVRT_TH_SYN) && (f & OSVRT_TH_ACK) && c->state != OSVRT_TCP_SYN_RECEIVED
            && osvrt_seq_le(g->seq, edge) && osvrt_seq_ge(g->seq, c->rcv_nxt - c->rbuf.cap))
            ack_only = 1;
        else
            return text_drop;
    }
    if (f & OSVRT_TH_RST) {
        if (g->seq != c->rcv_nxt) {                          /* RFC 5961 3.2 */
            c->ack_now = 1;
            s->stats.challenge_acks++;
            want_output(s, c);
            return OSVRT_TCP_DROP_RST_INVALID;
        }
        s->stats.rsts_in++;
        if (c->state == OSVRT_TCP_SYN_RECEIVED && c->parent != NONE && !c->on_acceptq) {
            slot_free(s, c);                                 /* back to LISTEN: the child goes */
            return 0;
        }
        if (c->state == OSVRT_TCP_TIME_WAIT || c->state == OSVRT_TCP_LAST_ACK
            || c->state == OSVRT_TCP_CLOSING)
            conn_closed(s, c, 0, 0);
        else
            conn_closed(s, c, -ECONNRESET, OSVRT_TCP_EV_RESET);
        return 0;
    }
    if (f & OSVRT_TH_SYN) {                                  /* RFC 5961 4.2: challenge ACK */
        c->ack_now = 1;
        s->stats.challenge_acks++;
        want_output(s, c);
        return OSVRT_TCP_DROP_BAD_FLAGS;
    }
    if (!(f & OSVRT_TH_ACK))
        return OSVRT_TCP_DROP_BAD_FLAGS;
    int handshake = c->state == OSVRT_TCP_SYN_RECEIVED;
    /* RFC 9293 3.10.7.4 "fifth", SYN-RECEIVED: an ACK outside (SND.UNA, SND.NXT]
     * (ours is the SYN-ACK only) gets a RST <SEQ=SEG.ACK>, and the half-open
     * connection stays (before 5961's check, which would answer with an ACK). */
    if (handshake && (osvrt_seq_le(g->ack, c->snd_una) || osvrt_seq_gt(g->ack, c->snd_max))) {
        reply_rst(s, g);
        return OSVRT_TCP_DROP_BAD_ACK;
    }
    /* RFC 5961 5.2: an ACK must lie in [SND.UNA - MAX.SND.WND, SND.MAX]. */
    if (osvrt_seq_gt(g->ack, c->snd_max)) {
        c->ack_now = 1;
        want_output(s, c);
        return OSVRT_TCP_DROP_BAD_ACK;
    }
    if (osvrt_seq_lt(g->ack, c->snd_una - c->max_snd_wnd - 1)) {
        c->ack_now = 1;
        s->stats.challenge_acks++;
        want_output(s, c);
        return OSVRT_TCP_DROP_BAD_ACK;
    }
    if (handshake) {
        set_state(s, c, OSVRT_TCP_ESTABLISHED);
        c->snd_wnd = (uint32_t)g->wnd << c->snd_wscale;
        c->max_snd_wnd = c->snd_wnd;
        c->snd_wl1 = g->seq;
        c->snd_wl2 = g->ack;
        if (s->cfg.keepalive_ns)
            timer_set(s, c, T_KEEP, now + s->cfg.keepalive_ns);
        if (c->parent != NONE) {
            struct tcb *l = &s->c[c->parent];
            l->nsyn--;
            acceptq_push(s, l, c);
            post(s, l, OSVRT_TCP_EV_ACCEPTABLE);
        } else {
            post(s, c, OSVRT_TCP_EV_ESTABLISHED | OSVRT_TCP_EV_WRITABLE);
        }
    }
    ack_input(s, c, g, now);
    if (handshake)
        rto_after_handshake(s, c);     /* after ack_input: it takes the SYN-ACK's sample */
    int fin_acked = c->fin_queued && osvrt_seq_gt(c->snd_una, c->fin_seq);
    switch (c->state) {
    case OSVRT_TCP_FIN_WAIT_1:
        if (fin_acked) {
            set_state(s, c, OSVRT_TCP_FIN_WAIT_2);
            if (c->orphan)                                   /* nobody will read: do not wait forever */
                timer_set(s, c, T_LINGER, now + s->cfg.time_wait_ns);
        }
        break;
    case OSVRT_TCP_CLOSING:
        if (fin_acked)
            enter_time_wait(s, c, now);
        break;
    case OSVRT_TCP_LAST_ACK:
        if (fin_acked) {
            conn_closed(s, c, 0, 0);
            return 0;
        }
        break;
    case OSVRT_TCP_TIME_WAIT:
        if (f & OSVRT_TH_FIN) {                              /* the FIN again: ACK, restart 2 MSL */
            c->ack_now = 1;
            want_output(s, c);
            timer_set(s, c, T_LINGER, now + s->cfg.time_wait_ns);
        }
        return 0;
    default:
        break;
    }
    if (ack_only)                                            /* its ACK taken; its text refused */
        return text_drop;
    if (c->orphan && g->len && osvrt_seq_gt(g->seq + g->len, c->rcv_nxt)) {
        /* New data for a connection the application closed: nobody will read it.
         * RST, as the kernel does (RFC 9293 3.10.4: CLOSE means "I have no more to
         * send" and, here, "I read no more"; RFC 2525 2.17). */
        reset_and_free(s, c);
        return 0;
    }
    if (recv_open(c) && (g->len || (f & OSVRT_TH_FIN) || c->fin_rcvd_ooo)) {
        data_input(s, c, g, now);
    } else if (g->len) {
        c->ack_now = 1;                                      /* data after the peer's FIN: ACK, drop */
        want_output(s, c);
    }
    return 0;
}

/* ---- public: input ---- */
int32_t osvrt_tcp_demux(struct osvrt_tcp_stack *s, const uint8_t *pkt, uint32_t len, uint32_t flags)
{
    (void)flags;
    struct osvrt_tcp_seg g;
    int r = osvrt_tcp_parse(pkt, len, 1, &g);
    if (r)
        return -r;
    if (g.daddr != s->cfg.addr)
        return -OSVRT_TCP_DROP_NOT_OURS;
    struct tcb *c = lookup(s, g.saddr, g.sport, g.dport);
    if (!c)
        c = lookup(s, 0, 0, g.dport);
    return c ? id_of(s, c) : -OSVRT_TCP_DROP_NO_CONN;
}

static int input_conn(struct osvrt_tcp_stack *s, int32_t id, const uint8_t *pkt, uint32_t len,
                      uint32_t flags, int64_t now)
{
    struct osvrt_tcp_seg g;
    int r = osvrt_tcp_parse(pkt, len, flags & OSVRT_TCP_IN_CSUM_OK, &g);
    if (r)
        return r;
    if (g.daddr != s->cfg.addr)
        return OSVRT_TCP_DROP_NOT_OURS;
    uint8_t f = g.flags;
    if ((f & OSVRT_TH_SYN) && (f & (OSVRT_TH_FIN | OSVRT_TH_RST)))
        return OSVRT_TCP_DROP_BAD_FLAGS;
    struct tcb *c = NULL;
    if (id >= 0 && ((uint32_t)id & SLOT_MASK) < s->nslots) {
        c = &s->c[(uint32_t)id & SLOT_MASK];
        if (!c->used || (c->gen & GEN_MASK) != ((uint32_t)id >> SLOT_BITS) || c->lport != g.dport
            || !((c->raddr == g.saddr && c->rport == g.sport) || (c->state == OSVRT_TCP_LISTEN)))
            c = NULL;
        /* a listener id for a segment of an existing child: look up the child */
        if (c && c->state == OSVRT_TCP_LISTEN)
            c = NULL;
    }
    if (!c)
        c = lookup(s, g.saddr, g.sport, g.dport);
    if (c && c->state == OSVRT_TCP_TIME_WAIT && c->orphan
        && (f & (OSVRT_TH_SYN | OSVRT_TH_ACK | OSVRT_TH_RST)) == OSVRT_TH_SYN
        && osvrt_seq_gt(g.seq, c->rcv_nxt)) {
        /* A new incarnation of the 4-tuple: its SYN lies beyond anything of the old
         * one, so no old duplicate can be mistaken for new data (RFC 1122 4.2.2.13).
         * TIME_WAIT ends and the listener takes the SYN. */
        slot_free(s, c);
        c = NULL;
    }
    if (!c) {
        struct tcb *l = lookup(s, 0, 0, g.dport);
        if (!l) {
            reply_rst(s, &g);
            return OSVRT_TCP_DROP_NO_CONN;
        }
        r = listen_input(s, l, &g, now);
        if (r == 0)
            s->stats.segs_in++;
        return r;
    }
    c->last_rcv = now;
    if (c->t[T_KEEP] != INT64_MAX) {
        c->keep_sent = 0;
        timer_set(s, c, T_KEEP, now + s->cfg.keepalive_ns);
    }
    if (c->state == OSVRT_TCP_SYN_SENT)
        r = syn_sent_input(s, c, &g, now);
    else if (c->state == OSVRT_TCP_CLOSED) {
        reply_rst(s, &g);
        r = OSVRT_TCP_DROP_NO_CONN;
    } else
        r = sync_input(s, c, &g, now);
    if (r == 0)
        s->stats.segs_in++;
    return r;
}

int osvrt_tcp_input_conn(struct osvrt_tcp_stack *s, int32_t id, const uint8_t *pkt, uint32_t len,
                         uint32_t flags, int64_t now_ns)
{
    int r = input_conn(s, id, pkt, len, flags, now_ns);
    if (r)
        s->stats.drops[r]++;
    return r;
}

int osvrt_tcp_input(struct osvrt_tcp_stack *s, const uint8_t *pkt, uint32_t len, uint32_t flags,
                    int64_t now_ns)
{
    int32_t id = osvrt_tcp_demux(s, pkt, len, flags);
    return osvrt_tcp_input_conn(s, id < 0 ? -1 : id, pkt, len, flags, now_ns);
}

/* ---- public: output ---- */
int32_t osvrt_tcp_output(struct osvrt_tcp_stack *s, uint8_t *buf, uint32_t cap, int64_t now_ns)
{
    if (cap < OSVRT_TCP_MIN_OUT)
        return -EINVAL;
    if (s->ctl_len) {
        struct osvrt_tcp_seg *g = &s->ctl[s->ctl_head].g;
        s->ctl_head = (s->ctl_head + 1) % CTL_RING;
        s->ctl_len--;
        s->stats.segs_out++;
        return (int32_t)osvrt_tcp_build(buf, g, NULL, 0, s->ip_id++);
    }
    while (s->outq_head != NONE) {
        struct tcb *c = &s->c[s->outq_head];
        outq_unlink(s, c);
        uint32_t n = conn_output(s, c, buf, cap, now_ns);
        timers_update(s, c);            /* emit() may have cleared the delayed ACK */
        if (n) {
            want_output(s, c);          /* maybe more: back at the tail (round robin) */
            return (int32_t)n;
        }
    }
    return 0;
}

int32_t osvrt_tcp_output_many(struct osvrt_tcp_stack *s, uint8_t *buf, uint32_t stride,
                              uint32_t *lens, uint32_t max, int64_t now_ns)
{
    if (stride < OSVRT_TCP_MIN_OUT)
        return -EINVAL;
    uint32_t n = 0;
    for (; n < max; n++) {
        int32_t len = osvrt_tcp_output(s, buf + (size_t)n * stride, stride, now_ns);
        if (len <= 0)
            break;
        lens[n] = (uint32_t)len;
    }
    return (int32_t)n;
}

uint32_t osvrt_tcp_input_many(struct osvrt_tcp_stack *s, const uint8_t *base, const uint32_t *offs,
                              const uint32_t *lens, uint32_t n, uint32_t flags, int64_t now_ns,
                              uint8_t *results)
{
    uint32_t taken = 0;
    for (uint32_t i = 0; i < n; i++) {
        int r = osvrt_tcp_input(s, base + offs[i], lens[i], flags, now_ns);
        taken += r == 0;
        if (results)
            results[i] = (uint8_t)r;
    }
    return taken;
}

int osvrt_tcp_output_pending(const struct osvrt_tcp_stack *s)
{
    return s->ctl_len || s->outq_head != NONE;
}

/* ---- public: timers ---- */
int64_t osvrt_tcp_next_deadline(const struct osvrt_tcp_stack *s)
{
    return s->nheap ? s->c[s->heap[0]].deadline : INT64_MAX;
}

/* The retransmission timer fired (RFC 6298 5.4-5.7, RFC 5681 3.1 eq. 4). */
static void rexmt_fire(struct osvrt_tcp_stack *s, struct tcb *c)
{
    uint32_t limit = (c->state == OSVRT_TCP_SYN_SENT || c->state == OSVRT_TCP_SYN_RECEIVED)
                         ? s->cfg.syn_retries : s->cfg.max_retries;
    if (c->retries >= limit) {
        s->stats.timeouts++;
        if (c->state != OSVRT_TCP_SYN_SENT && c->state != OSVRT_TCP_SYN_RECEIVED)
            ctl_push(s, c->laddr, c->raddr, c->lport, c->rport, ack_seq(c), 0, OSVRT_TH_RST);
        conn_closed(s, c, -ETIMEDOUT, OSVRT_TCP_EV_ERROR);
        return;
    }
    c->retries++;
    s->stats.rto_expiries++;
    c->rto = c->rto * 2 > s->cfg.rto_max_ns ? s->cfg.rto_max_ns : c->rto * 2;
    if (c->snd_wnd == 0 && can_send_data(c)) {
        c->probe = 1;                   /* a zero window, not loss: probe, keep cwnd */
    } else {
        uint32_t flight = c->snd_max - c->snd_una;
        c->ssthresh = flight / 2 > 2 * c->snd_mss ? flight / 2 : 2 * c->snd_mss;
        c->cwnd = c->snd_mss;           /* the loss window */
        c->in_recovery = 0;
        c->recover = c->snd_max;
        c->dupacks = 0;
    }
    c->rtt_active = 0;                  /* Karn */
    c->snd_nxt = c->snd_una;            /* go back N */
    if (c->state == OSVRT_TCP_SYN_SENT || c->state == OSVRT_TCP_SYN_RECEIVED) {
        c->snd_nxt = c->iss;
        c->syn_timed_out = 1;
    }
    c->t[T_REXMT] = INT64_MAX;
    want_output(s, c);
}

static void linger_fire(struct osvrt_tcp_stack *s, struct tcb *c)
{
    if (c->state == OSVRT_TCP_TIME_WAIT)
        conn_closed(s, c, 0, 0);
    else if (c->orphan)                 /* FIN_WAIT_2 orphan whose peer never closes */
        slot_free(s, c);
}

static void keep_fire(struct osvrt_tcp_stack *s, struct tcb *c, int64_t now)
{
    if (c->keep_sent >= s->cfg.keepalive_probes) {
        s->stats.timeouts++;
        ctl_push(s, c->laddr, c->raddr, c->lport, c->rport, ack_seq(c), 0, OSVRT_TH_RST);
        conn_closed(s, c, -ETIMEDOUT, OSVRT_TCP_EV_ERROR);
        return;
    }
    c->keep_sent++;
    c->keep_probe = 1;
    timer_set(s, c, T_KEEP, now + s->cfg.keepalive_ns / 8);
    want_output(s, c);
}

int osvrt_tcp_on_timer(struct osvrt_tcp_stack *s, int64_t now_ns)
{
    int fired = 0;
    while (s->nheap && s->c[s->heap[0]].deadline <= now_ns) {
        struct tcb *c = &s->c[s->heap[0]];
        uint32_t slot = slot_of(s, c);
        uint16_t gen = c->gen;
        for (int i = 0; i < NTIMERS && c->used && c->gen == gen; i++) {
            if (c->t[i] > now_ns)
                continue;
            c->t[i] = INT64_MAX;
            fired++;
            switch (i) {
            case T_REXMT:
                rexmt_fire(s, c);
                break;
            case T_DELACK:
                c->ack_now = 1;
                s->stats.delayed_acks++;
                want_output(s, c);
                break;
            case T_PERSIST:
                c->probe = 1;
                timer_set(s, c, T_PERSIST, INT64_MAX);
                want_output(s, c);
                break;
            case T_KEEP:
                keep_fire(s, c, now_ns);
                break;
            case T_LINGER:
                linger_fire(s, c);
                break;
            }
        }
        if (s->c[slot].used && s->c[slot].gen == gen)
            timers_update(s, &s->c[slot]);
    }
    return fired;
}

/* ---- public: events ---- */
uint32_t osvrt_tcp_events(struct osvrt_tcp_stack *s, struct osvrt_tcp_event *out, uint32_t max)
{
    uint32_t n = 0;
    while (n < max && s->evq_head != NONE) {
        struct tcb *c = &s->c[s->evq_head];
        out[n].id = id_of(s, c);
        out[n].flags = c->ev;
        n++;
        evq_unlink(s, c);
    }
    return n;
}

/* ---- public: application calls ---- */
int32_t osvrt_tcp_listen(struct osvrt_tcp_stack *s, uint32_t port, uint32_t backlog)
{
    if (port == 0 || port > 65535 || backlog > 65535)
        return -EINVAL;
    if (lookup(s, 0, 0, (uint16_t)port))
        return -EADDRINUSE;
    struct tcb *l = slot_alloc(s);
    if (!l)
        return -ENOMEM;
    l->laddr = s->cfg.addr;
    l->lport = (uint16_t)port;
    l->backlog = backlog ? backlog : 128;
    hash_insert(s, l);
    set_state(s, l, OSVRT_TCP_LISTEN);
    return id_of(s, l);
}

int32_t osvrt_tcp_accept(struct osvrt_tcp_stack *s, int32_t lid, uint32_t *raddr, uint16_t *rport)
{
    struct tcb *l = by_id(s, lid);
    if (!l)
        return -EBADF;
    if (l->state != OSVRT_TCP_LISTEN)
        return -EINVAL;
    if (l->acc_head == NONE)
        return -EAGAIN;
    struct tcb *c = &s->c[l->acc_head];
    acceptq_remove(s, l, c);
    c->parent = NONE;
    s->stats.accepts++;
    if (raddr)
        *raddr = c->raddr;
    if (rport)
        *rport = c->rport;
    /* What happened before accept() was not posted: post it now. */
    uint32_t ev = OSVRT_TCP_EV_ESTABLISHED | OSVRT_TCP_EV_WRITABLE;
    if (c->rbuf.len || c->eof || c->err)
        ev |= OSVRT_TCP_EV_READABLE;
    if (c->state == OSVRT_TCP_CLOSED)
        ev |= OSVRT_TCP_EV_CLOSED | (c->err == -ECONNRESET ? OSVRT_TCP_EV_RESET : 0);
    post(s, c, ev);
    return id_of(s, c);
}

int32_t osvrt_tcp_connect(struct osvrt_tcp_stack *s, uint32_t raddr, uint32_t rport, uint32_t lport,
                          int64_t now_ns)
{
    if (raddr == 0 || rport == 0 || rport > 65535 || lport > 65535)
        return -EINVAL;
    if (lport == 0) {                   /* ephemeral: a keyed start, then linear (RFC 6056 alg. 3) */
        uint32_t k[2] = {raddr, rport};
        uint32_t start = (uint32_t)osvrt_siphash(&s->hash_key, k, sizeof k) + s->port_seq++;
        for (uint32_t i = 0; i < 16384 && !lport; i++) {
            uint16_t p = (uint16_t)(49152 + (start + i) % 16384);
            if (!lookup(s, raddr, (uint16_t)rport, p) && !lookup(s, 0, 0, p))
                lport = p;
        }
        if (!lport)
            return -EADDRINUSE;
    } else if (lookup(s, raddr, (uint16_t)rport, (uint16_t)lport)) {
        return -EADDRINUSE;
    }
    struct tcb *c = slot_alloc(s);
    if (!c)
        return -ENOMEM;
    c->laddr = s->cfg.addr;
    c->lport = (uint16_t)lport;
    c->raddr = raddr;
    c->rport = (uint16_t)rport;
    if (bufs_alloc(s, c)) {
        slot_free(s, c);
        return -ENOMEM;
    }
    hash_insert(s, c);
    conn_init(s, c, now_ns);
    c->cwnd = c->snd_mss;
    set_state(s, c, OSVRT_TCP_SYN_SENT);
    s->stats.active_opens++;
    want_output(s, c);
    return id_of(s, c);
}

static int64_t conn_error(const struct tcb *c)
{
    return c->err ? c->err : -ENOTCONN;
}

int64_t osvrt_tcp_send(struct osvrt_tcp_stack *s, int32_t id, const uint8_t *buf, uint64_t len,
                       int64_t now_ns)
{
    (void)now_ns;
    struct tcb *c = by_id(s, id);
    if (!c)
        return -EBADF;
    if (c->err)
        return c->err;
    if (c->state == OSVRT_TCP_LISTEN)
        return -EINVAL;
    if (c->fin_queued)
        return -EPIPE;
    if (c->state != OSVRT_TCP_ESTABLISHED && c->state != OSVRT_TCP_CLOSE_WAIT)
        return conn_error(c);
    if (len == 0)
        return 0;
    uint32_t room = c->sbuf.cap - c->sbuf.len;
    if (room == 0) {
        c->want_writable = 1;
        return -EAGAIN;
    }
    uint32_t n = len < room ? (uint32_t)len : room;
    ring_copy_in(&c->sbuf, c->sbuf.len, buf, n);
    c->sbuf.len += n;
    if (n < len)
        c->want_writable = 1;
    want_output(s, c);
    return n;
}

int64_t osvrt_tcp_recv(struct osvrt_tcp_stack *s, int32_t id, uint8_t *buf, uint64_t cap,
                       int64_t now_ns)
{
    (void)now_ns;
    struct tcb *c = by_id(s, id);
    if (!c)
        return -EBADF;
    if (c->state == OSVRT_TCP_LISTEN)
        return -EINVAL;
    if (c->rbuf.len == 0) {
        if (c->err)
            return c->err;
        if (c->eof)
            return 0;
        if (c->state == OSVRT_TCP_SYN_SENT || c->state == OSVRT_TCP_SYN_RECEIVED
            || c->state == OSVRT_TCP_CLOSED)
            return -ENOTCONN;
        return -EAGAIN;
    }
    if (cap == 0)
        return 0;
    uint32_t n = cap < c->rbuf.len ? (uint32_t)cap : c->rbuf.len;
    /* In-order bytes start at rbuf.head; out-of-order ones sit past rbuf.len and move with head. */
    ring_copy_out(&c->rbuf, 0, buf, n);
    c->rbuf.head = (c->rbuf.head + n) % c->rbuf.cap;
    c->rbuf.len -= n;
    /* Window update (receiver SWS avoidance, RFC 9293 3.8.6.2.2): when the
     * edge we could offer moves past the one offered by min(buffer/2, MSS),
     * and only while the window offered is under half the buffer (Linux's
     * rule): above that the peer is not held back, and the new edge rides on
     * our next segment.  Else a request-reply connection sent a pure ACK
     * ahead of every ~MSS/request-size-th reply (a packet and a sendmmsg). */
    uint32_t edge = c->rcv_nxt + rcv_space(c);
    if (recv_open(c) && osvrt_seq_ge(edge, c->rcv_adv + sws_step(s, c))
        && offered_window(c) < c->rbuf.cap / 2) {
        c->ack_now = 1;
        want_output(s, c);
    }
    return n;
}

static void queue_fin(struct osvrt_tcp_stack *s, struct tcb *c)
{
    c->fin_queued = 1;
    c->fin_seq = c->snd_una + c->sbuf.len;
    set_state(s, c, c->state == OSVRT_TCP_CLOSE_WAIT ? OSVRT_TCP_LAST_ACK : OSVRT_TCP_FIN_WAIT_1);
    want_output(s, c);
}

int osvrt_tcp_shutdown_write(struct osvrt_tcp_stack *s, int32_t id, int64_t now_ns)
{
    (void)now_ns;
    struct tcb *c = by_id(s, id);
    if (!c)
        return -EBADF;
    if (c->fin_queued)
        return 0;
    if (c->state != OSVRT_TCP_ESTABLISHED && c->state != OSVRT_TCP_CLOSE_WAIT)
        return c->err ? c->err : -ENOTCONN;
    queue_fin(s, c);
    return 0;
}

/* Does the peer know the connection (so that dropping it owes a RST)? */
static int needs_rst(const struct tcb *c)
{
    return c->state != OSVRT_TCP_CLOSED && c->state != OSVRT_TCP_LISTEN
        && c->state != OSVRT_TCP_SYN_SENT && c->state != OSVRT_TCP_TIME_WAIT;
}

/* RST now, if the peer knows the connection; then free.  Every RST of ours
 * is stamped as a pure ACK is (ack_seq): a peer takes a RST at once only at
 * exactly its RCV.NXT and drops one left of its window without a word (RFC
 * 5961 3.2), and after go-back-N snd_nxt lies left of RCV.NXT whenever the
 * peer got the data, so a RST stamped snd_nxt would leave it open. */
static void reset_and_free(struct osvrt_tcp_stack *s, struct tcb *c)
{
    if (needs_rst(c)) {
        ctl_push(s, c->laddr, c->raddr, c->lport, c->rport, ack_seq(c), c->rcv_nxt,
                 OSVRT_TH_RST | OSVRT_TH_ACK);
        s->stats.rsts_out++;
    }
    slot_free(s, c);
}

static void close_listener(struct osvrt_tcp_stack *s, struct tcb *l)
{
    for (uint32_t i = 0; i < s->nslots; i++) {
        struct tcb *c = &s->c[i];
        if (c->used && c->parent == slot_of(s, l))
            reset_and_free(s, c);
    }
    slot_free(s, l);
}

int osvrt_tcp_abort(struct osvrt_tcp_stack *s, int32_t id, int64_t now_ns)
{
    (void)now_ns;
    struct tcb *c = by_id(s, id);
    if (!c)
        return -EBADF;
    if (c->state == OSVRT_TCP_LISTEN)
        close_listener(s, c);
    else
        reset_and_free(s, c);
    return 0;
}

int32_t osvrt_tcp_abort_all(struct osvrt_tcp_stack *s, int64_t now_ns)
{
    (void)now_ns;
    int32_t left = 0;
    /* Connections first, listeners after: slot_free of an unaccepted child
     * updates its listener's queue, so the listener must still be there. */
    for (uint32_t i = 0; i < s->nslots; i++) {
        struct tcb *c = &s->c[i];
        if (!c->used || c->state == OSVRT_TCP_LISTEN)
            continue;
        if (needs_rst(c) && s->ctl_len == CTL_RING)
            left++;                     /* no room for its RST: the next call, after output() */
        else
            reset_and_free(s, c);
    }
    if (left)
        return left;
    for (uint32_t i = 0; i < s->nslots; i++)
        if (s->c[i].used)               /* only listeners are left, each with no child */
            slot_free(s, &s->c[i]);
    return 0;
}

int osvrt_tcp_close(struct osvrt_tcp_stack *s, int32_t id, int64_t now_ns)
{
    struct tcb *c = by_id(s, id);
    if (!c)
        return -EBADF;
    switch (c->state) {
    case OSVRT_TCP_LISTEN:
        close_listener(s, c);
        return 0;
    case OSVRT_TCP_SYN_RECEIVED:        /* simultaneous open, not finished */
        reset_and_free(s, c);
        return 0;
    case OSVRT_TCP_CLOSED:
    case OSVRT_TCP_SYN_SENT:
    case OSVRT_TCP_TIME_WAIT:
        if (c->state == OSVRT_TCP_TIME_WAIT) {
            c->orphan = 1;              /* TIME_WAIT keeps the 4-tuple until 2 MSL */
            evq_unlink(s, c);
            return 0;
        }
        slot_free(s, c);
        return 0;
    default:
        break;
    }
    if (c->rbuf.len) {                  /* unread data: RST, not FIN (RFC 9293 3.10.4) */
        return osvrt_tcp_abort(s, id, now_ns);
    }
    if (!c->fin_queued && (c->state == OSVRT_TCP_ESTABLISHED || c->state == OSVRT_TCP_CLOSE_WAIT))
        queue_fin(s, c);
    c->orphan = 1;
    evq_unlink(s, c);
    if (c->state == OSVRT_TCP_FIN_WAIT_2)
        timer_set(s, c, T_LINGER, now_ns + s->cfg.time_wait_ns);
    return 0;
}

/* ---- public: queries ---- */
int osvrt_tcp_state(const struct osvrt_tcp_stack *s, int32_t id)
{
    const struct tcb *c = by_id(s, id);
    return c ? c->state : -EBADF;
}

int osvrt_tcp_conn_info(const struct osvrt_tcp_stack *s, int32_t id, struct osvrt_tcp_conn_info *o)
{
    const struct tcb *c = by_id(s, id);
    if (!c)
        return -EBADF;
    memset(o, 0, sizeof *o);
    o->state = c->state;
    o->local_addr = c->laddr;
    o->remote_addr = c->raddr;
    o->local_port = c->lport;
    o->remote_port = c->rport;
    o->error = c->err;
    o->readable = c->rbuf.len;
    o->send_space = c->sbuf.cap - c->sbuf.len;
    uint32_t sent_data = c->snd_max - c->snd_una;
    o->in_flight = sent_data;
    o->unsent = c->sbuf.len > sent_data ? c->sbuf.len - sent_data : 0;
    o->snd_mss = c->snd_mss;
    o->snd_wnd = c->snd_wnd;
    o->rcv_wnd = c->rbuf.cap ? rcv_space(c) : 0;
    o->cwnd = c->cwnd;
    o->ssthresh = c->ssthresh;
    o->snd_wscale = c->ws_ok ? c->snd_wscale : 0;
    o->rcv_wscale = c->ws_ok ? c->rcv_wscale : 0;
    o->eof = c->eof;
    o->srtt_ns = c->srtt;
    o->rttvar_ns = c->rttvar;
    o->rto_ns = c->rto;
    o->retransmits = c->retransmits;
    return 0;
}

void osvrt_tcp_get_stats(const struct osvrt_tcp_stack *s, struct osvrt_tcp_stats *out)
{
    *out = s->stats;
}

static const char *const state_names[OSVRT_TCP_NSTATES] = {
    "CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
    "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT",
};

static const char *const drop_names[OSVRT_TCP_NDROPS] = {
    "none", "not_tcp", "bad_ip", "fragment", "bad_ip_checksum", "not_ours", "truncated_tcp",
    "bad_data_offset", "bad_options", "bad_checksum", "bad_flags", "no_connection",
    "backlog_full", "out_of_window", "bad_ack", "rst_invalid", "no_room", "stale_id",
};

const char *osvrt_tcp_state_name(int st)
{
    return st >= 0 && st < OSVRT_TCP_NSTATES ? state_names[st] : NULL;
}

const char *osvrt_tcp_drop_name(int r)
{
    return r >= 0 && r < OSVRT_TCP_NDROPS ? drop_names[r] : NULL;
}

/* ---- life cycle ---- */
void osvrt_tcp_config_init(struct osvrt_tcp_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
}

struct osvrt_tcp_stack *osvrt_tcp_new(const struct osvrt_tcp_config *cfg, int *err)
{
    struct osvrt_tcp_config c = *cfg;
    *err = -EINVAL;
    if (!c.mss)
        c.mss = 1460;
    if (!c.sndbuf)
        c.sndbuf = 256 << 10;
    if (!c.rcvbuf)
        c.rcvbuf = 256 << 10;
    if (!c.max_conns)
        c.max_conns = 4096;
    if (!c.syn_retries)
        c.syn_retries = 5;
    if (!c.max_retries)
        c.max_retries = 12;
    if (!c.keepalive_probes)
        c.keepalive_probes = 9;
    if (!c.rto_initial_ns)
        c.rto_initial_ns = NS_S;
    if (!c.rto_min_ns)
        c.rto_min_ns = 200 * NS_MS;
    if (!c.rto_max_ns)
        c.rto_max_ns = 60 * NS_S;
    if (!c.delack_ns)
        c.delack_ns = 40 * NS_MS;
    if (c.delack_ns > 200 * NS_MS)
        c.delack_ns = 200 * NS_MS;
    if (!c.time_wait_ns)
        c.time_wait_ns = 60 * NS_S;
    if (c.mss < 64 || c.mss > 65495 || c.sndbuf < 2 * c.mss || c.rcvbuf < 2 * c.mss
        || c.sndbuf > (1u << 30) || c.rcvbuf > (1u << 30) || c.max_conns > OSVRT_TCP_MAX_CONNS
        || c.rto_initial_ns < 0 || c.rto_min_ns < 0 || c.rto_max_ns < c.rto_min_ns
        || c.delack_ns < 0 || c.time_wait_ns < 0 || c.keepalive_ns < 0 || c.addr == 0)
        return NULL;
    *err = -ENOMEM;
    struct osvrt_tcp_stack *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cfg = c;
    s->nslots = c.max_conns;
    uint32_t nb = 16;
    while (nb < 2 * c.max_conns)
        nb <<= 1;
    s->bmask = nb - 1;
    s->c = calloc(c.max_conns, sizeof *s->c);
    s->buckets = malloc(nb * sizeof *s->buckets);
    s->heap = malloc(c.max_conns * sizeof *s->heap);
    if (!s->c || !s->buckets || !s->heap) {
        osvrt_tcp_free(s);
        return NULL;
    }
    memset(s->buckets, 0xff, nb * sizeof *s->buckets);
    for (uint32_t i = 0; i < c.max_conns; i++)
        s->c[i].hnext = i + 1 < c.max_conns ? i + 1 : NONE;
    s->free_head = 0;
    s->outq_head = s->outq_tail = s->evq_head = s->evq_tail = NONE;
    s->isn_key.k0 = c.isn_key[0];
    s->isn_key.k1 = c.isn_key[1];
    /* A second key for the table, derived so that it says nothing about the ISN key. */
    s->hash_key.k0 = osvrt_siphash(&s->isn_key, "osvrt-tcp-table0", 16);
    s->hash_key.k1 = osvrt_siphash(&s->isn_key, "osvrt-tcp-table1", 16);
    while (s->rcv_wscale < MAX_WSCALE && (c.rcvbuf >> s->rcv_wscale) > 65535)
        s->rcv_wscale++;
    *err = 0;
    return s;
}

void osvrt_tcp_free(struct osvrt_tcp_stack *s)
{
    if (!s)
        return;
    if (s->c)
        for (uint32_t i = 0; i < s->nslots; i++)
            if (s->c[i].used) {
                free(s->c[i].sbuf.buf);
                free(s->c[i].rbuf.buf);
            }
    free(s->c);
    free(s->buckets);
    free(s->heap);
    free(s);
}

/* ---- invariants (tcp_debug.h) ---- */
#include "tcp_debug.h"

#define INV(cond)                                                                \
    do {                                                                         \
        if (!(cond))                                                             \
            return __LINE__;                                                     \
    } while (0)

static int tcb_invariants(const struct osvrt_tcp_stack *s, const struct tcb *c)
{
    INV(c->state < OSVRT_TCP_NSTATES);
    INV(c->sbuf.len <= c->sbuf.cap && c->rbuf.len <= c->rbuf.cap);
    if (c->state == OSVRT_TCP_LISTEN) {
        uint32_t n = 0;
        for (uint32_t i = c->acc_head; i != NONE; i = s->c[i].acc_next, n++)
            INV(n < s->nslots && s->c[i].used && s->c[i].parent == slot_of(s, c));
        INV(n == c->nacc);
        return 0;
    }
    if (c->state == OSVRT_TCP_CLOSED && !c->lport)
        return 0;
    INV(osvrt_seq_le(c->snd_una, c->snd_nxt) && osvrt_seq_le(c->snd_nxt, c->snd_max));
    int synced = c->state != OSVRT_TCP_SYN_SENT && c->state != OSVRT_TCP_SYN_RECEIVED;
    if (synced && c->state != OSVRT_TCP_CLOSED) {
        /* what was sent but not acknowledged is still in the buffer (+ FIN) */
        INV(c->snd_max - c->snd_una <= c->sbuf.len + (c->fin_queued ? 1u : 0u));
        if (c->fin_queued && osvrt_seq_le(c->snd_una, c->fin_seq))
            INV(c->fin_seq == c->snd_una + c->sbuf.len);
    }
    INV(c->nooo <= OSVRT_TCP_MAX_HOLES);
    for (uint32_t i = 0; i < c->nooo; i++) {
        const struct range *r = &c->ooo[i];
        INV(osvrt_seq_gt(r->start, c->rcv_nxt) && osvrt_seq_lt(r->start, r->end));
        INV(r->end - c->rcv_nxt <= c->rbuf.cap - c->rbuf.len);   /* held data fits the buffer */
    }
    INV(c->cwnd == 0 || c->cwnd >= c->snd_mss || c->state == OSVRT_TCP_SYN_SENT);
    int64_t d = INT64_MAX;
    for (int i = 0; i < NTIMERS; i++)
        d = c->t[i] < d ? c->t[i] : d;
    INV(d == c->deadline);
    INV((c->heap_pos == NONE) == (d == INT64_MAX));
    return 0;
}

int osvrt_tcp_invariants(const struct osvrt_tcp_stack *s)
{
    uint64_t per_state[OSVRT_TCP_NSTATES] = {0};
    uint32_t used = 0;
    for (uint32_t i = 0; i < s->nslots; i++) {
        const struct tcb *c = &s->c[i];
        if (!c->used)
            continue;
        used++;
        per_state[c->state]++;
        int r = tcb_invariants(s, c);
        if (r)
            return r;
        if (c->hashed)
            INV(lookup(s, c->raddr, c->rport, c->lport) == c);
        if (c->heap_pos != NONE)
            INV(c->heap_pos < s->nheap && s->heap[c->heap_pos] == i);
    }
    for (int st = 0; st < OSVRT_TCP_NSTATES; st++)
        INV(per_state[st] == s->stats.conns[st]);
    for (uint32_t i = 1; i < s->nheap; i++)
        INV(s->c[s->heap[(i - 1) / 2]].deadline <= s->c[s->heap[i]].deadline);
    INV(s->nheap <= used);
    uint32_t n = 0;
    for (uint32_t i = s->outq_head; i != NONE; i = s->c[i].outq_next, n++)
        INV(n < s->nslots && s->c[i].used && s->c[i].on_outq);
    n = 0;
    for (uint32_t i = s->evq_head; i != NONE; i = s->c[i].evq_next, n++)
        INV(n < s->nslots && s->c[i].used && s->c[i].on_evq);
    return 0;
}
