/* fuzz_tcp_stack.c - fuzz target for the TCP state machine: two stacks
 * (client 198.18.0.1, server 198.18.0.2) joined by a wire the input
 * controls, driven by application calls the input chooses.
 *
 * The input is a program of one-byte operations, some with argument bytes:
 *   deliver (whole, or demux + input_conn with a right or wrong id) / drop /
 *   duplicate / delay the packet at the head of the wire,
 *   advance the clock and run the timers, connect / listen / accept,
 *   send / recv (with data checked), shutdown / close / abort,
 *   and inject a copy of a recent packet with fuzzed flags, sequence and
 *   acknowledgment offsets, window and length (checksums recomputed, so the
 *   state machine, not the checksum, sees it).
 * After every operation both stacks' invariants (tcp_debug.h) must hold,
 * every packet they emit must parse, and recv must return bytes in the
 * order they were sent (the sender's bytes are a counter pattern).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcp.h"
#include "tcp_debug.h"
#include "tcp_seg.h"

#include "fuzz_check.h"

#define WIRE 64
#define NCONN 8
static const uint32_t addr[2] = {0xC6120001u, 0xC6120002u};

struct wpkt {
    int to;
    uint32_t len;
    uint8_t b[1600];
};

struct conn {
    int side;
    int32_t id;
    uint64_t sent, got;             /* pattern positions: bytes sent / received in order */
};

static struct {
    struct osvrt_tcp_stack *st[2];
    struct wpkt wire[WIRE];
    uint32_t nwire;
    struct wpkt last;               /* the last packet seen, for mutation */
    int have_last;
    struct conn conns[NCONN];
    int32_t listener;
    int64_t now;
} F;

static uint8_t pat(uint64_t i) { return (uint8_t)(i * 131 + (i >> 8)); }

static struct osvrt_tcp_stack *mk(uint32_t a)
{
    struct osvrt_tcp_config cfg;
    osvrt_tcp_config_init(&cfg);
    cfg.addr = a;
    cfg.mss = 536;
    cfg.sndbuf = 4096;
    cfg.rcvbuf = 2048;              /* small: zero windows happen */
    cfg.max_conns = 16;
    cfg.time_wait_ns = 2000000000;
    cfg.keepalive_ns = 5000000000;
    cfg.isn_key[0] = a;
    int err;
    struct osvrt_tcp_stack *s = osvrt_tcp_new(&cfg, &err);
    FUZZ_CHECK(s);
    return s;
}

static void check(void)
{
    for (int i = 0; i < 2; i++) {
        int line = osvrt_tcp_invariants(F.st[i]);
        if (line) {
            fprintf(stderr, "stack %d: invariant at tcp.c:%d\n", i, line);
            abort();
        }
    }
}

static void flush(void)
{
    uint8_t buf[1600];
    for (int side = 0; side < 2; side++) {
        int32_t n;
        while ((n = osvrt_tcp_output(F.st[side], buf, sizeof buf, F.now)) > 0) {
            struct osvrt_tcp_seg g;
            FUZZ_CHECK(osvrt_tcp_parse(buf, (uint32_t)n, 0, &g) == 0);
            FUZZ_CHECK(g.saddr == addr[side] && g.daddr == addr[!side]);
            memcpy(F.last.b, buf, (size_t)n);
            F.last.len = (uint32_t)n;
            F.last.to = !side;
            F.have_last = 1;
            if (F.nwire < WIRE) {
                F.wire[F.nwire] = F.last;
                F.nwire++;
            }
        }
        FUZZ_CHECK(n == 0);
    }
}

static void wire_pop(uint32_t i)
{
    memmove(&F.wire[i], &F.wire[i + 1], (F.nwire - i - 1) * sizeof F.wire[0]);
    F.nwire--;
}

/* split: through demux + input_conn (the owning green thread's path), with
 * the id perturbed when split > 1 (a stale or wrong id must be looked up again). */
