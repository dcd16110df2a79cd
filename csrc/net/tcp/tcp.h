/* tcp.h - osvrt's TCP protocol engine (RFC 9293), sans-I/O.
 *
 * API history (tcpstack reads this; the API only grows):
 *   2026-12-05 19:58 UTC  first version (skeleton).
 *   2026-12-05 20:15 UTC  implemented; API unchanged.
 *   2026-12-05 20:20 UTC  output_pending documented as "may have" (it was
 *                         always so); tcp_seg.c joins _core's sources.
 *   2026-12-05 20:39 UTC  added osvrt_tcp_output_many, osvrt_tcp_input_many
 *                         (batches: one cffi call for many packets).
 *
 * What it is.  A TCP endpoint for one local IPv4 address that never makes a
 * system call and never reads a clock.  It is fed
 *   - IPv4 packets that arrived (osvrt_tcp_input, or demux + input_conn),
 *   - application calls (listen, accept, connect, send, recv, shutdown,
 *     close, abort), and
 *   - the time, in nanoseconds of any monotonic clock the caller chooses,
 *     passed as `now_ns` to every call that may start or fire a timer;
 * and it produces
 *   - IPv4 packets to send (osvrt_tcp_output: one whole packet per call,
 *     IPv4 header + TCP header + payload, both checksums filled in; the
 *     caller adds the link header and resolves the next hop (ARP)),
 *   - readiness events (osvrt_tcp_events), and
 *   - its next timer deadline (osvrt_tcp_next_deadline; the caller calls
 *     osvrt_tcp_on_timer at or after it).
 *
 * Units and conventions.
 *   - IPv4 addresses and ports are HOST byte order integers
 *     (198.18.0.2 is 0xC6120002).  Packets are network byte order bytes.
 *   - Times are int64 nanoseconds on the caller's monotonic clock; the stack
 *     only compares and subtracts them.  "No deadline" is INT64_MAX.
 *   - Errors are negative errno values (-EAGAIN, -ECONNRESET, ...), as the
 *     kernel's syscalls return them; the caller raises OSError(-rc).
 *   - The stack copies: no call keeps a pointer to a caller's buffer.
 *
 * Connections.  Every connection and every listener is named by an id, an
 * int32 >= 0 (a slot number and a generation: a stale id, one whose slot
 * was freed and reused, is refused with -EBADF, never silently aliased).
 * An id stays valid until the application calls osvrt_tcp_close or
 * osvrt_tcp_abort on it, even after the protocol reached CLOSED (reset,
 * timeout): then recv returns the error and state() says CLOSED.  After
 * close() a connection that still has a FIN handshake or TIME_WAIT to do
 * lives on as an orphan, unreachable through its old id, and frees its slot
 * itself.  Accepted connections get their id from osvrt_tcp_accept.
 *
 * Threading rule.  A stack and all its connections are owned by ONE OS
 * thread at a time (the owning worker): no call takes a lock or uses an
 * atomic.  Handing a stack to another thread needs a happens-before edge
 * (a mutex, a queue), as for any plain data.  Why: every segment touches
 * state shared by all connections of the stack (the output queue, the
 * timer heap, the event queue, the statistics, a listener's accept queue),
 * and one owner makes all of it plain memory with no atomic on the path.
 *
 * Protocol work in the green thread that owns the flow.  All green threads
 * of a worker run on that worker's OS thread, so any of them may call the
 * stack.  The input path is split so that the receiving side can hand each
 * packet to the green thread that owns its connection:
 *     id = osvrt_tcp_demux(stack, pkt, len, flags);   // a lookup; no state change
 *     ... wake the green thread that owns `id`, which then calls ...
 *     osvrt_tcp_input_conn(stack, id, pkt, len, flags, now_ns);
 * osvrt_tcp_input is exactly demux + input_conn.  Spreading the connections
 * of one stack over several OS threads would need what the one-owner rule
 * avoids: a per-thread output queue, event queue, timer heap and stats
 * shard, a table lookup safe against concurrent insert (RCU or a lock), and
 * a multi-producer accept queue per listener.  osvrt instead runs one stack
 * per worker when it wants more CPUs (one address or port range each).
 *
 * Protocol.  RFC 9293 with: MSS and window scale options; a SYN backlog per
 * listener whose overflow is counted; out-of-order reassembly into the
 * receive buffer itself (bounded: OSVRT_TCP_MAX_HOLES ranges); RTO per RFC
 * 6298 (SRTT/RTTVAR, Karn's rule, exponential backoff, min/max bounds);
 * slow start, congestion avoidance, fast retransmit and NewReno recovery
 * (RFC 5681, 6582); delayed ACKs (RFC 1122: at most delack_ns, an immediate
 * ACK for every second full-sized segment and for out-of-order data);
 * zero-window probes on a persist timer; silly window avoidance on both
 * sides; FIN and half-close in every state; RST validation with
 * RFC 5961 challenge ACKs; TIME_WAIT for time_wait_ns (a SYN past the old
 * sequence space reopens the 4-tuple at once); optional keep-alive;
 * ISNs per RFC 6528 (SipHash-2-4 of the 4-tuple under a secret key, plus a
 * 4 us clock).  No SACK, no timestamps, no Nagle (segments leave as soon
 * as data and windows allow, like TCP_NODELAY: output() is pulled, so
 * data sent between two output() calls already coalesces).
 */
