/* test_tcp_link.c - the user stack's C link loop (csrc/net/tcp/tcp_link.c)
 * over a datagram socketpair (one datagram is one frame): frames classified
 * and counted as the Python link did, malformed ones dropped, a TCP
 * connection with a peer engine driven in memory on the other end (the
 * handshake, packets held for an unknown next hop, data both ways in
 * batches), segments handed to a waiting owner and run in order, batches
 * larger than one recvmmsg, truncated frames dropped unparsed, send errors
 * that lose their frame (and an fd that is no socket, which stops the batch). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include "check.h"
#include "netframe.h"
#include "tcp.h"
#include "tcp_link.h"

#define ADDR_C 0xC6120001u          /* 198.18.0.1: the peer, an engine in memory */
#define ADDR_S 0xC6120002u          /* 198.18.0.2: the stack behind the link */
#define MS 1000000ll

static const uint8_t MAC_S[6] = {0x02, 0, 0, 0, 0, 0x02};
static const uint8_t MAC_C[6] = {0x02, 0, 0, 0, 0, 0x01};

struct rig {
    struct osvrt_tcp_stack *s, *c;  /* behind the link; the peer */
    struct osvrt_tcp_link *l;
    struct osvrt_tcp_link_view *v;
    int wire;                       /* the peer's end of the socketpair */
    int fd;                         /* the link's end */
    int64_t now;
};

static struct osvrt_tcp_stack *engine(uint32_t addr)
{
    struct osvrt_tcp_config cfg;
    osvrt_tcp_config_init(&cfg);
    cfg.addr = addr;
    cfg.max_conns = 64;
    cfg.isn_key[0] = addr;
    int err = 0;
    struct osvrt_tcp_stack *s = osvrt_tcp_new(&cfg, &err);
    CHECK_MSG(s, "osvrt_tcp_new: %d", err);
    return s;
}

static void rig_init(struct rig *r)
{
    memset(r, 0, sizeof *r);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv) == 0);
    int big = 4 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    r->wire = sv[1];
    r->fd = sv[0];
    r->s = engine(ADDR_S);
    r->c = engine(ADDR_C);
    int err = 0;
    CHECK(!osvrt_tcp_link_new(r->s, sv[0], MAC_S, 64, 20, &err) && err == -EINVAL);
    r->l = osvrt_tcp_link_new(r->s, sv[0], MAC_S, 64, 1500, &err);
    CHECK_MSG(r->l, "osvrt_tcp_link_new: %d", err);
    r->v = osvrt_tcp_link_view(r->l);
    r->now = 1000 * MS;
}

static void rig_free(struct rig *r)
{
    /* closed: the link never touches the fd number again */
    osvrt_tcp_link_close(r->l);
    CHECK(osvrt_tcp_link_poll(r->l, r->now) == -EBADF);
    osvrt_tcp_link_free(r->l);
    osvrt_tcp_free(r->s);
    osvrt_tcp_free(r->c);
    close(r->wire);
}

static struct osvrt_tcp_link_stats stats(struct rig *r)
{
    struct osvrt_tcp_link_stats st;
    osvrt_tcp_link_get_stats(r->l, &st);
    return st;
}

static void send_frame(struct rig *r, const uint8_t *f, uint32_t n)
{
    CHECK_EQ(send(r->wire, f, n, 0), n);
}

/* The peer's output, each packet in an Ethernet frame to the link; returns how many. */
static int peer_out(struct rig *r)
{
    uint8_t f[2048];
    int n = 0;
    int32_t m;
    while ((m = osvrt_tcp_output(r->c, f + 14, sizeof f - 14, r->now)) > 0) {
        memcpy(f, MAC_S, 6);
        memcpy(f + 6, MAC_C, 6);
        f[12] = 0x08;
        f[13] = 0;
        send_frame(r, f, (uint32_t)m + 14);
        n++;
    }
    return n;
}

/* Frames the link sent: each must carry the peer's Ethernet header; the
 * packet goes to the peer engine.  Returns how many. */
static int peer_in(struct rig *r)
{
    uint8_t f[4096];
    int n = 0;
    ssize_t m;
    while ((m = recv(r->wire, f, sizeof f, 0)) > 0) {
        CHECK(m > 14);
        CHECK(memcmp(f, MAC_C, 6) == 0 && memcmp(f + 6, MAC_S, 6) == 0);
        CHECK(f[12] == 0x08 && f[13] == 0);
        CHECK_EQ(osvrt_tcp_input(r->c, f + 14, (uint32_t)m - 14, 0, r->now), 0);
        n++;
    }
    return n;
}

