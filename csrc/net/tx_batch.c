/* tx_batch.c - see tx_batch.h. */
#define _GNU_SOURCE
#include "tx_batch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void add_stat(_Atomic uint64_t *c, uint64_t n)
{
    /* relaxed: a counter; readers want a recent value, nothing more */
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

struct osvrt_udp_tx *osvrt_udp_tx_new(int fd)
{
    struct osvrt_udp_tx *tx = calloc(1, sizeof *tx);
    if (tx == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    atomic_init(&tx->refs, 1);
    atomic_init(&tx->users, 1);
    tx->fd = fd;
    return tx;
}

/* A user, unless the endpoint has closed: 1 or 0. */
static int user_tryget(struct osvrt_udp_tx *tx)
{
    /* relaxed: the fd was published before the object was; CLOSED is final */
    uint32_t n = atomic_load_explicit(&tx->users, memory_order_relaxed);
    while (n != 0 && !(n & OSVRT_UDP_TX_CLOSED))
        if (atomic_compare_exchange_weak_explicit(&tx->users, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

static void user_put(struct osvrt_udp_tx *tx)
{
    /* acq_rel: every user's sendmmsg happens before the last user's close() */
    if ((atomic_fetch_sub_explicit(&tx->users, 1, memory_order_acq_rel) & ~OSVRT_UDP_TX_CLOSED) == 1)
        close(tx->fd);
}

/* Put a socket that sends nothing (AF_UNIX refuses an AF_INET address:
 * EINVAL) in place of the port's socket under tx->fd: the port's file loses
 * its last descriptor now, while the number stays ours for the batches still
 * holding it.  Called with a user held, so the fd is open throughout.  0, or
 * -errno when it could not (no descriptor left for the stub): the port then
 * goes at those batches' flush. */
static int release_port_now(struct osvrt_udp_tx *tx)
{
    int stub = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (stub < 0)
        return -errno;
    int r = dup3(stub, tx->fd, O_CLOEXEC) < 0 ? -errno : 0;
    close(stub);
    return r;
}

int osvrt_udp_tx_close(struct osvrt_udp_tx *tx)
{
    /* relaxed: CLOSED only refuses new users; the fd itself is ordered by
     * the user count (user_put's acq_rel) and by the kernel's fd table. */
    uint32_t before = atomic_fetch_or_explicit(&tx->users, OSVRT_UDP_TX_CLOSED,
                                               memory_order_relaxed);
    int r = 0;
    if ((before & ~OSVRT_UDP_TX_CLOSED) > 1)
        r = release_port_now(tx);    /* other workers' batches hold datagrams for it */
    user_put(tx);
    return r;
}

void osvrt_udp_tx_put(struct osvrt_udp_tx *tx)
{
    /* acq_rel: every holder's use happens before the free */
    if (atomic_fetch_sub_explicit(&tx->refs, 1, memory_order_acq_rel) == 1)
        free(tx);
}

void osvrt_udp_tx_get_stats(struct osvrt_udp_tx *tx, struct osvrt_udp_tx_stats *out)
{
    /* relaxed loads: counters read while others count */
    out->sent = atomic_load_explicit(&tx->sent, memory_order_relaxed);
    out->syscalls = atomic_load_explicit(&tx->syscalls, memory_order_relaxed);
    out->dropped_full = atomic_load_explicit(&tx->dropped_full, memory_order_relaxed);
    out->errors = atomic_load_explicit(&tx->errors, memory_order_relaxed);
    out->last_errno = atomic_load_explicit(&tx->last_errno, memory_order_relaxed);
}

/* A datagram the kernel refused: counted by kind, never dropped silently. */
static void count_refusal(struct osvrt_udp_tx *tx, int e)
{
    if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS)
        add_stat(&tx->dropped_full, 1);
    else
        add_stat(&tx->errors, 1);
    /* relaxed: a diagnostic word */
    atomic_store_explicit(&tx->last_errno, e, memory_order_relaxed);
}

static void fill_addr(struct sockaddr_in *to, uint32_t daddr, uint16_t dport)
{
    memset(to, 0, sizeof *to);
    to->sin_family = AF_INET;
    to->sin_addr.s_addr = daddr;
    to->sin_port = dport;
}

int osvrt_udp_tx_send_now(struct osvrt_udp_tx *tx, const void *data, uint32_t len,
                          uint32_t daddr, uint16_t dport)
{
    if (len > OSVRT_UDP_MAX_PAYLOAD)
        return EMSGSIZE;
    if (!user_tryget(tx))
        return EBADF;
    struct sockaddr_in to;
    fill_addr(&to, daddr, dport);
    ssize_t r;
    do
        r = sendto(tx->fd, data, len, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof to);
    while (r < 0 && errno == EINTR);
    int e = r < 0 ? errno : 0;
    add_stat(&tx->syscalls, 1);
    if (e)
        count_refusal(tx, e);
    else
        add_stat(&tx->sent, 1);
    user_put(tx);
    return e;
}

struct osvrt_tx_batch *osvrt_tx_batch_new(void)
{
    struct osvrt_tx_batch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    for (uint32_t i = 0; i < OSVRT_TXB_MAX; i++) {
        b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
        b->msgs[i].msg_hdr.msg_iovlen = 1;
        b->msgs[i].msg_hdr.msg_name = &b->to[i];
        b->msgs[i].msg_hdr.msg_namelen = sizeof b->to[i];
    }
    return b;
}

void osvrt_tx_batch_free(struct osvrt_tx_batch *b)
{
    if (b == NULL)
        return;
    osvrt_tx_batch_flush(b);
    free(b);
}

uint32_t osvrt_tx_batch_flush(struct osvrt_tx_batch *b)
{
    struct osvrt_udp_tx *tx = b->tx;
    uint32_t n = b->len, i = 0, sent = 0;
    if (n == 0)
        return 0;
    /* relaxed: a hint; a close after this load leaves the stub socket, which refuses all */
    if (atomic_load_explicit(&tx->users, memory_order_relaxed) & OSVRT_UDP_TX_CLOSED)
        i = n;           /* the endpoint closed before this batch went: refused, EBADF */
    for (uint32_t k = 0; k < i; k++)
        count_refusal(tx, EBADF);
    /* sendmmsg sends in order and stops at the first refusal: it returns
     * how many went (the refused one is reported by the next call, or as
     * -1 when it is the first): count it and go on after it. */
    while (i < n) {
        int r = sendmmsg(tx->fd, &b->msgs[i], n - i, MSG_DONTWAIT);
        add_stat(&tx->syscalls, 1);
        if (r > 0) {
            i += (uint32_t)r;
            sent += (uint32_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            count_refusal(tx, r < 0 ? errno : EIO);
            i++;
        }
    }
    add_stat(&tx->sent, sent);
    b->flushes++;
    b->len = b->used = 0;
    b->tx = NULL;
    user_put(tx);                     /* the batch's user and ref */
    osvrt_udp_tx_put(tx);
    return sent;
}

int osvrt_tx_batch_add(struct osvrt_tx_batch *b, struct osvrt_udp_tx *tx, const void *data,
                       uint32_t len, uint32_t daddr, uint16_t dport)
{
    if (len > OSVRT_UDP_MAX_PAYLOAD)
        return EMSGSIZE;
    if (b->len && (b->tx != tx || b->used + len > OSVRT_TXB_ARENA))
        osvrt_tx_batch_flush(b);       /* sendmmsg takes one fd; the arena has no room */
    if (b->len == 0) {
        if (!user_tryget(tx))
            return EBADF;
        /* relaxed: the caller's owner object holds a ref all along (tx_batch.h) */
        atomic_fetch_add_explicit(&tx->refs, 1, memory_order_relaxed);
        b->tx = tx;
    }
    uint32_t i = b->len++;
    memcpy(b->arena + b->used, data, len);
    b->iov[i].iov_base = b->arena + b->used;
    b->iov[i].iov_len = len;
    b->used += len;
    fill_addr(&b->to[i], daddr, dport);
    if (b->len == OSVRT_TXB_MAX) {
        b->full_flushes++;
        osvrt_tx_batch_flush(b);
    }
    return 0;
}
