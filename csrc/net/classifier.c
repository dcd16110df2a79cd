#define _GNU_SOURCE
#include "classifier.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cpu.h"      /* osvrt_now_ns */
#include "probes.h"
#include "relax.h"
#include "runtime.h"
#include "rx_workers.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

int osvrt_pin_self(int cpu);   /* pin.c */

#define VNET_HDR_LEN 10        /* sizeof(struct virtio_net_hdr) */
#define DEFAULT_RING_FRAMES 8192
#define DEFAULT_BUCKETS 1024
#define DEFAULT_BURST 64
#define DEFAULT_SPIN_NS 50000
/* An MTU-sized (1500) frame with the ring's header, the virtio-net header
 * and VLAN tags in front fits; larger ones come whole through the socket
 * (TP_STATUS_COPY, see classifier.h).  The copy buffer: room for the
 * largest IPv4 packet (64 KiB, also a GSO super-packet's limit) with
 * Ethernet, two VLAN tags and the virtio-net header. */
#define DEFAULT_FRAME_SIZE 2048
/* The small-frame ring's slots (packet_ring.h): a DNS query, a game's or a
 * trading feed's message, a TCP ACK fit (up to 436 bytes of Ethernet frame). */
#define DEFAULT_SMALL_FRAME_SIZE 512
#define BIG_SIZE (65536 + 256)
/* Where the kernel puts an Ethernet frame in a V2 slot with a virtio-net
 * header (af_packet.c, tpacket_rcv: netoff = TPACKET_ALIGN(hdrlen +
 * max(maclen, 16)) + vnet_hdr_sz, macoff = netoff - maclen): 76 bytes in for
 * a 14-byte header; a VLAN tag in the frame starts it 4 bytes sooner.  So a
 * frame of up to frame_size - MACOFF bytes is never cut. */
#define MACOFF (TPACKET_ALIGN(TPACKET2_HDRLEN + 16) + VNET_HDR_LEN - ETH_HLEN)
#define COPY_RCVBUF (8 << 20)


static int filter_port(struct osvrt_net *net, uint16_t port, int delta);

/* ---- flows ---- */

void osvrt_flow_put(struct osvrt_flow *f)
{
    /* acq_rel: the last one to let go sees every other holder's uses of the
     * flow (release half) before it frees it (acquire half). */
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < f->nlanes; i++)
        osvrt_chan_free(f->lanes[i]);
    free(f);
}

static void flow_release_table_ref(struct osvrt_ft_node *n)
{
    osvrt_flow_put((struct osvrt_flow *)n);
}

struct osvrt_chan *osvrt_flow_lane(struct osvrt_flow *f, uint32_t lane)
{
    return lane < f->nlanes ? f->lanes[lane] : NULL;
}

struct osvrt_flow *osvrt_net_flow_add(struct osvrt_net *net, const struct osvrt_flow_key *key,
                                      uint32_t nlanes, uint32_t capacity, uint32_t arena,
                                      osvrt_rule_fn rule, int *err)
{
    int e = 0;
    if (nlanes == 0 || nlanes > OSVRT_NET_MAX_LANES || capacity == 0
        || capacity > OSVRT_CHAN_MAX_CAPACITY || arena == 0 || arena > OSVRT_CHAN_MAX_ARENA
        || (key->proto != IPPROTO_UDP && key->proto != IPPROTO_TCP)) {
        *err = EINVAL;
        return NULL;
    }
    struct osvrt_flow *f = calloc(1, sizeof *f + nlanes * sizeof f->lanes[0]);
    if (!f) {
        *err = ENOMEM;
        return NULL;
    }
    f->nlanes = nlanes;
    for (uint32_t i = 0; i < nlanes; i++) {
        if (!(f->lanes[i] = osvrt_chan_new(capacity, arena))) {
            e = ENOMEM;
            goto fail;
        }
    }
    f->rule = rule;
    atomic_init(&f->refs, 2);
    atomic_init(&f->dropped_rule, 0);
    atomic_init(&f->dropped_truncated, 0);
    memset(&f->node, 0, sizeof f->node);
    atomic_init(&f->node.next, NULL);
    f->node.key = *key;
    f->node.release = flow_release_table_ref;
    if ((e = osvrt_ft_insert(&net->table, &f->node)) == 0) {
        if ((e = filter_port(net, key->dport, +1)) == 0)
            return f;
        /* The kernel refused the new filter: the flow would get nothing. */
        osvrt_ft_remove(&net->table, &f->node);    /* retired: the table's reference */
        *err = e;
        osvrt_flow_put(f);                         /* the caller's */
        return NULL;
    }
fail:
    for (uint32_t i = 0; i < nlanes; i++)
        osvrt_chan_free(f->lanes[i]);
    free(f);
    *err = e;
    return NULL;
}

int osvrt_net_flow_remove(struct osvrt_net *net, struct osvrt_flow *f)
{
    int e = osvrt_ft_remove(&net->table, &f->node);
    if (e == 0)
        filter_port(net, f->node.key.dport, -1);   /* a failure only lets more in */
    return e;
}

void osvrt_flow_get_stats(struct osvrt_flow *f, struct osvrt_flow_stats *o)
{
    memset(o, 0, sizeof *o);
    for (uint32_t i = 0; i < f->nlanes; i++) {
        struct osvrt_chan_stats cs;
        osvrt_chan_get_stats(f->lanes[i], &cs);
        o->received += cs.received;
        o->dropped_channel_full += cs.dropped_full;
        o->dropped_too_big += cs.dropped_too_big;
        o->wakes += cs.wakes;
        /* relaxed: a snapshot; head may run ahead of tail between the loads. */
        uint64_t h = atomic_load_explicit(&f->lanes[i]->head, memory_order_relaxed);
        uint64_t t = atomic_load_explicit(&f->lanes[i]->tail, memory_order_relaxed);
        o->queued += h > t ? h - t : 0;
    }
    /* relaxed: statistics. */
    o->dropped_rule = atomic_load_explicit(&f->dropped_rule, memory_order_relaxed);
    o->dropped_truncated = atomic_load_explicit(&f->dropped_truncated, memory_order_relaxed);
}

