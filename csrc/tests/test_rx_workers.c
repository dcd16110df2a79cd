/* test_rx_workers.c - the classifier drained by the workers (rx_workers.h)
 * and the packet-source hook of a CPU (cpu.h, struct osvrt_cpu_rx).
 *
 * Without privileges: a source attached and detached while its CPU's owner
 * polls it in a loop (the detach must return only once the owner is out of
 * the hook: the source is freed right after, so ASan sees any late use and
 * TSan any unordered one); a watched fd ends the owner's sleep and is drained
 * in the core, never handed out as an fd event.
 * Live on lo (CAP_NET_RAW; exit 77 without it): three "workers" (threads
 * that own one CPU each and poll their hook, as the engine's loop does) drain
 * one ring at once while datagrams for two flows arrive: every datagram
 * reaches its channel once and in order (one producer at a time), the frames
 * the CPUs took add up to the classifier's, a thread waiting on another CPU
 * is woken there and the ring's home follows it, and stop detaches while the
 * pollers still run; the classifier's thread hands the ring to the workers
 * and takes it back, many times, with nothing lost or reordered. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "classifier.h"
#include "osvrt.h"
#include "rx_workers.h"

static struct osvrt_rt *rt;

/* ---- the hook, with a fake source ---- */

struct fake {
    struct osvrt_cpu_rx rx;
    uint64_t drains;      /* plain: written by the owner inside the hook only */
    int fd;               /* an eventfd standing for a packet socket, or -1 */
};

static int fake_pending(void *arg)
{
    struct fake *f = arg;
    if (f->fd < 0)
        return 1;
    uint64_t v;
    /* a peek would do; reading it back is the drain */
    ssize_t r = read(f->fd, &v, sizeof v);
    if (r == sizeof v) {
        f->drains += 1000000;          /* marks "drained from the fd" */
        return 1;
    }
    return 0;
}

static uint32_t fake_drain(void *arg, uint32_t cpu)
{
    (void)cpu;
    struct fake *f = arg;
    f->drains++;
    return 1;
}

static _Atomic int owner_stop;

static void *owner_loop(void *arg)
{
    struct osvrt_cpu *c = arg;
    while (!atomic_load(&owner_stop)) {
        if (osvrt_cpu_has_rx(c))
            osvrt_cpu_rx_poll(c);
        else
            sched_yield();
    }
    return NULL;
}

static void test_attach_detach_under_polling(void)
{
    struct osvrt_cpu *c = &rt->cpus[0];
    atomic_store(&owner_stop, 0);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, owner_loop, c), 0);
    int rounds = SCALED(300) + 10;
    uint64_t counted = atomic_load_explicit(&c->rx_frames, memory_order_relaxed), sum = 0;
    for (int i = 0; i < rounds; i++) {
        struct fake *f = calloc(1, sizeof *f);
        f->fd = -1;
        f->rx = (struct osvrt_cpu_rx){.pending = fake_pending, .drain = fake_drain, .arg = f};
        osvrt_cpu_rx_attach(c, &f->rx);
        /* let the owner in at least once, some rounds */
        for (int k = 0; k < 1000 && (i % 3 == 0)
                        && atomic_load_explicit(&c->rx_frames, memory_order_relaxed) <= counted; k++)
            sched_yield();
        osvrt_cpu_rx_detach(c);
        uint64_t now = atomic_load_explicit(&c->rx_frames, memory_order_relaxed);
        uint64_t d = f->drains;       /* ordered after the owner's writes by the detach */
        CHECK_EQ(d, now - counted);   /* each drain of f done and counted when detach returned */
        counted = now;
        sum += d;
        free(f);                      /* a late use by the owner: ASan reports it */
    }
    atomic_store(&owner_stop, 1);
    pthread_join(th, NULL);
    CHECK(sum > 0);                                   /* the owner did get in */
    CHECK(!osvrt_cpu_has_rx(c));
    CHECK_EQ(osvrt_cpu_rx_poll(c), 0);               /* nothing attached: nothing to do */
}

