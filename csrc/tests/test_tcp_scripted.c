/* test_tcp_scripted.c - the TCP engine against a scripted peer: segments
 * the test crafts one at a time, for the orders of events a second engine
 * does not produce on cue.  Each case is a stall or a hole a review found:
 * a resend held after an RTO with no timer left, the byte of a zero-window
 * probe left as a hole when the window opens, keep-alive probes never sent
 * in FIN_WAIT_2, a SYN-ACK that arrives between the SYN's RTO and output(),
 * duplicates after a partial ACK that did not inflate cwnd, a FIN out of
 * order never ACKed, a small peer MSS raised, a simultaneous open that
 * waited for an RTO, an RTO after a handshake that gave no RTT sample, an
 * ACK beyond the SYN-ACK answered with an ACK instead of a RST. */
#include <stdio.h>

#include "tcp_pair.h"

#define PEER_PORT 80
#define OUR_PORT 40000
#define PEER_ISN 5000u

struct script {
    struct osvrt_tcp_stack *s;
    int64_t now;
    int32_t id;
    uint32_t iss;                   /* our ISN */
    struct osvrt_tcp_seg out[64];   /* what the last drain() sent */
    int nout;
};

/* A segment from the peer to us, announcing MSS `mss` on a SYN; the
 * engine's invariants hold after it. */
static void peer_send_mss(struct script *k, uint32_t seq, uint32_t ack, uint8_t flags,
                          uint16_t wnd, uint16_t mss)
{
    uint8_t pkt[64], opts[4] = {2, 4, (uint8_t)(mss >> 8), (uint8_t)(mss & 0xff)};
    struct osvrt_tcp_seg g = {.saddr = ADDR_S, .daddr = ADDR_C, .sport = PEER_PORT,
                              .dport = OUR_PORT, .seq = seq, .ack = ack, .flags = flags,
                              .wnd = wnd};
    uint32_t n = osvrt_tcp_build(pkt, &g, opts, flags & OSVRT_TH_SYN ? 4 : 0, 1);
    osvrt_tcp_input(k->s, pkt, n, 0, k->now);
    int line = osvrt_tcp_invariants(k->s);
    CHECK_MSG(line == 0, "invariant at tcp.c:%d broken\n", line);
}

static void peer_send(struct script *k, uint32_t seq, uint32_t ack, uint8_t flags, uint16_t wnd)
{
    peer_send_mss(k, seq, ack, flags, wnd, 1460);
}

/* Everything we send now, into k->out; returns how many segments. */
static int drain(struct script *k)
{
    uint8_t buf[2048];
    int32_t n;
    k->nout = 0;
    while ((n = osvrt_tcp_output(k->s, buf, sizeof buf, k->now)) > 0) {
        CHECK(k->nout < 64);
        CHECK_EQ(osvrt_tcp_parse(buf, (uint32_t)n, 0, &k->out[k->nout]), 0);
        k->nout++;
    }
    int line = osvrt_tcp_invariants(k->s);
    CHECK_MSG(line == 0, "invariant at tcp.c:%d broken\n", line);
    return k->nout;
}

/* Run the timers due at the next deadline (which must exist). */
static void next_timer(struct script *k)
{
    int64_t d = osvrt_tcp_next_deadline(k->s);
    CHECK_MSG(d != INT64_MAX, "no timer armed\n");
    k->now = d;
    osvrt_tcp_on_timer(k->s, k->now);
}

/* Our SYN to the peer is out; nothing has come back. */
static void script_connect(struct script *k, const struct osvrt_tcp_config *base)
{
    memset(k, 0, sizeof *k);
    k->s = pair_stack(ADDR_C, base);    /* one side of tcp_pair.h's pair: the other is us */
    k->now = 1000 * MS;
    k->id = osvrt_tcp_connect(k->s, ADDR_S, PEER_PORT, OUR_PORT, k->now);
    CHECK(k->id >= 0);
    CHECK_EQ(drain(k), 1);
    k->iss = k->out[0].seq;
}

/* Connect to the peer, which offers window `wnd`; established unless
 * syn_rto (then the SYN's RTO fires before the SYN-ACK comes in). */
