/* test_tcp_loss.c - the TCP engine on a bad wire: seeded random loss,
 * duplication and reordering; a chosen lost segment (fast retransmit); a
 * black hole (RTO backoff, then ETIMEDOUT); a receiver that stops reading
 * (zero window, persist probes); keep-alive. */
#include <stdio.h>

#include "tcp_pair.h"

/* ---- filters ---- */
struct lossy {
    uint32_t drop_per_mille, dup_per_mille, reorder_per_mille;
    uint64_t dropped, duplicated, reordered;
};

static int lossy_filter(struct pair *p, int from, const uint8_t *pkt, uint32_t len, int64_t *extra)
{
    (void)from; (void)pkt; (void)len;
    struct lossy *l = p->arg;
    if (pair_rand(p) % 1000 < l->drop_per_mille) {
        l->dropped++;
        return 0;
    }
    if (pair_rand(p) % 1000 < l->reorder_per_mille) {
        l->reordered++;
        *extra = (int64_t)(pair_rand(p) % 3000000);     /* up to 3 ms late: passes others */
    }
    if (pair_rand(p) % 1000 < l->dup_per_mille) {
        l->duplicated++;
        return 2;
    }
    return 1;
}

static void test_random_loss_dup_reorder(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    struct lossy l = {.drop_per_mille = 20, .dup_per_mille = 10, .reorder_per_mille = 50};
    p.arg = &l;
    p.filter = lossy_filter;
    pair_transfer(&p, c, s, 3u << 20, 1u << 20, 5000000);
    CHECK(l.dropped > 50 && l.duplicated > 20 && l.reordered > 100);
    struct osvrt_tcp_stats cs = pair_stats(&p, 0), ss = pair_stats(&p, 1);
    CHECK(cs.retransmits > 0 && ss.retransmits > 0);
    CHECK(cs.fast_retransmits > 0);
    CHECK(ss.ooo_segments > 0);
    CHECK(ss.dup_segments > 0);
    /* bytes_in: every byte once, however it came (in order, held out of order, again) */
    CHECK_EQ(ss.bytes_in, 3ull << 20);
    CHECK_EQ(cs.bytes_in, 1ull << 20);
    printf("loss: dropped %llu dup %llu reordered %llu; client retransmits %llu (fast %llu, rto %llu)\n",
           (unsigned long long)l.dropped, (unsigned long long)l.duplicated,
           (unsigned long long)l.reordered, (unsigned long long)cs.retransmits,
           (unsigned long long)cs.fast_retransmits, (unsigned long long)cs.rto_expiries);
    /* and a clean close afterwards, through the same wire */
    CHECK_EQ(osvrt_tcp_close(p.st[0], c, p.now), 0);
    CHECK_EQ(osvrt_tcp_shutdown_write(p.st[1], s, p.now), 0);
    for (int i = 0; i < 2000 && osvrt_tcp_state(p.st[1], s) != OSVRT_TCP_CLOSED; i++)
        pair_step(&p);
    CHECK_EQ(osvrt_tcp_state(p.st[1], s), OSVRT_TCP_CLOSED);
    pair_free(&p);
}

/* Drop the client's n-th data segment once. */
struct drop_nth {
    uint64_t seen, nth;
    uint32_t dropped_seq;
    int done;
};

static int drop_nth_filter(struct pair *p, int from, const uint8_t *pkt, uint32_t len, int64_t *extra)
{
    (void)extra;
    struct drop_nth *d = p->arg;
    struct osvrt_tcp_seg g;
    if (from != 0 || osvrt_tcp_parse(pkt, len, 0, &g) || g.len == 0)
        return 1;
    if (!d->done && ++d->seen == d->nth) {
        d->done = 1;
        d->dropped_seq = g.seq;
        return 0;
    }
    return 1;
}

static void test_fast_retransmit(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    pair_transfer(&p, c, s, 200000, 0, 100000);   /* open the congestion window first */
    struct drop_nth d = {.nth = 5};
    p.arg = &d;
    p.filter = drop_nth_filter;
    pair_transfer(&p, c, s, 200000, 0, 100000);
    CHECK(d.done);
    struct osvrt_tcp_stats cs = pair_stats(&p, 0);
    CHECK_EQ(cs.fast_retransmits, 1);
    CHECK_EQ(cs.rto_expiries, 0);   /* recovered by 3 duplicate ACKs, not by the timer */
    CHECK_EQ(cs.retransmits, 1);
    CHECK(cs.dup_acks >= 3);
    struct osvrt_tcp_conn_info ci;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    CHECK(ci.ssthresh < 1000000);   /* the loss halved the window */
    pair_free(&p);
}

