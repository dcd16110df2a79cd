"""fork() after a Runtime started (issue 21, item 7): in the child, the
inherited runtime refuses work with a RuntimeError that says why (its worker
threads did not survive the fork) instead of returning a Future that never
resolves; stop() there returns at once; a new Runtime in the child works; the
parent's runtime is untouched."""
import os
import select
import time

import osvrt


async def _double(x):
    await osvrt.sleep(0)
    return 2 * x


def _child(rt, wfd):
    """Runs in the forked child; reports one line per check, then _exit()s."""
    out = []
    try:
        fut = None
        try:
            fut = rt.submit(_double, 1)
            out.append("submit did not raise")
        except RuntimeError as e:
            out.append("submit refused" if "fork" in str(e) and str(os.getppid()) in str(e)
                       else f"submit: wrong message {e}")
        try:
            rt.run(_double, 1)
            out.append("run did not raise")
        except RuntimeError as e:
            out.append("run refused" if "fork" in str(e) else f"run: wrong message {e}")
        t0 = time.monotonic()
        rt.stop(timeout=None)
        out.append("stop returned" if time.monotonic() - t0 < 5 else "stop was slow")
        out.append(f"new runtime {osvrt.run(_double, 21, cpus=1, handle_signals=False)}")
        if fut is not None:
            fut.cancel()
    except BaseException as e:         # report, never raise out of a forked pytest
        out.append(f"error {e!r}")
    os.write(wfd, ("\n".join(out) + "\n").encode())
    os._exit(0)


def test_inherited_runtime_fails_clearly_in_a_forked_child():
    rt = osvrt.Runtime(cpus=1)
    rt.start()
    try:
        assert rt.submit(_double, 2).result(timeout=10) == 4
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _child(rt, w)
        os.close(w)
        data = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], deadline - time.monotonic())
            if not ready:
                break
            chunk = os.read(r, 4096)
            if not chunk:
                break
            data += chunk
        os.close(r)
        if not data:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        lines = data.decode().splitlines()
        assert lines == ["submit refused", "run refused", "stop returned", "new runtime 42"], \
            (lines, status)
        assert os.waitstatus_to_exitcode(status) == 0
        # the parent's runtime is untouched by the child
        assert rt.submit(_double, 5).result(timeout=10) == 10
    finally:
        rt.stop(timeout=5)


def test_a_runtime_stopped_before_fork_stays_stopped_in_the_child():
    rt = osvrt.Runtime(cpus=1)
    rt.start()
    rt.stop(timeout=5)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            rt.submit(_double, 1)
            msg = "no error"
        except RuntimeError as e:
            msg = "stopped" if "stopped" in str(e) else str(e)
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    select.select([r], [], [], 30)
    got = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert got == "stopped"


async def _in_a_pool_thread(x):
    return await osvrt.to_thread(lambda: 3 * x)


def _fork_while_held(locks, child):
    """Fork while another thread holds `locks`; child() runs in the child
    and returns a line to report.  Returns that line, or "the child hung"
    after 30 s (the child is killed)."""
    import threading
    held, release = threading.Event(), threading.Event()

    def hold():
        for lk in locks:
            lk.acquire()
        held.set()
        release.wait(60)
        for lk in locks:
            lk.release()
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                msg = child()
            except BaseException as e:         # report, never raise out of a forked pytest
                msg = f"error {e!r}"
            os.write(w, msg.encode())
            os._exit(0)
        os.close(w)
        ready, _, _ = select.select([r], [], [], 30)
        got = os.read(r, 4096).decode() if ready else "the child hung"
        os.close(r)
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        return got
    finally:
        release.set()
        holder.join(10)


def test_locks_held_by_another_thread_at_fork_are_new_in_the_child():
    """Another thread of the parent holds the engine set-up's lock and the
    offload pools' lock while this one forks: that thread does not exist in
    the child, so a copied lock would stay held for ever there.  The child
    gets new ones: the engine's set-up (done again, as if the other thread
    had left it half done) and a new runtime's to_thread both work."""
    from osvrt import _setup, offload

    def child():
        _setup._done = False
        return f"ran {osvrt.run(_in_a_pool_thread, 7, cpus=1, handle_signals=False)}"
    assert _fork_while_held([_setup._lock, offload._pools_lock], child) == "ran 21"


_MODULE_LOCKS = [("osvrt._setup", "_lock"), ("osvrt.offload", "_pools_lock"),
                 ("osvrt.anyio_names", "_lock"), ("osvrt.net.tcp.stack", "_service_lock"),
                 ("osvrt.net.channels.service", "_make_lock")]


def test_every_module_lock_is_free_in_a_child_forked_while_it_was_held():
    """Each module-level lock osvrt takes from any thread, held by another
    thread at the fork, is free in the child (osvrt._fork.new_lock_in_child)."""
    import importlib

    def lock(m, n):
        return getattr(importlib.import_module(m), n)
    got = _fork_while_held([lock(m, n) for m, n in _MODULE_LOCKS],
                           lambda: repr([lock(m, n).locked() for m, n in _MODULE_LOCKS]))
    assert got == repr([False] * len(_MODULE_LOCKS))
