"""Reading a net channel from a green thread (the consumer side of
csrc/net/channel.h), with no syscall and, when a packet is there, no call into C.

The channel's words are C memory that this module reads and writes through
memoryviews: a memoryview load or store does not release the GIL, while any
cffi call does (README.md and docs/design.md, "The GIL").  Orders: the producer publishes `head`
with a release store after writing the slots and payloads; we load head,
then read slots and payloads, then store `tail` when done.  On x86-64 (TSO)
a plain aligned load is an acquire and a plain aligned store a release, and
CPython's memoryview does each as one aligned 8-byte access, so these plain
accesses are the C11 acquire/release that channel.h asks for.  Elsewhere the
two accesses go through C (osvrt_flow_head / osvrt_flow_release): correct,
slower.

Waiting uses the wake protocol (cwait.py): the thread stores its handle in
the channel's `waiter` word, then cwait() publishes WAITING and re-checks the
channel; the classifier publishes head, fences, reads `waiter` and wakes.
One reader at a time per channel: the ring has one consumer, and the waiter
word names one thread.  Readers take a token (a one-element list: list.pop()
is atomic), so an uncontended recvfrom costs no lock; a reader that finds
the token taken publishes a wait ticket, re-checks the token, and parks
until a releaser (who puts the token back, then wakes one ticket) lets it
try again: no lost wake-up, in the order of the kernel's principle 4.
"""
import collections
import platform
import socket
import struct
import time

from ... import kernel
from ..._engine import udp_tx_flush
from ...cwait import cwait
from ..._core import ffi, lib

_SLOT = struct.Struct("<QIIIHHII")      # struct osvrt_chan_slot (channel.h)
_TAKE = struct.Struct("<QII4xH")         # what take() needs of a slot: off, len, saddr, sport
_WAITER = lib.OSVRT_CHAN_WAITER     # "a handle is stored" (a handle may be 0)
_TSO = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_ADDR_CACHE_MAX = 4096
_now = time.perf_counter

# Adaptive polling before a park (OSv polls before it halts): a reader whose
# recent waits were short polls the channel for up to twice the typical wait
# (an EWMA of the last waits), at most POLL_MAX_S, instead of parking at once
# (a park costs a futex sleep of the worker when nothing else runs, and its
# wake-up goes through the C pushlist).  The poll yields to the worker's other
# green threads every few reads, so it never delays runnable work by more
# than one yield.  Waits longer than POLL_MAX_S (idle flows) never poll.
POLL_MAX_S = 60e-6
_POLL_READS = 16            # plain reads of head between two yields


class _CallWord:
    """head/tail through C, for hosts without TSO (see the module doc)."""

    __slots__ = ("_flow", "_lane")

    def __init__(self, flow, lane):
        self._flow, self._lane = flow, lane

    def __getitem__(self, i):
        return lib.osvrt_flow_head(self._flow, self._lane)

    def __setitem__(self, i, tail):
        lib.osvrt_flow_release(self._flow, self._lane, tail)