/* Every packet from `side` is lost; record when the client sent each. */
struct hole {
    int side;
    int64_t times[32];
    uint32_t n;
};

static int hole_filter(struct pair *p, int from, const uint8_t *pkt, uint32_t len, int64_t *extra)
{
    (void)extra;
    struct hole *h = p->arg;
    if (from != h->side)
        return 1;
    struct osvrt_tcp_seg g;
    CHECK_EQ(osvrt_tcp_parse(pkt, len, 0, &g), 0);
    if (h->n < 32 && (g.len || (g.flags & OSVRT_TH_SYN)))   /* data and SYNs: timed sends */
        h->times[h->n++] = p->now;
    return 0;
}

static void test_rto_backoff_and_timeout(void)
{
    struct osvrt_tcp_config ccfg;
    osvrt_tcp_config_init(&ccfg);
    ccfg.max_retries = 5;
    struct pair p;
    pair_init(&p, &ccfg, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    pair_transfer(&p, c, s, 1000, 0, 10000);
    for (int i = 0; i < 100 && (osvrt_tcp_next_deadline(p.st[1]) != INT64_MAX || p.nq); i++)
        pair_step(&p);              /* the server's delayed ACK: nothing left in flight */
    struct osvrt_tcp_conn_info ci;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    CHECK_EQ(ci.rto_ns, 200 * MS);  /* srtt ~2 ms: clamped to rto_min */
    struct hole h = {.side = 0};
    p.arg = &h;
    p.filter = hole_filter;
    CHECK(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"lost", 4, p.now) == 4);
    struct evlog ce = {0};
    for (int i = 0; i < 200 && osvrt_tcp_state(p.st[0], c) == OSVRT_TCP_ESTABLISHED; i++) {
        pair_step(&p);
        pair_events(&p, 0, &ce);
    }
    /* the first send and 5 retransmissions, each gap twice the last (RFC 6298 5.5) */
    CHECK_EQ(h.n, 6);
    for (uint32_t i = 1; i < 6; i++) {
        int64_t gap = h.times[i] - h.times[i - 1];
        CHECK_MSG(gap == (200 * MS) << (i - 1), "gap %u: %lld ns", i, (long long)gap);
    }
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_CLOSED);
    CHECK(ev_of(&ce, c) & OSVRT_TCP_EV_ERROR);
    uint8_t b[8];
    CHECK_EQ(osvrt_tcp_recv(p.st[0], c, b, sizeof b, p.now), -ETIMEDOUT);
    struct osvrt_tcp_stats cs = pair_stats(&p, 0);
    CHECK_EQ(cs.rto_expiries, 5);
    CHECK_EQ(cs.timeouts, 1);
    pair_free(&p);
}

/* The RTO is bounded above by rto_max_ns. */
static void test_rto_max(void)
{
    struct osvrt_tcp_config ccfg;
    osvrt_tcp_config_init(&ccfg);
    ccfg.max_retries = 8;
    ccfg.rto_max_ns = 1000 * MS;
    struct pair p;
    pair_init(&p, &ccfg, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    struct hole h = {.side = 0};
    p.arg = &h;
    p.filter = hole_filter;
    CHECK(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"lost", 4, p.now) == 4);
    for (int i = 0; i < 200 && osvrt_tcp_state(p.st[0], c) == OSVRT_TCP_ESTABLISHED; i++)
        pair_step(&p);
    CHECK(h.n >= 9);
    for (uint32_t i = 4; i < 9; i++)
        CHECK_EQ(h.times[i] - h.times[i - 1], 1000 * MS);
    pair_free(&p);
}

/* The SYN itself is retransmitted with backoff, then the connect fails. */
static void test_syn_timeout(void)
{
    struct osvrt_tcp_config ccfg;
    osvrt_tcp_config_init(&ccfg);
    ccfg.syn_retries = 2;
    struct pair p;
    pair_init(&p, &ccfg, NULL);
    struct hole h = {.side = 0};
    p.arg = &h;
    p.filter = hole_filter;
    int32_t c = osvrt_tcp_connect(p.st[0], ADDR_S, 80, 0, p.now);
    for (int i = 0; i < 100 && osvrt_tcp_state(p.st[0], c) == OSVRT_TCP_SYN_SENT; i++)
        pair_step(&p);
    CHECK_EQ(h.n, 3);
    CHECK_EQ(h.times[1] - h.times[0], 1000 * MS);   /* rto_initial */
    CHECK_EQ(h.times[2] - h.times[1], 2000 * MS);
    uint8_t b[4];
    CHECK_EQ(osvrt_tcp_recv(p.st[0], c, b, sizeof b, p.now), -ETIMEDOUT);
    pair_free(&p);
}

