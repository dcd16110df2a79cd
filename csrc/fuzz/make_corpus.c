/* make_corpus.c - writes the seed corpus of the fuzz target (see
 * fuzz_packet.c for the input layout) into DIR: well-formed UDP and TCP
 * frames for the flows the target sets up, GSO super-packets, and one of
 * each malformed kind.  Usage: fuzz_make_corpus DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/netframe.h"

static const char *dir;
static int count;

static void put(const char *name, uint8_t mode, const uint8_t vnet[10], uint16_t cut,
                const uint8_t *frame, uint32_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%02d-%s", dir, count++, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    uint8_t head[13] = {mode};
    if (vnet)
        memcpy(head + 1, vnet, 10);
    head[11] = (uint8_t)cut;
    head[12] = (uint8_t)(cut >> 8);
    fwrite(head, 1, sizeof head, f);
    fwrite(frame, 1, len, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    static uint8_t buf[70000], pay[4000];
    for (unsigned i = 0; i < sizeof pay; i++)
        pay[i] = (uint8_t)(i * 7);
    struct nf_opts base = {.sport = 40000, .dport = 9000, .payload = pay, .len = 32};
    struct nf_opts o;
    uint32_t n;
#define SEED(name, ...) do { o = base; __VA_ARGS__; n = nf_build(buf, sizeof buf, &o); put(name, 0, NULL, 0, buf, n); } while (0)
    SEED("udp");
    SEED("udp-rule", o.dport = 9001);
    SEED("udp-any", o.dport = 9002, o.daddr = 0x7f000002);
    SEED("udp-noflow", o.dport = 9999);
    SEED("udp-empty", o.len = 0);
    SEED("udp-options", o.ip_opts = 12);
    SEED("udp-padding", o.len = 2, o.pad_to = 60);
    SEED("udp-vlan", o.vlan = 1);
    SEED("udp-qinq", o.vlan = 2);
    SEED("udp-nocsum", o.no_udp_csum = 1);
    SEED("tcp", o.proto = 6, o.dport = 80, o.tcp_doff = 8);
    SEED("bad-ip-csum", o.bad_ip_csum = 1);
    SEED("bad-udp-csum", o.bad_l4_csum = 1);
    SEED("fragment", o.frag = 0x2000);
    SEED("udp-len-past-end", o.udp_len_delta = 9);
    SEED("ip-len-past-end", o.ip_len_delta = 100);
    SEED("ihl-small", o.ihl_override = 3);
    SEED("ihl-large", o.ihl_override = 15);
    SEED("tcp-bad-offset", o.proto = 6, o.dport = 80, o.tcp_doff = 3);
    /* GSO: a super-packet of 3,000 bytes in 1,000-byte datagrams */
    o = base;
    o.len = 3000;
    n = nf_build(buf, sizeof buf, &o);
    uint8_t vnet[10] = {1, 5, 0, 0, 0xe8, 0x03, 0, 0, 0, 0};   /* NEEDS_CSUM, UDP_L4, 1000 */
    put("gso-udp", 1 | 2, vnet, 0, buf, n);
    o.dport = 9001;
    n = nf_build(buf, sizeof buf, &o);
    put("gso-udp-rule", 1 | 2, vnet, 0, buf, n);
    /* cut by the ring */
    o = base;
    o.len = 2000;
    n = nf_build(buf, sizeof buf, &o);
    put("cut", 8, NULL, 1500, buf, n - 1500);
    /* noise */
    for (unsigned i = 0; i < 64; i++)
        buf[i] = (uint8_t)(i * 37 + 11);
    buf[12] = 0x08;
    buf[13] = 0x00;
    put("noise-ipv4", 0, NULL, 0, buf, 64);
    printf("wrote %d seeds to %s\n", count, dir);
    return 0;
}
