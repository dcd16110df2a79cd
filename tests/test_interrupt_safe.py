"""osvrt.interrupt_safe.InterruptSafeEvent: threading.Event's set/clear/wait,
with a set() that never blocks (runtime.py's stop() waits; the watchers)."""
import threading
import time

from osvrt.interrupt_safe import InterruptSafeEvent
from support import bounded


def test_it_starts_clear_and_a_wait_times_out():
    ev = InterruptSafeEvent()
    assert not ev.is_set()
    t0 = time.monotonic()
    assert ev.wait(0.05) is False
    assert time.monotonic() - t0 >= 0.04
    assert ev.wait(0) is False


def test_set_is_seen_by_every_wait_until_cleared():
    ev = InterruptSafeEvent()
    ev.set()
    ev.set()                                  # twice: still just set
    assert ev.is_set()
    assert ev.wait(0) and ev.wait(0.01) and ev.wait()
    ev.clear()
    ev.clear()                                # twice: still just clear
    assert not ev.is_set() and ev.wait(0) is False


def test_a_set_from_another_thread_ends_a_wait():
    ev = InterruptSafeEvent()
    threading.Timer(0.05, ev.set).start()
    assert ev.wait(10) is True


def test_set_never_blocks_and_an_interrupted_wait_keeps_the_state():
    """A Ctrl-C that lands in wait() right after it took the gate still gives
    it back (a finally), so the event stays set for every later wait; and
    set() returns at once from any number of threads at the same time."""
    ev = InterruptSafeEvent()

    def interrupted_wait():
        gate_acquire = ev._gate.acquire
        try:
            ev._gate = _Interrupting(gate_acquire, ev._gate)
            ev.wait(1)
        except KeyboardInterrupt:
            pass
        finally:
            ev._gate = ev._gate.real

    threading.Timer(0.05, ev.set).start()
    interrupted_wait()
    assert ev.is_set() and ev.wait(0) and ev.wait(0.01)
    done = []
    threads = [threading.Thread(target=lambda: (ev.set(), done.append(1))) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(5)
    assert len(done) == 8 and ev.is_set()


class _Interrupting:
    """The gate, but its acquire raises KeyboardInterrupt right after taking
    the lock: a signal landing just after the C call returned."""

    def __init__(self, acquire, real):
        self._acquire, self.real = acquire, real

    def acquire(self, *args):
        if self._acquire(*args):
            raise KeyboardInterrupt
        return False

    def release(self):
        self.real.release()


def test_a_set_that_lost_its_release_is_still_seen_within_a_slice(monkeypatch):
    """Ctrl-C between set()'s flag and its release (in a thread that sets):
    the gate stays shut, and a wait with no timeout still returns, on its
    next slice."""
    import osvrt.interrupt_safe as mod
    monkeypatch.setattr(mod, "GATE_SLICE_S", 0.05)
    ev = InterruptSafeEvent()
    threading.Timer(0.05, lambda: setattr(ev, "_flag", True)).start()   # no release
    t0 = time.monotonic()
    assert ev.wait() is True
    assert time.monotonic() - t0 < 5


def test_negative_and_zero_timeouts_poll():
    """(A first version's wait(-1) blocked for good: bounded here.)"""
    ev = InterruptSafeEvent()
    assert bounded(lambda: (ev.wait(-1), ev.wait(0)), timeout=5) == (False, False)
    ev.set()
    assert bounded(lambda: ev.wait(-1), timeout=5) is True


def test_waiters_in_many_threads_all_wake_on_one_set():
    ev = InterruptSafeEvent()
    woke = []
    threads = [threading.Thread(target=lambda: woke.append(ev.wait(10))) for _ in range(6)]
    for th in threads:
        th.start()
    time.sleep(0.05)
    ev.set()
    for th in threads:
        th.join(10)
    assert woke == [True] * 6


def test_many_setters_and_clearers_race_without_blocking_or_losing_the_last_set():
    ev = InterruptSafeEvent()
    stop = time.monotonic() + 0.3

    def churn():
        while time.monotonic() < stop:
            ev.set()
            ev.clear()
            ev.wait(0)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert not any(th.is_alive() for th in threads)
    ev.set()                                 # after the race, a set is a set
    assert ev.wait(1)