static void script_open(struct script *k, const struct osvrt_tcp_config *base, uint16_t wnd,
                        int syn_rto)
{
    script_connect(k, base);
    if (syn_rto)
        next_timer(k);              /* rewinds snd_nxt to the ISS; output() not run yet */
    peer_send(k, PEER_ISN, k->iss + 1, OSVRT_TH_SYN | OSVRT_TH_ACK, wnd);
    CHECK_EQ(osvrt_tcp_state(k->s, k->id), OSVRT_TCP_ESTABLISHED);
}

static uint8_t data[20000];

/* The peer's window has shrunk below a segment (its application reads
 * slowly), the persist timer forces out a short segment, and it is lost.
 * The RTO's resend is as short: it must go out (it used to be held by
 * silly-window avoidance, with no timer left armed: a stall forever). */
static void test_rto_resend_is_never_held(void)
{
    struct script k;
    script_open(&k, NULL, 10000, 0);
    drain(&k);
    CHECK_EQ(osvrt_tcp_send(k.s, k.id, data, sizeof data, k.now), (int64_t)sizeof data);
    drain(&k);
    uint32_t end = k.out[k.nout - 1].seq + k.out[k.nout - 1].len;
    uint32_t wnd = 10000 - (end - k.iss - 1);       /* all acked; this much room left */
    CHECK(wnd < 1460);
    k.now += 10 * MS;
    peer_send(&k, PEER_ISN + 1, end, OSVRT_TH_ACK, (uint16_t)wnd);
    CHECK_EQ(drain(&k), 0);                          /* held: less than a segment */
    next_timer(&k);                                  /* persist: forced out ... */
    CHECK_EQ(drain(&k), 1);
    CHECK_EQ(k.out[0].len, wnd);                     /* ... and lost */
    next_timer(&k);                                  /* the RTO */
    CHECK_EQ(drain(&k), 1);
    CHECK_EQ(k.out[0].seq, end);
    CHECK_EQ(k.out[0].len, wnd);
    CHECK(osvrt_tcp_next_deadline(k.s) != INT64_MAX);   /* the RTO runs again */
    osvrt_tcp_free(k.s);
}

/* The peer's window is 0; our probes' byte is refused (the peer ACKs
 * snd_una each time).  When the window opens, the data goes from snd_una,
 * the probe's byte first: none is left as a hole. */
static void test_window_reopens_from_the_probes_byte(void)
{
    struct script k;
    script_open(&k, NULL, 10000, 0);
    drain(&k);
    CHECK_EQ(osvrt_tcp_send(k.s, k.id, data, 3000, k.now), 3000);
    drain(&k);
    uint32_t una = k.iss + 1 + 3000;
    k.now += 10 * MS;
    peer_send(&k, PEER_ISN + 1, una, OSVRT_TH_ACK, 0);     /* all acked; window 0 */
    CHECK_EQ(osvrt_tcp_send(k.s, k.id, data, 1000, k.now), 1000);
    CHECK_EQ(drain(&k), 0);
    int probes = 0;
    for (int i = 0; i < 5; i++) {
        next_timer(&k);
        if (drain(&k)) {
            CHECK_EQ(k.out[0].seq, una);
            CHECK_EQ(k.out[0].len, 1);
            probes++;
        }
        k.now += MS;
        peer_send(&k, PEER_ISN + 1, una, OSVRT_TH_ACK, 0);  /* refused */
        drain(&k);
    }
    CHECK(probes >= 3);
    k.now += MS;
    peer_send(&k, PEER_ISN + 1, una, OSVRT_TH_ACK, 10000);  /* the window opens */
    CHECK_EQ(drain(&k), 1);
    CHECK_EQ(k.out[0].seq, una);
    CHECK_EQ(k.out[0].len, 1000);
    osvrt_tcp_free(k.s);
}

/* Keep-alive on a half-closed connection (FIN_WAIT_2, the peer still
 * working on its reply): the probes are sent, and a peer that answers them
 * keeps the connection (they used to be counted but never sent, and the
 * connection was reset with ETIMEDOUT). */
