/* tcp_link.c - the user-space stack's link loop (tcp_link.h): recvmmsg,
 * classify, demux, run or hand to the owner, output, sendmmsg.
 *
 * Why in C: per frame, the Python loop paid a recvmsg, a parse, a demux and
 * an input call through cffi (each releases and retakes the GIL) and a
 * sendmsg per reply.  Here one call moves a batch both ways, and Python
 * sees only what it must act on: frames that are not TCP, packets waiting
 * for ARP, connections to wake.
 *
 * Memory: every buffer is allocated once in osvrt_tcp_link_new; nothing on
 * the frame path allocates.  The receive area is large (BATCH slots of
 * OSVRT_TCP_LINK_FRAME) but only the bytes the kernel writes are touched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/if_packet.h>

#include "tcp_link.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define SLOT_MASK (OSVRT_TCP_MAX_CONNS - 1u)   /* ids carry the slot in their low bits (tcp.h) */
#define DEAD (-2)                               /* an inbox entry already run */
/* Receive slots are not a power of two apart, so that the headers of a
 * batch do not all fall in the same cache set. */
#define RX_STRIDE (OSVRT_TCP_LINK_FRAME + 192)
#define CTRL_SPACE CMSG_SPACE(sizeof(struct tpacket_auxdata))

struct peer {
    uint32_t ip;                /* host order; 0: free */
    int64_t expires;
    uint8_t head[ETH_HLEN];     /* dst mac, our mac, ETH_P_IP */
};

/* One segment in the inbox: a header, then len bytes, padded to 8. */
struct entry {
    int32_t id;                 /* the connection (demux's id), DEAD once run */
    uint32_t len;
    uint32_t flags;
    uint32_t size;              /* header + data, padded: the next entry's offset */
    uint32_t next_same;         /* the next live entry of the same slot, or NO_ENTRY */
    uint32_t pad;
};
#define NO_ENTRY UINT32_MAX

struct osvrt_tcp_link {
    struct osvrt_tcp_link_view view;     /* first: what Python reads */
    struct osvrt_tcp_stack *s;
    int fd;
    uint8_t mac[6];
    uint32_t stride;                     /* tx: bytes per packet slot */
    struct osvrt_tcp_link_stats st;
    struct peer peers[OSVRT_TCP_LINK_PEERS];
    uint32_t last_peer;                  /* index of the last hit: one peer is the usual case */
    uint32_t *queued;                    /* segments in the inbox per slot */
    uint32_t *first, *last;              /* per slot: its oldest and newest entry (a chain, so a
                                          * drain of one connection skips the others') */
    uint8_t *inbox;
    uint32_t in_head, in_tail;           /* live entries lie in [in_head, in_tail) */
    /* receive */
    struct mmsghdr rmsg[OSVRT_TCP_LINK_BATCH];
    struct iovec riov[OSVRT_TCP_LINK_BATCH];
    uint8_t rctl[OSVRT_TCP_LINK_BATCH][CTRL_SPACE];
    uint32_t pass_index[OSVRT_TCP_LINK_BATCH], pass_len[OSVRT_TCP_LINK_BATCH],
             pass_flags[OSVRT_TCP_LINK_BATCH];
    int32_t handed[OSVRT_TCP_LINK_BATCH];
    /* send */
    struct mmsghdr smsg[OSVRT_TCP_LINK_BATCH];
    struct iovec siov[OSVRT_TCP_LINK_BATCH][2];
    uint32_t tx_len[OSVRT_TCP_LINK_BATCH];
    uint32_t held_off[OSVRT_TCP_LINK_BATCH], held_len[OSVRT_TCP_LINK_BATCH];
    struct osvrt_tcp_event events[OSVRT_TCP_LINK_EVENTS];
};

