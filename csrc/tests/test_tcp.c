/* test_tcp.c - the TCP engine (csrc/net/tcp/) between two stacks in memory:
 * handshake and options, bulk transfer, half-close, RST, TIME_WAIT, the SYN
 * backlog, and the input checks (checksums, malformed headers). */
#include <stdio.h>

#include "packet.h"
#include "tcp_pair.h"

static void test_handshake_and_options(void)
{
    struct osvrt_tcp_config scfg;
    osvrt_tcp_config_init(&scfg);
    scfg.mss = 1000;                /* the client must send segments of at most 1000 */
    scfg.rcvbuf = 1 << 20;          /* window scale 5 */
    struct pair p;
    pair_init(&p, NULL, &scfg);
    int32_t l = osvrt_tcp_listen(p.st[1], 80, 8);
    CHECK(l >= 0);
    CHECK_EQ(osvrt_tcp_listen(p.st[1], 80, 8), -EADDRINUSE);
    CHECK_EQ(osvrt_tcp_listen(p.st[1], 0, 8), -EINVAL);
    int32_t c = osvrt_tcp_connect(p.st[0], ADDR_S, 80, 0, p.now);
    CHECK(c >= 0);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_SYN_SENT);
    CHECK_EQ(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"x", 1, p.now), -ENOTCONN);
    CHECK_EQ(osvrt_tcp_accept(p.st[1], l, NULL, NULL), -EAGAIN);
    struct evlog ce = {0}, se = {0};
    for (int i = 0; i < 10; i++) {
        pair_step(&p);
        pair_events(&p, 0, &ce);
        pair_events(&p, 1, &se);
    }
    CHECK(ev_of(&ce, c) & OSVRT_TCP_EV_ESTABLISHED);
    CHECK(ev_of(&se, l) & OSVRT_TCP_EV_ACCEPTABLE);
    uint32_t ra;
    uint16_t rp;
    int32_t s = osvrt_tcp_accept(p.st[1], l, &ra, &rp);
    CHECK(s >= 0);
    CHECK_EQ(ra, ADDR_C);
    CHECK(rp >= 49152);
    struct osvrt_tcp_conn_info ci, si;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    CHECK_EQ(osvrt_tcp_conn_info(p.st[1], s, &si), 0);
    CHECK_EQ(ci.state, OSVRT_TCP_ESTABLISHED);
    CHECK_EQ(si.state, OSVRT_TCP_ESTABLISHED);
    CHECK_EQ(ci.snd_mss, 1000);
    CHECK_EQ(si.snd_mss, 1000);
    CHECK_EQ(ci.local_port, rp);
    CHECK_EQ(si.rcv_wscale, 5);     /* 1 MiB >> 5 fits 16 bits */
    CHECK_EQ(ci.snd_wscale, 5);
    CHECK_EQ(ci.rcv_wscale, 3);     /* 256 KiB >> 3 (>> 2 is 65536: too big) */
    CHECK_EQ(si.snd_wscale, 3);
    CHECK(ci.srtt_ns > 0);          /* the SYN was timed */
    struct osvrt_tcp_stats st = pair_stats(&p, 1);
    CHECK_EQ(st.passive_opens, 1);
    CHECK_EQ(st.accepts, 1);
    CHECK_EQ(st.conns[OSVRT_TCP_ESTABLISHED], 1);
    CHECK_EQ(st.conns[OSVRT_TCP_LISTEN], 1);
    /* Segments the client sends respect the server's MSS. */
    pair_transfer(&p, c, s, 100000, 0, 100000);
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    CHECK(ci.snd_wnd > 65535);      /* scaled: the server's ACKs offer its whole megabyte */
    pair_free(&p);
}

/* A peer that sends no options: MSS 536, no window scaling either way. */
static void test_syn_without_options(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t l = osvrt_tcp_listen(p.st[1], 81, 8);
    CHECK(l >= 0);
    uint8_t pkt[64];
    struct osvrt_tcp_seg g = {.saddr = ADDR_C, .daddr = ADDR_S, .sport = 4000, .dport = 81,
                              .seq = 1000, .flags = OSVRT_TH_SYN, .wnd = 8192};
    uint32_t n = osvrt_tcp_build(pkt, &g, NULL, 0, 1);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, 0, p.now), 0);
    uint8_t out[2048];
    int32_t m = osvrt_tcp_output(p.st[1], out, sizeof out, p.now);
    CHECK(m > 0);
    struct osvrt_tcp_seg r;
    CHECK_EQ(osvrt_tcp_parse(out, (uint32_t)m, 0, &r), 0);
    CHECK_EQ(r.flags, OSVRT_TH_SYN | OSVRT_TH_ACK);
    CHECK_EQ(r.ack, 1001);
    CHECK_EQ(r.mss, 1460);
    CHECK_EQ(r.wscale, -1);         /* not offered back to a peer that did not offer it */
    g.flags = OSVRT_TH_ACK;
    g.seq = 1001;
    g.ack = r.seq + 1;
    n = osvrt_tcp_build(pkt, &g, NULL, 0, 2);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, 0, p.now), 0);
    int32_t s = osvrt_tcp_accept(p.st[1], l, NULL, NULL);
    CHECK(s >= 0);
    struct osvrt_tcp_conn_info si;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[1], s, &si), 0);
    CHECK_EQ(si.snd_mss, 536);
    CHECK_EQ(si.snd_wscale, 0);
    CHECK_EQ(si.rcv_wscale, 0);
    CHECK_EQ(si.snd_wnd, 8192);
    pair_free(&p);
}

