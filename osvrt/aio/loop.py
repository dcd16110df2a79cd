"""OsvrtEventLoop: an asyncio event loop whose loop runs as an osvrt green
thread.

What is osvrt's and what is asyncio's:

- asyncio's own pure-Python machinery does the protocol work, unchanged:
  the ready queue and the TimerHandle heap of BaseEventLoop._run_once, the
  selector transports (UDP; TCP and Unix streams are asyncio's with their
  data path in C: transport.py), sock_* methods, create_server (with
  reuse_port), sslproto (ssl=, start_tls), pipes, subprocesses, sendfile,
  exception handler and debug mode.  Tasks and Futures are asyncio's C
  _asyncio.Task/Future, as on uvloop, because libraries (anyio) read their
  private fields.
- osvrt runs it: the loop owns a one-CPU Runtime whose worker has no OS
  thread of its own: run_forever() submits one green thread (the loop thread)
  and runs the worker's loop on the calling thread until that green thread
  ends, so the loop's code runs in the caller's thread, as on asyncio and
  uvloop (signal handlers, main-thread checks).  When the ready queue is
  empty the loop thread parks on one osvrt wait: for its selector's epoll fd
  in the worker's per-CPU epoll (readiness of the loop's sockets), with the
  next asyncio timer as its timeout (a timer of the worker); call_soon from
  a green thread beside the loop ends the same wait (kernel.wake), and
  call_soon_threadsafe() from another OS thread wakes it through the
  worker's C pushlist and asyncio's self-pipe byte.  run_in_executor(None, ...) runs
  on the runtime's offload pool (osvrt.to_thread).  Because the loop is a
  green thread, osvrt's own API works inside it: osvrt.spawn() from a
  callback or a task starts a green thread on the same worker, and
  run_green() awaits one from a task.
"""
import asyncio
import atexit
import contextlib
import contextvars
import heapq
import os
import select
import selectors
import signal
import sys
import threading
import time
import warnings
import weakref
from asyncio import base_events, constants, events, format_helpers, sslproto, unix_events
from typing import Any

from .. import _engine, kernel
from ..interrupt_safe import InterruptSafeEvent
from ..offload import to_thread
from ..runtime import Runtime, spawn
from .offloads import Offloads
from .transport import SocketTransport

__all__ = ["OsvrtEventLoop", "new_event_loop"]

_BUSY_TURNS = 16               # busy turns between yields to the worker's other threads
_MAX_PARK = 24 * 3600.0        # seconds, as asyncio's MAXIMUM_SELECT_TIMEOUT
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
# asyncio's own thresholds for dropping cancelled timers from the heap
# (getattr: private names, absent from typeshed's stubs; their 3.11-3.13 values)
_MIN_SCHEDULED = getattr(base_events, "_MIN_SCHEDULED_TIMER_HANDLES", 100)
_CANCELLED_FRACTION = getattr(base_events, "_MIN_CANCELLED_TIMER_HANDLES_FRACTION", 0.5)
_NOT_IN, _NOT_OUT = ~select.EPOLLIN, ~select.EPOLLOUT
_EPOLLIN = select.EPOLLIN


class _PollingSelector(selectors.EpollSelector):
    """asyncio's selector, polled without blocking: the loop never sleeps in
    its own epoll_wait; it parks on osvrt (see OsvrtEventLoop._idle)."""

    tx_event = None              # LoopCore.tx_event: a socket transport's readiness

    def select(self, timeout=None):
        # selectors.EpollSelector.select with the timeout fixed at 0, in one
        # frame (a super() call here cost ~1,200 instructions a loop turn).
        # Only asyncio's own turn (debug mode) calls it: the C turn polls the
        # epoll itself.  An fd with no key is a socket transport's
        # (osvrt/aio/transport.py), handled in C as the C turn handles it.
        fd_to_key = self._fd_to_key
        ready = []
        for fd, ev in self._selector.poll(0, max(len(fd_to_key), 64)):
            key = fd_to_key.get(fd)
            if key is None and self.tx_event is not None:
                self.tx_event(fd, ev)
            elif key is not None:
                events = ((_WRITE if ev & _NOT_IN else 0) | (_READ if ev & _NOT_OUT else 0))
                ready.append((key, events & key.events))
        return ready


