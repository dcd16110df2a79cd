/* tcp_debug.h - the engine's internal invariants, checked by the tests and
 * the fuzz targets after every call (not part of the API in tcp.h). */
#ifndef OSVRT_TCP_DEBUG_H
#define OSVRT_TCP_DEBUG_H

#include "tcp.h"

/* 0 when every invariant holds, else the source line of the first broken one. */
int osvrt_tcp_invariants(const struct osvrt_tcp_stack *s);

#endif
