"""Ctrl-C during osvrt.run(): main is cancelled, its cleanup runs, the runtime
stops (no worker OS thread left), and KeyboardInterrupt reaches the caller."""
import os
import signal
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent("""
    import sys, threading, osvrt
    async def main():
        try:
            print("ready", flush=True)
            await osvrt.sleep(60)
        finally:
            print("cleanup ran", flush=True)
    try:
        osvrt.run(main, cpus=2)
    except KeyboardInterrupt:
        left = [t.name for t in threading.enumerate() if t.name.startswith("osvrt-cpu")]
        print("KeyboardInterrupt; workers left:", left, flush=True)
        sys.exit(3)
    print("returned normally", flush=True)
""")


def test_ctrl_c_cancels_main_and_shuts_down(tmp_path):
    # cwd: not the repository root, whose osvrt/ source tree (no built _core)
    # would shadow the installed package for `python -c`.
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 3, (out, err)
    assert "cleanup ran" in out
    assert "KeyboardInterrupt; workers left: []" in out


def test_ctrl_c_never_leaves_a_worker_stuck_on_mains_future(tmp_path):
    """osvrt.run waited for main with concurrent.futures.wait: a Ctrl-C that
    landed while the main thread held the Future's condition lock (Python
    code) left it held, and the worker settling the Future blocked on it for
    good ("worker for CPU n is stuck", 1 Ctrl-C in 10).  Thirty tries, each
    with the interrupt at a slightly different moment."""
    bad = []
    for i in range(30):
        p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(0.05 + 0.004 * i)
            os.kill(p.pid, signal.SIGINT)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        if p.returncode != 3 or "workers left: []" not in out:
            bad.append((i, p.returncode, out[-200:], err[-300:]))
    assert bad == []


def run_child(script, tmp_path, timeout):
    """(exit status, stdout, stderr) of `python -c script`, run in tmp_path (not
    the repository root, whose osvrt/ source tree would shadow the installed
    package); a child still running after `timeout` s is killed, and the test
    fails saying it hung."""
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"the child hung: {out!r} {err[-800:]!r}")
    return p.returncode, out, err


# Child side: a trace function that raises KeyboardInterrupt once, at the
# return of a threading.py __enter__ whose caller where(frame) accepts (a
# signal landing just after a Python-level lock was taken); fired records it.
INTERRUPT_AT_ENTER = textwrap.dedent("""
    import sys, threading
    fired = []

    def interrupt_at_enter(where, on_fire=lambda: None):
        def interrupt(frame, event, arg):
            if not fired and event == "return" and where(frame.f_back):
                fired.append(frame.f_code.co_qualname)
                on_fire()
                raise KeyboardInterrupt
            return interrupt

        def tracer(frame, event, arg):
            code = frame.f_code
            if code.co_name == "__enter__" and code.co_filename == threading.__file__:
                return interrupt
            return None
        return tracer
""")

