/* test_classifier.c - the classifier's burst processing driven directly
 * (socket-less: classification, per-reason drop counters, GSO split, rule
 * steering, one wake per channel per burst), then live on `lo` with a real
 * AF_PACKET ring (skipped, exit 77, without CAP_NET_RAW): datagrams from a
 * kernel UDP socket arrive in order, a waiting thread is woken through the
 * wake protocol, a UDP_SEGMENT sender's super-packet arrives as separate
 * datagrams, and stop joins the thread.  Exit 77 (skipped) if the live part
 * could not run.  The live part runs with the prefilter on (classifier.h). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "classifier.h"
#include "netframe.h"
#include "osvrt.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

static struct osvrt_rt *rt;
static uint8_t fbuf[70000];
static const uint32_t LO1 = 0x0100007f;   /* 127.0.0.1, network order on little-endian */

static struct osvrt_flow *add_udp(struct osvrt_net *net, uint32_t daddr, uint16_t port,
                                  uint32_t lanes, uint32_t cap, osvrt_rule_fn rule)
{
    struct osvrt_flow_key k = {.daddr = daddr, .dport = port, .proto = 17};
    int err = 0;
    struct osvrt_flow *f = osvrt_net_flow_add(net, &k, lanes, cap, 65536, rule, &err);
    CHECK_MSG(f, "flow_add: %s", strerror(err));
    return f;
}

static uint32_t udp_frame(uint16_t dport, const void *payload, uint32_t len, uint32_t daddr_host)
{
    struct nf_opts o = {.sport = 40000, .dport = dport, .payload = payload, .len = len,
                        .daddr = daddr_host};
    return nf_build(fbuf, sizeof fbuf, &o);
}

static uint64_t queued(struct osvrt_chan *c)
{
    uint64_t t;
    return osvrt_chan_ready(c, &t);
}

static int32_t rule_first_byte(const uint8_t *data, uint32_t len, uint32_t saddr, uint32_t sport)
{
    (void)saddr; (void)sport;
    if (len == 0)
        return -1;
    return data[0] == 'x' ? 99 : data[0] % 2;   /* 'x': a lane that does not exist */
}

