"""Synchronization between green threads, on any CPUs, built on the kernel's
park / wake (kernel.py).  Each waiter parks on a ticket that it publishes on
the primitive's wait list before re-checking the condition, so no wake-up is
lost; a wake of a thread on another CPU goes through that CPU's pushlist.
"""
from . import kernel


class Event:
    """A flag that green threads can wait for."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self):
        self._flag = False
        self._waiters = []

    def __repr__(self):
        return f"<osvrt.Event {'set' if self._flag else 'unset'} waiters={len(self._waiters)}>"

    def is_set(self):
        return self._flag

    def set(self):
        self._flag = True                  # the condition first, then the wakes
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for ticket in waiters:
                kernel.wake(ticket)

    def clear(self):
        self._flag = False

    async def wait(self):
        if self._flag:
            return True
        ticket = kernel.current()._new_ticket()
        self._waiters.append(ticket)
        if self._flag:                     # set() ran between our check and append
            kernel.wake(ticket)
        try:
            await kernel.park()
        except BaseException:
            if ticket in self._waiters:
                self._waiters.remove(ticket)
            raise
        return True
