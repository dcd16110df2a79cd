/* packet.h - the classifier's parser: Ethernet (with up to two VLAN tags),
 * IPv4, UDP and TCP, with every length and offset checked against the bytes
 * that are really there.  Pure functions on a byte buffer: no socket, no
 * allocation, no global state, so the fuzz target (csrc/fuzz/) drives it
 * directly.
 *
 * A frame is judged once:
 *   OSVRT_PKT_OK        IPv4 UDP or TCP, well formed: classify it
 *   OSVRT_PKT_IGNORED   not ours to judge (ARP, IPv6, ICMP, another VLAN's
 *                       frame, ...): the kernel's
 *   OSVRT_PKT_TOO_BIG   headers fine, but the ring frame cut the packet short
 *                       (the ports are filled in, to charge the flow)
 *   anything else       malformed, one code per reason (osvrt_pkt_verdict_name)
 */
#ifndef OSVRT_PACKET_H
#define OSVRT_PACKET_H

#include <stdint.h>

enum osvrt_pkt_verdict {
    OSVRT_PKT_OK = 0,
    OSVRT_PKT_IGNORED,
    OSVRT_PKT_TOO_BIG,
    /* malformed: */
    OSVRT_PKT_TRUNC_ETH,       /* shorter than an Ethernet (+ VLAN) header */
    OSVRT_PKT_TRUNC_IP,        /* shorter than an IPv4 header */
    OSVRT_PKT_BAD_VERSION,     /* EtherType IPv4, version field not 4 */
    OSVRT_PKT_BAD_IHL,         /* header length < 20, or past the end of the frame */
    OSVRT_PKT_BAD_TOTLEN,      /* total length < header length */
    OSVRT_PKT_PAST_END,        /* total length past the end of the frame */
    OSVRT_PKT_BAD_IP_CSUM,     /* IPv4 header checksum */
    OSVRT_PKT_FRAGMENT,        /* a fragment (MF set or offset != 0): not reassembled here */
    OSVRT_PKT_TRUNC_L4,        /* shorter than a UDP (8) or TCP (20) header */
    OSVRT_PKT_BAD_UDP_LEN,     /* UDP length < 8 or past the IP payload */
    OSVRT_PKT_BAD_TCP_OFF,     /* TCP data offset < 5 words or past the segment */
    OSVRT_PKT_BAD_L4_CSUM,     /* UDP or TCP checksum */
    OSVRT_PKT_BAD_GSO,         /* virtio-net header that does not fit the packet */
    OSVRT_PKT_BAD_IP_OPTIONS,  /* an IPv4 option past the header, or a source route */
    OSVRT_PKT_BAD_SOURCE,      /* source 0/8, multicast, 240/4, broadcast, or 127/8 from outside */
    OSVRT_PKT_NVERDICTS
};
#define OSVRT_PKT_FIRST_MALFORMED OSVRT_PKT_TRUNC_ETH

/* The virtio-net header that PACKET_VNET_HDR puts before each frame
 * (little-endian fields on the hosts we run on). */
struct osvrt_vnet_hdr {
    uint8_t flags;             /* 1: NEEDS_CSUM (checksum partial), 2: DATA_VALID */
    uint8_t gso_type;          /* 0 none, 1 TCPv4, 3 UDP (UFO), 4 TCPv6, 5 UDP_L4; | 0x80 ECN */
    uint16_t hdr_len;
    uint16_t gso_size;         /* payload bytes per segment */
    uint16_t csum_start;
    uint16_t csum_offset;
};
#define OSVRT_VNET_NEEDS_CSUM  1
#define OSVRT_VNET_DATA_VALID  2
#define OSVRT_VNET_GSO_NONE    0
#define OSVRT_VNET_GSO_TCPV4   1
#define OSVRT_VNET_GSO_UDP     3
#define OSVRT_VNET_GSO_TCPV6   4
#define OSVRT_VNET_GSO_UDP_L4  5
#define OSVRT_VNET_GSO_ECN     0x80

/* Parse flags. */
#define OSVRT_PKT_CSUM_TRUSTED 1u  /* the kernel vouches for the L4 checksum (or it is partial) */

struct osvrt_pkt {
    uint32_t saddr, daddr;     /* network byte order */
    uint16_t sport, dport;     /* host byte order */
    uint8_t proto;             /* 17 UDP, 6 TCP */
    uint8_t tcp_flags;
    uint16_t gso_size;         /* UDP: split the payload into datagrams of this size; 0: one */
    uint32_t l3_off;           /* offset of the IPv4 header in the frame */
    uint32_t l4_off, l4_len;   /* the UDP datagram (its length field) / the TCP segment (IP length) */
    uint32_t data_off, data_len;  /* UDP payload / TCP payload */
};

/* frame: `len` bytes that are really there; wire_len: the packet's length on
 * the wire (> len when the ring frame cut it short).  vnet: the virtio-net
 * header, or NULL.  Fills *out for OK and TOO_BIG. */
int osvrt_pkt_parse(const uint8_t *frame, uint32_t len, uint32_t wire_len, uint32_t flags,
                    const struct osvrt_vnet_hdr *vnet, struct osvrt_pkt *out);

/* How many datagrams a parsed UDP packet carries (GSO: ceil(data/gso_size)). */
static inline uint32_t osvrt_pkt_segments(const struct osvrt_pkt *p)
{
    if (p->proto != 17 || p->gso_size == 0 || p->data_len == 0)
        return 1;
    return (p->data_len + p->gso_size - 1) / p->gso_size;
}

static inline int osvrt_pkt_malformed(int verdict)
{
    return verdict >= OSVRT_PKT_FIRST_MALFORMED && verdict < OSVRT_PKT_NVERDICTS;
}

/* "ok", "ignored", "too_big", "truncated_ethernet", ... (static strings). */
const char *osvrt_pkt_verdict_name(int verdict);

/* The Internet checksum (RFC 1071) of buf, folded, not complemented, added to sum. */
uint32_t osvrt_csum_add(uint32_t sum, const uint8_t *buf, uint32_t len);
uint16_t osvrt_csum_fold(uint32_t sum);

#endif