/* Poll until a batch comes back short, as stack.py does; the view is the
 * last poll's. */
static int32_t poll_all(struct rig *r)
{
    int32_t total = 0, n;
    do {
        n = osvrt_tcp_link_poll(r->l, r->now);
        CHECK(n >= 0);
        total += n;
    } while (n == OSVRT_TCP_LINK_BATCH);
    return total;
}

/* ---- classification: what the Python link counted, counted the same ---- */

static void test_malformed_frames_counted_and_dropped(void)
{
    struct rig r;
    rig_init(&r);
    uint8_t f[256];
    memset(f, 0, sizeof f);
    send_frame(&r, f, 10);                              /* eth_short */
    f[12] = 0x86;
    f[13] = 0xdd;
    send_frame(&r, f, 60);                              /* ethertype (IPv6) */
    f[12] = 0x08;
    f[13] = 0x00;
    send_frame(&r, f, 14 + 19);                         /* ip_short */
    struct nf_opts udp = {.proto = 17, .saddr = ADDR_C, .daddr = ADDR_S, .sport = 1, .dport = 2};
    uint32_t n = nf_build(f, sizeof f, &udp), n_icmp = n;
    send_frame(&r, f, n);                               /* ip_protocol */
    f[9 + 14] = 1;                                      /* ICMP: left to the caller */
    send_frame(&r, f, n);
    uint8_t arp[42] = {0};
    memset(arp, 0xff, 6);
    arp[12] = 0x08;
    arp[13] = 0x06;
    arp[41] = 0x5a;
    send_frame(&r, arp, sizeof arp);                    /* ARP: left to the caller */
    struct nf_opts tcp = {.proto = 6, .saddr = ADDR_C, .daddr = ADDR_S, .sport = 5, .dport = 80,
                          .bad_l4_csum = 1};
    n = nf_build(f, sizeof f, &tcp);
    send_frame(&r, f, n);                               /* TCP, bad checksum: the engine's drop */
    tcp.bad_l4_csum = 0;
    tcp.bad_ip_csum = 1;
    n = nf_build(f, sizeof f, &tcp);
    send_frame(&r, f, n);                               /* TCP, bad IPv4 checksum */
    tcp.bad_ip_csum = 0;
    tcp.ihl_override = 3;
    n = nf_build(f, sizeof f, &tcp);
    send_frame(&r, f, n);                               /* TCP, IHL 3 */

    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), 9);
    struct osvrt_tcp_link_stats st = stats(&r);
    CHECK_EQ(st.frames_in, 9);
    CHECK_EQ(st.eth_short, 1);
    CHECK_EQ(st.ethertype, 1);
    CHECK_EQ(st.ip_short, 1);
    CHECK_EQ(st.ip_protocol, 1);
    CHECK_EQ(st.passed, 2);
    CHECK_EQ(st.segments_in_link, 3);
    CHECK_EQ(st.frames_out, 0);
    /* the two frames for the caller, where they were read */
    CHECK_EQ(r.v->npass, 2);
    CHECK_EQ(r.v->todo, OSVRT_TCP_LINK_TODO_PASS);      /* the one word the caller reads */
    CHECK_EQ(r.v->pass_index[0], 4);
    CHECK_EQ(r.v->pass_len[0], n_icmp);
    const uint8_t *icmp = r.v->rx + (size_t)r.v->pass_index[0] * r.v->rx_stride;
    CHECK_EQ(icmp[14 + 9], 1);
    CHECK_EQ(r.v->pass_index[1], 5);
    CHECK_EQ(r.v->pass_len[1], sizeof arp);
    const uint8_t *a = r.v->rx + (size_t)r.v->pass_index[1] * r.v->rx_stride;
    CHECK_EQ(a[41], 0x5a);
    struct osvrt_tcp_stats ts;
    osvrt_tcp_get_stats(r.s, &ts);
    CHECK_EQ(ts.drops[OSVRT_TCP_DROP_BAD_CSUM], 1);
    CHECK_EQ(ts.drops[OSVRT_TCP_DROP_BAD_IP_CSUM], 1);
    CHECK_EQ(ts.drops[OSVRT_TCP_DROP_BAD_IP], 1);
    CHECK_EQ(ts.segs_in, 0);
    /* A frame with a partial checksum (the kernel's CSUMNOTREADY) is counted
     * and the TCP checksum is not checked: the engine answers the bad-sum
     * segment for a closed port with a RST instead of dropping it as corrupt. */
    tcp.ihl_override = 0;
    tcp.bad_l4_csum = 1;
    tcp.tcp_flags = 0x02;                               /* SYN to a closed port */
    n = nf_build(f, sizeof f, &tcp);
    CHECK_EQ(osvrt_tcp_link_frame(r.l, f, n, OSVRT_TCP_IN_CSUM_OK, r.now), 0);
    CHECK_EQ(stats(&r).checksum_partial, 1);
    osvrt_tcp_get_stats(r.s, &ts);
    CHECK_EQ(ts.drops[OSVRT_TCP_DROP_BAD_CSUM], 1);
    CHECK_EQ(ts.drops[OSVRT_TCP_DROP_NO_CONN], 1);
    /* Its RST has no next hop yet: held for the caller (ARP), not sent. */
    CHECK_EQ(osvrt_tcp_link_flush(r.l, r.now), 0);
    CHECK_EQ(r.v->nheld, 1);
    const uint8_t *held = r.v->tx + r.v->held_off[0];
    CHECK_EQ((uint32_t)held[16] << 24 | (uint32_t)held[17] << 16 | held[18] << 8 | held[19],
             ADDR_C);
    CHECK_EQ(held[33] & 0x04, 0x04);                    /* RST */
    CHECK_EQ(r.v->held_len[0], 40);
    /* Every call resets the view. */
    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), 0);
    CHECK_EQ(r.v->npass + r.v->nheld + r.v->nhanded + r.v->nevents, 0);
    CHECK_EQ(r.v->todo, 0);
    /* A deadline earlier than the one the caller's timer sleeps until is flagged. */
    r.v->armed = r.now;
    CHECK_EQ(osvrt_tcp_connect(r.s, ADDR_C, 9, 0, r.now) >= 0, 1);
    osvrt_tcp_link_flush(r.l, r.now);
    CHECK(r.v->next_deadline < INT64_MAX);
    CHECK_EQ(r.v->todo & OSVRT_TCP_LINK_TODO_DEADLINE, 0);   /* the SYN's RTO is after r.now */
    r.v->armed = INT64_MAX;
    osvrt_tcp_link_flush(r.l, r.now);
    CHECK(r.v->todo & OSVRT_TCP_LINK_TODO_DEADLINE);
    rig_free(&r);
}