class _Handle(events.Handle):
    """asyncio's Handle, made without asking the loop for its debug flag
    (call_soon makes these only when the loop is not in debug mode)."""

    __slots__ = ()

    def __init__(self, callback, args, loop, context=None):
        self._context = contextvars.copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None


# Its repr (asyncio's, which prints the class name) and the default
# exception handler's "handle: <Handle ...>" line read as asyncio's.
_Handle.__name__ = _Handle.__qualname__ = "Handle"

_new_handle = object.__new__
_copy_context = contextvars.copy_context


class _Seat:
    """Stands in the Runtime for the OS thread of the loop's worker
    (w.os_thread): that worker has no thread of its own; it runs on the thread
    that runs the loop (run_forever, and close for the Runtime's stop)."""

    def __init__(self, w):
        self.w = w
        self.thread = threading.current_thread()
        # Set while no thread runs the worker; set and cleared by the loop's
        # thread (often the main thread, which Ctrl-C interrupts), waited on
        # by Runtime.stop() in close()'s helper thread: interrupt-safe.
        self._left = InterruptSafeEvent()
        self._left.set()

    @property
    def name(self):
        return self.thread.name

    @property
    def ident(self):
        return self.thread.ident

    @property
    def native_id(self):
        return self.thread.native_id

    def is_alive(self):
        return not self._left.is_set()

    def join(self, timeout=None):
        self._left.wait(timeout)

    def run(self):
        """Run the worker's loop on this OS thread until its stop_requested is set
        (by the loop's green thread at its end, or by Runtime.stop)."""
        self.thread = threading.current_thread()
        try:
            self._left.clear()              # in the try: a Ctrl-C as it returns still sets it
            self.w.run_loop()
        finally:
            try:
                if self.w.rt.stopping:
                    # the run that Runtime.stop() ended: this worker's loop has
                    # ended for good (Worker.main says so for a worker thread)
                    self.w.loop_ended()
            finally:
                self._left.set()


class _LoopRuntime(Runtime):
    """A Runtime whose loop worker (the CPU loop_cpu, or its first) runs on
    the loop's thread (_Seat); its other workers, if any, have OS threads of
    their own as in any Runtime."""

    loop_worker = None                  # that worker, once started

    def __init__(self, cpus, loop_cpu=None, **options):
        super().__init__(cpus, **options)
        if loop_cpu is None:
            loop_cpu = self.cpus[0]
        elif loop_cpu not in self.cpus:
            raise ValueError(f"cpu={loop_cpu!r} is not one of the loop's cpus {self.cpus}")
        self.loop_cpu = loop_cpu

    def _start_worker(self, w, ready):
        if w.cpu_id != self.loop_cpu:
            return super()._start_worker(w, ready)
        seat = _Seat(w)
        self.loop_worker = w
        ready(w, None)
        return seat