static void test_offline(void)
{
    struct osvrt_net_config cfg = {.ifname = NULL, .spin_ns = -1, .cpu = -1};
    int err = 0;
    struct osvrt_net *net = osvrt_net_new(rt, &cfg, &err);
    CHECK_MSG(net, "net_new: %s", strerror(err));
    CHECK_EQ(osvrt_net_start(net), EINVAL);             /* no socket, no thread */

    struct osvrt_flow *a = add_udp(net, LO1, 9000, 1, 4, NULL);
    struct osvrt_flow *b = add_udp(net, 0x0200007f, 9000, 1, 256, NULL);   /* same port, 127.0.0.2 */
    struct osvrt_flow *s = add_udp(net, LO1, 9100, 2, 256, rule_first_byte);
    struct osvrt_flow_key dupk = {.daddr = LO1, .dport = 9000, .proto = 17};
    CHECK(osvrt_net_flow_add(net, &dupk, 1, 4, 100, NULL, &err) == NULL && err == EEXIST);
    CHECK(osvrt_net_flow_add(net, &dupk, 0, 4, 100, NULL, &err) == NULL && err == EINVAL);
    dupk.proto = 1;
    CHECK(osvrt_net_flow_add(net, &dupk, 1, 4, 100, NULL, &err) == NULL && err == EINVAL);

    /* A thread of the runtime waits on flow a's channel. */
    uint64_t h, keys[8];
    CHECK_EQ(osvrt_table_alloc(&rt->table, 0, &h, 1), 1);
    CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
    CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 1);
    struct osvrt_chan *ca = osvrt_flow_lane(a, 0);
    atomic_store(&ca->waiter, h | OSVRT_CHAN_WAITER);

    /* One burst of 6 datagrams for a (capacity 4: 2 tail-dropped), 3 for b,
     * noise, a datagram for no flow: one wake for a, none for b (no waiter). */
    osvrt_net_rx_begin(net);
    for (int i = 0; i < 6; i++) {
        char p[16];
        int n = snprintf(p, sizeof p, "a%d", i);
        CHECK_EQ(osvrt_net_rx_frame(net, fbuf, udp_frame(9000, p, (uint32_t)n, 0), 0, 0, NULL), OSVRT_PKT_OK);
    }
    for (int i = 0; i < 3; i++)
        osvrt_net_rx_frame(net, fbuf, udp_frame(9000, "b", 1, 0x7f000002), 0, 0, NULL);
    osvrt_net_rx_frame(net, fbuf, udp_frame(9999, "nobody", 6, 0), 0, 0, NULL);
    static const uint8_t noise[40] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0x08, 0x00, 0x47, 0xff};
    CHECK(osvrt_pkt_malformed(osvrt_net_rx_frame(net, noise, sizeof noise, 0, 0, NULL)));
    uint32_t n = udp_frame(9000, "cut", 3, 0);
    CHECK_EQ(osvrt_net_rx_frame(net, fbuf, n - 2, n, 0, NULL), OSVRT_PKT_TOO_BIG);
    CHECK_EQ(queued(ca), 0);                               /* published only at the end */
    CHECK_EQ(osvrt_net_rx_end(net), 1);
    CHECK_EQ(queued(ca), 4);
    CHECK_EQ(queued(osvrt_flow_lane(b, 0)), 3);
    CHECK_EQ(osvrt_get_state(rt, h), OSVRT_WAKING);
    CHECK_EQ(osvrt_drain(rt, 0, keys, 8), 1);
    CHECK_EQ(keys[0], h | OSVRT_KEY_CWAKE);
    /* oldest kept, in order */
    for (int i = 0; i < 4; i++) {
        uint64_t t;
        CHECK(osvrt_chan_ready(ca, &t) > 0);
        const struct osvrt_chan_slot *sl = osvrt_chan_slot_at(ca, t);
        char want[16];
        snprintf(want, sizeof want, "a%d", i);
        CHECK_EQ(sl->len, 2);
        CHECK(memcmp(osvrt_chan_data(ca, sl), want, 2) == 0);
        CHECK_EQ(sl->sport, 40000);
        CHECK_EQ(sl->dport, 9000);
        CHECK_EQ(sl->saddr, LO1);
        osvrt_chan_release(ca, t + 1);
    }

    /* The thread is not waiting now: later bursts wake nobody. */
    CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
    osvrt_net_rx_begin(net);
    osvrt_net_rx_frame(net, fbuf, udp_frame(9000, "z", 1, 0), 0, 0, NULL);
    CHECK_EQ(osvrt_net_rx_end(net), 0);
    CHECK_EQ(osvrt_drain(rt, 0, keys, 8), 0);

    /* GSO: one super-packet, gso_size 100, 1050 bytes -> 11 datagrams. */
    static uint8_t big[1050];
    for (unsigned i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i / 100);
    struct osvrt_flow *g = add_udp(net, LO1, 9200, 1, 64, NULL);
    struct osvrt_vnet_hdr vh = {.flags = OSVRT_VNET_NEEDS_CSUM, .gso_type = OSVRT_VNET_GSO_UDP_L4,
                                .gso_size = 100};
    osvrt_net_rx_begin(net);
    n = udp_frame(9200, big, sizeof big, 0);
    CHECK_EQ(osvrt_net_rx_frame(net, fbuf, n, n, TP_STATUS_CSUMNOTREADY, &vh), OSVRT_PKT_OK);
    osvrt_net_rx_end(net);
    struct osvrt_chan *cg = osvrt_flow_lane(g, 0);
    CHECK_EQ(queued(cg), 11);
    for (int i = 0; i < 11; i++) {
        uint64_t t;
        osvrt_chan_ready(cg, &t);
        const struct osvrt_chan_slot *sl = osvrt_chan_slot_at(cg, t);
        CHECK_EQ(sl->len, i < 10 ? 100 : 50);
        const uint8_t *d = osvrt_chan_data(cg, sl);
        for (uint32_t k = 0; k < sl->len; k++)
            CHECK_EQ(d[k], i);
        osvrt_chan_release(cg, t + 1);
    }

    /* The rule steers by the first byte: even -> lane 0, odd -> lane 1,
     * 'x' -> lane 99 (does not exist: dropped), empty -> -1 (dropped). */
    osvrt_net_rx_begin(net);
    static const char *msgs[] = {"b", "a", "d", "c", "x", ""};
    for (int i = 0; i < 6; i++)
        osvrt_net_rx_frame(net, fbuf, udp_frame(9100, msgs[i], (uint32_t)strlen(msgs[i]), 0), 0, 0, NULL);
    osvrt_net_rx_end(net);
    CHECK_EQ(queued(osvrt_flow_lane(s, 0)), 2);     /* 'b' (98), 'd' (100) */
    CHECK_EQ(queued(osvrt_flow_lane(s, 1)), 2);     /* 'a', 'c' */

    struct osvrt_net_stats ns;
    osvrt_net_get_stats(net, &ns);
    CHECK_EQ(ns.dropped_channel_full, 2);            /* the first burst's 5th and 6th */
    CHECK_EQ(ns.dropped_no_flow, 1);
    CHECK_EQ(ns.dropped_malformed, 1);
    CHECK_EQ(ns.dropped_too_big, 0);
    CHECK_EQ(ns.dropped_truncated, 1);              /* 'cut': cut by the ring frame */
    CHECK_EQ(ns.dropped_rule, 2);
    CHECK_EQ(ns.gso_packets, 1);
    CHECK_EQ(ns.wakes, 1);
    CHECK_EQ(ns.received, 4 + 3 + 1 + 11 + 4);
    CHECK_EQ(ns.packets, ns.received + ns.dropped_channel_full + ns.dropped_no_flow
                         + ns.dropped_too_big + ns.dropped_truncated + ns.dropped_rule);
    struct osvrt_flow_stats fs;
    osvrt_flow_get_stats(a, &fs);
    CHECK_EQ(fs.received, 5);
    CHECK_EQ(fs.dropped_channel_full, 2);
    CHECK_EQ(fs.dropped_too_big, 0);
    CHECK_EQ(fs.dropped_truncated, 1);
    CHECK_EQ(fs.wakes, 1);
    CHECK_EQ(fs.queued, 1);                          /* 'z' */
    osvrt_flow_get_stats(s, &fs);
    CHECK_EQ(fs.dropped_rule, 2);
    CHECK_EQ(fs.queued, 4);

    /* Removal: no more packets for it; memory lives until the owner lets go. */
    CHECK_EQ(osvrt_net_flow_remove(net, a), 0);
    CHECK_EQ(osvrt_net_flow_remove(net, a), ENOENT);
    osvrt_net_rx_begin(net);
    osvrt_net_rx_frame(net, fbuf, udp_frame(9000, "late", 4, 0), 0, 0, NULL);
    osvrt_net_rx_end(net);
    osvrt_net_get_stats(net, &ns);
    CHECK_EQ(ns.dropped_no_flow, 2);
    osvrt_flow_put(a);
    osvrt_flow_put(b);                                  /* b still in the table: freed by net_free */
    osvrt_flow_put(s);
    osvrt_flow_put(g);
    osvrt_net_free(net);
    uint64_t hs[1] = {h};
    CHECK_EQ(osvrt_table_free(&rt->table, hs, 1), 1);
}

