/* tcp_seg.c - the TCP segment parser and header builder (tcp_seg.h). */
#include <string.h>

#include "tcp.h"
#include "tcp_seg.h"

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* Options between the fixed header and the data: every option but EOL and
 * NOP has a length byte >= 2 that stays inside the header (RFC 9293 3.1);
 * MSS and WS must have their defined lengths.  Unknown kinds are skipped. */
static int parse_options(const uint8_t *o, uint32_t n, struct osvrt_tcp_seg *g)
{
    uint32_t i = 0;
    while (i < n) {
        uint8_t kind = o[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= n || o[i + 1] < 2 || o[i + 1] > n - i)
            return OSVRT_TCP_DROP_BAD_OPTIONS;
        uint8_t olen = o[i + 1];
        if (kind == 2) {
            if (olen != 4)
                return OSVRT_TCP_DROP_BAD_OPTIONS;
            g->mss = rd16(o + i + 2);
        } else if (kind == 3) {
            if (olen != 3)
                return OSVRT_TCP_DROP_BAD_OPTIONS;
            g->wscale = (int8_t)(o[i + 2] > 14 ? 14 : o[i + 2]);
        }
        i += olen;
    }
    return 0;
}

/* The Internet checksum's one's complement sum (RFC 1071), 8 bytes per step:
 * native-order 32-bit halves into a 64-bit accumulator (no carry is lost
 * before 2^31 steps).  The sum is independent of byte order up to one swap
 * at the end (RFC 1071 2(B)), which csum_fold does.  Pieces summed into one
 * accumulator must each start at an even offset of the checksummed data.
 * This is the per-byte cost of TCP (packet.c's osvrt_csum_add, two 16-bit
 * words per step, was 68% of a bulk transfer's instructions). */
static uint64_t csum_acc(uint64_t acc, const uint8_t *p, uint32_t len)
{
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        acc += (v & 0xffffffffu) + (v >> 32);
    }
    if (len >= 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        acc += v;
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        acc += v;
        p += 2;
        len -= 2;
    }
    if (len) {                          /* a last odd byte, padded with zero (RFC 1071) */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        acc += (uint32_t)*p << 8;
#else
        acc += *p;
#endif
    }
    return acc;
}

/* Fold to 16 bits, in network order as a host integer (0xffff: the data verifies). */
static uint16_t csum_fold(uint64_t acc)
{
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (uint16_t)acc;
#else
    return (uint16_t)(acc >> 8 | acc << 8);
#endif
}

/* The pseudo-header's sum: addresses, zero, protocol 6, TCP length. */
static uint64_t pseudo_sum(const uint8_t *ip, uint32_t tlen)
{
    uint8_t ph[4] = {0, 6, (uint8_t)(tlen >> 8), (uint8_t)tlen};
    return csum_acc(csum_acc(0, ip + 12, 8), ph, 4);
}

/* Sources no peer on a link can have (RFC 1122 3.2.1.3): this network
 * (0/8), loopback (127/8), multicast (224/4) and the broadcast address. */
static int bad_source(uint32_t a)
{
    return (a >> 24) == 0 || (a >> 24) == 127 || (a >> 28) == 0xe || a == 0xffffffffu;
}

int osvrt_tcp_parse(const uint8_t *p, uint32_t len, int csum_ok, struct osvrt_tcp_seg *g)
{
    if (len < 20 || (p[0] >> 4) != 4)
        return len >= 1 && (p[0] >> 4) != 4 ? OSVRT_TCP_DROP_NOT_TCP : OSVRT_TCP_DROP_BAD_IP;
    uint32_t ihl = (uint32_t)(p[0] & 15) * 4, tot = rd16(p + 2);
    if (ihl < 20 || ihl > len || tot < ihl || tot > len)
        return OSVRT_TCP_DROP_BAD_IP;
    if (p[9] != 6)
        return OSVRT_TCP_DROP_NOT_TCP;
    if (rd16(p + 6) & 0x3fff)          /* MF, or a fragment offset */
        return OSVRT_TCP_DROP_FRAGMENT;
    if (csum_fold(csum_acc(0, p, ihl)) != 0xffff)
        return OSVRT_TCP_DROP_BAD_IP_CSUM;
    const uint8_t *t = p + ihl;
    uint32_t tlen = tot - ihl;
    if (tlen < 20)
        return OSVRT_TCP_DROP_TRUNC_TCP;
    uint32_t doff = (uint32_t)(t[12] >> 4) * 4;
    if (doff < 20 || doff > tlen)
        return OSVRT_TCP_DROP_BAD_OFFSET;
    g->saddr = rd32(p + 12);
    g->daddr = rd32(p + 16);
    if (bad_source(g->saddr))
        return OSVRT_TCP_DROP_NOT_OURS;
    g->sport = rd16(t);
    g->dport = rd16(t + 2);
    g->seq = rd32(t + 4);
    g->ack = rd32(t + 8);
    g->flags = t[13] & 0x3f;
    g->wnd = rd16(t + 14);
    g->mss = 0;
    g->wscale = -1;
    g->data = t + doff;
    g->len = tlen - doff;
    int r = parse_options(t + 20, doff - 20, g);
    if (r)
        return r;
    if (!csum_ok) {
        if (csum_fold(csum_acc(pseudo_sum(p, tlen), t, tlen)) != 0xffff)
            return OSVRT_TCP_DROP_BAD_CSUM;
    }
    if (g->sport == 0 || g->dport == 0)
        return OSVRT_TCP_DROP_NOT_OURS;
    return 0;
}

uint32_t osvrt_tcp_build(uint8_t *b, const struct osvrt_tcp_seg *g, const uint8_t *opts,
                         uint32_t optlen, uint16_t ip_id)
{
    uint32_t tlen = 20 + optlen + g->len, tot = 20 + tlen;
    b[0] = 0x45;
    b[1] = 0;
    wr16(b + 2, (uint16_t)tot);
    wr16(b + 4, ip_id);
    wr16(b + 6, 0x4000);                /* DF: we size segments to the MSS, never fragment */
    b[8] = 64;
    b[9] = 6;
    wr16(b + 10, 0);
    wr32(b + 12, g->saddr);
    wr32(b + 16, g->daddr);
    wr16(b + 10, (uint16_t)~csum_fold(csum_acc(0, b, 20)));
    uint8_t *t = b + 20;
    wr16(t, g->sport);
    wr16(t + 2, g->dport);
    wr32(t + 4, g->seq);
    wr32(t + 8, g->ack);
    t[12] = (uint8_t)(((20 + optlen) / 4) << 4);
    t[13] = g->flags;
    wr16(t + 14, g->wnd);
    wr16(t + 16, 0);
    wr16(t + 18, 0);
    if (optlen)
        memcpy(t + 20, opts, optlen);
    wr16(t + 16, (uint16_t)~csum_fold(csum_acc(pseudo_sum(b, tlen), t, tlen)));
    return tot;
}
