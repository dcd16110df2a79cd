"""cffi build script: the out-of-line API-mode module osvrt._core over csrc/.

The cdef declares only what Python uses.  Python reads the words on its hot
path (a CPU's incoming head, the tracepoint semaphores) as plain memory, with
no call: every cffi call releases the GIL, and while another worker runs
Python that release costs tens of microseconds (README.md and docs/design.md, "The GIL").
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.normpath(os.path.join(HERE, "..", "csrc"))
# csrc/core: the scheduler's C core; csrc/net: net channels (osvrt/net/).
# The benchmarks' C peers (csrc/bench/) are their own module, osvrt.bench._peers
# (osvrt/bench/_build_peers.py).
SOURCES = ["core/" + s for s in ("core_api.c", "cpu.c", "pin.c", "thread_table.c", "trace.c",
                                 "runtime.c")]
SOURCES += ["net/" + s for s in ("channel.c", "classifier.c", "flow_table.c", "packet.c",
                                "rx_workers.c")]
# csrc/net/tcp: the sans-I/O TCP engine that osvrt/net/tcp/ drives (tcp.h).
SOURCES += ["net/tcp/" + s for s in ("tcp.c", "tcp_seg.c", "tcp_link.c")]
INCLUDE_DIRS = [os.path.join(CSRC, d) for d in ("core", "net", "net/tcp")]
# -g and frame pointers: perf record -g walks and names the frames of _core
# (the default x86-64 -O2 omits the frame pointer, and a perf without DWARF
# unwinding then loses the caller of every C function).  -Werror: as the engine.
CFLAGS = ["-std=gnu11", "-O2", "-g", "-fno-omit-frame-pointer", "-Wall", "-Werror",
          "-Wno-unused-function"]

CDEF = """

enum osvrt_state {
    OSVRT_FREE = 0, OSVRT_UNSTARTED = 1, OSVRT_WAITING = 2, OSVRT_WAKING = 3,
    OSVRT_QUEUED = 4, OSVRT_RUNNING = 5, OSVRT_TERMINATED = 6,
};
#define OSVRT_KEY_TAG ...
#define OSVRT_KEY_CWAKE ...

struct osvrt_cpu_stats {
    uint64_t kicks_sent, kicks_skipped, pushes, drained, idle_ns, idle_calls, sleeps, io_events;
};
struct osvrt_rt { uint32_t ncpu; ...; };
struct osvrt_thread_table;
struct osvrt_core_api;

struct osvrt_rt *osvrt_rt_new(uint32_t ncpu);
void osvrt_rt_free(struct osvrt_rt *rt);
uint32_t osvrt_table_alloc(struct osvrt_thread_table *t, uint32_t cpu, uint64_t *out, uint32_t n);
uint32_t osvrt_table_free(struct osvrt_thread_table *t, const uint64_t *h, uint32_t n);
struct osvrt_thread_table *osvrt_rt_table(struct osvrt_rt *rt);

int osvrt_wait_prepare(struct osvrt_rt *rt, uint64_t h, uint32_t cpu);
int osvrt_wait_abort(struct osvrt_rt *rt, uint64_t h);
int osvrt_wake(struct osvrt_rt *rt, uint64_t h);
int osvrt_ready(struct osvrt_rt *rt, uint64_t h, uint32_t cpu);
uint32_t osvrt_drain(struct osvrt_rt *rt, uint32_t cpu, uint64_t *out, uint32_t max);
int osvrt_set_state(struct osvrt_rt *rt, uint64_t h, uint32_t state);
uint32_t osvrt_get_state(struct osvrt_rt *rt, uint64_t h);

int osvrt_rt_idle(struct osvrt_rt *rt, uint32_t cpu, int64_t timeout_ns, int64_t spin_ns,
                  uint32_t seq, int64_t gil_wait_ns);
const uint32_t *osvrt_kick_word(struct osvrt_rt *rt, uint32_t cpu);
const uint32_t *osvrt_idle_word(struct osvrt_rt *rt, uint32_t cpu);
const uint64_t *osvrt_pushes_word(struct osvrt_rt *rt, uint32_t cpu);
const uint64_t *osvrt_drained_word(struct osvrt_rt *rt, uint32_t cpu);
void osvrt_rt_kick(struct osvrt_rt *rt, uint32_t cpu);
void osvrt_rt_cpu_stats(struct osvrt_rt *rt, uint32_t cpu, struct osvrt_cpu_stats *out);
const uintptr_t *osvrt_incoming_word(struct osvrt_rt *rt, uint32_t cpu);
int osvrt_pin_self(int cpu);
const struct osvrt_core_api *osvrt_core_api(void);   /* the engine's table (core_api.h) */
int osvrt_current_cpu(void);
int64_t osvrt_now_ns(void);

