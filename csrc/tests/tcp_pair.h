/* tcp_pair.h - two TCP stacks back to back in memory, for the TCP tests:
 * a fake clock, a wire with a delay, and a filter that may drop, duplicate
 * or delay (reorder) each packet.  Single-threaded and deterministic: the
 * random choices come from a seeded xorshift. */
#ifndef OSVRT_TEST_TCP_PAIR_H
#define OSVRT_TEST_TCP_PAIR_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tcp.h"
#include "tcp_debug.h"
#include "tcp_seg.h"

#define ADDR_C 0xC6120001u          /* 198.18.0.1: the client */
#define ADDR_S 0xC6120002u          /* 198.18.0.2: the server */
#define MS 1000000ll
#define PAIR_QMAX 4096

struct pkt {
    int64_t at;                     /* delivery time */
    int to;                         /* 0: client, 1: server */
    uint32_t len;
    uint8_t data[2048];
};

struct pair;
/* Called for every packet leaving side `from`: return how many copies to
 * deliver (0: drop, 2: duplicate) and may add to *extra_delay (reorder). */
typedef int (*pair_filter)(struct pair *p, int from, const uint8_t *pkt, uint32_t len,
                           int64_t *extra_delay);

struct pair {
    struct osvrt_tcp_stack *st[2];
    int64_t now, delay;
    struct pkt *q;                  /* PAIR_QMAX in flight, unsorted */
    uint32_t nq;
    pair_filter filter;
    void *arg;
    uint64_t rng;
    uint64_t sent[2];               /* packets produced by each side */
    int32_t lid[65536 / 1024];      /* pair_connect's listeners, by port / 1024 ... */
    uint16_t lport[65536 / 1024];   /* ... and their ports (0: none) */
};

static inline uint64_t pair_rand(struct pair *p)
{
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return p->rng;
}

static inline struct osvrt_tcp_stack *pair_stack(uint32_t addr, const struct osvrt_tcp_config *base)
{
    struct osvrt_tcp_config cfg;
    if (base)
        cfg = *base;
    else
        osvrt_tcp_config_init(&cfg);
    cfg.addr = addr;
    if (!cfg.max_conns)
        cfg.max_conns = 64;         /* small: the invariant check after every step walks every slot */
    cfg.isn_key[0] = 0x0123456789abcdefull ^ addr;
    cfg.isn_key[1] = 0xfedcba9876543210ull;
    int err = 0;
    struct osvrt_tcp_stack *s = osvrt_tcp_new(&cfg, &err);
    CHECK_MSG(s, "osvrt_tcp_new: %d", err);
    return s;
}

static inline void pair_init(struct pair *p, const struct osvrt_tcp_config *ccfg,
                             const struct osvrt_tcp_config *scfg)
{
    memset(p, 0, sizeof *p);
    p->st[0] = pair_stack(ADDR_C, ccfg);
    p->st[1] = pair_stack(ADDR_S, scfg);
    p->now = 1000 * MS;
    p->delay = 1 * MS;
    p->q = calloc(PAIR_QMAX, sizeof *p->q);
    CHECK(p->q);
    p->rng = 0x9e3779b97f4a7c15ull;
}

static inline void pair_free(struct pair *p)
{
    osvrt_tcp_free(p->st[0]);
    osvrt_tcp_free(p->st[1]);
    free(p->q);
}

static inline void pair_put(struct pair *p, int to, const uint8_t *data, uint32_t len, int64_t at)
{
    CHECK(p->nq < PAIR_QMAX);
    CHECK(len <= sizeof p->q[0].data);
    struct pkt *k = &p->q[p->nq++];
    k->at = at;
    k->to = to;
    k->len = len;
    memcpy(k->data, data, len);
}

/* Drain both stacks' output onto the wire. */
static inline int pair_flush(struct pair *p)
{
    int moved = 0;
    uint8_t buf[2048];
    for (int side = 0; side < 2; side++) {
        int32_t n;
        while ((n = osvrt_tcp_output(p->st[side], buf, sizeof buf, p->now)) > 0) {
            moved = 1;
            p->sent[side]++;
            int64_t extra = 0;
            int copies = p->filter ? p->filter(p, side, buf, (uint32_t)n, &extra) : 1;
            for (int i = 0; i < copies; i++)
                pair_put(p, !side, buf, (uint32_t)n, p->now + p->delay + extra + i);
        }
        CHECK(n == 0);
    }
    return moved;
}

/* One step: flush, deliver what is due (earliest first), else advance the
 * clock to the next packet or timer.  Returns 0 when nothing will ever
 * happen again (no packet, no timer). */
static inline int pair_step(struct pair *p)
{
    for (int side = 0; side < 2; side++) {   /* the engine's invariants hold between calls */
        int line = osvrt_tcp_invariants(p->st[side]);
        CHECK_MSG(line == 0, "side %d: invariant at tcp.c:%d broken", side, line);
    }
    int moved = pair_flush(p);
    for (;;) {
        uint32_t best = UINT32_MAX;
        for (uint32_t i = 0; i < p->nq; i++)
            if (p->q[i].at <= p->now && (best == UINT32_MAX || p->q[i].at < p->q[best].at))
                best = i;
        if (best == UINT32_MAX)
            break;
        struct pkt k = p->q[best];
        p->q[best] = p->q[--p->nq];
        osvrt_tcp_input(p->st[k.to], k.data, k.len, 0, p->now);
        moved = 1;
    }
    if (moved)
        return 1;
    int64_t next = INT64_MAX;
    for (uint32_t i = 0; i < p->nq; i++)
        if (p->q[i].at < next)
            next = p->q[i].at;
    for (int side = 0; side < 2; side++) {
        int64_t d = osvrt_tcp_next_deadline(p->st[side]);
        if (d < next)
            next = d;
    }
    if (next == INT64_MAX)
        return 0;
    if (next > p->now)
        p->now = next;
    osvrt_tcp_on_timer(p->st[0], p->now);
    osvrt_tcp_on_timer(p->st[1], p->now);
    return 1;
}

