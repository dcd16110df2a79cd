"""osvrt: green threads scheduled the way the OSv unikernel schedules threads,
on the host's own CPUs.

    import osvrt

    async def worker(n):
        await osvrt.sleep(0.01 * n)
        return n

    async def main():
        async with osvrt.TaskGroup() as g:
            threads = [g.spawn(worker, n) for n in range(4)]
        return [await t.join() for t in threads]

    print(osvrt.run(main))           # [0, 1, 2, 3]


Every public name has its own help(): help(osvrt.run), help(osvrt.Runtime),
help(osvrt.spawn), help(osvrt.Thread), help(osvrt.TaskGroup), ...  The
reference for all of them is docs/api.md in the source distribution and the
project's repository; docs/design.md explains how the runtime works."""
from ._version import __version__
from . import _engine

if getattr(_engine, "__file__", None) is None:
    # osvrt/_engine/ holds the engine's C sources, so without the built
    # extension Python imports that folder as an empty namespace package and
    # the first use fails far from the cause (no attribute 'PARK').
    raise ImportError(
        f"osvrt's C extensions are not built in {__path__[0]}: a source checkout came "
        f"first on sys.path (python -m puts the current folder there). Run Python with "
        f"-P, or from another folder, to use the installed osvrt, or build this one "
        f"with pip install -e .", name=__name__, path=__path__[0])
from .deadline import move_on_after, timeout
from .combinators import as_completed, gather, shield, wait_for
from .observe.introspect import ThreadInfo, threads
from .kernel import current, sleep, yield_now
from .runtime import Runtime, run, spawn
from .taskgroup import TaskGroup
from .sync import (Condition, Event, Mutex, Queue, QueueClosed, QueueEmpty, QueueFull,
                   Semaphore)
from .thread import Cancelled, Thread
from .readiness import (BusyResourceError, ClosedResourceError, notify_closing, wait_readable,
                 wait_writable)
from .offload import to_thread

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio


def new_event_loop(*, cpu: int | None = None, cpus: Any = None,
                   **runtime_options: Any) -> "asyncio.AbstractEventLoop":
    """A new asyncio event loop that runs on an osvrt Runtime (osvrt.aio):
    asyncio.Runner(loop_factory=osvrt.new_event_loop), anyio's
    backend_options={"loop_factory": osvrt.new_event_loop}.  Imports osvrt.aio
    only when called."""
    from .aio import new_event_loop as make
    return make(cpu=cpu, cpus=cpus, **runtime_options)


from . import net  # noqa: E402  (osvrt.net.udp_bind, as in docs/api.md; imports nothing heavy)

__all__ = [
    "__version__", "Cancelled", "Condition", "Event", "Mutex", "Queue", "QueueClosed", "QueueEmpty", "QueueFull",
    "Runtime", "Semaphore", "TaskGroup", "Thread", "ThreadInfo", "current", "run", "sleep",
    "spawn", "threads", "timeout", "yield_now", "net", "wait_readable", "wait_writable",
    "notify_closing", "to_thread", "ClosedResourceError", "BusyResourceError",
    "new_event_loop", "move_on_after", "gather", "as_completed", "wait_for", "shield",
]