extern unsigned short osvrt_switch_semaphore;
extern unsigned short osvrt_spawn_semaphore;
extern unsigned short osvrt_exit_semaphore;
extern unsigned short osvrt_migrate_semaphore;
void osvrt_trace_switch(uint32_t cpu, uint64_t from_id, uint64_t to_id);
void osvrt_trace_spawn(uint32_t cpu, uint64_t id);
void osvrt_trace_exit(uint32_t cpu, uint64_t id);
void osvrt_trace_migrate(uint64_t id, uint32_t from_cpu, uint32_t to_cpu);

"""

# ---- the stats file's layout (csrc/core/worker_stats.h) ----
# Declared with `...` so that cffi takes the sizes and the plain fields'
# offsets from the header itself; observe/statsfile.py checks its struct
# formats against them (and the atomic fields' offsets, from the glue below).
CDEF += """
#define OSVRT_STATS_MAGIC ...
#define OSVRT_STATS_VERSION ...
struct osvrt_stats_header { uint64_t magic; uint32_t version; uint32_t ncpu; uint64_t pid;
                            uint64_t slot_size; uint64_t threads_offset; uint64_t start_time;
                            uint64_t pid_ns; ...; };
struct osvrt_worker_stats { ...; };
extern const size_t osvrt_stats_offsets[12];
extern const char *const osvrt_stats_names[11];
"""

# ---- net channels (csrc/net/classifier.h, channel.h, packet.h; osvrt/net/) ----
# A plain view of a channel's words: declared for cffi and defined in the glue.
CHAN_VIEW = """
struct osvrt_chan_view {
    uint64_t *head; uint64_t *tail; uint64_t *waiter; void *slots; uint8_t *arena;
    uint32_t capacity; uint32_t arena_size; uint32_t slot_size;
    void *chan;    /* the struct osvrt_chan itself, for the engine's ChanRx */
};
"""

# Python reads a channel through the engine's ChanRx (the view gives it the
# channel's address) and stores its waiter word as plain memory; it calls C
# through cffi only to add/remove flows and for stats.
CDEF += """
typedef int32_t (*osvrt_rule_fn)(const uint8_t *data, uint32_t len, uint32_t saddr, uint32_t sport);
#define OSVRT_NET_MAX_LANES ...
#define OSVRT_NET_MAX_RINGS ...
#define OSVRT_NET_NREASONS ...
#define OSVRT_PKT_NVERDICTS ...
#define OSVRT_CHAN_MAX_CAPACITY ...
#define OSVRT_CHAN_MAX_ARENA ...
#define OSVRT_CHAN_WAITER ...
struct osvrt_net_config {
    const char *ifname; uint32_t ring_frames; uint32_t frame_size; uint32_t buckets;
    uint32_t burst; int64_t spin_ns; int32_t cpu; uint32_t prefilter;
    uint32_t spin_yield; uint64_t cpu_mask; uint32_t handover; uint32_t small_frame_size;
};
struct osvrt_net_stats {
    uint64_t frames, packets, received, ignored, dropped_malformed, dropped_no_flow,
             dropped_too_big, dropped_channel_full, dropped_rule, dropped_ring, wakes, bursts,
             sleeps, gso_packets;
    uint64_t malformed[24];
    uint64_t dropped_truncated, copied, spin_hits, link_errors, last_link_errno;
};
struct osvrt_flow_stats {
    uint64_t received, dropped_channel_full, dropped_too_big, dropped_rule, wakes, queued;
    uint64_t dropped_truncated;
};
""" + CHAN_VIEW + """
struct osvrt_net;
struct osvrt_flow;