class OsvrtEventLoop(unix_events.SelectorEventLoop):
    """An asyncio event loop run by an osvrt Runtime; see the module's help."""

    def __init__(self, *, cpu=None, cpus=None, runtime_options=None):
        options = dict(runtime_options or {})
        options.setdefault("balance", False)
        self._rt = None
        self._rt_started = False
        super().__init__(selector=_PollingSelector())
        # Made (and so validated: a bad cpu is a ValueError naming it) now,
        # started by the first run; a bad option leaves nothing open.
        try:
            if cpus is None:
                cpus = [cpu] if cpu is not None else 1
            self._rt = _LoopRuntime(cpus, cpu, **options)
        except BaseException:
            super().close()
            raise
        # Where the loop's helper green threads (poller, executor calls,
        # run_green) must stay: they touch the loop's Futures, which belong to
        # the loop's OS thread.  None with one CPU (nothing can move them).
        self._helper_cpu = self._rt.loop_cpu if len(self._rt.cpus) > 1 else None
        # call_soon and the ready queue's run in C (osvrt/_engine/aio.c); its
        # call_soon is this instance's outside debug mode (set_debug).
        try:
            self._core = core = _engine.LoopCore(self, self._ready, self._callback_failed,
                                                 _Handle, events.Handle)
            core.bind_turn(self._selector._fd_to_key, self._selector.fileno(),
                           self._tidy_timers, self._remove_reader, self._remove_writer,
                           heapq.heappop, events.TimerHandle, _MIN_SCHEDULED,
                           self._clock_resolution)
            core.bind_task(asyncio.Task)
            core.bind_future(asyncio.Future)
            self._selector.tx_event = core.tx_event
        except BaseException:
            # another Python's asyncio layout (a TypeError naming the field):
            # nothing left open
            self._rt = None
            super().close()
            raise
        self.set_debug(self._debug)
        # Asked by every Future and Task as it is made: the C core answers
        # (its debug flag is the loop's, kept by set_debug), and makes Futures;
        # a subclass's own method stays in force (an instance attribute would
        # hide it).
        if not self._overrides("get_debug"):
            self.get_debug = core.get_debug
        if not self._overrides("create_future"):
            self.create_future = core.create_future
        self._green = None                 # the loop thread (an osvrt Thread) while it runs
        # The running thread is pinned to the loop's CPU for a run when asked
        # (cpu=), or when the loop shares a Runtime with pinned workers.
        if cpu is None and len(self._rt.cpus) > 1 and options.get("pin", True):
            cpu = self._rt.loop_cpu
        self._pin_cpu = cpu
        self._wakeup_kept = False          # our self-pipe is the signal wakeup fd (a run)
        self._offloads = Offloads(self)    # run_in_executor(None, ...) calls not over yet

    @property
    def _idle_ticket(self):
        """The loop thread's wait while it is parked, else None (kept by the
        C core, whose call_soon wakes it)."""
        return self._core.idle_ticket

    @_idle_ticket.setter
    def _idle_ticket(self, tk):
        self._core.idle_ticket = tk

    def _overrides(self, name):
        """A subclass defines `name`: the C core's method must not hide it."""
        return getattr(type(self), name) is not getattr(OsvrtEventLoop, name)

    def set_debug(self, enabled):
        super().set_debug(enabled)
        core = self.__dict__.get("_core")
        if core is None:
            return                         # BaseEventLoop.__init__, before the core exists
        core.debug = self._debug
        if self._debug or self._overrides("call_soon"):
            # asyncio's own call_soon (this class's, with its checks), or a
            # subclass's
            self.__dict__.pop("call_soon", None)
        else:
            # The C Future and Task look call_soon up on the instance: this
            # C method is found first, and schedules with no Python frame.
            self.call_soon = core.call_soon
        self._choose_create_task()

    def set_task_factory(self, factory):
        super().set_task_factory(factory)
        self._choose_create_task()

    def _choose_create_task(self):
        """create_task is the engine's (aio.c) outside debug mode, with no
        task factory and no subclass's own; asyncio's (or the subclass's)
        otherwise."""
        core = self.__dict__.get("_core")
        if core is None:
            return
        if self._debug or self._task_factory is not None or self._overrides("create_task"):
            self.__dict__.pop("create_task", None)
        else:
            self.create_task = core.create_task

    # ---- socket transports: their data path in C (transport.py) ---------------

    @property
    def loop_core(self):
        """The loop's C core (osvrt/_engine/aio.c): its socket transports
        register there."""
        return self._core

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *,
                            server_side=False, server_hostname=None, extra=None, server=None,
                            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        # asyncio's own, over this loop's socket transport
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        SocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def _sendfile_native(self, transp, file, offset, count):
        try:
            return await super()._sendfile_native(transp, file, offset, count)
        finally:
            # A resume_reading() while the sendfile ran was held back (the fd
            # was the selector's, transport.py _in_sendfile); asyncio's own
            # resume at the end does nothing for a transport already unpaused.
            if type(transp) is SocketTransport and transp.is_reading():
                transp.reading_starts()

    def _socket_transport(self, fd):
        """The SocketTransport that owns fd now, if any.  asyncio's table is
        weak: a closed transport may linger there until collected, its fd
        number already another socket's (its TxCore's fd is -1 then)."""
        transports = getattr(self, "_transports", None)   # None in asyncio's __init__
        tx = transports.get(fd) if transports is not None else None
        return tx if type(tx) is SocketTransport and tx.core.fd == fd else None

    # asyncio's transport code adds and removes its reader and writer through
    # these: for a SocketTransport's fd they become its TxCore's epoll
    # registration (its writer is its buffer's: EPOLLOUT while output waits).

    def _add_reader(self, fd, callback, *args):
        tx = self._socket_transport(fd)
        if tx is not None and getattr(callback, "__self__", None) is tx:
            tx.reading_starts()
            return None
        return super()._add_reader(fd, callback, *args)

    def _remove_reader(self, fd):
        tx = self._socket_transport(fd)
        if tx is not None and tx.core.reading:
            return tx.core.set_reading(False)
        return super()._remove_reader(fd)

    def _remove_writer(self, fd):
        if self._socket_transport(fd) is not None:
            return False           # the TxCore stops writing when its buffer empties
        return super()._remove_writer(fd)

    # ---- the runtime ---------------------------------------------------------

    @property
    def runtime(self):
        """The osvrt Runtime that runs this loop (started by the first run)."""
        if not self._rt_started and self._rt is not None:
            self._rt.start()
            self._rt_started = True
            _unclosed.add(self)
        return self._rt

    def run_forever(self):
        self._check_closed()
        if self.is_running():
            raise RuntimeError("This event loop is already running")    # asyncio's words
        # Before asyncio's own check: a worker's OS thread has osvrt's
        # stand-in running loop (osvrt/asyncio_guard.py), which asyncio would
        # report as "another loop is running".  The loop's own worker has no
        # stand-in: it runs on this thread (_Seat), not in Worker.main.
        if kernel.current_worker() is not None:
            if isinstance(events._get_running_loop(), OsvrtEventLoop):
                raise RuntimeError("Cannot run the event loop while another loop is running")
            raise RuntimeError("an osvrt loop's run_forever() runs a worker on its OS thread; "
                               "it cannot be called from an osvrt green thread")
        self._check_running()
        rt = self.runtime
        w = rt.loop_worker
        # Before the submit: the loop's green thread sets it again at its end,
        # and the worker's loop then returns here.
        w.stop_requested = False
        done = rt.submit(self._loop_thread, cpu=rt.loop_cpu, name="osvrt-asyncio-loop")
        with self._on_this_thread():
            w.os_thread.run()
        if not done.done():
            # The worker left its loop while ours still runs: only Runtime.stop
            # from elsewhere does that.
            raise RuntimeError("the loop's runtime was stopped while the loop ran")
        exc = done.exception() if not done.cancelled() else None
        if exc is not None:
            raise exc

    @contextlib.contextmanager
    def _on_this_thread(self):
        """While the worker runs here: pinned to `cpu` if one was given, and,
        in the main thread, Python's signal handlers get to run when the
        worker idles: a signal's byte in our self-pipe (the wakeup fd) makes
        the poller run, and handlers run in the first bytecode after it."""
        old_mask = None
        if self._pin_cpu is not None:
            old_mask = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self._pin_cpu})
        old_fd = None
        if threading.current_thread() is threading.main_thread():
            try:
                old_fd = signal.set_wakeup_fd(self._csock.fileno(), warn_on_full_buffer=False)
            except ValueError:           # not the main interpreter
                old_fd = None
        self._wakeup_kept = old_fd is not None
        try:
            yield
        finally:
            self._wakeup_kept = False
            if old_fd is not None:
                signal.set_wakeup_fd(old_fd)
            if old_mask is not None:
                os.sched_setaffinity(0, old_mask)

    async def _loop_thread(self):
        """The loop: a turn (_run_once) after another until stop(); an osvrt
        park when nothing is ready (_idle)."""
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        self._green = kernel.current()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            turns = 0
            core = self._core
            while True:
                if not self._debug:
                    # Turns, parks (_idle's wait) and yields in C, with no
                    # Python frame per park (aio.c, LoopCore.run), until
                    # stop() or set_debug(True).
                    await core.run(_BUSY_TURNS)
                    if self._stopping:
                        break
                    continue
                self._run_once()                   # asyncio's own turn
                turns += 1
                if self._stopping:
                    break
                if not self._ready:
                    await self._idle()
                elif turns >= _BUSY_TURNS:
                    # Busy: let the worker's other green threads (osvrt.spawn,
                    # executor calls) run now and then.
                    turns = 0
                    await kernel.yield_now()
        finally:
            self._stopping = False
            self._thread_id = None
            self._green = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)
            # The worker's loop returns to run_forever once this thread ended.
            kernel.current_worker().stop_requested = True

    def call_soon(self, callback, *args, context=None):
        # asyncio's call_soon less its debug checks (kept in debug mode): the
        # C Future schedules every done callback through here.  From a green
        # thread beside the loop (osvrt.spawn) while the loop is parked, it
        # also wakes the loop.
        if self._debug:
            handle = super().call_soon(callback, *args, context=context)
            if handle._source_traceback:
                # asyncio drops its own frame from where the handle was made;
                # this one is ours: the caller's frame is the one to name.
                del handle._source_traceback[-1]
            if self._idle_ticket is not None:
                self._write_to_self()
            return handle
        if self._closed:
            raise RuntimeError("Event loop is closed")
        # _Handle's fields set here, without its __init__ frame.
        handle = _new_handle(_Handle)
        handle._context = _copy_context() if context is None else context
        handle._loop = self
        handle._callback = callback
        handle._args = args
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        self._ready.append(handle)
        if self._idle_ticket is not None:
            # Called by a green thread of our worker while the loop is parked
            # (e.g. it completed a Future): wake the loop, a local wake.
            self._write_to_self()
        return handle

    def call_at(self, when, callback, *args, context=None):
        # asyncio's call_at (the same in 3.11-3.13; inline: a super() call
        # would be one more frame per timer), and one more step.
        if when is None:
            raise TypeError("when cannot be None")
        if when != when:
            # asyncio heaps it and the turn never finds it due: the park
            # would wait its 24 h bound and every later timer with it
            raise ValueError(f"call_at: when={when!r} is not a time")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = events.TimerHandle(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        if self._core.idle_ticket is not None:
            # From a green thread beside the parked loop (osvrt.spawn): the
            # park's timeout was the earliest timer when it began; wake the
            # loop, so that it parks again with this one counted.
            self._write_to_self()
        return timer

    def stop(self):
        super().stop()
        # From a green thread beside the parked loop: it would see _stopping
        # only at its next event.  (A no-op while the loop runs.)
        self._write_to_self()

    def _run_once(self):
        """One turn: asyncio's BaseEventLoop._run_once without what this loop
        does elsewhere (the wait: _idle) or never (a blocking select), so a
        turn costs fewer instructions; in debug mode asyncio's own, for its
        slow-callback reports."""
        if self._debug:
            return super()._run_once()
        # Cancelled timers dropped (_tidy_timers), the selector polled
        # without blocking, due timers and ready fds' handles queued, the
        # ready callbacks run: osvrt/_engine/aio.c, LoopCore.run_once.
        self._core.run_once()

    def _tidy_timers(self):
        """Drop cancelled timers from the heap's head, or rebuild the heap
        without them when they are most of it (asyncio's rule, so that it
        cannot grow without bound); called by LoopCore.run_once."""
        sched = self._scheduled
        cancelled = self._timer_cancelled_count
        if len(sched) > _MIN_SCHEDULED and cancelled > len(sched) * _CANCELLED_FRACTION:
            live = []
            for h in sched:
                if h._cancelled:
                    h._scheduled = False
                else:
                    live.append(h)
            heapq.heapify(live)
            self._scheduled = live
            self._timer_cancelled_count = 0
        else:
            while sched and sched[0]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(sched)._scheduled = False

    def _transport_callback_failed(self, transport, exc):
        """What Handle._run reports when a transport's _read_ready or
        _write_ready raised: here the C data path ran the protocol's callback."""
        self.call_exception_handler({
            "message": f"Exception in a protocol callback of {transport!r}",
            "exception": exc, "transport": transport})

    def _callback_failed(self, h, exc):
        """What Handle._run reports when its callback raised."""
        cb = format_helpers._format_callback_source(h._callback, h._args)
        context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": h}
        if h._source_traceback:
            context["source_traceback"] = h._source_traceback
        self.call_exception_handler(context)

    async def _idle(self):
        """Park until a callback is ready: a timer is due, the selector has
        an event, or a waker (call_soon from a green thread beside the loop,
        call_soon_threadsafe, a signal) ends the wait.  Debug mode's park
        (asyncio's turn); outside debug mode LoopCore.run parks the same way
        in C (aio.c, run_park), with no Python frame.

        The park is one wait of the loop thread itself for its selector's
        epoll fd in the worker's epoll (readable: an fd of the loop is ready),
        with the next timer as its timeout; a waker ends that same wait
        (kernel.wake: the ticket protocol, whoever claims first wins).  An
        earlier version parked on a plain ticket and had a helper green
        thread wait for the epoll fd and wake it: two more switches and
        frames, about 15,000 instructions a park (docs/design.md)."""
        timeout = None
        if self._scheduled:
            timeout = self._scheduled[0]._when - self.time()
            if timeout <= 0:
                return
            # call_at(math.inf) is legal (anyio uses it): as asyncio's own
            # select, wake at least once a day (and never hand inf to a timer).
            timeout = min(timeout, _MAX_PARK)
        tk = _engine.wait_io(self._selector.fileno(), _EPOLLIN, timeout)
        # Publish the wait, then re-check (a waker appends, then reads it):
        # whichever comes second sees the other.  Wakers on this worker run
        # only while we are parked (one OS thread, and nothing between here
        # and the await yields), when the wait is open; a foreign OS thread
        # may find it not opened yet (its wake is then stale), so it also
        # writes the self-pipe, which is in the epoll (_write_to_self).  The
        # store and the load are Python attribute and deque operations: with
        # the GIL they are ordered; on a free-threaded build this relies on
        # their per-object locks (a full fence each on x86 and arm64), which
        # is CPython's behaviour, not a documented guarantee: to revisit.
        self._idle_ticket = tk
        try:
            if self._ready or self._stopping:
                return                    # never awaited: nothing was registered
            await tk
        except TimeoutError:
            pass                          # the next timer is due
        except (KeyboardInterrupt, SystemExit) as e:
            # A Python signal handler (Ctrl-C) ran in this thread as it woke:
            # raise it out of run_forever from a loop callback, as asyncio does.
            self.call_soon(_reraise, e)
        finally:
            self._idle_ticket = None

    def _write_to_self(self):
        # call_soon_threadsafe() and signal delivery: wake the parked loop
        # through the worker's pushlist (a no-op when it runs).  From another
        # OS thread, also asyncio's self-pipe byte: the loop may not have
        # opened its wait yet (see _idle), and the byte is in its epoll.
        tk = self._idle_ticket
        if tk is not None:
            kernel.wake(tk)
            if self._thread_id != threading.get_ident():
                super()._write_to_self()

    # ---- signals ----------------------------------------------------------------

    def remove_signal_handler(self, sig):
        # asyncio clears the process's wakeup fd when its last handler goes;
        # while the worker runs here it must stay ours, or Ctrl-C would not
        # wake an idle worker (see _on_this_thread).
        removed = super().remove_signal_handler(sig)
        if (self._wakeup_kept and not self._signal_handlers
                and threading.current_thread() is threading.main_thread()):
            signal.set_wakeup_fd(self._csock.fileno(), warn_on_full_buffer=False)
        return removed

    # ---- executor: the runtime's offload pool -----------------------------------

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if (executor is not None or self._default_executor is not None or self._green is None
                or threading.get_ident() != self._thread_id):
            # Not the default executor, or not the running loop's OS thread
            # (another thread may call it on asyncio's loop: the executor's
            # future wakes the loop thread-safely): asyncio's own.
            return super().run_in_executor(executor, func, *args)
        self._check_default_executor()       # RuntimeError after shutdown_default_executor()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        fut = self.create_future()
        job = self._offloads.new(func, args)
        t = spawn(self._offload, fut, job, name="osvrt-asyncio-executor", cpu=self._helper_cpu)

        def on_done(f):
            if f.cancelled():
                t.cancel()
                # Here, not only in _offload: a thread cancelled before its
                # first step runs none of its code, and the job would stay
                # counted for ever (a shutdown waiting on it).
                if job.abandon():
                    self._offloads.ended(job)
        fut.add_done_callback(on_done)
        return fut

    async def _offload(self, fut, job):
        try:
            result = await to_thread(job)
        except kernel_cancelled():       # fut was cancelled: nothing to set
            if job.abandon():
                self._offloads.ended(job)
            return
        except BaseException as e:
            self._offloads.ended(job)
            self._settle(fut, None, e)
            return
        self._offloads.ended(job)
        self._settle(fut, result, None)

    async def shutdown_default_executor(self, timeout=None):
        """asyncio's, which waits for its default executor's threads, and
        then the same for the calls run_in_executor(None, ...) runs on the
        runtime's offload pool, within the same timeout (seconds; None:
        none).  run_in_executor(None, ...) raises RuntimeError afterwards."""
        start = time.monotonic()
        if sys.version_info >= (3, 12):
            await super().shutdown_default_executor(timeout)
        else:                                # 3.11's takes no timeout
            await super().shutdown_default_executor()
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        if not await self._offloads.wait(left):
            warnings.warn(f"The executor did not finish joining its threads within {timeout} "
                          "seconds.", RuntimeWarning, stacklevel=2)

    def _settle(self, fut, result, exc):
        """From a green thread beside the loop thread (same worker): complete
        fut, then wake the loop, which may be parked with nothing ready."""
        if not fut.done():
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        self._write_to_self()

    # ---- close ---------------------------------------------------------------------

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        self._release_runtime()           # ends any green thread left
        super().close()
        self._core.closed = True

    def _release_runtime(self, at_exit=False):
        """Stop the loop's Runtime, if it was started.  Not while the
        interpreter finalizes: no thread can start then (_stop_runtime's
        helper would never run; asyncio's __del__ closes an unclosed loop in
        the last GC pass), and the exit hook (_stop_unclosed_runtimes) has
        stopped it before that."""
        _unclosed.discard(self)
        rt, self._rt = self._rt, None
        if rt is not None and self._rt_started and not sys.is_finalizing():
            self._stop_runtime(rt, at_exit)

    @staticmethod
    def _stop_runtime(rt, at_exit=False):
        """Runtime.stop() needs the worker to run its green threads' cleanup,
        and the worker runs only on a thread that runs it: stop from a helper
        thread while this one runs the worker until stop() ends its loop."""
        if kernel.current_worker() is not None:
            # This thread runs a worker already: close() from a task of
            # another osvrt loop, or asyncio's __del__ closing an unclosed
            # loop in a GC pass that ran here.  The loop's worker cannot run
            # nested in it (the nested run would leave this thread with no
            # current worker, and the running loop would never resume): do
            # the same on an OS thread of its own, and wait for it.
            return _on_own_thread(OsvrtEventLoop._stop_runtime, rt, at_exit)
        w = rt.loop_worker
        w.stop_requested = False          # before the helper can set it
        # close() does not wait for run_in_executor calls (asyncio's
        # executor.shutdown(wait=False)): the stop abandons those still
        # running instead of joining them for up to its 5 s
        # (shutdown_default_executor is what waits for them).
        pool = rt.service("offload")
        if pool is not None:
            pool.abandon_at_stop()
        try:
            helper = _ThreadCall(rt.stop, timeout=5.0)
        except RuntimeError:
            if not at_exit:
                raise
            # Python 3.12.0 and 3.12.1 start no thread at exit: the green
            # threads are left unstopped, as asyncio leaves an unclosed
            # loop's tasks (the worker has no thread of its own to keep).
            return
        try:
            w.os_thread.run()
        finally:
            helper.join_and_raise(release=w.release_handles)

    async def run_green(self, fn, *args):
        """Await fn(*args) run as an osvrt green thread (so it may use osvrt.sleep,
        osvrt primitives, osvrt.to_thread); its result or exception comes back."""
        fut = self.create_future()

        async def green():
            try:
                result = await fn(*args)
            except kernel_cancelled():
                return
            except BaseException as e:
                self._settle(fut, None, e)
                return
            self._settle(fut, result, None)

        t = spawn(green, name=getattr(fn, "__name__", "osvrt-green"), cpu=self._helper_cpu)
        try:
            return await fut
        except asyncio.CancelledError:
            t.cancel()
            raise


# Loops whose Runtime was started and that are not closed yet: weak, so that
# an unclosed loop is still collected (and warned about) as asyncio's is.
_unclosed: "weakref.WeakSet[OsvrtEventLoop]" = weakref.WeakSet()


@atexit.register
def _stop_unclosed_runtimes():
    """At exit, stop the Runtime of each loop left unclosed (and not running
    in another thread) while threads can still start; the loop itself stays
    unclosed, so asyncio's __del__ still warns ResourceWarning and closes it."""
    for loop in list(_unclosed):
        if not loop.is_running():
            loop._release_runtime(at_exit=True)


class _ThreadCall:
    """fn(*args, **kw) started on an OS thread of its own; join_and_raise()
    waits for it and raises its exception in the joining thread."""

    def __init__(self, fn, *args, **kw):
        self._failed = []

        def run():
            try:
                fn(*args, **kw)
            except BaseException as e:    # re-raised by join_and_raise
                self._failed.append(e)
        self._thread = threading.Thread(target=run, name="osvrt-asyncio-close")
        self._thread.start()

    def join_and_raise(self, release=None):
        try:
            self._thread.join()
        finally:
            if release is not None:
                release()
        if self._failed:
            raise self._failed[0]


def _on_own_thread(fn, *args):
    """fn(*args) on a new OS thread; its exception raised here."""
    _ThreadCall(fn, *args).join_and_raise()


def _reraise(exc):
    raise exc


def kernel_cancelled():
    from ..thread import Cancelled
    return Cancelled


def new_event_loop(*, cpu: int | None = None, cpus: Any = None,
                   **runtime_options: Any) -> "OsvrtEventLoop":
    """A new osvrt asyncio event loop (an asyncio.AbstractEventLoop).

        asyncio.Runner(loop_factory=osvrt.new_event_loop)
        anyio.run(main, backend="asyncio",
                  backend_options={"loop_factory": osvrt.new_event_loop})

    cpu: the CPU whose osvrt worker runs the loop (the running thread is
    pinned to it for the run; default: the first of cpus);
    cpus: the CPUs of the loop's Runtime, as osvrt.Runtime(cpus=...) takes
    them (default: one, `cpu` or the first CPU this process may use).  The
    loop and all its tasks run on one of them; the others run the green
    threads the program starts there (osvrt.spawn(fn, cpu=c)) and size the
    offload pool (to_thread, run_in_executor).
    runtime_options: further osvrt.Runtime options.  For several cores, run
    one loop per CPU (each in its own OS thread, each listener with
    reuse_port=True)."""
    return OsvrtEventLoop(cpu=cpu, cpus=cpus, runtime_options=runtime_options)
