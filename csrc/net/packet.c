#include "packet.h"

#include <stddef.h>
#include <string.h>

static const char *const verdict_names[OSVRT_PKT_NVERDICTS] = {
    [OSVRT_PKT_OK] = "ok",
    [OSVRT_PKT_IGNORED] = "ignored",
    [OSVRT_PKT_TOO_BIG] = "too_big",
    [OSVRT_PKT_TRUNC_ETH] = "truncated_ethernet",
    [OSVRT_PKT_TRUNC_IP] = "truncated_ip",
    [OSVRT_PKT_BAD_VERSION] = "bad_ip_version",
    [OSVRT_PKT_BAD_IHL] = "bad_ip_header_length",
    [OSVRT_PKT_BAD_TOTLEN] = "bad_ip_total_length",
    [OSVRT_PKT_PAST_END] = "length_past_end",
    [OSVRT_PKT_BAD_IP_CSUM] = "bad_ip_checksum",
    [OSVRT_PKT_FRAGMENT] = "fragment",
    [OSVRT_PKT_TRUNC_L4] = "truncated_l4",
    [OSVRT_PKT_BAD_UDP_LEN] = "bad_udp_length",
    [OSVRT_PKT_BAD_TCP_OFF] = "bad_tcp_offset",
    [OSVRT_PKT_BAD_L4_CSUM] = "bad_l4_checksum",
    [OSVRT_PKT_BAD_GSO] = "bad_gso",
    [OSVRT_PKT_BAD_IP_OPTIONS] = "bad_ip_options",
    [OSVRT_PKT_BAD_SOURCE] = "bad_source_address",
};

const char *osvrt_pkt_verdict_name(int verdict)
{
    if (verdict < 0 || verdict >= OSVRT_PKT_NVERDICTS)
        return "unknown";
    return verdict_names[verdict];
}

static inline uint16_t be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t raw32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

uint32_t osvrt_csum_add(uint32_t sum, const uint8_t *buf, uint32_t len)
{
    uint64_t s = sum;
    uint32_t i = 0;
    for (; i + 4 <= len; i += 4)      /* big-endian 16-bit words, two at a time */
        s += (uint32_t)be16(buf + i) + be16(buf + i + 2);
    for (; i + 2 <= len; i += 2)
        s += be16(buf + i);
    if (i < len)
        s += (uint32_t)buf[i] << 8;   /* odd byte: padded with a zero */
    while (s >> 32)
        s = (s & 0xffffffffu) + (s >> 32);
    return (uint32_t)s;
}

uint16_t osvrt_csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

/* The L4 checksum over the pseudo-header and the segment; 1 if it verifies. */
static int l4_csum_ok(const uint8_t *ip, const uint8_t *l4, uint32_t l4_len, uint8_t proto)
{
    uint32_t s = osvrt_csum_add(0, ip + 12, 8);        /* source and destination addresses */
    s += proto;
    s += l4_len;
    s = osvrt_csum_add(s, l4, l4_len);
    return osvrt_csum_fold(s) == 0xffff;
}

/* IPv4 options (RFC 791 3.1) between byte 20 and the header's end: each a
 * type byte, then (but for End and No-op) a length of at least 2 that stays
 * inside the header.  A source route (loose or strict) is refused as the
 * kernel refuses it by default (accept_source_route = 0).  1 if they pass. */
static int ip_options_ok(const uint8_t *ip, uint32_t ihl)
{
    for (uint32_t i = 20; i < ihl;) {
        uint8_t type = ip[i];
        if (type == 0)                       /* End of options: the rest is padding */
            return 1;
        if (type == 1) {                     /* No-op */
            i++;
            continue;
        }
        if (i + 2 > ihl || ip[i + 1] < 2 || ip[i + 1] > ihl - i)
            return 0;
        if (type == 0x83 || type == 0x89)    /* LSRR, SSRR */
            return 0;
        i += ip[i + 1];
    }
    return 1;
}

/* A source no reply may go to (RFC 1122 3.2.1.3, the kernel's martians):
 * 0/8 (but towards the broadcast: a DHCP client's discover, which the
 * kernel takes too), multicast 224/4, 240/4 and the broadcast; 127/8 only
 * towards 127/8 (loopback's own traffic).  1 if it is one. */
static int bad_source(const uint8_t *ip)
{
    uint8_t a = ip[12];
    if (a == 0)
        return raw32(ip + 16) != 0xffffffffu;
    return a >= 224 || (a == 127 && ip[16] != 127);
}