static void deliver(uint32_t i, int dup, int split)
{
    if (i >= F.nwire)
        return;
    struct wpkt *w = &F.wire[i];
    int r;
    if (split) {
        int32_t id = osvrt_tcp_demux(F.st[w->to], w->b, w->len, 0);
        if (split > 1)
            id = id < 0 ? split : id ^ split;
        r = osvrt_tcp_input_conn(F.st[w->to], id, w->b, w->len, 0, F.now);
    } else {
        r = osvrt_tcp_input(F.st[w->to], w->b, w->len, 0, F.now);
    }
    FUZZ_CHECK(r >= 0 && r < OSVRT_TCP_NDROPS);
    if (!dup)
        wire_pop(i);
}

static struct conn *conn_at(uint8_t k)
{
    struct conn *c = &F.conns[k % NCONN];
    return c->id >= 0 ? c : NULL;
}

static void forget(struct conn *c) { c->id = -1; }

static void app_recv(struct conn *c)
{
    uint8_t buf[3000];
    int64_t r = osvrt_tcp_recv(F.st[c->side], c->id, buf, sizeof buf, F.now);
    FUZZ_CHECK(r >= -4095);
    for (int64_t i = 0; i < r; i++)
        FUZZ_CHECK(buf[i] == pat(c->got + (uint64_t)i));    /* in order, intact */
    if (r > 0)
        c->got += (uint64_t)r;
}