static void test_bulk_both_ways(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    pair_transfer(&p, c, s, 6u << 20, 3u << 20, 2000000);
    struct osvrt_tcp_stats cs = pair_stats(&p, 0);
    CHECK_EQ(cs.retransmits, 0);    /* a clean wire: nothing sent twice */
    CHECK(cs.bytes_out >= 6u << 20);
    struct osvrt_tcp_conn_info ci;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    CHECK(ci.cwnd > 64 * 1024);     /* slow start opened the window */
    pair_free(&p);
}

static void test_half_close_and_time_wait(void)
{
    struct osvrt_tcp_config ccfg;
    osvrt_tcp_config_init(&ccfg);
    ccfg.time_wait_ns = 5000 * MS;
    struct pair p;
    pair_init(&p, &ccfg, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    pair_transfer(&p, c, s, 5000, 0, 10000);
    CHECK_EQ(osvrt_tcp_shutdown_write(p.st[0], c, p.now), 0);
    CHECK_EQ(osvrt_tcp_shutdown_write(p.st[0], c, p.now), 0);
    CHECK_EQ(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"x", 1, p.now), -EPIPE);
    for (int i = 0; i < 20; i++)
        pair_step(&p);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_FIN_WAIT_2);
    CHECK_EQ(osvrt_tcp_state(p.st[1], s), OSVRT_TCP_CLOSE_WAIT);
    uint8_t b[16];
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), 0);     /* EOF */
    /* The other direction still works after the half-close. */
    pair_transfer(&p, c, s, 0, 200000, 100000);
    CHECK_EQ(osvrt_tcp_close(p.st[1], s, p.now), 0);
    CHECK_EQ(osvrt_tcp_state(p.st[1], s), -EBADF);
    struct evlog ce = {0};
    for (int i = 0; i < 20 && osvrt_tcp_state(p.st[0], c) != OSVRT_TCP_TIME_WAIT; i++) {
        pair_step(&p);
        pair_events(&p, 0, &ce);
    }
    int64_t tw_start = p.now;       /* TIME_WAIT began in this step */
    for (int i = 0; i < 3; i++)     /* the last ACK reaches the server */
        pair_step(&p);
    CHECK(ev_of(&ce, c) & OSVRT_TCP_EV_READABLE);
    CHECK_EQ(osvrt_tcp_recv(p.st[0], c, b, sizeof b, p.now), 0);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_TIME_WAIT);
    struct osvrt_tcp_stats st = pair_stats(&p, 1);
    CHECK_EQ(st.conns[OSVRT_TCP_LAST_ACK] + st.conns[OSVRT_TCP_CLOSED], 0);  /* orphan freed */
    /* TIME_WAIT lasts time_wait_ns, then the connection is CLOSED. */
    CHECK_EQ(osvrt_tcp_next_deadline(p.st[0]), tw_start + 5000 * MS);
    while (pair_step(&p) && p.now < tw_start + 4999 * MS)
        ;
    CHECK_EQ(pair_stats(&p, 0).conns[OSVRT_TCP_TIME_WAIT], 0);
    CHECK(p.now >= tw_start + 5000 * MS);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_CLOSED);
    CHECK_EQ(osvrt_tcp_close(p.st[0], c, p.now), 0);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), -EBADF);
    CHECK_EQ(osvrt_tcp_close(p.st[0], c, p.now), -EBADF);
    st = pair_stats(&p, 0);
    for (int i = 0; i < OSVRT_TCP_NSTATES; i++)
        CHECK_EQ(st.conns[i], 0);
    pair_free(&p);
}

/* Both close at once: FIN_WAIT_1 -> CLOSING -> TIME_WAIT on both sides. */
static void test_simultaneous_close(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    CHECK_EQ(osvrt_tcp_shutdown_write(p.st[0], c, p.now), 0);
    CHECK_EQ(osvrt_tcp_shutdown_write(p.st[1], s, p.now), 0);
    pair_flush(&p);                 /* both FINs on the wire before either arrives */
    int saw_closing = 0;
    for (int i = 0; i < 20 && (osvrt_tcp_state(p.st[0], c) != OSVRT_TCP_TIME_WAIT
                               || osvrt_tcp_state(p.st[1], s) != OSVRT_TCP_TIME_WAIT); i++) {
        pair_step(&p);
        saw_closing |= osvrt_tcp_state(p.st[0], c) == OSVRT_TCP_CLOSING;
    }
    CHECK(saw_closing);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_TIME_WAIT);
    CHECK_EQ(osvrt_tcp_state(p.st[1], s), OSVRT_TCP_TIME_WAIT);
    pair_free(&p);
}