static void test_zero_window_probe(void)
{
    struct osvrt_tcp_config scfg;
    osvrt_tcp_config_init(&scfg);
    scfg.rcvbuf = 16384;
    struct osvrt_tcp_config ccfg;
    osvrt_tcp_config_init(&ccfg);
    ccfg.max_retries = 3;           /* a peer that answers the probes never uses these up */
    struct pair p;
    pair_init(&p, &ccfg, &scfg);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    /* The server does not read: the client fills its window and stops. */
    static uint8_t buf[100000];
    for (uint32_t i = 0; i < sizeof buf; i++)
        buf[i] = pattern(i, 7);
    int64_t n = osvrt_tcp_send(p.st[0], c, buf, sizeof buf, p.now);
    CHECK_EQ(n, sizeof buf);
    int64_t t0 = p.now;
    while (p.now < t0 + 1200000 * MS && pair_step(&p))   /* 20 minutes */
        ;
    struct osvrt_tcp_conn_info ci, si;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    CHECK_EQ(osvrt_tcp_conn_info(p.st[1], s, &si), 0);
    CHECK_EQ(ci.snd_wnd, 0);
    CHECK_EQ(si.readable, 16384);
    CHECK_EQ(si.rcv_wnd, 0);
    CHECK_EQ(ci.state, OSVRT_TCP_ESTABLISHED);   /* a zero window is not a failure */
    struct osvrt_tcp_stats cs = pair_stats(&p, 0);
    CHECK_MSG(cs.zero_window_probes >= 4, "probes: %llu", (unsigned long long)cs.zero_window_probes);
    CHECK(cs.zero_window_probes > 15);            /* still probing at rto_max (60 s) */
    CHECK(cs.zero_window_probes < 40);            /* backed off, not once per RTT */
    CHECK_EQ(cs.timeouts, 0);
    CHECK_EQ(cs.fast_retransmits, 0);             /* answered probes are not duplicate ACKs */
    CHECK_EQ(cs.dup_acks, 0);
    /* Reading opens the window: a window update restarts the flow. */
    uint8_t got[4096];
    uint64_t total = 0;
    for (int i = 0; i < 100000 && total < sizeof buf; i++) {
        int64_t r;
        while ((r = osvrt_tcp_recv(p.st[1], s, got, sizeof got, p.now)) > 0) {
            for (int64_t k = 0; k < r; k++)
                CHECK(got[k] == pattern(total + (uint64_t)k, 7));
            total += (uint64_t)r;
        }
        pair_step(&p);
    }
    CHECK_EQ(total, sizeof buf);
    /* An orphan (closed by its application) stuck behind a zero window gives up. */
    CHECK(osvrt_tcp_send(p.st[0], c, buf, 40000, p.now) == 40000);
    CHECK_EQ(osvrt_tcp_close(p.st[0], c, p.now), 0);
    t0 = p.now;
    while (p.now < t0 + 1200000 * MS && pair_step(&p) && pair_stats(&p, 0).conns[OSVRT_TCP_FIN_WAIT_1])
        ;
    struct osvrt_tcp_stats end = pair_stats(&p, 0);
    CHECK_EQ(end.conns[OSVRT_TCP_FIN_WAIT_1], 0);
    CHECK_EQ(end.timeouts, 1);
    pair_free(&p);
}