struct osvrt_tcp_link *osvrt_tcp_link_new(struct osvrt_tcp_stack *s, int fd, const uint8_t *mac,
                                          uint32_t max_conns, uint32_t stride, int *err)
{
    if (!s || !mac || max_conns == 0 || max_conns > OSVRT_TCP_MAX_CONNS
        || stride < OSVRT_TCP_MIN_OUT || stride > 65535 + 14) {
        *err = -EINVAL;
        return NULL;
    }
    struct osvrt_tcp_link *l = calloc(1, sizeof *l);
    if (!l) {
        *err = -ENOMEM;
        return NULL;
    }
    l->s = s;
    l->fd = fd;
    memcpy(l->mac, mac, 6);
    l->stride = stride;
    l->queued = calloc(max_conns, sizeof *l->queued);
    l->first = malloc(max_conns * sizeof *l->first);
    l->last = malloc(max_conns * sizeof *l->last);
    l->view.waits = calloc(max_conns, sizeof *l->view.waits);
    l->view.nwaits = max_conns;
    l->inbox = malloc(OSVRT_TCP_LINK_INBOX);
    l->view.rx = malloc((size_t)RX_STRIDE * OSVRT_TCP_LINK_BATCH);
    l->view.tx = malloc((size_t)stride * OSVRT_TCP_LINK_BATCH);
    if (!l->queued || !l->first || !l->last || !l->view.waits || !l->inbox || !l->view.rx || !l->view.tx) {
        osvrt_tcp_link_free(l);
        *err = -ENOMEM;
        return NULL;
    }
    l->view.rx_stride = RX_STRIDE;
    l->view.pass_index = l->pass_index;
    l->view.pass_len = l->pass_len;
    l->view.pass_flags = l->pass_flags;
    l->view.held_off = l->held_off;
    l->view.held_len = l->held_len;
    l->view.handed = l->handed;
    l->view.events = l->events;
    l->view.next_deadline = INT64_MAX;
    l->view.armed = INT64_MAX;
    for (uint32_t i = 0; i < OSVRT_TCP_LINK_BATCH; i++) {
        l->riov[i].iov_base = l->view.rx + (size_t)i * RX_STRIDE;
        l->riov[i].iov_len = OSVRT_TCP_LINK_FRAME;
        l->rmsg[i].msg_hdr.msg_iov = &l->riov[i];
        l->rmsg[i].msg_hdr.msg_iovlen = 1;
        l->smsg[i].msg_hdr.msg_iov = l->siov[i];
        l->smsg[i].msg_hdr.msg_iovlen = 2;
    }
    return l;
}

void osvrt_tcp_link_free(struct osvrt_tcp_link *l)
{
    if (!l)
        return;
    free(l->queued);
    free(l->first);
    free(l->last);
    free(l->view.waits);
    free(l->inbox);
    free(l->view.rx);
    free(l->view.tx);
    free(l);
}

void osvrt_tcp_link_close(struct osvrt_tcp_link *l) { l->fd = -1; }

struct osvrt_tcp_link_view *osvrt_tcp_link_view(struct osvrt_tcp_link *l) { return &l->view; }

void osvrt_tcp_link_get_stats(const struct osvrt_tcp_link *l, struct osvrt_tcp_link_stats *out)
{
    *out = l->st;
}

/* A call starts: what the last one left is gone. */
static void reset_view(struct osvrt_tcp_link *l)
{
    l->view.npass = l->view.nheld = l->view.nhanded = l->view.nevents = l->view.more = 0;
    l->view.error = 0;
    l->view.todo = 0;
}

/* ---- next hops ---- */

void osvrt_tcp_link_set_peer(struct osvrt_tcp_link *l, uint32_t ip, const uint8_t *mac,
                             int64_t expires_ns)
{
    if (ip == 0)
        return;
    struct peer *slot = NULL, *oldest = &l->peers[0];
    for (uint32_t i = 0; i < OSVRT_TCP_LINK_PEERS; i++) {
        struct peer *p = &l->peers[i];
        if (p->ip == ip) {
            slot = p;
            break;
        }
        if (!slot && p->ip == 0)
            slot = p;
        if (p->expires < oldest->expires)
            oldest = p;
    }
    if (!slot)
        slot = oldest;
    slot->ip = ip;
    slot->expires = expires_ns;
    memcpy(slot->head, mac, 6);
    memcpy(slot->head + 6, l->mac, 6);
    slot->head[12] = ETH_P_IP >> 8;
    slot->head[13] = ETH_P_IP & 0xff;
}

