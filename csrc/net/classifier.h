/* classifier.h - the net classifier: a pthread (no GIL, never calls Python)
 * that reads every frame an interface receives from AF_PACKET sockets'
 * memory-mapped rings, sorts the packets into per-flow net channels
 * (channel.h), and wakes each flow's green thread once per burst through the
 * wake protocol (runtime.h).
 *
 * Each socket: a TPACKET_V2 ring (per-frame hand-over; V3 hands over blocks on
 * a timer that costs milliseconds), PACKET_IGNORE_OUTGOING (lo would
 * otherwise show every packet twice), PACKET_VNET_HDR (a GSO super-packet
 * comes with its segment size, and is split here into the datagrams the
 * sender meant).  After a burst the thread polls the ring for an adaptive
 * window (twice the typical gap between recent bursts, at most spin_ns; none
 * when traffic is sparser than that), yielding its CPU between looks when
 * spin_yield is set, then sleeps in poll() (with an eventfd to stop it).
 *
 * Frames: two rings (packet_ring.h), each of ring_frames frames: one of
 * small_frame_size-byte slots for the frames that fit one (its socket's
 * filter lets in no longer frame), one of frame_size-byte slots for the rest
 * (its filter lets in no shorter one); by default 8192 x 512 B and 8192 x
 * 2 KiB: a burst of thousands of datagrams of any size up to the MTU fits.
 * Small-packet traffic walks 4 MiB of ring instead of 16, which its
 * throughput feels; the two rings' frames are taken in arrival order.
 * small_frame_size >= frame_size: one ring.  A packet too big for a
 * frame (lo's MTU is 64 KiB; a GSO super-packet) is cut by the kernel; with
 * PACKET_COPY_THRESH the kernel also queues the whole packet on the socket
 * and marks the frame TP_STATUS_COPY, and the classifier reads it from there
 * (counted as `copied`).  A cut frame without that copy (the socket's
 * receive buffer was full) is dropped and counted as `truncated`.
 *
 * A burst: up to `burst` frames are taken from the ring inside one flow-table
 * read section; each packet is parsed (packet.h), looked up (flow_table.h),
 * passed to the flow's rule if it has one (a C callback, e.g. a numba cfunc:
 * it picks the lane), and copied into the lane's channel (the ring frame is
 * handed back at once).  At the end of the burst every channel that got
 * packets publishes them (one release store) and, after one seq_cst fence,
 * its waiter is woken with osvrt_wake: one wake per channel per burst.
 *
 * Drops are counted per reason: malformed (and per parse verdict), no flow,
 * too big (cut by the ring frame, or larger than the channel's arena),
 * channel full, rule (the rule refused it), and the kernel's own ring drops
 * (PACKET_STATISTICS).  Nothing malformed ever stops the thread.
 *
 * Threads: the classifier thread is the only producer of every channel and
 * the only flow-table reader.  Flows are added and removed by any thread
 * (the green threads, through cffi); a removed flow's memory lives on until
 * both the table (after the epoch grace period) and its owner let go.
 * Without a socket (ifname NULL) the same processing is driven by the caller
 * through osvrt_net_rx_begin/frame/end: tests, the fuzz target, benchmarks.
 */
#ifndef OSVRT_CLASSIFIER_H
#define OSVRT_CLASSIFIER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "channel.h"
#include "flow_table.h"
#include "packet.h"
#include "packet_ring.h"

struct osvrt_rt;

#define OSVRT_NET_MAX_LANES 64
#define OSVRT_NET_NREASONS 24          /* >= OSVRT_PKT_NVERDICTS */
_Static_assert(OSVRT_PKT_NVERDICTS <= OSVRT_NET_NREASONS, "malformed[] too small");
#define OSVRT_NET_MAX_RINGS 2
#define OSVRT_NET_TOUCH_MAX 256        /* channels touched before a mid-burst flush */

/* A flow's rule: called per datagram (per TCP segment) by the classifier
 * thread, without the GIL.  data/len: the UDP (TCP) payload; saddr network
 * order, sport host order.  Returns the lane (0..nlanes-1), or < 0 to drop. */
typedef int32_t (*osvrt_rule_fn)(const uint8_t *data, uint32_t len, uint32_t saddr, uint32_t sport);

#define OSVRT_NET_HANDOVER_NOW 2
#define OSVRT_NET_HANDOVER_CYCLE 3