static void test_reset(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    /* Nobody listens on 99: ECONNREFUSED. */
    int32_t c = osvrt_tcp_connect(p.st[0], ADDR_S, 99, 0, p.now);
    CHECK(c >= 0);
    struct evlog ce = {0};
    for (int i = 0; i < 10; i++) {
        pair_step(&p);
        pair_events(&p, 0, &ce);
    }
    CHECK(ev_of(&ce, c) & OSVRT_TCP_EV_ERROR);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_CLOSED);
    uint8_t b[16];
    CHECK_EQ(osvrt_tcp_recv(p.st[0], c, b, sizeof b, p.now), -ECONNREFUSED);
    CHECK_EQ(pair_stats(&p, 1).drops[OSVRT_TCP_DROP_NO_CONN], 1);
    CHECK_EQ(osvrt_tcp_close(p.st[0], c, p.now), 0);

    /* abort(): the peer sees a reset. */
    int32_t s;
    pair_connect(&p, 80, &c, &s);
    pair_transfer(&p, c, s, 1000, 1000, 10000);
    CHECK_EQ(osvrt_tcp_abort(p.st[0], c, p.now), 0);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), -EBADF);
    struct evlog se = {0};
    for (int i = 0; i < 10; i++) {
        pair_step(&p);
        pair_events(&p, 1, &se);
    }
    CHECK(ev_of(&se, s) & OSVRT_TCP_EV_RESET);
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), -ECONNRESET);
    CHECK_EQ(osvrt_tcp_send(p.st[1], s, b, 1, p.now), -ECONNRESET);
    CHECK_EQ(pair_stats(&p, 1).rsts_in, 1);
    osvrt_tcp_close(p.st[1], s, p.now);

    /* RFC 5961: a RST in the window but not at RCV.NXT gets a challenge ACK
     * and the connection lives. */
    pair_connect(&p, 80, &c, &s);
    struct osvrt_tcp_conn_info si;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[1], s, &si), 0);
    struct osvrt_tcp_conn_info ci;
    CHECK_EQ(osvrt_tcp_conn_info(p.st[0], c, &ci), 0);
    /* the client's next sequence number is what the server expects: find it from a segment */
    CHECK(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"hello", 5, p.now) == 5);
    uint8_t out[2048];
    int32_t n = osvrt_tcp_output(p.st[0], out, sizeof out, p.now);
    CHECK(n > 0);
    struct osvrt_tcp_seg g;
    CHECK_EQ(osvrt_tcp_parse(out, (uint32_t)n, 0, &g), 0);
    CHECK_EQ(osvrt_tcp_input(p.st[1], out, (uint32_t)n, 0, p.now), 0);
    uint32_t rcv_nxt = g.seq + 5;
    struct osvrt_tcp_seg rst = {.saddr = ADDR_C, .daddr = ADDR_S, .sport = ci.local_port,
                                .dport = 80, .seq = rcv_nxt + 100, .flags = OSVRT_TH_RST};
    uint8_t pkt[64];
    uint32_t m = osvrt_tcp_build(pkt, &rst, NULL, 0, 7);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, m, 0, p.now), OSVRT_TCP_DROP_RST_INVALID);
    CHECK_EQ(pair_stats(&p, 1).challenge_acks, 1);
    CHECK_EQ(osvrt_tcp_state(p.st[1], s), OSVRT_TCP_ESTABLISHED);
    /* exactly at RCV.NXT: reset */
    rst.seq = rcv_nxt;
    m = osvrt_tcp_build(pkt, &rst, NULL, 0, 8);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, m, 0, p.now), 0);
    CHECK_EQ(osvrt_tcp_state(p.st[1], s), OSVRT_TCP_CLOSED);
    /* the 5 bytes that arrived before the reset are still readable, then the error */
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), 5);
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), -ECONNRESET);
    pair_free(&p);
}

/* close() with unread data sends a RST, not a FIN (RFC 9293 3.10.4). */
static void test_close_with_unread_data_resets(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    CHECK(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"unread", 6, p.now) == 6);
    for (int i = 0; i < 5; i++)
        pair_step(&p);
    CHECK_EQ(osvrt_tcp_close(p.st[1], s, p.now), 0);
    for (int i = 0; i < 5; i++)
        pair_step(&p);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_CLOSED);
    uint8_t b[8];
    CHECK_EQ(osvrt_tcp_recv(p.st[0], c, b, sizeof b, p.now), -ECONNRESET);
    pair_free(&p);
}

static void test_syn_backlog_overflow(void)
{
    struct osvrt_tcp_config ccfg;
    osvrt_tcp_config_init(&ccfg);
    ccfg.rto_initial_ns = 100 * MS;
    struct pair p;
    pair_init(&p, &ccfg, NULL);
    int32_t l = osvrt_tcp_listen(p.st[1], 80, 2);
    CHECK(l >= 0);
    int32_t c[5];
    for (int i = 0; i < 5; i++) {
        c[i] = osvrt_tcp_connect(p.st[0], ADDR_S, 80, 0, p.now);
        CHECK(c[i] >= 0);
    }
    for (int i = 0; i < 10; i++)
        pair_step(&p);
    struct osvrt_tcp_stats st = pair_stats(&p, 1);
    CHECK_EQ(st.drops[OSVRT_TCP_DROP_BACKLOG], 3);
    CHECK_EQ(st.passive_opens, 2);
    int est = 0;
    for (int i = 0; i < 5; i++)
        est += osvrt_tcp_state(p.st[0], c[i]) == OSVRT_TCP_ESTABLISHED;
    CHECK_EQ(est, 2);
    /* accept() makes room; the SYN retransmissions then get through. */
    int accepted = 0;
    for (int i = 0; i < 200 && accepted < 5; i++) {
        pair_step(&p);
        while (osvrt_tcp_accept(p.st[1], l, NULL, NULL) >= 0)
            accepted++;
    }
    CHECK_EQ(accepted, 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(osvrt_tcp_state(p.st[0], c[i]), OSVRT_TCP_ESTABLISHED);
    /* Closing the listener resets what it has not handed out. */
    CHECK_EQ(osvrt_tcp_close(p.st[1], l, p.now), 0);
    CHECK_EQ(osvrt_tcp_accept(p.st[1], l, NULL, NULL), -EBADF);
    pair_free(&p);
}

/* A valid data segment from the client to the server, to corrupt. */
static uint32_t data_segment(struct pair *p, int32_t c, uint8_t *out)
{
    CHECK(osvrt_tcp_send(p->st[0], c, (const uint8_t *)"0123456789", 10, p->now) == 10);
    int32_t n = osvrt_tcp_output(p->st[0], out, 2048, p->now);
    CHECK(n > 40);
    return (uint32_t)n;
}

static void test_bad_checksums_dropped(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    uint8_t pkt[2048];
    uint32_t n = data_segment(&p, c, pkt);
    pkt[n - 1] ^= 0x40;              /* a payload bit */
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, 0, p.now), OSVRT_TCP_DROP_BAD_CSUM);
    CHECK_EQ(pair_stats(&p, 1).drops[OSVRT_TCP_DROP_BAD_CSUM], 1);
    uint8_t b[16];
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), -EAGAIN);
    /* the same bytes, checksum declared verified below (CSUMNOTREADY): taken */
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, OSVRT_TCP_IN_CSUM_OK, p.now), 0);
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), 10);
    /* IPv4 header checksum: always checked */
    n = data_segment(&p, c, pkt);
    pkt[8] ^= 1;                     /* TTL */
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, OSVRT_TCP_IN_CSUM_OK, p.now), OSVRT_TCP_DROP_BAD_IP_CSUM);
    CHECK_EQ(pair_stats(&p, 1).drops[OSVRT_TCP_DROP_BAD_IP_CSUM], 1);
    pair_free(&p);
}

