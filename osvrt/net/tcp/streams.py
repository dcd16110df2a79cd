"""Stream and Listener of a user-space stack: the same API as the kernel
streams of osvrt.net (osvrt/net/sockets.py), so a program written against
osvrt.net streams runs on either stack by changing how the listener or the
stream is made.

Each call runs the engine on the stack's CPU (a caller elsewhere is moved
there: tcp.h has one owning thread) and sends what the engine produced
before it returns.  A call that cannot go on (no data, send buffer full,
nothing to accept) clears the connection's Event and parks on it; the
stack's link thread sets it when the engine reports the event.  Nothing
runs between the engine's -EAGAIN and the clear (no await in between, and
the setter runs on the same OS thread), so no wake-up is lost.

Errors are the OSError subclasses the kernel's streams raise
(ConnectionResetError, ConnectionRefusedError, BrokenPipeError,
TimeoutError); using a closed object raises osvrt.ClosedResourceError.
"""
import errno
import ipaddress
import time

from ..._core import lib
from ..._engine import current as _current, current_worker as _current_worker
from ...deadline import timeout as _timeout_scope
from ...thread import pin_in_place as _pin_in_place
from ..closing import AsyncClosing
from .conn import oserror

_EAGAIN = -errno.EAGAIN
_now = time.monotonic_ns


class _Base(AsyncClosing):
    __slots__ = ("_stack", "_c", "__weakref__")
    _what = "stream"

    def __init__(self, stack, conn):
        self._stack = stack
        self._c = conn

    @property
    def closed(self):
        return self._c.closed

    def fileno(self):
        """-1: a user-space stream has no file descriptor."""
        return -1

    def close(self):
        """Release it (a stream closes gracefully: its FIN follows the data
        already sent); green threads waiting on it get ClosedResourceError.
        Idempotent; from any thread."""
        self._stack.release(self._c)

    def __del__(self):
        c = getattr(self, "_c", None)
        if c is not None and not c.closed:
            try:
                # Deferred: the collector may run us inside the stack's own
                # after(), between a C link call and the reading of its view,
                # and an engine call here would refill the view under it (its
                # events and held packets lost: a waiter never woken).
                self._stack.release(c, defer=True)
            except Exception:
                pass

    def _closed(self):
        """The error for a use of it once closed (naming why its stack
        closed, when that is why)."""
        return self._stack.closed_error(self._what)

    async def _enter(self):
        """Check it is usable and run on the stack's CPU."""
        if self._c.closed:
            raise self._closed()
        await self._stack.on_cpu()
        if self._c.closed:
            raise self._closed()

    async def _park(self, event):
        """Wait for event as the connection's owner (the caller found
        nothing to do); ClosedResourceError once it is closed, also when it
        was closed while the caller ran (the stack closing in the caller's
        own engine call: nobody would set the event again)."""
        c = self._c
        # Clear, then look: _shut (from Runtime.stop's thread too) sets
        # closed before it sets the event, so a close between the two is
        # seen here or wakes the wait; the other order could erase its wake.
        event.clear()
        if c.closed:
            raise self._closed()
        # As the connection's owner: while we wait, the link hands the
        # connection's segments to us (conn.py, Conn.waits).  Here, not in a
        # coroutine of Conn's: one coroutine per park less.
        waits, slot = c.waits, c.slot
        # Pinned while parked: the balancer moves a woken, queued thread, and
        # then the decrement below, and the engine call that follows the
        # park, would run on another OS thread than the stack's (tcp.h: one
        # owner), racing the link's read of waits[] in C.
        t = _current()
        pinned_here = _pin_in_place(t)      # we are on the stack's worker: no move
        waits[slot] += 1
        try:
            await event.wait()
        finally:
            waits[slot] -= 1
            if pinned_here:
                t.unpin()
        if c.closed:
            raise self._closed()