struct osvrt_net_config {
    const char *ifname;     /* interface to read ("lo"); NULL: no socket */
    uint32_t ring_frames;   /* ring frames (0: 8192) */
    uint32_t frame_size;    /* bytes per ring frame (0: 2048; larger packets: see above) */
    uint32_t buckets;       /* flow-table buckets (0: 1024) */
    uint32_t burst;         /* frames per burst (0: 64) */
    int64_t spin_ns;        /* longest adaptive poll window after a burst (< 0: 50 us; 0: never) */
    int32_t cpu;            /* pin the thread to this CPU; -1: not pinned */
    uint32_t prefilter;     /* 1: kernel-side filter, see below */
    uint32_t spin_yield;    /* 1: sched_yield() between polls (runnable threads of the CPU go first) */
    uint64_t cpu_mask;      /* pin the thread to these CPUs (bit i: CPU i) when cpu < 0; 0: not pinned */
    uint32_t handover;      /* the thread may hand the ring to the workers: 1 when it stops
                             * paying (classifier.c, hand_over); OSVRT_NET_HANDOVER_NOW: after
                             * its first 64 bursts, whatever they were, for good (for tests);
                             * OSVRT_NET_HANDOVER_CYCLE: the same, and the workers give it
                             * back after each 64 bursts of theirs (for tests) */
    uint32_t small_frame_size;  /* bytes per frame of the small-frame ring (0: 512; at least
                                 * frame_size: no such ring, one ring for every frame) */
};

/* The prefilter (cfg.prefilter = 1): a classic BPF program on the packet
 * socket, rebuilt whenever a flow is added or removed, that keeps out of the
 * ring every well-formed IPv4 UDP/TCP packet whose destination port has no
 * flow.  Other traffic on the interface (replies to clients, other programs'
 * TCP) then costs the kernel one filter run instead of a copy into the ring
 * and a wake-up of the classifier.  Everything else is let in and judged by
 * the parser: other EtherTypes and protocols (counted as ignored), fragments,
 * frames too short for their headers (counted as malformed).  Packets kept
 * out are counted nowhere (the kernel delivers them as usual).  More than
 * OSVRT_NET_FILTER_MAX_PORTS ports: everything is let in. */
#define OSVRT_NET_FILTER_MAX_PORTS 2000

struct osvrt_net_stats {
    uint64_t frames;            /* frames read from the ring (or fed) */
    uint64_t packets;           /* IPv4 UDP/TCP packets, a GSO super-packet counted per datagram */
    uint64_t received;          /* packets posted into channels */
    uint64_t ignored;           /* not IPv4 UDP/TCP for this host: the kernel's business */
    uint64_t dropped_malformed;
    uint64_t dropped_no_flow;
    uint64_t dropped_too_big;
    uint64_t dropped_channel_full;
    uint64_t dropped_rule;
    uint64_t dropped_ring;      /* the kernel's ring drops (PACKET_STATISTICS tp_drops) */
    uint64_t wakes;             /* osvrt_wake calls that woke a thread */
    uint64_t bursts;
    uint64_t sleeps;            /* times the thread went to sleep in poll() */
    uint64_t gso_packets;       /* super-packets split */
    uint64_t malformed[OSVRT_NET_NREASONS];   /* by osvrt_pkt_verdict */
    uint64_t dropped_truncated; /* cut by the ring frame, and no whole copy to read */
    uint64_t copied;            /* too big for a frame: read whole from the socket (TP_STATUS_COPY) */
    uint64_t spin_hits;         /* polls that found a frame (a sleep saved) */
    uint64_t link_errors;       /* errors the packet sockets reported (ENETDOWN: the link went down) */
    uint64_t last_link_errno;   /* the latest of them */
};

struct osvrt_flow_stats {
    uint64_t received;
    uint64_t dropped_channel_full;
    uint64_t dropped_too_big;
    uint64_t dropped_rule;
    uint64_t wakes;
    uint64_t queued;            /* published, not yet consumed */
    uint64_t dropped_truncated; /* cut by the ring frame (no whole copy) */
};

struct osvrt_flow {
    struct osvrt_ft_node node;          /* first */
    _Atomic uint32_t refs;              /* the table's and the owner's */
    uint32_t nlanes;
    osvrt_rule_fn rule;
    _Atomic uint64_t dropped_rule;      /* classifier-written */
    _Atomic uint64_t dropped_truncated; /* cut by the ring frame */
    struct osvrt_chan *lanes[];         /* nlanes channels */
};