/* send() takes only what fits; EV_WRITABLE follows when ACKs make room. */
static void test_send_buffer_full_then_writable(void)
{
    struct osvrt_tcp_config ccfg;
    osvrt_tcp_config_init(&ccfg);
    ccfg.sndbuf = 8192;
    struct pair p;
    pair_init(&p, &ccfg, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    static uint8_t buf[20000];
    CHECK_EQ(osvrt_tcp_send(p.st[0], c, buf, sizeof buf, p.now), 8192);
    CHECK_EQ(osvrt_tcp_send(p.st[0], c, buf, sizeof buf, p.now), -EAGAIN);
    struct evlog ce = {0};
    for (int i = 0; i < 20; i++) {
        pair_step(&p);
        pair_events(&p, 0, &ce);
    }
    CHECK(ev_of(&ce, c) & OSVRT_TCP_EV_WRITABLE);
    CHECK(osvrt_tcp_send(p.st[0], c, buf, sizeof buf, p.now) > 0);
    pair_free(&p);
}

static void test_keepalive(void)
{
    struct osvrt_tcp_config ccfg;
    osvrt_tcp_config_init(&ccfg);
    ccfg.keepalive_ns = 10000 * MS;
    ccfg.keepalive_probes = 3;
    struct pair p;
    pair_init(&p, &ccfg, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    /* A live peer answers the probes: the connection stays. */
    int64_t t0 = p.now;
    while (p.now < t0 + 60000 * MS && pair_step(&p))
        ;
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_ESTABLISHED);
    CHECK(pair_stats(&p, 0).keepalive_probes >= 5);
    /* A dead one does not: ETIMEDOUT after 3 probes. */
    struct hole h = {.side = 1};
    p.arg = &h;
    p.filter = hole_filter;
    t0 = p.now;
    while (p.now < t0 + 60000 * MS && pair_step(&p) && osvrt_tcp_state(p.st[0], c) == OSVRT_TCP_ESTABLISHED)
        ;
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_CLOSED);
    uint8_t b[4];
    CHECK_EQ(osvrt_tcp_recv(p.st[0], c, b, sizeof b, p.now), -ETIMEDOUT);
    pair_free(&p);
}


/* Every other segment of a burst is lost: more holes than OSVRT_TCP_MAX_HOLES.
 * The segments past the last range are dropped (counted), the rest is kept,
 * and the stream still arrives whole once the sender retransmits. */
struct every_other {
    uint64_t seen;
    uint64_t lost;
};

static int every_other_filter(struct pair *p, int from, const uint8_t *pkt, uint32_t len, int64_t *extra)
{
    (void)extra;
    struct every_other *e = p->arg;
    struct osvrt_tcp_seg g;
    if (from != 0 || osvrt_tcp_parse(pkt, len, 0, &g) || g.len == 0)
        return 1;
    if (++e->seen <= 40 && e->seen % 2 == 1) {
        e->lost++;
        return 0;
    }
    return 1;
}

static void test_reassembly_bounded(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    pair_transfer(&p, c, s, 300000, 0, 100000);   /* cwnd well past 40 segments */
    struct every_other e = {0};
    p.arg = &e;
    p.filter = every_other_filter;
    pair_transfer(&p, c, s, 400000, 0, 400000);
    CHECK_EQ(e.lost, 20);
    struct osvrt_tcp_stats ss = pair_stats(&p, 1);
    CHECK(ss.ooo_segments >= 8);
    CHECK_MSG(ss.drops[OSVRT_TCP_DROP_NO_ROOM] > 0, "no segment found the ranges full");
    pair_free(&p);
}


/* Silly window syndrome (RFC 9293 3.8.6.2): a receiver that reads 100 bytes
 * at a time must not draw 100-byte segments out of the sender. */
struct seglens {
    uint32_t small, full, probes;
};

static int seglen_filter(struct pair *p, int from, const uint8_t *pkt, uint32_t len, int64_t *extra)
{
    (void)extra;
    struct seglens *sl = p->arg;
    struct osvrt_tcp_seg g;
    if (from == 0 && osvrt_tcp_parse(pkt, len, 0, &g) == 0 && g.len) {
        if (g.len == 1460)
            sl->full++;
        else if (g.len == 1)
            sl->probes++;
        else
            sl->small++;
    }
    return 1;
}

static void test_silly_window_avoided(void)
{
    struct osvrt_tcp_config scfg;
    osvrt_tcp_config_init(&scfg);
    scfg.rcvbuf = 8192;
    struct pair p;
    pair_init(&p, NULL, &scfg);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    struct seglens sl = {0};
    p.arg = &sl;
    p.filter = seglen_filter;
    static uint8_t buf[146000];     /* 100 full segments */
    for (uint32_t i = 0; i < sizeof buf; i++)
        buf[i] = pattern(i, 3);
    uint64_t sent = 0, got = 0;
    for (int step = 0; step < 200000 && got < sizeof buf; step++) {
        if (sent < sizeof buf) {
            int64_t r = osvrt_tcp_send(p.st[0], c, buf + sent, sizeof buf - sent, p.now);
            if (r > 0)
                sent += (uint64_t)r;
        }
        for (int k = 0; k < 5; k++) {   /* 5 small reads per step of the wire (1 ms or a timer) */
            uint8_t small[100];
            int64_t r = osvrt_tcp_recv(p.st[1], s, small, sizeof small, p.now);
            if (r > 0) {
                CHECK(memcmp(small, buf + got, (size_t)r) == 0);
                got += (uint64_t)r;
            }
        }
        pair_step(&p);
    }
    CHECK_EQ(got, sizeof buf);
    printf("silly window: %u short segments, %u full, %u probes\n", sl.small, sl.full, sl.probes);
    CHECK_MSG(sl.small <= 2, "%u segments shorter than the MSS (%u full)", sl.small, sl.full);
    CHECK(sl.full >= 95);
    pair_free(&p);
}


