/* tcp_link.h - the user-space stack's link loop in C: frames from a packet
 * socket to the TCP engine (tcp.h) and its segments back out, in batches,
 * with no Python per frame.
 *
 * What it does per call.
 *   osvrt_tcp_link_poll: one recvmmsg of up to OSVRT_TCP_LINK_BATCH frames;
 *     each frame is classified as the Python link did it (the same drop
 *     reasons, counted in struct osvrt_tcp_link_stats); a TCP segment is
 *     demuxed and either run through the engine at once, or, when a green
 *     thread waits on its connection (waits[slot] > 0, written by Python),
 *     copied to that connection's inbox for its owner to run
 *     (osvrt_tcp_link_drain / _recv / _send); ARP, ICMP and the like are
 *     left in the receive buffer for the caller (view.npass).  Then
 *     osvrt_tcp_link_flush.
 *   osvrt_tcp_link_flush: the engine's output, each packet behind the
 *     Ethernet header of its next hop (the peer table that the caller fills
 *     from its ARP cache: osvrt_tcp_link_set_peer), in sendmmsg batches;
 *     packets whose next hop is not in the table are left for the caller
 *     (view.nheld: it resolves them by ARP); then the engine's events and its
 *     next deadline into the view.
 * The caller reads what each call left in the view (struct
 * osvrt_tcp_link_view) before its next call on the link: every call resets it.
 *
 * Threading rule: tcp.h's.  The link, its stack and the waits[] array are
 * owned by the stack's one OS thread; no call takes a lock or an atomic.
 *
 * Sockets: fd is a non-blocking AF_PACKET socket bound to one interface (or,
 * in tests, any datagram socket: one datagram is one frame).  A frame whose
 * ancillary data says TP_STATUS_CSUMNOTREADY (PACKET_AUXDATA) goes to the
 * engine with OSVRT_TCP_IN_CSUM_OK.
 */
#ifndef OSVRT_TCP_LINK_H
#define OSVRT_TCP_LINK_H

#include <stdint.h>

#include "tcp.h"

#define OSVRT_TCP_LINK_BATCH 32         /* frames per recvmmsg, packets per sendmmsg */
#define OSVRT_TCP_LINK_EVENTS 64        /* events handed up per call */
#define OSVRT_TCP_LINK_FRAME (1u << 18) /* a receive slot: the BPF filter's cap (a GSO frame fits) */
#define OSVRT_TCP_LINK_PEERS 32         /* next hops cached (a cache of the caller's ARP cache) */
#define OSVRT_TCP_LINK_INBOX (4u << 20) /* bytes of segments held for waiting owners */

/* Counters since osvrt_tcp_link_new (the Python link's names). */
struct osvrt_tcp_link_stats {
    uint64_t frames_in;         /* frames read */
    uint64_t frames_out;        /* TCP frames sent */
    uint64_t checksum_partial;  /* TCP frames whose checksum the sender left to the device */
    uint64_t segments_to_owner; /* segments handed to the green thread waiting on their connection */
    uint64_t segments_in_link;  /* segments run at once by the link call */
    uint64_t passed;            /* frames left to the caller (ARP, ICMP) */
    uint64_t inbox_full;        /* segments run at once because the inbox was full */
    uint64_t eth_short;         /* drops: shorter than an Ethernet header */
    uint64_t ethertype;         /* drops: neither IPv4 nor ARP */
    uint64_t ip_short;          /* drops: IPv4 shorter than its header */
    uint64_t ip_protocol;       /* drops: IPv4 neither TCP nor ICMP */
    uint64_t tx_full;           /* drops: the device refused a frame */
    uint64_t tx_errors;         /* frames lost to another send error (view.error: its errno) */
    uint64_t truncated;         /* drops: larger than a receive slot (MSG_TRUNC), or cut by the
                                 * socket's filter: never parsed */
};

/* What the last call left for the caller.  Pointers stay valid for the
 * link's life; counts are reset by every call. */
struct osvrt_tcp_link_view {
    uint8_t *rx;                /* the receive area: frame i of a poll at rx + i * rx_stride */
    uint32_t rx_stride;
    uint32_t npass;             /* frames for the caller: pass_index[i], pass_len[i], pass_flags[i] */
    uint32_t *pass_index;
    uint32_t *pass_len;
    uint32_t *pass_flags;       /* OSVRT_TCP_IN_CSUM_OK when the checksum is partial */
    uint8_t *tx;                /* held packet i (IPv4, no link header) at tx + held_off[i] */
    uint32_t nheld;
    uint32_t *held_off;
    uint32_t *held_len;
    uint32_t nhanded;           /* connections handed a segment: handed[i] (ids) */
    int32_t *handed;
    uint32_t nevents;
    struct osvrt_tcp_event *events;
    uint32_t more;              /* output or events are left: call osvrt_tcp_link_flush again */
    int32_t error;              /* the last send error of the call other than a refusal
                                 * (negative errno), else 0: its frame was lost and counted in
                                 * tx_errors; the batch went on unless the fd is no socket
                                 * (EBADF, ENOTSOCK: the rest counted too) */
    int64_t next_deadline;      /* osvrt_tcp_next_deadline after the call */
    uint16_t *waits;            /* green threads waiting per connection slot: the caller's */
    uint32_t nwaits;            /* slots in waits[] (max_conns) */
    uint32_t todo;              /* OSVRT_TCP_LINK_TODO_*: which of the above need the caller;
                                 * 0 after most calls, so the caller reads one word */
    int64_t armed;              /* the caller's: the deadline its timer sleeps until */
};
#define OSVRT_TCP_LINK_TODO_PASS     0x01u  /* npass > 0 */
#define OSVRT_TCP_LINK_TODO_HANDED   0x02u  /* nhanded > 0 */
#define OSVRT_TCP_LINK_TODO_HELD     0x04u  /* nheld > 0 */
#define OSVRT_TCP_LINK_TODO_EVENTS   0x08u  /* nevents > 0 */
#define OSVRT_TCP_LINK_TODO_MORE     0x10u  /* more */
#define OSVRT_TCP_LINK_TODO_ERROR    0x20u  /* error != 0 */
#define OSVRT_TCP_LINK_TODO_DEADLINE 0x40u  /* next_deadline < armed: wake the timer earlier */

