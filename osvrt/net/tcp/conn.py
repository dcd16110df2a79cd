"""What the stack and its streams share: the record of one engine id (a
connection or a listener) and the OSError of an engine error code."""
import os

from ..._core import lib
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
    __slots__ = ("id", "readable", "writable", "remote", "closed", "failed", "inbox", "waits",
                 "slot", "__weakref__")

    def __init__(self, cid, remote=None, waits=None):
        self.id = cid
        self.readable = Event()
        self.writable = Event()
        self.remote = remote            # (ip bytes, port) for connections
        self.closed = False             # released by the application (or the stack closed)
        self.failed = 0                 # an errno the link found (EHOSTUNREACH) before TCP did
        # True when the C link (csrc/net/tcp/tcp_link.h) handed segments to
        # the green thread that owns this connection (it was parked in
        # recv/sendall/connect/accept): they wait in the link's inbox, in
        # arrival order, and that thread runs them through the engine when it
        # wakes (UserStack.drain, or the recv/send call itself).
        self.inbox = False
        # The link's count of waiting green threads per connection slot
        # (view.waits, plain C memory, a uint16 memoryview): the link reads it
        # to decide whether a segment goes to the owner; a green thread
        # counts itself there while it parks (streams.py, _park).  Written
        # there and read by the link on the stack's OS thread only (tcp.h's
        # one-owner rule), so no atomic.
        self.waits = waits
        self.slot = cid & (lib.OSVRT_TCP_MAX_CONNS - 1)
