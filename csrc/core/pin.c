#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>

#include "osvrt.h"

int osvrt_current_cpu(void)
{
    return sched_getcpu();
}

int osvrt_pin_self(int cpu)
{
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        return 22; /* EINVAL */
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}
