/* bench_txpath.c - what a batch of UDP replies costs by each send path
 * (issue #18: "sendmmsg per worker turn, or a PACKET_TX_RING; measure both").
 *
 * Every path sends the same datagrams (payload bytes each) to a UDP socket
 * of this process in batches of 32, one flush per batch, and the receiver
 * is drained with recvmmsg after each batch, so each figure is the whole
 * cost of a reply on lo: the send syscall, the kernel's delivery (on lo it
 * runs inside the sender's syscall, as a veth peer's does), and the same
 * receive.  It runs in a network namespace of its own (own_netns: why the
 * addresses are 198.18.0.9 -> 198.18.0.1 and not 127.0.0.1).  Paths:
 *
 *   udp-sendmmsg     a kernel UDP socket, one sendmmsg (what net channels
 *                    use: csrc/net/tx_batch.h);
 *   packet-sendmmsg  an AF_PACKET socket on lo: frames built here
 *                    (Ethernet + IPv4 + UDP, both checksums), one sendmmsg
 *                    (what the user TCP stack's link uses);
 *   packet-txring    the same frames written into a PACKET_TX_RING
 *                    (TPACKET_V2) and flushed with one send();
 *   ...-bypass       the two packet paths with PACKET_QDISC_BYPASS.
 *
 * It prints ns per datagram (wall clock, this thread pinned to its CPU,
 * median of rounds with the paths alternating) and checks that every
 * datagram arrived, in order and intact.  Needs CAP_SYS_ADMIN (the
 * namespace; exit 77 without it) and CAP_NET_RAW (the packet paths).
 * Usage: bench_txpath [datagrams per round (default 200000)] [payload (64)] [rounds (7)]
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "packet.h"

#define BATCH 32u
#define FRAME_MAX 2048u
#define RING_FRAMES 256u       /* TX ring slots: 8 batches in flight at most */
#define RECEIVER_ADDR 0xc6120001u  /* 198.18.0.1, host order */
#define SENDER_ADDR 0xc6120009u    /* 198.18.0.9: on lo's subnet, not local */

enum path { UDP_SENDMMSG, PKT_SENDMMSG, PKT_TXRING, PKT_SENDMMSG_BYPASS, PKT_TXRING_BYPASS, NPATHS };
static const char *const path_name[NPATHS] = {
    "udp-sendmmsg", "packet-sendmmsg", "packet-txring", "packet-sendmmsg-bypass",
    "packet-txring-bypass"};

struct bench {
    uint32_t payload;
    int rx;                            /* the receiving UDP socket */
    struct sockaddr_in to;             /* its address */
    int udp;                           /* path UDP_SENDMMSG */
    int pkt[NPATHS];                   /* the packet paths' sockets (pkt[UDP_SENDMMSG]: unused) */
    uint8_t *ring[NPATHS];             /* TX ring of a txring path */
    uint32_t ring_head[NPATHS];        /* next slot to fill */
    uint64_t seq;                      /* next datagram's sequence number */
    uint64_t next_rx;                  /* sequence number the receiver expects */
};