/* A receiver that drains a whole flight before it answers sends one
 * (stretch) ACK per flight; slow start must still double the window per
 * round trip, not add one MSS. */
static void test_slow_start_with_stretch_acks(void)
{
    struct osvrt_tcp_config cfg;
    osvrt_tcp_config_init(&cfg);
    cfg.sndbuf = cfg.rcvbuf = 4 << 20;
    struct pair p;
    pair_init(&p, &cfg, &cfg);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    static uint8_t buf[4 << 20];
    CHECK_EQ(osvrt_tcp_send(p.st[0], c, buf, sizeof buf, p.now), sizeof buf);
    struct osvrt_tcp_conn_info ci;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    uint32_t iw = ci.cwnd;
    uint8_t pkt[2048];
    for (int round = 0; round < 5; round++) {
        uint32_t acks = 0;
        int32_t n;
        while ((n = osvrt_tcp_output(p.st[0], pkt, sizeof pkt, p.now)) > 0)
            CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, (uint32_t)n, 0, p.now), 0);
        while ((n = osvrt_tcp_output(p.st[1], pkt, sizeof pkt, p.now)) > 0) {
            CHECK_EQ(osvrt_tcp_input(p.st[0], pkt, (uint32_t)n, 0, p.now), 0);
            acks++;
        }
        CHECK_EQ(acks, 1);          /* one ACK for the whole flight */
        while (osvrt_tcp_recv(p.st[1], s, pkt, sizeof pkt, p.now) > 0)
            ;
        p.now += MS;
    }
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    CHECK_MSG(ci.cwnd >= iw << 5, "cwnd %u after 5 round trips from %u", ci.cwnd, iw);
    pair_free(&p);
}

/* Regression: echo through a lossy wire with small buffers deadlocked (about one
 * 64 MiB soak run in eight).  The echo side reads only when its send makes
 * progress, so its receive window closes while its own data is in flight; the
 * client's RTO went back N, so its segments (old text, pure ACKs stamped with
 * the rolled-back snd_nxt) lay left of the server's rcv_nxt and a zero window
 * refused them whole, ACK field included: the server's data was never
 * acknowledged, its sender backed off to ETIMEDOUT.  Seed 1 of this exact
 * setup hit it at 343 s of fake time before the fix (sync_input's ack_only). */
