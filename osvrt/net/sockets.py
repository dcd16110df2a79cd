"""Green sockets on the kernel's stack: TCP and Unix streams, UDP sockets.

    stream = await osvrt.net.open_tcp_stream("127.0.0.1", 8000)
    await stream.sendall(b"ping")
    data = await stream.recv()            # b"" at EOF

    async with await osvrt.net.tcp_listen(("127.0.0.1", 0)) as listener:
        stream, addr = await listener.accept()

Every socket is non-blocking.  An operation tries the syscall first and
waits for readiness (the worker's epoll) only on EAGAIN, so a green thread
waiting for I/O never blocks its CPU.  A Stream's recv, recv_into and
sendall, a Listener's accept and a UdpSocket's recvfrom, recvfrom_into and
sendto run in the engine (osvrt/_engine/sock.c): edge-triggered readiness
registered once per connection and cached, no exception object on EAGAIN,
and a cooperative budget (a call yields after 128 that completed at once).  Errors are the socket module's own OSError subclasses, with errno
(ConnectionRefusedError, ConnectionResetError, BrokenPipeError, ...); using a
closed object raises osvrt.ClosedResourceError (EBADF).  close() wakes any
green thread waiting on the socket with ClosedResourceError
(osvrt.notify_closing) before it closes the fd.

Backpressure: sendall() parks while the kernel's send buffer is full, so a
slow reader holds the writer, and memory stays bounded by the socket buffers.

Concurrency: one green thread at a time may wait to receive on an object, and
one to send (a second, on the same CPU, gets osvrt.BusyResourceError).  To
accept on several CPUs, open one listener per CPU with reuse_port=True (the
kernel spreads connections among them), as the examples do.
"""
import errno
import socket

from .. import _engine
from ..checks import check_int
from ..readiness import ClosedResourceError, notify_closing, wait_writable
from ..offload import to_thread
from .closing import AsyncClosing

__all__ = ["Listener", "Stream", "UdpSocket", "getaddrinfo", "open_tcp_stream",
           "open_unix_stream", "tcp_listen", "udp_socket", "unix_listen"]

_EAGAIN = (BlockingIOError, InterruptedError)
# The cooperative budget (osvrt/_engine/sock.c): a call that completed at
# once spends one; when they are spent it gives an awaitable yield, so a
# connection that always has data ready still traps and OSv's rule applies.
_budget = _engine.io_budget
_sock_recv, _sock_recv_into, _sock_sendall = (_engine.sock_recv, _engine.sock_recv_into,
                                              _engine.sock_sendall)
_adopt = _engine.io_adopt
_sock_accept, _sock_recvfrom, _sock_recvfrom_into, _sock_sendto = (
    _engine.sock_accept, _engine.sock_recvfrom, _engine.sock_recvfrom_into, _engine.sock_sendto)


def _closed(what):
    return ClosedResourceError(errno.EBADF, f"this {what} was closed")


