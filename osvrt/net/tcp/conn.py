"""What the stack and its streams share: the record of one engine id (a
connection or a listener) and the OSError of an engine error code."""
import os

from ...sync import Event


def oserror(rc, what):
    """OSError for the engine's negative errno rc (the subclass that errno
    maps to: ConnectionResetError, ConnectionRefusedError, TimeoutError...)."""
    e = -rc
    return OSError(e, f"{what}: {os.strerror(e)}")


class Conn:
    """What the stack knows of one id of the engine: the events its green
    threads wait on, and whether the application released it.  Owned by the
    stack's worker, except `closed` and the Events, which close() may set
    from any thread (Event.set is safe from any OS thread)."""
    __slots__ = ("id", "readable", "writable", "remote", "closed", "failed", "inbox", "waiting",
                 "__weakref__")

    def __init__(self, cid, remote=None):
        self.id = cid
        self.readable = Event()
        self.writable = Event()
        self.remote = remote            # (ip bytes, port) for connections
        self.closed = False             # released by the application (or the stack closed)
        self.failed = 0                 # an errno the link found (EHOSTUNREACH) before TCP did
        # Segments the link thread handed to the green thread that owns this
        # connection (it was parked in recv/sendall/connect): (packet bytes,
        # input flags), in arrival order; that thread runs them through the
        # engine when it wakes (UserStack.drain).
        self.inbox = []
        self.waiting = 0                # green threads parked on this connection now

    async def wait(self, event):
        """Park on event (cleared by the caller) as the connection's owner:
        while parked, the link thread hands this connection's segments to
        us instead of processing them itself."""
        self.waiting += 1
        try:
            await event.wait()
        finally:
            self.waiting -= 1
