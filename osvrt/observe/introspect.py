"""osvrt.threads(): the live green threads of the running runtime, and the
stats publisher (the busiest threads for `python -m osvrt top`, the names
of named threads for a trace)."""
import collections
import heapq
import logging
import time

from .. import kernel, thread
from ..thread import decayed_runtime
from .watcher import Watcher

log = logging.getLogger("osvrt")

ThreadInfo = collections.namedtuple(
    "ThreadInfo", "name id state cpu runtime pinned priority")
ThreadInfo.__doc__ = """A snapshot of one green thread (osvrt.threads()).

name, id, state ('unstarted', 'queued', 'running', 'waiting', 'terminated'),
cpu (the host CPU it belongs to), runtime (its decayed runtime in seconds:
the CPU time it used lately, each second worth exp(-age/0.2); what OSv's
fair rule compares), pinned, priority."""


def info(t):
    return ThreadInfo(t.name, t.id, t.state, t.cpu, decayed_runtime(t), t.pinned, t.priority)


def threads():
    """The live green threads of the runtime this green thread runs in, as
    ThreadInfo(name, id, state, cpu, runtime, pinned, priority) snapshots in
    id order (the runtime's own balancer and stop threads are left out).
    RuntimeError outside a runtime, as osvrt.current()."""
    w = kernel.current_worker()
    if w is None:
        raise kernel.outside()
    return sorted((info(t) for t in w.rt.live_threads()), key=lambda i: i.id)


class Publisher(Watcher):
    """An OS thread that, about twice a second (ten times while tracing), looks at the live threads:
    it publishes the busiest ones into the stats file (stats is a
    statsfile.StatsFile or None) and notes the names of named threads for a
    trace (names is a dict or None).  A look holds the GIL for a time that
    grows with the number of live threads; the period grows with it, so
    that looking never takes more than about 2% of the time."""

    PERIOD = 0.5
    TRACE_PERIOD = 0.1          # while tracing: catch more short-lived named threads
    BUDGET = 0.02

    def __init__(self, rt, stats, names):
        self._period = self.PERIOD if names is None else self.TRACE_PERIOD
        self._rt = rt
        self._stats = stats
        self._names = names
        super().__init__("osvrt-stats")

    def _run(self):
        period = self._period
        while not self._stopped.wait(period):
            t0 = time.perf_counter()
            try:
                self.look()
            except Exception:             # never let it kill the program; say once
                log.exception("osvrt: the stats publisher failed; it stops")
                return
            spent = time.perf_counter() - t0
            period = max(self._period, spent / self.BUDGET)

    def look(self):
        live = self._rt.live_threads()
        if self._names is not None:
            thread.note_names(live, self._names)
        if self._stats is not None:
            busiest = heapq.nlargest(10, ((decayed_runtime(t), t) for t in live),
                                     key=lambda e: e[0])
            self._stats.publish_threads(
                [(t.id, t.name, t.cpu, r, t.state) for r, t in busiest])
