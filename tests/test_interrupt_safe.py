"""osvrt.interrupt_safe.InterruptSafeEvent: threading.Event's set/clear/wait,
with a set() that never blocks (runtime.py's stop() waits; the watchers)."""
import threading
import time

from osvrt.interrupt_safe import InterruptSafeEvent


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


def test_set_never_blocks_even_when_a_waiter_was_left_holding_the_lock():
    """A Ctrl-C that lands in wait() between its take and its give-back
    leaves the lock taken: that reads as clear, and set() still returns at
    once, from any number of threads at the same time."""
    ev = InterruptSafeEvent()
    ev.set()
    ev._clear.acquire()                      # the interrupted wait's state
    assert not ev.is_set()
    done = []
    threads = [threading.Thread(target=lambda: (ev.set(), done.append(1))) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(5)
    assert len(done) == 8 and ev.is_set()


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