#ifndef OSVRT_TCP_H
#define OSVRT_TCP_H

#include <stdint.h>

/* ---- limits ---- */
#define OSVRT_TCP_MAX_CONNS (1u << 20)  /* ids carry a 20-bit slot number */
#define OSVRT_TCP_MAX_HOLES 8           /* out-of-order ranges held per connection */
#define OSVRT_TCP_MIN_OUT 80            /* output() needs cap >= this (headers + options) */

/* ---- configuration ---- */
struct osvrt_tcp_config {
    uint32_t addr;          /* the local IPv4 address (host order); packets to others are dropped */
    uint32_t mss;           /* largest payload we receive, advertised in SYNs; 0: 1460 (MTU 1500) */
    uint32_t sndbuf;        /* send buffer per connection, bytes; 0: 256 KiB */
    uint32_t rcvbuf;        /* receive buffer (and so the largest window) per connection; 0: 256 KiB */
    uint32_t max_conns;     /* connections + listeners at once; 0: 4096; at most OSVRT_TCP_MAX_CONNS */
    uint32_t syn_retries;   /* SYN / SYN-ACK retransmissions before giving up; 0: 5 */
    uint32_t max_retries;   /* data retransmissions (RTO expiries in a row) before ETIMEDOUT; 0: 12 */
    uint32_t keepalive_probes; /* unanswered keep-alive probes before ETIMEDOUT; 0: 9 */
    int64_t rto_initial_ns; /* RTO before the first RTT sample; 0: 1 s (RFC 6298 2.1) */
    int64_t rto_min_ns;     /* 0: 200 ms (Linux's; RFC 6298 suggests 1 s) */
    int64_t rto_max_ns;     /* 0: 60 s */
    int64_t delack_ns;      /* delayed-ACK timeout; 0: 40 ms; clamped to 200 ms (RFC 1122) */
    int64_t time_wait_ns;   /* TIME_WAIT (2 MSL); 0: 60 s */
    int64_t keepalive_ns;   /* idle time before keep-alive probes (and their interval / 8); 0: off */
    uint64_t isn_key[2];    /* the RFC 6528 secret; the caller fills it from getrandom() */
};

/* ---- states (RFC 9293 3.3.2; numbering fixed, used as an index into stats) ---- */
enum osvrt_tcp_state {
    OSVRT_TCP_CLOSED = 0,
    OSVRT_TCP_LISTEN,
    OSVRT_TCP_SYN_SENT,
    OSVRT_TCP_SYN_RECEIVED,
    OSVRT_TCP_ESTABLISHED,
    OSVRT_TCP_FIN_WAIT_1,
    OSVRT_TCP_FIN_WAIT_2,
    OSVRT_TCP_CLOSE_WAIT,
    OSVRT_TCP_CLOSING,
    OSVRT_TCP_LAST_ACK,
    OSVRT_TCP_TIME_WAIT,
    OSVRT_TCP_NSTATES
};

