/* flow_table.h - the classifier's flow table: a hash table of flows keyed by
 * (protocol, destination address and port[, source address and port]), with
 * a keyed hash and lock-free lookups.
 *
 * Hash: SipHash-2-4 under a random 128-bit key drawn at init (getrandom), so
 * colliding keys cannot be chosen from outside (no hash flooding).
 *
 * Concurrency: any number of registered readers look up without a lock;
 * writers (insert, remove) serialize on a mutex.  Buckets are singly linked
 * lists of intrusive nodes: insert links a fully built node at a bucket's
 * head with one release store; remove unlinks with one release store and
 * leaves the removed node's `next` intact, so a reader standing on it walks on.
 *
 * Reclamation is epoch-based (RCU-style, one epoch word per reader):
 *   reader:  read_lock stores the global epoch in its slot and re-reads the
 *            global epoch until the two agree; read_unlock stores 0.
 *   writer:  after unlinking a node, bumps the global epoch; the bumped value
 *            is the node's retire epoch.  The node is released once every
 *            reader slot holds 0 (outside a read section) or an epoch >= the
 *            node's: such a reader loaded the global epoch after the bump,
 *            hence after the unlink, and cannot reach the node.
 * The re-read in read_lock closes the window where a reader loaded an old
 * epoch but had not yet published it when the writer looked (all those
 * accesses are seq_cst: one total order decides who saw whom).
 * Release is deferred, never waited for on the lookup path: retired nodes
 * are released by later writer calls (insert, remove, reclaim) or destroy.
 *
 * Lookups for a packet try, in order: the exact 5-tuple (connected flows),
 * (proto, daddr, dport), then (proto, 0.0.0.0, dport) (wildcard binds); the
 * first and last only when such flows exist.
 */
#ifndef OSVRT_FLOW_TABLE_H
#define OSVRT_FLOW_TABLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pushlist.h"   /* OSVRT_CACHELINE */
#include "siphash.h"

#define OSVRT_FT_MAX_READERS 16
#define OSVRT_FT_MAX_BUCKETS (1u << 24)

struct osvrt_flow_key {
    uint32_t daddr;      /* network byte order; 0 = any local address */
    uint32_t saddr;      /* network byte order; 0 with sport 0 = any source */
    uint16_t dport;      /* host byte order */
    uint16_t sport;
    uint8_t proto;       /* 17 UDP, 6 TCP */
};

struct osvrt_ft_node {
    struct osvrt_ft_node *_Atomic next;   /* bucket chain; read by lock-free lookups */
    struct osvrt_flow_key key;
    uint64_t hash;
    /* Writer side only (under the table's mutex). */
    struct osvrt_ft_node *retired_next;
    uint64_t retire_epoch;
    int linked;
    /* Called once no reader can see the node any more (under the writers'
     * mutex: it must not call back into the table). */
    void (*release)(struct osvrt_ft_node *);
};

struct osvrt_ft_reader {
    _Alignas(OSVRT_CACHELINE) _Atomic uint64_t epoch;   /* 0: not in a read section */
};

struct osvrt_flow_table {
    struct osvrt_ft_node *_Atomic *buckets;
    uint32_t mask;
    struct osvrt_sipkey key;
    _Atomic uint32_t n_connected;    /* flows with a source: lookup hint */
    _Atomic uint32_t n_wildcard;     /* flows with daddr 0: lookup hint */
    _Atomic uint32_t nreaders;
    _Alignas(OSVRT_CACHELINE) _Atomic uint64_t epoch;    /* global epoch, starts at 1 */
    struct osvrt_ft_reader readers[OSVRT_FT_MAX_READERS];
    pthread_mutex_t lock;            /* writers, reader registration */
    struct osvrt_ft_node *retired;   /* unlinked, waiting for their grace period */
    uint32_t count;                  /* linked nodes */
    uint32_t nretired;
};

/* buckets is rounded up to a power of two (1..OSVRT_FT_MAX_BUCKETS).
 * 0 on success, else an errno value. */
int osvrt_ft_init(struct osvrt_flow_table *t, uint32_t buckets);
/* No reader may be active.  Releases every node, linked or retired. */
void osvrt_ft_destroy(struct osvrt_flow_table *t);
/* Tests and benchmarks: a fixed key instead of a random one. */
void osvrt_ft_set_hash_key(struct osvrt_flow_table *t, uint64_t k0, uint64_t k1);