class Lane:
    """One channel of a flow, as its consumer sees it."""

    __slots__ = ("flow", "index", "head", "tail_word", "waiter", "slots", "arena", "capacity",
                 "arena_size", "tail", "token", "readers", "ready", "closed", "_addrs", "wait_ewma",
                 "polls", "poll_hits")

    def __init__(self, flow, index):
        view = ffi.new("struct osvrt_chan_view *")
        if not lib.osvrt_flow_view(flow, index, view):
            raise ValueError(f"lane {index!r} does not exist")
        if view.slot_size != _SLOT.size:
            raise RuntimeError(f"osvrt.net: slot size {view.slot_size} != {_SLOT.size}: "
                               "the extension and this module disagree (rebuild)")
        self.flow = flow                 # keeps the C memory alive as long as we are
        self.index = index
        if _TSO:
            self.head = memoryview(ffi.buffer(view.head, 8)).cast("Q")
            self.tail_word = memoryview(ffi.buffer(view.tail, 8)).cast("Q")
        else:
            self.head = self.tail_word = _CallWord(flow, index)
        self.waiter = memoryview(ffi.buffer(view.waiter, 8)).cast("Q")
        self.capacity = view.capacity
        self.arena_size = view.arena_size
        self.slots = memoryview(ffi.buffer(view.slots, view.capacity * _SLOT.size))
        self.arena = memoryview(ffi.buffer(view.arena, view.arena_size))
        self.tail = self.tail_word[0]    # ours from now on: we are the consumer
        self.token = [True]              # the reader's token: pop() to take, append() to give back
        self.readers = collections.deque()   # tickets of readers waiting for the token
        self.closed = False
        self._addrs = {}
        self.wait_ewma = POLL_MAX_S      # seconds: typical wait (starts as "worth a poll")
        self.polls = self.poll_hits = 0
        head = self.head

        def ready():                     # cwait's re-check: plain reads only
            return head[0] != self.tail or self.closed
        self.ready = ready

    async def acquire_slow(self):
        """Wait for the reader's token (someone else holds it)."""
        t = kernel.current()
        token, readers = self.token, self.readers
        while True:
            ticket = t.new_ticket()
            readers.append(ticket)               # publish first ...
            try:
                token.pop()                      # ... then re-check
            except IndexError:
                pass
            else:
                if kernel.claim(ticket) is not None:
                    _discard_found(readers, ticket)   # nobody woke us: just withdraw
                else:
                    try:
                        await kernel.park()      # a release woke us meanwhile: absorb it
                    except BaseException:
                        self.release()           # we hold the token: never keep it
                        raise
                return
            try:
                await kernel.park()
            except BaseException:
                if not _discard_found(readers, ticket):
                    self._wake_next()            # we were woken: pass it on
                raise

    def release(self):
        """Give the token back and let one waiting reader try again."""
        self.token.append(True)
        if self.readers:
            self._wake_next()

    def _wake_next(self):
        readers = self.readers
        while readers:
            try:
                ticket = readers.popleft()
            except IndexError:
                return
            if kernel.wake(ticket):
                return

    def queued(self):
        return self.head[0] - self.tail

    def take(self):
        """The oldest packet as (data, (ip, port)); the caller made sure one
        is there and holds the token."""
        t = self.tail
        off, n, saddr, sport = _TAKE.unpack_from(self.slots, (t % self.capacity) * 32)
        p = off % self.arena_size
        data = self.arena[p:p + n].tobytes()
        t += 1
        self.tail = t
        self.tail_word[0] = t            # release: the slot and bytes are the producer's again
        addr = self._addrs.get((saddr, sport))
        if addr is None:
            addr = self._addr(saddr, sport)
        return data, addr

    def _addr(self, saddr, sport):
        addrs = self._addrs
        if len(addrs) >= _ADDR_CACHE_MAX:
            addrs.clear()
        ip = socket.inet_ntoa(saddr.to_bytes(4, "little"))   # saddr: the wire's bytes
        addr = addrs[(saddr, sport)] = (ip, sport)
        return addr

    async def wait(self):
        """Wait until the channel has a packet (or is closed): poll a short,
        adaptive window first (see POLL_MAX_S), then park.  The caller holds
        the token."""
        # The replies this thread queued (batched, udp.py) leave before it
        # waits for input: a request/response peer sends its next request only
        # once it has the reply, so holding it through the poll below would
        # only add the poll's first round to every round trip.
        udp_tx_flush()
        t0 = _now()
        ewma = self.wait_ewma
        if ewma < POLL_MAX_S:
            end = t0 + min(2 * ewma, POLL_MAX_S)
            head, yield_now = self.head, kernel.yield_now
            self.polls += 1
            while True:
                for _ in range(_POLL_READS):
                    if head[0] != self.tail:
                        waited = _now() - t0
                        self.wait_ewma = ewma + (waited - ewma) * 0.25
                        self.poll_hits += 1
                        return
                if self.closed or _now() >= end:
                    break
                await yield_now()
        await self._park()
        waited = _now() - t0
        # A long wait counts fully, so an idle flow stops polling at once;
        # short ones pull the typical wait down gently.
        self.wait_ewma = waited if waited > ewma else ewma + (waited - ewma) * 0.25

    async def _park(self):
        t = kernel.current()
        h = t.handle or t.worker.rt.handle_for(t)
        self.waiter[0] = h | _WAITER     # before cwait's WAITING + re-check
        try:
            ready = self.ready
            while not ready():
                await cwait(ready)
        finally:
            self.waiter[0] = 0

    def wake_all(self, crt):
        """close(): wake the thread waiting for packets and every reader
        waiting for the token (they see `closed`)."""
        self.wake_waiter(crt)
        while self.readers:
            self._wake_next()

    def wake_waiter(self, crt):
        """Wake the thread waiting on this lane, if any (close())."""
        w = self.waiter[0]
        if w & _WAITER:
            lib.osvrt_wake(crt, w & ~_WAITER)


def _discard_found(waiters, entry):
    """Remove `entry` itself; True if it was still there."""
    for i, e in enumerate(waiters):
        if e is entry:
            del waiters[i]
            return True
    return False