static void test_watch_ends_sleep(void)
{
    struct osvrt_cpu *c = &rt->cpus[1];
    struct fake f = {.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
    CHECK(f.fd >= 0);
    f.rx = (struct osvrt_cpu_rx){.pending = fake_pending, .drain = fake_drain, .arg = &f};
    osvrt_cpu_rx_attach(c, &f.rx);
    CHECK_EQ(osvrt_cpu_rx_watch(c, f.fd, 1), 0);
    CHECK_EQ(osvrt_cpu_rx_watch(c, f.fd, 1), EEXIST);
    uint64_t one = 1;
    CHECK_EQ(write(f.fd, &one, sizeof one), (ssize_t)sizeof one);
    /* No spin: the sleeping epoll_wait reports the fd, the core drains the
     * source and hands out no fd event.  (The drain made no work for this
     * CPU, so the idle goes on to its timeout: a frame for another CPU's
     * thread does not end this CPU's idle.) */
    struct epoll_event evs[4];
    int nev = -1;
    uint32_t seq = osvrt_cpu_kick_seq(c);
    int w = osvrt_cpu_idle_io(c, 200000000ll, 0, seq, NULL, 0, evs, 4, &nev);
    CHECK_EQ(w, 0);
    CHECK_EQ(nev, 0);
    CHECK(f.drains >= 1000001);                      /* pending saw the fd, drain ran */
    CHECK_EQ(osvrt_cpu_rx_watch(c, f.fd, 0), 0);
    CHECK_EQ(osvrt_cpu_rx_watch(c, f.fd, 0), ENOENT);
    osvrt_cpu_rx_detach(c);
    close(f.fd);
}

/* Frames that keep coming for other CPUs' threads (the drain makes no work
 * here) do not keep an idle CPU polling past its spin window: it goes to
 * sleep, and the idle ends at its timeout.  (Once, every drain restarted
 * the poll: an idle worker beside a flood spun as a classifier, and an idle
 * call with such a source never returned.) */
static void test_foreign_frames_do_not_extend_the_poll(void)
{
    struct osvrt_cpu *c = &rt->cpus[2];
    struct fake f = {.fd = -1};
    f.rx = (struct osvrt_cpu_rx){.pending = fake_pending, .drain = fake_drain, .arg = &f};
    osvrt_cpu_rx_attach(c, &f.rx);
    struct osvrt_cpu_stats before, after;
    osvrt_cpu_get_stats(c, &before);
    uint32_t seq = osvrt_cpu_kick_seq(c);
    int64_t t0 = osvrt_now_ns();
    int w = osvrt_cpu_idle_io(c, 50000000ll, 1000000ll, seq, NULL, 0, NULL, 0, NULL);
    int64_t took = osvrt_now_ns() - t0;
    osvrt_cpu_rx_detach(c);
    osvrt_cpu_get_stats(c, &after);
    CHECK_EQ(w, 0);
    CHECK(f.drains > 0);                               /* it did drain while polling */
    CHECK_EQ(after.sleeps, before.sleeps + 1);         /* then slept */
    CHECK_MSG(took < (int64_t)OSVRT_TEST_STALL_S * 1000000000ll, "idle took %lld ns", (long long)took);
}

/* ---- live: three draining CPUs, one ring ---- */

static int reserve_port(uint16_t *port)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    CHECK_EQ(osvrt_attach_drop_all(s), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    CHECK_EQ(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    getsockname(s, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    return s;
}

static uint64_t queued(struct osvrt_chan *c)
{
    uint64_t t;
    return osvrt_chan_ready(c, &t);
}

static int connected_to(uint16_t port)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port),
                              .sin_addr.s_addr = htonl(0x7f000001)};
    CHECK_EQ(connect(s, (struct sockaddr *)&dst, sizeof dst), 0);
    return s;
}

