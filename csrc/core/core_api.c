#include "core_api.h"

#include "trace.h"

static const struct osvrt_core_api api = {
    .version = OSVRT_CORE_API_VERSION,
    .size = sizeof(struct osvrt_core_api),
    .drain = osvrt_drain,
    .ready = osvrt_ready,
    .cpu_idle = osvrt_cpu_idle,
    .cpu_kick = osvrt_cpu_kick,
    .cpu_idle_io = osvrt_cpu_idle_io,
    .cpu_poll_io = osvrt_cpu_poll_io,
    .trace_switch = osvrt_trace_switch,
    .trace_spawn = osvrt_trace_spawn,
    .trace_exit = osvrt_trace_exit,
    .switch_semaphore = &osvrt_switch_semaphore,
    .spawn_semaphore = &osvrt_spawn_semaphore,
    .exit_semaphore = &osvrt_exit_semaphore,
    .cpu_rx_poll = osvrt_cpu_rx_poll,
    .wait_prepare = osvrt_wait_prepare,
    .wait_abort = osvrt_wait_abort,
};

const struct osvrt_core_api *osvrt_core_api(void)
{
    return &api;
}