/* ---- a connection through the link ---- */

static int32_t connect_through(struct rig *r, int32_t *cid)
{
    int32_t lid = osvrt_tcp_listen(r->s, 80, 8);
    CHECK(lid >= 0);
    *cid = osvrt_tcp_connect(r->c, ADDR_S, 80, 0, r->now);
    CHECK(*cid >= 0);
    CHECK_EQ(peer_out(r), 1);                            /* SYN */
    CHECK_EQ(poll_all(r), 1);
    /* No next hop for 198.18.0.1 yet: the SYN-ACK is held for ARP. */
    CHECK_EQ(r->v->nheld, 1);
    CHECK_EQ(peer_in(r), 0);
    /* The caller resolves it and sends the held packet itself (stack.py). */
    uint8_t f[2048];
    memcpy(f, MAC_C, 6);
    memcpy(f + 6, MAC_S, 6);
    f[12] = 0x08;
    f[13] = 0;
    memcpy(f + 14, r->v->tx + r->v->held_off[0], r->v->held_len[0]);
    osvrt_tcp_link_set_peer(r->l, ADDR_C, MAC_C, r->now + 1000 * MS);
    CHECK_EQ(osvrt_tcp_input(r->c, f + 14, r->v->held_len[0], 0, r->now), 0);
    CHECK_EQ(peer_out(r), 1);                            /* ACK */
    CHECK_EQ(poll_all(r), 1);
    /* The listener's event came out of the link call. */
    int acceptable = 0;
    for (uint32_t i = 0; i < r->v->nevents; i++)
        if (r->v->events[i].id == lid && (r->v->events[i].flags & OSVRT_TCP_EV_ACCEPTABLE))
            acceptable = 1;
    CHECK(acceptable);
    int32_t sid = osvrt_tcp_accept(r->s, lid, NULL, NULL);
    CHECK(sid >= 0);
    CHECK_EQ(osvrt_tcp_state(r->c, *cid), OSVRT_TCP_ESTABLISHED);
    return sid;
}

