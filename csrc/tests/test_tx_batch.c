/* test_tx_batch.c - batched UDP replies (csrc/net/tx_batch.h) on loopback:
 * order and the sendmmsg count, a refused datagram counted with the rest
 * sent, close() while a batch holds datagrams (sent, then the fd closes;
 * later sends EBADF), EMSGSIZE, and two senders with a closer racing them
 * (every datagram queued is sent or counted; for TSan and ASan). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "tx_batch.h"

static int udp_bound(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t n = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &n) == 0);
    *port = a.sin_port;                       /* network order, as tx_batch takes it */
    struct timeval tv = {.tv_sec = 5};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    return fd;
}


static uint32_t lo_addr(void)
{
    return htonl(INADDR_LOOPBACK);
}

static void order_and_count(void)
{
    uint16_t rport, sport;
    int r = udp_bound(&rport), s = udp_bound(&sport);
    struct osvrt_udp_tx *tx = osvrt_udp_tx_new(s);
    struct osvrt_tx_batch *b = osvrt_tx_batch_new();
    CHECK(tx && b);
    char msg[16];
    for (int i = 0; i < 40; i++) {
        int n = snprintf(msg, sizeof msg, "%d", i);
        CHECK_EQ(osvrt_tx_batch_add(b, tx, msg, (uint32_t)n, lo_addr(), rport), 0);
    }
    CHECK_EQ(b->len, 8);                      /* 32 went at the full batch */
    CHECK_EQ(osvrt_tx_batch_flush(b), 8);
    for (int i = 0; i < 40; i++) {
        char got[16] = {0};
        CHECK(recv(r, got, sizeof got - 1, 0) > 0);
        snprintf(msg, sizeof msg, "%d", i);
        CHECK_MSG(strcmp(got, msg) == 0, "datagram %d came as %s", i, got);
    }
    struct osvrt_udp_tx_stats st;
    osvrt_udp_tx_get_stats(tx, &st);
    CHECK_EQ(st.sent, 40);
    CHECK_EQ(st.syscalls, 2);
    CHECK_EQ(st.errors + st.dropped_full, 0);
    CHECK_EQ(b->full_flushes, 1);
    osvrt_tx_batch_free(b);
    osvrt_udp_tx_close(tx);
    osvrt_udp_tx_put(tx);
    close(r);
}

static void refusal_counted(void)
{
    uint16_t rport, sport;
    int r = udp_bound(&rport), s = udp_bound(&sport);
    struct osvrt_udp_tx *tx = osvrt_udp_tx_new(s);
    struct osvrt_tx_batch *b = osvrt_tx_batch_new();
    CHECK_EQ(osvrt_tx_batch_add(b, tx, "a", 1, lo_addr(), rport), 0);
    CHECK_EQ(osvrt_tx_batch_add(b, tx, "x", 1, lo_addr(), 0), 0);   /* port 0: EINVAL at the flush */
    CHECK_EQ(osvrt_tx_batch_add(b, tx, "b", 1, lo_addr(), rport), 0);
    CHECK_EQ(osvrt_tx_batch_flush(b), 2);
    char got[4] = {0};
    CHECK(recv(r, got, 1, 0) == 1 && got[0] == 'a');
    CHECK(recv(r, got, 1, 0) == 1 && got[0] == 'b');
    struct osvrt_udp_tx_stats st;
    osvrt_udp_tx_get_stats(tx, &st);
    CHECK_EQ(st.sent, 2);
    CHECK_EQ(st.errors, 1);
    CHECK_EQ(st.last_errno, EINVAL);
    static char big[OSVRT_UDP_MAX_PAYLOAD + 1];
    CHECK_EQ(osvrt_tx_batch_add(b, tx, big, sizeof big, lo_addr(), rport), EMSGSIZE);
    CHECK_EQ(osvrt_udp_tx_send_now(tx, big, sizeof big, lo_addr(), rport), EMSGSIZE);
    CHECK_EQ(b->len, 0);
    osvrt_tx_batch_free(b);
    osvrt_udp_tx_close(tx);
    osvrt_udp_tx_put(tx);
    close(r);
}

