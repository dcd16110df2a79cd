/* fuzz_tcp_link.c - fuzz target for the user stack's C link loop
 * (csrc/net/tcp/tcp_link.c): the frame classifier, the hand-off of segments
 * to waiting owners (the inbox) and the output path.
 *
 * Input: records of [control byte][length, 2 bytes big-endian][frame].
 * Control bits: 0x01 the frame's checksum is partial (CSUMNOTREADY);
 * 0x02 the owners of the accepted connections wait (their segments go to
 * the inbox) / stop waiting; 0x04 flush the output; 0x08 drain every
 * inbox; 0x10 learn (or, with 0x20, forget) the next hop 198.18.0.1.
 * Each frame goes through osvrt_tcp_link_frame, as poll runs it.  Checked:
 * every frame is counted exactly once (the counters add up to frames_in),
 * the inbox's per-connection counts match its entries, the engine's
 * invariants hold, and a frame never makes the link read past its end
 * (ASan: each frame is an exact-size heap copy).  The link's socket is one
 * end of a datagram socketpair whose other end is emptied after each input.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tcp.h"
#include "tcp_debug.h"
#include "tcp_link.h"

#include "fuzz_check.h"

#define MAXC 16

static struct osvrt_tcp_stack *stack;
static struct osvrt_tcp_link *link_;
static int wire;
static int32_t listeners[2];
static int32_t conns[MAXC];
static uint32_t nconns;

static void setup(void)
{
    /* small buffers and table: windows fill and slots are reused soon */
    struct osvrt_tcp_config cfg = {.addr = 0xC6120002u, .max_conns = 64, .sndbuf = 16384,
                                   .rcvbuf = 16384, .isn_key = {1, 0}};
    int err;
    stack = osvrt_tcp_new(&cfg, &err);
    FUZZ_CHECK(stack);
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv) == 0);
    wire = sv[1];
    static const uint8_t mac[6] = {2, 0, 0, 0, 0, 2};
    link_ = osvrt_tcp_link_new(stack, sv[0], mac, 64, 1500, &err);
    FUZZ_CHECK(link_);
    listeners[0] = osvrt_tcp_listen(stack, 80, 4);
    listeners[1] = osvrt_tcp_listen(stack, 443, 1);
    FUZZ_CHECK(listeners[0] >= 0 && listeners[1] >= 0);
}

static void empty_wire(void)
{
    uint8_t buf[2048];
    while (recv(wire, buf, sizeof buf, 0) > 0)
        ;
}

static void set_waiting(int on)
{
    struct osvrt_tcp_link_view *v = osvrt_tcp_link_view(link_);
    for (uint32_t i = 0; i < nconns; i++)
        v->waits[(uint32_t)conns[i] & (OSVRT_TCP_MAX_CONNS - 1)] = (uint16_t)on;
}

static void check_counts(void)
{
    struct osvrt_tcp_link_stats st;
    osvrt_tcp_link_get_stats(link_, &st);
    FUZZ_CHECK(st.frames_in == st.eth_short + st.ethertype + st.ip_short + st.ip_protocol
                               + st.passed + st.segments_to_owner + st.segments_in_link);
    FUZZ_CHECK(st.inbox_full <= st.segments_in_link);
    FUZZ_CHECK(osvrt_tcp_invariants(stack) == 0);
}

/* Accept what the listeners have; reset the oldest when the table fills. */
static void accept_some(int64_t now)
{
    for (int i = 0; i < 2; i++) {
        int32_t c;
        while ((c = osvrt_tcp_accept(stack, listeners[i], NULL, NULL)) >= 0) {
            if (nconns == MAXC) {
                osvrt_tcp_link_drain(link_, conns[0], now);
                osvrt_tcp_link_view(link_)->waits[(uint32_t)conns[0]
                                                  & (OSVRT_TCP_MAX_CONNS - 1)] = 0;
                FUZZ_CHECK(osvrt_tcp_abort(stack, conns[0], now) == 0);
                memmove(conns, conns + 1, (MAXC - 1) * sizeof conns[0]);
                nconns--;
            }
            conns[nconns++] = c;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!stack)
        setup();
    static int64_t now = 1000000000;
    size_t pos = 0;
    while (size - pos >= 3) {
        uint8_t ctl = data[pos];
        uint32_t n = (uint32_t)data[pos + 1] << 8 | data[pos + 2];
        pos += 3;
        if (n > size - pos)
            n = (uint32_t)(size - pos);
        uint8_t *frame = malloc(n ? n : 1);
        memcpy(frame, data + pos, n);
        pos += n;
        now += 1000000;
        if (ctl & 0x10) {
            static const uint8_t peer[6] = {2, 0, 0, 0, 0, 1};
            osvrt_tcp_link_set_peer(link_, 0xC6120001u, peer, (ctl & 0x20) ? now - 1 : now + 1000000000);
        }
        if (ctl & 0x02)
            set_waiting(!osvrt_tcp_link_view(link_)->waits[(uint32_t)(nconns ? conns[0] : 0)
                                                           & (OSVRT_TCP_MAX_CONNS - 1)]);
        int passed = osvrt_tcp_link_frame(link_, frame, n,
                                          (ctl & 0x01) ? OSVRT_TCP_IN_CSUM_OK : 0, now);
        FUZZ_CHECK(passed == 0 || passed == 1);
        if (passed) {   /* the caller gets ARP and ICMP only */
            FUZZ_CHECK(n >= 14);
            FUZZ_CHECK((frame[12] == 0x08 && frame[13] == 0x06)
                       || (frame[12] == 0x08 && frame[13] == 0x00 && n >= 34 && frame[23] == 1));
        }
        free(frame);
        if (ctl & 0x08)
            osvrt_tcp_link_drain(link_, -1, now);
        if (ctl & 0x04) {
            osvrt_tcp_link_flush(link_, now);
            struct osvrt_tcp_link_view *v = osvrt_tcp_link_view(link_);
            FUZZ_CHECK(v->nheld <= OSVRT_TCP_LINK_BATCH && v->nevents <= OSVRT_TCP_LINK_EVENTS);
            for (uint32_t i = 0; i < v->nheld; i++)
                FUZZ_CHECK(v->held_len[i] >= 40 && v->held_len[i] <= 1500);
            empty_wire();
        }
        osvrt_tcp_on_timer(stack, now);
        accept_some(now);
        check_counts();
    }
    /* The inbox's counts match what it holds: a drain of each connection
     * leaves nothing queued. */
    for (uint32_t i = 0; i < nconns; i++) {
        osvrt_tcp_link_drain(link_, conns[i], now);
        FUZZ_CHECK(osvrt_tcp_link_queued(link_, conns[i]) == 0);
    }
    osvrt_tcp_link_drain(link_, -1, now);
    osvrt_tcp_link_flush(link_, now);
    empty_wire();
    check_counts();
    return 0;
}