static void die(const char *what)
{
    fprintf(stderr, "bench_txpath: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The payload of datagram seq: its number, then bytes derived from it, so
 * the receiver can check both order and content. */
static void fill_payload(uint8_t *p, uint32_t len, uint64_t seq)
{
    memcpy(p, &seq, sizeof seq);
    for (uint32_t i = sizeof seq; i < len; i++)
        p[i] = (uint8_t)(seq * 31u + i);
}

/* One Ethernet + IPv4 + UDP frame carrying datagram seq to b->to from
 * 198.18.0.9:9 (lo's MAC addresses are zero).  Its length. */
static uint32_t build_frame(const struct bench *b, uint8_t *f, uint64_t seq)
{
    /* The headers are built aligned and copied in: in the frame the IP
     * header sits at offset 14, where struct iphdr may not be accessed. */
    struct iphdr ip = {0};
    struct udphdr uh = {0};
    uint32_t ulen = (uint32_t)sizeof uh + b->payload;
    ip.version = 4;
    ip.ihl = 5;
    ip.tot_len = htons((uint16_t)(sizeof ip + ulen));
    ip.ttl = 64;
    ip.protocol = IPPROTO_UDP;
    ip.saddr = htonl(SENDER_ADDR);
    ip.daddr = b->to.sin_addr.s_addr;
    /* osvrt_csum_add sums big-endian words: the result goes back in network order. */
    ip.check = htons((uint16_t)~osvrt_csum_fold(osvrt_csum_add(0, (const uint8_t *)&ip, sizeof ip)));
    uh.source = htons(9);
    uh.dest = b->to.sin_port;
    uh.len = htons((uint16_t)ulen);
    uint8_t *payload = f + ETH_HLEN + sizeof ip + sizeof uh;
    fill_payload(payload, b->payload, seq);
    /* The pseudo-header, the UDP header, the payload (RFC 768). */
    uint8_t pseudo[12];
    memcpy(pseudo, &ip.saddr, 4);
    memcpy(pseudo + 4, &ip.daddr, 4);
    pseudo[8] = 0;
    pseudo[9] = IPPROTO_UDP;
    memcpy(pseudo + 10, &uh.len, 2);
    uint32_t sum = osvrt_csum_add(osvrt_csum_add(0, pseudo, sizeof pseudo), (const uint8_t *)&uh,
                                  sizeof uh);
    uint16_t c = (uint16_t)~osvrt_csum_fold(osvrt_csum_add(sum, payload, b->payload));
    uh.check = htons(c ? c : 0xffff);                 /* 0 would mean "no checksum" */
    memset(f, 0, 12);                                 /* lo's MAC addresses are zero */
    f[12] = 0x08;                                     /* ETH_P_IP */
    f[13] = 0x00;
    memcpy(f + ETH_HLEN, &ip, sizeof ip);
    memcpy(f + ETH_HLEN + sizeof ip, &uh, sizeof uh);
    return ETH_HLEN + (uint32_t)sizeof ip + ulen;
}

static int packet_socket(int bypass)
{
    int fd = socket(AF_PACKET, SOCK_RAW, 0);          /* protocol 0: receives nothing */
    if (fd < 0)
        return -1;
    if (bypass) {
        int one = 1;
        if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) < 0)
            die("PACKET_QDISC_BYPASS");
    }
    return fd;
}

static void bind_lo(int fd)
{
    struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = 0,
                             .sll_ifindex = (int)if_nametoindex("lo")};
    if (ll.sll_ifindex == 0 || bind(fd, (struct sockaddr *)&ll, sizeof ll) < 0)
        die("bind to lo");
}

/* A network namespace of our own, its lo up with 198.18.0.1/24 besides
 * 127.0.0.1.  Frames a packet socket puts on lo carry no route, so the
 * kernel checks them as if they came from a wire: a source address of its
 * own (127.0.0.1, or the receiver's) is dropped (IP_LOCAL_SOURCE), and
 * 127/8 is dropped (IP_LOCALNET).  So the frames come from 198.18.0.9, an
 * address on lo's subnet that is not local: a remote client's reply.
 * Nothing on the host changes.  0, or -1 (errno) without CAP_SYS_ADMIN. */
static int own_netns(void)
{
    if (unshare(CLONE_NEWNET) < 0)
        return -1;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        die("lo's flags");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        die("lo up");
    struct ifreq alias = {0};
    strcpy(alias.ifr_name, "lo:1");                   /* a second address, 127.0.0.1 stays */
    struct sockaddr_in *sin = (struct sockaddr_in *)&alias.ifr_addr;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(RECEIVER_ADDR);
    if (ioctl(s, SIOCSIFADDR, &alias) < 0)
        die("198.18.0.1 on lo");
    sin->sin_addr.s_addr = htonl(0xffffff00u);
    if (ioctl(s, SIOCSIFNETMASK, &alias) < 0)
        die("lo:1's netmask");
    close(s);
    return 0;
}

static uint8_t *tx_ring(int fd)
{
    int v = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v) < 0)
        die("PACKET_VERSION");
    struct tpacket_req req = {.tp_block_size = 4096 * 16, .tp_frame_size = FRAME_MAX,
                              .tp_frame_nr = RING_FRAMES};
    req.tp_block_nr = RING_FRAMES / (req.tp_block_size / FRAME_MAX);
    if (setsockopt(fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof req) < 0)
        die("PACKET_TX_RING");
    void *m = mmap(NULL, (size_t)req.tp_block_size * req.tp_block_nr, PROT_READ | PROT_WRITE,
                   MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        die("mmap of the TX ring");
    return m;
}

/* Read everything queued on the receiver and check it: datagrams in order,
 * each one intact.  Returns how many it read. */