static void *poller(void *arg)
{
    struct osvrt_cpu *c = arg;
    while (!atomic_load(&owner_stop))
        if (!osvrt_cpu_rx_poll(c))
            sched_yield();
    return NULL;
}

static void check_in_order(struct osvrt_chan *c, int n, char tag)
{
    for (int i = 0; i < n; i++) {
        uint64_t t;
        CHECK(osvrt_chan_ready(c, &t) > 0);
        const struct osvrt_chan_slot *s = osvrt_chan_slot_at(c, t);
        char want[16];
        int len = snprintf(want, sizeof want, "%c%04d", tag, i);
        CHECK_EQ(s->len, (uint32_t)len);
        CHECK_MSG(memcmp(osvrt_chan_data(c, s), want, (size_t)len) == 0,
                  "datagram %d of flow %c out of order", i, tag);
        osvrt_chan_release(c, t + 1);
    }
}

/* Two flows on lo, each with its reserved port, a flow in net and a client. */
struct pair {
    int reserve[2], client[2];
    struct osvrt_flow *flow[2];
    struct osvrt_chan *chan[2];
};

static void pair_open(struct osvrt_net *net, struct pair *p)
{
    for (int i = 0; i < 2; i++) {
        uint16_t port;
        p->reserve[i] = reserve_port(&port);
        struct osvrt_flow_key k = {.daddr = 0x0100007f, .dport = port, .proto = 17};
        int err = 0;
        p->flow[i] = osvrt_net_flow_add(net, &k, 1, 4096, 1 << 20, NULL, &err);
        CHECK(p->flow[i]);
        p->chan[i] = osvrt_flow_lane(p->flow[i], 0);
        p->client[i] = connected_to(port);
    }
}

static void pair_close(struct osvrt_net *net, struct pair *p)
{
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(osvrt_net_flow_remove(net, p->flow[i]), 0);
        osvrt_flow_put(p->flow[i]);
        close(p->client[i]);
        close(p->reserve[i]);
    }
}

/* Datagrams from..to-1 of both flows, interleaved, in groups the ring always
 * holds: each group is in its channels before the next goes. */
static void send_pairs(struct pair *p, int from, int to)
{
    for (int i = from; i < to; i++) {
        for (int f = 0; f < 2; f++) {
            char m[16];
            int len = snprintf(m, sizeof m, "%c%04d", "ab"[f], i);
            CHECK_EQ(send(p->client[f], m, (size_t)len, 0), len);
        }
        if (i % 100 == 99 || i == to - 1) {
            int64_t end = osvrt_now_ns() + 10000000000ll;
            while ((queued(p->chan[0]) < (uint64_t)i + 1 || queued(p->chan[1]) < (uint64_t)i + 1)
                   && osvrt_now_ns() < end)
                usleep(100);
            CHECK_MSG(queued(p->chan[0]) == (uint64_t)i + 1 && queued(p->chan[1]) == (uint64_t)i + 1,
                      "after %d: a %llu b %llu", i + 1, (unsigned long long)queued(p->chan[0]),
                      (unsigned long long)queued(p->chan[1]));
        }
    }
}

static uint64_t frames_by_cpu(void)
{
    uint64_t n = 0;
    for (int i = 0; i < 3; i++)
        n += atomic_load_explicit(&rt->cpus[i].rx_frames, memory_order_relaxed);
    return n;
}

static void pollers_start(pthread_t th[3])
{
    atomic_store(&owner_stop, 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, poller, &rt->cpus[i]), 0);
}