/* A reader slot for the calling thread, or -1 if all are taken. */
int osvrt_ft_reader_register(struct osvrt_flow_table *t);
void osvrt_ft_reader_unregister(struct osvrt_flow_table *t, int reader);

static inline void osvrt_ft_read_lock(struct osvrt_flow_table *t, int reader)
{
    _Atomic uint64_t *mine = &t->readers[reader].epoch;
    /* seq_cst (all three): the epoch handshake of the header comment. */
    uint64_t e = atomic_load_explicit(&t->epoch, memory_order_seq_cst);
    for (;;) {
        atomic_store_explicit(mine, e, memory_order_seq_cst);
        uint64_t again = atomic_load_explicit(&t->epoch, memory_order_seq_cst);
        if (again == e)
            return;
        e = again;
    }
}

static inline void osvrt_ft_read_unlock(struct osvrt_flow_table *t, int reader)
{
    /* release: every access to nodes in the section happens-before a writer's
     * load that sees 0 and releases them. */
    atomic_store_explicit(&t->readers[reader].epoch, 0, memory_order_release);
}

static inline uint64_t osvrt_ft_hash(const struct osvrt_flow_table *t, const struct osvrt_flow_key *k)
{
    uint8_t b[13];     /* packed explicitly: no padding bytes reach the hash */
    memcpy(b, &k->daddr, 4);
    memcpy(b + 4, &k->saddr, 4);
    memcpy(b + 8, &k->dport, 2);
    memcpy(b + 10, &k->sport, 2);
    b[12] = k->proto;
    return osvrt_siphash(&t->key, b, sizeof b);
}

static inline int osvrt_ft_key_eq(const struct osvrt_flow_key *a, const struct osvrt_flow_key *b)
{
    return a->daddr == b->daddr && a->dport == b->dport && a->proto == b->proto
           && a->saddr == b->saddr && a->sport == b->sport;
}

/* Exact lookup; call inside a read section (or as a writer). */
static inline struct osvrt_ft_node *osvrt_ft_lookup(struct osvrt_flow_table *t,
                                                    const struct osvrt_flow_key *k)
{
    uint64_t h = osvrt_ft_hash(t, k);
    /* acquire (bucket head, then each next): pairs with the writer's release
     * store that linked the node, so its key and contents are visible. */
    struct osvrt_ft_node *n = atomic_load_explicit(&t->buckets[h & t->mask], memory_order_acquire);
    for (; n; n = atomic_load_explicit(&n->next, memory_order_acquire))
        if (n->hash == h && osvrt_ft_key_eq(&n->key, k))
            return n;
    return NULL;
}

/* The flow a packet belongs to (see the header comment); inside a read section. */
static inline struct osvrt_ft_node *osvrt_ft_classify(struct osvrt_flow_table *t, uint8_t proto,
                                                      uint32_t daddr, uint16_t dport,
                                                      uint32_t saddr, uint16_t sport)
{
    struct osvrt_flow_key k = {.daddr = daddr, .saddr = saddr, .dport = dport, .sport = sport,
                               .proto = proto};
    struct osvrt_ft_node *n;
    /* relaxed (hints): a flow added concurrently may be missed by this one
     * lookup, as it could be by a lookup a moment earlier. */
    if (atomic_load_explicit(&t->n_connected, memory_order_relaxed) && (n = osvrt_ft_lookup(t, &k)))
        return n;
    k.saddr = 0;
    k.sport = 0;
    if ((n = osvrt_ft_lookup(t, &k)))
        return n;
    if (atomic_load_explicit(&t->n_wildcard, memory_order_relaxed)) {
        k.daddr = 0;
        return osvrt_ft_lookup(t, &k);
    }
    return NULL;
}

/* Link a node (key set, release set).  0, or EEXIST if the key is taken. */
int osvrt_ft_insert(struct osvrt_flow_table *t, struct osvrt_ft_node *n);
/* Unlink a node and retire it: its release runs once no reader can see it.
 * 0, or ENOENT if it is not linked. */
int osvrt_ft_remove(struct osvrt_flow_table *t, struct osvrt_ft_node *n);
/* Release retired nodes whose grace period is over.  Returns how many are
 * still waiting. */
uint32_t osvrt_ft_reclaim(struct osvrt_flow_table *t);
/* Wait (yielding the CPU) until every node retired so far is released. */
void osvrt_ft_synchronize(struct osvrt_flow_table *t);

#endif
