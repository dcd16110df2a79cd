/* test_packet.c - the parser: well-formed UDP/TCP (IP options, Ethernet
 * padding, VLAN tags, GSO), every malformed case with its verdict, every
 * prefix of a valid frame, and the checksum arithmetic (RFC 1071). */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "netframe.h"
#include "packet.h"

static uint8_t buf[70000];
static const uint8_t payload[] = "hello, channel";

static int parse(uint32_t len, uint32_t flags, const struct osvrt_vnet_hdr *vnet, struct osvrt_pkt *p)
{
    return osvrt_pkt_parse(buf, len, len, flags, vnet, p);
}

static void test_csum(void)
{
    /* RFC 1071, section 3: 0001 f203 f4f5 f6f7 sums to ddf2. */
    static const uint8_t rfc[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    CHECK_EQ(osvrt_csum_fold(osvrt_csum_add(0, rfc, 8)), 0xddf2);
    /* odd length: the last byte is the high half of a word */
    static const uint8_t odd[] = {0x12, 0x34, 0x56};
    CHECK_EQ(osvrt_csum_fold(osvrt_csum_add(0, odd, 3)), 0x1234 + 0x5600);
    /* carries fold back in */
    static const uint8_t ff[] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x02};
    CHECK_EQ(osvrt_csum_fold(osvrt_csum_add(0, ff, 6)), 2);   /* 0x1fffe + 2 = 0x20000 -> 2 */
}

static void test_udp_ok(void)
{
    struct nf_opts o = {.sport = 40000, .dport = 9000, .payload = payload, .len = sizeof payload,
                        .daddr = 0x7f000002};
    uint32_t n = nf_build(buf, sizeof buf, &o);
    struct osvrt_pkt p;
    CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_OK);
    CHECK_EQ(p.proto, 17);
    CHECK_EQ(p.sport, 40000);
    CHECK_EQ(p.dport, 9000);
    CHECK_EQ(p.saddr, htonl(0x7f000001));
    CHECK_EQ(p.daddr, htonl(0x7f000002));
    CHECK_EQ(p.data_len, sizeof payload);
    CHECK_EQ(p.data_off, 14 + 20 + 8);
    CHECK(memcmp(buf + p.data_off, payload, sizeof payload) == 0);
    CHECK_EQ(osvrt_pkt_segments(&p), 1);

    /* no UDP checksum (0) is allowed in IPv4 */
    o.no_udp_csum = 1;
    n = nf_build(buf, sizeof buf, &o);
    CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_OK);

    /* an empty datagram */
    struct nf_opts e = {.sport = 1, .dport = 2};
    n = nf_build(buf, sizeof buf, &e);
    CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_OK);
    CHECK_EQ(p.data_len, 0);
    CHECK_EQ(osvrt_pkt_segments(&p), 1);
}

static void test_options_padding_vlan(void)
{
    struct osvrt_pkt p;
    for (uint32_t opts = 0; opts <= 40; opts += 4) {
        struct nf_opts o = {.sport = 1, .dport = 9000, .payload = payload, .len = 5, .ip_opts = opts};
        uint32_t n = nf_build(buf, sizeof buf, &o);
        CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_OK);
        CHECK_EQ(p.data_off, 14 + 20 + opts + 8);
        CHECK_EQ(p.data_len, 5);
    }
    /* Ethernet padding to 60 bytes: the IP length rules, padding is ignored */
    struct nf_opts o = {.sport = 1, .dport = 9000, .payload = "ab", .len = 2, .pad_to = 60};
    uint32_t n = nf_build(buf, sizeof buf, &o);
    CHECK_EQ(n, 60);
    buf[59] = 0xee;
    CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_OK);
    CHECK_EQ(p.data_len, 2);
    /* one and two VLAN tags: priority tags (VLAN ID 0) are ours, a VLAN
     * ID is another VLAN's frame (its own interface's, if the host has one) */
    for (int v = 1; v <= 2; v++) {
        struct nf_opts ov = {.sport = 1, .dport = 9000, .payload = payload, .len = 3, .vlan = v};
        n = nf_build(buf, sizeof buf, &ov);
        CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_OK);
        CHECK_EQ(p.l3_off, 14 + 4 * (uint32_t)v);
        ov.vlan_id = 42;
        n = nf_build(buf, sizeof buf, &ov);
        CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_IGNORED);
    }
}