static void pollers_stop(pthread_t th[3])
{
    atomic_store(&owner_stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
}

/* What n pairs left in the counters: every datagram received, none dropped. */
static void check_received(struct osvrt_net *net, int n, struct osvrt_net_stats *ns)
{
    osvrt_net_get_stats(net, ns);
    CHECK_EQ(ns->received, 2 * (uint64_t)n);
    CHECK_EQ(ns->dropped_ring + ns->dropped_channel_full + ns->dropped_no_flow, 0);
}

/* Stop while the pollers run and datagrams still come: no CPU keeps the
 * hook, the workers' state is gone, and stop is idempotent. */
static void stop_under_load(struct osvrt_net *net, struct pair *p)
{
    pthread_t th[3];
    pollers_start(th);
    for (int i = 0; i < 50; i++)
        send(p->client[1], "late", 4, 0);
    osvrt_net_stop(net);
    CHECK(net->workers == NULL);
    for (int i = 0; i < 3; i++)
        CHECK(!osvrt_cpu_has_rx(&rt->cpus[i]));
    osvrt_net_stop(net);
    pollers_stop(th);
}

static int test_live(void)
{
    struct osvrt_net_config cfg = {.ifname = "lo", .ring_frames = 512, .cpu = -1, .spin_ns = 0,
                                   .prefilter = 1};
    int err = 0;
    struct osvrt_net *net = osvrt_net_new(rt, &cfg, &err);
    if (!net && (err == EPERM || err == EACCES)) {
        printf("test_rx_workers: live part skipped: no CAP_NET_RAW\n");
        return 0;
    }
    CHECK_MSG(net, "net_new(lo): %s", strerror(err));
    uint64_t before = frames_by_cpu();               /* the fake sources' counts */
    CHECK_EQ(osvrt_net_start_workers(net), 0);
    CHECK_EQ(osvrt_net_start_workers(net), EEXIST);
    CHECK_EQ(osvrt_net_start(net), EEXIST);          /* the workers drain it: no thread */

    struct pair p;
    pair_open(net, &p);
    pthread_t th[3];
    pollers_start(th);
    const int n = SCALED(2000) + 100;
    send_pairs(&p, 0, n);
    check_in_order(p.chan[0], n, 'a');
    check_in_order(p.chan[1], n, 'b');

    /* The counters are read once the pollers have stopped: a CPU counts a
     * drain's frames only when the drain returns (cpu.c, rx_use), after the
     * drain published its datagrams, so read while a poller was still inside
     * a drain the CPUs' sum fell short (1192 of 1200 frames, in a TSan run). */
    pollers_stop(th);
    struct osvrt_net_stats ns;
    check_received(net, n, &ns);
    CHECK_EQ(frames_by_cpu() - before, ns.frames);

    /* A thread waiting on CPU 2 is woken there, and the ring's home moves to
     * CPU 2 (it starts on CPU 0). */
    struct osvrt_chan *ca = p.chan[0];
    uint64_t h, keys[4];
    CHECK_EQ(osvrt_table_alloc(&rt->table, 2, &h, 1), 1);
    CHECK_EQ(osvrt_set_state(rt, h, OSVRT_RUNNING), 1);
    atomic_store(&ca->waiter, h | OSVRT_CHAN_WAITER);
    CHECK_EQ(osvrt_wait_prepare(rt, h, 2), 1);
    CHECK_EQ(send(p.client[0], "wake", 4, 0), 4);
    /* CPU 0, the home, sleeps until the frame comes and drains it. */
    uint32_t got = 0;
    int64_t end = osvrt_now_ns() + 5000000000ll;
    while (!got && osvrt_now_ns() < end) {
        struct epoll_event evs[4];
        int nev = 0;
        uint32_t seq = osvrt_cpu_kick_seq(&rt->cpus[0]);
        osvrt_cpu_idle_io(&rt->cpus[0], 100000000, 0, seq, NULL, 0, evs, 4, &nev);
        CHECK_EQ(nev, 0);                              /* the ring's fd is the core's */
        got = osvrt_drain(rt, 2, keys, 4);
    }
    CHECK_EQ(got, 1);
    CHECK_EQ(keys[0], h | OSVRT_KEY_CWAKE);
    struct osvrt_net_workers_stats ws;
    osvrt_net_workers_get_stats(net, &ws);
    CHECK_EQ(ws.rehomed, 1);
    CHECK_EQ(net->workers->home, 2);
    atomic_store(&ca->waiter, 0);
    uint64_t t;
    osvrt_chan_ready(ca, &t);
    osvrt_chan_release(ca, t + 1);

    stop_under_load(net, &p);
    pair_close(net, &p);
    osvrt_net_free(net);
    uint64_t hs[1] = {h};
    osvrt_table_free(&rt->table, hs, 1);
    return 1;
}

/* ---- live: the classifier's thread hands the ring to the workers ---- */

/* A classifier on lo whose thread hands the ring over as `handover` says. */
static struct osvrt_net *handover_net(uint32_t handover)
{
    struct osvrt_net_config cfg = {.ifname = "lo", .ring_frames = 512, .cpu = -1, .spin_ns = 0,
                                   .prefilter = 1, .handover = handover};
    int err = 0;
    struct osvrt_net *net = osvrt_net_new(rt, &cfg, &err);
    CHECK_MSG(net, "net_new(lo): %s", strerror(err));
    return net;
}

/* After n pairs: 200 more, then every pair of both flows in its channel in
 * order, the pollers stopped, and the counters right. */
static void finish_pairs(struct osvrt_net *net, struct pair *p, pthread_t th[3], int n,
                         struct osvrt_net_stats *ns)
{
    send_pairs(p, n, n + 200);
    n += 200;
    check_in_order(p->chan[0], n, 'a');
    check_in_order(p->chan[1], n, 'b');
    pollers_stop(th);
    check_received(net, n, ns);
}

/* The thread drains, then (OSVRT_NET_HANDOVER_NOW: after its first 64
 * bursts, while datagrams keep coming, and for good) attaches the workers; the
 * three pollers, running all along, take over.  Nothing is lost or reordered
 * across the hand-over, the CPUs count only frames after it, and stop joins
 * the thread and detaches the workers it attached. */
static void test_live_handover(void)
{
    struct osvrt_net *net = handover_net(OSVRT_NET_HANDOVER_NOW);
    uint64_t before = frames_by_cpu();
    struct pair p;
    pair_open(net, &p);
    CHECK_EQ(osvrt_net_start(net), 0);
    CHECK_EQ(osvrt_net_handed_over(net), 0);

    pthread_t th[3];
    pollers_start(th);
    int n = SCALED(1000) + 200;
    send_pairs(&p, 0, n);
    /* Then one pair at a time, each queued before the next (a burst each at
     * least), until the thread's first 64 bursts have gone by. */
    while (!osvrt_net_handed_over(net) && n < 5000) {
        send_pairs(&p, n, n + 1);
        n++;
    }
    CHECK_EQ(osvrt_net_handed_over(net), 1);
    CHECK_EQ(osvrt_net_start_workers(net), EINVAL);  /* the thread is still to be joined */
    CHECK_EQ(osvrt_net_start(net), 0);               /* started: nothing to do */
    struct osvrt_net_stats ns;
    finish_pairs(net, &p, th, n, &ns);               /* the last 200: the workers' alone */
    uint64_t by_cpu = frames_by_cpu() - before;
    CHECK(by_cpu >= 400 && by_cpu < ns.frames);     /* after the hand-over only */
    for (int i = 0; i < 3; i++)
        CHECK(osvrt_cpu_has_rx(&rt->cpus[i]));

    stop_under_load(net, &p);
    pair_close(net, &p);
    osvrt_net_free(net);
}

/* The ring goes to the workers and back again and again (the hand-back,
 * rx_workers.h; OSVRT_NET_HANDOVER_CYCLE: each side gives it up after 64
 * bursts) while datagrams arrive one pair at a time: nothing is lost or
 * reordered across any change, `workers` stays published (stats read it
 * unlocked), and stop comes on whichever side the ring is then. */
static void test_live_handover_cycles(void)
{
    struct osvrt_net *net = handover_net(OSVRT_NET_HANDOVER_CYCLE);
    struct pair p;
    pair_open(net, &p);
    CHECK_EQ(osvrt_net_start(net), 0);
    pthread_t th[3];
    pollers_start(th);
    struct osvrt_net_workers_stats ws;
    struct osvrt_net_workers *first = NULL;
    int n = 0;
    do {
        send_pairs(&p, n, n + 1);             /* a burst each, at least */
        n++;
        osvrt_net_workers_get_stats(net, &ws);
        if (ws.handovers && !first)
            first = net->workers;             /* published (handovers' acquire) */
    } while (ws.handbacks < 4 && n < 4000);
    CHECK_MSG(ws.handbacks >= 4 && ws.handovers >= ws.handbacks,
              "after %d pairs: %llu hand-overs, %llu hand-backs", n,
              (unsigned long long)ws.handovers, (unsigned long long)ws.handbacks);
    CHECK(net->workers == first);
    struct osvrt_net_stats ns;
    finish_pairs(net, &p, th, n, &ns);        /* the last 200: whoever has the ring now */
    stop_under_load(net, &p);
    pair_close(net, &p);
    osvrt_net_free(net);
}

/* Without a socket too: a classifier holds one reference while it lives, and
 * one that fails to be made holds none. */
static void test_classifier_reference(void)
{
    uint32_t before = atomic_load(&rt->refs);
    struct osvrt_net_config cfg = {.cpu = -1};           /* no ifname: no socket */
    int err = 0;
    struct osvrt_net *net = osvrt_net_new(rt, &cfg, &err);
    CHECK_MSG(net, "net_new(no socket): %s", strerror(err));
    CHECK_EQ(atomic_load(&rt->refs), before + 1);
    osvrt_net_free(net);
    CHECK_EQ(atomic_load(&rt->refs), before);
    cfg.frame_size = 100;                                /* below 256: refused */
    CHECK(!osvrt_net_new(rt, &cfg, &err));
    CHECK_EQ(err, EINVAL);
    CHECK_EQ(atomic_load(&rt->refs), before);
}

/* The runtime's creator lets go of it first, with the ring still attached to
 * its CPUs (Python's garbage collector frees a Runtime and its classifier in
 * either order): the classifier's own reference keeps the runtime until it
 * has detached.  ASan reports a use after free, LeakSanitizer a runtime the
 * last reference did not free. */
static void test_runtime_released_first(void)
{
    struct osvrt_rt *own = osvrt_rt_new(2);
    CHECK(own);
    struct osvrt_net_config cfg = {.ifname = "lo", .ring_frames = 64, .cpu = -1, .prefilter = 1};
    int err = 0;
    struct osvrt_net *net = osvrt_net_new(own, &cfg, &err);
    CHECK_MSG(net, "net_new(lo): %s", strerror(err));
    CHECK_EQ(osvrt_net_start_workers(net), 0);
    CHECK_EQ(atomic_load(&own->refs), 2);
    osvrt_rt_free(own);                               /* the creator's reference */
    CHECK_EQ(atomic_load(&own->refs), 1);
    CHECK(osvrt_cpu_has_rx(&own->cpus[1]));           /* still attached, still there */
    osvrt_net_free(net);                              /* detaches, then frees the runtime */
}

int main(void)
{
    rt = osvrt_rt_new(3);
    CHECK(rt);
    test_attach_detach_under_polling();
    test_watch_ends_sleep();
    test_foreign_frames_do_not_extend_the_poll();
    test_classifier_reference();
    int live = test_live();
    if (live) {
        test_live_handover();
        test_live_handover_cycles();
        test_runtime_released_first();
    }
    osvrt_rt_free(rt);
    printf("test_rx_workers: ok%s\n", live ? "" : " (offline part only)");
    return live ? 0 : 77;
}
