"""Load balancing, built outside the kernel on spawn, sleep and move_out.

One balancer green thread per CPU, pinned to it, as in OSv [core/sched.cc
795-845], with the two weaknesses of OSv's fixed (its issue #396, PR #1464):

- a pass moves the whole excess (until the least loaded CPU is within one of
  us), not one thread per pass; and it runs every `balance_interval`
  (default 10 ms), not every 100 ms;
- an idle CPU does not wait for any balancer: before it sleeps it asks the
  busiest CPU for work (ask_for_work), and that CPU hands threads over
  at its very next trap (Worker._serve_pull -> give_work).  Run queues keep their single
  owner: a CPU only ever gives its own threads away.

Moved threads are the movable (unpinned) queued ones with the largest decayed
runtime; their runtime is exported and imported (fair.py).

balance_policy="osv" reproduces OSv's behaviour instead (one thread per pass,
no idle pull), so the two can be compared in one run.

Under the GIL, spreading CPU-bound Python threads buys no speed: two workers
share one interpreter lock.  The balancer still keeps load and fairness right,
and pays off for threads that spend their time in nogil code (C, numba).

The policy lives here (which threads move where: movable, balance_once,
give_work, offer_work, ask_for_work); the mechanism (Worker.move_out: only a
run queue's owner moves its threads) is worker.py's.
"""
from . import fair, kernel

POLICIES = ("osvrt", "osv")


async def balancer(worker, interval, one_per_pass):
    while True:
        await kernel.sleep(interval)
        if worker.runq:
            worker.balance_once(one_per_pass)


_MOVE_SCAN = 256             # run-queue entries a balancer pass or a pull looks at


def offer_work(w):
    """w has queued threads: hand some to an idle CPU now, rather than wait
    until it asks (it only asks as it goes idle, or at its balancer tick).
    Called at most once per OFFER_PERIOD from a YIELD trap (Worker._offer_work)."""
    for other in w.rt.workers:
        if other is not w and other.is_idle() and not other.pull_pending:
            w.work_offers += 1
            give_work(w, other)
            return


def movable(w):
    """w's queued threads worth moving, largest R'' first (OSv moves those:
    they have had the most CPU lately).  Pinned threads never move; nor do
    threads whose decayed runtime is below min_move_runtime (new threads,
    threads that mostly wait): under the GIL a move only pays for a thread
    that computes, and every later cross-CPU wake of it costs a C call that
    invites a GIL hand-off (docs/design.md, "The GIL").  A CPU hog passes the
    bar after its first slice."""
    floor = w.min_move_runtime * w.c / fair.TAU   # in R'' units (fair.true_runtime)
    # Look only at the heap's last _MOVE_SCAN entries: they are leaves,
    # where the largest R'' sit, and it keeps a pull O(1) even when a CPU
    # queues 100,000 new threads that are not worth moving.
    tail = w.runq_tail(_MOVE_SCAN)
    return sorted((e for e in tail if not e[2].pinned and e[0] >= floor),
                  key=lambda e: -e[0])


def balance_once(w, one_per_pass=False):
    """A balancer pass on w's CPU: while the least loaded CPU is more than one
    behind us, move it our largest-R'' movable thread.  OSv moves one thread
    per pass; we move the whole excess."""
    others = [o for o in w.rt.workers if o is not w]
    if not others or not w.runq_len:
        return 0
    loads = {o: o.load() for o in others}
    # Our load without the balancer (it is about to sleep again), and a move
    # only while the difference is 2 or more, as OSv's cpu::load_balance
    # ("don't migrate a thread away if the difference is only 1"): moving
    # at a difference of 1 only swaps the loads, and bounced a reader that
    # polls its net channel between the CPUs at every pass (issue #18).
    mine = w.runq_len
    plan = {}
    for _, _, t in movable(w):
        target = min(loads, key=loads.get)
        if loads[target] >= mine - 1:
            break
        plan.setdefault(target, []).append(t)
        loads[target] += 1
        mine -= 1
        if one_per_pass:
            break
    for target, threads in plan.items():
        w.move_all(threads, target)
    return sum(len(v) for v in plan.values())


def give_work(w, requester):
    """Hand `requester` (an idle CPU) threads from w until their loads are
    within one (run on w's own OS thread: w owns its run queue)."""
    mine = w.runq_len + 1
    theirs = requester.load()
    give = []
    for _, _, t in movable(w):
        if theirs >= mine - 1:
            break
        give.append(t)
        theirs += 1
        mine -= 1
    if give:
        w.move_all(give, requester)


def ask_for_work(w):
    """w is about to idle: ask the busiest other CPU to hand us threads at its
    next trap (it owns its run queue; we never take from it)."""
    busiest = None
    most = 0
    for other in w.rt.workers:
        if other is not w and other.runq_len > most:
            busiest, most = other, other.runq_len
    if busiest is not None and busiest.request_pull(w):
        w.pull_requests += 1
