"""Reading a net channel from a green thread (the consumer side of
csrc/net/channel.h), with no syscall and no release of the GIL.

The engine's ChanRx (osvrt/_engine/chanrx.c) does the channel's accesses in
C with the orders channel.h asks for (an acquire load of `head`, then the
slot and payload, then a release store of `tail`): take() turns the oldest
datagram into (data, (ip, port)) in one call, and queued() is the re-check of
a waiter.  An engine call holds the GIL, while any cffi call releases it
(README.md and docs/design.md, "The GIL"); no correctness argument here rests
on either: the reader's token below makes the holder the channel's only
consumer.

Waiting uses the wake protocol (cwait.py): the thread stores its handle in
the channel's `waiter` word, then cwait() publishes WAITING and re-checks the
channel; the classifier publishes head, fences, reads `waiter` and wakes.
One reader at a time per channel: the ring has one consumer, and the waiter
word names one thread.  Readers take a token (the ChanRx's, an atomic word:
rx.acquire() takes it, rx.release() gives it back), so an uncontended
recvfrom costs no lock; a reader that finds the token taken publishes a wait
ticket, re-checks the token, and parks until a releaser (who puts the token
back, then wakes one ticket) lets it try again: no lost wake-up, in the order
of the kernel's principle 4.  rx.take_fast() is recvfrom()'s common case
(token, budget, take, token back) in one call (udp.py).
"""
import collections
import time

from ... import kernel
from ..._engine import ChanRx, udp_tx_flush
from ...cwait import cwait
from ..._core import ffi, lib

_SLOT_SIZE = 32                     # struct osvrt_chan_slot (channel.h)
_now = time.perf_counter

# Adaptive polling before a park (OSv polls before it halts): a reader whose
# recent waits were short polls the channel for up to twice the typical wait
# (an EWMA of the last waits), at most POLL_MAX_S, instead of parking at once
# (a park costs a futex sleep of the worker when nothing else runs, and its
# wake-up goes through the C pushlist).  The poll yields to the worker's other
# green threads every few reads, so it never delays runnable work by more
# than one yield.  Waits longer than POLL_MAX_S (idle flows) never poll.
POLL_MAX_S = 60e-6
_POLL_READS = 16            # looks at the channel between two yields


class Lane:
    """One channel of a flow, as its consumer sees it."""

    __slots__ = ("flow", "index", "rx", "capacity", "arena_size", "readers",
                 "ready", "closed", "wait_ewma", "polls", "poll_hits")

    def __init__(self, flow, index):
        view = ffi.new("struct osvrt_chan_view *")
        if not lib.osvrt_flow_view(flow, index, view):
            raise ValueError(f"lane {index!r} does not exist")
        if view.slot_size != _SLOT_SIZE:
            raise RuntimeError(f"osvrt.net: slot size {view.slot_size} != {_SLOT_SIZE}: "
                               "the extension and this module disagree (rebuild)")
        self.flow = flow                 # keeps the C memory alive as long as we are
        self.index = index
        # Tickets of readers waiting for the token (rx.acquire(): the token;
        # rx.release() wakes them).
        self.readers = collections.deque()
        # The channel's consumer; it holds `flow`, so the memory outlives it too.
        self.rx = ChanRx(flow, int(ffi.cast("uintptr_t", view.chan)), self.readers)
        self.capacity = view.capacity
        self.arena_size = view.arena_size
        self.closed = False
        self.wait_ewma = POLL_MAX_S      # seconds: typical wait (starts as "worth a poll")
        self.polls = self.poll_hits = 0
        # cwait's re-check, in C: a datagram waits, or shut() ran (the
        # closer's half of the wake, in C too: wake_waiter)
        self.ready = self.rx.ready

    async def acquire_slow(self):
        """Wait for the reader's token (someone else holds it)."""
        t = kernel.current()
        acquire, readers = self.rx.acquire, self.readers
        while True:
            ticket = t.new_ticket()
            readers.append(ticket)               # publish first ...
            if acquire():                        # ... then re-check
                try:
                    if kernel.claim(ticket) is not None:
                        _discard_found(readers, ticket)   # nobody woke us: just withdraw
                    else:
                        await kernel.park()      # a release woke us meanwhile: absorb it
                except BaseException:
                    self.release()               # we hold the token: never keep it
                    raise
                return
            try:
                await kernel.park()
            except BaseException:
                if not _discard_found(readers, ticket):
                    self.wake_next()             # we were woken: pass it on
                raise

    def release(self):
        """Give the token back and let one waiting reader try again."""
        self.rx.release()

    def wake_next(self):
        """Wake the first reader still waiting for the token."""
        self.rx.wake_next()

    def queued(self):
        return self.rx.queued()

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
            queued, yield_now = self.rx.queued, kernel.yield_now
            self.polls += 1
            while True:
                for _ in range(_POLL_READS):
                    if queued():
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
        set_waiter = self.rx.set_waiter
        set_waiter(h)                    # before cwait's WAITING + re-check
        try:
            ready = self.ready
            while not ready():
                await cwait(ready)
        finally:
            set_waiter(None)

    def wake_all(self, crt):
        """close(): wake the thread waiting for packets and every reader
        waiting for the token (they see `closed`)."""
        self.wake_waiter(crt)
        while self.readers:
            self.wake_next()

    def wake_waiter(self, crt):
        """Shut the channel for its readers and wake the thread waiting on
        it, if any (close(); `closed` is already set: the Python checks)."""
        h = self.rx.shut()
        if h is not None:
            lib.osvrt_wake(crt, h)


def _discard_found(waiters, entry):
    """Remove `entry` itself; True if it was still there.  One C call
    (deque.remove; a ticket compares by identity, thread.c, so no Python code
    runs inside it) that holds the deque for its whole walk (the GIL here, the
    deque's own lock on a free-threaded build): a releaser's popleft on
    another OS thread cannot land in the middle, as it could in a Python loop
    over the deque, which then raises RuntimeError (deque mutated during
    iteration)."""
    try:
        waiters.remove(entry)
    except ValueError:
        return False
    return True
