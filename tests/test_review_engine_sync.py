"""The engine's cross-thread fields, from review: each test reproduces what
the reviewer's script showed before its fix (a segfault of join() racing the
target's end, a segfault reading an unstarted Thread, a silent hang awaiting
another thread's wait).  The crashes run in a child process."""
import subprocess
import sys
import textwrap

import pytest

import osvrt
import osvrt._engine as E
from support import bounded


def run_child(code, timeout=120):
    return subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout)


JOIN_RACE = """
    # join_arm allocated its list between two reads of the target's joiners,
    # unlocked against the target's end on another worker: a GC pass inside
    # that allocation that let the GIL go (a finalizer may) let the target end
    # and join_arm then read a NULL list.
    import faulthandler, gc, threading, time, osvrt
    faulthandler.enable()
    ARM, HITS = [None], [0]

    def cb(phase, info):
        if phase == "start" and ARM[0] == threading.get_ident():
            ARM[0] = None
            HITS[0] += 1
            time.sleep(0.02)             # lets the GIL go, as a finalizer may

    gc.callbacks.append(cb)

    async def target(go):
        await go.wait()

    async def main():
        other = 1 - osvrt.current().worker.cpu_id
        for trial in range(TRIALS):
            go = osvrt.Event()
            t = osvrt.spawn(target, go, cpu=other)
            await osvrt.sleep(0.002)
            for _ in range(64):          # timed-out joins: the next arm renews the list
                try:
                    await t.join(timeout=0)
                except TimeoutError:
                    pass
            tk = t.join(timeout=5)
            junk = [[] for _ in range(trial % 3)]
            go.set()                     # t ends on the other worker
            ARM[0] = threading.get_ident()
            gc.set_threshold(1, 10, 10)
            try:
                await tk
            finally:
                gc.set_threshold(700, 10, 10)
                ARM[0] = None
        return HITS[0]

    print("hits", osvrt.run(main, cpus=[0, 1]))
"""


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_join_racing_the_targets_end_on_another_worker_does_not_crash():
    done = run_child(JOIN_RACE.replace("TRIALS", "120"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 0      # the window was really opened


@pytest.mark.parametrize("call", ["t.worker", "t._wait_done(0.01)"])
def test_an_unstarted_thread_raises_instead_of_crashing(call):
    done = run_child(f"""
        import osvrt._engine as E
        t = E.ThreadBase.__new__(E.ThreadBase)
        try:
            {call}
        except RuntimeError as e:
            print("raised:", e)
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "never started by a runtime" in done.stdout


def test_wait_done_refuses_a_nan_timeout():
    async def main():
        return osvrt.current()

    rt = osvrt.Runtime(cpus=[0]).start()
    try:
        t = rt.submit(main).result(10)
        with pytest.raises(ValueError, match="nan"):
            E.ThreadBase._wait_done(t, float("nan"))
    finally:
        rt.stop(timeout=5)


def test_awaiting_another_threads_wait_is_an_error_not_a_hang():
    from osvrt import kernel

    async def sleeper():
        await osvrt.sleep(5)
        return "a resumed"

    async def main():
        a = osvrt.spawn(sleeper)
        await osvrt.sleep(0.05)
        tk = a.new_ticket()              # a wait of A (as wait morphing opens one)...
        with pytest.raises(RuntimeError, match="awaited a wait made by"):
            await tk                     # ...awaited by another thread
        kernel.wake(tk)                  # its owner's wake ends it: A resumes
        return await a.join(timeout=5)

    assert bounded(lambda: osvrt.run(main, cpus=1)) == "a resumed"


def test_a_thread_woken_by_the_before_idle_hook_runs_before_the_worker_sleeps(monkeypatch):
    # The worker's idle ran its hook (Python code: the balancer's pull, and
    # any finalizer a GC pass there runs), then slept: a thread the hook woke
    # on this worker's own run queue rings no doorbell, so it waited for the
    # next timer (the balancer's, an hour away here): a hang.
    from osvrt import balancer
    armed = []
    real = balancer.ask_for_work

    def ask_for_work(w):
        if armed:
            armed.pop().set()            # as a finalizer run in the hook may
        return real(w)

    monkeypatch.setattr(balancer, "ask_for_work", ask_for_work)

    async def waiter(ev):
        await ev.wait()

    async def main():
        for _ in range(3):
            ev = osvrt.Event()
            w = osvrt.spawn(waiter, ev)
            await osvrt.sleep(0.01)
            armed.append(ev)             # set in this worker's next idle
            await w.join()

    bounded(lambda: osvrt.run(main, cpus=2, balance_interval=3600, stall_threshold=None),
            timeout=20)
