"""UserStack: a user-space TCP/IP stack that owns one IPv4 address on one
Ethernet link (csrc/net/tcp/tcp.h does TCP; this module does the link, ARP,
IPv4 and ICMP echo, and drives the engine).

Who owns what (docs/design.md, "The user-space TCP stack"):
- the engine (a C `struct osvrt_tcp_stack`), the ARP cache, the counters and
  the table of connections belong to ONE worker: the CPU of the green thread
  that called user_stack().  tcp.h's rule is one owning OS thread with no
  lock; every green thread of that worker runs on that OS thread, so any of
  them may call the engine, and none can interleave with another inside a
  call (a green thread yields only at an await, and no engine call awaits).
- two green threads of the stack, pinned to that CPU: the link thread parks
  in the worker's epoll on the packet socket; once awake, one call into the
  C link (csrc/net/tcp/tcp_link.h) reads a batch of frames, runs each TCP
  segment through the engine (or copies it to the inbox of the green thread
  parked on its connection), and sends what the engine produced, with no
  Python per frame; the thread then answers the ARP and ICMP frames the
  call left it and wakes the streams its events name; the timer thread sleeps
  on the worker's timers until the engine's next deadline (or an earlier one
  that an application call armed: it is kicked through an Event).
- application green threads call Stream/Listener methods; those run the
  engine call on the stack's CPU (a caller on another CPU is moved there
  first) and then send the engine's output themselves, so a reply leaves
  without a hand-off to another thread.
"""
import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
import weakref
from collections import deque

from ..._core import ffi, lib
from ... import _engine, _fork, kernel
from ...kernel import sleep
from ...checks import check_number
from ...readiness import ClosedResourceError
from ...thread import Cancelled, pin_in_place
from ...sync import Event
from . import wire
from .arp import Arp
from .conn import Conn, oserror
from .link import REFUSED, Link
from .streams import Listener, Stream

log = logging.getLogger("osvrt")

NEVER = (1 << 63) - 1
ROUNDS = 2                 # link polls (of OSVRT_TCP_LINK_BATCH frames) per wake-up
NEAR_NS = 1_000_000_000    # a timer deadline this close makes the timer thread tick ...
TICK_NS = 10_000_000       # ... at least this often (see _timer_loop)
_now = time.monotonic_ns   # the engine's clock: CLOCK_MONOTONIC, as the worker's timers
# The link's per-segment calls go through the engine (_engine.TcpLink,
# osvrt/_engine/tcplink.c), not cffi: its table, read once.
_LINK_API = int(ffi.cast("uintptr_t", lib.osvrt_tcp_link_api()))
_wait_io, _yield_now = _engine.wait_io, kernel.yield_now
_EPOLLIN_ET = select.EPOLLIN | select.EPOLLET   # the link's wait: edge-triggered (io.c)

STATE_NAMES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1",
               "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")
# States in which a connection still has data or a FIN of ours that the peer
# has not acknowledged (FIN_WAIT_2 and TIME_WAIT: the peer has it all).
_UNFINISHED = (lib.OSVRT_TCP_SYN_SENT, lib.OSVRT_TCP_SYN_RECEIVED, lib.OSVRT_TCP_ESTABLISHED,
               lib.OSVRT_TCP_FIN_WAIT_1, lib.OSVRT_TCP_CLOSE_WAIT, lib.OSVRT_TCP_CLOSING,
               lib.OSVRT_TCP_LAST_ACK)
_TCP_STATS = ("segs_in", "segs_out", "bytes_in", "bytes_out", "retransmits", "rto_expiries",
              "fast_retransmits", "dup_acks", "ooo_segments", "dup_segments",
              "zero_window_probes", "keepalive_probes", "delayed_acks", "challenge_acks",
              "rsts_in", "rsts_out", "active_opens", "passive_opens", "accepts", "timeouts",
              "ctl_overflow")
# What the link and IPv4 layers drop, before TCP sees a packet.
LINK_DROPS = ("eth_short", "ethertype", "ip_short", "ip_version", "ip_header_length",
              "ip_length", "ip_checksum", "ip_fragment", "not_ours", "ip_protocol",
              "icmp_short", "icmp_checksum", "icmp_not_echo", "tx_full", "truncated")
# A send or receive error that says the link's fd is no socket any more
# (closed or replaced behind the stack's back): nothing can go out or come
# in again, so the stack closes rather than retransmit into the void.
FD_GONE = frozenset({errno.EBADF, errno.ENOTSOCK})
RX_ERROR_PAUSE_S = 0.01    # after a receive error, before the next read (no busy loop)
LINGER_POLL_S = 0.005      # how often aclose(linger=...) looks whether its closes finished


# The C link's counters (struct osvrt_tcp_link_stats) under the names the
# Python link had: the first go to stats()["link"], the others to "dropped".
_C_LINK_COUNTERS = ("frames_in", "frames_out", "checksum_partial", "segments_to_owner",
                    "segments_in_link", "passed", "inbox_full", "tx_errors")