struct osvrt_net {
    struct osvrt_rt *rt;                /* a reference of its own (osvrt_rt_retain), or NULL */
    struct osvrt_flow_table table;
    int reader;                         /* the classifier's flow-table reader slot */
    struct osvrt_net_config cfg;
    /* the sockets and their rings (packet_ring.h): rings[0] takes the
     * frames of up to small_max bytes when there are two, rings[1] the rest */
    struct osvrt_pkt_ring rings[OSVRT_NET_MAX_RINGS];
    /* Both set by osvrt_net_new and cleared by close_rings, while no worker
     * is attached and no thread runs: the workers read them without a lock. */
    uint32_t nrings;                        /* 0 without a socket */
    uint32_t small_max;                     /* 0 with one ring */
    int stop_fd;
    /* the prefilter: flows per destination port (under filter_lock) */
    pthread_mutex_t filter_lock;
    uint32_t *port_refs;                    /* 65536 entries, NULL without a prefilter */
    uint32_t filter_ports;                  /* ports in the filter now */
    /* the workers that drain the ring instead of the thread (rx_workers.h):
     * set by osvrt_net_start_workers, or by the classifier's thread at its
     * first hand-over (kept until it is joined); freed by osvrt_net_stop */
    struct osvrt_net_workers *workers;
    /* the thread */
    pthread_t thread;
    int started;
    _Atomic int stop;
    /* 1 while the workers drain the ring for the thread (cfg.handover): set
     * with release after the thread's last touch of the ring and of `workers`
     * before the hand-over, so whoever reads 1 with acquire may read
     * `workers`; 0 again (release) once the thread took the ring back. */
    _Atomic int handed_over;
    /* 1: the workers asked the thread to take the ring back (rx_workers.h);
     * set by the drain lock's holder, cleared by the thread */
    _Atomic int give_back;
    /* hand-overs and hand-backs so far: the thread is their only writer,
     * with release increments, each after the handed_over store it counts
     * (and handovers after `workers` is written) */
    _Atomic uint64_t handovers, handbacks;
    /* burst state (producer only) */
    uint64_t burst_seq;
    /* the CPU whose threads this burst woke: -1 none yet, -2 several CPUs */
    int32_t woke_cpu;
    uint32_t ntouched;
    struct osvrt_chan *touched[OSVRT_NET_TOUCH_MAX];
    /* a whole packet too big for a ring frame (TP_STATUS_COPY), read here */
    uint8_t *big;
    uint32_t big_size;
    /* counters: written by the producer alone (dropped_ring: fetch_add) */
    _Atomic uint64_t dropped_truncated, copied, spin_hits, link_errors, last_link_errno;
    _Atomic uint64_t frames, packets, received, ignored, dropped_malformed, dropped_no_flow,
        dropped_too_big, dropped_channel_full, dropped_rule, dropped_ring, wakes, bursts,
        sleeps, gso_packets;
    _Atomic uint64_t malformed[OSVRT_NET_NREASONS];
};

/* A classifier for rt (whose threads it wakes).  With cfg->ifname, opens the
 * AF_PACKET sockets and maps their rings (needs CAP_NET_RAW: *err = EPERM).
 * NULL with *err set (EPERM, ENODEV: no such interface, EINVAL, ENOMEM...). */
struct osvrt_net *osvrt_net_new(struct osvrt_rt *rt, const struct osvrt_net_config *cfg, int *err);
/* Start the thread (a socket is needed).  0 or an errno value. */
int osvrt_net_start(struct osvrt_net *net);
/* Stop and join the thread, then detach the workers; idempotent. */
void osvrt_net_stop(struct osvrt_net *net);
/* 1 while the workers drain the ring for the thread (acquire). */
int osvrt_net_handed_over(struct osvrt_net *net);
/* Hand-overs so far (acquire: `workers` is readable when > 0). */
uint64_t osvrt_net_handovers(struct osvrt_net *net);
/* The workers ask the thread to take the ring back (the drain lock held);
 * the first ask wakes it, until it has taken the ring back. */