static const struct peer *find_peer(struct osvrt_tcp_link *l, uint32_t ip, int64_t now)
{
    const struct peer *p = &l->peers[l->last_peer];
    if (p->ip == ip && now < p->expires)
        return p;
    for (uint32_t i = 0; i < OSVRT_TCP_LINK_PEERS; i++) {
        p = &l->peers[i];
        if (p->ip == ip && ip != 0) {
            if (now >= p->expires)
                return NULL;     /* the caller's ARP decides: refresh or resolve again */
            l->last_peer = i;
            return p;
        }
    }
    return NULL;
}

/* ---- the inbox: segments for a green thread waiting on their connection ---- */

static uint32_t slot_of(int32_t id) { return (uint32_t)id & SLOT_MASK; }

static struct entry *entry_at(struct osvrt_tcp_link *l, uint32_t off)
{
    return (struct entry *)(void *)(l->inbox + off);
}

/* Copy a segment in; 0, or -1 when the inbox has no room. */
static int enqueue(struct osvrt_tcp_link *l, int32_t id, const uint8_t *pkt, uint32_t len,
                   uint32_t flags)
{
    uint32_t size = (uint32_t)((sizeof(struct entry) + len + 7) & ~(size_t)7);
    if (size > OSVRT_TCP_LINK_INBOX - l->in_tail)
        return -1;
    struct entry *e = entry_at(l, l->in_tail);
    e->id = id;
    e->len = len;
    e->flags = flags;
    e->size = size;
    e->next_same = NO_ENTRY;
    memcpy(e + 1, pkt, len);
    uint32_t slot = slot_of(id);
    if (l->queued[slot]++)
        entry_at(l, l->last[slot])->next_same = l->in_tail;
    else
        l->first[slot] = l->in_tail;
    l->last[slot] = l->in_tail;
    l->in_tail += size;
    return 0;
}

static void run_entry(struct osvrt_tcp_link *l, struct entry *e, int64_t now)
{
    osvrt_tcp_input_conn(l->s, e->id, (const uint8_t *)(e + 1), e->len, e->flags, now);
    e->id = DEAD;
}

/* Free the dead entries at the head (the inbox is a FIFO of bytes). */
static void compact(struct osvrt_tcp_link *l)
{
    while (l->in_head < l->in_tail && entry_at(l, l->in_head)->id == DEAD)
        l->in_head += entry_at(l, l->in_head)->size;
    if (l->in_head == l->in_tail)
        l->in_head = l->in_tail = 0;
}

/* Run the entries of id's slot (id -1: every entry) in arrival order;
 * returns how many.  By slot, not id: an entry left by an earlier
 * connection of the slot (its id is stale) still runs, and the engine looks
 * its packet up again (osvrt_tcp_input_conn), so no entry outlives its
 * slot's next drain. */
static int32_t run_inbox(struct osvrt_tcp_link *l, int32_t id, int64_t now)
{
    int32_t n = 0;
    if (id != -1) {
        uint32_t slot = slot_of(id);
        uint32_t off = l->queued[slot] ? l->first[slot] : NO_ENTRY;
        while (off != NO_ENTRY) {
            struct entry *e = entry_at(l, off);
            off = e->next_same;
            run_entry(l, e, now);
            n++;
        }
        l->queued[slot] = 0;
    } else {
        for (uint32_t off = l->in_head; off < l->in_tail; off += entry_at(l, off)->size) {
            struct entry *e = entry_at(l, off);
            if (e->id == DEAD)
                continue;
            l->queued[slot_of(e->id)] = 0;
            run_entry(l, e, now);
            n++;
        }
    }
    compact(l);
    return n;
}

