"""Live green threads are hidden from the cyclic GC (thread.c, thread_gc_hide):
the runtime's LiveSet holds each one until it ends, so no collection could
free it, and scanning it (with its coroutine and context) in every young and
full collection cost about 40% of a spawn + join.  These tests pin both
halves: nothing of a live thread is scanned, and everything is handed back to
the collector, tracked, whenever a thread leaves the set, so cycles through
ended or abandoned threads are still collected and CPython's own deallocators
(which expect a tracked coroutine and context) never see a hidden one."""
import contextvars
import gc
import threading
import weakref

import osvrt

from support import RESULT_TIMEOUT, run_once as run

_var = contextvars.ContextVar("gc_live_threads")


class Box:
    """A GC-tracked object to hang cycles on and watch with a weakref."""


def collected(refs):
    """For each weak reference, whether its object is gone after three full
    collections (a cycle freed in one may release another)."""
    for _ in range(3):
        gc.collect()
    return [r() is None for r in refs]


async def stubborn(box):
    """Sits in a cycle through box, and ignores every cancel: it outlives stop()."""
    box.me = osvrt.current()
    while True:
        try:
            await osvrt.sleep(3600)
        except osvrt.Cancelled:
            pass


def test_a_parked_thread_its_coroutine_and_context_are_not_scanned():
    async def parked(e):
        await e.wait()

    async def main():
        e = osvrt.Event()
        ts = [osvrt.spawn(parked, e) for _ in range(100)]
        await osvrt.sleep(0.001)
        hidden = [not gc.is_tracked(t) and not gc.is_tracked(t.coro) for t in ts]
        ids = {id(t) for t in ts} | {id(t.coro) for t in ts}
        scanned = sum(id(o) in ids for o in gc.get_objects())
        e.set()
        for t in ts:
            await t.join()
        return all(hidden), scanned, all(gc.is_tracked(t) for t in ts)

    hidden, scanned, tracked_after = run(main)
    assert hidden and scanned == 0
    assert tracked_after                   # an ended thread is the collector's again


def test_a_cycle_through_an_ended_thread_is_collected():
    """The outcome, the coroutine's frame and the context all point back at
    the thread: once it ends and the program lets go, a collection frees it."""
    refs = []

    async def child(box):
        box.me = osvrt.current()           # frame -> box -> thread
        _var.set(box)                      # context -> box -> thread
        return box                         # outcome -> box -> thread

    async def main():
        for _ in range(50):
            box = Box()
            t = osvrt.spawn(child, box)
            refs.append((weakref.ref(t), weakref.ref(box)))
            await t.join()
        return True

    assert run(main)
    gc.collect()
    assert sum(a() is not None or b() is not None for a, b in refs) == 0


def test_a_coroutine_kept_by_the_program_outlives_its_thread_safely():
    """CPython's coroutine dealloc untracks without a check: it must find the
    coroutine tracked again even when the thread is long gone."""
    kept = []

    async def child():
        return 1

    async def main():
        for _ in range(50):
            t = osvrt.spawn(child)
            kept.append((t.coro, weakref.ref(t)))
            await t.join()
        return True

    assert run(main)
    gc.collect()
    assert all(gc.is_tracked(c) and w() is None for c, w in kept)
    kept.clear()                           # the coroutines' deallocs run here
    gc.collect()


def test_threads_abandoned_at_stop_are_collected_with_their_runtime():
    """A thread that ignores its cancel outlives stop() in the LiveSet; when
    the runtime goes, the set hands it back to the collector, and the cycle it
    sits in is freed."""
    refs = []

    async def main():
        box = Box()
        refs.append(weakref.ref(osvrt.spawn(stubborn, box)))
        refs.append(weakref.ref(box))
        await osvrt.sleep(0.01)

    rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None, stats_file=False).start()
    rt.submit(main).result(timeout=RESULT_TIMEOUT)
    rt.stop(timeout=0.2)
    refs.append(weakref.ref(rt))
    del rt
    assert collected(refs) == [True, True, True]


def test_a_thread_left_on_a_worker_stuck_at_stop_is_collected_with_its_runtime():
    """stop() cannot touch the threads of a worker stuck in a blocking call;
    that worker hands them back to the collector itself when its loop ends."""
    import time
    release = threading.Event()

    async def stuck(box):
        box.me = osvrt.current()
        await osvrt.sleep(0.05)
        release.wait(20)                 # blocks the worker's OS thread across stop()
        while True:
            try:
                await osvrt.sleep(3600)
            except osvrt.Cancelled:
                pass

    async def main(box):
        osvrt.spawn(stuck, box)

    rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None, stats_file=False).start()
    box = Box()
    rt.submit(main, box).result(timeout=RESULT_TIMEOUT)
    time.sleep(0.2)
    rt.stop(timeout=0.1)                 # the worker is stuck: logged, left
    workers = list(rt.workers)
    release.set()
    for w in workers:
        w.os_thread.join(20)
    assert not any(w.os_thread.is_alive() for w in workers)
    refs = [weakref.ref(rt), weakref.ref(box), weakref.ref(box.me)]
    del rt, box, workers, w
    assert collected(refs) == [True, True, True]