/* A UDP frame with IP options `opts` (n bytes, a multiple of 4), its
 * header checksum right; returns its length. */
static uint32_t with_options(const uint8_t *opts, uint32_t n)
{
    struct nf_opts o = {.sport = 1, .dport = 9000, .payload = payload, .len = 5, .ip_opts = n};
    uint32_t len = nf_build(buf, sizeof buf, &o);
    memcpy(buf + 14 + 20, opts, n);
    buf[14 + 10] = buf[14 + 11] = 0;
    nf_put16(buf + 14 + 10, (uint16_t)~osvrt_csum_fold(osvrt_csum_add(0, buf + 14, 20 + n)));
    return len;
}

/* Options are walked (a review found them unread): each must end inside
 * the header, and a source route is refused, as the kernel refuses it. */
static void test_ip_options_are_checked(void)
{
    struct osvrt_pkt p;
    static const uint8_t timestamp[8] = {0x44, 8, 5, 0, 0, 0, 0, 0};
    static const uint8_t end_then_junk[4] = {0, 0x44, 0, 9};      /* after End: padding */
    static const uint8_t router_alert[4] = {0x94, 4, 0, 0};
    CHECK_EQ(parse(with_options(timestamp, 8), 0, NULL, &p), OSVRT_PKT_OK);
    CHECK_EQ(parse(with_options(end_then_junk, 4), 0, NULL, &p), OSVRT_PKT_OK);
    CHECK_EQ(parse(with_options(router_alert, 4), 0, NULL, &p), OSVRT_PKT_OK);
    static const uint8_t len0[4] = {0x44, 0, 0, 0};
    static const uint8_t len1[4] = {0x44, 1, 0, 0};
    static const uint8_t past_ihl[4] = {0x44, 40, 0, 0};
    static const uint8_t type_alone[4] = {1, 1, 1, 0x44};          /* no room for its length */
    static const uint8_t lsrr[8] = {0x83, 7, 4, 10, 0, 0, 1, 0};
    static const uint8_t ssrr[8] = {0x89, 7, 4, 10, 0, 0, 1, 0};
    const uint8_t *bad[] = {len0, len1, past_ihl, type_alone, lsrr, ssrr};
    const uint32_t n[] = {4, 4, 4, 4, 8, 8};
    for (unsigned i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_EQ(parse(with_options(bad[i], n[i]), 0, NULL, &p), OSVRT_PKT_BAD_IP_OPTIONS);
}

/* Sources no reply may go to are malformed; loopback only between 127/8. */
static void test_bad_sources(void)
{
    struct osvrt_pkt p;
    /* 0.0.0.1 (0/8; a zero saddr would mean nf_build's default), multicast,
     * 240/4, the broadcast, and loopback towards 198.18.0.1 */
    const uint32_t bad[] = {0x00000001, 0xe0000001, 0xefffffff, 0xf0000001, 0xffffffff,
                            0x7f000001};
    for (unsigned i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct nf_opts o = {.sport = 1, .dport = 9000, .payload = payload, .len = 3,
                            .saddr = bad[i], .daddr = 0xc6120001};
        uint32_t n = nf_build(buf, sizeof buf, &o);
        CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_BAD_SOURCE);
    }
    /* 0/8 towards the broadcast: a DHCP discover, taken as the kernel takes it */
    struct nf_opts dhcp = {.sport = 68, .dport = 67, .payload = payload, .len = 3,
                           .saddr = 0x00000001, .daddr = 0xffffffff};
    CHECK_EQ(parse(nf_build(buf, sizeof buf, &dhcp), 0, NULL, &p), OSVRT_PKT_OK);
    struct nf_opts lo = {.sport = 1, .dport = 9000, .payload = payload, .len = 3};
    CHECK_EQ(parse(nf_build(buf, sizeof buf, &lo), 0, NULL, &p), OSVRT_PKT_OK);  /* 127 -> 127 */
    struct nf_opts ok = {.sport = 1, .dport = 9000, .payload = payload, .len = 3,
                         .saddr = 0xc6120002, .daddr = 0xc6120001};
    CHECK_EQ(parse(nf_build(buf, sizeof buf, &ok), 0, NULL, &p), OSVRT_PKT_OK);
}