int osvrt_pkt_parse(const uint8_t *f, uint32_t len, uint32_t wire_len, uint32_t flags,
                    const struct osvrt_vnet_hdr *vnet, struct osvrt_pkt *out)
{
    memset(out, 0, sizeof *out);
    if (wire_len < len)
        wire_len = len;
    int cut = wire_len > len;          /* the ring frame holds only a prefix */

    /* Ethernet, then up to two VLAN tags (802.1Q, 802.1ad).  A tag with a
     * VLAN ID is another VLAN's frame (the kernel gives it to that VLAN's
     * interface, if the host has one); ID 0 is a priority tag: ours. */
    if (len < 14)
        return OSVRT_PKT_TRUNC_ETH;
    uint32_t off = 12;
    uint16_t type = be16(f + off);
    for (int tags = 0; (type == 0x8100 || type == 0x88a8) && tags < 2; tags++) {
        if (len < off + 4 + 2)
            return OSVRT_PKT_TRUNC_ETH;
        if (be16(f + off + 2) & 0x0fff)
            return OSVRT_PKT_IGNORED;
        off += 4;
        type = be16(f + off);
    }
    off += 2;
    if (type != 0x0800)
        return OSVRT_PKT_IGNORED;

    /* IPv4. */
    const uint8_t *ip = f + off;
    uint32_t avail = len - off;               /* bytes of IP really in the frame */
    uint32_t wire_avail = wire_len - off;     /* bytes of IP on the wire */
    if (avail < 20)
        return cut ? OSVRT_PKT_TOO_BIG : OSVRT_PKT_TRUNC_IP;
    if ((ip[0] >> 4) != 4)
        return OSVRT_PKT_BAD_VERSION;
    uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
    if (ihl < 20)
        return OSVRT_PKT_BAD_IHL;
    if (ihl > avail)
        return cut ? OSVRT_PKT_TOO_BIG : OSVRT_PKT_BAD_IHL;
    uint32_t tot = be16(ip + 2);
    if (tot < ihl)
        return OSVRT_PKT_BAD_TOTLEN;
    if (tot > wire_avail)
        return OSVRT_PKT_PAST_END;
    if (osvrt_csum_fold(osvrt_csum_add(0, ip, ihl)) != 0xffff)
        return OSVRT_PKT_BAD_IP_CSUM;
    if (ihl > 20 && !ip_options_ok(ip, ihl))
        return OSVRT_PKT_BAD_IP_OPTIONS;
    uint16_t frag = be16(ip + 6);
    if (frag & 0x3fff)                        /* MF, or a non-zero fragment offset */
        return OSVRT_PKT_FRAGMENT;
    uint8_t proto = ip[9];
    if (proto != 17 && proto != 6)
        return OSVRT_PKT_IGNORED;
    if (bad_source(ip))
        return OSVRT_PKT_BAD_SOURCE;

    out->saddr = raw32(ip + 12);
    out->daddr = raw32(ip + 16);
    out->proto = proto;
    out->l3_off = off;
    out->l4_off = off + ihl;
    out->l4_len = tot - ihl;
    uint32_t l4_avail = (avail < tot ? avail : tot) - ihl;   /* L4 bytes really here */
    const uint8_t *l4 = ip + ihl;

    /* The virtio-net header: which offloads apply.  Checked against the packet. */
    uint8_t gso = vnet ? (uint8_t)(vnet->gso_type & ~OSVRT_VNET_GSO_ECN) : OSVRT_VNET_GSO_NONE;
    if (vnet && (vnet->flags & OSVRT_VNET_NEEDS_CSUM))
        flags |= OSVRT_PKT_CSUM_TRUSTED;      /* checksum is partial: the sender's stack owns it */
    if (gso != OSVRT_VNET_GSO_NONE) {
        int fits = (gso == OSVRT_VNET_GSO_UDP_L4 && proto == 17)
                   || (gso == OSVRT_VNET_GSO_UDP && proto == 17)
                   || (gso == OSVRT_VNET_GSO_TCPV4 && proto == 6);
        if (!fits || vnet->gso_size == 0)
            return OSVRT_PKT_BAD_GSO;
    }

    if (proto == 17) {
        if (out->l4_len < 8)
            return OSVRT_PKT_TRUNC_L4;
        if (l4_avail < 8)
            return OSVRT_PKT_TOO_BIG;         /* tot fits the wire, so only a cut explains it */
        uint32_t ulen = be16(l4 + 4);
        if (ulen < 8 || ulen > out->l4_len)
            return OSVRT_PKT_BAD_UDP_LEN;
        out->sport = be16(l4);
        out->dport = be16(l4 + 2);
        out->l4_len = ulen;                   /* bytes past the UDP length are not the datagram's */
        out->data_off = out->l4_off + 8;
        out->data_len = ulen - 8;
        if (gso == OSVRT_VNET_GSO_UDP_L4)
            out->gso_size = vnet->gso_size;
        if (ulen > l4_avail)
            return OSVRT_PKT_TOO_BIG;
        if (!(flags & OSVRT_PKT_CSUM_TRUSTED) && be16(l4 + 6) != 0
            && !l4_csum_ok(ip, l4, ulen, 17))
            return OSVRT_PKT_BAD_L4_CSUM;
        return OSVRT_PKT_OK;
    }

    /* TCP */
    if (out->l4_len < 20)
        return OSVRT_PKT_TRUNC_L4;
    if (l4_avail < 20)
        return OSVRT_PKT_TOO_BIG;
    uint32_t doff = (uint32_t)(l4[12] >> 4) * 4;
    if (doff < 20 || doff > out->l4_len)
        return OSVRT_PKT_BAD_TCP_OFF;
    out->sport = be16(l4);
    out->dport = be16(l4 + 2);
    out->tcp_flags = l4[13];
    out->data_off = out->l4_off + doff;
    out->data_len = out->l4_len - doff;
    if (gso == OSVRT_VNET_GSO_TCPV4)
        out->gso_size = vnet->gso_size;
    if (out->l4_len > l4_avail)
        return OSVRT_PKT_TOO_BIG;
    if (!(flags & OSVRT_PKT_CSUM_TRUSTED) && !l4_csum_ok(ip, l4, out->l4_len, 6))
        return OSVRT_PKT_BAD_L4_CSUM;
    return OSVRT_PKT_OK;
}