_C_LINK_DROPS = ("eth_short", "ethertype", "ip_short", "ip_protocol", "tx_full", "truncated")
# What a link call left for Python (tcp_link.h, view.todo).
_TODO_PASS, _TODO_HANDED, _TODO_HELD, _TODO_EVENTS, _TODO_MORE, _TODO_ERROR, _TODO_DEADLINE = (
    lib.OSVRT_TCP_LINK_TODO_PASS, lib.OSVRT_TCP_LINK_TODO_HANDED, lib.OSVRT_TCP_LINK_TODO_HELD,
    lib.OSVRT_TCP_LINK_TODO_EVENTS, lib.OSVRT_TCP_LINK_TODO_MORE, lib.OSVRT_TCP_LINK_TODO_ERROR,
    lib.OSVRT_TCP_LINK_TODO_DEADLINE)


def _drop_names():
    names = []
    for r in range(lib.OSVRT_TCP_NDROPS):
        p = lib.osvrt_tcp_drop_name(r)
        names.append(ffi.string(p).decode() if p != ffi.NULL else f"tcp_drop_{r}")
    return names


def parse_address(address):
    """'198.18.0.2/24' -> IPv4Interface, with a clear ValueError naming the
    value for anything that is not an IPv4 host address with a prefix."""
    if isinstance(address, ipaddress.IPv4Interface):
        iface = address
    elif isinstance(address, str):
        if "/" not in address:
            raise ValueError(f"osvrt.net.user_stack: address {address!r} needs a prefix "
                             "length, as in '198.18.0.2/24'")
        try:
            iface = ipaddress.ip_interface(address)
        except ValueError:
            raise ValueError(f"osvrt.net.user_stack: {address!r} is not an IPv4 address with "
                             "a prefix length, as in '198.18.0.2/24'") from None
    else:
        raise TypeError(f"osvrt.net.user_stack: the address is a str such as '198.18.0.2/24', "
                        f"not {address!r}")
    if not isinstance(iface, ipaddress.IPv4Interface):
        raise ValueError(f"osvrt.net.user_stack: {address!r} is not IPv4 (the stack is IPv4 only)")
    net = iface.network
    ip = iface.ip
    if net.prefixlen > 30 or net.prefixlen < 1:
        raise ValueError(f"osvrt.net.user_stack: prefix length /{net.prefixlen} of {address!r} "
                         "leaves no link: use /1 to /30")
    if ip in (net.network_address, net.broadcast_address) or ip.is_multicast \
            or ip.is_unspecified or ip.is_loopback:
        raise ValueError(f"osvrt.net.user_stack: {address!r} is not a host address of its "
                         f"network {net}")
    return iface


def check_port(port, what="port", allow_zero=False):
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{what} must be an int, not {port!r}")
    lo = 0 if allow_zero else 1
    if not lo <= port <= 65535:
        raise ValueError(f"{what} {port!r} is out of range {lo}..65535")
    return port