struct osvrt_net *osvrt_net_new(struct osvrt_rt *rt, const struct osvrt_net_config *cfg, int *err);
int osvrt_net_start(struct osvrt_net *net);
int osvrt_net_start_workers(struct osvrt_net *net);
void osvrt_net_stop_workers(struct osvrt_net *net);
struct osvrt_net_workers_stats { uint64_t contended; uint64_t rehomed; uint64_t handovers; uint64_t handbacks; };
void osvrt_net_workers_get_stats(struct osvrt_net *net, struct osvrt_net_workers_stats *out);
uint64_t osvrt_rt_rx_frames(struct osvrt_rt *rt, uint32_t cpu);
void osvrt_net_stop(struct osvrt_net *net);
int osvrt_net_handed_over(struct osvrt_net *net);
void osvrt_net_release(struct osvrt_net *net);
void osvrt_net_free(struct osvrt_net *net);
struct osvrt_flow *osvrt_net_flow_add4(struct osvrt_net *net, uint8_t proto, uint32_t daddr,
                                       uint16_t dport, uint32_t saddr, uint16_t sport,
                                       uint32_t nlanes, uint32_t capacity, uint32_t arena,
                                       osvrt_rule_fn rule, int *err);
int osvrt_net_flow_remove(struct osvrt_net *net, struct osvrt_flow *f);
void osvrt_flow_put(struct osvrt_flow *f);
int osvrt_flow_view(struct osvrt_flow *f, uint32_t lane, struct osvrt_chan_view *out);
void osvrt_net_get_stats(struct osvrt_net *net, struct osvrt_net_stats *out);
struct osvrt_net_ring_stats { uint32_t frame_size, frames, max_frame; uint64_t taken; };
uint32_t osvrt_net_get_ring_stats(struct osvrt_net *net, struct osvrt_net_ring_stats *out);
void osvrt_flow_get_stats(struct osvrt_flow *f, struct osvrt_flow_stats *out);
const char *osvrt_pkt_verdict_name(int verdict);
int osvrt_attach_drop_all(int fd);

"""

# ---- the TCP engine (csrc/net/tcp/tcp.h; driven by osvrt/net/tcp/) ----
# Every call is plain C on the caller's thread (the stack's owning worker);
# the structs are declared field by field so Python can fill and read them.
CDEF += """
#define OSVRT_TCP_MAX_CONNS ...
#define OSVRT_TCP_MAX_HOLES ...
#define OSVRT_TCP_MIN_OUT ...
#define OSVRT_TCP_IN_CSUM_OK ...
#define OSVRT_TCP_EV_READABLE ...
#define OSVRT_TCP_EV_WRITABLE ...
#define OSVRT_TCP_EV_ESTABLISHED ...
#define OSVRT_TCP_EV_ACCEPTABLE ...
#define OSVRT_TCP_EV_CLOSED ...
#define OSVRT_TCP_EV_RESET ...
#define OSVRT_TCP_EV_ERROR ...
enum osvrt_tcp_state {
    OSVRT_TCP_CLOSED, OSVRT_TCP_LISTEN, OSVRT_TCP_SYN_SENT, OSVRT_TCP_SYN_RECEIVED,
    OSVRT_TCP_ESTABLISHED, OSVRT_TCP_FIN_WAIT_1, OSVRT_TCP_FIN_WAIT_2, OSVRT_TCP_CLOSE_WAIT,
    OSVRT_TCP_CLOSING, OSVRT_TCP_LAST_ACK, OSVRT_TCP_TIME_WAIT, OSVRT_TCP_NSTATES
};
enum osvrt_tcp_drop {
    OSVRT_TCP_DROP_NONE, OSVRT_TCP_DROP_NOT_TCP, OSVRT_TCP_DROP_BAD_IP, OSVRT_TCP_DROP_FRAGMENT,
    OSVRT_TCP_DROP_BAD_IP_CSUM, OSVRT_TCP_DROP_NOT_OURS, OSVRT_TCP_DROP_TRUNC_TCP,
    OSVRT_TCP_DROP_BAD_OFFSET, OSVRT_TCP_DROP_BAD_OPTIONS, OSVRT_TCP_DROP_BAD_CSUM,
    OSVRT_TCP_DROP_BAD_FLAGS, OSVRT_TCP_DROP_NO_CONN, OSVRT_TCP_DROP_BACKLOG,
    OSVRT_TCP_DROP_OUT_OF_WINDOW, OSVRT_TCP_DROP_BAD_ACK, OSVRT_TCP_DROP_RST_INVALID,
    OSVRT_TCP_DROP_NO_ROOM, OSVRT_TCP_DROP_STALE_ID, OSVRT_TCP_NDROPS
};
struct osvrt_tcp_config {
    uint32_t addr; uint32_t mss; uint32_t sndbuf; uint32_t rcvbuf; uint32_t max_conns;
    uint32_t syn_retries; uint32_t max_retries; uint32_t keepalive_probes;
    int64_t rto_initial_ns; int64_t rto_min_ns; int64_t rto_max_ns; int64_t delack_ns;
    int64_t time_wait_ns; int64_t keepalive_ns; uint64_t isn_key[2];
};
struct osvrt_tcp_stats {
    uint64_t segs_in, segs_out, bytes_in, bytes_out, retransmits, rto_expiries,
             fast_retransmits, dup_acks, ooo_segments, dup_segments, zero_window_probes,
             keepalive_probes, delayed_acks, challenge_acks, rsts_in, rsts_out, active_opens,
             passive_opens, accepts, timeouts, ctl_overflow;
    uint64_t drops[18];
    uint64_t conns[11];
};
struct osvrt_tcp_event { int32_t id; uint32_t flags; };
struct osvrt_tcp_conn_info {
    uint32_t state; uint32_t local_addr, remote_addr; uint16_t local_port, remote_port;
    int32_t error; uint32_t readable; uint32_t send_space; uint32_t unsent; uint32_t in_flight;
    uint32_t snd_mss; uint32_t snd_wnd; uint32_t rcv_wnd; uint32_t cwnd, ssthresh;
    uint8_t snd_wscale, rcv_wscale; uint8_t eof; uint8_t pad;
    int64_t srtt_ns, rttvar_ns, rto_ns; uint64_t retransmits;
};
struct osvrt_tcp_stack;