/* ---- why an incoming packet was dropped (index into stats.drops) ---- */
enum osvrt_tcp_drop {
    OSVRT_TCP_DROP_NONE = 0,        /* not dropped (osvrt_tcp_input's 0) */
    OSVRT_TCP_DROP_NOT_TCP,         /* not IPv4, or IPv4 protocol != 6 */
    OSVRT_TCP_DROP_BAD_IP,          /* IPv4 header: short, IHL, total length, version */
    OSVRT_TCP_DROP_FRAGMENT,        /* fragments are not reassembled */
    OSVRT_TCP_DROP_BAD_IP_CSUM,     /* IPv4 header checksum */
    OSVRT_TCP_DROP_NOT_OURS,        /* destination is not the stack's address, or a bad source */
    OSVRT_TCP_DROP_TRUNC_TCP,       /* shorter than a TCP header */
    OSVRT_TCP_DROP_BAD_OFFSET,      /* data offset < 5 words or past the segment */
    OSVRT_TCP_DROP_BAD_OPTIONS,     /* an option whose length runs past the header or is < 2 */
    OSVRT_TCP_DROP_BAD_CSUM,        /* TCP checksum */
    OSVRT_TCP_DROP_BAD_FLAGS,       /* SYN+FIN, SYN+RST, no ACK where one is required, ... */
    OSVRT_TCP_DROP_NO_CONN,         /* no connection or listener (answered with a RST) */
    OSVRT_TCP_DROP_BACKLOG,         /* a SYN for a listener whose backlog is full */
    OSVRT_TCP_DROP_OUT_OF_WINDOW,   /* sequence outside the receive window (answered by an ACK) */
    OSVRT_TCP_DROP_BAD_ACK,         /* ACK of data never sent (answered by an ACK) */
    OSVRT_TCP_DROP_RST_INVALID,     /* RST not exactly at RCV.NXT (RFC 5961: challenge ACK) */
    OSVRT_TCP_DROP_NO_ROOM,         /* no room: out-of-order ranges full, or the table is full */
    OSVRT_TCP_DROP_STALE_ID,        /* input_conn with an id that is not this packet's connection */
    OSVRT_TCP_NDROPS
};

/* ---- statistics (osvrt_tcp_get_stats); plain counters since osvrt_tcp_new ---- */
struct osvrt_tcp_stats {
    uint64_t segs_in;           /* TCP segments accepted by a connection or listener */
    uint64_t segs_out;          /* segments produced by output() */
    uint64_t bytes_in;          /* payload bytes placed in receive buffers (new data only) */
    uint64_t bytes_out;         /* payload bytes sent, retransmissions included */
    uint64_t retransmits;       /* segments sent again (RTO, fast retransmit, NewReno partial ACK) */
    uint64_t rto_expiries;      /* retransmission timeouts */
    uint64_t fast_retransmits;  /* entries into fast recovery (3 duplicate ACKs) */
    uint64_t dup_acks;          /* duplicate ACKs received */
    uint64_t ooo_segments;      /* segments that arrived ahead of RCV.NXT and were kept */
    uint64_t dup_segments;      /* segments carrying only data already received */
    uint64_t zero_window_probes;
    uint64_t keepalive_probes;
    uint64_t delayed_acks;      /* ACKs sent by the delayed-ACK timer */
    uint64_t challenge_acks;    /* RFC 5961 challenge ACKs sent */
    uint64_t rsts_in;           /* valid RSTs that reset a connection */
    uint64_t rsts_out;
    uint64_t active_opens;      /* connect() calls that sent a SYN */
    uint64_t passive_opens;     /* SYNs that made a SYN_RECEIVED connection */
    uint64_t accepts;           /* connections handed out by accept() */
    uint64_t timeouts;          /* connections that ended with ETIMEDOUT */
    uint64_t ctl_overflow;      /* RST/ACK replies not sent because their queue was full */
    uint64_t drops[OSVRT_TCP_NDROPS]; /* dropped packets by enum osvrt_tcp_drop */
    uint64_t conns[OSVRT_TCP_NSTATES]; /* connections in each state NOW (orphans included) */
};

/* ---- readiness events (osvrt_tcp_events) ----
 * Edge-triggered and coalesced: a connection appears at most once per
 * events() call with the OR of what happened since the last one.  After an
 * event, the owner calls recv/send/accept until -EAGAIN. */