static void test_keepalive_probes_in_fin_wait_2(void)
{
    struct osvrt_tcp_config cfg;
    osvrt_tcp_config_init(&cfg);
    cfg.keepalive_ns = 10000 * MS;
    struct script k;
    script_open(&k, &cfg, 65535, 0);
    drain(&k);
    CHECK_EQ(osvrt_tcp_shutdown_write(k.s, k.id, k.now), 0);
    CHECK_EQ(drain(&k), 1);                          /* our FIN */
    peer_send(&k, PEER_ISN + 1, k.iss + 2, OSVRT_TH_ACK, 65535);
    drain(&k);
    CHECK_EQ(osvrt_tcp_state(k.s, k.id), OSVRT_TCP_FIN_WAIT_2);
    for (int round = 0; round < 5; round++) {        /* more than keepalive_probes rounds */
        int sent = 0;
        while (!sent) {
            next_timer(&k);
            sent = drain(&k);
        }
        CHECK_EQ(sent, 1);
        CHECK_EQ(k.out[0].seq, k.iss + 1);           /* the FIN's sequence: old, no data */
        CHECK_EQ(k.out[0].len, 0);
        CHECK(!(k.out[0].flags & OSVRT_TH_RST));
        peer_send(&k, PEER_ISN + 1, k.iss + 2, OSVRT_TH_ACK, 65535);   /* the answer */
        drain(&k);
        CHECK_EQ(osvrt_tcp_state(k.s, k.id), OSVRT_TCP_FIN_WAIT_2);
    }
    struct osvrt_tcp_stats st;
    osvrt_tcp_get_stats(k.s, &st);
    CHECK(st.keepalive_probes >= 5);
    CHECK_EQ(st.timeouts, 0);
    osvrt_tcp_free(k.s);
}

/* The SYN's RTO fires (snd_nxt back to the ISS) and the SYN-ACK arrives
 * before output() runs: the first data byte has the sequence ISS + 1 (it
 * used to go at the ISS, one byte of the ring's garbage in front). */
static void test_syn_ack_between_the_syns_rto_and_output(void)
{
    struct script k;
    script_open(&k, NULL, 10000, 1);
    CHECK_EQ(osvrt_tcp_send(k.s, k.id, data, 100, k.now), 100);
    drain(&k);
    int found = 0;
    for (int i = 0; i < k.nout; i++)
        if (k.out[i].len) {
            CHECK_EQ(k.out[i].seq, k.iss + 1);
            CHECK_EQ(k.out[i].len, 100);
            found = 1;
        }
    CHECK(found);
    osvrt_tcp_free(k.s);
}

static uint32_t cwnd_of(struct script *k)
{
    struct osvrt_tcp_conn_info ci;
    CHECK_EQ(osvrt_tcp_conn_info(k->s, k->id, &ci), 0);
    return ci.cwnd;
}

/* NewReno (RFC 6582 3.2): after a partial ACK the sender stays in fast
 * recovery and every further duplicate ACK inflates cwnd by a segment.
 * The partial ACK zeroed the duplicate count, and inflation waited for
 * the count to pass 3 again: three duplicates that sent nothing. */
static void test_duplicates_after_a_partial_ack_inflate_cwnd(void)
{
    struct script k;
    script_open(&k, NULL, 65535, 0);
    drain(&k);
    uint32_t una = k.iss + 1;
    CHECK_EQ(osvrt_tcp_send(k.s, k.id, data, 14600, k.now), 14600);
    CHECK_EQ(drain(&k), 10);                        /* IW10, all out */
    for (int i = 0; i < 3; i++) {                   /* the first segment lost */
        k.now += MS;
        peer_send(&k, PEER_ISN + 1, una, OSVRT_TH_ACK, 65535);
    }
    drain(&k);                                      /* fast retransmit */
    k.now += MS;
    peer_send(&k, PEER_ISN + 1, una + 2920, OSVRT_TH_ACK, 65535);   /* partial ACK */
    drain(&k);
    uint32_t before = cwnd_of(&k);
    k.now += MS;
    peer_send(&k, PEER_ISN + 1, una + 2920, OSVRT_TH_ACK, 65535);   /* a duplicate */
    CHECK_EQ(cwnd_of(&k), before + 1460);
    osvrt_tcp_free(k.s);
}

/* A FIN out of order (a hole before it), with no text: a duplicate ACK at
 * once (RFC 5681 4.2), as for text out of order.  It was ACKed by nothing,
 * and no timer was armed for it. */
