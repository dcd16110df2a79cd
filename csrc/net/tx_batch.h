/* tx_batch.h - UDP replies without a syscall per datagram: a per-worker
 * batch flushed with one sendmmsg.
 *
 * A green thread's sendto on a net-channel endpoint copies the datagram into
 * its worker's batch; the worker sends the batch with sendmmsg when the
 * thread's turn ends (the engine's loop flushes at the top of every turn,
 * before it polls the packet ring or parks, and when it stops), or at once
 * when the batch is full (OSVRT_TXB_MAX datagrams or OSVRT_TXB_ARENA bytes),
 * or when a datagram for another socket comes (sendmmsg takes one fd).  So a
 * reply waits at most for the rest of its own thread's turn: never behind
 * another thread, CPU-bound or not.
 *
 * The socket (struct osvrt_udp_tx) has two counts.  `users` keeps the fd
 * open: the endpoint (until it closes) and every batch holding datagrams for
 * it; the last user closes the fd.  The endpoint's close sets the CLOSED bit
 * (no user is taken after it: a compare-exchange refuses it), and if a batch
 * of another worker still holds datagrams for it (that worker's thread is
 * mid-turn), puts a socket that refuses everything under the fd number with
 * dup3: the port is free when close returns, yet the number stays ours until
 * that batch lets go, so its flush never reaches a file the kernel has given
 * the number to since.  Such a batch's datagrams are refused at its flush
 * and counted (errors, EBADF), as a sendto after close would be; the closing
 * thread's own worker sends its batch before it closes (udptx.c), so a
 * thread's replies before its own close() all go.  `refs` keeps the memory:
 * the owner object (the engine's UdpTx) and every non-empty batch.
 *
 * Errors: a send can fail only at the flush (the thread has gone on), so
 * every datagram that sendmmsg refuses is counted on its socket: dropped_full
 * (EAGAIN, ENOBUFS: the send buffer is full; UDP drops, we count), errors
 * (anything else), and last_errno; never silently lost.
 *
 * Threads: a batch belongs to one worker (its owner OS thread, no lock); a
 * socket's counters are shared by every worker that sends on it (relaxed
 * atomic adds: counters, nothing is ordered by them).
 */
#ifndef OSVRT_TX_BATCH_H
#define OSVRT_TX_BATCH_H

/* struct mmsghdr and sendmmsg need _GNU_SOURCE before the first system header. */

#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define OSVRT_TXB_MAX 32u             /* datagrams per sendmmsg */
#define OSVRT_TXB_ARENA (128u * 1024u)  /* payload bytes a batch holds (>= 2 x 65507) */
#define OSVRT_UDP_MAX_PAYLOAD 65507u  /* IPv4: 65535 - 20 (IP) - 8 (UDP) */
#define OSVRT_UDP_TX_CLOSED (1u << 31)  /* in users: the endpoint closed, no new user */

struct osvrt_udp_tx {
    /* acq_rel decrements: the last one sees every other holder's use first. */
    _Atomic uint32_t refs;            /* memory */
    _Atomic uint32_t users;           /* the fd: a count, and OSVRT_UDP_TX_CLOSED */
    int fd;                           /* owned: closed by the last user */
    _Atomic uint64_t sent, syscalls, dropped_full, errors;
    _Atomic int last_errno;
};

struct osvrt_udp_tx_stats {
    uint64_t sent;                    /* datagrams the kernel took */
    uint64_t syscalls;                /* sendmmsg/sendto calls that carried them */
    uint64_t dropped_full;            /* refused: send buffer full (EAGAIN, ENOBUFS) */
    uint64_t errors;                  /* refused for any other reason */
    int32_t last_errno;               /* the errno of the last refusal, 0 if none */
};

/* A socket for replies; it takes over fd.  The caller holds one ref and one
 * user.  NULL and errno ENOMEM. */
struct osvrt_udp_tx *osvrt_udp_tx_new(int fd);
/* The endpoint's close (call once): no new user; the port is released now
 * (the fd itself closes with the last batch holding datagrams for it, whose
 * flush then refuses them).  0, or -errno when the port could not be
 * released now (no descriptor for the stub): it goes at those flushes. */
int osvrt_udp_tx_close(struct osvrt_udp_tx *tx);
/* Drop the caller's ref: the memory goes with the last. */
void osvrt_udp_tx_put(struct osvrt_udp_tx *tx);
void osvrt_udp_tx_get_stats(struct osvrt_udp_tx *tx, struct osvrt_udp_tx_stats *out);
/* One datagram now, with its own sendto (a caller with no batch: not a
 * worker's thread).  0 or the errno (counted as at a flush; EMSGSIZE for a
 * datagram too big, not counted: nothing was sent). */
int osvrt_udp_tx_send_now(struct osvrt_udp_tx *tx, const void *data, uint32_t len,
                          uint32_t daddr, uint16_t dport);

struct osvrt_tx_batch {
    struct osvrt_udp_tx *tx;          /* the socket of every queued datagram; a reference while len > 0 */
    uint32_t len;                     /* datagrams queued */
    uint32_t used;                    /* arena bytes queued */
    uint64_t flushes;                 /* sendmmsg batches sent (owner's counter) */
    uint64_t full_flushes;            /* of those, forced by a full batch */
    struct mmsghdr msgs[OSVRT_TXB_MAX];
    struct iovec iov[OSVRT_TXB_MAX];
    struct sockaddr_in to[OSVRT_TXB_MAX];
    uint8_t arena[OSVRT_TXB_ARENA];
};

/* NULL and errno ENOMEM. */
struct osvrt_tx_batch *osvrt_tx_batch_new(void);
/* Flushes first (nothing queued is dropped), then frees. */
void osvrt_tx_batch_free(struct osvrt_tx_batch *b);
/* Queue one datagram of tx for (daddr, dport) (both in network byte order):
 * 0, or EMSGSIZE (len > OSVRT_UDP_MAX_PAYLOAD), EBADF (tx is closed):
 * nothing queued. */
int osvrt_tx_batch_add(struct osvrt_tx_batch *b, struct osvrt_udp_tx *tx, const void *data,
                       uint32_t len, uint32_t daddr, uint16_t dport);
/* Send what is queued (one sendmmsg per run of accepted datagrams), count
 * what the kernel refused, drop the socket reference.  Returns the
 * datagrams the kernel took. */
uint32_t osvrt_tx_batch_flush(struct osvrt_tx_batch *b);

static inline int osvrt_tx_batch_pending(const struct osvrt_tx_batch *b)
{
    return b != NULL && b->len != 0;
}

#endif