/* ---- the burst: parse, classify, post; publish and wake at the end ---- */

/* Publish every touched channel, then wake each one's waiter once. */
static uint32_t flush(struct osvrt_net *net)
{
    uint32_t n = net->ntouched;
    if (n == 0)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        osvrt_chan_publish(net->touched[i]);
    /* seq_cst fence: the waker half of runtime.h's argument.  The head stores
     * above are ordered before the waiter loads and wake CASes below, so
     * either the green thread's re-check (after its seq_cst wait_prepare)
     * sees the packets, or we see its WAITING state and wake it. */
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t woke = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct osvrt_chan *c = net->touched[i];
        uint64_t w = osvrt_chan_waiter(c);
        uint32_t cpu;
        if ((w & OSVRT_CHAN_WAITER) && net->rt
            && osvrt_wake_cpu(net->rt, w & ~OSVRT_CHAN_WAITER, &cpu)) {
            osvrt_stat_add(&c->wakes, 1);
            woke++;
            net->woke_cpu = net->woke_cpu == -1 || net->woke_cpu == (int32_t)cpu ? (int32_t)cpu : -2;
        }
    }
    osvrt_stat_add(&net->wakes, woke);
    net->ntouched = 0;
    net->burst_seq++;
    return woke;
}

static void touch(struct osvrt_net *net, struct osvrt_chan *c)
{
    if (c->burst_mark == net->burst_seq)
        return;
    if (net->ntouched == OSVRT_NET_TOUCH_MAX)
        flush(net);                       /* a burst over very many flows: flush early */
    c->burst_mark = net->burst_seq;
    net->touched[net->ntouched++] = c;
}

/* One datagram (TCP segment) into its flow: the rule picks the lane. */
static void deliver(struct osvrt_net *net, struct osvrt_flow *f, const uint8_t *rule_data,
                    uint32_t rule_len, const uint8_t *data, uint32_t len,
                    const struct osvrt_chan_slot *meta)
{
    uint32_t lane = 0;
    if (f->rule) {
        int32_t r = f->rule(rule_data, rule_len, meta->saddr, meta->sport);
        if (r < 0 || (uint32_t)r >= f->nlanes) {
            osvrt_stat_add(&f->dropped_rule, 1);
            osvrt_stat_add(&net->dropped_rule, 1);
            return;
        }
        lane = (uint32_t)r;
    }
    struct osvrt_chan *c = f->lanes[lane];
    int res = osvrt_chan_push(c, data, len, meta);
    if (res == OSVRT_CHAN_OK) {
        osvrt_stat_add(&net->received, 1);
        OSVRT_PROBE2(channel_push, (uintptr_t)c, len);
        touch(net, c);
    } else {
        osvrt_stat_add(res == OSVRT_CHAN_FULL ? &net->dropped_channel_full : &net->dropped_too_big, 1);
        OSVRT_PROBE2(channel_drop, (uintptr_t)c, res);
    }
}

void osvrt_net_rx_begin(struct osvrt_net *net)
{
    net->woke_cpu = -1;
    osvrt_ft_read_lock(&net->table, net->reader);
}

uint32_t osvrt_net_rx_end(struct osvrt_net *net)
{
    uint32_t woke = flush(net);
    osvrt_ft_read_unlock(&net->table, net->reader);
    osvrt_stat_add(&net->bursts, 1);
    return woke;
}

int osvrt_net_rx_frame(struct osvrt_net *net, const uint8_t *frame, uint32_t len,
                       uint32_t wire_len, uint32_t status, const struct osvrt_vnet_hdr *vnet)
{
    osvrt_stat_add(&net->frames, 1);
    struct osvrt_pkt p;
    uint32_t flags = (status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID)) ? OSVRT_PKT_CSUM_TRUSTED : 0;
    int v = osvrt_pkt_parse(frame, len, wire_len, flags, vnet, &p);
    if (v == OSVRT_PKT_IGNORED) {
        osvrt_stat_add(&net->ignored, 1);
        return v;
    }
    if (v != OSVRT_PKT_OK && v != OSVRT_PKT_TOO_BIG) {
        osvrt_stat_add(&net->dropped_malformed, 1);
        osvrt_stat_add(&net->malformed[v], 1);
        return v;
    }
    uint32_t nseg = osvrt_pkt_segments(&p);
    osvrt_stat_add(&net->packets, nseg);
    OSVRT_PROBE3(net_rx, p.proto, p.dport, p.data_len);
    struct osvrt_ft_node *n = osvrt_ft_classify(&net->table, p.proto, p.daddr, p.dport,
                                                p.saddr, p.sport);
    if (!n) {
        osvrt_stat_add(&net->dropped_no_flow, nseg);
        return v;
    }
    struct osvrt_flow *f = (struct osvrt_flow *)n;
    if (v == OSVRT_PKT_TOO_BIG) {
        osvrt_stat_add(&net->dropped_truncated, nseg);
        osvrt_stat_add(&f->dropped_truncated, nseg);
        return v;
    }
    struct osvrt_chan_slot meta = {
        .saddr = p.saddr, .daddr = p.daddr, .sport = p.sport, .dport = p.dport,
        .proto = p.proto,
    };
    if (p.proto == IPPROTO_TCP) {
        /* The whole segment goes in (the stack needs its header); the rule
         * sees the payload.  A TCP super-packet stays one segment. */
        meta.info = p.data_off - p.l4_off;
        deliver(net, f, frame + p.data_off, p.data_len, frame + p.l4_off, p.l4_len, &meta);
        return v;
    }
    if (nseg > 1)
        osvrt_stat_add(&net->gso_packets, 1);
    uint32_t seg = nseg > 1 ? p.gso_size : p.data_len;
    for (uint32_t i = 0, o = 0; i < nseg; i++, o += seg) {
        uint32_t l = p.data_len - o < seg ? p.data_len - o : seg;
        const uint8_t *d = frame + p.data_off + o;
        deliver(net, f, d, l, d, l, &meta);
    }
    return v;
}