/* Rebuild a segment with raw option bytes and a given data offset. */
static uint32_t raw_segment(uint8_t *pkt, const uint8_t *opts, uint32_t optlen, int doff_words,
                            uint32_t payload)
{
    struct osvrt_tcp_seg g = {.saddr = ADDR_C, .daddr = ADDR_S, .sport = 5000, .dport = 80,
                              .seq = 1, .flags = OSVRT_TH_SYN, .wnd = 1000, .len = payload};
    memset(pkt + 40 + optlen, 'd', payload);
    uint32_t n = osvrt_tcp_build(pkt, &g, opts, optlen, 1);
    if (doff_words >= 0) {           /* override the data offset, fix the TCP checksum */
        pkt[32] = (uint8_t)(doff_words << 4);
        pkt[36] = pkt[37] = 0;
        uint8_t ph[4] = {0, 6, (uint8_t)((n - 20) >> 8), (uint8_t)(n - 20)};
        uint32_t sum = osvrt_csum_add(osvrt_csum_add(osvrt_csum_add(0, pkt + 12, 8), ph, 4), pkt + 20, n - 20);
        uint16_t c = (uint16_t)~osvrt_csum_fold(sum);
        pkt[36] = (uint8_t)(c >> 8);
        pkt[37] = (uint8_t)c;
    }
    return n;
}

static void test_malformed_dropped(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    CHECK(osvrt_tcp_listen(p.st[1], 80, 8) >= 0);
    uint8_t pkt[2048];
    struct { const char *what; uint8_t opts[8]; uint32_t optlen; int doff; uint32_t payload; int want; } cases[] = {
        {"data offset 4 words", {0}, 0, 4, 0, OSVRT_TCP_DROP_BAD_OFFSET},
        {"data offset past the end", {0}, 0, 15, 8, OSVRT_TCP_DROP_BAD_OFFSET},
        {"MSS option cut by the header end", {1, 1, 2, 4}, 4, 6, 0, 0},   /* valid: 4 bytes NOP NOP 2 4 -> bad */
        {"option length 0", {8, 0, 0, 0}, 4, -1, 0, OSVRT_TCP_DROP_BAD_OPTIONS},
        {"option length 1", {8, 1, 0, 0}, 4, -1, 0, OSVRT_TCP_DROP_BAD_OPTIONS},
        {"option length past the header", {1, 1, 8, 10}, 4, -1, 0, OSVRT_TCP_DROP_BAD_OPTIONS},
        {"MSS with length 3", {2, 3, 1, 1}, 4, -1, 0, OSVRT_TCP_DROP_BAD_OPTIONS},
        {"window scale with length 4", {3, 4, 1, 1}, 4, -1, 0, OSVRT_TCP_DROP_BAD_OPTIONS},
    };
    cases[2].doff = -1;
    cases[2].want = OSVRT_TCP_DROP_BAD_OPTIONS;
    uint64_t counted[OSVRT_TCP_NDROPS] = {0};
    for (unsigned i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint32_t n = raw_segment(pkt, cases[i].opts, cases[i].optlen, cases[i].doff, cases[i].payload);
        int r = osvrt_tcp_input(p.st[1], pkt, n, 0, p.now);
        CHECK_MSG(r == cases[i].want, "%s: %d (%s), want %d", cases[i].what, r,
                  osvrt_tcp_drop_name(r), cases[i].want);
        counted[r]++;
    }
    /* truncated TCP header, and an IPv4 total length past the bytes given */
    uint32_t n = raw_segment(pkt, NULL, 0, -1, 0);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, 30, 0, p.now), OSVRT_TCP_DROP_BAD_IP);
    counted[OSVRT_TCP_DROP_BAD_IP]++;
    pkt[2] = 0;
    pkt[3] = 30;                     /* total length 30: 10 bytes of TCP */
    pkt[10] = pkt[11] = 0;
    uint16_t ic = (uint16_t)~osvrt_csum_fold(osvrt_csum_add(0, pkt, 20));
    pkt[10] = (uint8_t)(ic >> 8);
    pkt[11] = (uint8_t)ic;
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, 0, p.now), OSVRT_TCP_DROP_TRUNC_TCP);
    counted[OSVRT_TCP_DROP_TRUNC_TCP]++;
    /* SYN+FIN */
    struct osvrt_tcp_seg g = {.saddr = ADDR_C, .daddr = ADDR_S, .sport = 5000, .dport = 80,
                              .seq = 1, .flags = OSVRT_TH_SYN | OSVRT_TH_FIN, .wnd = 1000};
    n = osvrt_tcp_build(pkt, &g, NULL, 0, 1);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, 0, p.now), OSVRT_TCP_DROP_BAD_FLAGS);
    counted[OSVRT_TCP_DROP_BAD_FLAGS]++;
    /* not for our address */
    g.flags = OSVRT_TH_SYN;
    g.daddr = ADDR_S + 1;
    n = osvrt_tcp_build(pkt, &g, NULL, 0, 1);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, 0, p.now), OSVRT_TCP_DROP_NOT_OURS);
    counted[OSVRT_TCP_DROP_NOT_OURS]++;
    struct osvrt_tcp_stats st = pair_stats(&p, 1);
    for (int r = 1; r < OSVRT_TCP_NDROPS; r++)
        CHECK_MSG(st.drops[r] == counted[r], "%s: %llu counted, %llu expected",
                  osvrt_tcp_drop_name(r), (unsigned long long)st.drops[r],
                  (unsigned long long)counted[r]);
    CHECK_EQ(st.passive_opens, 0);  /* none of them made a connection */
    CHECK_EQ(osvrt_tcp_output_pending(p.st[1]), 0);   /* and none got an answer */
    pair_free(&p);
}

