"""UDP endpoints on net channels.

udp_bind((ip, port)) registers a flow (protocol UDP, destination ip and
port) with the runtime's classifier and reserves the port in the kernel: a
kernel UDP socket bound to it, with a one-instruction `ret #0` socket filter
attached BEFORE the bind.  The kernel then queues nothing on that socket,
answers no ICMP port-unreachable (a socket owns the port), and lets no one
else bind it, even with SO_REUSEADDR/SO_REUSEPORT.  Replies go out through
that same socket, so a client that connect()ed to us accepts them: by default
batched per worker turn (the engine's UdpTx, csrc/net/tx_batch.h: copied into
the worker's batch with no syscall, sent with one sendmmsg when the thread's
turn ends or the batch is full), or one sendto each (udp_bind(tx_batch=False)).
"""
import errno
import socket
import sys
import weakref

from ... import kernel
from ..._core import ffi, lib
from ..._engine import UdpTx
from ..._engine import io_budget as _io_budget
from .. import rules as _rules
from ...checks import check_int
from .service import net_for_green_thread
from .lane import Lane

_UDP = socket.IPPROTO_UDP
_DEFAULT_CAPACITY = 256


def _closed():
    return OSError(errno.EBADF, "this osvrt.net endpoint is closed")


def _parse_address(address):
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError(f"udp_bind: address must be a tuple (ip, port), not {address!r}")
    host, port = address
    if not isinstance(host, str):
        raise TypeError(f"udp_bind: the IP address must be a str, not {host!r}")
    if host == "localhost":
        host = "127.0.0.1"
    elif host == "":
        host = "0.0.0.0"
    try:
        packed = socket.inet_aton(host)
        if socket.inet_ntoa(packed) != host:      # inet_aton also takes "127.1"
            raise OSError
    except OSError:
        raise ValueError(f"udp_bind: {host!r} is not an IPv4 address such as '127.0.0.1' "
                         "(IPv6 and host names are not supported)") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"udp_bind: port must be an int in 0..65535, not {port!r}")
    return host, port, int.from_bytes(packed, sys.byteorder)   # as C reads the wire's bytes


def default_buffer_size(capacity):
    """The channel's payload bytes when udp_bind is given no buffer_size:
    2 KiB per datagram it can hold (a full channel of typical datagrams
    fits), at least 128 KiB, and never more than the C limit (2**30), so
    every valid capacity has a valid default."""
    return min(lib.OSVRT_CHAN_MAX_ARENA, max(128 * 1024, 2048 * capacity))