/* ---- the socket and its ring ---- */

int osvrt_attach_drop_all(int fd)
{
    struct sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog prog = {.len = 1, .filter = &drop};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0 ? 0 : errno;
}

/* Attach to ring i's socket its length gate (with two rings: ring 0 keeps
 * the frames of up to small_max bytes, ring 1 the longer ones; the kernel
 * runs the filter on the whole frame, Ethernet header included) followed by
 * prog[0..n).  0 or an errno value. */
static int attach_filter(struct osvrt_net *net, uint32_t i, const struct sock_filter *prog, uint32_t n)
{
    struct sock_filter *f = malloc((3 + (size_t)n) * sizeof *f);
    if (!f)
        return ENOMEM;
    uint32_t k = 0;
    if (net->nrings == 2) {
        f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0);
        f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, net->small_max,
                                              i == 0 ? 0 : 1, i == 0 ? 1 : 0);
        f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0);              /* the other ring's */
    }
    memcpy(f + k, prog, n * sizeof *f);
    struct sock_fprog fp = {.len = (unsigned short)(k + n), .filter = f};
    int e = setsockopt(net->rings[i].fd, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) == 0 ? 0 : errno;
    free(f);
    return e;
}

/* Build and attach every ring's filter: the length gate, then the prefilter
 * when there is one (see classifier.h).  filter_lock held, or the rings not
 * bound yet.  0 or an errno value.  Frames shorter than 24 bytes (no IPv4
 * protocol byte) fail the prefilter's loads and are kept out too. */
static int update_filter(struct osvrt_net *net)
{
    enum { ACCEPT = 0x40000 };   /* snap length: the whole frame */
    if (net->nrings == 0)
        return 0;
    uint32_t nports = 0;
    if (net->port_refs)
        for (uint32_t p = 0; p < 65536; p++)
            nports += net->port_refs[p] != 0;
    int many = nports > OSVRT_NET_FILTER_MAX_PORTS;
    if (!net->port_refs || many) {
        /* No prefilter (or too many ports for a linear program): the gate
         * alone, which one ring does without. */
        struct sock_filter all = BPF_STMT(BPF_RET | BPF_K, ACCEPT);
        for (uint32_t i = 0; i < net->nrings; i++) {
            int e = net->nrings == 1 && !many ? 0 : attach_filter(net, i, &all, 1);
            if (e)
                return e;
        }
        net->filter_ports = nports;
        return 0;
    }
    struct sock_filter *f = malloc((24 + 2 * (size_t)nports) * sizeof *f);
    if (!f)
        return ENOMEM;
    uint32_t n = 0;
    /* Every early exit is a "ret accept" right after its test, so no jump is
     * longer than one instruction, whatever the number of ports. */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12);        /* EtherType */
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ACCEPT);             /* not IPv4 */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23);        /* protocol */
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 2, 0);
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ACCEPT);             /* not UDP/TCP */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 20);        /* flags, offset */
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ACCEPT);             /* a fragment */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 14);       /* X = IHL * 4 */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_MISC | BPF_TXA, 0);
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 20, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ACCEPT);             /* IHL < 5 */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 14 + 4);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_MISC | BPF_TAX, 0);               /* X = end of ports */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0);
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_X, 0, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ACCEPT);             /* too short */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 14);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_IND, 14 + 2);    /* dst port */
    for (uint32_t p = 0; p < 65536; p++) {
        if (!net->port_refs[p])
            continue;
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, p, 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ACCEPT);
    }
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0);                  /* not ours */
    int e = 0;
    for (uint32_t i = 0; i < net->nrings && !e; i++)
        e = attach_filter(net, i, f, n);
    free(f);
    if (e == 0)
        net->filter_ports = nports;
    return e;
}

/* A flow on `port` came (+1) or went (-1): keep the prefilter in step. */
static int filter_port(struct osvrt_net *net, uint16_t port, int delta)
{
    if (!net->port_refs)
        return 0;
    pthread_mutex_lock(&net->filter_lock);
    uint32_t before = net->port_refs[port];
    net->port_refs[port] = (uint32_t)((int64_t)before + delta);
    int e = 0;
    if ((before == 0) != (net->port_refs[port] == 0) && (e = update_filter(net)) != 0) {
        /* Keep the old count, and put the old program back on a ring that
         * took the new one before another refused it (if that fails too, a
         * ring lets in one port more or one less than its count says: more
         * is only parsed and dropped; the flow of one less is going away). */
        net->port_refs[port] = before;
        update_filter(net);
    }
    pthread_mutex_unlock(&net->filter_lock);
    return e;
}