static void close_with_a_batch_pending(void)
{
    uint16_t rport, sport;
    int r = udp_bound(&rport), s = udp_bound(&sport);
    struct osvrt_udp_tx *tx = osvrt_udp_tx_new(s);
    struct osvrt_tx_batch *b = osvrt_tx_batch_new();
    CHECK_EQ(osvrt_tx_batch_add(b, tx, "late", 4, lo_addr(), rport), 0);
    osvrt_udp_tx_close(tx);                   /* the endpoint closes ... */
    CHECK(fcntl(s, F_GETFD) >= 0);            /* ... the batch keeps the number ... */
    int again = socket(AF_INET, SOCK_DGRAM, 0);   /* ... but not the port */
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = sport, .sin_addr.s_addr = lo_addr()};
    CHECK(bind(again, (struct sockaddr *)&at, sizeof at) == 0);
    close(again);
    CHECK_EQ(osvrt_tx_batch_flush(b), 0);     /* refused: the endpoint closed first */
    struct osvrt_udp_tx_stats st;
    osvrt_udp_tx_get_stats(tx, &st);
    CHECK(st.errors == 1 && st.last_errno == EBADF && st.syscalls == 0);
    CHECK(fcntl(s, F_GETFD) < 0 && errno == EBADF);   /* the last user closed it */
    CHECK_EQ(osvrt_tx_batch_add(b, tx, "late", 4, lo_addr(), rport), EBADF);
    CHECK_EQ(osvrt_udp_tx_send_now(tx, "late", 4, lo_addr(), rport), EBADF);
    CHECK_EQ(b->len, 0);
    osvrt_tx_batch_free(b);
    osvrt_udp_tx_put(tx);
    close(r);
}

struct sender {
    pthread_t th;
    struct osvrt_udp_tx *tx;
    uint16_t port;
    uint64_t queued;
};

static void *send_many(void *arg)
{
    struct sender *s = arg;
    struct osvrt_tx_batch *b = osvrt_tx_batch_new();
    CHECK(b);
    for (int i = 0; i < SCALED(20000); i++) {
        if (osvrt_tx_batch_add(b, s->tx, "d", 1, lo_addr(), s->port) == 0)
            s->queued++;
        if (i % 7 == 0)
            osvrt_tx_batch_flush(b);          /* a turn ends */
    }
    osvrt_tx_batch_free(b);
    return NULL;
}

static void senders_and_a_closer(void)
{
    uint16_t rport, sport;
    int r = udp_bound(&rport), s = udp_bound(&sport);
    struct osvrt_udp_tx *tx = osvrt_udp_tx_new(s);
    struct sender snd[2];
    for (int i = 0; i < 2; i++) {
        snd[i] = (struct sender){.tx = tx, .port = rport};
        atomic_fetch_add_explicit(&tx->refs, 1, memory_order_relaxed);   /* each sender's owner ref */
        CHECK(pthread_create(&snd[i].th, NULL, send_many, &snd[i]) == 0);
    }
    usleep(2000);
    osvrt_udp_tx_close(tx);                   /* while they send */
    for (int i = 0; i < 2; i++)
        CHECK(pthread_join(snd[i].th, NULL) == 0);
    struct osvrt_udp_tx_stats st;
    osvrt_udp_tx_get_stats(tx, &st);
    CHECK_EQ(st.sent + st.dropped_full + st.errors, snd[0].queued + snd[1].queued);
    CHECK_EQ(atomic_load(&tx->users), OSVRT_UDP_TX_CLOSED);
    for (int i = 0; i < 3; i++)
        osvrt_udp_tx_put(tx);
    close(r);
}

int main(void)
{
    order_and_count();
    refusal_counted();
    close_with_a_batch_pending();
    senders_and_a_closer();
    printf("test_tx_batch: ok\n");
    return 0;
}