static uint32_t drain(struct bench *b)
{
    static uint8_t buf[BATCH * 4][FRAME_MAX];
    static uint8_t want[FRAME_MAX];
    struct mmsghdr m[BATCH * 4];
    struct iovec iov[BATCH * 4];
    uint32_t total = 0;
    for (;;) {
        for (uint32_t i = 0; i < BATCH * 4; i++) {
            iov[i] = (struct iovec){buf[i], FRAME_MAX};
            m[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int n = recvmmsg(b->rx, m, BATCH * 4, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EAGAIN)
                return total;
            die("recvmmsg");
        }
        for (int i = 0; i < n; i++) {
            fill_payload(want, b->payload, b->next_rx);
            if (m[i].msg_len != b->payload || memcmp(buf[i], want, b->payload) != 0) {
                uint64_t got;
                memcpy(&got, buf[i], sizeof got);
                fprintf(stderr, "bench_txpath: datagram %llu: got %u bytes, seq %llu\n",
                        (unsigned long long)b->next_rx, m[i].msg_len, (unsigned long long)got);
                exit(1);
            }
            b->next_rx++;
        }
        total += (uint32_t)n;
    }
}

/* A batch's sendmmsg took all of it, or the bench ends saying how much. */
static void sent_all(int n, const char *what)
{
    if (n < 0)
        die(what);
    if (n != (int)BATCH) {
        fprintf(stderr, "bench_txpath: %s sent %d of %u datagrams\n", what, n, BATCH);
        exit(1);
    }
}

static void send_udp(struct bench *b)
{
    static uint8_t data[BATCH][FRAME_MAX];
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    for (uint32_t i = 0; i < BATCH; i++) {
        fill_payload(data[i], b->payload, b->seq++);
        iov[i] = (struct iovec){data[i], b->payload};
        m[i].msg_hdr = (struct msghdr){.msg_name = &b->to, .msg_namelen = sizeof b->to,
                                       .msg_iov = &iov[i], .msg_iovlen = 1};
    }
    sent_all(sendmmsg(b->udp, m, BATCH, MSG_DONTWAIT), "sendmmsg (udp)");
}

static void send_packet_mmsg(struct bench *b, int fd)
{
    static uint8_t frames[BATCH][FRAME_MAX];
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    for (uint32_t i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){frames[i], build_frame(b, frames[i], b->seq++)};
        m[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i], .msg_iovlen = 1};
    }
    sent_all(sendmmsg(fd, m, BATCH, MSG_DONTWAIT), "sendmmsg (packet)");
}

static void send_packet_ring(struct bench *b, enum path p)
{
    uint8_t *ring = b->ring[p];
    const uint32_t data_off = TPACKET_ALIGN(sizeof(struct tpacket2_hdr));
    for (uint32_t i = 0; i < BATCH; i++) {
        uint8_t *slot = ring + (size_t)b->ring_head[p] * FRAME_MAX;
        struct tpacket2_hdr *h = (struct tpacket2_hdr *)slot;
        /* acquire: the kernel's release of the slot (status back to
         * AVAILABLE) happens before we overwrite the frame it sent. */
        double t0 = 0;
        uint32_t st;
        while ((st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE))
               & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING | TP_STATUS_WRONG_FORMAT)) {
            if (st & TP_STATUS_WRONG_FORMAT) {
                fprintf(stderr, "bench_txpath: the kernel refused ring frame %u\n", b->ring_head[p]);
                exit(1);
            }
            if (t0 == 0)
                t0 = now_ns();
            else if (now_ns() - t0 > 1e9) {
                fprintf(stderr, "bench_txpath: ring slot %u still held after 1 s (status %#x)\n",
                        b->ring_head[p], st);
                exit(1);
            }
            sched_yield();             /* not yet handed back by the kernel */
        }
        h->tp_len = build_frame(b, slot + data_off, b->seq++);
        /* release: the frame's bytes are visible to the kernel before the
         * status that hands the slot over. */
        __atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
        b->ring_head[p] = (b->ring_head[p] + 1) % RING_FRAMES;
    }
    if (send(b->pkt[p], NULL, 0, MSG_DONTWAIT) < 0)
        die("send (TX ring flush)");
}

static void send_batch(struct bench *b, enum path p)
{
    switch (p) {
    case UDP_SENDMMSG: send_udp(b); break;
    case PKT_SENDMMSG: case PKT_SENDMMSG_BYPASS: send_packet_mmsg(b, b->pkt[p]); break;
    default: send_packet_ring(b, p); break;
    }
}