#define OSVRT_TCP_EV_READABLE    0x01u  /* recv() has data, EOF or an error for you */
#define OSVRT_TCP_EV_WRITABLE    0x02u  /* send() accepts bytes again (or connection ready) */
#define OSVRT_TCP_EV_ESTABLISHED 0x04u  /* connect() completed (or an accepted conn is ready) */
#define OSVRT_TCP_EV_ACCEPTABLE  0x08u  /* listener: accept() has a connection */
#define OSVRT_TCP_EV_CLOSED      0x10u  /* protocol reached CLOSED (peer FIN+ACK done, or error) */
#define OSVRT_TCP_EV_RESET       0x20u  /* the peer reset it: recv/send return -ECONNRESET */
#define OSVRT_TCP_EV_ERROR       0x40u  /* timed out (-ETIMEDOUT) or refused (-ECONNREFUSED) */

struct osvrt_tcp_event {
    int32_t id;                 /* connection or listener id */
    uint32_t flags;             /* OR of OSVRT_TCP_EV_* */
};

/* ---- a connection's details (osvrt_tcp_conn_info) ---- */
struct osvrt_tcp_conn_info {
    uint32_t state;             /* enum osvrt_tcp_state */
    uint32_t local_addr, remote_addr;   /* host order */
    uint16_t local_port, remote_port;
    int32_t error;              /* 0, or the negative errno recv/send will return */
    uint32_t readable;          /* bytes recv() can return now */
    uint32_t send_space;        /* bytes send() accepts now */
    uint32_t unsent;            /* bytes in the send buffer not yet sent once */
    uint32_t in_flight;         /* bytes sent and not acknowledged */
    uint32_t snd_mss;           /* payload bytes per segment we send */
    uint32_t snd_wnd;           /* the peer's window, scaled, bytes */
    uint32_t rcv_wnd;           /* the window we advertise, bytes */
    uint32_t cwnd, ssthresh;    /* congestion window and slow-start threshold, bytes */
    uint8_t snd_wscale, rcv_wscale; /* negotiated shifts (0 if the peer sent no option) */
    uint8_t eof;                /* the peer's FIN was received and is next in order */
    uint8_t pad;
    int64_t srtt_ns, rttvar_ns, rto_ns; /* srtt 0: no sample yet */
    uint64_t retransmits;       /* this connection's retransmitted segments */
};

struct osvrt_tcp_stack;

/* Fill *cfg with zeros: every 0 field means its default (see above), except
 * addr and isn_key, which the caller must set. */
void osvrt_tcp_config_init(struct osvrt_tcp_config *cfg);

/* Make a stack.  Returns NULL with *err = -EINVAL (a bad field: addr 0,
 * mss < 64 or > 65495, buffers < 2*mss or > 1 GiB, max_conns >
 * OSVRT_TCP_MAX_CONNS, a negative time, rto_max_ns < rto_min_ns) or
 * -ENOMEM.  The config is copied. */
struct osvrt_tcp_stack *osvrt_tcp_new(const struct osvrt_tcp_config *cfg, int *err);

/* Free a stack and every connection: no packet is sent (call abort on each
 * connection first and drain output() for RSTs). */
void osvrt_tcp_free(struct osvrt_tcp_stack *s);

/* ---- input ----
 * Flags for input: */
#define OSVRT_TCP_IN_CSUM_OK 0x1u  /* the TCP checksum was verified below us, or is partial
                                    * (TP_STATUS_CSUMNOTREADY / virtio NEEDS_CSUM: the sender is
                                    * on this host and never filled it in): do not check it.
                                    * The IPv4 header checksum is always checked. */

/* Find the connection or listener a packet belongs to, without changing any
 * state (the packet is checked only as far as needed to read its 4-tuple).
 * Returns the id (>= 0), or -(enum osvrt_tcp_drop) when it belongs to
 * nobody or cannot be read: pass it to osvrt_tcp_input_conn anyway with
 * id -1, which then drops it, counts it and answers with a RST where
 * RFC 9293 wants one. */
int32_t osvrt_tcp_demux(struct osvrt_tcp_stack *s, const uint8_t *pkt, uint32_t len, uint32_t flags);

/* Process one IPv4 packet for connection `id` (from osvrt_tcp_demux; -1:
 * nobody's).  Verifies the IPv4 header, the TCP checksum (unless
 * OSVRT_TCP_IN_CSUM_OK), the header and its options; runs the state machine;
 * queues replies for output(), events for events() and re-arms timers.
 * If `id` no longer matches the packet's 4-tuple the packet is looked up
 * again.  Returns 0 when a connection or listener took it, else the
 * enum osvrt_tcp_drop reason (> 0), also counted in stats.drops. */