uint32_t osvrt_tcp_link_queued(const struct osvrt_tcp_link *l, int32_t id)
{
    if (id < 0 || slot_of(id) >= l->view.nwaits)
        return 0;
    return l->queued[slot_of(id)];
}

void osvrt_tcp_link_discard(struct osvrt_tcp_link *l)
{
    for (uint32_t off = l->in_head; off < l->in_tail; off += entry_at(l, off)->size) {
        struct entry *e = entry_at(l, off);
        if (e->id != DEAD)
            l->queued[slot_of(e->id)]--;
    }
    l->in_head = l->in_tail = 0;
}

/* ---- input ---- */

/* A TCP segment (IPv4 packet): to the waiting owner's inbox, or run now. */
static void tcp_segment(struct osvrt_tcp_link *l, const uint8_t *pkt, uint32_t len,
                        uint32_t flags, int64_t now)
{
    int32_t id = osvrt_tcp_demux(l->s, pkt, len, flags);
    if (id >= 0 && slot_of(id) < l->view.nwaits) {
        uint32_t slot = slot_of(id);
        if (l->view.waits[slot]) {
            uint32_t before = l->queued[slot];
            if (enqueue(l, id, pkt, len, flags) == 0) {
                l->st.segments_to_owner++;
                if (before == 0 && l->view.nhanded < OSVRT_TCP_LINK_BATCH)
                    l->handed[l->view.nhanded++] = id;
                return;
            }
            l->st.inbox_full++;
        }
        if (l->queued[slot])
            run_inbox(l, id, now);      /* its owner left its wait: keep the order */
    }
    l->st.segments_in_link++;
    osvrt_tcp_input_conn(l->s, id >= 0 ? id : -1, pkt, len, flags, now);
}

int osvrt_tcp_link_frame(struct osvrt_tcp_link *l, const uint8_t *f, uint32_t n, uint32_t flags,
                         int64_t now_ns)
{
    l->st.frames_in++;
    if (n < ETH_HLEN) {
        l->st.eth_short++;
        return 0;
    }
    uint32_t ethertype = (uint32_t)f[12] << 8 | f[13];
    if (ethertype == ETH_P_IP) {
        if (n < ETH_HLEN + 20) {
            l->st.ip_short++;
            return 0;
        }
        uint8_t proto = f[ETH_HLEN + 9];
        if (proto == IPPROTO_TCP_) {
            if (flags & OSVRT_TCP_IN_CSUM_OK)
                l->st.checksum_partial++;
            tcp_segment(l, f + ETH_HLEN, n - ETH_HLEN, flags & OSVRT_TCP_IN_CSUM_OK, now_ns);
            return 0;
        }
        if (proto != IPPROTO_ICMP_) {
            l->st.ip_protocol++;
            return 0;
        }
    } else if (ethertype != ETH_P_ARP) {
        l->st.ethertype++;
        return 0;
    }
    l->st.passed++;
    return 1;
}

/* What the kernel says of frame h (PACKET_AUXDATA): *flags gets
 * OSVRT_TCP_IN_CSUM_OK when the sender left the checksum to the device (a
 * local sender on a veth with offload: never on a wire).  Returns 1 when
 * the frame is not whole: longer than the slot (MSG_TRUNC), or cut by the
 * socket's filter (the BPF program's cap: tp_len > tp_snaplen, with no
 * MSG_TRUNC since the kernel trimmed it before queueing). */
static int frame_cut(struct msghdr *h, uint32_t *flags)
{
    *flags = 0;
    int cut = (h->msg_flags & MSG_TRUNC) != 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA
            && c->cmsg_len >= CMSG_LEN(sizeof(struct tpacket_auxdata))) {
            struct tpacket_auxdata aux;
            memcpy(&aux, CMSG_DATA(c), sizeof aux);
            *flags = (aux.tp_status & TP_STATUS_CSUMNOTREADY) ? OSVRT_TCP_IN_CSUM_OK : 0;
            cut |= aux.tp_len > aux.tp_snaplen;
            break;
        }
    }
    return cut;
}