static void refresh_ring_drops(struct osvrt_net *net)
{
    for (uint32_t i = 0; i < net->nrings; i++) {
        struct tpacket_stats st;
        socklen_t len = sizeof st;
        /* The kernel resets its counters on every read, so concurrent readers
         * (this thread, a stats call) each add a disjoint part. */
        /* relaxed: a statistic (an RMW, as two threads may add). */
        if (getsockopt(net->rings[i].fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0 && st.tp_drops)
            atomic_fetch_add_explicit(&net->dropped_ring, st.tp_drops, memory_order_relaxed);
    }
}

static void count_link_error(struct osvrt_net *net, int e)
{
    /* relaxed RMW, not osvrt_stat_add's single-writer add: a worker's
     * EPOLLERR hook (rx_workers.c) counts here without the drain lock. */
    atomic_fetch_add_explicit(&net->link_errors, 1, memory_order_relaxed);
    /* relaxed: a statistic, the latest value wins. */
    atomic_store_explicit(&net->last_link_errno, (uint64_t)e, memory_order_relaxed);
}

void osvrt_net_take_error(struct osvrt_net *net)
{
    for (uint32_t i = 0; i < net->nrings; i++) {
        int e = 0;
        socklen_t len = sizeof e;
        if (getsockopt(net->rings[i].fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e)
            count_link_error(net, e);
    }
}

/* The queued copy of a TP_STATUS_COPY frame into net->big: its length (with
 * MSG_TRUNC, the whole frame's), or -1 when none came.  A pending socket
 * error (ENETDOWN after the link went down) is returned by the first recv()
 * instead of data, and cleared by it: read again, or the copy stays queued
 * and is taken for the next big frame's. */
static ssize_t take_copy(struct osvrt_net *net, const struct osvrt_pkt_ring *r)
{
    for (int tries = 0; tries < 4; tries++) {
        ssize_t n = recv(r->fd, net->big, net->big_size, MSG_DONTWAIT | MSG_TRUNC);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -1;
        if (errno != EINTR)
            count_link_error(net, errno);
    }
    return -1;
}

/* Hand one ring frame to rx_frame (the frame's header is the kernel's: it
 * is checked all the same). */
static void ring_frame(struct osvrt_net *net, const struct osvrt_pkt_ring *r, struct tpacket2_hdr *h,
                       uint32_t status)
{
    const uint8_t *base = (const uint8_t *)h;
    const struct sockaddr_ll *sll =
        (const struct sockaddr_ll *)(base + TPACKET_ALIGN(sizeof(struct tpacket2_hdr)));
    /* Cut by the frame, and queued whole on the socket: the copies are
     * queued in frame order, one per TP_STATUS_COPY frame, so the next one is
     * this frame's, and it must be taken off even when the frame is ignored
     * (else every later copy is paired with the wrong frame). */
    ssize_t n = status & TP_STATUS_COPY ? take_copy(net, r) : -1;
    /* The kernel took a VLAN tag off (TP_STATUS_VLAN_VALID): with a VLAN ID
     * it is another VLAN's frame, as an in-band tag is (packet.c). */
    int other_vlan = (status & TP_STATUS_VLAN_VALID) && (h->tp_vlan_tci & 0x0fff) != 0;
    if (other_vlan || sll->sll_pkttype == PACKET_OUTGOING
        || sll->sll_pkttype == PACKET_OTHERHOST) {
        osvrt_stat_add(&net->frames, 1);
        osvrt_stat_add(&net->ignored, 1);
        return;
    }
    if (status & TP_STATUS_COPY) {
        /* recv() prepended the virtio-net header. */
        if (n >= VNET_HDR_LEN + 14 && (size_t)n <= net->big_size) {
            osvrt_stat_add(&net->copied, 1);
            struct osvrt_vnet_hdr vnet;
            const uint8_t *v = net->big;
            vnet.flags = v[0];
            vnet.gso_type = v[1];
            vnet.hdr_len = (uint16_t)(v[2] | v[3] << 8);
            vnet.gso_size = (uint16_t)(v[4] | v[5] << 8);
            vnet.csum_start = (uint16_t)(v[6] | v[7] << 8);
            vnet.csum_offset = (uint16_t)(v[8] | v[9] << 8);
            uint32_t len = (uint32_t)n - VNET_HDR_LEN;
            osvrt_net_rx_frame(net, net->big + VNET_HDR_LEN, len, len, status, &vnet);
            return;
        }
        /* No copy after all (or larger than any IPv4 packet): judge the cut frame. */
    }
    uint32_t mac = h->tp_mac, snap = h->tp_snaplen;
    if (mac < TPACKET2_HDRLEN + VNET_HDR_LEN || mac > r->frame_size
        || snap > r->frame_size - mac) {
        osvrt_stat_add(&net->frames, 1);
        osvrt_stat_add(&net->dropped_malformed, 1);
        osvrt_stat_add(&net->malformed[OSVRT_PKT_TRUNC_ETH], 1);
        return;
    }
    struct osvrt_vnet_hdr vnet;
    const uint8_t *v = base + mac - VNET_HDR_LEN;
    vnet.flags = v[0];
    vnet.gso_type = v[1];
    vnet.hdr_len = (uint16_t)(v[2] | v[3] << 8);          /* little-endian (vio_le) */
    vnet.gso_size = (uint16_t)(v[4] | v[5] << 8);
    vnet.csum_start = (uint16_t)(v[6] | v[7] << 8);
    vnet.csum_offset = (uint16_t)(v[8] | v[9] << 8);
    osvrt_net_rx_frame(net, base + mac, snap, h->tp_len, status, &vnet);
}

/* Socket i with its ring of ring_frames frames of fs bytes (aligned up),
 * not bound yet.  0 or an errno value. */
static int open_ring(struct osvrt_net *net, uint32_t i, uint32_t fs)
{
    struct osvrt_pkt_ring *r = &net->rings[i];
    /* Protocol 0: nothing arrives before the bind (open_rings), after the
     * ring and the filter are set. */
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return errno;
    r->fd = fd;
    int v2 = TPACKET_V2, one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v2, sizeof v2) != 0
        || setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) != 0
        || setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0
        || setsockopt(fd, SOL_PACKET, PACKET_COPY_THRESH, &one, sizeof one) != 0)
        return errno;
    /* Room for the whole copies of packets too big for a frame (FORCE: past
     * rmem_max when privileged; otherwise what the host allows). */
    int rcv = COPY_RCVBUF;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    /* Geometry: frames never straddle blocks, and a block is 2^k pages (the
     * kernel allocates that much anyway), at least four frames when small. */
    uint32_t block = 4096;
    while (block < fs * 4u && block < (4u << 20))
        block <<= 1;
    while (block < fs)
        block <<= 1;
    uint32_t per_block = block / fs;
    uint32_t blocks = (net->cfg.ring_frames + per_block - 1) / per_block;
    struct tpacket_req req = {
        .tp_block_size = block, .tp_block_nr = blocks,
        .tp_frame_size = fs, .tp_frame_nr = blocks * per_block,
    };
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) != 0)
        return errno;
    size_t bytes = (size_t)block * blocks;
    void *ring = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ring == MAP_FAILED)
        return errno;
    r->base = ring;
    r->bytes = bytes;
    r->frame_size = fs;
    r->frame_nr = req.tp_frame_nr;
    r->block_size = block;
    r->frames_per_block = per_block;
    return 0;
}

