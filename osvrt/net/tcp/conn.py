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
    __slots__ = ("id", "readable", "writable", "remote", "closed", "failed", "__weakref__")

    def __init__(self, cid, remote=None):
        self.id = cid
        self.readable = Event()
        self.writable = Event()
        self.remote = remote            # (ip bytes, port) for connections
        self.closed = False             # released by the application (or the stack closed)
        self.failed = 0                 # an errno the link found (EHOSTUNREACH) before TCP did