static void flush(struct osvrt_tcp_link *l, int64_t now);

int32_t osvrt_tcp_link_poll(struct osvrt_tcp_link *l, int64_t now_ns)
{
    reset_view(l);
    for (uint32_t i = 0; i < OSVRT_TCP_LINK_BATCH; i++) {
        struct msghdr *h = &l->rmsg[i].msg_hdr;
        h->msg_control = l->rctl[i];
        h->msg_controllen = CTRL_SPACE;     /* the kernel shrinks it to what it wrote */
        h->msg_flags = 0;
    }
    if (l->fd < 0)
        return -EBADF;
    int r;
    do
        r = recvmmsg(l->fd, l->rmsg, OSVRT_TCP_LINK_BATCH, MSG_DONTWAIT, NULL);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            r = 0;
        else
            return -errno;
    }
    for (int i = 0; i < r; i++) {
        uint32_t n = l->rmsg[i].msg_len, flags;
        if (frame_cut(&l->rmsg[i].msg_hdr, &flags) || n > OSVRT_TCP_LINK_FRAME) {
            l->st.frames_in++;          /* a part of a frame: its headers may lie */
            l->st.truncated++;
            continue;
        }
        if (osvrt_tcp_link_frame(l, l->view.rx + (size_t)i * RX_STRIDE, n, flags, now_ns)) {
            uint32_t k = l->view.npass++;
            l->pass_index[k] = (uint32_t)i;
            l->pass_len[k] = n;
            l->pass_flags[k] = flags;
        }
    }
    flush(l, now_ns);
    return r;
}

/* ---- output ---- */

static int refused(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS || e == ENETDOWN || e == ENXIO;
}

/* The fd is no socket any more: nothing will ever be sent on it. */
static int fd_gone(int e)
{
    return e == EBADF || e == ENOTSOCK;
}

/* sendmmsg n frames.  A frame the device refuses is lost (TCP retransmits)
 * and counted as tx_full; one that fails otherwise (EMSGSIZE after an MTU
 * change, EPERM from a netfilter rule, ...) is lost the same way, counted
 * as tx_errors, and its errno is left in view.error for the caller to
 * report.  Only an fd that is no socket stops the batch. */
static void send_batch(struct osvrt_tcp_link *l, uint32_t n)
{
    uint32_t i = 0;
    if (l->fd < 0) {
        l->st.tx_full += n;
        return;
    }
    while (i < n) {
        int r = sendmmsg(l->fd, l->smsg + i, n - i, MSG_DONTWAIT);
        if (r > 0) {
            l->st.frames_out += (uint32_t)r;
            i += (uint32_t)r;
            continue;
        }
        int e = r < 0 ? errno : EIO;
        if (e == EINTR)
            continue;
        if (refused(e)) {
            l->st.tx_full++;
            i++;
            continue;
        }
        l->view.error = -e;
        if (fd_gone(e)) {
            l->st.tx_errors += n - i;
            return;
        }
        l->st.tx_errors++;
        i++;
    }
}