static void test_tcp(void)
{
    struct osvrt_pkt p;
    struct nf_opts o = {.proto = 6, .sport = 5555, .dport = 80, .payload = payload, .len = 7,
                        .tcp_doff = 8};
    uint32_t n = nf_build(buf, sizeof buf, &o);
    CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_OK);
    CHECK_EQ(p.proto, 6);
    CHECK_EQ(p.dport, 80);
    CHECK_EQ(p.l4_len, 32 + 7);
    CHECK_EQ(p.data_off - p.l4_off, 32);
    CHECK_EQ(p.data_len, 7);
    CHECK_EQ(p.tcp_flags, 0x18);
    o.bad_l4_csum = 1;
    n = nf_build(buf, sizeof buf, &o);
    CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_BAD_L4_CSUM);
    CHECK_EQ(parse(n, OSVRT_PKT_CSUM_TRUSTED, NULL, &p), OSVRT_PKT_OK);
    o.bad_l4_csum = 0;
    o.tcp_doff = 4;
    n = nf_build(buf, sizeof buf, &o);
    CHECK_EQ(parse(n, OSVRT_PKT_CSUM_TRUSTED, NULL, &p), OSVRT_PKT_BAD_TCP_OFF);
    /* a data offset past the end of the segment */
    struct nf_opts s = {.proto = 6, .sport = 1, .dport = 2, .tcp_doff = 5, .len = 0};
    n = nf_build(buf, sizeof buf, &s);
    buf[14 + 20 + 12] = 0x60;              /* doff 6 > 20-byte segment */
    CHECK_EQ(parse(n, OSVRT_PKT_CSUM_TRUSTED, NULL, &p), OSVRT_PKT_BAD_TCP_OFF);
}

static void expect_verdict(const struct nf_opts *o, int verdict, const char *name)
{
    struct osvrt_pkt p;
    uint32_t n = nf_build(buf, sizeof buf, o);
    CHECK(n > 0);
    int v = parse(n, 0, NULL, &p);
    CHECK_MSG(v == verdict, "%s: got %s, want %s", name, osvrt_pkt_verdict_name(v),
              osvrt_pkt_verdict_name(verdict));
    CHECK(osvrt_pkt_malformed(verdict) == (verdict >= OSVRT_PKT_FIRST_MALFORMED));
}