void osvrt_tcp_config_init(struct osvrt_tcp_config *cfg);
struct osvrt_tcp_stack *osvrt_tcp_new(const struct osvrt_tcp_config *cfg, int *err);
void osvrt_tcp_free(struct osvrt_tcp_stack *s);
int32_t osvrt_tcp_demux(struct osvrt_tcp_stack *s, const uint8_t *pkt, uint32_t len, uint32_t flags);
int osvrt_tcp_input_conn(struct osvrt_tcp_stack *s, int32_t id, const uint8_t *pkt, uint32_t len,
                         uint32_t flags, int64_t now_ns);
int osvrt_tcp_input(struct osvrt_tcp_stack *s, const uint8_t *pkt, uint32_t len, uint32_t flags,
                    int64_t now_ns);
int32_t osvrt_tcp_output(struct osvrt_tcp_stack *s, uint8_t *buf, uint32_t cap, int64_t now_ns);
int32_t osvrt_tcp_output_many(struct osvrt_tcp_stack *s, uint8_t *buf, uint32_t stride,
                              uint32_t *lens, uint32_t max, int64_t now_ns);
uint32_t osvrt_tcp_input_many(struct osvrt_tcp_stack *s, const uint8_t *base, const uint32_t *offs,
                              const uint32_t *lens, uint32_t n, uint32_t flags, int64_t now_ns,
                              uint8_t *results);
int osvrt_tcp_output_pending(const struct osvrt_tcp_stack *s);
int64_t osvrt_tcp_next_deadline(const struct osvrt_tcp_stack *s);
int osvrt_tcp_on_timer(struct osvrt_tcp_stack *s, int64_t now_ns);
uint32_t osvrt_tcp_events(struct osvrt_tcp_stack *s, struct osvrt_tcp_event *out, uint32_t max);
int32_t osvrt_tcp_listen(struct osvrt_tcp_stack *s, uint32_t port, uint32_t backlog);
int32_t osvrt_tcp_accept(struct osvrt_tcp_stack *s, int32_t lid, uint32_t *raddr, uint16_t *rport);
int32_t osvrt_tcp_connect(struct osvrt_tcp_stack *s, uint32_t raddr, uint32_t rport,
                          uint32_t lport, int64_t now_ns);
int64_t osvrt_tcp_send(struct osvrt_tcp_stack *s, int32_t id, const uint8_t *buf, uint64_t len,
                       int64_t now_ns);
int64_t osvrt_tcp_recv(struct osvrt_tcp_stack *s, int32_t id, uint8_t *buf, uint64_t cap,
                       int64_t now_ns);
int osvrt_tcp_shutdown_write(struct osvrt_tcp_stack *s, int32_t id, int64_t now_ns);
int osvrt_tcp_close(struct osvrt_tcp_stack *s, int32_t id, int64_t now_ns);
int osvrt_tcp_abort(struct osvrt_tcp_stack *s, int32_t id, int64_t now_ns);
int32_t osvrt_tcp_abort_all(struct osvrt_tcp_stack *s, int64_t now_ns);
int osvrt_tcp_state(const struct osvrt_tcp_stack *s, int32_t id);
int osvrt_tcp_conn_info(const struct osvrt_tcp_stack *s, int32_t id,
                        struct osvrt_tcp_conn_info *out);