static void test_connection_through_the_link(void)
{
    struct rig r;
    rig_init(&r);
    int32_t cid;
    int32_t sid = connect_through(&r, &cid);
    /* peer -> stack: 40 KiB, in segments the link reads in batches */
    static uint8_t data[40000], got[65536];
    for (uint32_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    CHECK_EQ(osvrt_tcp_send(r.c, cid, data, sizeof data, r.now), (int64_t)sizeof data);
    uint32_t total = 0;
    int segs = 0, most = 0;
    for (int round = 0; total < sizeof data; round++) {  /* ACK clocking */
        CHECK(round < 50);
        int k = peer_out(&r);
        segs += k;
        most = k > most ? k : most;
        CHECK_EQ(poll_all(&r), k);
        peer_in(&r);
        int64_t m = osvrt_tcp_link_recv(r.l, sid, got + total, sizeof got - total, r.now);
        if (m > 0)
            total += (uint32_t)m;
        peer_in(&r);
    }
    CHECK(memcmp(got, data, sizeof data) == 0);
    CHECK(segs >= 27);                                  /* 1460-byte segments */
    CHECK(most >= 10);                                  /* some polls read a batch of several */
    CHECK_EQ(stats(&r).segments_in_link, 2 + (uint64_t)segs);
    /* stack -> peer: one send call, its segments out in sendmmsg batches */
    uint64_t before = stats(&r).frames_out;
    peer_in(&r);                                        /* the ACKs so far */
    CHECK_EQ(osvrt_tcp_link_send(r.l, sid, data, 30000, r.now), 30000);
    int out = peer_in(&r);
    CHECK(out >= 1);
    CHECK(stats(&r).frames_out > before);
    for (int round = 0; round < 50; round++) {           /* ACK clocking until all arrived */
        peer_out(&r);
        poll_all(&r);
        peer_in(&r);
        int64_t k = osvrt_tcp_recv(r.c, cid, got, sizeof got, r.now);
        static uint32_t total;
        if (k > 0) {
            CHECK(memcmp(got, data + total, (size_t)k) == 0);
            total += (uint32_t)k;
        }
        if (total == 30000)
            break;
        CHECK(round < 49);
    }
    CHECK_EQ(stats(&r).tx_full, 0);
    rig_free(&r);
}

static void test_segments_handed_to_a_waiting_owner_keep_their_order(void)
{
    struct rig r;
    rig_init(&r);
    int32_t cid;
    int32_t sid = connect_through(&r, &cid);
    uint32_t slot = (uint32_t)sid & (OSVRT_TCP_MAX_CONNS - 1);
    uint8_t got[256];
    /* The owner waits: "first " goes to its inbox, not through the engine. */
    r.v->waits[slot] = 1;
    CHECK_EQ(osvrt_tcp_send(r.c, cid, (const uint8_t *)"first ", 6, r.now), 6);
    CHECK_EQ(peer_out(&r), 1);
    CHECK_EQ(poll_all(&r), 1);
    CHECK_EQ(r.v->nhanded, 1);
    CHECK(r.v->todo & OSVRT_TCP_LINK_TODO_HANDED);
    CHECK_EQ(r.v->handed[0], sid);
    CHECK_EQ(osvrt_tcp_link_queued(r.l, sid), 1);
    CHECK_EQ(stats(&r).segments_to_owner, 1);
    CHECK_EQ(osvrt_tcp_recv(r.s, sid, got, sizeof got, r.now), -EAGAIN);   /* not run yet */
    /* Its wait was cancelled: the next segment runs in the link, after the first. */
    r.v->waits[slot] = 0;
    CHECK_EQ(osvrt_tcp_send(r.c, cid, (const uint8_t *)"second", 6, r.now), 6);
    CHECK_EQ(peer_out(&r), 1);
    CHECK_EQ(poll_all(&r), 1);
    CHECK_EQ(r.v->nhanded, 0);
    CHECK_EQ(osvrt_tcp_link_queued(r.l, sid), 0);
    CHECK_EQ(osvrt_tcp_link_recv(r.l, sid, got, sizeof got, r.now), 12);
    CHECK(memcmp(got, "first second", 12) == 0);
    /* Waiting again; the owner's recv runs its inbox itself. */
    r.v->waits[slot] = 1;
    CHECK_EQ(osvrt_tcp_send(r.c, cid, (const uint8_t *)"third", 5, r.now), 5);
    peer_out(&r);
    poll_all(&r);
    CHECK_EQ(osvrt_tcp_link_queued(r.l, sid), 1);
    CHECK_EQ(osvrt_tcp_link_recv(r.l, sid, got, sizeof got, r.now), 5);
    CHECK_EQ(osvrt_tcp_link_queued(r.l, sid), 0);
    /* drain(-1) runs everything; discard forgets it. */
    CHECK_EQ(osvrt_tcp_send(r.c, cid, (const uint8_t *)"4", 1, r.now), 1);
    peer_out(&r);
    poll_all(&r);
    CHECK_EQ(osvrt_tcp_link_drain(r.l, -1, r.now), 1);
    CHECK_EQ(osvrt_tcp_recv(r.s, sid, got, sizeof got, r.now), 1);
    CHECK_EQ(osvrt_tcp_send(r.c, cid, (const uint8_t *)"5", 1, r.now), 1);
    peer_out(&r);
    poll_all(&r);
    osvrt_tcp_link_discard(r.l);
    CHECK_EQ(osvrt_tcp_link_queued(r.l, sid), 0);
    CHECK_EQ(osvrt_tcp_link_drain(r.l, sid, r.now), 0);
    r.v->waits[slot] = 0;
    rig_free(&r);
}

static void test_more_frames_than_a_batch(void)
{
    struct rig r;
    rig_init(&r);
    uint8_t f[128];
    struct nf_opts udp = {.proto = 17, .saddr = ADDR_C, .daddr = ADDR_S, .sport = 1, .dport = 2};
    uint32_t n = nf_build(f, sizeof f, &udp);
    for (int i = 0; i < OSVRT_TCP_LINK_BATCH + 8; i++)
        send_frame(&r, f, n);
    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), OSVRT_TCP_LINK_BATCH);
    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), 8);
    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), 0);
    CHECK_EQ(stats(&r).ip_protocol, OSVRT_TCP_LINK_BATCH + 8);
    rig_free(&r);
}

