/* fuzz_tcp_seg.c - fuzz target for the TCP segment parser (csrc/net/tcp/tcp_seg.c).
 *
 * Input: byte 0 picks whether the checksum counts as verified; the rest is
 * an IPv4 packet, copied to a heap buffer of exactly its size (ASan sees
 * any read past the end).  Checks the parser's result (payload inside the
 * packet, options in range), that a packet it accepts survives a
 * build/parse round trip unchanged, and feeds it to a stack listening on a
 * few ports (input, then output drained) with the engine's invariants
 * checked.  Built with libFuzzer (clang, -DOSVRT_FUZZ=ON) or linked with
 * replay.c (any compiler), which runs it over a corpus.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "packet.h"
#include "tcp.h"
#include "tcp_debug.h"
#include "tcp_seg.h"

#define FUZZ_CHECK(c)                                                            \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #c); \
            abort();                                                             \
        }                                                                        \
    } while (0)

static struct osvrt_tcp_stack *stack;
static int32_t listeners[2];

static void setup(void)
{
    struct osvrt_tcp_config cfg;
    osvrt_tcp_config_init(&cfg);
    cfg.addr = 0xC6120002u;
    cfg.max_conns = 64;
    cfg.sndbuf = cfg.rcvbuf = 16384;
    cfg.isn_key[0] = 1;
    int err;
    stack = osvrt_tcp_new(&cfg, &err);
    FUZZ_CHECK(stack);
    listeners[0] = osvrt_tcp_listen(stack, 80, 4);
    listeners[1] = osvrt_tcp_listen(stack, 443, 1);
    FUZZ_CHECK(listeners[0] >= 0 && listeners[1] >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!stack)
        setup();
    if (size < 1 || size > 65535 + 1)
        return 0;
    int csum_ok = data[0] & 1;
    uint32_t len = (uint32_t)size - 1;
    uint8_t *pkt = malloc(len ? len : 1);
    memcpy(pkt, data + 1, len);
    struct osvrt_tcp_seg g;
    int r = osvrt_tcp_parse(pkt, len, csum_ok, &g);
    FUZZ_CHECK(r >= 0 && r < OSVRT_TCP_NDROPS);
    /* Differential: the engine's 8-bytes-a-step checksums against packet.c's. */
    if (len >= 20 && (pkt[0] >> 4) == 4) {
        uint32_t ihl = (uint32_t)(pkt[0] & 15) * 4, tot = (uint32_t)pkt[2] << 8 | pkt[3];
        if (ihl >= 20 && ihl <= len) {
            int ip_ok = osvrt_csum_fold(osvrt_csum_add(0, pkt, ihl)) == 0xffff;
            FUZZ_CHECK(ip_ok || r == OSVRT_TCP_DROP_BAD_IP || r == OSVRT_TCP_DROP_NOT_TCP
                       || r == OSVRT_TCP_DROP_FRAGMENT || r == OSVRT_TCP_DROP_BAD_IP_CSUM);
            FUZZ_CHECK(!ip_ok || r != OSVRT_TCP_DROP_BAD_IP_CSUM);
            if (!csum_ok && ip_ok && tot >= ihl + 20 && tot <= len && pkt[9] == 6) {
                uint8_t ph[4] = {0, 6, (uint8_t)((tot - ihl) >> 8), (uint8_t)(tot - ihl)};
                uint32_t sum = osvrt_csum_add(osvrt_csum_add(osvrt_csum_add(0, pkt + 12, 8), ph, 4),
                                              pkt + ihl, tot - ihl);
                int tcp_ok = osvrt_csum_fold(sum) == 0xffff;
                FUZZ_CHECK(!(r == 0 && !tcp_ok));
                FUZZ_CHECK(!(r == OSVRT_TCP_DROP_BAD_CSUM && tcp_ok));
            }
        }
    }
    if (r == 0) {
        FUZZ_CHECK(g.data >= pkt + 40 && g.data + g.len <= pkt + len);
        FUZZ_CHECK(g.wscale >= -1 && g.wscale <= 14);
        /* round trip: what we build from it parses back to the same fields */
        uint8_t *copy = malloc(40 + 40 + g.len);
        uint32_t optlen = 0;
        uint8_t opts[8];
        if (g.mss) {
            opts[0] = 2; opts[1] = 4; opts[2] = (uint8_t)(g.mss >> 8); opts[3] = (uint8_t)g.mss;
            optlen = 4;
        }
        if (g.wscale >= 0) {
            opts[optlen] = 1; opts[optlen + 1] = 3; opts[optlen + 2] = 3;
            opts[optlen + 3] = (uint8_t)g.wscale;
            optlen += 4;
        }
        memcpy(copy + 40 + optlen, g.data, g.len);
        uint32_t n = osvrt_tcp_build(copy, &g, opts, optlen, 0);
        struct osvrt_tcp_seg h;
        FUZZ_CHECK(osvrt_tcp_parse(copy, n, 0, &h) == 0);
        FUZZ_CHECK(h.saddr == g.saddr && h.daddr == g.daddr && h.sport == g.sport
                   && h.dport == g.dport && h.seq == g.seq && h.ack == g.ack && h.flags == g.flags
                   && h.wnd == g.wnd && h.mss == g.mss && h.wscale == g.wscale && h.len == g.len
                   && memcmp(h.data, g.data, g.len) == 0);
        free(copy);
    }
    static int64_t now = 1000000000;
    now += 1000000;
    int32_t id = osvrt_tcp_demux(stack, pkt, len, csum_ok);
    int rr = osvrt_tcp_input_conn(stack, id < 0 ? -1 : id, pkt, len, csum_ok, now);
    FUZZ_CHECK(rr >= 0 && rr < OSVRT_TCP_NDROPS);
    FUZZ_CHECK(osvrt_tcp_invariants(stack) == 0);
    uint8_t out[2048];
    int32_t m;
    while ((m = osvrt_tcp_output(stack, out, sizeof out, now)) > 0) {
        struct osvrt_tcp_seg o;
        FUZZ_CHECK(osvrt_tcp_parse(out, (uint32_t)m, 0, &o) == 0);   /* we send only valid packets */
    }
    FUZZ_CHECK(m == 0);
    osvrt_tcp_on_timer(stack, now);
    struct osvrt_tcp_event ev[16];
    while (osvrt_tcp_events(stack, ev, 16))
        ;
    for (int i = 0; i < 2; i++) {   /* accept and reset: the table stays small */
        int32_t c;
        while ((c = osvrt_tcp_accept(stack, listeners[i], NULL, NULL)) >= 0)
            FUZZ_CHECK(osvrt_tcp_abort(stack, c, now) == 0);
    }
    while ((m = osvrt_tcp_output(stack, out, sizeof out, now)) > 0)
        ;
    FUZZ_CHECK(osvrt_tcp_invariants(stack) == 0);
    free(pkt);
    return 0;
}