/* ---- live on lo ---- */

static int reserve_port(uint32_t addr_host, uint16_t *port)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    CHECK_EQ(osvrt_attach_drop_all(s), 0);        /* before bind: nothing is ever queued */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(addr_host)};
    CHECK_EQ(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    getsockname(s, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    return s;
}

static int64_t now_ns(void)
{
    return osvrt_now_ns();
}

/* Wait for n packets on c (polling, bounded); returns how many came. */
static uint64_t wait_queued(struct osvrt_chan *c, uint64_t n, int64_t timeout_ns)
{
    int64_t end = now_ns() + timeout_ns;
    uint64_t q;
    while ((q = queued(c)) < n && now_ns() < end)
        usleep(200);
    return q;
}

static int test_live(void)
{
    struct osvrt_net_config cfg = {.ifname = "lo", .ring_frames = 64, .spin_ns = 20000, .cpu = -1,
                                   .prefilter = 1};
    int err = 0;
    struct osvrt_net *net = osvrt_net_new(rt, &cfg, &err);
    if (!net && (err == EPERM || err == EACCES)) {
        printf("test_classifier: live part skipped: no CAP_NET_RAW\n");
        return 0;
    }
    CHECK_MSG(net, "net_new(lo): %s", strerror(err));
    struct osvrt_net_config bad = {.ifname = "no-such-if0", .cpu = -1, .spin_ns = -1};
    CHECK(osvrt_net_new(rt, &bad, &err) == NULL && err == ENODEV);
    CHECK_EQ(osvrt_net_start(net), 0);

    uint16_t port;
    int rsv = reserve_port(0x7f000001, &port);
    struct osvrt_flow *f = add_udp(net, LO1, port, 1, 256, NULL);
    struct osvrt_chan *c = osvrt_flow_lane(f, 0);

    int cl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port),
                              .sin_addr.s_addr = htonl(0x7f000001)};
    CHECK_EQ(connect(cl, (struct sockaddr *)&dst, sizeof dst), 0);

    /* 100 datagrams, in order, with their source: sent in groups of 10,
     * each awaited (the ring has 64+ frames, so none can overflow it even
     * when this busy machine does not run the classifier for a while). */
    for (int i = 0; i < 100; i++) {
        char m[16];
        int n = snprintf(m, sizeof m, "m%03d", i);
        CHECK_EQ(send(cl, m, (size_t)n, 0), n);
        if (i % 10 == 9) {
            uint64_t q = wait_queued(c, (uint64_t)i + 1, 5000000000ll);
            struct osvrt_net_stats ns;
            osvrt_net_get_stats(net, &ns);
            CHECK_MSG(q == (uint64_t)i + 1, "%llu of %d arrived; frames %llu received %llu "
                      "ring drops %llu no flow %llu ignored %llu malformed %llu",
                      (unsigned long long)q, i + 1, (unsigned long long)ns.frames,
                      (unsigned long long)ns.received, (unsigned long long)ns.dropped_ring,
                      (unsigned long long)ns.dropped_no_flow, (unsigned long long)ns.ignored,
                      (unsigned long long)ns.dropped_malformed);
        }
    }
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    getsockname(cl, (struct sockaddr *)&me, &ml);
    for (int i = 0; i < 100; i++) {
        uint64_t t;
        osvrt_chan_ready(c, &t);
        const struct osvrt_chan_slot *s = osvrt_chan_slot_at(c, t);
        char want[16];
        snprintf(want, sizeof want, "m%03d", i);
        CHECK_EQ(s->len, 4);
        CHECK(memcmp(osvrt_chan_data(c, s), want, 4) == 0);
        CHECK_EQ(s->sport, ntohs(me.sin_port));
        osvrt_chan_release(c, t + 1);
    }

    /* A waiting thread is woken (once) when a datagram arrives. */
    uint64_t h, keys[8];
    CHECK_EQ(osvrt_table_alloc(&rt->table, 0, &h, 1), 1);
    CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
    atomic_store(&c->waiter, h | OSVRT_CHAN_WAITER);
    CHECK_EQ(osvrt_wait_prepare(rt, h, 0), 1);
    CHECK_EQ(queued(c), 0);
    CHECK_EQ(send(cl, "wake", 4, 0), 4);
    uint32_t got = 0;
    int64_t end = now_ns() + 5000000000ll;
    while (!got && now_ns() < end) {
        uint32_t seq = osvrt_cpu_kick_seq(&rt->cpus[0]);
        osvrt_cpu_idle(&rt->cpus[0], 100000000, 10000, seq, NULL, 0);
        got = osvrt_drain(rt, 0, keys, 8);
    }
    CHECK_EQ(got, 1);
    CHECK_EQ(keys[0], h | OSVRT_KEY_CWAKE);
    CHECK_EQ(queued(c), 1);
    atomic_store(&c->waiter, 0);
    uint64_t t;
    osvrt_chan_ready(c, &t);
    osvrt_chan_release(c, t + 1);

    /* GSO: one sendmsg with UDP_SEGMENT 500 of 2,200 bytes -> 5 datagrams. */
    int seg = 500;
    if (setsockopt(cl, IPPROTO_UDP, UDP_SEGMENT, &seg, sizeof seg) == 0) {
        static uint8_t big[2200];
        for (unsigned i = 0; i < sizeof big; i++)
            big[i] = (uint8_t)(i / 500 + 1);
        CHECK_EQ(send(cl, big, sizeof big, 0), (ssize_t)sizeof big);
        CHECK_EQ(wait_queued(c, 5, 5000000000ll), 5);
        for (int i = 0; i < 5; i++) {
            osvrt_chan_ready(c, &t);
            const struct osvrt_chan_slot *s = osvrt_chan_slot_at(c, t);
            CHECK_EQ(s->len, i < 4 ? 500 : 200);
            CHECK_EQ(osvrt_chan_data(c, s)[0], i + 1);
            CHECK_EQ(osvrt_chan_data(c, s)[s->len - 1], i + 1);
            osvrt_chan_release(c, t + 1);
        }
        struct osvrt_net_stats ns;
        osvrt_net_get_stats(net, &ns);
        CHECK(ns.gso_packets >= 1);
    } else {
        printf("test_classifier: UDP_SEGMENT not supported here: GSO part skipped\n");
    }

    /* The prefilter keeps UDP to ports without a flow out of the ring: 20
     * datagrams to a free port, then one to ours; none counted as no flow. */
    struct osvrt_net_stats ns;
    osvrt_net_get_stats(net, &ns);
    uint64_t no_flow = ns.dropped_no_flow;
    uint16_t free_port;
    int other = reserve_port(0x7f000001, &free_port);
    close(other);                                        /* now nobody has it */
    struct sockaddr_in fdst = dst;
    fdst.sin_port = htons(free_port);
    int free_cl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    for (int i = 0; i < 20; i++)
        CHECK_EQ(sendto(free_cl, "x", 1, 0, (struct sockaddr *)&fdst, sizeof fdst), 1);
    close(free_cl);
    CHECK_EQ(send(cl, "mine", 4, 0), 4);
    CHECK_EQ(wait_queued(c, 1, 5000000000ll), 1);
    osvrt_chan_ready(c, &t);
    osvrt_chan_release(c, t + 1);
    osvrt_net_get_stats(net, &ns);
    CHECK_EQ(ns.dropped_no_flow, no_flow);
    CHECK(ns.received >= 107);
    CHECK(ns.wakes >= 1);
    int64_t t0 = now_ns();
    osvrt_net_stop(net);
    CHECK((now_ns() - t0) < 1000000000ll);               /* stop is prompt */
    osvrt_net_stop(net);                                  /* idempotent */
    CHECK_EQ(osvrt_net_flow_remove(net, f), 0);
    osvrt_flow_put(f);
    osvrt_net_free(net);
    close(cl);
    close(rsv);
    uint64_t hs[1] = {h};
    osvrt_table_free(&rt->table, hs, 1);
    return 1;
}

int main(void)
{
    rt = osvrt_rt_new(1);
    CHECK(rt);
    test_offline();
    int live = test_live();
    osvrt_rt_free(rt);
    printf("test_classifier: ok%s\n", live ? "" : " (offline part only)");
    return live ? 0 : 77;          /* 77: ctest reports the test as skipped */
}
