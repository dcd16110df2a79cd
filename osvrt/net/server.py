"""serve_tcp: a TCP server on green sockets, one listener per serving CPU.

    async def echo(stream):
        while data := await stream.recv():
            await stream.sendall(data)

    osvrt.run(osvrt.net.serve_tcp, echo, ("127.0.0.1", 8000))

Each serving CPU has its own listener (SO_REUSEPORT: the kernel spreads new
connections among them) and its own acceptor; a connection's green thread is
pinned to the CPU that accepted it, so its requests never cross CPUs.

Which CPUs serve (cpus=None), measured with wrk (64 keep-alive connections,
issue #17; benchmarks/bench_streams.py --protocol): under the GIL, two workers
that both run Python request handlers serve fewer requests than one (the GIL
passes between them only at its switch interval, 5 ms, so each worker's
connections wait for it in turn: p99 tens of ms), while one worker serving
every connection in a two-CPU runtime matches a one-CPU runtime.  So with
the GIL the default is one serving CPU, the caller's, and the other workers
stay free for offload, timers and other threads; on a free-threaded build
(no GIL) every CPU of the runtime serves.  Pass cpus= to choose.
"""
import errno
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable

from .. import kernel
from ..checks import check_int
from ..kernel import sleep
from ..kernel import current, spawn
from ..deadline import move_on_after
from ..thread import Cancelled, Thread
from .sockets import Listener, Stream, check_tcp_address, tcp_listen

__all__ = ["serve_tcp", "serving_cpus"]

log = logging.getLogger("osvrt")

# fd or memory exhaustion: the listener is fine, the process is short of
# something that closing connections gives back; wait and accept again.
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_RETRY_DELAY = 0.1
CONNECTION_END_WARN_S = 5.0   # a handler still running this long after its cancel is named


def _gil_enabled():
    is_enabled = getattr(sys, "_is_gil_enabled", None)     # 3.13+
    return True if is_enabled is None else bool(is_enabled())


def serving_cpus(cpus: Iterable[int] | None = None) -> list[int]:
    """The CPUs serve_tcp serves on: `cpus` (checked against the runtime's),
    or by the rule above: the caller's CPU under the GIL, every CPU of the
    runtime without it."""
    w = kernel.current_worker()
    if w is None:
        raise RuntimeError("serving_cpus() runs in a green thread (osvrt.run)")
    mine = list(w.rt.cpus)
    if cpus is None:
        return [w.cpu_id] if _gil_enabled() else mine     # w runs the caller
    cpus = list(cpus)
    bad = [c for c in cpus if c not in mine]
    if bad or not cpus:
        raise ValueError(f"cpus={cpus!r}: each must be one of this runtime's CPUs {mine}"
                         if bad else "cpus=[]: at least one CPU must serve")
    return cpus


async def _connection(handler, stream, live):
    try:
        async with stream:
            try:
                await handler(stream)
            except ConnectionError:
                pass                   # the peer went away: nothing to report
    finally:
        live.pop(current(), None)


async def _acceptor(handler, listener, cpu):
    live: dict = {}                    # this CPU's connection threads (all on this worker) -> stream
    try:
        while True:
            try:
                stream, _ = await listener.accept()
            except OSError as e:
                if e.errno not in _EXHAUSTED:
                    raise
                log.warning("serve_tcp on %s: accept failed (%s); retrying in %s s",
                            listener.address, e, ACCEPT_RETRY_DELAY)
                await sleep(ACCEPT_RETRY_DELAY)
                continue
            # Pinned to our CPU, so it cannot run (and leave `live`) before the add.
            live[spawn(_connection, handler, stream, live, cpu=cpu)] = stream
    finally:
        await _end_connections(live, listener)


async def _end_connections(live, listener):
    """serve_tcp ends (cancelled, or its acceptor failed): so do its
    connections, as serve_tcp_protocol's do.  Each handler gets Cancelled and
    its stream closes; we wait for them, naming those that take long."""
    ending = list(live.items())
    for t, _stream in ending:
        t.cancel()
    for t, stream in ending:
        with move_on_after(CONNECTION_END_WARN_S) as scope:
            await _ended(t, listener)
        if scope.expired and not t.done():
            log.warning("serve_tcp on %s: the handler of %r has not ended %s s after its "
                        "cancel; waiting for it", listener.address, t, CONNECTION_END_WARN_S)
            await _ended(t, listener)
        stream.close()                 # a thread cancelled before its first step never opened it


async def _ended(t, listener):
    try:
        await t.join()
    except Cancelled:                  # what we asked for
        pass
    except Exception:
        log.exception("serve_tcp on %s: the handler of %r failed as it ended",
                      listener.address, t)


async def serve_tcp(handler: Callable[[Stream], Awaitable[object]], address: tuple[str, int], *,
                    cpus: Iterable[int] | None = None, backlog: int = 1024,
                    on_listen: Callable[[tuple[str, int]], object] | None = None) -> None:
    """Serve TCP connections on address (host, port) until cancelled: each
    accepted connection runs `await handler(stream)` in its own green thread
    (the stream is closed when it returns; ConnectionError from it is the peer
    leaving and is not reported).  cpus: see serving_cpus().  on_listen, if
    given, is called with the bound (host, port) once every listener is up
    (port 0 picks a free port)."""
    if not callable(handler):
        raise TypeError(f"handler must be an async function taking a Stream, not {handler!r}")
    if on_listen is not None and not callable(on_listen):
        raise TypeError(f"on_listen must be a callable taking (host, port) or None, "
                        f"not {on_listen!r}")
    await serve_on_listeners(address, cpus, backlog, on_listen,
                             lambda lst, cpu: spawn(_acceptor, handler, lst, cpu, cpu=cpu))


async def serve_on_listeners(address: tuple[str, int], cpus: Iterable[int] | None,
                             backlog: int,
                             on_listen: Callable[[tuple[str, int]], object] | None,
                             start: Callable[[Listener, int], Thread]) -> None:
    """What serve_tcp and serve_tcp_protocol share: one SO_REUSEPORT listener
    per serving CPU (serving_cpus), on_listen called once all are up,
    `start(listener, cpu)` spawning each CPU's server thread; runs until
    they end or this is cancelled, then cancels them and closes every
    listener."""
    check_int("backlog", backlog, 0, 2**31 - 1)
    cpus = serving_cpus(cpus)
    host, port = check_tcp_address(address)
    listeners: list = []
    try:
        for _ in cpus:
            lst = await tcp_listen((host, port), backlog=backlog, reuse_port=True)
            listeners.append(lst)
            port = lst.address[1]      # port 0: the others share the one picked
        if on_listen is not None:
            on_listen(listeners[0].address)
        servers = [start(lst, cpu) for cpu, lst in zip(cpus, listeners)]
        try:
            for t in servers:
                await t.join()
        finally:
            for t in servers:
                t.cancel()
            # Ended before their listeners close: a server on another CPU may
            # be in an accept on one (and serve_tcp's end its connections).
            for t in servers:
                if not t.done():
                    try:
                        await t.join()
                    except Cancelled:
                        pass
                    except Exception:
                        log.exception("serve on %s: a server failed as it ended", address)
    finally:
        for lst in listeners:
            lst.close()