static void test_bad_config_and_ids(void)
{
    struct osvrt_tcp_config cfg;
    osvrt_tcp_config_init(&cfg);
    int err = 0;
    CHECK(!osvrt_tcp_new(&cfg, &err));               /* no address */
    CHECK_EQ(err, -EINVAL);
    cfg.addr = ADDR_S;
    cfg.mss = 10;
    CHECK(!osvrt_tcp_new(&cfg, &err));
    CHECK_EQ(err, -EINVAL);
    cfg.mss = 1460;
    cfg.rcvbuf = 1000;
    CHECK(!osvrt_tcp_new(&cfg, &err));
    cfg.rcvbuf = 0;
    cfg.max_conns = 2;
    struct osvrt_tcp_stack *s = osvrt_tcp_new(&cfg, &err);
    CHECK(s);
    int32_t a = osvrt_tcp_connect(s, ADDR_C, 80, 0, 0);
    int32_t b = osvrt_tcp_connect(s, ADDR_C, 80, 0, 0);
    CHECK(a >= 0 && b >= 0 && a != b);
    CHECK_EQ(osvrt_tcp_connect(s, ADDR_C, 80, 0, 0), -ENOMEM);
    CHECK_EQ(osvrt_tcp_close(s, a, 0), 0);
    int32_t c = osvrt_tcp_connect(s, ADDR_C, 80, 0, 0);
    CHECK(c >= 0 && c != a);        /* the slot is reused under a new id */
    CHECK_EQ(osvrt_tcp_state(s, a), -EBADF);
    CHECK_EQ(osvrt_tcp_send(s, a, (const uint8_t *)"x", 1, 0), -EBADF);
    CHECK_EQ(osvrt_tcp_state(s, -5), -EBADF);
    CHECK_EQ(osvrt_tcp_state(s, 0x7fffffff), -EBADF);
    uint8_t buf[16];
    CHECK_EQ(osvrt_tcp_output(s, buf, sizeof buf, 0), -EINVAL);
    CHECK(osvrt_tcp_state_name(OSVRT_TCP_TIME_WAIT) && !osvrt_tcp_state_name(99));
    CHECK(osvrt_tcp_drop_name(OSVRT_TCP_DROP_BAD_CSUM) && !osvrt_tcp_drop_name(-1));
    osvrt_tcp_free(s);
}


/* A new SYN for a 4-tuple in TIME_WAIT.  With a sequence number past the
 * old connection's (the ISN clock sees to it) it ends TIME_WAIT at once
 * (RFC 1122 4.2.2.13).  Otherwise (old_isn) it gets an ACK, the client's RST
 * for that ACK ends TIME_WAIT, and its SYN retransmission connects. */
static void reconnect_over_time_wait(int old_isn)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t l = osvrt_tcp_listen(p.st[1], 80, 8);
    CHECK(l >= 0);
    int32_t c = osvrt_tcp_connect(p.st[0], ADDR_S, 80, 40000, p.now);
    CHECK(c >= 0);
    int32_t s = -EAGAIN;
    for (int i = 0; i < 10 && s < 0; i++) {
        pair_step(&p);
        s = osvrt_tcp_accept(p.st[1], l, NULL, NULL);
    }
    CHECK(s >= 0);
    CHECK_EQ(osvrt_tcp_close(p.st[1], s, p.now), 0);     /* the server closes first */
    for (int i = 0; i < 10 && osvrt_tcp_state(p.st[0], c) != OSVRT_TCP_CLOSE_WAIT; i++)
        pair_step(&p);
    CHECK_EQ(osvrt_tcp_close(p.st[0], c, p.now), 0);
    for (int i = 0; i < 20 && pair_stats(&p, 0).conns[OSVRT_TCP_LAST_ACK]; i++)
        pair_step(&p);              /* (more steps would reach the end of TIME_WAIT) */
    CHECK_EQ(pair_stats(&p, 1).conns[OSVRT_TCP_TIME_WAIT], 1);
    CHECK_EQ(pair_stats(&p, 0).conns[OSVRT_TCP_LAST_ACK], 0);
    /* old_isn: the client's clock "goes back" 1 s: its ISN falls 250000 below the old one */
    c = osvrt_tcp_connect(p.st[0], ADDR_S, 80, 40000, old_isn ? p.now - 1000 * MS : p.now);
    CHECK(c >= 0);
    s = -EAGAIN;
    for (int i = 0; i < 40 && s < 0; i++) {
        pair_step(&p);
        s = osvrt_tcp_accept(p.st[1], l, NULL, NULL);
    }
    CHECK(s >= 0);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_ESTABLISHED);
    CHECK_EQ(pair_stats(&p, 1).conns[OSVRT_TCP_TIME_WAIT], 0);
    CHECK_EQ(pair_stats(&p, 1).rsts_in, old_isn ? 1 : 0);   /* TIME_WAIT ended by the RST */
    CHECK_EQ(pair_stats(&p, 0).rsts_out, old_isn ? 1 : 0);
    CHECK_EQ(pair_stats(&p, 0).retransmits, old_isn ? 1 : 0);  /* the SYN, once */
    pair_transfer(&p, c, s, 1000, 1000, 10000);
    pair_free(&p);
}

