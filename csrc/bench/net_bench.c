#define _GNU_SOURCE
#include "net_bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "classifier.h"
#include "cpu.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

int osvrt_pin_self(int cpu);

/* The load generators run on the caller's thread (a Python thread, with the
 * GIL released by cffi): pin it for the run, then give it back its CPU set. */
struct pin_save {
    cpu_set_t set;
    int saved;
};

static int pin_for_run(int cpu, struct pin_save *ps)
{
    ps->saved = 0;
    if (cpu < 0)
        return 0;
    if (pthread_getaffinity_np(pthread_self(), sizeof ps->set, &ps->set) == 0)
        ps->saved = 1;
    return osvrt_pin_self(cpu);
}

static void unpin(struct pin_save *ps)
{
    if (ps->saved)
        pthread_setaffinity_np(pthread_self(), sizeof ps->set, &ps->set);
}

static int connect_udp(const char *ip, uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return -EINVAL;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Pin this thread to cpu for the run (ps saves what to restore) and connect
 * a UDP socket to ip:port: the socket, or -errno with nothing left pinned. */
static int open_pinned(const char *ip, uint16_t port, int cpu, struct pin_save *ps)
{
    if (pin_for_run(cpu, ps) != 0) {
        unpin(ps);
        return -EINVAL;
    }
    int fd = connect_udp(ip, port);
    if (fd < 0)
        unpin(ps);
    return fd;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The requests that refill the window, sent with one sendmmsg: each carries
 * its sequence number and the batch's send time. */
static int send_batch(int fd, uint8_t *bufs, struct mmsghdr *msgs, struct iovec *iov,
                      uint32_t payload, uint64_t first, unsigned k)
{
    int64_t t = osvrt_now_ns();
    for (unsigned i = 0; i < k; i++) {
        uint8_t *b = bufs + (size_t)i * payload;
        uint64_t seq = first + i;
        memcpy(b, &seq, 8);
        memcpy(b + 8, &t, 8);
        iov[i] = (struct iovec){.iov_base = b, .iov_len = payload};
        msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
    }
    for (unsigned i = 0; i < k;) {
        int r = sendmmsg(fd, msgs + i, k - i, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        i += (unsigned)r;
    }
    return 0;
}

int osvrt_net_bench_rr(const char *ip, uint16_t port, uint64_t n, uint32_t payload,
                       uint32_t window, int cpu, int timeout_ms, struct osvrt_rr_result *out)
{
    memset(out, 0, sizeof *out);
    /* window <= 1024: one sendmmsg refills it (the kernel's UIO_MAXIOV) */
    if (payload < 16 || payload > 65000 || window == 0 || window > 1024 || n == 0 ||
        n > SIZE_MAX / sizeof(int64_t) || timeout_ms < 1)   /* rtt[n] must not wrap */
        return -EINVAL;
    struct pin_save ps;
    int fd = open_pinned(ip, port, cpu, &ps);
    if (fd < 0)
        return fd;
    uint8_t *buf = calloc(1, payload);
    uint8_t *bufs = calloc(window, payload);
    struct mmsghdr *msgs = calloc(window, sizeof *msgs);
    struct iovec *iov = calloc(window, sizeof *iov);
    int64_t *rtt = malloc(n * sizeof *rtt);
    uint64_t sent = 0, done = 0, lost = 0, inflight = 0;
    int64_t start = osvrt_now_ns();
    int err = 0;
    if (!buf || !bufs || !msgs || !iov || !rtt) {
        err = -ENOMEM;
        goto out;
    }
    while (done + lost < n) {
        /* Refill the window in one call, and read every reply that is there
         * before polling again: a client that paid a send per request and a
         * poll per reply used the whole of its CPU against a server that
         * answers in batches, and the row measured the client. */
        uint64_t room = window - inflight, left = n - sent;
        unsigned k = (unsigned)(room < left ? room : left);
        if (k) {
            err = send_batch(fd, bufs, msgs, iov, payload, sent, k);
            if (err)
                goto out;
            sent += k;
            inflight += k;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, timeout_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;             /* never a silent spin on a failing poll */
            goto out;
        }
        if (r == 0) {                 /* lost (or the server is gone): give them up */
            lost += inflight;
            inflight = 0;
            if (lost > n / 10 + 10) {
                err = -ETIMEDOUT;
                goto out;
            }
            continue;
        }
        while (inflight) {
            ssize_t got = recv(fd, buf, payload, MSG_DONTWAIT);
            if (got < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    break;
                err = -errno;         /* e.g. ECONNREFUSED: nobody at that port */
                goto out;
            }
            if (got < 16)
                continue;             /* not one of our echoes */
            int64_t t0;
            memcpy(&t0, buf + 8, 8);
            rtt[done++] = osvrt_now_ns() - t0;
            inflight--;
        }
    }
out:
    out->elapsed_ns = (double)(osvrt_now_ns() - start);
    out->done = done;
    out->lost = lost;
    if (done) {
        double sum = 0;
        for (uint64_t i = 0; i < done; i++)
            sum += (double)rtt[i];
        qsort(rtt, done, sizeof *rtt, cmp_i64);
        out->mean_ns = sum / (double)done;
        out->p50_ns = (double)rtt[done / 2];
        out->p99_ns = (double)rtt[(done * 99) / 100 < done ? (done * 99) / 100 : done - 1];
    }
    free(buf);
    free(bufs);
    free(msgs);
    free(iov);
    free(rtt);
    close(fd);
    unpin(&ps);
    return err;
}

double osvrt_net_bench_blast(const char *ip, uint16_t port, uint64_t n, uint32_t payload,
                             uint32_t gso, int cpu)
{
    if (payload == 0 || payload > 8000 || (gso > 1 && (uint64_t)gso * payload > 60000))
        return -EINVAL;
    struct pin_save ps;
    int fd = open_pinned(ip, port, cpu, &ps);
    if (fd < 0)
        return fd;
    uint32_t per = gso > 1 ? gso : 1;
    uint8_t *buf = calloc(per, payload);
    double result = -ENOMEM;
    if (!buf)
        goto out;
    if (gso > 1) {
        int seg = (int)payload;
        if (setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &seg, sizeof seg) != 0) {
            result = -errno;
            goto out;
        }
    }
    enum { BATCH = 64 };
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    int64_t start = osvrt_now_ns();
    uint64_t left = n;
    while (left) {
        uint32_t k = 0;
        for (; k < BATCH && left; k++) {
            uint32_t d = left < per ? (uint32_t)left : per;   /* datagrams in this message */
            iov[k].iov_base = buf;
            iov[k].iov_len = (size_t)d * payload;
            memset(&msgs[k], 0, sizeof msgs[k]);
            msgs[k].msg_hdr.msg_iov = &iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            left -= d;
        }
        for (uint32_t i = 0; i < k;) {
            int r = sendmmsg(fd, msgs + i, k - i, 0);
            if (r < 0) {
                if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN)
                    continue;
                result = -errno;
                goto out;
            }
            i += (uint32_t)r;
        }
    }
    result = (double)(osvrt_now_ns() - start);
out:
    free(buf);
    close(fd);
    unpin(&ps);
    return result;
}

/* A minimal IPv4/UDP frame (UDP checksum 0: none). */
static uint32_t make_frame(uint8_t *f, uint16_t dport, uint32_t payload)
{
    memset(f, 0, 14 + 28 + payload);
    f[12] = 0x08;
    uint8_t *ip = f + 14;
    ip[0] = 0x45;
    uint16_t tot = (uint16_t)(28 + payload);
    ip[2] = (uint8_t)(tot >> 8);
    ip[3] = (uint8_t)tot;
    ip[8] = 64;
    ip[9] = 17;
    ip[12] = 127; ip[15] = 1;
    ip[16] = 127; ip[19] = 1;
    uint16_t c = (uint16_t)~osvrt_csum_fold(osvrt_csum_add(0, ip, 20));
    ip[10] = (uint8_t)(c >> 8);
    ip[11] = (uint8_t)c;
    uint8_t *u = ip + 20;
    u[0] = 0x9c; u[1] = 0x40;
    u[2] = (uint8_t)(dport >> 8);
    u[3] = (uint8_t)dport;
    uint16_t ul = (uint16_t)(8 + payload);
    u[4] = (uint8_t)(ul >> 8);
    u[5] = (uint8_t)ul;
    return 14 + 28 + payload;
}

double osvrt_net_bench_classify(uint64_t n, uint32_t payload, uint32_t flows)
{
    if (flows == 0 || flows > 4096 || payload > 9000)
        return -EINVAL;
    struct osvrt_net_config cfg = {.ifname = NULL, .spin_ns = -1, .cpu = -1};
    int err = 0;
    struct osvrt_net *net = osvrt_net_new(NULL, &cfg, &err);
    if (!net)
        return -err;
    struct osvrt_flow **fl = calloc(flows, sizeof *fl);
    uint8_t *frames = malloc((size_t)flows * (14 + 28 + payload));
    uint32_t flen = 14 + 28 + payload;
    double result = -ENOMEM;
    if (!fl || !frames)
        goto out;
    for (uint32_t i = 0; i < flows; i++) {
        struct osvrt_flow_key k = {.daddr = htonl(0x7f000001), .dport = (uint16_t)(20000 + i), .proto = 17};
        if (!(fl[i] = osvrt_net_flow_add(net, &k, 1, 256, 1u << 20, NULL, &err))) {
            result = -err;
            goto out;
        }
        make_frame(frames + (size_t)i * flen, (uint16_t)(20000 + i), payload);
    }
    int64_t start = osvrt_now_ns();
    for (uint64_t done = 0; done < n;) {
        osvrt_net_rx_begin(net);
        for (int b = 0; b < 64 && done < n; b++, done++) {
            uint32_t i = (uint32_t)(done % flows);
            osvrt_net_rx_frame(net, frames + (size_t)i * flen, flen, flen, 0, NULL);
        }
        osvrt_net_rx_end(net);
        for (uint32_t i = 0; i < flows; i++) {      /* the consumers */
            struct osvrt_chan *c = osvrt_flow_lane(fl[i], 0);
            uint64_t t, q = osvrt_chan_ready(c, &t);
            if (q)
                osvrt_chan_release(c, t + q);
        }
    }
    result = (double)(osvrt_now_ns() - start) / (double)n;
    struct osvrt_net_stats st;
    osvrt_net_get_stats(net, &st);
    if (st.received != n)
        result = -EIO;                              /* something was dropped: not a fair figure */
out:
    if (fl)
        for (uint32_t i = 0; i < flows; i++)
            if (fl[i])
                osvrt_flow_put(fl[i]);
    free(fl);
    free(frames);
    osvrt_net_free(net);
    return result;
}

int64_t osvrt_net_bench_echo(int fd, int cpu, int busy, int dns, const char *stop,
                             uint32_t stop_len)
{
    enum { BATCH = 64, SIZE = 65536 };        /* any IPv4 UDP payload whole */
    struct pin_save ps;
    int e = pin_for_run(cpu, &ps);            /* an error number, not errno */
    if (e != 0)
        return -e;
    uint8_t (*buf)[SIZE] = malloc(BATCH * sizeof *buf);
    if (!buf) {
        unpin(&ps);
        return -ENOMEM;
    }
    struct sockaddr_in from[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr m[BATCH];
    int64_t echoed = 0, err = 0;
    for (int done = 0; !done;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){.iov_base = buf[i], .iov_len = SIZE};
            m[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof from[i],
                                           .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int k = recvmmsg(fd, m, BATCH, busy ? MSG_DONTWAIT : MSG_WAITFORONE, NULL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        int n = 0;
        for (int i = 0; i < k; i++) {
            uint32_t len = m[i].msg_len;
            if (len == stop_len && memcmp(buf[i], stop, stop_len) == 0) {
                done = 1;
                break;
            }
            if (dns && len >= 12) {
                buf[i][2] |= 0x80;           /* QR: a response (dns_reply) */
                buf[i][3] &= 0x70;           /* Z, AD, CD kept; RA and RCODE cleared */
            }
            iov[i].iov_len = len;
            n++;
        }
        /* the stop datagram ends the batch: what came before it is answered */
        int sent = 0;
        while (sent < n) {
            int r = sendmmsg(fd, m + sent, (unsigned)(n - sent), 0);
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN)
                    continue;
                break;                       /* a reply that cannot go is a lost one */
            }
            sent += r;
        }
        echoed += sent;
    }
    free(buf);
    unpin(&ps);
    return err ? err : echoed;
}
