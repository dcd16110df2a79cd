/* trace.h - tracepoints the Python scheduler fires (switch, spawn, exit,
 * migrate).  Each sits behind an SDT semaphore that the kernel raises while
 * a tracer is attached; Python reads osvrt_<name>_semaphore as a plain global
 * (no call) and calls the function only when it is non-zero. */
#ifndef OSVRT_TRACE_H
#define OSVRT_TRACE_H

#include <stdint.h>

extern unsigned short osvrt_switch_semaphore;
extern unsigned short osvrt_spawn_semaphore;
extern unsigned short osvrt_exit_semaphore;
extern unsigned short osvrt_migrate_semaphore;

void osvrt_trace_switch(uint32_t cpu, uint64_t from_id, uint64_t to_id);
void osvrt_trace_spawn(uint32_t cpu, uint64_t id);
void osvrt_trace_exit(uint32_t cpu, uint64_t id);
void osvrt_trace_migrate(uint64_t id, uint32_t from_cpu, uint32_t to_cpu);

#endif
