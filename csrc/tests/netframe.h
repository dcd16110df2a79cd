/* netframe.h - build Ethernet/IPv4/UDP/TCP frames for the net tests, the
 * fuzz corpus and the benchmarks, well formed or broken on purpose. */
#ifndef OSVRT_TEST_NETFRAME_H
#define OSVRT_TEST_NETFRAME_H

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "packet.h"

struct nf_opts {
    uint8_t proto;              /* 17 or 6 (default 17) */
    uint32_t saddr, daddr;      /* host byte order (default 127.0.0.1) */
    uint16_t sport, dport;
    const void *payload;
    uint32_t len;
    uint32_t ip_opts;           /* bytes of IP options (multiple of 4, NOPs) */
    uint32_t pad_to;            /* Ethernet padding up to this frame length */
    int vlan;                   /* tags in front of the IPv4 EtherType (0..2) */
    uint16_t vlan_id;           /* their VLAN ID (default 0: priority tags) */
    uint16_t frag;              /* the IPv4 flags+fragment-offset field */
    int bad_ip_csum, bad_l4_csum, no_udp_csum;
    int udp_len_delta;          /* added to the UDP length field */
    int ip_len_delta;           /* added to the IPv4 total length field */
    int ihl_override;           /* 1..15: write this IHL instead */
    uint8_t tcp_doff;           /* TCP data offset in words (default 5) */
    uint8_t tcp_flags;
};

static inline void nf_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Writes the frame into buf (cap bytes); returns its length, 0 if it does not fit. */
static inline uint32_t nf_build(uint8_t *buf, uint32_t cap, const struct nf_opts *o)
{
    uint8_t proto = o->proto ? o->proto : 17;
    uint32_t saddr = htonl(o->saddr ? o->saddr : 0x7f000001);
    uint32_t daddr = htonl(o->daddr ? o->daddr : 0x7f000001);
    uint32_t ihl = 20 + o->ip_opts;
    uint32_t l4h = proto == 17 ? 8 : 4u * (o->tcp_doff ? o->tcp_doff : 5);
    uint32_t eth = 14 + 4 * (uint32_t)o->vlan;
    uint32_t total = eth + ihl + l4h + o->len;
    uint32_t flen = total < o->pad_to ? o->pad_to : total;
    if (flen > cap)
        return 0;
    memset(buf, 0, flen);
    uint8_t *p = buf + 12;
    for (int i = 0; i < o->vlan; i++, p += 4) {
        nf_put16(p, i == 0 && o->vlan == 2 ? 0x88a8 : 0x8100);
        nf_put16(p + 2, o->vlan_id);
    }
    nf_put16(p, 0x0800);
    uint8_t *ip = buf + eth;
    ip[0] = (uint8_t)(0x40 | (o->ihl_override ? (uint32_t)o->ihl_override : ihl / 4));
    nf_put16(ip + 2, (uint16_t)(ihl + l4h + o->len + o->ip_len_delta));
    nf_put16(ip + 4, 0x1234);
    nf_put16(ip + 6, o->frag);
    ip[8] = 64;
    ip[9] = proto;
    memcpy(ip + 12, &saddr, 4);
    memcpy(ip + 16, &daddr, 4);
    for (uint32_t i = 0; i < o->ip_opts; i++)
        ip[20 + i] = 1;                        /* NOP */
    uint16_t c = (uint16_t)~osvrt_csum_fold(osvrt_csum_add(0, ip, ihl));
    nf_put16(ip + 10, o->bad_ip_csum ? (uint16_t)(c ^ 0x5a5a) : c);
    uint8_t *l4 = ip + ihl;
    nf_put16(l4, o->sport);
    nf_put16(l4 + 2, o->dport);
    if (o->len)
        memcpy(l4 + l4h, o->payload, o->len);
    uint32_t l4len = l4h + o->len;
    if (proto == 17) {
        nf_put16(l4 + 4, (uint16_t)(l4len + o->udp_len_delta));
    } else {
        nf_put16(l4 + 4, 0);
        nf_put16(l4 + 6, 1);                   /* seq */
        l4[12] = (uint8_t)((o->tcp_doff ? o->tcp_doff : 5) << 4);
        l4[13] = o->tcp_flags ? o->tcp_flags : 0x18;   /* PSH|ACK */
        nf_put16(l4 + 14, 65535);
    }
    if (!(proto == 17 && o->no_udp_csum)) {
        uint32_t s = osvrt_csum_add(0, ip + 12, 8) + proto + l4len;
        uint16_t l4c = (uint16_t)~osvrt_csum_fold(osvrt_csum_add(s, l4, l4len));
        if (proto == 17 && l4c == 0)
            l4c = 0xffff;
        if (o->bad_l4_csum)
            l4c ^= 0x0101;
        nf_put16(l4 + (proto == 17 ? 6 : 16), l4c);
    }
    return flen;
}

#endif
