"""Load balancing, built outside the kernel on spawn, sleep and move_out.

One balancer green thread per CPU, pinned to it, as in OSv [core/sched.cc
795-845], with the two weaknesses of OSv's fixed (its issue #396, PR #1464):

- a pass moves the whole excess (until the least loaded CPU is within one of
  us), not one thread per pass; and it runs every `balance_interval`
  (default 10 ms), not every 100 ms;
- an idle CPU does not wait for any balancer: before it sleeps it asks the
  busiest CPU for work (Worker._ask_for_work), and that CPU hands threads over
  at its very next trap (Worker._serve_pull).  Run queues keep their single
  owner: a CPU only ever gives its own threads away.

Moved threads are the movable (unpinned) queued ones with the largest decayed
runtime; their runtime is exported and imported (fair.py).

balance_policy="osv" reproduces OSv's behaviour instead (one thread per pass,
no idle pull), so the two can be compared in one run.

Under the GIL, spreading CPU-bound Python threads buys no speed: two workers
share one interpreter lock.  The balancer still keeps load and fairness right,
and pays off for threads that spend their time in nogil code (C, numba).
"""
from . import kernel

POLICIES = ("osvrt", "osv")


async def balancer(worker, interval, one_per_pass):
    while True:
        await kernel.sleep(interval)
        if worker.runq:
            worker.balance_once(one_per_pass)
