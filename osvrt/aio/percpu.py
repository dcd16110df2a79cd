"""run_per_cpu: the per-core pattern for asyncio code on osvrt.

asyncio code assumes one thread, so one loop never spreads over CPUs.  The
pattern for several cores is one loop per CPU, each with its own listener
(reuse_port=True: the kernel spreads the connections over them), as
`python -m osvrt.aio.bench_cpus` measures it ("threads").  run_per_cpu runs
one coroutine function that way: one osvrt loop per CPU, each in its own OS
thread pinned to its CPU (the calling thread runs the first), and returns
their results.  The first failure cancels the other loops' main tasks.
"""
import asyncio
import threading
from typing import Any, Callable

from ..runtime import resolve_cpus
from .loop import new_event_loop

__all__ = ["run_per_cpu"]


def run_per_cpu(main: Callable[..., Any], *args: Any, cpus: Any = None,
                **runtime_options: Any) -> list:
    """Run `await main(*args)` on one osvrt event loop per CPU, in parallel;
    return the results in the order of the CPUs.

    cpus: as osvrt.Runtime's (None: every CPU this process may use; an int n:
    the first n; an iterable: those ids; bad values: ValueError naming them).
    runtime_options: the loops' osvrt.Runtime options.  Each loop runs in
    its own OS thread pinned to its CPU (osvrt.new_event_loop(cpu=c)); the
    calling thread runs the first CPU's loop, so Ctrl-C reaches it.  When a
    main fails (or the caller is interrupted), the other loops' main tasks are
    cancelled and waited for; then the failures are raised: an Exception
    group of every main's Exception, or the first BaseException that is not
    one (KeyboardInterrupt, SystemExit) as itself."""
    if not callable(main):
        raise TypeError(f"main must be an async function, not {main!r}")
    ids = resolve_cpus(cpus)
    n = len(ids)
    tasks: list = [None] * n
    loops: list = [None] * n
    results: list = [None] * n
    errors: dict = {}
    failed = threading.Event()

    def cancel_all():
        for loop, task in zip(loops, tasks):
            if loop is not None and task is not None:
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:
                    pass                  # that loop closed meanwhile: its main ended

    async def run_main(i):
        tasks[i] = asyncio.current_task()
        # Published the task, then looked at the flag; a failure sets the flag,
        # then looks at the tasks (threading.Event orders both): one of the
        # two sees the other, so no loop is left running.
        if failed.is_set():
            raise asyncio.CancelledError
        return await main(*args)

    def run_loop(i):
        try:
            with asyncio.Runner(loop_factory=lambda: new_event_loop(
                    cpu=ids[i], **runtime_options)) as runner:
                loops[i] = runner.get_loop()
                results[i] = runner.run(run_main(i))
        except BaseException as e:
            errors[i] = e
            failed.set()
            cancel_all()

    threads = [threading.Thread(target=run_loop, args=(i,), name=f"osvrt-loop-cpu{ids[i]}")
               for i in range(1, n)]
    for t in threads:
        t.start()
    try:
        run_loop(0)
    finally:
        for t in threads:
            t.join()
    if not errors:
        return results
    firsts = [errors[i] for i in sorted(errors)]
    cause = [e for e in firsts if not isinstance(e, asyncio.CancelledError)]
    fatal = [e for e in cause if not isinstance(e, Exception)]
    if fatal:
        raise fatal[0]
    if not cause:                      # every failure was a cancel (a main cancelled itself)
        raise firsts[0]
    raise ExceptionGroup(f"run_per_cpu: {len(cause)} of {n} loops failed", cause)