static void flush(struct osvrt_tcp_link *l, int64_t now)
{
    struct osvrt_tcp_link_view *v = &l->view;
    for (;;) {
        int32_t k = osvrt_tcp_output_many(l->s, v->tx, l->stride, l->tx_len,
                                          OSVRT_TCP_LINK_BATCH, now);
        if (k <= 0)
            break;
        uint32_t nsend = 0;
        for (int32_t i = 0; i < k; i++) {
            uint8_t *pkt = v->tx + (size_t)i * l->stride;
            uint32_t dst = (uint32_t)pkt[16] << 24 | (uint32_t)pkt[17] << 16
                           | (uint32_t)pkt[18] << 8 | pkt[19];
            const struct peer *p = find_peer(l, dst, now);
            if (!p) {
                l->held_off[v->nheld] = (uint32_t)i * l->stride;
                l->held_len[v->nheld++] = l->tx_len[i];
                continue;
            }
            struct iovec *iov = l->siov[nsend];
            iov[0].iov_base = (void *)p->head;
            iov[0].iov_len = ETH_HLEN;
            iov[1].iov_base = pkt;
            iov[1].iov_len = l->tx_len[i];
            nsend++;
        }
        if (nsend)
            send_batch(l, nsend);
        if (k < OSVRT_TCP_LINK_BATCH)
            break;
        if (v->nheld) {              /* the held packets live in tx: the caller takes them first */
            v->more = 1;
            break;
        }
    }
    v->nevents = osvrt_tcp_events(l->s, l->events, OSVRT_TCP_LINK_EVENTS);
    if (v->nevents == OSVRT_TCP_LINK_EVENTS)
        v->more = 1;
    v->next_deadline = osvrt_tcp_next_deadline(l->s);
    v->todo = (v->npass ? OSVRT_TCP_LINK_TODO_PASS : 0u)
              | (v->nhanded ? OSVRT_TCP_LINK_TODO_HANDED : 0u)
              | (v->nheld ? OSVRT_TCP_LINK_TODO_HELD : 0u)
              | (v->nevents ? OSVRT_TCP_LINK_TODO_EVENTS : 0u)
              | (v->more ? OSVRT_TCP_LINK_TODO_MORE : 0u)
              | (v->error ? OSVRT_TCP_LINK_TODO_ERROR : 0u)
              | (v->next_deadline < v->armed ? OSVRT_TCP_LINK_TODO_DEADLINE : 0u);
}

int32_t osvrt_tcp_link_flush(struct osvrt_tcp_link *l, int64_t now_ns)
{
    reset_view(l);
    uint64_t before = l->st.frames_out;
    flush(l, now_ns);
    return (int32_t)(l->st.frames_out - before);
}

int32_t osvrt_tcp_link_drain(struct osvrt_tcp_link *l, int32_t id, int64_t now_ns)
{
    reset_view(l);
    int32_t n = 0;
    if (id == -1 || osvrt_tcp_link_queued(l, id))
        n = run_inbox(l, id, now_ns);
    flush(l, now_ns);
    return n;
}

/* The start of an owner's call: its handed segments run first, in order. */
static void owner_call_begin(struct osvrt_tcp_link *l, int32_t id, int64_t now_ns)
{
    reset_view(l);
    if (osvrt_tcp_link_queued(l, id))
        run_inbox(l, id, now_ns);
}

int64_t osvrt_tcp_link_recv(struct osvrt_tcp_link *l, int32_t id, uint8_t *buf, uint64_t cap,
                            int64_t now_ns)
{
    owner_call_begin(l, id, now_ns);
    int64_t rc = osvrt_tcp_recv(l->s, id, buf, cap, now_ns);
    flush(l, now_ns);
    return rc;
}

int64_t osvrt_tcp_link_send(struct osvrt_tcp_link *l, int32_t id, const uint8_t *buf,
                            uint64_t len, int64_t now_ns)
{
    owner_call_begin(l, id, now_ns);
    int64_t rc = osvrt_tcp_send(l->s, id, buf, len, now_ns);
    flush(l, now_ns);
    return rc;
}

static const struct osvrt_tcp_link_api link_api = {
    .version = OSVRT_TCP_LINK_API_VERSION,
    .size = sizeof(struct osvrt_tcp_link_api),
    .poll = osvrt_tcp_link_poll,
    .recv = osvrt_tcp_link_recv,
    .send = osvrt_tcp_link_send,
    .view = osvrt_tcp_link_view,
};

const struct osvrt_tcp_link_api *osvrt_tcp_link_api(void) { return &link_api; }