static void test_reconnect_over_time_wait(void)
{
    reconnect_over_time_wait(0);
    reconnect_over_time_wait(1);
}


/* Data for a connection the application closed is answered with a RST. */
static void test_data_after_close_resets(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    CHECK_EQ(osvrt_tcp_close(p.st[1], s, p.now), 0);
    for (int i = 0; i < 10 && osvrt_tcp_state(p.st[0], c) != OSVRT_TCP_CLOSE_WAIT; i++)
        pair_step(&p);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_CLOSE_WAIT);
    CHECK(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"late", 4, p.now) == 4);
    for (int i = 0; i < 10 && osvrt_tcp_state(p.st[0], c) == OSVRT_TCP_CLOSE_WAIT; i++)
        pair_step(&p);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c), OSVRT_TCP_CLOSED);
    uint8_t b[8];
    CHECK_EQ(osvrt_tcp_recv(p.st[0], c, b, sizeof b, p.now), -ECONNRESET);   /* the reset outranks EOF */
    CHECK_EQ(osvrt_tcp_send(p.st[0], c, b, 1, p.now), -ECONNRESET);
    struct osvrt_tcp_stats st = pair_stats(&p, 1);
    CHECK_EQ(st.rsts_out, 1);
    for (int i = 0; i < OSVRT_TCP_NSTATES; i++)
        CHECK_EQ(st.conns[i], i == OSVRT_TCP_LISTEN);   /* the orphan is gone */
    pair_free(&p);
}


/* RFC 5961: a SYN on an established connection, and an ACK of data never
 * sent, get an ACK back and change nothing. */
static void test_blind_attacks_challenged(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    pair_transfer(&p, c, s, 3000, 3000, 10000);
    for (int i = 0; i < 10 && (p.nq || osvrt_tcp_output_pending(p.st[0]) || osvrt_tcp_output_pending(p.st[1])); i++)
        pair_step(&p);
    /* the server's view of the client's next sequence number, from a real segment */
    CHECK(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"z", 1, p.now) == 1);
    uint8_t out[2048];
    int32_t n = osvrt_tcp_output(p.st[0], out, sizeof out, p.now);
    struct osvrt_tcp_seg g;
    CHECK(n > 0 && osvrt_tcp_parse(out, (uint32_t)n, 0, &g) == 0);
    CHECK_EQ(osvrt_tcp_input(p.st[1], out, (uint32_t)n, 0, p.now), 0);
    while (osvrt_tcp_output(p.st[1], out, sizeof out, p.now) > 0)
        ;
    struct osvrt_tcp_stats before = pair_stats(&p, 1);
    uint8_t pkt[64];
    struct osvrt_tcp_seg syn = g;
    syn.seq = g.seq + 1;
    syn.flags = OSVRT_TH_SYN;
    syn.len = 0;
    uint32_t m = osvrt_tcp_build(pkt, &syn, NULL, 0, 9);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, m, 0, p.now), OSVRT_TCP_DROP_BAD_FLAGS);
    CHECK_EQ(pair_stats(&p, 1).challenge_acks, before.challenge_acks + 1);
    n = osvrt_tcp_output(p.st[1], out, sizeof out, p.now);
    struct osvrt_tcp_seg r;
    CHECK(n > 0 && osvrt_tcp_parse(out, (uint32_t)n, 0, &r) == 0);
    CHECK_EQ(r.flags, OSVRT_TH_ACK);                    /* an ACK, not a RST */
    CHECK_EQ(r.ack, g.seq + 1);
    struct osvrt_tcp_seg ack = g;
    ack.seq = g.seq + 1;
    ack.ack = g.ack + 1000000;                          /* acknowledges the future */
    ack.len = 0;
    m = osvrt_tcp_build(pkt, &ack, NULL, 0, 10);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, m, 0, p.now), OSVRT_TCP_DROP_BAD_ACK);
    CHECK(osvrt_tcp_output(p.st[1], out, sizeof out, p.now) > 0);
    CHECK_EQ(osvrt_tcp_state(p.st[1], s), OSVRT_TCP_ESTABLISHED);
    uint8_t b[4];                                       /* and the stream goes on */
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), 1);
    CHECK_EQ(b[0], 'z');
    CHECK(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"yz", 2, p.now) == 2);
    for (int i = 0; i < 5; i++)
        pair_step(&p);
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), 2);
    pair_free(&p);
}

/* A RST for a SYN_RECEIVED child frees it; the listener lives on. */
static void test_rst_in_syn_received(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t l = osvrt_tcp_listen(p.st[1], 80, 8);
    uint8_t pkt[64], out[2048];
    struct osvrt_tcp_seg g = {.saddr = ADDR_C, .daddr = ADDR_S, .sport = 4000, .dport = 80,
                              .seq = 500, .flags = OSVRT_TH_SYN, .wnd = 8192};
    uint32_t n = osvrt_tcp_build(pkt, &g, NULL, 0, 1);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, 0, p.now), 0);
    CHECK(osvrt_tcp_output(p.st[1], out, sizeof out, p.now) > 0);
    CHECK_EQ(pair_stats(&p, 1).conns[OSVRT_TCP_SYN_RECEIVED], 1);
    g.flags = OSVRT_TH_RST;
    g.seq = 501;
    n = osvrt_tcp_build(pkt, &g, NULL, 0, 2);
    CHECK_EQ(osvrt_tcp_input(p.st[1], pkt, n, 0, p.now), 0);
    CHECK_EQ(pair_stats(&p, 1).conns[OSVRT_TCP_SYN_RECEIVED], 0);
    CHECK_EQ(osvrt_tcp_next_deadline(p.st[1]), INT64_MAX);   /* no SYN-ACK retransmission left */
    CHECK_EQ(osvrt_tcp_accept(p.st[1], l, NULL, NULL), -EAGAIN);
    int32_t c, s;
    pair_connect(&p, 81, &c, &s);
    pair_free(&p);
}