/* Collect events of one side: OR of flags per id (up to 64 ids tracked). */
struct evlog {
    int32_t id[64];
    uint32_t flags[64];
    uint32_t n;
};

static inline void pair_events(struct pair *p, int side, struct evlog *log)
{
    struct osvrt_tcp_event ev[32];
    uint32_t n;
    while ((n = osvrt_tcp_events(p->st[side], ev, 32)) > 0) {
        for (uint32_t i = 0; i < n; i++) {
            uint32_t j = 0;
            while (j < log->n && log->id[j] != ev[i].id)
                j++;
            if (j == log->n) {
                CHECK(log->n < 64);
                log->id[log->n++] = ev[i].id;
                log->flags[j] = 0;
            }
            log->flags[j] |= ev[i].flags;
        }
    }
}

static inline uint32_t ev_of(const struct evlog *log, int32_t id)
{
    for (uint32_t j = 0; j < log->n; j++)
        if (log->id[j] == id)
            return log->flags[j];
    return 0;
}

/* Connect client -> server:port and accept; returns the ids. */
static inline void pair_connect(struct pair *p, uint16_t port, int32_t *cid, int32_t *sid)
{
    uint32_t k = port / 1024;
    if (p->lport[k] != port) {
        CHECK(p->lport[k] == 0);
        p->lid[k] = osvrt_tcp_listen(p->st[1], port, 16);
        CHECK(p->lid[k] >= 0);
        p->lport[k] = port;
    }
    int32_t l = p->lid[k];
    *cid = osvrt_tcp_connect(p->st[0], ADDR_S, port, 0, p->now);
    CHECK_MSG(*cid >= 0, "connect: %d", *cid);
    *sid = -EAGAIN;
    for (int i = 0; i < 100 && (*sid == -EAGAIN || osvrt_tcp_state(p->st[0], *cid) != OSVRT_TCP_ESTABLISHED); i++) {
        pair_step(p);
        if (*sid == -EAGAIN)
            *sid = osvrt_tcp_accept(p->st[1], l, NULL, NULL);
    }
    CHECK_EQ(osvrt_tcp_state(p->st[0], *cid), OSVRT_TCP_ESTABLISHED);
    CHECK_MSG(*sid >= 0, "accept: %d", *sid);
}

/* Deterministic test data: byte i of a stream with seed k. */
static inline uint8_t pattern(uint64_t i, uint32_t k)
{
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ k;
    x ^= x >> 29;
    return (uint8_t)(x * 0xbf58476d1ce4e5b9ull >> 56);
}

/* Move `total` bytes each way between client cid and server sid (either may
 * be 0), checking every byte; gives up after max_steps. */
static inline void pair_transfer(struct pair *p, int32_t cid, int32_t sid, uint64_t c2s,
                                 uint64_t s2c, uint64_t max_steps)
{
    uint64_t sent[2] = {0, 0}, got[2] = {0, 0}, total[2] = {c2s, s2c};
    int32_t id[2] = {cid, sid};
    uint8_t buf[65536];
    for (uint64_t step = 0; (got[0] < total[1] || got[1] < total[0]) && step < max_steps; step++) {
        for (int side = 0; side < 2; side++) {
            while (sent[side] < total[side]) {
                uint64_t n = total[side] - sent[side];
                if (n > sizeof buf)
                    n = sizeof buf;
                for (uint64_t i = 0; i < n; i++)
                    buf[i] = pattern(sent[side] + i, (uint32_t)side);
                int64_t r = osvrt_tcp_send(p->st[side], id[side], buf, n, p->now);
                if (r == -EAGAIN)
                    break;
                CHECK_MSG(r > 0, "send: %lld", (long long)r);
                sent[side] += (uint64_t)r;
            }
            int64_t r;
            while ((r = osvrt_tcp_recv(p->st[side], id[side], buf, sizeof buf, p->now)) > 0) {
                for (int64_t i = 0; i < r; i++)
                    CHECK_MSG(buf[i] == pattern(got[side] + (uint64_t)i, (uint32_t)!side),
                              "side %d byte %llu", side, (unsigned long long)(got[side] + (uint64_t)i));
                got[side] += (uint64_t)r;
            }
            /* EOF only after everything the other side was to send */
            CHECK_MSG(r == -EAGAIN || (r == 0 && got[side] == total[!side]), "recv: %lld", (long long)r);
        }
        if (!pair_step(p))
            break;
    }
    CHECK_EQ(got[1], total[0]);
    CHECK_EQ(got[0], total[1]);
}

static inline struct osvrt_tcp_stats pair_stats(struct pair *p, int side)
{
    struct osvrt_tcp_stats st;
    osvrt_tcp_get_stats(p->st[side], &st);
    return st;
}

#endif
