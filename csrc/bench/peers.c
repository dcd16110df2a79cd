#define _GNU_SOURCE
#include "peers.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "osvrt.h"

/* ---- ping-pong: thread A waits for turn 0, sets 1; B waits for 1, sets 0 ---- */

enum pp_kind { PP_FUTEX, PP_CONDVAR, PP_SPIN };

struct pingpong {
    enum pp_kind kind;
    int cpu[2];
    uint64_t rounds;
    _Atomic uint32_t turn;
    pthread_mutex_t m;
    pthread_cond_t cv;
};

struct pp_arg {
    struct pingpong *pp;
    uint32_t me;
};

static void pp_wait_turn(struct pingpong *pp, uint32_t me)
{
    switch (pp->kind) {
    case PP_FUTEX:
        for (;;) {
            /* acquire: the other side's work before its turn store is visible. */
            uint32_t t = atomic_load_explicit(&pp->turn, memory_order_acquire);
            if (t == me)
                return;
            syscall(SYS_futex, (uint32_t *)&pp->turn, FUTEX_WAIT_PRIVATE, t, NULL, NULL, 0);
        }
    case PP_CONDVAR:
        pthread_mutex_lock(&pp->m);
        while (atomic_load_explicit(&pp->turn, memory_order_relaxed) != me)
            pthread_cond_wait(&pp->cv, &pp->m);
        pthread_mutex_unlock(&pp->m);
        return;
    case PP_SPIN:
        while (atomic_load_explicit(&pp->turn, memory_order_acquire) != me)
            ;
        return;
    }
}

static void pp_give_turn(struct pingpong *pp, uint32_t other)
{
    switch (pp->kind) {
    case PP_FUTEX:
        /* release: pairs with the acquire load in pp_wait_turn. */
        atomic_store_explicit(&pp->turn, other, memory_order_release);
        syscall(SYS_futex, (uint32_t *)&pp->turn, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        return;
    case PP_CONDVAR:
        pthread_mutex_lock(&pp->m);
        atomic_store_explicit(&pp->turn, other, memory_order_relaxed);  /* mutex orders it */
        pthread_cond_signal(&pp->cv);
        pthread_mutex_unlock(&pp->m);
        return;
    case PP_SPIN:
        atomic_store_explicit(&pp->turn, other, memory_order_release);
        return;
    }
}

static void *pp_main(void *p)
{
    struct pp_arg *a = p;
    struct pingpong *pp = a->pp;
    if (pp->cpu[a->me] >= 0)
        osvrt_pin_self(pp->cpu[a->me]);
    for (uint64_t i = 0; i < pp->rounds; i++) {
        pp_wait_turn(pp, a->me);
        pp_give_turn(pp, !a->me);
    }
    return NULL;
}

static double pingpong(enum pp_kind kind, int cpu_a, int cpu_b, uint64_t rounds)
{
    struct pingpong pp = {.kind = kind, .cpu = {cpu_a, cpu_b}, .rounds = rounds};
    atomic_init(&pp.turn, 0);
    pthread_mutex_init(&pp.m, NULL);
    pthread_cond_init(&pp.cv, NULL);
    struct pp_arg args[2] = {{&pp, 0}, {&pp, 1}};
    pthread_t th[2];
    int64_t t0 = osvrt_now_ns();
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, pp_main, &args[i]) != 0)
            return -1;
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    int64_t t1 = osvrt_now_ns();
    pthread_cond_destroy(&pp.cv);
    pthread_mutex_destroy(&pp.m);
    return rounds ? (double)(t1 - t0) / (2.0 * rounds) : 0.0;
}

double osvrt_peer_futex_pingpong(int a, int b, uint64_t n) { return pingpong(PP_FUTEX, a, b, n); }
double osvrt_peer_condvar_pingpong(int a, int b, uint64_t n) { return pingpong(PP_CONDVAR, a, b, n); }
double osvrt_peer_spin_pingpong(int a, int b, uint64_t n) { return pingpong(PP_SPIN, a, b, n); }

/* ---- queues: N producers, one consumer that takes batches ---- */

struct item {
    struct osvrt_pushnode node;   /* first: a pushnode* is an item* */
    uint32_t producer;
    uint64_t seq;
};

