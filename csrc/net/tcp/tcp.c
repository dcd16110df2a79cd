/* tcp.c - skeleton: the API of tcp.h, compiled; the protocol follows. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tcp.h"

struct osvrt_tcp_stack {
    struct osvrt_tcp_config cfg;
    struct osvrt_tcp_stats stats;
};

void osvrt_tcp_config_init(struct osvrt_tcp_config *cfg) { memset(cfg, 0, sizeof *cfg); }

struct osvrt_tcp_stack *osvrt_tcp_new(const struct osvrt_tcp_config *cfg, int *err)
{
    struct osvrt_tcp_stack *s = calloc(1, sizeof *s);
    if (!s) {
        *err = -ENOMEM;
        return NULL;
    }
    s->cfg = *cfg;
    return s;
}

void osvrt_tcp_free(struct osvrt_tcp_stack *s) { free(s); }
int32_t osvrt_tcp_demux(struct osvrt_tcp_stack *s, const uint8_t *p, uint32_t l, uint32_t f)
{ (void)s; (void)p; (void)l; (void)f; return -OSVRT_TCP_DROP_NO_CONN; }
int osvrt_tcp_input_conn(struct osvrt_tcp_stack *s, int32_t id, const uint8_t *p, uint32_t l,
                         uint32_t f, int64_t now)
{ (void)s; (void)id; (void)p; (void)l; (void)f; (void)now; return OSVRT_TCP_DROP_NO_CONN; }
int osvrt_tcp_input(struct osvrt_tcp_stack *s, const uint8_t *p, uint32_t l, uint32_t f, int64_t now)
{ return osvrt_tcp_input_conn(s, osvrt_tcp_demux(s, p, l, f), p, l, f, now); }
int32_t osvrt_tcp_output(struct osvrt_tcp_stack *s, uint8_t *b, uint32_t c, int64_t now)
{ (void)s; (void)b; (void)now; return c < OSVRT_TCP_MIN_OUT ? -EINVAL : 0; }
int osvrt_tcp_output_pending(const struct osvrt_tcp_stack *s) { (void)s; return 0; }
int64_t osvrt_tcp_next_deadline(const struct osvrt_tcp_stack *s) { (void)s; return INT64_MAX; }
int osvrt_tcp_on_timer(struct osvrt_tcp_stack *s, int64_t now) { (void)s; (void)now; return 0; }
uint32_t osvrt_tcp_events(struct osvrt_tcp_stack *s, struct osvrt_tcp_event *o, uint32_t m)
{ (void)s; (void)o; (void)m; return 0; }
int32_t osvrt_tcp_listen(struct osvrt_tcp_stack *s, uint32_t port, uint32_t b)
{ (void)s; (void)port; (void)b; return -ENOSYS; }
int32_t osvrt_tcp_accept(struct osvrt_tcp_stack *s, int32_t lid, uint32_t *a, uint16_t *p)
{ (void)s; (void)lid; (void)a; (void)p; return -ENOSYS; }
int32_t osvrt_tcp_connect(struct osvrt_tcp_stack *s, uint32_t a, uint32_t p, uint32_t l, int64_t now)
{ (void)s; (void)a; (void)p; (void)l; (void)now; return -ENOSYS; }
int64_t osvrt_tcp_send(struct osvrt_tcp_stack *s, int32_t id, const uint8_t *b, uint64_t l, int64_t now)
{ (void)s; (void)id; (void)b; (void)l; (void)now; return -ENOSYS; }
int64_t osvrt_tcp_recv(struct osvrt_tcp_stack *s, int32_t id, uint8_t *b, uint64_t c, int64_t now)
{ (void)s; (void)id; (void)b; (void)c; (void)now; return -ENOSYS; }
int osvrt_tcp_shutdown_write(struct osvrt_tcp_stack *s, int32_t id, int64_t now)
{ (void)s; (void)id; (void)now; return -ENOSYS; }
int osvrt_tcp_close(struct osvrt_tcp_stack *s, int32_t id, int64_t now)
{ (void)s; (void)id; (void)now; return -ENOSYS; }
int osvrt_tcp_abort(struct osvrt_tcp_stack *s, int32_t id, int64_t now)
{ (void)s; (void)id; (void)now; return -ENOSYS; }
int osvrt_tcp_state(const struct osvrt_tcp_stack *s, int32_t id) { (void)s; (void)id; return -EBADF; }
int osvrt_tcp_conn_info(const struct osvrt_tcp_stack *s, int32_t id, struct osvrt_tcp_conn_info *o)
{ (void)s; (void)id; (void)o; return -EBADF; }
void osvrt_tcp_get_stats(const struct osvrt_tcp_stack *s, struct osvrt_tcp_stats *o) { *o = s->stats; }
const char *osvrt_tcp_state_name(int st) { (void)st; return NULL; }
const char *osvrt_tcp_drop_name(int r) { (void)r; return NULL; }