# Ctrl-C inside Runtime.stop(), delivered deterministically: a trace function
# in the main thread raises KeyboardInterrupt at the first point where the
# interrupt could leave a lock held (the return of a Python-level __enter__ in
# threading.py called by an Event's wait, or the interrupt-safe event's wait
# right after it took its lock), as a signal landing between those bytecodes
# would.
STOP_CHILD = INTERRUPT_AT_ENTER + textwrap.dedent("""
    import time, osvrt
    from osvrt import interrupt_safe
    rt = osvrt.Runtime(cpus=1, stats_file=False)
    rt.start()
    released = []

    async def stubborn():                 # outlives stop()'s first wait and its cancel
        while not released:
            try:
                await osvrt.sleep(0.02)
            except osvrt.Cancelled:
                pass

    class SlowService:                    # holds stop()'s finally a while: the thread
        def stop(self):                   # ends, and its worker sets stop()'s event
            time.sleep(0.5)

        def stats(self):
            return {}

    rt.attach_service("slow", SlowService())
    fut = rt.submit(stubborn)
    # threading.Event: just after its lock was taken in its wait()
    tracer = interrupt_at_enter(lambda caller: caller.f_code.co_name == "wait",
                                lambda: released.append(1))

    class InterruptedGate:                # the interrupt-safe event: just after its
        def __init__(self, gate):         # wait took the gate, as a signal checked
            self.gate = gate              # on the C call's return would land

        def acquire(self, *args):
            if fired or not args or not args[0]:
                return self.gate.acquire(*args)
            # The first sleeping wait: only now may stubborn end, so its
            # worker's set() opens the gate while stop() sleeps on it (left
            # to timing, the end could fall between two waits, where stop()
            # sees no live thread and never sleeps: 1 run in many under ASan).
            released.append(1)
            took = self.gate.acquire(True, 5)
            if took:
                fired.append("InterruptSafeEvent.wait")
                raise KeyboardInterrupt
            return took

        def release(self):
            self.gate.release()

    if isinstance(rt._all_done, interrupt_safe.InterruptSafeEvent):
        rt._all_done._gate = InterruptedGate(rt._all_done._gate)
    fallback = threading.Timer(3, released.append, (1,))    # if nothing fires: no hang
    fallback.daemon = True
    fallback.start()
    sys.settrace(tracer)
    try:
        rt.stop(timeout=10)
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    print("interrupted in", fired, flush=True)
    until = time.monotonic() + 5
    while not fut.done() and time.monotonic() < until:
        time.sleep(0.01)
    print("thread ended:", fut.done(), flush=True)
    rt.stop(timeout=5)
    left = [t.name for t in threading.enumerate() if t.name.startswith("osvrt-cpu")]
    print("workers left:", left, flush=True)
""")


def test_ctrl_c_inside_stop_never_leaves_a_lock_a_worker_needs(tmp_path):
    """stop() waited on a threading.Event that the worker ending the last
    thread sets: a Ctrl-C landing just after the Event's condition lock was
    taken (Condition.__enter__ is Python code) left it held, the worker's
    set() blocked for good, and the next stop() deadlocked on the same lock.
    The events stop() waits on are interrupt-safe now; this interrupts at
    the worst point of their wait too."""
    returncode, out, err = run_child(STOP_CHILD, tmp_path, timeout=30)
    assert returncode == 0, (out, err)
    assert "interrupted in ['InterruptSafeEvent.wait']" in out, out
    assert "thread ended: True" in out and "workers left: []" in out, (out, err)


SEAT_CHILD = INTERRUPT_AT_ENTER + textwrap.dedent("""
    import osvrt
    from osvrt.aio import loop as L
    loop = osvrt.new_event_loop()

    async def sleeper():
        await osvrt.sleep(3600)           # stop() needs the loop's seat to run its cleanup

    async def setup():
        osvrt.spawn(sleeper)

    loop.run_until_complete(setup())
    # a threading.Event's set() in the seat's run
    tracer = interrupt_at_enter(lambda caller: caller.f_code.co_name == "set"
                                and caller.f_back.f_code is L._Seat.run.__code__)
    sys.settrace(tracer)
    try:
        loop.close()
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    print("close() ended; interrupted:", bool(fired), flush=True)
""")


def test_ctrl_c_in_an_asyncio_loops_close_never_leaves_its_stop_waiting(tmp_path):
    """The loop's worker runs in a seat on the loop's thread, which close()
    runs while a helper thread stops the Runtime and waits for the seat to
    be left.  That wait was a threading.Event's, set by the loop's thread:
    a Ctrl-C just after the Event's condition lock was taken left the helper
    waiting for good, and close() with it.  The seat's event is
    interrupt-safe now (nothing to interrupt there)."""
    returncode, out, err = run_child(SEAT_CHILD, tmp_path, timeout=30)
    assert returncode == 0, (out, err)
    assert "close() ended" in out, (out, err)


