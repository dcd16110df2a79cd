"""anyio's backend "osvrt": anyio's own asyncio backend running on osvrt's
asyncio loop (osvrt.new_event_loop), under its own name.

anyio finds a backend by importing `anyio._backends._<name>` and reading its
`backend_class` (anyio._core._eventloop.get_async_backend); its maintainer
declined a public mechanism for third-party backends (the backend interface
is private), and its supported door for another loop is the asyncio
backend's loop_factory.  So this module is that door under a name: osvrt.anyio
makes it importable as `anyio._backends._osvrt`, and OsvrtBackend is anyio's
AsyncIOBackend whose loop is always osvrt's.  anyio.run(backend="osvrt") and
anyio's pytest plugin (anyio_backend = "osvrt") set sniffio's name to
"osvrt" for the run; the methods below keep it "osvrt" where anyio's asyncio
backend would write "asyncio" (calls into the loop from other OS threads).

This module imports anyio: it is loaded only through osvrt.anyio (the extra
osvrt[anyio]) or anyio's own import of the backend by name.
"""
import functools
import inspect
from typing import Any

try:
    # The backend's name reaches anyio (and httpcore, and any library that
    # asks) only through sniffio: without it anyio answers "asyncio" inside
    # the backend, and code that checks for "osvrt" takes the wrong branch.
    # anyio no longer depends on sniffio, so say so here, not at that check.
    import sniffio  # noqa: F401
except ImportError as e:
    raise ImportError("the anyio backend 'osvrt' needs sniffio, through which its name reaches "
                      "anyio and other libraries: pip install 'osvrt[anyio]'") from e

from anyio._backends._asyncio import AsyncIOBackend, TestRunner
from anyio._core._eventloop import set_current_async_library, threadlocals
from anyio.lowlevel import EventLoopToken

from ..runtime import Runtime, resolve_cpus
from .loop import new_event_loop

__all__ = ["OsvrtBackend", "backend_class", "NAME", "loop_factory_for"]

NAME = "osvrt"          # the backend's name, and sniffio's inside it

# Runtime options the loop passes on (osvrt.Runtime's keywords, less cpus).
_RUNTIME_OPTIONS = frozenset(inspect.signature(Runtime).parameters) - {"cpus"}
_OWN_OPTIONS = ("cpus", "cpu", "debug")
_OTHER_LOOPS = ("loop_factory", "use_uvloop")


def loop_factory_for(options: Any) -> tuple[Any, Any]:
    """(debug, loop factory) for backend_options, checked now, so a bad
    option is an error of anyio.run() before any loop exists.

    cpus: the CPUs of the loop's osvrt Runtime, as osvrt.Runtime takes them
    (an int n: the first n CPUs this process may use; an iterable: those CPU
    ids; None: every one).  Default 1.  The event loop and every anyio task
    run on one of them (`cpu`, default the first); the others run the green
    threads the program starts there (osvrt.spawn(fn, cpu=c)) and size the
    to_thread pool (min(32, len(cpus) + 4) threads)."""
    if not isinstance(options, dict):
        raise TypeError(f"backend_options must be a dict, not {type(options).__name__}")
    opts = dict(options)
    for name in _OTHER_LOOPS:
        if name in opts:
            raise TypeError(f"backend_options[{name!r}]: the osvrt backend's loop is always "
                            f"osvrt.new_event_loop; for another loop use backend='asyncio'")
    unknown = sorted(set(opts) - set(_OWN_OPTIONS) - _RUNTIME_OPTIONS, key=str)
    if unknown:
        raise TypeError(f"backend_options: unknown option {unknown[0]!r} for the osvrt backend; "
                        f"valid: {', '.join(_OWN_OPTIONS + tuple(sorted(_RUNTIME_OPTIONS)))}")
    debug = opts.pop("debug", None)
    if debug is not None and not isinstance(debug, bool):
        raise TypeError(f"backend_options['debug'] must be a bool or None, not {debug!r}")
    cpus = opts.pop("cpus", 1)
    if isinstance(cpus, (str, bytes, bool)):     # resolve_cpus says the same; name the key
        raise ValueError(f"backend_options['cpus']={cpus!r}: give a count, CPU ids or None")
    cpus = resolve_cpus(cpus)                   # ValueError naming a bad value
    cpu = opts.pop("cpu", None)
    if cpu is not None and (isinstance(cpu, bool) or not isinstance(cpu, int)):
        raise ValueError(f"backend_options['cpu']={cpu!r}: give a CPU id (an int) or None")
    if cpu is not None and cpu not in cpus:
        raise ValueError(f"backend_options['cpu']={cpu!r} is not one of its cpus {cpus}")
    return debug, functools.partial(new_event_loop, cpu=cpu, cpus=cpus, **opts)


def _as_osvrt(func):
    """func, called with sniffio's name set to "osvrt" in the context it
    runs in (a callback's or a task's own copy: the setting ends with it)."""
    @functools.wraps(func)
    def in_osvrt(*args):
        set_current_async_library(NAME)
        return func(*args)
    return in_osvrt


def _claimed_by(backend, func):
    """func, run in an anyio worker thread whose token names `backend`
    for the call (the worker's own token is back afterwards)."""
    @functools.wraps(func)
    def in_worker(*args):
        outer = threadlocals.current_token
        threadlocals.current_token = EventLoopToken(backend, outer.native_token)
        try:
            return func(*args)
        finally:
            threadlocals.current_token = outer
    return in_worker


class OsvrtBackend(AsyncIOBackend):
    """anyio's asyncio backend on osvrt.new_event_loop, named "osvrt"."""

    @classmethod
    def run(cls, func, args, kwargs, options):
        debug, factory = loop_factory_for(options)
        return super().run(func, args, kwargs, {"debug": debug, "loop_factory": factory})

    @classmethod
    def create_test_runner(cls, options):
        debug, factory = loop_factory_for(options)
        return TestRunner(debug=debug, loop_factory=factory)

    # anyio's asyncio backend sets sniffio's name to "asyncio" for code it
    # runs from another OS thread (from_thread.run, from_thread.run_sync,
    # portals); inside the osvrt backend that code sees "osvrt", as its
    # caller's tasks do.

    @classmethod
    async def run_sync_in_worker_thread(cls, func, args, abandon_on_cancel=False, limiter=None):
        # anyio's worker threads name AsyncIOBackend as their loop's backend
        # (their token); for the call, name this one, so that from_thread.*
        # inside it comes back through the methods below.
        return await super().run_sync_in_worker_thread(_claimed_by(cls, func), args,
                                                        abandon_on_cancel, limiter)

    @classmethod
    def run_async_from_thread(cls, func, args, token):
        return super().run_async_from_thread(_as_osvrt(func), args, token)

    @classmethod
    def run_sync_from_thread(cls, func, args, token):
        return super().run_sync_from_thread(_as_osvrt(func), args, token)

    @classmethod
    def run_sync_soon(cls, func, args, token):
        return super().run_sync_soon(_as_osvrt(func), args, token)


backend_class = OsvrtBackend