async def udp_bind(address, *, capacity=_DEFAULT_CAPACITY, buffer_size=None, lanes=1, rule=None,
                   tx_batch=True):
    """A UDP endpoint on a net channel, bound to address = (ip, port) (port
    0: the kernel picks one; see ep.address).  Must be awaited in a green
    thread.

    capacity:    packets a channel holds, 1..2**20 (default 256); when it is
                 full, new datagrams are dropped and counted (tail drop)
    buffer_size: payload bytes a channel holds, 1..2**30 (default
                 default_buffer_size(capacity): 2 KiB x capacity, at least
                 128 KiB and at most 2**30); a datagram larger than the
                 whole buffer is dropped and counted as too big, one that
                 finds too little of it free as channel_full
    lanes, rule: a classifier rule (see osvrt.net.rules) picks one of `lanes`
                 channels for every datagram, or drops it; each lane has its
                 own reader (ep.recvfrom(lane=i))
    tx_batch:    True (default): sendto() queues the datagram in the calling
                 worker's batch, sent with one sendmmsg when the thread's turn
                 ends (it parks, yields or ends) or the batch is full; a
                 datagram the kernel then refuses is counted in
                 ep.stats()["sent"] (dropped_full: send buffer full; errors).
                 False: one sendto syscall per datagram, errors raised and a
                 full send buffer waited out.

    Raises PermissionError (no CAP_NET_RAW), OSError EADDRINUSE (the port is
    taken), ValueError/TypeError for bad arguments."""
    kernel.current()                                  # RuntimeError outside a green thread
    host, port, daddr = _parse_address(address)
    check_int("capacity", capacity, 1, lib.OSVRT_CHAN_MAX_CAPACITY)
    if buffer_size is None:
        buffer_size = default_buffer_size(capacity)
    else:
        check_int("buffer_size", buffer_size, 1, lib.OSVRT_CHAN_MAX_ARENA)
    check_int("lanes", lanes, 1, lib.OSVRT_NET_MAX_LANES)
    if not isinstance(tx_batch, bool):
        raise TypeError(f"udp_bind: tx_batch must be True or False, not {tx_batch!r}")
    fn, keep = _rules.rule_pointer(rule)
    if lanes > 1 and rule is None:
        raise ValueError(f"lanes={lanes}: more than one lane needs a rule that picks the lane")
    net = await net_for_green_thread()                # PermissionError without CAP_NET_RAW
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = None
    try:
        e = lib.osvrt_attach_drop_all(sock.fileno())  # before bind: nothing is ever queued
        if e:
            raise OSError(e, f"udp_bind: cannot attach the drop-all filter: {errno.errorcode.get(e, e)}")
        try:
            sock.bind((host, port))
        except OSError as ex:
            raise OSError(ex.errno, f"udp_bind: cannot bind UDP {host}:{port}: {ex.strerror}") from None
        port = sock.getsockname()[1]
        sock.setblocking(False)
        tx = UdpTx(sock.fileno()) if tx_batch else None    # its own dup of the fd

        def open_flow(cnet):
            err = ffi.new("int *")
            flow = lib.osvrt_net_flow_add4(cnet, _UDP, daddr, port, 0, 0, lanes, capacity,
                                           buffer_size, fn, err)
            if flow == ffi.NULL:
                e = err[0]
                if e == errno.EEXIST:
                    raise OSError(errno.EADDRINUSE, f"udp_bind: UDP {host}:{port} already has a flow")
                raise OSError(e, f"udp_bind: cannot add the flow for UDP {host}:{port}")
            return ffi.gc(flow, lib.osvrt_flow_put)

        return net.add_endpoint(
            "udp_bind", open_flow,
            lambda flow: UdpEndpoint(net, sock, (host, port), flow, lanes, capacity,
                                     buffer_size, rule, tx),
            keep)
    except BaseException:
        sock.close()
        if tx is not None:
            tx.close()
        raise