def test_a_live_threads_coroutine_and_context_cannot_be_replaced():
    """A store would drop a hidden coroutine or context (CPython's deallocs
    of both crash on an untracked object)."""
    async def parked(e):
        await e.wait()

    async def main():
        e = osvrt.Event()
        t = osvrt.spawn(parked, e)
        await osvrt.sleep(0.001)
        refused = []
        for attr in ("_coro", "_ctx"):
            try:
                setattr(t, attr, None)
            except AttributeError:
                refused.append(attr)
        e.set()
        await t.join()
        return refused

    assert run(main) == ["_coro", "_ctx"]


def test_a_thread_moved_to_a_worker_after_its_loop_ended_is_collected():
    """A worker exposes its live threads as its loop ends; one moved to it
    after that (by a worker still running, as the balancer would) is exposed
    by stop() once every worker is joined."""
    import time
    from osvrt import kernel
    refs = []

    async def mover(x, there):
        while True:
            try:
                await osvrt.sleep(3600)
            except osvrt.Cancelled:
                time.sleep(0.3)              # CPU 1's loop ends meanwhile
                kernel.current_worker().move_out(x, there)

    async def main():
        box = Box()
        x = osvrt.spawn(stubborn, box, cpu=0)
        osvrt.spawn(mover, x, osvrt.current().worker.rt.worker_for(1), cpu=0)
        refs.extend([weakref.ref(x), weakref.ref(box)])
        await osvrt.sleep(0.05)

    rt = osvrt.Runtime(cpus=2, balance=False, stall_threshold=None, stats_file=False).start()
    rt.submit(main, cpu=0).result(timeout=RESULT_TIMEOUT)
    rt.stop(timeout=0.2)
    assert refs[0]().worker.cpu_id == rt.cpus[1]      # it did move after CPU 1 ended
    refs.append(weakref.ref(rt))
    del rt
    assert collected(refs) == [True, True, True]


def test_one_coroutine_cannot_run_in_two_live_threads():
    async def parked(e):
        await e.wait()

    async def main():
        e = osvrt.Event()
        c = parked(e)
        t = osvrt.spawn(lambda: c)
        try:
            osvrt.spawn(lambda: c)
        except RuntimeError as err:
            refused = str(err)
        else:
            refused = None
        other = parked(e)
        try:
            type(t).__init__(t, other, None, None, 1, t.worker, False, 1.0)
        except RuntimeError as err:
            reinit = str(err)
        else:
            reinit = None
        other.close()
        e.set()
        await t.join()
        return refused, reinit

    refused, reinit = run(main)
    assert refused is not None and "another live green thread already runs" in refused
    assert reinit is not None and "live green thread" in reinit


def test_collections_racing_spawns_ends_moves_and_cancels_leave_nothing_behind():
    """Stress: two workers with the balancer on spawn, end, move and cancel
    threads (some in cycles through their outcome) while an OS thread runs
    full collections back to back.  Every thread ends, the process survives
    (a hidden object freed would crash it; ASan+UBSan in CI), and every
    thread is collected afterwards."""
    import time
    stop_gc = threading.Event()
    collections = [0]

    def collector():
        while not stop_gc.is_set():
            gc.collect()
            collections[0] += 1

    async def leaf(i, box):
        box.me = osvrt.current()
        _var.set(box)
        if i % 3 == 0:
            await osvrt.sleep(0.0005)
        elif i % 3 == 1:
            await osvrt.yield_now()
        if i % 7 == 0:
            raise ValueError(i)
        return box

    async def parked():
        await osvrt.sleep(3600)

    async def wave(n, refs):
        ts, sleepers = [], []
        for i in range(n):
            box = Box()
            ts.append(osvrt.spawn(leaf, i, box))
            if i % 16 == 0:
                sleepers.append(osvrt.spawn(parked))
            refs.append(weakref.ref(box))
        for t in ts[::5] + sleepers:
            t.cancel()
        for t in ts + sleepers:
            try:
                await t.join()
            except (ValueError, osvrt.Cancelled):
                pass
        return len(ts) + len(sleepers)

    async def main(refs):
        deadline = time.monotonic() + 1.5
        done = 0
        while time.monotonic() < deadline:
            done += await wave(200, refs)
        return done

    refs = []
    gc_thread = threading.Thread(target=collector, daemon=True)
    rt = osvrt.Runtime(cpus=2, stall_threshold=None, stats_file=False).start()
    gc_thread.start()
    try:
        done = rt.submit(main, refs).result(timeout=RESULT_TIMEOUT)
    finally:
        stop_gc.set()
        gc_thread.join(30)
        rt.stop(timeout=5)
    assert done > 0 and collections[0] > 0
    assert len(rt.live_threads()) == 0
    del rt
    assert sum(not gone for gone in collected(refs)) == 0