void osvrt_net_ask_back(struct osvrt_net *net);
/* Stop, then give back the packet sockets and their rings (the large part); the
 * flows and the counters stay readable until osvrt_net_free.  Not concurrent
 * with osvrt_net_get_stats (the caller serializes them). */
void osvrt_net_release(struct osvrt_net *net);
/* Stop, close, and drop the table's reference to every flow. */
void osvrt_net_free(struct osvrt_net *net);

/* A new flow with nlanes channels of `capacity` slots and `arena` bytes each.
 * Two references: the table's and the caller's (osvrt_flow_put).
 * NULL with *err: EEXIST (key taken), EINVAL (a bad size), ENOMEM. */
struct osvrt_flow *osvrt_net_flow_add(struct osvrt_net *net, const struct osvrt_flow_key *key,
                                      uint32_t nlanes, uint32_t capacity, uint32_t arena,
                                      osvrt_rule_fn rule, int *err);
/* Stop classifying into the flow (0, or ENOENT if already removed). */
int osvrt_net_flow_remove(struct osvrt_net *net, struct osvrt_flow *f);
/* Drop the caller's reference; the flow is freed when the table's is gone too. */
void osvrt_flow_put(struct osvrt_flow *f);
struct osvrt_chan *osvrt_flow_lane(struct osvrt_flow *f, uint32_t lane);

void osvrt_net_get_stats(struct osvrt_net *net, struct osvrt_net_stats *out);
/* A packet socket polled readable with an error (POLLERR/EPOLLERR, e.g.
 * ENETDOWN when the link went down): read it, which clears it (else every
 * poll returns at once), and count it.  The producer's thread calls it. */
void osvrt_net_take_error(struct osvrt_net *net);
void osvrt_flow_get_stats(struct osvrt_flow *f, struct osvrt_flow_stats *out);

/* Attach a one-instruction classic BPF filter, `ret #0`, to a socket: it
 * keeps nothing.  Attached to a UDP socket before bind, it makes the socket
 * a port reservation: the kernel delivers nothing to it, answers no ICMP
 * port-unreachable, and lets nobody else bind the port.  0 or an errno. */
int osvrt_attach_drop_all(int fd);

/* The ring's frames, read by whoever is the producer (one at a time: the
 * classifier thread, or a worker holding rx_workers.h's drain lock). */
/* 1 if a ring's next frame is the user's (a look at memory: no syscall). */
int osvrt_net_ring_pending(struct osvrt_net *net);
/* Handle up to cfg.burst frames in one burst (begin, frames, end: one wake
 * per touched channel).  Returns the frames taken. */
uint32_t osvrt_net_ring_burst(struct osvrt_net *net);
/* The packet sockets (each readable when its ring has frames) into fds:
 * how many (0 without a socket, else 1 or OSVRT_NET_MAX_RINGS). */
uint32_t osvrt_net_ring_fds(struct osvrt_net *net, int fds[OSVRT_NET_MAX_RINGS]);

/* One ring's shape and use, for stats (osvrt_net_get_ring_stats). */
struct osvrt_net_ring_stats {
    uint32_t frame_size, frames;
    uint32_t max_frame;         /* the longest frame (Ethernet header included) it takes uncut */
    uint64_t taken;             /* frames read from it */
};
/* The rings' stats into out (room for OSVRT_NET_MAX_RINGS): how many rings
 * (0 without a socket, or after osvrt_net_release; the caller serializes the
 * two). */
uint32_t osvrt_net_get_ring_stats(struct osvrt_net *net, struct osvrt_net_ring_stats *out);

/* Socket-less driving (tests, fuzzing, benchmarks), from one thread at a
 * time and never while the classifier thread runs. */
void osvrt_net_rx_begin(struct osvrt_net *net);
/* One frame: `len` bytes present of `wire_len`; status: TP_STATUS_* bits
 * (TP_STATUS_CSUMNOTREADY / TP_STATUS_CSUM_VALID trust the L4 checksum);
 * vnet: the virtio-net header or NULL.  Returns the parse verdict. */
int osvrt_net_rx_frame(struct osvrt_net *net, const uint8_t *frame, uint32_t len,
                       uint32_t wire_len, uint32_t status, const struct osvrt_vnet_hdr *vnet);
/* Publish what the burst posted and wake the waiters.  Returns the wakes. */
uint32_t osvrt_net_rx_end(struct osvrt_net *net);

#endif