LATER_STOPS_CHILD = textwrap.dedent("""
    import _thread, threading, time, osvrt
    from osvrt import _fork, interrupt_safe

    # 1. Ctrl-C right after stop()'s own work, before it says it is done.
    real_stopped = _fork.stopped

    def stopped(rt):
        real_stopped(rt)
        _thread.interrupt_main()          # as a SIGINT arriving now would

    _fork.stopped = stopped
    rt = osvrt.Runtime(cpus=1, stats_file=False, stall_threshold=None).start()
    try:
        rt.stop()
    except KeyboardInterrupt:
        pass
    _fork.stopped = real_stopped
    rt.stop(timeout=2)                    # TimeoutError ("another stop() ...") if stuck
    print("after an interrupted end: a later stop() returns", flush=True)

    # 2. A second stop() asleep on the first one's end, interrupted just as
    # it is woken (a lock taken, the signal checked on the C call's return).
    armed = []
    real_lock = threading.Lock

    class InterruptedLock:
        def __init__(self):
            self.lock = real_lock()

        def acquire(self, blocking=True, timeout=-1):
            took = self.lock.acquire(blocking, timeout)
            if (took and blocking and armed
                    and threading.current_thread() is threading.main_thread()):
                armed.clear()
                raise KeyboardInterrupt
            return took

        def release(self):
            self.lock.release()

        def locked(self):
            return self.lock.locked()

    class Threading:
        Lock = InterruptedLock

    interrupt_safe.threading = Threading  # the runtime's events get such locks
    rt = osvrt.Runtime(cpus=1, stats_file=False, stall_threshold=None)
    interrupt_safe.threading = threading

    class Slow:                           # holds the first stop() a while
        def stop(self):
            time.sleep(0.5)

        def stats(self):
            return {}

    rt.attach_service("slow", Slow())
    rt.start()
    first = threading.Thread(target=rt.stop)
    first.start()
    time.sleep(0.1)
    armed.append(1)
    try:
        rt.stop(timeout=5)
    except KeyboardInterrupt:
        pass
    first.join(10)
    rt.stop(timeout=2)
    print("after an interrupted second stop: a third stop() returns", flush=True)
""")


def test_an_interrupted_stop_never_leaves_later_stops_waiting(tmp_path):
    """A later stop() waits for the first one's end (_stopped).  A Ctrl-C
    between the first stop()'s work and its set(), or in a second stop()
    just as that set() woke it, left the event unset (or reading unset) for
    good, and every later stop() waited for it: a TimeoutError naming
    "another stop()", or a warning every 5 s with no timeout."""
    returncode, out, err = run_child(LATER_STOPS_CHILD, tmp_path, timeout=60)
    assert returncode == 0, (out, err[-1500:])
    assert "a later stop() returns" in out and "a third stop() returns" in out, (out, err)


SEAT_GAP_CHILD = textwrap.dedent("""
    import _thread, logging, time, osvrt
    logging.getLogger("osvrt").disabled = True      # its 5 s stop is expected here
    loop = osvrt.new_event_loop()

    async def sleeper():
        await osvrt.sleep(3600)

    async def setup():
        osvrt.spawn(sleeper)

    loop.run_until_complete(setup())
    rt = loop.runtime
    seat = rt.loop_worker.os_thread
    stats = rt._stats_file

    class InterruptedAfterClear:          # Ctrl-C just as the seat's clear() returns
        def __init__(self, ev):
            self.ev = ev

        def clear(self):
            self.ev.clear()
            _thread.interrupt_main()

        def __getattr__(self, name):
            return getattr(self.ev, name)

    seat._left = InterruptedAfterClear(seat._left)
    try:
        loop.close()
    except KeyboardInterrupt:
        pass
    seat._left = seat._left.ev
    time.sleep(0.5)
    print("seat alive:", seat.is_alive(), "stats file closed:", stats.closed, flush=True)
""")


def test_ctrl_c_as_the_seat_is_taken_still_ends_the_seat(tmp_path):
    """The seat cleared its event before its try: a Ctrl-C as clear()
    returned skipped the finally, so the seat read as alive for good, stop()
    called the loop's worker stuck, and the stats file stayed mapped."""
    returncode, out, err = run_child(SEAT_GAP_CHILD, tmp_path, timeout=60)
    assert returncode == 0, (out, err[-1500:])
    assert "seat alive: False stats file closed: True" in out, (out, err[-1500:])