void osvrt_tcp_get_stats(const struct osvrt_tcp_stack *s, struct osvrt_tcp_stats *out);
const char *osvrt_tcp_state_name(int state);
const char *osvrt_tcp_drop_name(int reason);
"""

# ---- the stack's link loop in C (csrc/net/tcp/tcp_link.h; osvrt/net/tcp/stack.py) ----
# One call moves a batch of frames both ways; Python reads what it must act
# on (frames that are not TCP, packets waiting for ARP, connections to wake)
# from the view, as plain memory.
CDEF += """
#define OSVRT_TCP_LINK_BATCH ...
#define OSVRT_TCP_LINK_EVENTS ...
#define OSVRT_TCP_LINK_FRAME ...
#define OSVRT_TCP_LINK_TODO_PASS ...
#define OSVRT_TCP_LINK_TODO_HANDED ...
#define OSVRT_TCP_LINK_TODO_HELD ...
#define OSVRT_TCP_LINK_TODO_EVENTS ...
#define OSVRT_TCP_LINK_TODO_MORE ...
#define OSVRT_TCP_LINK_TODO_ERROR ...
#define OSVRT_TCP_LINK_TODO_DEADLINE ...
struct osvrt_tcp_link_stats {
    uint64_t frames_in, frames_out, checksum_partial, segments_to_owner, segments_in_link,
             passed, inbox_full, eth_short, ethertype, ip_short, ip_protocol, tx_full,
             tx_errors, truncated;
};
struct osvrt_tcp_link_view {
    uint8_t *rx; uint32_t rx_stride; uint32_t npass; uint32_t *pass_index; uint32_t *pass_len;
    uint32_t *pass_flags; uint8_t *tx; uint32_t nheld; uint32_t *held_off; uint32_t *held_len;
    uint32_t nhanded; int32_t *handed; uint32_t nevents; struct osvrt_tcp_event *events;
    uint32_t more; int32_t error; int64_t next_deadline; uint16_t *waits; uint32_t nwaits;
    uint32_t todo; int64_t armed;
};
struct osvrt_tcp_link;
struct osvrt_tcp_link *osvrt_tcp_link_new(struct osvrt_tcp_stack *s, int fd, const uint8_t *mac,
                                          uint32_t max_conns, uint32_t stride, int *err);
void osvrt_tcp_link_free(struct osvrt_tcp_link *l);
void osvrt_tcp_link_close(struct osvrt_tcp_link *l);
struct osvrt_tcp_link_view *osvrt_tcp_link_view(struct osvrt_tcp_link *l);
void osvrt_tcp_link_set_peer(struct osvrt_tcp_link *l, uint32_t ip, const uint8_t *mac,
                             int64_t expires_ns);
int32_t osvrt_tcp_link_poll(struct osvrt_tcp_link *l, int64_t now_ns);
int osvrt_tcp_link_frame(struct osvrt_tcp_link *l, const uint8_t *frame, uint32_t n,
                         uint32_t flags, int64_t now_ns);
int32_t osvrt_tcp_link_flush(struct osvrt_tcp_link *l, int64_t now_ns);
int32_t osvrt_tcp_link_drain(struct osvrt_tcp_link *l, int32_t id, int64_t now_ns);
int64_t osvrt_tcp_link_recv(struct osvrt_tcp_link *l, int32_t id, uint8_t *buf, uint64_t cap,
                            int64_t now_ns);
int64_t osvrt_tcp_link_send(struct osvrt_tcp_link *l, int32_t id, const uint8_t *buf,
                            uint64_t len, int64_t now_ns);