class _Sock(AsyncClosing):
    """What Stream, Listener and UdpSocket share: the socket, close, async with."""
    __slots__ = ("socket", "_fd")
    _what = "socket"

    def __init__(self, sock, _adopted=False):
        sock.setblocking(False)
        self.socket = sock
        self._fd = sock.fileno()
        # A number osvrt may have seen before: its socket may have been closed
        # behind osvrt's back (os.close, stream.socket.close()), leaving a
        # worker's edge-triggered registration looking armed (io.c: epochs).
        # _adopted: the engine's accept or _connect did it already (a second
        # bump would cost a connected socket's first call an epoll_ctl).
        if not _adopted:
            _adopt(self._fd)

    def fileno(self):
        return self._fd

    @property
    def closed(self):
        return self._fd < 0

    def close(self):
        """Close the socket; green threads waiting on it get ClosedResourceError.
        Closing twice is a no-op."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            notify_closing(fd)
            self.socket.close()

    async def _retry(self, err, op, wait, *args):
        """op(*args) raised err: if it would have blocked, park in `wait`
        (wait_readable or wait_writable) and try again until it does not;
        an error after close() reads as ClosedResourceError.  Called only once
        the first, inline try failed, so the common path has no extra frame."""
        while True:
            if not isinstance(err, _EAGAIN):
                if self._fd < 0:
                    raise _closed(self._what) from err
                raise err
            await wait(self._fd)
            try:
                return op(*args)
            except OSError as e:
                err = e

    def __repr__(self):
        return f"<osvrt {type(self).__name__} fd={self._fd}>"


class Stream(_Sock):
    """A connected stream socket (TCP or Unix)."""
    __slots__ = ()
    _what = "stream"

    # The per-request calls run in the engine (osvrt/_engine/sock.c): the
    # non-blocking syscall with the GIL held, EAGAIN parks on the worker's
    # epoll with no exception object, the result comes back through am_send.
    # (async def, not a plain method returning the awaitable: spawn() and
    # users take these for coroutine functions.)

    async def recv(self, max_bytes=65536):
        """Up to max_bytes bytes; b"" at EOF (the peer closed or sent EOF)."""
        return await _sock_recv(self._fd, max_bytes)

    async def recv_into(self, buffer, nbytes=0):
        """The number of bytes read into buffer (0 at EOF)."""
        return await _sock_recv_into(self._fd, buffer, nbytes)

    async def sendall(self, data):
        """Send all of data; parks while the send buffer is full (backpressure)."""
        await _sock_sendall(self._fd, data)

    async def send_eof(self):
        """Half-close: the peer's recv() returns b"" once it has read what we sent;
        we can still receive."""
        if self._fd < 0:
            raise _closed(self._what)
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                raise


class Listener(_Sock):
    """A listening stream socket; accept() gives (Stream, address)."""
    __slots__ = ()
    _what = "listener"

    @property
    def address(self):
        """The bound address: (host, port) for TCP, the path for Unix."""
        a = self.socket.getsockname()
        return a[:2] if isinstance(a, tuple) else a

    async def accept(self):
        """(Stream, address) of the next connection; parks while none is
        queued.  accept4 runs in the engine (osvrt/_engine/sock.c), as the
        Stream calls do; a connection the peer aborted first is skipped."""
        sock = self.socket
        fd, addr = await _sock_accept(self._fd)
        conn = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Stream(conn, _adopted=True), addr


class UdpSocket(_Sock):
    """A kernel UDP socket (no privileges needed; see osvrt.net.udp_bind for
    net channels)."""
    __slots__ = ()
    _what = "UDP socket"

    @property
    def address(self):
        return self.socket.getsockname()[:2]

    # recvfrom, recvfrom_into and sendto run in the engine (osvrt/_engine/sock.c),
    # as a Stream's calls do; an address that is not a numeric (host, port)
    # (a name to resolve, IPv6 with scope) is sent through the socket module.

    async def recvfrom(self, max_bytes=65536):
        """(data, address) of the next datagram (at most max_bytes of it)."""
        return await _sock_recvfrom(self._fd, max_bytes)

    async def recvfrom_into(self, buffer, nbytes=0):
        """(count, address): the next datagram read into buffer."""
        return await _sock_recvfrom_into(self._fd, buffer, nbytes)

    async def sendto(self, data, address):
        op = _sock_sendto(self._fd, data, address, self.socket.family)
        if op is not NotImplemented:
            return await op
        if (y := _budget()) is not None:    # before the call: a cancel loses nothing
            await y
        sock = self.socket
        try:
            return sock.sendto(data, address)
        except OSError as e:
            return await self._retry(e, sock.sendto, wait_writable, data, address)


def _is_ip(host):
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, host.split("%", 1)[0])
            return fam
        except (OSError, ValueError, TypeError, AttributeError):
            pass
    return 0


async def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    """socket.getaddrinfo, with the same arguments; a name to resolve is looked
    up on an OS thread (osvrt.to_thread), so the worker is never blocked;
    numeric addresses are answered at once."""
    if host is None or isinstance(host, (str, bytes)) and _is_ip(
            host.decode() if isinstance(host, bytes) else host):
        return socket.getaddrinfo(host, port, family, type, proto,
                                  flags | (socket.AI_NUMERICHOST if host is not None else 0))
    return await to_thread(socket.getaddrinfo, host, port, family, type, proto, flags)


async def _unix_backlog_wait(sock, address, timeout, what):
    """A non-blocking Unix connect() gave EAGAIN: the listener's backlog is
    full, and nothing is in progress (waiting for writability would report an
    unconnected socket as connected).  Try again, backing off from 0.5 ms to
    50 ms, as a blocking connect would wait for room; returns connect's error
    number (0: connected).  Cancellable; TimeoutError after timeout s."""
    from ..kernel import monotonic, sleep
    deadline = None if timeout is None else monotonic() + timeout
    delay = 0.0005
    while True:
        if deadline is not None and monotonic() + delay > deadline:
            raise TimeoutError(f"connecting to {what} timed out after {timeout} s "
                               "(the listener's backlog stayed full)")
        await sleep(delay)
        delay = min(delay * 2, 0.05)
        err = sock.connect_ex(address)
        if err != errno.EAGAIN:
            return err


async def _connect(sock, address, timeout, what):
    _adopt(sock.fileno())            # before its first wait (the Stream is made _adopted)
    try:
        err = sock.connect_ex(address)
        if err == errno.EAGAIN and sock.family == socket.AF_UNIX:
            err = await _unix_backlog_wait(sock, address, timeout, what)
        if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
            try:
                await wait_writable(sock.fileno(), timeout)
            except TimeoutError:
                raise TimeoutError(f"connecting to {what} timed out after {timeout} s") from None
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"{errno.errorcode.get(err, err)} connecting to {what}: "
                               f"{__import__('os').strerror(err)}")
    except BaseException:
        notify_closing(sock.fileno())
        sock.close()                 # cancelled or failed: no fd leaks
        raise


def check_tcp_address(address):
    """(host, port) from address, the port checked: the C library's
    getaddrinfo reads a number past 65535 modulo 65536, so port 70000 would
    bind or connect to 4464 without a word.  A port given as a str that is
    not a number is a service name ("http"), looked up by getaddrinfo."""
    if not isinstance(address, (tuple, list)) or len(address) != 2:
        raise TypeError(f"address must be a (host, port) pair, not {address!r}")
    host, port = address
    if isinstance(port, str) and not port.isdecimal():
        return host, port
    check_int("port", int(port) if isinstance(port, str) else port, 0, 65535)
    return host, port


async def open_tcp_stream(host, port, *, timeout=None):
    """Connect to (host, port) over TCP and return a Stream.  Every address that
    host resolves to is tried in turn; the last error is raised (e.g.
    ConnectionRefusedError).  TimeoutError if not connected within timeout s."""
    from ..checks import check_timeout
    from ..kernel import monotonic
    timeout = check_timeout(timeout)
    check_tcp_address((host, port))
    deadline = None if timeout is None else monotonic() + timeout
    infos = await getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        left = None if deadline is None else max(0.0, deadline - monotonic())
        try:
            await _connect(sock, addr, left, f"{host}:{port}")
        except TimeoutError:
            raise
        except OSError as e:
            last = e
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Stream(sock, _adopted=True)
    raise last if last is not None else OSError(f"no address for {host!r}")


async def tcp_listen(address, *, backlog=128, reuse_port=False):
    """A Listener bound to address (host, port); port 0 picks a free port
    (see .address).  host "" or None: every IPv4 address.  reuse_port lets
    several listeners (one per CPU) share the port."""
    host, port = check_tcp_address(address)
    if host in (None, ""):
        host = "0.0.0.0"
    infos = await getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return Listener(sock)


async def udp_socket(local_addr=("0.0.0.0", 0)):
    """A kernel UDP socket bound to local_addr; .address, recvfrom(), sendto()."""
    host, port = local_addr[:2]
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind(local_addr)
    except BaseException:
        sock.close()
        raise
    return UdpSocket(sock)


async def open_unix_stream(path, *, timeout=None):
    """Connect to the Unix stream socket at path.  While the listener's
    backlog is full, wait for room as a blocking connect would; TimeoutError
    if not connected within timeout s."""
    from ..checks import check_timeout
    timeout = check_timeout(timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    await _connect(sock, path, timeout, repr(path))
    return Stream(sock, _adopted=True)


async def unix_listen(path, *, backlog=128):
    """A Listener on a Unix stream socket at path (which must not exist)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return Listener(sock)