/* The rings (one, or the small-frame ring and the other), their filters,
 * then the binds.  0 or an errno value. */
static int open_rings(struct osvrt_net *net, const char *ifname)
{
    const struct osvrt_net_config *cfg = &net->cfg;
    unsigned ifindex = if_nametoindex(ifname);
    if (ifindex == 0)
        return ENODEV;
    uint32_t fs = TPACKET_ALIGN(cfg->frame_size), small = TPACKET_ALIGN(cfg->small_frame_size);
    int split = small < fs;
    uint32_t sizes[OSVRT_NET_MAX_RINGS] = {split ? small : fs, fs};
    net->nrings = split ? 2 : 1;
    net->small_max = split ? small - MACOFF : 0;
    for (uint32_t i = 0; i < net->nrings; i++) {
        int e = open_ring(net, i, sizes[i]);
        if (e)
            return e;
    }
    if (!(net->big = malloc(BIG_SIZE)))
        return ENOMEM;
    net->big_size = BIG_SIZE;
    /* Before the binds: no frame goes to the wrong ring, and nothing foreign
     * is let in even for a moment. */
    if (cfg->prefilter && !(net->port_refs = calloc(65536, sizeof *net->port_refs)))
        return ENOMEM;
    int e = update_filter(net);
    if (e)
        return e;
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = (int)ifindex,
    };
    for (uint32_t i = 0; i < net->nrings; i++)
        if (bind(net->rings[i].fd, (struct sockaddr *)&sll, sizeof sll) != 0)
            return errno;
    net->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (net->stop_fd < 0)
        return errno;
    return 0;
}

/* ---- the thread ---- */

int osvrt_net_ring_pending(struct osvrt_net *net)
{
    /* The heads' positions are read relaxed (packet_ring.h, `pos`); their
     * statuses are acquired. */
    for (uint32_t i = 0; i < net->nrings; i++)
        if (osvrt_pkt_frame_status(osvrt_pkt_ring_head(&net->rings[i])) & TP_STATUS_USER)
            return 1;
    return 0;
}

uint32_t osvrt_net_ring_fds(struct osvrt_net *net, int fds[OSVRT_NET_MAX_RINGS])
{
    for (uint32_t i = 0; i < net->nrings; i++)
        fds[i] = net->rings[i].fd;
    return net->nrings;
}

uint32_t osvrt_net_ring_burst(struct osvrt_net *net)
{
    /* Only the producer moves the rings' positions, and the producer role is
     * handed over with acquire/release (the thread's start/join, or
     * rx_workers.c's drain lock). */
    if (net->nrings == 0)
        return 0;
    uint32_t st, n = 0;
    int i = osvrt_pkt_rings_next(net->rings, net->nrings, &st);
    if (i < 0)
        return 0;
    osvrt_net_rx_begin(net);
    for (; n < net->cfg.burst && i >= 0; n++) {
        struct osvrt_pkt_ring *r = &net->rings[i];
        struct tpacket2_hdr *h = osvrt_pkt_ring_head(r);
        ring_frame(net, r, h, st);
        osvrt_pkt_ring_pass(r, h);
        osvrt_stat_add(&r->taken, 1);
        i = osvrt_pkt_rings_next(net->rings, net->nrings, &st);
    }
    osvrt_net_rx_end(net);
    return n;
}

/* The hand-over (cfg.handover: drain="auto" gave the thread a CPU of its
 * own).  The thread's polling pays where its CPU is its own, or where
 * requests come one at a time: its window then catches the next burst, and
 * the client's CPU never idles.  Where another thread keeps that CPU busy (the
 * client itself, on a host with no CPU to spare) and requests come
 * pipelined, the thread yields its window away, sleeps after most bursts,
 * and each frame wakes it again, preempting that other thread.  The
 * workers' own drain did better there: on 2 vCPUs, client on the thread's
 * CPU, 16 requests in flight got 1.26-1.32x the kernel peer's transactions/s
 * against the thread's 0.68-0.71x, while one in flight stayed well ahead of
 * the kernel either way (0.30 of its round trip against the thread's 0.16).
 * So every HANDOVER_WINDOW bursts the thread looks back, and hands the ring
 * to the workers (and sleeps until they give it back: rx_workers.h, the
 * hand-back) if all three held:
 * - pipelined: two frames a burst or more.  One frame a burst is a
 *   ping-pong, or sparse traffic (a client's set-up: sockperf sends a few
 *   requests apart before it measures); both keep the thread;
 * - more than half of the bursts had to wake it (its polling missed them);
 * - its CPU is shared: it waited, runnable, for over 1/HANDOVER_SHARED of
 *   the time (its run delay, from its schedstat).  Measured 0.05-0.5 with a
 *   client on its CPU, 0.003 under a flood from another CPU, which keeps the
 *   thread: a CPU of its own is where it pays most.  A kernel that keeps no
 *   run delays (no CONFIG_SCHED_INFO) keeps the thread too.
 * The run delay costs two reads of a /proc file, so it is taken only over a
 * window that follows a pipelined one: a ping-pong, the traffic the thread
 * is kept for, pays no system call for the look-back (and a hand-over needs
 * two pipelined windows in a row). */
#define HANDOVER_WINDOW 64
#define HANDOVER_SHARED 20