void osvrt_tcp_link_discard(struct osvrt_tcp_link *l);
uint32_t osvrt_tcp_link_queued(const struct osvrt_tcp_link *l, int32_t id);
void osvrt_tcp_link_get_stats(const struct osvrt_tcp_link *l, struct osvrt_tcp_link_stats *out);
struct osvrt_tcp_link_api;
const struct osvrt_tcp_link_api *osvrt_tcp_link_api(void);   /* the engine's (tcp_link.h) */
"""

# Thin adapters kept out of the C core: they only re-shape arguments for cffi.
GLUE = """
#include "osvrt.h"
#include "core_api.h"
static struct osvrt_thread_table *osvrt_rt_table(struct osvrt_rt *rt) { return &rt->table; }
static int osvrt_rt_idle(struct osvrt_rt *rt, uint32_t cpu, int64_t t, int64_t spin,
                         uint32_t seq, int64_t gil_wait)
{ return osvrt_cpu_idle(&rt->cpus[cpu], t, spin, seq, &rt->active, gil_wait); }
static const uint32_t *osvrt_kick_word(struct osvrt_rt *rt, uint32_t cpu)
{ return (const uint32_t *)&rt->cpus[cpu].doorbell; }
static const uint32_t *osvrt_idle_word(struct osvrt_rt *rt, uint32_t cpu)
{ return (const uint32_t *)&rt->cpus[cpu].idle_state; }
static const uint64_t *osvrt_pushes_word(struct osvrt_rt *rt, uint32_t cpu)
{ return (const uint64_t *)&rt->cpus[cpu].pushes; }
static const uint64_t *osvrt_drained_word(struct osvrt_rt *rt, uint32_t cpu)
{ return (const uint64_t *)&rt->cpus[cpu].drained; }
static void osvrt_rt_kick(struct osvrt_rt *rt, uint32_t cpu) { osvrt_cpu_kick(&rt->cpus[cpu]); }
static void osvrt_rt_cpu_stats(struct osvrt_rt *rt, uint32_t cpu, struct osvrt_cpu_stats *o)
{ osvrt_cpu_get_stats(&rt->cpus[cpu], o); }
"""

# The offsets of the stats file's atomic fields (cffi cannot declare _Atomic):
# each worker-stats counter with its name, then the header's `alive`.
GLUE += """
#include <stddef.h>
#include "worker_stats.h"
#define OSVRT_STATS_FIELDS(X) X(switches) X(wakes_local) X(wakes_remote) X(migrations_in) \\
    X(migrations_out) X(stalls) X(spawned) X(idle_ns) X(runq_len) X(current_id) X(cpu)
#define OSVRT_STATS_OFF(n) offsetof(struct osvrt_worker_stats, n),
#define OSVRT_STATS_NAME(n) #n,
const size_t osvrt_stats_offsets[12] = {
    OSVRT_STATS_FIELDS(OSVRT_STATS_OFF) offsetof(struct osvrt_stats_header, alive)
};
const char *const osvrt_stats_names[11] = { OSVRT_STATS_FIELDS(OSVRT_STATS_NAME) };
"""

# net channels: a flow key from scalars, and a plain view of a channel's words.
GLUE += """
#include "classifier.h"
#include "rx_workers.h"
#include "tcp.h"
#include "tcp_link.h"
/* frames this CPU's worker took from the classifier's ring (rx_workers.h) */
static uint64_t osvrt_rt_rx_frames(struct osvrt_rt *rt, uint32_t cpu)
{ return atomic_load_explicit(&rt->cpus[cpu].rx_frames, memory_order_relaxed); }
""" + CHAN_VIEW + """
static struct osvrt_flow *osvrt_net_flow_add4(struct osvrt_net *net, uint8_t proto, uint32_t daddr,
                                              uint16_t dport, uint32_t saddr, uint16_t sport,
                                              uint32_t nlanes, uint32_t capacity, uint32_t arena,
                                              osvrt_rule_fn rule, int *err)
{
    struct osvrt_flow_key k = {.daddr = daddr, .saddr = saddr, .dport = dport, .sport = sport,
                               .proto = proto};
    return osvrt_net_flow_add(net, &k, nlanes, capacity, arena, rule, err);
}
static int osvrt_flow_view(struct osvrt_flow *f, uint32_t lane, struct osvrt_chan_view *v)
{
    struct osvrt_chan *c = osvrt_flow_lane(f, lane);
    if (!c)
        return 0;
    v->head = (uint64_t *)&c->head;
    v->tail = (uint64_t *)&c->tail;
    v->waiter = (uint64_t *)&c->waiter;
    v->slots = c->slots;
    v->arena = c->arena;
    v->capacity = c->capacity;
    v->arena_size = c->arena_size;
    v->slot_size = sizeof(struct osvrt_chan_slot);
    v->chan = c;
    return 1;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "osvrt._core",
    GLUE,
    sources=[os.path.relpath(os.path.join(CSRC, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(d) for d in INCLUDE_DIRS],
    extra_compile_args=CFLAGS,
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