static void test_malformed(void)
{
    struct nf_opts base = {.sport = 1, .dport = 9000, .payload = payload, .len = sizeof payload};
    struct nf_opts o;
    o = base; o.bad_ip_csum = 1;      expect_verdict(&o, OSVRT_PKT_BAD_IP_CSUM, "ip checksum");
    o = base; o.bad_l4_csum = 1;      expect_verdict(&o, OSVRT_PKT_BAD_L4_CSUM, "udp checksum");
    o = base; o.frag = 0x2000;        expect_verdict(&o, OSVRT_PKT_FRAGMENT, "more fragments");
    o = base; o.frag = 0x0010;        expect_verdict(&o, OSVRT_PKT_FRAGMENT, "fragment offset");
    o = base; o.frag = 0x4000;        expect_verdict(&o, OSVRT_PKT_OK, "don't fragment");
    o = base; o.udp_len_delta = 1;    expect_verdict(&o, OSVRT_PKT_BAD_UDP_LEN, "udp length past end");
    o = base; o.udp_len_delta = -(int)(8 + sizeof payload) + 7;
                                      expect_verdict(&o, OSVRT_PKT_BAD_UDP_LEN, "udp length < 8");
    o = base; o.ip_len_delta = 1;     expect_verdict(&o, OSVRT_PKT_PAST_END, "ip length past end");
    o = base; o.ip_len_delta = -(int)(28 + sizeof payload) + 19;
                                      expect_verdict(&o, OSVRT_PKT_BAD_TOTLEN, "ip length < ihl");
    o = base; o.ip_len_delta = -(int)(8 + sizeof payload) + 4;
                                      expect_verdict(&o, OSVRT_PKT_TRUNC_L4, "udp header cut by ip length");
    o = base; o.ihl_override = 4;     expect_verdict(&o, OSVRT_PKT_BAD_IHL, "ihl < 5");
    o = base; o.ihl_override = 15; o.len = 0;
                                      expect_verdict(&o, OSVRT_PKT_BAD_IHL, "ihl past end");
    o = base; o.udp_len_delta = -3;   /* a shorter UDP length is legal: trailing bytes ignored */
    {
        struct osvrt_pkt p;
        uint32_t n = nf_build(buf, sizeof buf, &o);
        /* the checksum was computed over the full length: trust it here */
        CHECK_EQ(parse(n, OSVRT_PKT_CSUM_TRUSTED, NULL, &p), OSVRT_PKT_OK);
        CHECK_EQ(p.data_len, sizeof payload - 3);
    }
    /* version */
    uint32_t n = nf_build(buf, sizeof buf, &base);
    struct osvrt_pkt p;
    buf[14] = 0x65;
    CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_BAD_VERSION);
    /* not IPv4, not UDP/TCP: ignored, not malformed */
    n = nf_build(buf, sizeof buf, &base);
    buf[12] = 0x86; buf[13] = 0xdd;
    CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_IGNORED);
    n = nf_build(buf, sizeof buf, &base);
    buf[14 + 9] = 1;                        /* ICMP */
    {
        /* fix the header checksum so only the protocol differs */
        buf[14 + 10] = buf[14 + 11] = 0;
        uint16_t c = (uint16_t)~osvrt_csum_fold(osvrt_csum_add(0, buf + 14, 20));
        nf_put16(buf + 14 + 10, c);
    }
    CHECK_EQ(parse(n, 0, NULL, &p), OSVRT_PKT_IGNORED);
    /* truncated Ethernet and VLAN */
    CHECK_EQ(parse(13, 0, NULL, &p), OSVRT_PKT_TRUNC_ETH);
    struct nf_opts v = base; v.vlan = 1;
    n = nf_build(buf, sizeof buf, &v);
    CHECK_EQ(parse(17, 0, NULL, &p), OSVRT_PKT_TRUNC_ETH);
    CHECK(n > 17);
}

