"""osvrt: green threads scheduled the way the OSv unikernel schedules threads,
on the host's own CPUs.  See README.md and DESIGN.md."""
from .deadline import timeout
from .kernel import current, sleep, yield_now
from .runtime import Runtime, run, spawn
from .taskgroup import TaskGroup
from .sync import Condition, Event, Mutex, Queue, QueueEmpty, QueueFull, Semaphore
from .thread import Cancelled, Thread

from . import net  # noqa: E402  (osvrt.net.udp_bind, as in DESIGN.md; imports nothing heavy)

__all__ = [
    "Cancelled", "Condition", "Event", "Mutex", "Queue", "QueueEmpty", "QueueFull",
    "Runtime", "Semaphore", "TaskGroup", "Thread", "current", "run", "sleep", "spawn", "timeout",
    "yield_now", "net",
]