int osvrt_tcp_input_conn(struct osvrt_tcp_stack *s, int32_t id, const uint8_t *pkt, uint32_t len,
                         uint32_t flags, int64_t now_ns);

/* osvrt_tcp_demux + osvrt_tcp_input_conn. */
int osvrt_tcp_input(struct osvrt_tcp_stack *s, const uint8_t *pkt, uint32_t len, uint32_t flags,
                    int64_t now_ns);

/* Batched input: packet i is lens[i] bytes at base + offs[i].  Each is
 * osvrt_tcp_input; its result goes to results[i] when results is not NULL.
 * Returns how many were taken (result 0). */
uint32_t osvrt_tcp_input_many(struct osvrt_tcp_stack *s, const uint8_t *base, const uint32_t *offs,
                              const uint32_t *lens, uint32_t n, uint32_t flags, int64_t now_ns,
                              uint8_t *results);

/* ---- output ----
 * Write the next IPv4 packet to send into buf (cap bytes, cap >=
 * OSVRT_TCP_MIN_OUT; a cap below 40 + MSS only makes segments smaller).
 * Returns its length, 0 when there is nothing to send now, or -EINVAL when
 * cap < OSVRT_TCP_MIN_OUT.  Call it until 0 after every input, app call or
 * on_timer: what it emits was decided by those calls (ACKs, data the windows
 * allow, retransmissions, RSTs).  now_ns times the RTT sample and arms the
 * retransmission timer for the data it sends. */
int32_t osvrt_tcp_output(struct osvrt_tcp_stack *s, uint8_t *buf, uint32_t cap, int64_t now_ns);

/* Batched output, for callers that pay per call (cffi releases the GIL on
 * every call): up to max packets, packet i written at buf + i * stride
 * (stride >= OSVRT_TCP_MIN_OUT; packets are sized to fit it), its length in
 * lens[i].  Returns how many (0..max); -EINVAL for a bad stride. */
int32_t osvrt_tcp_output_many(struct osvrt_tcp_stack *s, uint8_t *buf, uint32_t stride,
                              uint32_t *lens, uint32_t max, int64_t now_ns);

/* 0 when output() has surely nothing to send; nonzero when it may have
 * (a connection is queued for output; it may find that its windows allow
 * nothing yet).  Cheap: two loads. */
int osvrt_tcp_output_pending(const struct osvrt_tcp_stack *s);

/* ---- time ----
 * The earliest time (ns) at which on_timer has work; INT64_MAX when none. */
int64_t osvrt_tcp_next_deadline(const struct osvrt_tcp_stack *s);

/* Run every timer due at now_ns (retransmission, delayed ACK, persist,
 * keep-alive, TIME_WAIT, SYN_RECEIVED expiry).  Returns how many fired.
 * Then drain output() and events(). */
int osvrt_tcp_on_timer(struct osvrt_tcp_stack *s, int64_t now_ns);

/* ---- events ----
 * Move up to max pending events into out[]; returns how many. */
uint32_t osvrt_tcp_events(struct osvrt_tcp_stack *s, struct osvrt_tcp_event *out, uint32_t max);

/* ---- application calls ---- */

/* Listen on port (1..65535) of the stack's address.  backlog (1..65535,
 * 0: 128) bounds both the SYN_RECEIVED connections and the established
 * ones waiting for accept(); a SYN past it is dropped and counted
 * (drops[OSVRT_TCP_DROP_BACKLOG]) and the peer retries.  Returns the
 * listener's id, -EADDRINUSE, -EINVAL or -ENOMEM (table full). */
int32_t osvrt_tcp_listen(struct osvrt_tcp_stack *s, uint32_t port, uint32_t backlog);

/* Take the oldest established connection from a listener.  Events of a
 * connection are not posted before accept(); accept() posts ESTABLISHED |
 * WRITABLE, plus READABLE / CLOSED / RESET for what already happened (data,
 * FIN, reset while it waited in the queue).  Returns its id
 * (the remote end in *raddr and *rport when not NULL), -EAGAIN when none,
 * -EBADF/-EINVAL (not a listener). */
