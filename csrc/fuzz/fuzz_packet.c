/* fuzz_packet.c - fuzz target for the classifier's packet path.
 *
 * Input layout: byte 0 picks the ring status bits and whether a virtio-net
 * header is given (bytes 1..10, as the kernel writes it); byte 11 and 12
 * say how much of the frame the "ring" cut off; the rest is the frame.
 * Each input is copied to a heap buffer of exactly its size, so ASan sees
 * any read past the end, then:
 *   1. osvrt_pkt_parse, and the invariants of its result (offsets inside
 *      the frame, segments that add up);
 *   2. osvrt_net_rx_frame on a socket-less classifier with a few flows
 *      (UDP with and without a rule, TCP, wildcard, tiny channels), so the
 *      GSO split, the rule call, the channel copy and the counters run too.
 * Built with libFuzzer (clang, -DOSVRT_FUZZ=ON) or linked with replay.c
 * (any compiler), which runs it over a corpus.
 */
#include <linux/if_packet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classifier.h"
#include "packet.h"

#include "fuzz_check.h"

static struct osvrt_net *net;

static int32_t rule(const uint8_t *data, uint32_t len, uint32_t saddr, uint32_t sport)
{
    (void)saddr;
    if (len == 0)
        return -1;
    return (int32_t)((data[0] + data[len - 1] + sport) % 3) - 1;   /* -1 (drop), 0, 1 */
}

static void setup(void)
{
    struct osvrt_net_config cfg = {.ifname = NULL, .spin_ns = -1, .cpu = -1, .buckets = 16};
    int err;
    net = osvrt_net_new(NULL, &cfg, &err);      /* no runtime: nobody to wake */
    FUZZ_CHECK(net);
    struct { uint32_t daddr; uint16_t port; uint8_t proto; uint32_t lanes, cap, arena; osvrt_rule_fn r; } fl[] = {
        {0x0100007f, 9000, 17, 1, 4, 4096, NULL},      /* 127.0.0.1:9000 UDP, tiny */
        {0x0100007f, 9001, 17, 2, 64, 65536, rule},    /* steered by a rule */
        {0, 9002, 17, 1, 256, 1 << 17, NULL},          /* any address */
        {0x0100007f, 80, 6, 1, 16, 65536, NULL},       /* TCP */
        {0, 0, 17, 1, 8, 1500, NULL},                  /* port 0 (fuzzers find it) */
    };
    for (unsigned i = 0; i < sizeof fl / sizeof *fl; i++) {
        struct osvrt_flow_key k = {.daddr = fl[i].daddr, .dport = fl[i].port, .proto = fl[i].proto};
        FUZZ_CHECK(osvrt_net_flow_add(net, &k, fl[i].lanes, fl[i].cap, fl[i].arena, fl[i].r, &err));
    }
}

/* Empty every channel now and then, so deliveries keep happening. */
static void drain_all(void)
{
    for (uint32_t b = 0; b <= net->table.mask; b++) {
        for (struct osvrt_ft_node *n = atomic_load(&net->table.buckets[b]); n; n = atomic_load(&n->next)) {
            struct osvrt_flow *f = (struct osvrt_flow *)n;
            for (uint32_t l = 0; l < f->nlanes; l++) {
                uint64_t t, q = osvrt_chan_ready(f->lanes[l], &t);
                for (uint64_t i = 0; i < q; i++) {
                    const struct osvrt_chan_slot *s = osvrt_chan_slot_at(f->lanes[l], t + i);
                    FUZZ_CHECK(s->len <= f->lanes[l]->arena_size);
                    FUZZ_CHECK(s->off % f->lanes[l]->arena_size + s->len <= f->lanes[l]->arena_size);
                }
                osvrt_chan_release(f->lanes[l], t + q);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned calls;
    if (!net)
        setup();
    if (size < 13 || size > 70000)
        return 0;
    uint8_t mode = data[0];
    struct osvrt_vnet_hdr vh, *vp = NULL;
    if (mode & 1) {
        const uint8_t *v = data + 1;
        vh.flags = v[0];
        vh.gso_type = v[1];
        vh.hdr_len = (uint16_t)(v[2] | v[3] << 8);
        vh.gso_size = (uint16_t)(v[4] | v[5] << 8);
        vh.csum_start = (uint16_t)(v[6] | v[7] << 8);
        vh.csum_offset = (uint16_t)(v[8] | v[9] << 8);
        vp = &vh;
    }
    uint32_t status = ((mode & 2) ? TP_STATUS_CSUMNOTREADY : 0) | ((mode & 4) ? TP_STATUS_CSUM_VALID : 0);
    uint32_t len = (uint32_t)(size - 13);
    uint32_t wire = len + ((mode & 8) ? (uint32_t)(data[11] | data[12] << 8) : 0);

    uint8_t *frame = malloc(len ? len : 1);
    FUZZ_CHECK(frame);
    memcpy(frame, data + 13, len);

    struct osvrt_pkt p;
    int v = osvrt_pkt_parse(frame, len, wire, (mode & 16) ? OSVRT_PKT_CSUM_TRUSTED : 0, vp, &p);
    FUZZ_CHECK(v >= 0 && v < OSVRT_PKT_NVERDICTS);
    if (v == OSVRT_PKT_OK) {
        FUZZ_CHECK(p.proto == 17 || p.proto == 6);
        FUZZ_CHECK(p.l4_off <= len && p.l4_len <= len - p.l4_off);
        FUZZ_CHECK(p.data_off >= p.l4_off && p.data_off <= len && p.data_len <= len - p.data_off);
        FUZZ_CHECK(p.data_off + p.data_len <= p.l4_off + p.l4_len);
        uint32_t segs = osvrt_pkt_segments(&p);
        FUZZ_CHECK(segs >= 1 && segs <= 65536);
        if (segs > 1)
            FUZZ_CHECK((uint64_t)(segs - 1) * p.gso_size < p.data_len
                       && (uint64_t)segs * p.gso_size >= p.data_len);
    }

    osvrt_net_rx_begin(net);
    int v2 = osvrt_net_rx_frame(net, frame, len, wire, status, vp);
    osvrt_net_rx_end(net);
    FUZZ_CHECK(v2 >= 0 && v2 < OSVRT_PKT_NVERDICTS);
    free(frame);

    struct osvrt_net_stats st;
    osvrt_net_get_stats(net, &st);
    FUZZ_CHECK(st.packets == st.received + st.dropped_no_flow + st.dropped_too_big + st.dropped_truncated
                             + st.dropped_channel_full + st.dropped_rule);
    if (++calls % 16 == 0)
        drain_all();
    return 0;
}