#define ECHO_CONNS 4
static void test_echo_zero_window_lossy(void)
{
    struct osvrt_tcp_config cfg;
    osvrt_tcp_config_init(&cfg);
    cfg.sndbuf = cfg.rcvbuf = 65536;
    struct pair p;
    pair_init(&p, &cfg, &cfg);
    p.rng ^= 0x2545F4914F6CDD1Dull;     /* seed 1 */
    int32_t c[ECHO_CONNS], s[ECHO_CONNS];
    for (int i = 0; i < ECHO_CONNS; i++)
        pair_connect(&p, 80, &c[i], &s[i]);
    struct lossy l = {.drop_per_mille = 20, .dup_per_mille = 10, .reorder_per_mille = 20};
    p.arg = &l;
    p.filter = lossy_filter;
    const uint64_t total = 1u << 20;
    static uint8_t pend[ECHO_CONNS][65536];  /* the echo server's one sendall buffer */
    uint32_t plen[ECHO_CONNS] = {0}, poff[ECHO_CONNS] = {0};
    uint64_t sent[ECHO_CONNS] = {0}, got[ECHO_CONNS] = {0};
    static uint8_t b[65536];
    for (uint64_t step = 0;; step++) {
        CHECK_MSG(step < 5000000, "no end after %llu steps", (unsigned long long)step);
        int done = 1;
        for (int i = 0; i < ECHO_CONNS; i++) {
            while (sent[i] < total) {                       /* client: send all, ... */
                uint64_t n = total - sent[i] < sizeof b ? total - sent[i] : sizeof b;
                for (uint64_t k = 0; k < n; k++)
                    b[k] = pattern(sent[i] + k, (uint32_t)i);
                int64_t r = osvrt_tcp_send(p.st[0], c[i], b, n, p.now);
                if (r == -EAGAIN)
                    break;
                CHECK_MSG(r > 0, "client %d send: %lld", i, (long long)r);
                sent[i] += (uint64_t)r;
            }
            int64_t r;                                      /* ... and read the echo */
            while ((r = osvrt_tcp_recv(p.st[0], c[i], b, sizeof b, p.now)) > 0) {
                for (int64_t k = 0; k < r; k++)
                    CHECK(b[k] == pattern(got[i] + (uint64_t)k, (uint32_t)i));
                got[i] += (uint64_t)r;
            }
            CHECK_MSG(r == -EAGAIN, "client %d recv: %lld", i, (long long)r);
            for (;;) {                                      /* server: recv only when sendall is done */
                if (poff[i] < plen[i]) {
                    int64_t w = osvrt_tcp_send(p.st[1], s[i], pend[i] + poff[i], plen[i] - poff[i], p.now);
                    if (w == -EAGAIN)
                        break;
                    CHECK_MSG(w > 0, "echo %d send: %lld at %lld ms", i, (long long)w,
                              (long long)(p.now / MS));
                    poff[i] += (uint32_t)w;
                    continue;
                }
                int64_t rr = osvrt_tcp_recv(p.st[1], s[i], pend[i], sizeof pend[i], p.now);
                if (rr == -EAGAIN)
                    break;
                CHECK_MSG(rr > 0, "echo %d recv: %lld", i, (long long)rr);
                plen[i] = (uint32_t)rr;
                poff[i] = 0;
            }
            done &= got[i] == total;
        }
        if (done)
            break;
        CHECK(pair_step(&p));
    }
    struct osvrt_tcp_stats ss = pair_stats(&p, 1);
    CHECK(ss.drops[OSVRT_TCP_DROP_OUT_OF_WINDOW] > 0);      /* the zero windows were met */
    pair_free(&p);
}

/* Every segment of side `side` now, parsed; the last one in *last (data
 * copied out: the caller's buffer). */
static uint32_t drain_output(struct pair *p, int side, uint8_t *last, struct osvrt_tcp_seg *g)
{
    uint8_t buf[2048];
    uint32_t n = 0;
    int32_t len;
    while ((len = osvrt_tcp_output(p->st[side], buf, sizeof buf, p->now)) > 0) {
        memcpy(last, buf, (size_t)len);
        CHECK(osvrt_tcp_parse(last, (uint32_t)len, 0, g) == 0);
        n++;
    }
    CHECK(len == 0);
    return n;
}

/* The client's (side 0's) first pure ACK that acknowledges through
 * want_ack, at once or when its delayed ACK is due, parsed into *g; 0 when
 * none came. */
static int pure_ack_of(struct pair *p, uint32_t want_ack, struct osvrt_tcp_seg *g)
{
    uint8_t buf[2048];
    int32_t len;
    for (int i = 0; i < 10; i++) {
        while ((len = osvrt_tcp_output(p->st[0], buf, sizeof buf, p->now)) > 0) {
            CHECK(osvrt_tcp_parse(buf, (uint32_t)len, 0, g) == 0);
            if (g->len == 0 && !(g->flags & (OSVRT_TH_SYN | OSVRT_TH_FIN | OSVRT_TH_RST))
                && g->ack == want_ack)
                return 1;
        }
        p->now = osvrt_tcp_next_deadline(p->st[0]);
        osvrt_tcp_on_timer(p->st[0], p->now);
    }
    return 0;
}

/* A spurious RTO: the server got every byte of 3,000 but its ACKs were
 * lost, so the client went back N (snd_nxt = snd_una) and its
 * retransmission was lost too.  What the tests below need of it. */
struct go_back_n {
    int32_t c, s;
    uint16_t cport;
    uint32_t first_seq;        /* the client's first data byte */
    uint32_t server_rcv_nxt;   /* past the last: the server has them all */
    uint32_t server_seq;       /* the server's next sequence number */
};