/* The look-back's state: the classifier thread's alone. */
struct handover {
    int on;                  /* cfg.handover asked for it, and it can still happen */
    int now;                 /* OSVRT_NET_HANDOVER_NOW/_CYCLE: at the first window's end */
    int fd;                  /* this thread's schedstat, or -1 */
    int timed;               /* the last window was pipelined: time this one */
    uint32_t bursts, woken, frames;
    int64_t start, delay;    /* at this window's first burst (delay -1: not read) */
};

/* Give the ring to the workers (from the thread, which then touches the
 * ring no more until it takes it back).  0 if it could not (it keeps
 * draining). */
static int hand_over(struct osvrt_net *net)
{
    refresh_ring_drops(net);                  /* ours to fetch, until we take the ring back */
    /* The attach holds the workers' drain lock until it has published the
     * hook and the socket, and its release store of the lock hands the ring
     * position and the burst state we leave to the first worker that takes
     * it: the producer role moves as at a join, or between two workers. */
    if (osvrt_net_attach_workers(net) != 0)
        return 0;
    /* release (both): `workers` is written; see osvrt_net_handed_over and
     * osvrt_net_handovers.  The flag first: a reader that sees the new count
     * (acquire) sees the flag it goes with, or a later one. */
    atomic_store_explicit(&net->handed_over, 1, memory_order_release);
    atomic_fetch_add_explicit(&net->handovers, 1, memory_order_release);
    return 1;
}

int osvrt_net_handed_over(struct osvrt_net *net)
{
    /* acquire: pairs with the release stores of hand_over and wait_to_take_back. */
    return atomic_load_explicit(&net->handed_over, memory_order_acquire);
}

uint64_t osvrt_net_handovers(struct osvrt_net *net)
{
    /* acquire: pairs with hand_over's release increment. */
    return atomic_load_explicit(&net->handovers, memory_order_acquire);
}

/* Wake the thread from its poll() (stop and the hand-back share the
 * eventfd; their flags, stored before this, say which). */