/* The split input path: demux names the connection without changing
 * anything; input_conn with that id (or a stale or wrong one, which is
 * looked up again) processes the packet. */
static void test_demux_then_input_conn(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    uint8_t pkt[2048];
    CHECK(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"abc", 3, p.now) == 3);
    int32_t n = osvrt_tcp_output(p.st[0], pkt, sizeof pkt, p.now);
    CHECK(n > 0);
    struct osvrt_tcp_stats before = pair_stats(&p, 1);
    int pending = osvrt_tcp_output_pending(p.st[1]);
    int64_t deadline = osvrt_tcp_next_deadline(p.st[1]);
    CHECK_EQ(osvrt_tcp_demux(p.st[1], pkt, (uint32_t)n, 0), s);
    CHECK_EQ(osvrt_tcp_demux(p.st[1], pkt, (uint32_t)n, 0), s);
    struct osvrt_tcp_stats after = pair_stats(&p, 1);
    CHECK(memcmp(&before, &after, sizeof before) == 0);         /* demux changed nothing */
    CHECK_EQ(osvrt_tcp_output_pending(p.st[1]), pending);
    CHECK_EQ(osvrt_tcp_next_deadline(p.st[1]), deadline);
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, pkt + 1800, 8, p.now), -EAGAIN);
    CHECK_EQ(osvrt_tcp_input_conn(p.st[1], s, pkt, (uint32_t)n, 0, p.now), 0);
    uint8_t b[8];
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), 3);
    /* a wrong id (the listener's, another connection's, garbage): found by its 4-tuple */
    CHECK(osvrt_tcp_send(p.st[0], c, (const uint8_t *)"de", 2, p.now) == 2);
    n = osvrt_tcp_output(p.st[0], pkt, sizeof pkt, p.now);
    CHECK_EQ(osvrt_tcp_input_conn(p.st[1], 0x7ffffff0, pkt, (uint32_t)n, 0, p.now), 0);
    CHECK_EQ(osvrt_tcp_recv(p.st[1], s, b, sizeof b, p.now), 2);
    /* malformed: demux says why, as a negative drop reason */
    pkt[32] = 0x20;                  /* data offset 2 words */
    CHECK_EQ(osvrt_tcp_demux(p.st[1], pkt, (uint32_t)n, 0), -OSVRT_TCP_DROP_BAD_OFFSET);
    /* a SYN for nobody's port */
    struct osvrt_tcp_seg g = {.saddr = ADDR_C, .daddr = ADDR_S, .sport = 4000, .dport = 99,
                              .seq = 1, .flags = OSVRT_TH_SYN, .wnd = 100};
    uint32_t m = osvrt_tcp_build(pkt, &g, NULL, 0, 1);
    CHECK_EQ(osvrt_tcp_demux(p.st[1], pkt, m, 0), -OSVRT_TCP_DROP_NO_CONN);
    CHECK_EQ(osvrt_tcp_input_conn(p.st[1], -1, pkt, m, 0, p.now), OSVRT_TCP_DROP_NO_CONN);
    n = osvrt_tcp_output(p.st[1], pkt, sizeof pkt, p.now);       /* the RST */
    struct osvrt_tcp_seg r;
    CHECK(n > 0 && osvrt_tcp_parse(pkt, (uint32_t)n, 0, &r) == 0);
    CHECK_EQ(r.flags, OSVRT_TH_RST | OSVRT_TH_ACK);
    CHECK_EQ(r.ack, 2);
    pair_free(&p);
}


/* Simultaneous open (RFC 9293 figure 7): SYN_SENT -> SYN_RECEIVED ->
 * ESTABLISHED on both sides, no listener anywhere. */
static void test_simultaneous_open(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t a = osvrt_tcp_connect(p.st[0], ADDR_S, 6000, 5000, p.now);
    int32_t b = osvrt_tcp_connect(p.st[1], ADDR_C, 5000, 6000, p.now);
    CHECK(a >= 0 && b >= 0);
    pair_flush(&p);                 /* both SYNs on the wire before either arrives */
    int saw_syn_received = 0;
    struct evlog ea = {0}, eb = {0};
    for (int i = 0; i < 20 && (osvrt_tcp_state(p.st[0], a) != OSVRT_TCP_ESTABLISHED
                               || osvrt_tcp_state(p.st[1], b) != OSVRT_TCP_ESTABLISHED); i++) {
        pair_step(&p);
        saw_syn_received |= osvrt_tcp_state(p.st[0], a) == OSVRT_TCP_SYN_RECEIVED;
        pair_events(&p, 0, &ea);
        pair_events(&p, 1, &eb);
    }
    CHECK(saw_syn_received);
    CHECK_EQ(osvrt_tcp_state(p.st[0], a), OSVRT_TCP_ESTABLISHED);
    CHECK_EQ(osvrt_tcp_state(p.st[1], b), OSVRT_TCP_ESTABLISHED);
    CHECK(ev_of(&ea, a) & OSVRT_TCP_EV_ESTABLISHED);
    CHECK(ev_of(&eb, b) & OSVRT_TCP_EV_ESTABLISHED);
    CHECK_EQ(pair_stats(&p, 0).rsts_out + pair_stats(&p, 1).rsts_out, 0);
    pair_transfer(&p, a, b, 50000, 50000, 100000);
    pair_free(&p);
}