static void spurious_rto(struct pair *p, struct go_back_n *out)
{
    pair_init(p, NULL, NULL);
    pair_connect(p, 80, &out->c, &out->s);
    uint8_t data[3000], pkt[2048];
    memset(data, 'd', sizeof data);
    CHECK(osvrt_tcp_send(p->st[0], out->c, data, sizeof data, p->now) == (int64_t)sizeof data);
    struct osvrt_tcp_seg g;
    uint8_t buf[2048];
    int32_t len;
    uint32_t nseg = 0;
    while ((len = osvrt_tcp_output(p->st[0], buf, sizeof buf, p->now)) > 0) {
        CHECK(osvrt_tcp_parse(buf, (uint32_t)len, 0, &g) == 0);
        if (nseg++ == 0) {
            out->first_seq = g.seq;
            out->cport = g.sport;
        }
        osvrt_tcp_input(p->st[1], buf, (uint32_t)len, 0, p->now);
    }
    CHECK(nseg >= 3);
    p->now += 1 * MS;
    CHECK(drain_output(p, 1, pkt, &g) >= 1);      /* the server's ACKs: lost */
    out->server_rcv_nxt = g.ack;
    out->server_seq = g.seq;
    CHECK_EQ(out->server_rcv_nxt, out->first_seq + (uint32_t)sizeof data);
    p->now = osvrt_tcp_next_deadline(p->st[0]);    /* the RTO: go back N */
    osvrt_tcp_on_timer(p->st[0], p->now);
    CHECK(drain_output(p, 0, pkt, &g) >= 1);       /* the retransmission: lost too */
    CHECK_EQ(g.seq, out->first_seq);
    CHECK(g.len > 0);
}

/* After the spurious RTO a segment of the server's that crossed the data
 * arrives; the client's ACK of it must carry the sequence number the server
 * expects next (RFC 9293 SND.NXT: the client's highest sent, the server's
 * RCV.NXT), or a strict receiver (Linux) finds it left of its window and
 * drops it, ACK field and all. */
static void test_pure_ack_after_go_back_n_is_in_the_peers_window(void)
{
    struct pair p;
    struct go_back_n r;
    spurious_rto(&p, &r);
    uint8_t pkt[2048];
    struct osvrt_tcp_seg g;
    /* The server's segment that crossed the data: it acknowledges none of it. */
    struct osvrt_tcp_seg d = {
        .saddr = ADDR_S, .daddr = ADDR_C, .sport = 80, .dport = r.cport, .seq = r.server_seq,
        .ack = r.first_seq, .flags = OSVRT_TH_ACK | OSVRT_TH_PSH, .wnd = 65535, .len = 100,
    };
    memset(pkt + 40, 'r', 100);
    uint32_t n = osvrt_tcp_build(pkt, &d, NULL, 0, 77);
    CHECK_EQ(osvrt_tcp_input(p.st[0], pkt, n, 0, p.now), 0);

    CHECK_MSG(pure_ack_of(&p, r.server_seq + 100, &g), "no ACK of the server's segment");
    CHECK_MSG(g.seq == r.server_rcv_nxt, "the ACK's seq %u, the server's RCV.NXT %u (the client "
              "went back to %u)", g.seq, r.server_rcv_nxt, r.first_seq);
    pair_free(&p);
}

/* After the spurious RTO the client aborts: its RST must carry the server's
 * RCV.NXT, which the server takes at once (RFC 5961 3.2).  Stamped with the
 * rewound snd_nxt it lay left of the server's window, and the server
 * dropped it without a word and stayed ESTABLISHED. */
static void test_rst_after_go_back_n_resets_the_peer(void)
{
    struct pair p;
    struct go_back_n r;
    spurious_rto(&p, &r);
    uint8_t pkt[2048];
    struct osvrt_tcp_seg g;
    CHECK_EQ(osvrt_tcp_abort(p.st[0], r.c, p.now), 0);
    CHECK_EQ(drain_output(&p, 0, pkt, &g), 1);
    CHECK(g.flags & OSVRT_TH_RST);
    CHECK_MSG(g.seq == r.server_rcv_nxt, "the RST's seq %u, the server's RCV.NXT %u", g.seq,
              r.server_rcv_nxt);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, (uint32_t)(pkt[2] << 8 | pkt[3]), 0, p.now), 0);
    CHECK_EQ(osvrt_tcp_state(p.st[1], r.s), OSVRT_TCP_CLOSED);
    uint8_t b[8];
    int64_t got;
    while ((got = osvrt_tcp_recv(p.st[1], r.s, b, sizeof b, p.now)) > 0)
        ;                                           /* the data it did get, then the reset */
    CHECK_EQ(got, -ECONNRESET);
    pair_free(&p);
}

/* A SYN that offers a zero window, then the listener closes: the half-open
 * connection's RST must carry ISS+1, what the peer expects once it has our
 * SYN-ACK.  A window binds no SYN, so the window's right edge (ISS, with a
 * zero window) is not the place to stamp it. */
