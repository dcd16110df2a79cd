/* tcp_seg.h - one TCP segment on the wire: the parser (IPv4 + TCP header +
 * options, every length checked against the bytes really there) and the
 * builder of outgoing IPv4/TCP headers.  Pure functions: no stack, no
 * allocation, so the fuzz target csrc/fuzz/fuzz_tcp_seg.c drives the parser
 * alone. */
#ifndef OSVRT_TCP_SEG_H
#define OSVRT_TCP_SEG_H

#include <stdint.h>

#define OSVRT_TH_FIN 0x01
#define OSVRT_TH_SYN 0x02
#define OSVRT_TH_RST 0x04
#define OSVRT_TH_PSH 0x08
#define OSVRT_TH_ACK 0x10
#define OSVRT_TH_URG 0x20

/* A parsed segment: host-order fields; data points into the packet. */
struct osvrt_tcp_seg {
    uint32_t saddr, daddr;
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint16_t wnd;
    uint8_t flags;              /* OSVRT_TH_* */
    int8_t wscale;              /* window scale option, -1: absent (clamped to 14, RFC 7323 2.3) */
    uint16_t mss;               /* MSS option, 0: absent */
    const uint8_t *data;        /* payload */
    uint32_t len;               /* payload bytes */
};

/* Sequence space length: payload + SYN + FIN. */
static inline uint32_t osvrt_tcp_seg_seqlen(const struct osvrt_tcp_seg *g)
{
    return g->len + !!(g->flags & OSVRT_TH_SYN) + !!(g->flags & OSVRT_TH_FIN);
}

/* Parse an IPv4 packet of len bytes (trailing bytes past the IPv4 total
 * length, e.g. Ethernet padding, are ignored).  csum_ok: skip the TCP
 * checksum (verified below us, or partial).  Returns 0 or an enum
 * osvrt_tcp_drop reason; *out is complete only on 0. */
int osvrt_tcp_parse(const uint8_t *pkt, uint32_t len, int csum_ok, struct osvrt_tcp_seg *out);

/* Write IPv4 + TCP headers for a segment into buf; the payload must already
 * be at buf + 40 + optlen.  Fills both checksums.  Returns the packet
 * length (40 + optlen + g->len).  g->data is ignored; optlen % 4 == 0. */
uint32_t osvrt_tcp_build(uint8_t *buf, const struct osvrt_tcp_seg *g, const uint8_t *opts,
                         uint32_t optlen, uint16_t ip_id);

/* Sequence-number comparisons modulo 2^32 (RFC 9293 3.4). */
static inline int osvrt_seq_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static inline int osvrt_seq_le(uint32_t a, uint32_t b) { return (int32_t)(a - b) <= 0; }
static inline int osvrt_seq_gt(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }
static inline int osvrt_seq_ge(uint32_t a, uint32_t b) { return (int32_t)(a - b) >= 0; }

#endif