/* Move n bytes from `from` (on side `side`) to `to` (sent, delivered, read). */
static void ping(struct pair *p, int32_t from, int side, int32_t to, const uint8_t *msg,
                 uint32_t n)
{
    CHECK_EQ(osvrt_tcp_send(p->st[side], from, msg, n, p->now), (int64_t)n);
    uint8_t got[256];
    int64_t r = -EAGAIN;
    for (int step = 0; step < 100 && r == -EAGAIN; step++) {
        pair_step(p);
        r = osvrt_tcp_recv(p->st[!side], to, got, sizeof got, p->now);
    }
    CHECK_EQ(r, (int64_t)n);
    pair_flush(p);      /* what the recv produced goes out now, as the link's recv call does */
}

/* n request-replies of 64 bytes from the client c to the server s. */
static void request_replies(struct pair *p, int32_t c, int32_t s, int n)
{
    uint8_t msg[64];
    memset(msg, 7, sizeof msg);
    for (int i = 0; i < n; i++) {
        ping(p, c, 0, s, msg, sizeof msg);
        ping(p, s, 1, c, msg, sizeof msg);
    }
}

/* Request-reply with small messages: each reply carries the ACK and the
 * window; reading a request never sends a pure window update ahead of it
 * (it did every ~MSS / 64 requests). */
static void test_pingpong_one_segment_per_reply(void)
{
    struct pair p;
    pair_init(&p, NULL, NULL);
    int32_t c, s;
    pair_connect(&p, 80, &c, &s);
    request_replies(&p, c, s, 1);  /* the first read may open the window past the SYN's */
    uint64_t before = p.sent[1];
    request_replies(&p, c, s, 300);
    CHECK_EQ(p.sent[1] - before, 300);
    pair_free(&p);
}

/* abort_all (a stack that closes): a RST to every connection the peer
 * knows, released ones still closing (orphans) and unaccepted ones
 * included, more of them than the control ring holds (the caller drains
 * the ring between calls); then nothing is left, listeners included. */
static void test_abort_all(void)
{
    enum { N = 100 };               /* more than the control ring's 64 */
    struct osvrt_tcp_config cfg;
    osvrt_tcp_config_init(&cfg);
    cfg.max_conns = 2 * N;          /* the pair's default is 64 */
    struct pair p;
    pair_init(&p, &cfg, &cfg);
    static int32_t c[N + 1], s[N];
    for (int i = 0; i < N; i++)
        pair_connect(&p, 80, &c[i], &s[i]);
    CHECK_EQ(osvrt_tcp_close(p.st[1], s[0], p.now), 0);     /* an orphan ... */
    c[N] = osvrt_tcp_connect(p.st[0], ADDR_S, 80, 0, p.now);  /* ... and one not accepted */
    CHECK(c[N] >= 0);
    struct osvrt_tcp_stats st;
    for (int i = 0; i < 20; i++) {  /* not longer: an idle step jumps to the orphan's timeout */
        pair_step(&p);
        st = pair_stats(&p, 1);
        if (st.conns[OSVRT_TCP_FIN_WAIT_2] && st.conns[OSVRT_TCP_ESTABLISHED] == N)
            break;
    }
    CHECK_EQ(st.conns[OSVRT_TCP_FIN_WAIT_2], 1);
    CHECK_EQ(st.conns[OSVRT_TCP_ESTABLISHED], N);
    int32_t left = osvrt_tcp_abort_all(p.st[1], p.now);
    CHECK(left > 0);                /* the ring filled */
    while (left) {
        pair_flush(&p);             /* what the stack's pump() does: the RSTs leave */
        int32_t owed = left;
        left = osvrt_tcp_abort_all(p.st[1], p.now);
        CHECK(left < owed);
    }
    st = pair_stats(&p, 1);
    CHECK_EQ(st.rsts_out, N + 1);
    CHECK_EQ(st.ctl_overflow, 0);
    for (int i = 0; i < OSVRT_TCP_NSTATES; i++)
        CHECK_EQ(st.conns[i], 0);
    CHECK_EQ(osvrt_tcp_state(p.st[1], s[1]), -EBADF);
    CHECK_EQ(osvrt_tcp_state(p.st[1], p.lid[0]), -EBADF);
    for (int i = 0; i < 20; i++)
        pair_step(&p);
    CHECK_EQ(pair_stats(&p, 0).rsts_in, N + 1);
    uint8_t b[16];
    for (int i = 1; i <= N; i++)
        CHECK_EQ(osvrt_tcp_recv(p.st[0], c[i], b, sizeof b, p.now), -ECONNRESET);
    CHECK_EQ(osvrt_tcp_state(p.st[0], c[0]), OSVRT_TCP_CLOSED);
    CHECK_EQ(osvrt_tcp_abort_all(p.st[1], p.now), 0);      /* nothing left: a no-op */
    pair_free(&p);
}

int main(void)
{
    test_abort_all();
    test_pingpong_one_segment_per_reply();
    test_simultaneous_open();
    test_demux_then_input_conn();
    test_blind_attacks_challenged();
    test_rst_in_syn_received();
    test_data_after_close_resets();
    test_reconnect_over_time_wait();
    test_bad_config_and_ids();
    test_handshake_and_options();
    test_syn_without_options();
    test_bulk_both_ways();
    test_half_close_and_time_wait();
    test_simultaneous_close();
    test_reset();
    test_close_with_unread_data_resets();
    test_syn_backlog_overflow();
    test_bad_checksums_dropped();
    test_malformed_dropped();
    printf("test_tcp: ok\n");
    return 0;
}