class UserStack:
    """A running stack.  Made by `await osvrt.net.user_stack(...)`."""

    def __init__(self, rt, link, iface, worker, max_connections=16384):
        self.rt = rt
        self.cpu = worker.cpu_id
        # here() as one identity test: a worker is its runtime's one worker
        # of its CPU for the runtime's life.
        self.worker = worker
        self.interface = link.interface
        self.address = iface
        self._link = link
        self._ip = iface.ip.packed
        self._ip_int = int(iface.ip)
        self._net = iface.network
        self._mask = int(iface.network.netmask)
        self._net_int = int(iface.network.network_address)
        self.closed = False
        # Why the stack closed itself (its link failed), named in the errors
        # of the green threads it woke; None when it was closed by aclose or
        # at the runtime's stop.  Written once, on the stack's worker, before
        # `closed`; read from any thread, where a reader that misses the
        # write loses only the reason in its message (no ordering is needed).
        self.failure = None
        self._errnos_logged = set()            # each link errno is logged once
        cfg = ffi.new("struct osvrt_tcp_config *")
        lib.osvrt_tcp_config_init(cfg)
        cfg.addr = self._ip_int
        cfg.mss = max(536, min(link.mtu, 65535) - 40)
        # Connections in TIME_WAIT hold their slot for 60 s: a server that
        # closes first keeps rate x 60 s of them (the engine's default, 4096,
        # fills at 70 connections a second).
        cfg.max_conns = max_connections
        key = os.urandom(16)
        cfg.isn_key[0], cfg.isn_key[1] = struct.unpack("QQ", key)
        err = ffi.new("int *")
        cs = lib.osvrt_tcp_new(cfg, err)
        if cs == ffi.NULL:
            raise oserror(err[0] or -errno.ENOMEM, "osvrt.net.user_stack: the TCP engine")
        self.engine = ffi.gc(cs, lib.osvrt_tcp_free)
        out_cap = 40 + 60 + max(int(cfg.mss), 1460)
        ln = lib.osvrt_tcp_link_new(cs, link.fd, link.mac, max_connections, out_cap, err)
        if ln == ffi.NULL:
            raise oserror(err[0] or -errno.ENOMEM, "osvrt.net.user_stack: the link")
        # The link keeps a pointer to the engine: the engine must outlive it.
        self.clink = ffi.gc(ln, lib.osvrt_tcp_link_free)
        v = self._view = lib.osvrt_tcp_link_view(ln)
        # The view's words the per-segment path touches, as memoryviews of the
        # link's memory: an item there costs a few dozen instructions, a cdata
        # field or item a few hundred (callgrind).  Both live as long as the
        # link, as the view's own pointers do.  One OS thread: the C link
        # writes the view and Python reads it only on the stack's worker
        # (on_cpu); stop() closes the link from Runtime.stop's thread only
        # once no green thread is left that could be in a call (stop()).
        self.waits = memoryview(ffi.buffer(v.waits, v.nwaits * 2)).cast("H")
        self._todo = memoryview(ffi.buffer(ffi.addressof(v, "todo"), 4)).cast("I")
        # The view's counts and the arrays after() reads per round trip, as
        # memoryviews too (ids and flags are int32 and uint32 < 2**31).
        self._words = memoryview(ffi.buffer(v, ffi.sizeof(v[0]))).cast("I")
        self._nhanded = ffi.offsetof("struct osvrt_tcp_link_view", "nhanded") // 4
        self._nevents = ffi.offsetof("struct osvrt_tcp_link_view", "nevents") // 4
        self._handed_ids = memoryview(ffi.buffer(v.handed, lib.OSVRT_TCP_LINK_BATCH * 4)).cast("i")
        self._events = memoryview(ffi.buffer(
            v.events, lib.OSVRT_TCP_LINK_EVENTS * ffi.sizeof("struct osvrt_tcp_event"))).cast("i")
        self._rx = ffi.buffer(v.rx, lib.OSVRT_TCP_LINK_BATCH * v.rx_stride)
        self._tx = ffi.buffer(v.tx, lib.OSVRT_TCP_LINK_BATCH * out_cap)
        self._lstats = ffi.new("struct osvrt_tcp_link_stats *")
        self.peer_addr = ffi.new("uint32_t *")
        self.peer_port = ffi.new("uint16_t *")
        self._cstats = ffi.new("struct osvrt_tcp_stats *")
        self._linger_stats = ffi.new("struct osvrt_tcp_stats *")
        self.info_buf = ffi.new("struct osvrt_tcp_conn_info *")
        self.conns = {}                       # id -> _Conn (live application objects)
        self._kick = Event()                   # the timer thread: a deadline moved earlier
        self._arp = Arp(link.mac, self._ip, self._send_frame, self._unreachable,
                        self._learned, on_link=self._on_link, deadline_moved=self._kick.set)
        self._deferred = deque()               # closes asked for from another CPU / OS thread
        self._threads = []
        self._closing = None                   # aclose(linger=...) under way: set when done
        self._drop_names = _drop_names()
        self.handed = set()                    # connections whose inbox is not empty
        # poll, recv and send: each one engine call that reads the clock
        # itself; it holds clink, so the link outlives its calls.  poll wakes
        # the owners it hands segments to itself (as _handed_to_owners), and
        # each call runs after() when the view still holds work for Python.
        self.fast = _engine.TcpLink(_LINK_API, int(ffi.cast("uintptr_t", ln)), self.clink,
                                    self.conns, self.handed, self.after)
        self._stray = False                    # segments handed to a released connection
        # What Python counts (its own sends: ARP, ICMP, packets that waited
        # for ARP); stats() adds the C link's counters.
        self.counters = {"frames_out": 0, "kernel_drops": 0, "icmp_echo_requests": 0,
                         "icmp_echo_replies": 0, "tx_errors": 0, "last_tx_errno": 0,
                         "rx_errors": 0, "last_rx_errno": 0}
        self.drops = dict.fromkeys(LINK_DROPS, 0)

    def __repr__(self):
        return (f"<osvrt.net.UserStack {self.address} on {self.interface!r} cpu={self.cpu}"
                f"{' closed' if self.closed else ''}>")

    # ---- life cycle ----

    def _start(self):
        self._arp.announce()
        self._threads = [
            kernel.spawn(self._link_loop, name=f"osvrt-tcp-link {self.interface}", cpu=self.cpu),
            kernel.spawn(self._timer_loop, name=f"osvrt-tcp-timers {self.interface}",
                         cpu=self.cpu),
        ]

    async def aclose(self, *, linger=0):
        """Close the stack: reset what is left of its connections (a RST to
        each synchronized peer, connections already released and still
        finishing their close included), stop its green threads and close
        its link.  Its streams and listeners raise ClosedResourceError
        afterwards.  Idempotent; a second call while the first lingers
        waits for it.

        linger: seconds to close gracefully first, as the kernel closes the
        sockets of a process that exits.  Every stream and listener still
        open is closed as close() does (a stream's queued data, then its
        FIN), new connections are refused, and aclose waits until no
        connection has data or a FIN of ours left unacknowledged, or until
        `linger` seconds passed (a warning then names the connections left,
        by state); only then does it reset.  0, the default: reset at once."""
        check_number("linger", linger, 0, allow_equal=True)
        if self.closed:
            return
        await self.on_cpu()
        if self.closed:
            return
        if self._closing is not None:
            await self._closing.wait()
            return
        # Pinned while the linger sleeps: the balancer could move a woken
        # thread, and the reset and the link's close below must run on the
        # stack's worker (tcp.h: one owner; the link thread may be in a call
        # on the fd there).
        t = kernel.current()
        pinned_here = pin_in_place(t)
        self._closing = Event()
        try:
            if linger:
                await self._linger(linger)
        finally:
            # Also when the linger is cancelled: no await from here to _shut,
            # so the stack closes before the cancel goes on.
            if not self.closed:
                self._reset_all()
                self._shut()
            self._closing.set()
            if pinned_here:
                t.unpin()
        me = kernel.current()
        for t in self._threads:
            if t is not me:
                t.cancel()
        for t in self._threads:
            if t is not me:
                try:
                    await t.join()
                except BaseException:      # Cancelled: what we asked for
                    pass

    async def _linger(self, seconds):
        """aclose's graceful part: close what is open, then wait (up to
        `seconds`) until nothing of ours is unacknowledged."""
        for c in list(self.conns.values()):
            self.release(c)                    # here(): at once, no defer
        deadline = _now() + int(seconds * 1e9)
        while (left := self._unfinished()) and not self.closed:
            wait_ns = deadline - _now()
            if wait_ns <= 0:
                log.warning("osvrt.net: %r: the linger of %s s ran out with %s still sending; "
                            "resetting them", self, seconds,
                            ", ".join(f"{n} in {STATE_NAMES[st]}" for st, n in left.items()))
                return
            # Released connections are orphans, which raise no events (tcp.h):
            # look again after a while; the link and timer threads run
            # their retransmissions meanwhile.
            await sleep(min(wait_ns / 1e9, LINGER_POLL_S))

    def _unfinished(self):
        """{state: count} of the connections whose data or FIN the peer has
        not acknowledged yet (those a reset would cut short)."""
        s = self._linger_stats      # not stats()'s buffer: that one is filled from any thread
        lib.osvrt_tcp_get_stats(self.engine, s)
        return {st: s.conns[st] for st in _UNFINISHED if s.conns[st]}

    def _reset_all(self):
        """Abort every connection: a RST to each synchronized peer, sent now,
        so that no peer is left holding a connection that no longer exists
        here (it would learn only when it next sent, or never).  Released
        connections still closing (orphans) too, and more of them than the
        engine's control ring holds: its RSTs go out a ring at a time."""
        now = _now()
        self.handed.clear()
        lib.osvrt_tcp_link_discard(self.clink)
        for c in self.conns.values():
            c.inbox = False
        left = lib.osvrt_tcp_abort_all(self.engine, now)
        while left:
            self.pump(now)                     # sends the RSTs queued so far: room for more
            owed, left = left, lib.osvrt_tcp_abort_all(self.engine, now)
            if left >= owed:                   # the ring did not drain (never seen): give up
                log.error("osvrt.net: %r: %d connections closed without their RST", self, left)
                break
        self.pump(now)

    def _shut(self, link_action="close"):
        """Mark closed, wake every waiter, and then do link_action to the
        link's fd: "close" (on the stack's worker, or where no green thread
        can be in a call on it), "forget" (the number is no longer our
        socket: never close it) or "leave" (a call may be in flight on it
        now: the socket closes when the stack is collected)."""
        self.closed = True
        for c in list(self.conns.values()):
            c.closed = True
            c.readable.set()
            c.writable.set()
        self.conns.clear()
        self._kick.set()                       # the timer thread sees closed and ends
        link = self._link
        if link.fd >= 0:
            from ...readiness import notify_closing
            notify_closing(link.fd)
            if link_action != "leave":
                lib.osvrt_tcp_link_close(self.clink)   # it must not touch the fd number again
            if link_action == "close":
                link.close()
            elif link_action == "forget":
                link.forget()
        svc = self.rt.service("tcp")
        if svc is not None:
            svc.forget(self)

    def stop(self):
        """Runtime.stop(), on its own OS thread: its green threads (ours
        too) are normally done by now, and the link thread's cancel closed
        the stack on its worker (RSTs to its peers included); if not, and
        no call can be in flight on the link, close it.  A green thread
        that outlived stop()'s cancel may be inside one (a recvmmsg on the
        fd, on its worker's OS thread): closing the fd under it could hand
        the number to another open in between, so the link is left as it
        is, to close with the socket object when the stack is collected.
        The engine is freed then too."""
        if self.closed:
            return
        # done(), not merely listed: a thread leaves the live set only after
        # its end hooks ran, a moment after it was marked finished (which is
        # what stop()'s cancel waits for), and a finished thread is in no call.
        # (The usual stop never gets here: the link thread, cancelled on the
        # stack's worker, reset the connections and closed the stack there.)
        if any(not t.done() for t in self.rt.live_threads()):
            log.warning("osvrt.net: %r: green threads outlived the runtime's stop; its link "
                        "closes when the stack is collected", self)
            self._shut("leave")
        else:
            self._shut()

    def _fail(self, why, fd_gone=False):
        """The link can no longer be used: close the stack (on its worker),
        naming why in the error of every green thread waiting on it, rather
        than leave them parked with no one to wake them."""
        if self.closed:
            return
        self.failure = why
        log.error("osvrt.net: %r closed: %s", self, why)
        self._shut("forget" if fd_gone else "close")

    def closed_error(self, what):
        """The ClosedResourceError for a green thread that finds `what` (a
        "stream", a "listener") closed: it names the link's failure, if the
        stack closed for one."""
        why = f" (its stack closed: {self.failure})" if self.failure else ""
        return ClosedResourceError(errno.EBADF, f"this {what} was closed{why}")

    def _link_errno(self, err, counter, doing):
        """A send or receive error on the link: counted and logged once per
        errno; the frame it concerned is lost, which TCP and ARP recover
        from.  An fd that is no socket any more closes the stack."""
        self.counters[counter] = err
        if err not in self._errnos_logged:
            self._errnos_logged.add(err)
            log.warning("osvrt.net: %r: %s failed: [Errno %d] %s (counted in "
                        "stats()['link']; a lost frame is retransmitted)", self, doing, err,
                        os.strerror(err))
        if err in FD_GONE:
            self._fail(f"{doing} failed: [Errno {err}] {os.strerror(err)}", fd_gone=True)

    # ---- the owning CPU ----

    async def on_cpu(self):
        """Move the calling green thread to the stack's CPU if it is elsewhere
        (the engine has one owning OS thread: tcp.h).  An unpinned thread is
        left unpinned there; a pinned one stays pinned there."""
        w = kernel.current_worker()
        if w is None:
            raise kernel.outside()
        if w.cpu_id == self.cpu:
            return
        t = kernel.current()
        pinned = t.pinned
        try:
            await t.pin(self.cpu)
        finally:
            if not pinned:          # also when the move was cancelled: no pin left behind
                t.unpin()

    def here(self):
        """True on the stack's CPU (a green thread of its worker): the engine
        may be called without moving."""
        return kernel.current_worker() is self.worker

    # ---- sending ----

    def _send_frame(self, frame):
        self._sent(self._link.send(frame))

    def _sent(self, err):
        """Count the outcome of one of Python's own sends (0, or its errno)."""
        if not err:
            self.counters["frames_out"] += 1
        elif err in REFUSED or self.closed:
            self.drops["tx_full"] += 1
        else:
            self.counters["tx_errors"] += 1
            self._link_errno(err, "last_tx_errno", f"sending on {self.interface!r}")

    def new_conn(self, cid, remote=None):
        """The record of engine id cid (a connection or a listener)."""
        c = self.conns[cid] = Conn(cid, remote, self.waits)
        return c

    def pump(self, now=None):
        """Send everything the engine has to send (the C link: sendmmsg), wake
        the green threads its events name, and kick the timer thread if the
        next deadline moved earlier.  Called after every engine call that is
        not one of the link's own (those flush as they return)."""
        if now is None:
            now = _now()
        lib.osvrt_tcp_link_flush(self.clink, now)
        self.after(now)

    def after(self, now=None):
        """Act on what the last C link call left in its view: frames that are
        not TCP (ARP, ICMP), packets waiting for ARP, connections handed a
        segment, the engine's events, its next deadline.  now: the call's
        clock, or None (read here when needed: rarely)."""
        v = self._view
        todo = self._todo[0]         # one word: usually 0, nothing to do
        while todo:
            if now is None and todo & (_TODO_PASS | _TODO_HELD | _TODO_MORE):
                now = _now()
            if todo & _TODO_PASS:
                self._passed(v, now)
            if todo & _TODO_HANDED:
                self._handed_to_owners()
            if todo & _TODO_HELD:
                self._held(v, now)
            if todo & _TODO_EVENTS:
                self._dispatch_events()
            if todo & _TODO_ERROR and not self.closed:
                # The C link counted the lost frames (tx_errors) and went on;
                # the caller's call did what it did (bytes taken stay taken).
                self._link_errno(-v.error, "last_tx_errno", f"sending on {self.interface!r}")
            if todo & _TODO_DEADLINE:    # earlier than the timer thread sleeps until
                self._kick.set()
            if not todo & _TODO_MORE or self.closed:
                return
            lib.osvrt_tcp_link_flush(self.clink, now)
            todo = self._todo[0]

    def _passed(self, v, now):
        """The frames the link left to Python: ARP and ICMP."""
        rx, stride = self._rx, v.rx_stride
        for i in range(v.npass):
            off = v.pass_index[i] * stride
            frame = memoryview(rx)[off:off + v.pass_len[i]]
            if frame[12] << 8 | frame[13] == wire.ETH_P_IP:
                self._icmp(frame[wire.ETH_HLEN:], now)
            else:
                self._arp.input(frame[wire.ETH_HLEN:], now)

    def _handed_to_owners(self):
        """The handed connections that TcpLink.poll left: those not in the
        table (released while their owner still waited)."""
        conns, handed, ids = self.conns, self.handed, self._handed_ids
        n, i = self._words[self._nhanded], 0
        while i < n:                 # not range(): usually one, and range() costs more
            c = conns.get(ids[i])
            i += 1
            if c is not None:
                c.inbox = True
                handed.add(c)
                c.readable.set()
                c.writable.set()
            else:
                # Released while a green thread still waited on it (it has
                # not run yet to leave its wait): nobody will drain this
                # connection, so the timer thread drains every inbox soon.
                self._stray = True
                self._kick.set()

    def _held(self, v, now):
        """Packets whose next hop the link does not know: resolve by ARP."""
        tx, arp = self._tx, self._arp
        for i in range(v.nheld):
            off = v.held_off[i]
            packet = bytes(tx[off:off + v.held_len[i]])
            dst = packet[16:20]
            mac = arp.lookup(dst, now)
            if mac is None:
                arp.hold(dst, packet, now)
                continue
            self._learned(dst, mac, arp.expiry(dst))
            self._sent(self._link.sendv(mac + self._link.mac + b"\x08\x00", packet))

    def _learned(self, ip, mac, expires_ns):
        """The ARP cache made or confirmed ip -> mac: the C link's copy too."""
        lib.osvrt_tcp_link_set_peer(self.clink, int.from_bytes(ip, "big"), mac, expires_ns)

    def _dispatch_events(self):
        buf, conns = self._events, self.conns
        n, i = 2 * self._words[self._nevents], 0
        while i < n:                 # as _handed_to_owners; an event is (id, flags)
            c = conns.get(buf[i])
            f = buf[i + 1]
            i += 2
            if c is None:
                continue
            if f & 0x7D:             # READABLE, ESTABLISHED, ACCEPTABLE, CLOSED, RESET, ERROR
                c.readable.set()
            if f & 0x76:             # WRITABLE, ESTABLISHED, CLOSED, RESET, ERROR
                c.writable.set()

    def _on_link(self, ip):
        """ip (4 bytes) is on the link's subnet: a host ARP can find."""
        return int.from_bytes(ip, "big") & self._mask == self._net_int

    def _unreachable(self, ip):
        """ARP gave up on ip: connections still opening to it fail now with
        EHOSTUNREACH (as the kernel's), not after every SYN retransmission."""
        for c in list(self.conns.values()):
            if c.remote is not None and c.remote[0] == ip and \
                    lib.osvrt_tcp_state(self.engine, c.id) == lib.OSVRT_TCP_SYN_SENT:
                c.failed = errno.EHOSTUNREACH
                c.readable.set()
                c.writable.set()

    # ---- the link thread ----

    async def _link_loop(self):
        try:
            await self._read_link()
        except Exception as e:
            # Never a silent end: the stack's waiters would park forever.
            log.exception("osvrt.net: the link thread of %r failed", self)
            self._fail(f"its link thread failed: {e!r}")
        except Cancelled:
            if self.rt.stopping and not self.closed:
                # Runtime.stop() cancels us here, on the stack's worker, the
                # engine's one owner: reset every connection (a RST to each
                # peer) and close the link from this thread, not from stop()'s
                # own OS thread, where it would be a second thread in the engine
                # (a thread that ends here can still close a Stream as its
                # frames are freed).
                try:
                    self._reset_all()
                finally:
                    self._shut()
            raise
        finally:
            if not self.closed and not self.rt.stopping:
                log.error("osvrt.net: the link thread of %r ended", self)

    async def _read_link(self):
        fd, poll, batch = self._link.fd, self.fast.poll, lib.OSVRT_TCP_LINK_BATCH
        drained = False          # the socket said EAGAIN in our last poll()
        while not self.closed:
            if drained:
                # The socket's edge-triggered registration (io.c): no epoll_ctl
                # per wait.  Sound only because the poll() that found the queue
                # empty ran in this same step (no await since): a frame that
                # came after it is a new edge, which the worker's next epoll
                # look reports to this wait.
                try:
                    await _wait_io(fd, _EPOLLIN_ET, None)
                except ClosedResourceError:
                    return
            else:
                # Frames may still be queued (a full batch, or an error):
                # no edge would tell us, so look again after the worker's other
                # threads had their turn.
                await _yield_now()
            drained = False
            rounds = ROUNDS          # no range(): this runs once a segment
            while rounds:
                rounds -= 1
                n = poll()
                if n < 0:
                    if self.closed:
                        return
                    self.counters["rx_errors"] += 1
                    self._link_errno(-n, "last_rx_errno", f"reading {self.interface!r}")
                    if not self.closed:
                        await sleep(RX_ERROR_PAUSE_S)
                    break
                if n < batch or self.closed:      # poll() ran after() if needed
                    # recvmmsg came back short: it met EAGAIN (or an error
                    # after some frames, which it keeps for the next call;
                    # a packet socket has none in practice but ENETDOWN, whose
                    # wake-up is an edge of its own).
                    drained = True
                    break

    def take_inbox(self, c):
        """c's owner runs c's handed segments now (in its next C call)."""
        c.inbox = False
        self.handed.discard(c)

    def drain(self, c):
        """Run the segments the link handed to connection c, in order, and
        send what they produced (called by c's owner, or by the stack's
        threads before anything else touches c)."""
        self.take_inbox(c)
        if self.closed:
            return
        now = _now()
        lib.osvrt_tcp_link_drain(self.clink, c.id, now)
        self.after(now)

    def _drain_all(self):
        if not self.handed and not self._stray:
            return
        self._stray = False
        for c in self.handed:
            c.inbox = False
        self.handed.clear()
        now = _now()
        lib.osvrt_tcp_link_drain(self.clink, -1, now)
        self.after(now)

    def _icmp(self, payload, now):
        ip = wire.parse_ipv4(payload)
        if isinstance(ip, str):
            self.drops[ip] += 1
            return
        if ip.dst != self._ip:
            self.drops["not_ours"] += 1
            return
        reply = wire.echo_reply(ip.payload)
        if isinstance(reply, str):
            self.drops[reply] += 1
            return
        self.counters["icmp_echo_requests"] += 1
        packet = wire.ipv4(self._ip, ip.src, wire.IPPROTO_ICMP, reply)
        mac = self._arp.lookup(ip.src, now)
        if mac is None:
            self._arp.hold(ip.src, packet, now)
        else:
            self._send_frame(wire.ethernet(mac, self._link.mac, wire.ETH_P_IP, packet))
        self.counters["icmp_echo_replies"] += 1

    # ---- the timer thread ----

    async def _timer_loop(self):
        try:
            await self._run_timers()
        except Exception as e:
            # Never a silent end: no retransmission would ever go out again.
            log.exception("osvrt.net: the timer thread of %r failed", self)
            self._fail(f"its timer thread failed: {e!r}")

    async def _run_timers(self):
        cs, arp, kick = self.engine, self._arp, self._kick
        while not self.closed:
            d = min(lib.osvrt_tcp_next_deadline(cs), arp.next_deadline())
            now = _now()
            if d - now < NEAR_NS:
                # A deadline is near (RTO, delayed ACK, persist): wake at
                # least every TICK_NS, so the ones that come and go with every
                # segment (a delayed ACK armed by a request, cancelled by its
                # reply) fall after `armed` and need no kick: the thread
                # wakes ~100 times a second under load, not once a segment.
                d = min(d, now + TICK_NS)
            self._view.armed = d        # the link's calls flag a deadline earlier than this
            try:
                if d >= NEVER:
                    await kick.wait()
                else:
                    await kick.wait(max(0.0, (d - now) / 1e9))
            except TimeoutError:
                pass
            kick.clear()
            # Awake: the loop recomputes the deadline before it sleeps again,
            # so nobody (our own _pump below included) needs to kick it.
            self._view.armed = 0
            if self.closed:
                return
            while self._deferred:
                self._deferred.popleft()()
            # Segments handed to owners that have not run yet go first, so the
            # timers see the connection as its peer left it (no needless
            # retransmission of data an ACK in an inbox covers).
            self._drain_all()
            now = _now()
            if lib.osvrt_tcp_next_deadline(cs) <= now:
                lib.osvrt_tcp_on_timer(cs, now)
            if arp.next_deadline() <= now:
                arp.on_timer(now)
            self.pump(now)

    def defer(self, fn):
        """Run fn() on the stack's CPU soon (from any thread)."""
        self._deferred.append(fn)
        self._kick.set()

    # ---- application calls ----

    async def tcp_listen(self, port, *, backlog=128):
        """A Listener on port of the stack's address (port 0: not supported by
        the engine; pick one).  backlog: 1..65535."""
        check_port(port)
        if isinstance(backlog, bool) or not isinstance(backlog, int):
            raise TypeError(f"backlog must be an int, not {backlog!r}")
        if not 1 <= backlog <= 65535:
            raise ValueError(f"backlog {backlog!r} is out of range 1..65535")
        self._check_open()
        await self.on_cpu()
        self._check_open()
        lid = lib.osvrt_tcp_listen(self.engine, port, backlog)
        if lid < 0:
            raise oserror(lid, f"listening on {self.address.ip}:{port}")
        c = self.new_conn(lid)
        return Listener(self, c, (str(self.address.ip), port))

    async def open_tcp_stream(self, host, port, *, timeout=None):
        """Connect to (host, port) through this stack; a Stream.  host: an IPv4
        address on the stack's link (or a name resolving to one)."""
        from ...checks import check_timeout
        check_port(port)
        timeout = check_timeout(timeout)
        self._check_open()
        ip = await self._resolve(host)
        await self.on_cpu()
        self._check_open()
        now = _now()
        cid = lib.osvrt_tcp_connect(self.engine, int(ip), port, 0, now)
        if cid < 0:
            raise oserror(cid, f"connecting to {host}:{port}")
        c = self.new_conn(cid, (ip.packed, port))
        stream = Stream(self, c)
        try:
            self.pump(now)
            await stream.established(timeout, f"{host}:{port}")
        except BaseException:
            stream.abort()
            raise
        return stream

    async def _resolve(self, host):
        if isinstance(host, (ipaddress.IPv4Address,)):
            ip = host
        elif isinstance(host, str):
            try:
                ip = ipaddress.IPv4Address(host)
            except ValueError:
                from ..sockets import getaddrinfo
                infos = await getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
                ip = ipaddress.IPv4Address(infos[0][4][0])
        else:
            raise TypeError(f"host must be an IPv4 address str, not {host!r}")
        if ip not in self._net or ip == self.address.ip or ip == self._net.broadcast_address \
                or ip == self._net.network_address:
            raise OSError(errno.ENETUNREACH,
                          f"osvrt.net.user_stack: {host!r} is not a peer on the link {self._net} "
                          f"of {self.interface!r} (the stack has no router)")
        return ip

    def _check_open(self):
        if self.closed:
            why = f": {self.failure}" if self.failure else ""
            raise ClosedResourceError(errno.EBADF, f"{self!r} was closed{why}")
        if self._closing is not None:
            raise ClosedResourceError(errno.EBADF, f"{self!r} is closing")

    def release(self, c, abort=False, defer=False):
        """The application let go of connection or listener c (any thread).
        defer: never call the engine now, even on the stack's worker (from
        __del__: see Stream.__del__)."""
        if c.closed:
            return
        c.closed = True
        c.readable.set()
        c.writable.set()

        def now_release():
            if self.conns.get(c.id) is not c:
                return
            self.drain(c)                      # its segments first: they came before the close
            del self.conns[c.id]
            if not self.closed:
                t = _now()
                (lib.osvrt_tcp_abort if abort else lib.osvrt_tcp_close)(self.engine, c.id, t)
                self.pump(t)
        if self.here() and not defer:
            now_release()
        elif not self.closed:
            self.defer(now_release)

    # ---- statistics ----

    def stats(self):
        """Segments in/out, retransmissions, drops by reason, connections by
        state, ARP and ICMP counters, the link's own counts."""
        s = self._cstats
        lib.osvrt_tcp_get_stats(self.engine, s)
        if self._link.fd >= 0:
            self.counters["kernel_drops"] += self._link.kernel_drops()
        tcp = {name: getattr(s, name) for name in _TCP_STATS}
        ls = self._lstats
        lib.osvrt_tcp_link_get_stats(self.clink, ls)
        drops = dict(self.drops)
        for name in _C_LINK_DROPS:
            drops[name] += getattr(ls, name)
        counters = dict(self.counters)
        for name in _C_LINK_COUNTERS:
            counters[name] = counters.get(name, 0) + getattr(ls, name)
        for r, name in enumerate(self._drop_names):
            if r:
                drops[name] = drops.get(name, 0) + s.drops[r]
        return {
            "interface": self.interface,
            "address": str(self.address),
            "mac": wire.mac_str(self._link.mac),
            "cpu": self.cpu,
            "running": not self.closed,
            "segments_in": s.segs_in,
            "segments_out": s.segs_out,
            "retransmissions": s.retransmits,
            "tcp": tcp,
            "dropped": drops,
            "connections": {STATE_NAMES[i]: s.conns[i] for i in range(len(STATE_NAMES))},
            "link": counters,
            "arp": self._arp.stats(),
            "icmp": {"echo_requests": self.counters["icmp_echo_requests"],
                     "echo_replies": self.counters["icmp_echo_replies"]},
        }