class UdpEndpoint:
    """A bound UDP port whose datagrams arrive through net channels.  Made by
    udp_bind().  recvfrom() takes from the channel (no syscall when a datagram
    is there), sendto() sends through the port's kernel socket."""

    def __init__(self, net, sock, address, flow, lanes, capacity, buffer_size, rule, tx=None):
        self._net = net
        self._sock = sock
        self._tx = tx                    # UdpTx (batched replies) or None
        self._address = address
        self._flow = flow
        self._lanes = tuple(Lane(flow, i) for i in range(lanes))
        self._lane0 = self._lanes[0]
        self._capacity = capacity
        self._buffer_size = buffer_size
        self._rule = rule
        self._closed = False
        self._cstats = ffi.new("struct osvrt_flow_stats *")
        # Dropped without close(): the flow leaves the table all the same
        # (the kernel socket closes itself).  Runs once, from close() or GC.
        self._unflow = weakref.finalize(self, lib.osvrt_net_flow_remove, net.cnet, flow)

    def __repr__(self):
        ip, port = self._address
        return (f"<osvrt.net.UdpEndpoint {ip}:{port} lanes={len(self._lanes)} "
                f"{'closed' if self._closed else 'open'}>")

    @property
    def address(self):
        """(ip, port) as bound (the port the kernel picked for port 0)."""
        return self._address

    def getsockname(self):
        return self._address

    @property
    def closed(self):
        return self._closed

    def _lane(self, lane):
        if isinstance(lane, bool) or not isinstance(lane, int) or not 0 <= lane < len(self._lanes):
            raise ValueError(f"lane must be an int in 0..{len(self._lanes) - 1}, not {lane!r}")
        return self._lanes[lane]

    async def recvfrom(self, lane=0):
        """The next datagram of the lane (default 0) as (data, (ip, port)).
        Waits (parked, no CPU) while the channel is empty.  One reader at a
        time per lane: others wait for their turn.  OSError EBADF once
        the endpoint is closed."""
        ln = self._lane0 if type(lane) is int and lane == 0 else self._lane(lane)  # not False, 0.0
        if self._closed:
            raise _closed()
        # The common case in one engine call (chanrx.c, take_fast): the token
        # was free, the budget lasts, a datagram waits.  Nothing awaited, so
        # no cancel can come between its take and our return, and the close
        # check after the take below ("while we waited for our turn") has no
        # wait to cover: a close racing this call from another OS thread
        # comes after it.  None: it did nothing; the full path below runs.
        if (got := ln.rx.take_fast()) is not None:   # (a method of the type: a specialized call)
            return got
        if not ln.rx.acquire():                  # the reader's token (lane.py)
            await ln.acquire_slow()
        try:
            if (y := _io_budget()) is not None:
                # The sockets' cooperative budget (docs/design.md): a datagram
                # found at once costs no trap, so a flood that keeps the
                # channel full would let this reader hold its CPU (and its
                # worker's batched replies) as long as it lasts; the bench's
                # dnsperf row drew a 120 ms stall report.  Before the take:
                # this is the only await while datagrams wait, and a cancel
                # (a timeout) raised here must not lose one already taken.
                await y
                if self._closed:
                    raise _closed()
            got = ln.rx.take()
            if got is None:
                await ln.wait()
                if self._closed:
                    raise _closed()
                return ln.rx.take()
            if self._closed:
                raise _closed()                  # closed while we waited for our turn
            return got
        finally:
            ln.rx.release()                      # the token back; wakes a waiting reader

    async def sendto(self, data, address):
        """Send one datagram from this endpoint's address; returns the bytes
        queued (tx_batch=True: see udp_bind) or sent.  Unbatched, if the
        kernel's send buffer is full, retries after short sleeps (the green
        thread parks; its CPU runs others)."""
        if self._closed:
            raise _closed()
        tx = self._tx
        if tx is not None:
            n = tx.sendto(data, address)
            if n is not NotImplemented:
                return n
            # Not an (ip, port) tuple UdpTx parses ("127.1", a host name, a
            # bad value): the kernel's sendto, and its error.
        try:
            return self._sock.sendto(data, address)
        except BlockingIOError:
            pass
        delay = 50e-6
        while True:
            await kernel.sleep(delay)
            delay = min(2 * delay, 0.005)
            if self._closed:
                raise _closed()
            try:
                return self._sock.sendto(data, address)
            except BlockingIOError:
                continue

    def pending(self, lane=0):
        """Datagrams waiting in the lane's channel."""
        return self._lane(lane).queued()

    def close(self):
        """Stop the flow and free the port (free when this returns); a reader
        waiting in recvfrom() gets OSError EBADF.  Batched replies: the
        calling thread's worker sends its batch first; datagrams still in
        another worker's batch are refused and counted (stats()["sent"]).
        Idempotent."""
        net = self._net
        if not net.remove_endpoint(self, self._shut):
            return
        for ln in self._lanes:
            ln.wake_all(net.core)

    def _shut(self):
        """close() under the classifier's lock; False if already closed."""
        if self._closed:
            return False
        self._closed = True
        for ln in self._lanes:
            ln.closed = True
        # The flow first: once the kernel socket is gone someone else may
        # bind the port, and add its own flow under the same key.
        self._unflow()
        self._sock.close()
        if self._tx is not None:
            self._tx.close()             # the port goes now, even while other batches hold its fd
        return True

    def stats(self):
        """This endpoint's counters: datagrams received into its channels,
        dropped (channel full, too big, refused by its rule), wake-ups the
        classifier sent, what is queued now, and (batched replies) what
        was sent: datagrams, syscalls, refused by the kernel (dropped_full,
        errors, last_errno); None when tx_batch=False."""
        s = self._cstats
        lib.osvrt_flow_get_stats(self._flow, s)
        return {
            "address": self._address,
            "lanes": len(self._lanes),
            "capacity": self._capacity,
            "buffer_size": self._buffer_size,
            "received": s.received,
            "dropped": {
                "channel_full": s.dropped_channel_full,
                "too_big": s.dropped_too_big,
                "truncated": s.dropped_truncated,
                "rule": s.dropped_rule,
            },
            "wakes_sent": s.wakes,
            "sent": self._tx.stats() if self._tx is not None else None,
            "queued": s.queued,
            "closed": self._closed,
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