/* ns per datagram for n datagrams by path p, every one received. */
static double round_ns(struct bench *b, enum path p, uint64_t n)
{
    uint64_t want = 0;
    double t0 = now_ns();
    for (uint64_t sent = 0; sent < n; sent += BATCH) {
        send_batch(b, p);
        want += BATCH;
        drain(b);
        /* Loopback delivers in the send call; a frame still in a queue
         * (the backlog of another softirq run) comes within a poll. */
        while (b->next_rx < b->seq) {
            struct pollfd pfd = {b->rx, POLLIN, 0};
            if (poll(&pfd, 1, 1000) <= 0) {
                fprintf(stderr, "bench_txpath: %s: datagram %llu never arrived\n", path_name[p],
                        (unsigned long long)b->next_rx);
                exit(1);
            }
            drain(b);
        }
    }
    return (now_ns() - t0) / (double)want;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return (a > c) - (a < c);
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 200000;
    uint32_t payload = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 64;
    int rounds = argc > 3 ? atoi(argv[3]) : 7;
    if (n < BATCH || payload < 8 || payload > 1400 || rounds < 1 || rounds > 99) {
        fprintf(stderr, "bench_txpath: got datagrams %llu, payload %u, rounds %d; usage: "
                "bench_txpath [datagrams >= %u] [payload 8..1400] [rounds 1..99]\n",
                (unsigned long long)n, payload, rounds, BATCH);
        return 2;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (sched_setaffinity(0, sizeof one, &one) < 0)
        die("sched_setaffinity");

    if (own_netns() < 0) {
        if (errno != EPERM)
            die("unshare(CLONE_NEWNET)");
        fprintf(stderr, "bench_txpath: no CAP_SYS_ADMIN for a network namespace of its own\n");
        return 77;
    }
    struct bench b = {.payload = payload};
    b.rx = socket(AF_INET, SOCK_DGRAM, 0);
    b.to = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(RECEIVER_ADDR)};
    int big = 8 << 20;
    /* Unchecked: the kernel caps it at rmem_max, which still holds a batch
     * (32 x 1400 bytes); a datagram it dropped would end the bench. */
    setsockopt(b.rx, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    socklen_t len = sizeof b.to;
    if (bind(b.rx, (struct sockaddr *)&b.to, sizeof b.to) < 0
        || getsockname(b.rx, (struct sockaddr *)&b.to, &len) < 0)
        die("the receiving socket");
    if ((b.udp = socket(AF_INET, SOCK_DGRAM, 0)) < 0)
        die("socket (udp)");

    int npaths = 1;
    for (int p = PKT_SENDMMSG; p < NPATHS; p++) {
        int bypass = p == PKT_SENDMMSG_BYPASS || p == PKT_TXRING_BYPASS;
        if ((b.pkt[p] = packet_socket(bypass)) < 0) {
            if (errno != EPERM)
                die("socket (AF_PACKET)");
            fprintf(stderr, "bench_txpath: no CAP_NET_RAW: the packet paths are skipped\n");
            break;
        }
        if (p == PKT_TXRING || p == PKT_TXRING_BYPASS)
            b.ring[p] = tx_ring(b.pkt[p]);
        bind_lo(b.pkt[p]);
        npaths = p + 1;
    }

    double *ns = calloc((size_t)npaths * (size_t)rounds, sizeof *ns);
    for (int p = 0; p < npaths; p++)                  /* warm-up */
        round_ns(&b, p, n / 10 < BATCH ? BATCH : n / 10);
    for (int r = 0; r < rounds; r++)
        for (int p = 0; p < npaths; p++)
            ns[p * rounds + r] = round_ns(&b, p, n);

    printf("%u-byte datagrams on lo, batches of %u, %llu per round, median of %d rounds "
           "(min-max), ns per datagram sent and received:\n", payload, BATCH,
           (unsigned long long)n, rounds);
    double base = 0;
    for (int p = 0; p < npaths; p++) {
        double *v = ns + p * rounds;
        qsort(v, (size_t)rounds, sizeof *v, cmp_double);
        double med = v[rounds / 2];
        if (p == 0)
            base = med;
        printf("  %-24s %7.0f  (%.0f-%.0f)  %.3fx udp-sendmmsg\n", path_name[p], med, v[0],
               v[rounds - 1], med / base);
    }
    free(ns);
    return 0;
}