static void test_a_fin_out_of_order_is_acked_at_once(void)
{
    struct script k;
    script_open(&k, NULL, 10000, 0);
    drain(&k);
    k.now += MS;
    peer_send(&k, PEER_ISN + 1 + 100, k.iss + 1, OSVRT_TH_ACK | OSVRT_TH_FIN, 10000);
    CHECK_EQ(drain(&k), 1);
    CHECK_EQ(k.out[0].ack, PEER_ISN + 1);
    CHECK_EQ(k.out[0].flags & OSVRT_TH_FIN, 0);
    osvrt_tcp_free(k.s);
}

/* The peer's MSS is a limit (RFC 9293 3.7.1): segments were raised to 64
 * bytes for a peer announcing less. */
static void test_a_small_peer_mss_is_honoured(void)
{
    struct script k;
    script_connect(&k, NULL);
    peer_send_mss(&k, PEER_ISN, k.iss + 1, OSVRT_TH_SYN | OSVRT_TH_ACK, 10000, 50);
    CHECK_EQ(osvrt_tcp_state(k.s, k.id), OSVRT_TCP_ESTABLISHED);
    drain(&k);
    CHECK_EQ(osvrt_tcp_send(k.s, k.id, data, 400, k.now), 400);
    CHECK(drain(&k) >= 8);
    for (int i = 0; i < k.nout; i++)
        CHECK(k.out[i].len <= 50);
    osvrt_tcp_free(k.s);
}

/* Simultaneous open (RFC 9293 figure 8): our SYN and the peer's cross; we
 * answer its SYN with a SYN-ACK, and its SYN-ACK (a repeat of its SYN,
 * with our SYN acknowledged) completes the handshake at once.  It was
 * refused as left of the window: established only after our SYN-ACK's RTO. */
static void test_simultaneous_open_establishes_on_the_peers_syn_ack(void)
{
    struct script k;
    script_connect(&k, NULL);
    peer_send(&k, PEER_ISN, 0, OSVRT_TH_SYN, 10000);              /* crossed SYNs */
    CHECK_EQ(osvrt_tcp_state(k.s, k.id), OSVRT_TCP_SYN_RECEIVED);
    CHECK_EQ(drain(&k), 1);                                          /* our SYN-ACK */
    CHECK_EQ(k.out[0].flags & (OSVRT_TH_SYN | OSVRT_TH_ACK), OSVRT_TH_SYN | OSVRT_TH_ACK);
    k.now += MS;
    peer_send(&k, PEER_ISN, k.iss + 1, OSVRT_TH_SYN | OSVRT_TH_ACK, 10000);
    CHECK_EQ(osvrt_tcp_state(k.s, k.id), OSVRT_TCP_ESTABLISHED);
    struct osvrt_tcp_conn_info ci;
    CHECK_EQ(osvrt_tcp_conn_info(k.s, k.id, &ci), 0);
    CHECK_EQ(ci.snd_wnd, 10000);                     /* a SYN's window is not scaled */
    CHECK_EQ(ci.rto_ns, 1000 * MS);      /* no timer fired: RFC 6298 2.1's, not 5.7's 3 s */
    CHECK_EQ(osvrt_tcp_send(k.s, k.id, data, 100, k.now), 100);
    drain(&k);
    CHECK(k.nout >= 1);
    CHECK_EQ(k.out[k.nout - 1].seq, k.iss + 1);
    CHECK_EQ(k.out[k.nout - 1].ack, PEER_ISN + 1);
    osvrt_tcp_free(k.s);
}

/* We listen; the peer's SYN came and our SYN-ACK (ISN *iss) is out.
 * Returns the listener's id. */
static int32_t script_listen(struct script *k, uint32_t *iss)
{
    memset(k, 0, sizeof *k);
    k->s = pair_stack(ADDR_C, NULL);
    k->now = 1000 * MS;
    int32_t lid = osvrt_tcp_listen(k->s, OUR_PORT, 8);
    CHECK(lid >= 0);
    peer_send(k, PEER_ISN, 0, OSVRT_TH_SYN, 10000);
    CHECK_EQ(drain(k), 1);                                           /* SYN-ACK */
    *iss = k->out[0].seq;
    return lid;
}