/* A recent packet, mutated, back onto the wire's head. */
static void inject(const uint8_t *a)
{
    if (!F.have_last)
        return;
    struct osvrt_tcp_seg g;
    if (osvrt_tcp_parse(F.last.b, F.last.len, 0, &g))
        return;
    uint8_t out[1600];
    int32_t dseq = (int8_t)a[1] * (a[0] & 0x80 ? 65536 : 97);
    int32_t dack = (int8_t)a[2] * (a[0] & 0x40 ? 65536 : 13);
    g.flags = (uint8_t)(a[0] & 0x3f);
    g.seq += (uint32_t)dseq;
    g.ack += (uint32_t)dack;
    g.wnd = (uint16_t)(a[3] << 4);
    uint32_t len = g.len < a[4] ? g.len : a[4];
    if (dseq || (a[0] & 0xc0) == 0xc0)
        len = 0;    /* moved or reversed payload would be a valid forgery: the data check could not hold */
    memcpy(out + 40, g.data, len);   /* the payload stays the peer's bytes: data checks hold */
    g.len = len;
    /* swap direction on request: the packet goes back to its sender */
    if (a[0] & 0x80 && a[0] & 0x40) {
        uint32_t t = g.saddr; g.saddr = g.daddr; g.daddr = t;
        uint16_t p = g.sport; g.sport = g.dport; g.dport = p;
    }
    uint32_t n = osvrt_tcp_build(out, &g, NULL, 0, 0);
    int to = g.daddr == addr[1];
    int r = osvrt_tcp_input(F.st[to], out, n, 0, F.now);
    FUZZ_CHECK(r >= 0 && r < OSVRT_TCP_NDROPS);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t size)
{
    memset(&F, 0, sizeof F);
    F.st[0] = mk(addr[0]);
    F.st[1] = mk(addr[1]);
    F.now = 1000000000;
    for (int i = 0; i < NCONN; i++)
        F.conns[i].id = -1;
    F.listener = osvrt_tcp_listen(F.st[1], 80, 2);
    FUZZ_CHECK(F.listener >= 0);
    static uint8_t sendbuf[255 * 20];
    size_t i = 0;
    while (i < size) {
        uint8_t op = d[i++];
        uint8_t a[5] = {0, 0, 0, 0, 0};
        for (int k = 0; k < 5 && i < size && (op & 0xf) >= 12; k++)
            a[k] = d[i++];
        uint8_t arg = i < size ? d[i] : 0;
        struct conn *c = conn_at(op >> 4);
        switch (op & 0xf) {
        case 0:
            deliver(0, 0, 0);
            break;
        case 1:
            deliver(0, 0, op >> 4 == 0 ? 1 : (op >> 4) << 20 | 1);
            break;
        case 2:
            if (F.nwire)
                wire_pop(0);                            /* lost */
            break;
        case 3:
            deliver(0, 1, 0);                           /* duplicated */
            break;
        case 4:
            deliver(F.nwire ? arg % F.nwire : 0, 0, 1); /* reordered */
            i++;
            break;
        case 5: {                                       /* time passes */
            int64_t next = osvrt_tcp_next_deadline(F.st[0]);
            int64_t n1 = osvrt_tcp_next_deadline(F.st[1]);
            next = n1 < next ? n1 : next;
            if (arg & 1 && next != INT64_MAX)
                F.now = next > F.now ? next : F.now;
            else
                F.now += (int64_t)arg * 1000000;
            i++;
            osvrt_tcp_on_timer(F.st[0], F.now);
            osvrt_tcp_on_timer(F.st[1], F.now);
            break;
        }
        case 6:
            for (int k = 0; k < NCONN; k++)
                if (F.conns[k].id < 0) {
                    int32_t id = osvrt_tcp_connect(F.st[0], addr[1], arg & 1 ? 80 : 81, 0, F.now);
                    if (id >= 0)
                        F.conns[k] = (struct conn){.side = 0, .id = id};
                    break;
                }
            i++;
            break;
        case 7:
            if (arg == 0xfe) {                          /* the server's stack closes: abort_all */
                int32_t owed = INT32_MAX, left;
                while ((left = osvrt_tcp_abort_all(F.st[1], F.now)) > 0) {
                    FUZZ_CHECK(left < owed);            /* each call frees some: it ends */
                    owed = left;
                    flush();                            /* the RSTs leave: room for the rest */
                }
                FUZZ_CHECK(left == 0);
                for (int k = 0; k < NCONN; k++)
                    if (F.conns[k].id >= 0 && F.conns[k].side == 1) {
                        FUZZ_CHECK(osvrt_tcp_state(F.st[1], F.conns[k].id) == -EBADF);
                        forget(&F.conns[k]);
                    }
                FUZZ_CHECK(osvrt_tcp_state(F.st[1], F.listener) == -EBADF);
                F.listener = osvrt_tcp_listen(F.st[1], 80, 2);
                FUZZ_CHECK(F.listener >= 0);
                i++;
                break;
            }
            if (arg == 0xff) {                          /* close the listener (resets its queue) */
                FUZZ_CHECK(osvrt_tcp_close(F.st[1], F.listener, F.now) == 0);
                F.listener = osvrt_tcp_listen(F.st[1], 80, 2);
                FUZZ_CHECK(F.listener >= 0);
                i++;
                break;
            }
            for (int k = 0; k < NCONN; k++)
                if (F.conns[k].id < 0) {
                    int32_t id = osvrt_tcp_accept(F.st[1], F.listener, NULL, NULL);
                    if (id >= 0)
                        F.conns[k] = (struct conn){.side = 1, .id = id};
                    break;
                }
            break;
        case 8:
            if (c) {
                uint32_t n = (uint32_t)arg * 20;
                for (uint32_t k = 0; k < n; k++)
                    sendbuf[k] = pat(c->sent + k);
                int64_t r = osvrt_tcp_send(F.st[c->side], c->id, sendbuf, n, F.now);
                FUZZ_CHECK(r <= (int64_t)n);
                if (r > 0)
                    c->sent += (uint64_t)r;
            }
            i++;
            break;
        case 9:
            if (c) {
                app_recv(c);
                struct osvrt_tcp_conn_info ci;
                FUZZ_CHECK(osvrt_tcp_conn_info(F.st[c->side], c->id, &ci) == 0);
                FUZZ_CHECK(ci.state < OSVRT_TCP_NSTATES && ci.in_flight <= 4096 + 1);
            }
            break;
        case 10:
            if (c)
                osvrt_tcp_shutdown_write(F.st[c->side], c->id, F.now);
            break;
        case 11:
            if (c) {
                if (arg & 1)
                    FUZZ_CHECK(osvrt_tcp_abort(F.st[c->side], c->id, F.now) == 0);
                else
                    FUZZ_CHECK(osvrt_tcp_close(F.st[c->side], c->id, F.now) == 0);
                FUZZ_CHECK(osvrt_tcp_state(F.st[c->side], c->id) == -EBADF);
                forget(c);
            }
            i++;
            break;
        default:                                        /* 12..15 */
            inject(a);
            break;
        }
        flush();
        struct osvrt_tcp_event ev[8];
        for (int side = 0; side < 2; side++)
            while (osvrt_tcp_events(F.st[side], ev, 8))
                ;
        check();
    }
    osvrt_tcp_free(F.st[0]);
    osvrt_tcp_free(F.st[1]);
    return 0;
}
