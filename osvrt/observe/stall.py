"""The stall detector: reports a green thread that runs too long without a trap.

Scheduling is cooperative, so a thread that computes for 200 ms without an
await holds its whole CPU (and, under the GIL, delays every worker).  A
watchdog OS thread looks at each worker every threshold/4.  A run (the pair
current thread, run_start that the worker stores per resume) is a stall when

* the worker's OS thread has used more than `threshold` seconds of CPU time
  since the watchdog first saw that run (its thread CPU clock,
  pthread_getcpuclockid): what the thread itself computed, not the time it
  spent waiting for the GIL that another worker held, nor time the OS gave
  to other processes; or
* the run has lasted `wall_bound` seconds of wall-clock time (5 x threshold,
  at least 0.5 s) and the worker's OS thread is blocked in a system call
  other than futex: a time.sleep(), a blocking read, ...  A thread waiting
  for the GIL waits in futex, so two busy workers sharing the GIL are never
  blamed for each other.  (So a green thread blocked on an OS lock, also a
  futex wait, is reported only when it computes: a known blind spot.)

Each stall is logged once per thread, with the thread's name, its CPU, where
it is and how long it has run (CPU and wall), and counted in stats().
"""
import logging
import platform
import sys
import time
import weakref

from .printable import printable
from .watcher import Watcher

log = logging.getLogger("osvrt")

# stall_threshold's bounds (Runtime checks them): the watchdog wakes every
# threshold / 4, so 1 ms is a wake-up every 250 us, and a day is far below
# threading.TIMEOUT_MAX.
STALL_THRESHOLD_MIN = 0.001
STALL_THRESHOLD_MAX = 86400

# futex(2)'s system call number, by machine: a thread in it may be waiting for the GIL.
_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98,
          "i386": 240, "i686": 240, "armv7l": 240, "ppc64le": 221, "s390x": 238}.get(
              platform.machine().lower())


def _where(frame):
    if frame is None:
        return "unknown location"
    # a file name is the program's to choose: shown with control characters escaped
    return (f"{printable(frame.f_code.co_filename)}:{frame.f_lineno} in "
            f"{printable(frame.f_code.co_name)}")


def _cpu_clock(os_thread):
    """The CPU-time clock of a worker's OS thread, or None where there is none."""
    try:
        return time.pthread_getcpuclockid(os_thread.ident)
    except (AttributeError, OSError, TypeError):
        return None


def _syscall(native_id):
    """The system call the OS thread is blocked in ('running' when on a CPU,
    None if unknown), from /proc/self/task/<tid>/syscall."""
    try:
        with open(f"/proc/self/task/{native_id}/syscall", "rb") as f:
            first = f.read(32).split(None, 1)[0]
    except (OSError, IndexError, TypeError):
        return None
    if first == b"running":
        return "running"
    try:
        return int(first)
    except ValueError:
        return None


def blocked_in_syscall(native_id):
    """True if the OS thread sits in a system call other than futex.  Not when
    it is on a CPU ('running') or runnable in user mode (-1): a loaded host
    that preempts a computing worker must not make it look blocked; its CPU
    clock reports it once it has computed past the threshold."""
    nr = _syscall(native_id)
    return _FUTEX is not None and isinstance(nr, int) and nr >= 0 and nr != _FUTEX


class StallWatchdog(Watcher):
    def __init__(self, workers, threshold):
        self._workers = workers
        self._threshold = threshold
        self._wall_bound = max(5 * threshold, 0.5)
        self._seen = {}                  # worker -> (thread, run_start, cpu time then)
        self._reported = weakref.WeakSet()   # threads already reported: once each
        self._clocks = {}                # worker -> its OS thread's CPU clock id
        super().__init__("osvrt-stall-watchdog")

    def _run(self):
        try:
            period = self._threshold / 4
            while not self._stopped.wait(period):
                for w in self._workers:
                    self._check(w)
        except Exception:
            # Stall detection is off from here on: say so where the program's
            # logs go, not only on threading's excepthook.
            log.exception("osvrt: the stall watchdog failed; stalls are no longer reported")

    def _cpu_time(self, w):
        clk = self._clocks.get(w, False)
        if clk is False:
            clk = self._clocks[w] = _cpu_clock(w.os_thread)
        if clk is None:
            return None
        try:
            return time.clock_gettime(clk)
        except OSError:                  # the worker's OS thread has ended
            return None

    def _check(self, w):
        t = w.current
        start = w.run_start              # with t, names this run
        if t is None or w.current is not t:
            self._seen.pop(w, None)
            return
        cpu_now = self._cpu_time(w)
        seen = self._seen.get(w)
        if seen is None or seen[0] is not t or seen[1] != start:
            # A new run: its CPU time counts from here (at most a period late).
            self._seen[w] = (t, start, cpu_now)
            return
        if t in self._reported:
            return
        wall = time.monotonic() - start
        if cpu_now is not None and seen[2] is not None:
            cpu = cpu_now - seen[2]
            computed = cpu > self._threshold
        else:
            cpu = None
            computed = wall > self._threshold      # no CPU clock: wall time as before
        blocked = False
        if not computed:
            if wall <= self._wall_bound:
                return
            blocked = blocked_in_syscall(w.os_thread.native_id)
            if not blocked:
                return
        frame = sys._current_frames().get(w.os_thread.ident)
        if w.current is not t or w.run_start != start:   # it trapped meanwhile
            return
        self._reported.add(t)
        w.stalls += 1
        how = (f"{cpu * 1e3:.0f} ms of CPU in {wall * 1e3:.0f} ms" if cpu is not None
               else f"{wall * 1e3:.0f} ms")
        if blocked:
            how = f"{wall * 1e3:.0f} ms, blocked in a system call,"
        log.warning("osvrt: green thread %r has run %s on CPU %d without a trap (at %s); "
                    "it holds that CPU until it awaits", t.name, how, w.cpu_id, _where(frame))