struct mutex_queue {               /* the peer: a FIFO under a pthread mutex */
    pthread_mutex_t m;
    struct osvrt_pushnode *head, **tail;
};

struct queue_bench {
    int kind, producers;
    uint64_t per_producer;
    struct osvrt_pushlist pl;
    struct mutex_queue mq;
    struct item *items;
    _Atomic int go;
};

struct prod_arg {
    struct queue_bench *qb;
    uint32_t id;
};

static void *producer_main(void *p)
{
    struct prod_arg *a = p;
    struct queue_bench *qb = a->qb;
    struct item *mine = &qb->items[(uint64_t)a->id * qb->per_producer];
    while (!atomic_load_explicit(&qb->go, memory_order_acquire))
        ;
    for (uint64_t i = 0; i < qb->per_producer; i++) {
        struct item *it = &mine[i];
        it->producer = a->id;
        it->seq = i;
        if (qb->kind == OSVRT_PEER_PUSHLIST) {
            osvrt_pushlist_push(&qb->pl, &it->node);
        } else {
            it->node.next = NULL;
            pthread_mutex_lock(&qb->mq.m);
            *qb->mq.tail = &it->node;
            qb->mq.tail = &it->node.next;
            pthread_mutex_unlock(&qb->mq.m);
        }
    }
    return NULL;
}

static struct osvrt_pushnode *take_batch(struct queue_bench *qb)
{
    if (qb->kind == OSVRT_PEER_PUSHLIST)
        return osvrt_pushlist_take_all(&qb->pl);
    pthread_mutex_lock(&qb->mq.m);
    struct osvrt_pushnode *n = qb->mq.head;
    if (qb->kind == OSVRT_PEER_MUTEX_POP && n) {     /* one item per lock */
        qb->mq.head = n->next;
        if (!qb->mq.head)
            qb->mq.tail = &qb->mq.head;
        n->next = NULL;
    } else {
        qb->mq.head = NULL;
        qb->mq.tail = &qb->mq.head;
    }
    pthread_mutex_unlock(&qb->mq.m);
    return n;
}

double osvrt_peer_queue(int kind, int producers, uint64_t per_producer)
{
    if (producers <= 0 || producers > 64 || (kind != OSVRT_PEER_PUSHLIST && kind != OSVRT_PEER_MUTEX_QUEUE && kind != OSVRT_PEER_MUTEX_POP))
        return -1;
    struct queue_bench qb = {.kind = kind, .producers = producers, .per_producer = per_producer};
    uint64_t total = (uint64_t)producers * per_producer;
    qb.items = calloc(total ? total : 1, sizeof *qb.items);
    uint64_t *next_seq = calloc((size_t)producers, sizeof *next_seq);
    if (!qb.items || !next_seq) {
        free(qb.items);
        free(next_seq);
        return -1;
    }
    osvrt_pushlist_init(&qb.pl);
    pthread_mutex_init(&qb.mq.m, NULL);
    qb.mq.head = NULL;
    qb.mq.tail = &qb.mq.head;
    atomic_init(&qb.go, 0);

    pthread_t th[64];
    struct prod_arg args[64];
    for (int i = 0; i < producers; i++) {
        args[i] = (struct prod_arg){&qb, (uint32_t)i};
        pthread_create(&th[i], NULL, producer_main, &args[i]);
    }
    int64_t t0 = osvrt_now_ns();
    atomic_store_explicit(&qb.go, 1, memory_order_release);
    uint64_t got = 0;
    int bad = 0;
    while (got < total) {
        struct osvrt_pushnode *n = take_batch(&qb);
        for (; n; n = n->next, got++) {
            struct item *it = (struct item *)n;
            if (it->seq != next_seq[it->producer])   /* lost, duplicated or reordered */
                bad = 1;
            next_seq[it->producer] = it->seq + 1;
        }
    }
    int64_t t1 = osvrt_now_ns();
    for (int i = 0; i < producers; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&qb.mq.m);
    free(qb.items);
    free(next_seq);
    if (bad)
        return -1;
    return total ? (double)(t1 - t0) / (double)total : 0.0;
}