static void wake_thread(struct osvrt_net *net)
{
    uint64_t one = 1;
    while (write(net->stop_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void osvrt_net_ask_back(struct osvrt_net *net)
{
    /* release: pairs with the thread's acquire exchange, so the request
     * orders in C11 terms too, not only through the eventfd (the flag carries
     * no data: the detach hands the producer state back, rx_workers.c). */
    if (atomic_exchange_explicit(&net->give_back, 1, memory_order_release))
        return;
    wake_thread(net);
}

/* Read away the eventfd's count (stop and the hand-back share it): the flags
 * say which it was, and a count left would make every poll() return. */
static void clear_wakeup(struct osvrt_net *net)
{
    uint64_t v;
    while (read(net->stop_fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
}

/* After a hand-over: sleep until the workers ask for the ring back, then
 * take it (1), or until stop (0).  The hand-over's opposite: a spell of
 * pipelined requests must not leave the ping-pong that follows it on the
 * workers for good, where its round trip is twice the thread's. */
static int wait_to_take_back(struct osvrt_net *net)
{
    /* No ask is lost: give_back is set before the eventfd write, the count
     * stays until read, and the flag is looked at before every poll(). */
    struct pollfd pfd = {.fd = net->stop_fd, .events = POLLIN};
    /* relaxed (stop): stored before the eventfd write that wakes us, read
     * after we read that count (as in net_main). */
    while (!atomic_load_explicit(&net->stop, memory_order_relaxed)) {
        /* acquire: pairs with osvrt_net_ask_back's release exchange. */
        if (atomic_exchange_explicit(&net->give_back, 0, memory_order_acquire)) {
            osvrt_net_detach_workers(net);    /* the producer state is ours again */
            /* release (both): pair with the acquire loads of
             * osvrt_net_handed_over and osvrt_net_workers_get_stats; the
             * flag first, as in hand_over. */
            atomic_store_explicit(&net->handed_over, 0, memory_order_release);
            atomic_fetch_add_explicit(&net->handbacks, 1, memory_order_release);
            return 1;
        }
        poll(&pfd, 1, -1);
        clear_wakeup(net);
    }
    return 0;
}

/* The run delay of the thread whose schedstat fd is (ns runnable but not
 * running: the file's second field), or -1. */
static int64_t run_delay_ns(int fd)
{
    char buf[96];
    ssize_t n = fd < 0 ? -1 : pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *end;
    strtoull(buf, &end, 10);                  /* on-CPU time */
    if (end == buf || *end != ' ')
        return -1;
    char *p = end;
    unsigned long long d = strtoull(p, &end, 10);
    return end == p ? -1 : (int64_t)d;
}

static void handover_stop(struct handover *h)
{
    h->on = 0;
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
}

static void handover_init(struct handover *h, const struct osvrt_net_config *cfg)
{
    memset(h, 0, sizeof *h);
    h->fd = -1;
    if (!cfg->handover)
        return;
    h->on = 1;
    h->now = cfg->handover == OSVRT_NET_HANDOVER_NOW || cfg->handover == OSVRT_NET_HANDOVER_CYCLE;
    h->fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (run_delay_ns(h->fd) < 0 && !h->now)
        handover_stop(h);                     /* no run delays to judge by: stay */
}

/* Count a burst of `frames`, found after a sleep in poll() (`woken`) or
 * not; 1 when the window it closes says: hand the ring over now. */
static int handover_due(struct handover *h, uint32_t frames, int woken)
{
    if (h->bursts == 0 && h->timed) {
        /* Timed from its first burst: idle time before it (a quiet spell,
         * the thread's start) would dilute its run delay. */
        h->start = osvrt_now_ns();
        h->delay = run_delay_ns(h->fd);
    }
    h->woken += (uint32_t)woken;
    h->frames += frames;
    if (++h->bursts < HANDOVER_WINDOW)
        return 0;
    int pipelined = h->frames >= 2 * h->bursts && 2 * h->woken > h->bursts;
    int shared = 0;
    if (pipelined && h->timed && h->delay >= 0) {
        int64_t now = osvrt_now_ns(), d = run_delay_ns(h->fd);
        shared = d >= 0 && (d - h->delay) * HANDOVER_SHARED > now - h->start;
    }
    h->timed = pipelined;
    h->bursts = h->woken = h->frames = 0;
    return h->now || shared;
}

static int polled_error(const struct pollfd *fds, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (fds[i].revents & POLLERR)
            return 1;
    return 0;
}

static void *net_main(void *arg)
{
    struct osvrt_net *net = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);   /* signals are the Python main thread's */
    if (net->cfg.cpu >= 0) {
        osvrt_pin_self(net->cfg.cpu);
    } else if (net->cfg.cpu_mask) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int i = 0; i < 64; i++)
            if (net->cfg.cpu_mask >> i & 1)
                CPU_SET(i, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    const int64_t spin = net->cfg.spin_ns;
    const int yield = net->cfg.spin_yield != 0;
    int64_t idle_since = spin ? osvrt_now_ns() : 0;   /* no spin window: no clock reads */
    /* The adaptive window: twice the typical gap between bursts (an EWMA:
     * a longer gap counts fully at once, shorter ones pull it down by 1/4),
     * capped at spin; a gap beyond spin means sparse traffic: no polling. */
    int64_t gap = spin, window = spin, last_burst = idle_since;
    int spun = 0;
    uint32_t naps = 0;
    int slept = 0;                            /* the next burst needed a wake-up */
    struct handover ho;
    handover_init(&ho, &net->cfg);
    /* The rings' sockets, then the stop eventfd. */
    struct pollfd fds[OSVRT_NET_MAX_RINGS + 1];
    uint32_t nfds = 0;
    for (; nfds < net->nrings; nfds++)
        fds[nfds] = (struct pollfd){.fd = net->rings[nfds].fd, .events = POLLIN};
    fds[nfds++] = (struct pollfd){.fd = net->stop_fd, .events = POLLIN};
    /* relaxed (stop): a hint; the eventfd write wakes poll(), and the join
     * in osvrt_net_stop is what synchronizes. */
    while (!atomic_load_explicit(&net->stop, memory_order_relaxed)) {
        if (!osvrt_net_ring_pending(net)) {
            if (window && osvrt_now_ns() - idle_since < window) {
                spun = 1;
                if (yield)
                    sched_yield();            /* a runnable thread of this CPU goes first */
                else
                    for (int i = 0; i < 64 && !osvrt_net_ring_pending(net); i++)
                        cpu_relax();
                continue;
            }
            spun = 0;
            /* The kernel's drop count is a syscall away: fetch it now and
             * then (stats calls and the exit fetch it too), not per sleep,
             * which with spin 0 is per burst, on the latency path. */
            if ((++naps & 255) == 0)
                refresh_ring_drops(net);
            osvrt_stat_add(&net->sleeps, 1);
            /* EINTR, or a frame, or stop: look again.  POLLERR stays set until
             * the socket's error is read: read it, or every poll returns at once.
             * The eventfd readable and no stop: a hand-back's wake-up that came
             * after we took the ring back; read it, for the same reason. */
            if (poll(fds, nfds, -1) > 0) {
                if (polled_error(fds, nfds - 1))
                    osvrt_net_take_error(net);
                if (fds[nfds - 1].revents & POLLIN)
                    clear_wakeup(net);
            }
            slept = 1;
            if (spin)
                idle_since = osvrt_now_ns();
            continue;
        }
        uint32_t frames = osvrt_net_ring_burst(net);
        if (ho.on && handover_due(&ho, frames, slept)) {
            if (hand_over(net)) {
                if (!wait_to_take_back(net))
                    break;                    /* stop */
                /* Ours again: start over as at the thread's start (the
                 * window's counts were cleared by handover_due). */
                ho.timed = 0;
                slept = spun = 0;
                gap = window = spin;
                last_burst = idle_since = spin ? osvrt_now_ns() : 0;
                continue;
            }
            handover_stop(&ho);               /* the workers could not take it: stay */
        }
        slept = 0;
        if (spin) {
            int64_t now = osvrt_now_ns(), g = now - last_burst;
            last_burst = idle_since = now;
            gap = g > gap ? g : gap + (g - gap) / 4;
            window = gap < spin ? (2 * gap < spin ? 2 * gap : spin) : 0;
            if (spun)
                osvrt_stat_add(&net->spin_hits, 1);
            spun = 0;
        }
    }
    handover_stop(&ho);
    if (!atomic_load_explicit(&net->handed_over, memory_order_relaxed))   /* our own store */
        refresh_ring_drops(net);          /* after a hand-over, the workers' to fetch */
    return NULL;
}

/* ---- life cycle ---- */

struct osvrt_net *osvrt_net_new(struct osvrt_rt *rt, const struct osvrt_net_config *cfg, int *err)
{
    struct osvrt_net *net = aligned_alloc(OSVRT_CACHELINE, (sizeof *net + OSVRT_CACHELINE - 1)
                                                            & ~(size_t)(OSVRT_CACHELINE - 1));
    if (!net) {
        *err = ENOMEM;
        return NULL;
    }
    memset(net, 0, sizeof *net);
    net->rt = rt;
    if (rt)
        osvrt_rt_retain(rt);                  /* dropped by osvrt_net_free, after its last use */
    net->cfg = *cfg;
    net->cfg.ifname = NULL;                   /* not kept: the caller owns the string */
    if (!net->cfg.ring_frames)
        net->cfg.ring_frames = DEFAULT_RING_FRAMES;
    if (!net->cfg.frame_size)
        net->cfg.frame_size = DEFAULT_FRAME_SIZE;
    if (!net->cfg.small_frame_size)
        net->cfg.small_frame_size = DEFAULT_SMALL_FRAME_SIZE;
    if (!net->cfg.buckets)
        net->cfg.buckets = DEFAULT_BUCKETS;
    if (!net->cfg.burst)
        net->cfg.burst = DEFAULT_BURST;
    if (net->cfg.spin_ns < 0)
        net->cfg.spin_ns = DEFAULT_SPIN_NS;
    for (uint32_t i = 0; i < OSVRT_NET_MAX_RINGS; i++) {
        net->rings[i].fd = -1;
        atomic_init(&net->rings[i].pos, 0);
    }
    net->stop_fd = -1;
    net->burst_seq = 1;
    pthread_mutex_init(&net->filter_lock, NULL);
    atomic_init(&net->stop, 0);
    atomic_init(&net->handed_over, 0);
    atomic_init(&net->give_back, 0);
    atomic_init(&net->handovers, 0);
    atomic_init(&net->handbacks, 0);
    int e = 0;
    if (net->cfg.frame_size < 256 || net->cfg.frame_size > (16u << 20)
        || net->cfg.small_frame_size < 256 || net->cfg.small_frame_size > (16u << 20)
        || net->cfg.ring_frames > (1u << 20)) {
        e = EINVAL;
        goto fail_early;
    }
    if ((e = osvrt_ft_init(&net->table, net->cfg.buckets)) != 0)
        goto fail_early;
    net->reader = osvrt_ft_reader_register(&net->table);
    if (cfg->ifname && (e = open_rings(net, cfg->ifname)) != 0) {
        osvrt_net_free(net);
        *err = e;
        return NULL;
    }
    return net;
fail_early:
    pthread_mutex_destroy(&net->filter_lock);
    osvrt_rt_free(net->rt);
    free(net);
    *err = e;
    return NULL;
}

int osvrt_net_start(struct osvrt_net *net)
{
    if (net->nrings == 0)
        return EINVAL;
    if (net->started)
        return 0;                             /* (before `workers`: a hand-over may write it) */
    if (net->workers)
        return EEXIST;                        /* the workers drain the ring */
    /* A start after a stop: no thread runs, no worker is attached. */
    atomic_store_explicit(&net->stop, 0, memory_order_relaxed);      /* published by the create */
    atomic_store_explicit(&net->handed_over, 0, memory_order_relaxed);
    atomic_store_explicit(&net->give_back, 0, memory_order_relaxed);
    int e = pthread_create(&net->thread, NULL, net_main, net);
    if (e == 0) {
        net->started = 1;
        pthread_setname_np(net->thread, "osvrt-net");   /* named before anyone looks */
    }
    return e;
}

void osvrt_net_stop(struct osvrt_net *net)
{
    /* The thread first: it may have handed the ring to the workers, and the
     * join makes what it wrote (`workers`) ours to undo. */
    if (net->started) {
        atomic_store_explicit(&net->stop, 1, memory_order_relaxed);   /* see net_main */
        wake_thread(net);
        pthread_join(net->thread, NULL);
        net->started = 0;
    }
    osvrt_net_stop_workers(net);
}

/* Unmap and close every ring (the thread joined, the workers detached;
 * after a failed open_rings, whichever it made). */
static void close_rings(struct osvrt_net *net)
{
    for (uint32_t i = 0; i < OSVRT_NET_MAX_RINGS; i++) {
        struct osvrt_pkt_ring *r = &net->rings[i];
        if (r->base)
            munmap(r->base, r->bytes);
        r->base = NULL;
        if (r->fd >= 0)
            close(r->fd);
        r->fd = -1;
    }
    net->nrings = 0;
}

void osvrt_net_release(struct osvrt_net *net)
{
    if (!net)
        return;
    osvrt_net_stop(net);
    /* The thread is joined: nothing else reads the ring or the socket, but a
     * stats call may (refresh_ring_drops): the caller serializes the two. */
    refresh_ring_drops(net);
    close_rings(net);
}

void osvrt_net_free(struct osvrt_net *net)
{
    if (!net)
        return;
    osvrt_net_stop(net);
    osvrt_ft_destroy(&net->table);
    close_rings(net);
    if (net->stop_fd >= 0)
        close(net->stop_fd);
    free(net->port_refs);
    free(net->big);
    pthread_mutex_destroy(&net->filter_lock);
    osvrt_rt_free(net->rt);                   /* the stop above was its last use */
    free(net);
}

uint32_t osvrt_net_get_ring_stats(struct osvrt_net *net, struct osvrt_net_ring_stats *out)
{
    for (uint32_t i = 0; i < net->nrings; i++) {
        const struct osvrt_pkt_ring *r = &net->rings[i];
        out[i].frame_size = r->frame_size;
        out[i].frames = r->frame_nr;
        out[i].max_frame = i == 0 && net->nrings == 2 ? net->small_max : r->frame_size - MACOFF;
        /* relaxed: a statistic. */
        out[i].taken = atomic_load_explicit(&r->taken, memory_order_relaxed);
    }
    return net->nrings;
}

void osvrt_net_get_stats(struct osvrt_net *net, struct osvrt_net_stats *o)
{
    refresh_ring_drops(net);
    /* relaxed (all): statistics, an eventually consistent snapshot. */
#define LOAD(f) o->f = atomic_load_explicit(&net->f, memory_order_relaxed)
    LOAD(frames); LOAD(packets); LOAD(received); LOAD(ignored); LOAD(dropped_malformed);
    LOAD(dropped_no_flow); LOAD(dropped_too_big); LOAD(dropped_channel_full); LOAD(dropped_rule);
    LOAD(dropped_ring); LOAD(wakes); LOAD(bursts); LOAD(sleeps); LOAD(gso_packets);
    LOAD(dropped_truncated); LOAD(copied); LOAD(spin_hits); LOAD(link_errors);
    LOAD(last_link_errno);
#undef LOAD
    for (int i = 0; i < OSVRT_NET_NREASONS; i++)
        o->malformed[i] = atomic_load_explicit(&net->malformed[i], memory_order_relaxed);
}