class Stacks:
    """The runtime's service "tcp": its stacks.  stop() closes each (the
    runtime calls it after cancelling the green threads); stats() lists
    each stack's stats()."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stacks = weakref.WeakSet()

    def add(self, stack):
        with self._lock:
            self._stacks.add(stack)

    def forget(self, stack):
        with self._lock:
            self._stacks.discard(stack)

    def stop(self):
        with self._lock:
            stacks = list(self._stacks)
        for s in stacks:
            try:
                s.stop()
            except Exception:
                log.exception("osvrt.net: closing %r at stop failed", s)

    def stats(self):
        with self._lock:
            stacks = list(self._stacks)
        return {"stacks": [s.stats() for s in stacks]}


_service_lock = threading.Lock()
_fork.new_lock_in_child(globals(), "_service_lock")


def _stacks_of(rt):
    svc = rt.service("tcp")
    if svc is None:
        with _service_lock:
            svc = rt.service("tcp")
            if svc is None:
                svc = rt.attach_service("tcp", Stacks())
    return svc


async def user_stack(interface, address, *, max_connections=16384):
    """Start a user-space TCP/IP stack that owns `address` (an IPv4 address
    with its prefix, '198.18.0.2/24') on the Ethernet link `interface` (a
    veth end or a TAP with no kernel address).  Its protocol work runs on the
    calling green thread's CPU.  max_connections: connections (TIME_WAIT
    included) and listeners at once, 1..2**20.  Needs CAP_NET_RAW and
    CAP_NET_ADMIN."""
    from ...checks import check_int
    check_int("max_connections", max_connections, 1, 1 << 20)
    if not isinstance(interface, str) or not interface or len(interface) >= 16 \
            or "/" in interface or "\0" in interface:
        raise ValueError(f"osvrt.net.user_stack: interface must be a network interface name "
                         f"(1-15 characters), not {interface!r}")
    iface = parse_address(address)
    w = kernel.current_worker()
    if w is None:
        raise kernel.outside()
    rt = w.rt
    if rt.stopping:
        raise RuntimeError(f"osvrt.net.user_stack: {rt!r} is stopping")
    link = Link.open(interface, iface.ip.packed)
    try:
        stack = UserStack(rt, link, iface, w, max_connections)
        _stacks_of(rt).add(stack)
    except BaseException:
        link.close()
        raise
    stack._start()
    return stack