static void test_rst_of_a_half_open_connection_after_a_zero_window_syn(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t l = osvrt_tcp_listen(p.st[1], 80, 8);
    CHECK(l >= 0);
    uint8_t pkt[2048];
    struct osvrt_tcp_seg syn = {
        .saddr = ADDR_C, .daddr = ADDR_S, .sport = 40000, .dport = 80, .seq = 1000,
        .flags = OSVRT_TH_SYN, .wnd = 0,
    };
    uint32_t n = osvrt_tcp_build(pkt, &syn, NULL, 0, 1);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, 0, p.now), 0);
    struct osvrt_tcp_seg g;
    CHECK_EQ(drain_output(&p, 1, pkt, &g), 1);
    CHECK(g.flags & OSVRT_TH_SYN);
    uint32_t iss = g.seq;
    CHECK_EQ(osvrt_tcp_close(p.st[1], l, p.now), 0);   /* resets its half-open child */
    CHECK_EQ(drain_output(&p, 1, pkt, &g), 1);
    CHECK(g.flags & OSVRT_TH_RST);
    CHECK_MSG(g.seq == iss + 1, "the RST's seq %u, ISS+1 %u", g.seq, iss + 1);
    pair_free(&p);
}

/* While the client probes a zero window (snd_nxt = snd_una + 1, a byte past
 * the server's closed window), its pure ACK of the server's data must carry
 * the window's right edge, the server's RCV.NXT: snd_nxt lies right of a
 * zero window, and a strict receiver (Linux: tcp_sequence) drops the ACK,
 * so the server's data is acknowledged only by backed-off probes. */
static void test_pure_ack_while_probing_a_zero_window_is_in_the_peers_window(void)
{
    struct osvrt_tcp_config scfg;
    osvrt_tcp_config_init(&scfg);
    scfg.rcvbuf = 16384;
    struct pair p;
    pair_init(&p, NULL, &scfg);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    static uint8_t big[100000];     /* the server does not read: its window closes */
    CHECK(osvrt_tcp_send(p.st[0], c, big, sizeof big, p.now) == (int64_t)sizeof big);
    for (int i = 0; i < 100000 && pair_stats(&p, 0).zero_window_probes == 0; i++)
        pair_step(&p);
    for (int i = 0; i < 10 && p.nq; i++)
        pair_step(&p);
    CHECK(pair_stats(&p, 0).zero_window_probes > 0);
    struct osvrt_tcp_conn_info ci;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    CHECK_EQ(ci.snd_wnd, 0);

    uint8_t d[100], buf[2048];
    memset(d, 'r', sizeof d);
    CHECK(osvrt_tcp_send(p.st[1], s, d, sizeof d, p.now) == (int64_t)sizeof d);
    struct osvrt_tcp_seg g;
    int32_t len;
    uint32_t server_rcv_nxt = 0, server_seq = 0, nseg = 0;
    while ((len = osvrt_tcp_output(p.st[1], buf, sizeof buf, p.now)) > 0) {
        CHECK(osvrt_tcp_parse(buf, (uint32_t)len, 0, &g) == 0);
        server_rcv_nxt = g.ack;
        server_seq = g.seq;
        nseg++;
        osvrt_tcp_input(p.st[0], buf, (uint32_t)len, 0, p.now);
    }
    CHECK_EQ(nseg, 1);
    CHECK_MSG(pure_ack_of(&p, server_seq + (uint32_t)sizeof d, &g), "no ACK of the server's data");
    CHECK_MSG(g.seq == server_rcv_nxt, "the ACK's seq %u, the server's RCV.NXT %u with a zero "
              "window", g.seq, server_rcv_nxt);
    pair_free(&p);
}

int main(void)
{
    test_pure_ack_while_probing_a_zero_window_is_in_the_peers_window();
    test_pure_ack_after_go_back_n_is_in_the_peers_window();
    test_slow_start_with_stretch_acks();
    test_silly_window_avoided();
    test_reassembly_bounded();
    test_fast_retransmit();
    test_rto_backoff_and_timeout();
    test_rto_max();
    test_syn_timeout();
    test_zero_window_probe();
    test_send_buffer_full_then_writable();
    test_keepalive();
    test_random_loss_dup_reorder();
    test_echo_zero_window_lossy();
    test_rst_after_go_back_n_resets_the_peer();
    test_rst_of_a_half_open_connection_after_a_zero_window_syn();
    printf("test_tcp_loss: ok\n");
    return 0;
}