class Stream(_Base):
    """A TCP connection of a user-space stack."""
    __slots__ = ()

    def _info(self):
        st = self._stack
        info = st.info_buf
        if lib.osvrt_tcp_conn_info(st.engine, self._c.id, info) < 0:
            return None
        return info

    @property
    def local_address(self):
        return (str(self._stack.address.ip), self._port("local"))

    @property
    def remote_address(self):
        """(host, port) of the peer."""
        info = self._info()
        if info is None:
            return None
        return (str(ipaddress.IPv4Address(info.remote_addr)), info.remote_port)

    def _port(self, which):
        info = self._info()
        return None if info is None else getattr(info, which + "_port")

    def abort(self):
        """Reset the connection (a RST to the peer) and release it."""
        self._stack.release(self._c, abort=True)

    async def established(self, timeout, what):
        """Wait for the handshake of open_tcp_stream."""
        c, st = self._c, self._stack
        scope = _timeout_scope(timeout) if timeout is not None else _nullscope()
        try:
            with scope:
                while True:
                    if c.inbox:
                        st.drain(c)
                    if c.failed:
                        raise OSError(c.failed, f"connecting to {what}: "
                                                f"{__import__('os').strerror(c.failed)}")
                    state = lib.osvrt_tcp_state(st.engine, c.id)
                    if state >= lib.OSVRT_TCP_ESTABLISHED:
                        return
                    info = self._info()
                    if info is not None and info.error:
                        raise oserror(info.error, f"connecting to {what}")
                    if state == lib.OSVRT_TCP_CLOSED or state < 0:
                        raise OSError(errno.ECONNREFUSED, f"connecting to {what}: refused")
                    await self._park(c.writable)
        except TimeoutError:
            if not getattr(scope, "expired", False):
                raise
            raise TimeoutError(errno.ETIMEDOUT,
                               f"connecting to {what} timed out after {timeout} s") from None

    async def recv(self, max_bytes=65536):
        """Up to max_bytes bytes; b"" at EOF (the peer sent its FIN)."""
        if max_bytes.__class__ is not int:      # the usual int: one test
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
                raise TypeError(f"max_bytes must be an int, not {max_bytes!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes!r}")
        st, c = self._stack, self._c
        if c.closed or _current_worker() is not st.worker:   # else: usable here, no await
            await self._enter()
        cap = max_bytes if max_bytes < 65536 else 65536   # not min(): its call costs more
        fast = st.fast
        while True:
            if c.inbox:              # the take_inbox() of stack.py, inline
                c.inbox = False
                st.handed.discard(c)
            # One engine call: the segments handed to us, the recv, what
            # they produced (an ACK, a window update) sent, and after() when
            # the call left the stack work (also when it raises).
            data = fast.recv(c.id, cap)
            if data is not None:
                return data
            await self._park(c.readable)

    async def recv_into(self, buffer, nbytes=0):
        """The number of bytes read into buffer (0 at EOF)."""
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError("recv_into needs a writable buffer")
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, not {nbytes!r}")
        n = len(view) if nbytes == 0 else min(nbytes, len(view))
        if n == 0:
            return 0
        st, c = self._stack, self._c
        if c.closed or _current_worker() is not st.worker:   # else: usable here, no await
            await self._enter()
        fast = st.fast
        while True:
            if c.inbox:              # the take_inbox() of stack.py, inline
                c.inbox = False
                st.handed.discard(c)
            rc = fast.recv_into(c.id, view, n)
            if rc is not None:
                return rc
            await self._park(c.readable)

    async def sendall(self, data):
        """Send all of data; parks while the send buffer is full (backpressure)."""
        # bytes (the usual argument) needs no byte view: one object less.
        view = data if type(data) is bytes else memoryview(data).cast("B")
        st, c = self._stack, self._c
        if c.closed or _current_worker() is not st.worker:   # else: usable here, no await
            await self._enter()
        total = len(view)
        if total == 0:
            return
        fast = st.fast
        off = 0
        while True:
            if c.inbox:              # the take_inbox() of stack.py, inline
                c.inbox = False
                st.handed.discard(c)
            rc = fast.send(c.id, view, off)
            if rc is None:
                await self._park(c.writable)
                continue
            off += rc
            if off >= total:
                return

    async def send_eof(self):
        """Half-close: the peer's recv() returns b"" once it has read what we
        sent; we can still receive."""
        if self._c.closed or not self._stack.here():   # else: usable here, no await
            await self._enter()
        st = self._stack
        if self._c.inbox:
            st.drain(self._c)
        rc = lib.osvrt_tcp_shutdown_write(st.engine, self._c.id, _now())
        if rc < 0 and rc != -errno.ENOTCONN:
            raise oserror(rc, "send_eof")
        st.pump()

    def __repr__(self):
        return f"<osvrt.net.tcp.Stream id={self._c.id} {'closed' if self.closed else 'open'}>"


class Listener(_Base):
    """A listening port of a user-space stack; accept() gives (Stream, address)."""
    __slots__ = ("address",)
    _what = "listener"

    def __init__(self, stack, conn, address):
        super().__init__(stack, conn)
        self.address = address

    async def accept(self):
        """(Stream, (host, port)) of the oldest connection waiting."""
        if self._c.closed or not self._stack.here():   # else: usable here, no await
            await self._enter()
        st, c = self._stack, self._c
        while True:
            if c.inbox:
                st.drain(c)             # SYNs and handshakes handed to the acceptor
            cid = lib.osvrt_tcp_accept(st.engine, c.id, st.peer_addr, st.peer_port)
            if cid >= 0:
                ip = ipaddress.IPv4Address(st.peer_addr[0])
                port = st.peer_port[0]
                conn = st.new_conn(cid, (ip.packed, port))
                st.pump()
                return Stream(st, conn), (str(ip), port)
            if cid != _EAGAIN:
                raise oserror(cid, "accept")
            await self._park(c.readable)

    def __repr__(self):
        return f"<osvrt.net.tcp.Listener {self.address} {'closed' if self.closed else 'open'}>"


class _nullscope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