static void test_an_expired_next_hop_is_resolved_again(void)
{
    struct rig r;
    rig_init(&r);
    osvrt_tcp_link_set_peer(r.l, ADDR_C, MAC_C, r.now - 1);      /* stale */
    uint8_t f[128];
    struct nf_opts syn = {.proto = 6, .saddr = ADDR_C, .daddr = ADDR_S, .sport = 5, .dport = 81,
                          .tcp_flags = 0x02};
    uint32_t n = nf_build(f, sizeof f, &syn);
    send_frame(&r, f, n);
    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), 1);
    CHECK_EQ(r.v->nheld, 1);                            /* the RST waits for ARP */
    osvrt_tcp_link_set_peer(r.l, ADDR_C, MAC_C, r.now + MS);   /* confirmed */
    send_frame(&r, f, n);
    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), 1);
    CHECK_EQ(r.v->nheld, 0);
    uint8_t in[128];
    CHECK_EQ(recv(r.wire, in, sizeof in, 0), 54);
    CHECK(memcmp(in, MAC_C, 6) == 0);
    /* More peers than the table holds: the oldest entry makes room. */
    for (uint32_t i = 0; i < 40; i++) {
        uint8_t mac[6] = {2, 0, 0, 1, 0, (uint8_t)i};
        osvrt_tcp_link_set_peer(r.l, 0xC6120100u + i, mac, r.now + (int64_t)(i + 10) * MS);
    }
    send_frame(&r, f, n);
    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), 1);
    CHECK_EQ(r.v->nheld, 1);                            /* 198.18.0.1 was the oldest */
    rig_free(&r);
}

/* A frame longer than a receive slot arrives cut (MSG_TRUNC): it is counted
 * and dropped, never parsed (its headers may be whole while the rest is
 * gone); a frame that fills the slot exactly is whole and runs. */