int32_t osvrt_tcp_accept(struct osvrt_tcp_stack *s, int32_t lid, uint32_t *raddr, uint16_t *rport);

/* Open a connection to raddr:rport (host order) from lport (0: an
 * ephemeral port 49152..65535 chosen by a keyed hash).  Sends a SYN
 * (via output()); EV_ESTABLISHED or EV_ERROR (-ECONNREFUSED, -ETIMEDOUT)
 * follows.  Returns the id, -EADDRINUSE (that 4-tuple is taken, or no
 * ephemeral port is free), -EINVAL (port or address 0), -ENOMEM. */
int32_t osvrt_tcp_connect(struct osvrt_tcp_stack *s, uint32_t raddr, uint32_t rport, uint32_t lport,
                          int64_t now_ns);

/* Copy up to len bytes into the send buffer.  Returns the count taken
 * (> 0, possibly < len), -EAGAIN when the buffer is full (EV_WRITABLE
 * follows), -ENOTCONN (SYN_SENT/SYN_RECEIVED: nothing taken yet; wait for
 * EV_ESTABLISHED), -EPIPE after shutdown_write, the connection's error
 * (-ECONNRESET, -ETIMEDOUT), -EBADF.  len 0 returns 0. */
int64_t osvrt_tcp_send(struct osvrt_tcp_stack *s, int32_t id, const uint8_t *buf, uint64_t len,
                       int64_t now_ns);

/* Copy up to cap bytes of in-order received data into buf.  Returns the
 * count (> 0) while data is buffered (even after a reset); then the
 * connection's error if it has one (-ECONNRESET, -ETIMEDOUT,
 * -ECONNREFUSED), else 0 at EOF (the peer's FIN), else -EAGAIN (nothing
 * yet; EV_READABLE follows) or -ENOTCONN (not yet established); -EBADF.
 * Freeing buffer space may queue a window update for output(). */
int64_t osvrt_tcp_recv(struct osvrt_tcp_stack *s, int32_t id, uint8_t *buf, uint64_t cap,
                       int64_t now_ns);

/* Half-close: a FIN follows the buffered data; recv keeps working.
 * Returns 0, -ENOTCONN (never established), -EBADF.  Twice is fine. */
int osvrt_tcp_shutdown_write(struct osvrt_tcp_stack *s, int32_t id, int64_t now_ns);

/* Release the id.  A connection: shutdown_write, then the close finishes in
 * the background (FIN_WAIT, TIME_WAIT) as an orphan; if received data was
 * left unread, a RST is sent instead (RFC 9293 3.10.4, RFC 2525), and new
 * data arriving for the orphan is answered with a RST too.  A
 * listener: stops listening and resets the connections not yet accepted.
 * Returns 0 or -EBADF. */
int osvrt_tcp_close(struct osvrt_tcp_stack *s, int32_t id, int64_t now_ns);

/* Release the id at once, sending a RST if the connection was
 * synchronized.  Returns 0 or -EBADF. */
int osvrt_tcp_abort(struct osvrt_tcp_stack *s, int32_t id, int64_t now_ns);

/* Abort every connection, orphans and unaccepted ones included, as abort()
 * does (a RST to each synchronized peer), then free the listeners: what a
 * stack that closes does, so that no peer keeps a connection that no longer
 * exists here.  The RSTs wait in the control ring for output(); when it is
 * full, the connections still owed one are left: returns how many, 0 once
 * none is left (call it again after output() drained the ring).  Every id
 * is invalid once it returns 0. */
int32_t osvrt_tcp_abort_all(struct osvrt_tcp_stack *s, int64_t now_ns);

/* The state (enum osvrt_tcp_state) or -EBADF. */
int osvrt_tcp_state(const struct osvrt_tcp_stack *s, int32_t id);

/* Fill *out; returns 0 or -EBADF. */
int osvrt_tcp_conn_info(const struct osvrt_tcp_stack *s, int32_t id, struct osvrt_tcp_conn_info *out);

/* Copy the counters (conns[] computed now). */
void osvrt_tcp_get_stats(const struct osvrt_tcp_stack *s, struct osvrt_tcp_stats *out);

/* Names for stats keys: "ESTABLISHED", ...; "bad_checksum", ...  NULL when out of range. */
const char *osvrt_tcp_state_name(int state);
const char *osvrt_tcp_drop_name(int reason);

#endif