struct osvrt_tcp_link;

/* A link over fd for stack s (not owned: free the link before the stack),
 * sending from mac (6 bytes); max_conns as the stack's config (the size of
 * waits[]); stride: bytes per outgoing IPv4 packet (>= OSVRT_TCP_MIN_OUT;
 * 40 + options + the MSS).  NULL with *err = -EINVAL / -ENOMEM. */
struct osvrt_tcp_link *osvrt_tcp_link_new(struct osvrt_tcp_stack *s, int fd, const uint8_t *mac,
                                          uint32_t max_conns, uint32_t stride, int *err);
void osvrt_tcp_link_free(struct osvrt_tcp_link *l);
/* The socket is being closed: no call reads or sends on it afterwards
 * (poll returns -EBADF, flush counts what it would send as tx_full). */
void osvrt_tcp_link_close(struct osvrt_tcp_link *l);
struct osvrt_tcp_link_view *osvrt_tcp_link_view(struct osvrt_tcp_link *l);

/* The next hop ip (host order) is mac until expires_ns (the caller's ARP
 * entry); expires_ns <= now: forget it.  The oldest entry makes room. */
void osvrt_tcp_link_set_peer(struct osvrt_tcp_link *l, uint32_t ip, const uint8_t *mac,
                             int64_t expires_ns);

/* Read and run up to OSVRT_TCP_LINK_BATCH frames, then flush.  Returns the
 * frames read (0: none waiting), or a negative errno from recvmmsg. */
int32_t osvrt_tcp_link_poll(struct osvrt_tcp_link *l, int64_t now_ns);

/* One frame of n bytes, as poll runs each (flags: OSVRT_TCP_IN_CSUM_OK for
 * a partial checksum).  Returns 1 when the frame is left for the caller
 * (it is not recorded in the view: poll does that), else 0.  For tests and
 * fuzzing; output is not flushed. */
int osvrt_tcp_link_frame(struct osvrt_tcp_link *l, const uint8_t *frame, uint32_t n,
                         uint32_t flags, int64_t now_ns);

/* Send the engine's output, collect its events and next deadline.  Returns
 * the frames sent. */
int32_t osvrt_tcp_link_flush(struct osvrt_tcp_link *l, int64_t now_ns);

/* Run the segments held for connection id (-1: for every connection) in
 * arrival order, then flush.  Returns the segments run. */
int32_t osvrt_tcp_link_drain(struct osvrt_tcp_link *l, int32_t id, int64_t now_ns);

/* drain(id) + osvrt_tcp_recv + flush: one call for a stream's recv. */
int64_t osvrt_tcp_link_recv(struct osvrt_tcp_link *l, int32_t id, uint8_t *buf, uint64_t cap,
                            int64_t now_ns);

/* drain(id) + osvrt_tcp_send + flush: one call for a stream's send. */
int64_t osvrt_tcp_link_send(struct osvrt_tcp_link *l, int32_t id, const uint8_t *buf,
                            uint64_t len, int64_t now_ns);

/* Forget every held segment (the stack is closing). */
void osvrt_tcp_link_discard(struct osvrt_tcp_link *l);

/* Segments waiting in connection id's inbox now. */
uint32_t osvrt_tcp_link_queued(const struct osvrt_tcp_link *l, int32_t id);

void osvrt_tcp_link_get_stats(const struct osvrt_tcp_link *l, struct osvrt_tcp_link_stats *out);

/* The per-segment calls, as a table for the engine (osvrt/_engine/tcplink.c):
 * the core is built into the cffi module osvrt._core, and a call through
 * cffi costs more than the call's own work (argument conversion, a GIL
 * release and retake); the engine calls these through the pointers, with the
 * GIL held (each is non-blocking).  Bump OSVRT_TCP_LINK_API_VERSION when a
 * member or struct osvrt_tcp_link_view changes; the engine refuses another. */
#define OSVRT_TCP_LINK_API_VERSION 1u
struct osvrt_tcp_link_api {
    uint32_t version;
    uint32_t size;              /* sizeof(struct osvrt_tcp_link_api) */
    int32_t (*poll)(struct osvrt_tcp_link *l, int64_t now_ns);
    int64_t (*recv)(struct osvrt_tcp_link *l, int32_t id, uint8_t *buf, uint64_t cap,
                    int64_t now_ns);
    int64_t (*send)(struct osvrt_tcp_link *l, int32_t id, const uint8_t *buf, uint64_t len,
                    int64_t now_ns);
    struct osvrt_tcp_link_view *(*view)(struct osvrt_tcp_link *l);
};
const struct osvrt_tcp_link_api *osvrt_tcp_link_api(void);

#endif