/* Every prefix of a valid frame is judged without reading past it. */
static void test_prefixes(void)
{
    struct nf_opts cases[] = {
        {.sport = 1, .dport = 9, .payload = payload, .len = sizeof payload, .ip_opts = 8, .vlan = 2},
        {.proto = 6, .sport = 1, .dport = 9, .payload = payload, .len = sizeof payload, .tcp_doff = 10},
    };
    static uint8_t exact[200];
    for (unsigned c = 0; c < sizeof cases / sizeof *cases; c++) {
        uint32_t n = nf_build(buf, sizeof buf, &cases[c]);
        for (uint32_t len = 0; len < n; len++) {
            /* a heap-free exact copy: reading past len would read stale bytes
             * (under ASan the tests also run on exact-size buffers in the fuzz target) */
            memcpy(exact, buf, len);
            struct osvrt_pkt p;
            int v = osvrt_pkt_parse(exact, len, len, 0, NULL, &p);
            CHECK_MSG(v != OSVRT_PKT_OK, "prefix %u of %u parsed OK", len, n);
            /* cut by the ring (wire_len says more was there): too big, or malformed
             * only if the headers themselves are missing */
            v = osvrt_pkt_parse(exact, len, n, 0, NULL, &p);
            CHECK(v != OSVRT_PKT_OK);
            if (len >= p.l4_off + (cases[c].proto == 6 ? 40u : 8u) && p.l4_off)
                CHECK_EQ(v, OSVRT_PKT_TOO_BIG);
        }
        CHECK_EQ(osvrt_pkt_parse(buf, n, n, 0, NULL, &(struct osvrt_pkt){0}), OSVRT_PKT_OK);
    }
}

static void test_gso(void)
{
    static uint8_t big[9000];
    for (unsigned i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)i;
    struct nf_opts o = {.sport = 1, .dport = 9000, .payload = big, .len = 1000 * 8 + 300};
    uint32_t n = nf_build(buf, sizeof buf, &o);
    struct osvrt_vnet_hdr vh = {.flags = OSVRT_VNET_NEEDS_CSUM, .gso_type = OSVRT_VNET_GSO_UDP_L4,
                                .gso_size = 1000};
    struct osvrt_pkt p;
    CHECK_EQ(parse(n, 0, &vh, &p), OSVRT_PKT_OK);
    CHECK_EQ(p.gso_size, 1000);
    CHECK_EQ(osvrt_pkt_segments(&p), 9);
    vh.gso_size = 0;
    CHECK_EQ(parse(n, 0, &vh, &p), OSVRT_PKT_BAD_GSO);
    vh.gso_size = 1000;
    vh.gso_type = OSVRT_VNET_GSO_TCPV4;     /* TCP GSO on a UDP packet */
    CHECK_EQ(parse(n, 0, &vh, &p), OSVRT_PKT_BAD_GSO);
    vh.gso_type = OSVRT_VNET_GSO_TCPV6;
    CHECK_EQ(parse(n, 0, &vh, &p), OSVRT_PKT_BAD_GSO);
    vh.gso_type = 0x42;
    CHECK_EQ(parse(n, 0, &vh, &p), OSVRT_PKT_BAD_GSO);
    vh.gso_type = OSVRT_VNET_GSO_NONE;
    CHECK_EQ(parse(n, 0, &vh, &p), OSVRT_PKT_OK);
    CHECK_EQ(osvrt_pkt_segments(&p), 1);
    /* exact multiple */
    o.len = 4000;
    n = nf_build(buf, sizeof buf, &o);
    vh.gso_type = OSVRT_VNET_GSO_UDP_L4 | OSVRT_VNET_GSO_ECN;
    CHECK_EQ(parse(n, 0, &vh, &p), OSVRT_PKT_OK);
    CHECK_EQ(osvrt_pkt_segments(&p), 4);
}

static void test_names(void)
{
    for (int v = 0; v < OSVRT_PKT_NVERDICTS; v++) {
        const char *s = osvrt_pkt_verdict_name(v);
        CHECK(s && strcmp(s, "unknown") != 0);
    }
    CHECK(strcmp(osvrt_pkt_verdict_name(-1), "unknown") == 0);
    CHECK(strcmp(osvrt_pkt_verdict_name(OSVRT_PKT_NVERDICTS), "unknown") == 0);
}

int main(void)
{
    test_csum();
    test_udp_ok();
    test_options_padding_vlan();
    test_ip_options_are_checked();
    test_bad_sources();
    test_tcp();
    test_malformed();
    test_prefixes();
    test_gso();
    test_names();
    printf("test_packet: ok\n");
    return 0;
}
