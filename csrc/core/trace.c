/* Only the probes of this file have semaphores: see probes.h. */
#define OSVRT_PROBE_SEMAPHORES 1
#include "trace.h"

#include "probes.h"

OSVRT_SEMAPHORE(switch);
OSVRT_SEMAPHORE(spawn);
OSVRT_SEMAPHORE(exit);
OSVRT_SEMAPHORE(migrate);

void osvrt_trace_switch(uint32_t cpu, uint64_t from_id, uint64_t to_id)
{
    OSVRT_PROBE3(switch, cpu, from_id, to_id);
}

void osvrt_trace_spawn(uint32_t cpu, uint64_t id)
{
    OSVRT_PROBE2(spawn, cpu, id);
}

void osvrt_trace_exit(uint32_t cpu, uint64_t id)
{
    OSVRT_PROBE2(exit, cpu, id);
}

void osvrt_trace_migrate(uint64_t id, uint32_t from_cpu, uint32_t to_cpu)
{
    OSVRT_PROBE3(migrate, id, from_cpu, to_cpu);
}