static int64_t rto_of(struct script *k, int32_t id)
{
    struct osvrt_tcp_conn_info ci;
    CHECK_EQ(osvrt_tcp_conn_info(k->s, id, &ci), 0);
    return ci.rto_ns;
}

/* RFC 6298 5.7: a handshake whose SYN (ours, or our SYN-ACK) was sent again
 * gives no RTT sample (Karn), and data must start with an RTO of three
 * initial ones (3 s), not the backed-off one (2 s) nor the initial 1 s that
 * already proved too short.  With a sample, the RTO is the sample's. */
static void test_a_handshake_without_an_rtt_sample_starts_at_three_initial_rtos(void)
{
    struct script k;
    script_open(&k, NULL, 10000, 1);                /* our SYN was sent twice */
    CHECK_EQ(rto_of(&k, k.id), 3000 * MS);
    osvrt_tcp_free(k.s);
    script_open(&k, NULL, 10000, 0);                /* sampled: ~0 ns, rto_min */
    CHECK_EQ(rto_of(&k, k.id), 200 * MS);
    osvrt_tcp_free(k.s);

    /* The passive side: its SYN-ACK's RTO fires before the peer's ACK. */
    uint32_t iss;
    int32_t lid = script_listen(&k, &iss);
    next_timer(&k);
    CHECK_EQ(drain(&k), 1);                                          /* sent again */
    CHECK_EQ(k.out[0].seq, iss);
    k.now += MS;
    peer_send(&k, PEER_ISN + 1, iss + 1, OSVRT_TH_ACK, 10000);
    uint32_t raddr;
    uint16_t rport;
    int32_t id = osvrt_tcp_accept(k.s, lid, &raddr, &rport);
    CHECK(id >= 0);
    CHECK_EQ(osvrt_tcp_state(k.s, id), OSVRT_TCP_ESTABLISHED);
    CHECK_EQ(rto_of(&k, id), 3000 * MS);
    osvrt_tcp_free(k.s);
}

/* RFC 9293 3.10.7.4: in SYN-RECEIVED an ACK of more than our SYN-ACK is not
 * acceptable and gets a RST <SEQ=SEG.ACK> (it got an ACK, RFC 5961's answer
 * in the synchronized states); the half-open connection stays and completes
 * on the right ACK. */
static void test_an_ack_beyond_the_syn_ack_is_reset_in_syn_received(void)
{
    struct script k;
    uint32_t iss;
    int32_t lid = script_listen(&k, &iss);
    peer_send(&k, PEER_ISN + 1, iss + 100, OSVRT_TH_ACK, 10000);
    CHECK_EQ(drain(&k), 1);
    CHECK_EQ(k.out[0].flags & (OSVRT_TH_RST | OSVRT_TH_ACK), OSVRT_TH_RST);
    CHECK_EQ(k.out[0].seq, iss + 100);
    uint32_t raddr;
    uint16_t rport;
    CHECK(osvrt_tcp_accept(k.s, lid, &raddr, &rport) < 0);          /* not established */
    peer_send(&k, PEER_ISN + 1, iss + 1, OSVRT_TH_ACK, 10000);
    int32_t id = osvrt_tcp_accept(k.s, lid, &raddr, &rport);
    CHECK(id >= 0);
    CHECK_EQ(osvrt_tcp_state(k.s, id), OSVRT_TCP_ESTABLISHED);
    osvrt_tcp_free(k.s);
}

int main(void)
{
    for (uint32_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7);
    test_rto_resend_is_never_held();
    test_window_reopens_from_the_probes_byte();
    test_keepalive_probes_in_fin_wait_2();
    test_syn_ack_between_the_syns_rto_and_output();
    test_duplicates_after_a_partial_ack_inflate_cwnd();
    test_a_fin_out_of_order_is_acked_at_once();
    test_a_small_peer_mss_is_honoured();
    test_simultaneous_open_establishes_on_the_peers_syn_ack();
    test_a_handshake_without_an_rtt_sample_starts_at_three_initial_rtos();
    test_an_ack_beyond_the_syn_ack_is_reset_in_syn_received();
    printf("test_tcp_scripted: ok\n");
    return 0;
}