static void test_a_truncated_frame_is_dropped_unparsed(void)
{
    struct rig r;
    rig_init(&r);
    int big = 4 << 20;              /* a datagram this long needs the room (the kernel's cap x 2) */
    CHECK(setsockopt(r.wire, SOL_SOCKET, SO_SNDBUF, &big, sizeof big) == 0);
    osvrt_tcp_link_set_peer(r.l, ADDR_C, MAC_C, r.now + 1000 * MS);
    uint32_t cap = OSVRT_TCP_LINK_FRAME + 1;
    uint8_t *f = malloc(cap);
    CHECK(f);
    struct nf_opts syn = {.proto = 6, .saddr = ADDR_C, .daddr = ADDR_S, .sport = 5, .dport = 81,
                          .tcp_flags = 0x02, .pad_to = cap};
    CHECK_EQ(nf_build(f, cap, &syn), cap);
    send_frame(&r, f, cap);
    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), 1);
    struct osvrt_tcp_link_stats st = stats(&r);
    CHECK_EQ(st.frames_in, 1);
    CHECK_EQ(st.truncated, 1);
    CHECK_EQ(st.segments_in_link, 0);
    struct osvrt_tcp_stats es;
    osvrt_tcp_get_stats(r.s, &es);
    CHECK_EQ(es.segs_in, 0);            /* the engine never saw it: no RST either */
    CHECK_EQ(r.v->npass, 0);
    uint8_t in[128];
    CHECK(recv(r.wire, in, sizeof in, 0) < 0 && errno == EAGAIN);
    /* One byte shorter: it fills the slot, whole; the SYN to a closed port is refused. */
    send_frame(&r, f, cap - 1);
    CHECK_EQ(osvrt_tcp_link_poll(r.l, r.now), 1);
    st = stats(&r);
    CHECK_EQ(st.truncated, 1);
    CHECK_EQ(st.segments_in_link, 1);
    CHECK_EQ(recv(r.wire, in, sizeof in, 0), 54);      /* its RST */
    free(f);
    rig_free(&r);
}

/* Three SYNs to a closed port run through the link: three RSTs to send. */
static void three_refused_syns(struct rig *r)
{
    uint8_t f[128];
    for (uint16_t port = 10; port < 13; port++) {
        struct nf_opts syn = {.proto = 6, .saddr = ADDR_C, .daddr = ADDR_S, .sport = port,
                              .dport = 81, .tcp_flags = 0x02};
        uint32_t n = nf_build(f, sizeof f, &syn);
        CHECK_EQ(osvrt_tcp_link_frame(r->l, f, n, 0, r->now), 0);
    }
}

/* A send error that is not the device refusing (ECONNREFUSED, then ENOTCONN: the
 * socketpair's other end is gone) loses its frame, as a refusal does, and
 * the batch goes on; the errno is left for the caller.  An fd that is no
 * socket any more (ENOTSOCK) stops the batch. */
static void test_a_send_error_loses_the_frame_and_is_reported(void)
{
    struct rig r;
    rig_init(&r);
    osvrt_tcp_link_set_peer(r.l, ADDR_C, MAC_C, r.now + 1000 * MS);
    close(r.wire);
    r.wire = open("/dev/null", O_RDONLY);
    CHECK(r.wire >= 0);
    three_refused_syns(&r);
    CHECK_EQ(osvrt_tcp_link_flush(r.l, r.now), 0);
    CHECK_EQ(r.v->error, -ENOTCONN);
    CHECK(r.v->todo & OSVRT_TCP_LINK_TODO_ERROR);
    struct osvrt_tcp_link_stats st = stats(&r);
    CHECK_EQ(st.tx_errors, 3);          /* each frame tried: the error was the frame's */
    CHECK_EQ(st.frames_out, 0);
    /* The next call starts clean. */
    CHECK_EQ(osvrt_tcp_link_flush(r.l, r.now), 0);
    CHECK_EQ(r.v->error, 0);
    CHECK_EQ(r.v->todo & OSVRT_TCP_LINK_TODO_ERROR, 0);
    /* The fd number now names a file, not a socket: the first error ends the batch. */
    CHECK(dup2(r.wire, r.fd) == r.fd);
    three_refused_syns(&r);
    CHECK_EQ(osvrt_tcp_link_flush(r.l, r.now), 0);
    CHECK_EQ(r.v->error, -ENOTSOCK);
    CHECK_EQ(stats(&r).tx_errors, 6);
    rig_free(&r);
}

int main(void)
{
    test_a_send_error_loses_the_frame_and_is_reported();
    test_a_truncated_frame_is_dropped_unparsed();
    test_malformed_frames_counted_and_dropped();
    test_connection_through_the_link();
    test_segments_handed_to_a_waiting_owner_keep_their_order();
    test_more_frames_than_a_batch();
    test_an_expired_next_hop_is_resolved_again();
    printf("test_tcp_link: ok\n");
    return 0;
}
