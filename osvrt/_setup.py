"""The engine's set-up: what it needs from Python, given to it once, by the
first Runtime.start() (and by nothing at import time: importing osvrt has no
side effect on the engine, whatever the import order).

The engine keeps these in its module state (module.c, io.c): the C core's
function table (csrc/core/core_api.h), the class of green threads and its
helpers (thread.py), and the I/O error classes (readiness.py)."""
import threading

from . import _engine, _fork

_lock = threading.Lock()
# A child forked while another thread was setting the engine up gets a free
# lock, and does the half-done set-up again under it.
_fork.new_lock_in_child(globals(), "_lock")
_done = False


def set_up_engine():
    """Idempotent and safe from any OS thread."""
    global _done
    if _done:                        # read without the lock: set once, never cleared
        return
    with _lock:
        if _done:
            return
        from ._core import ffi, lib
        from .readiness import BusyResourceError, ClosedResourceError
        from .thread import ENGINE_PARTS
        # bind_core checks the table's version and size: an engine and a
        # core from different builds fail here, with a clear ImportError.
        _engine.bind_core(int(ffi.cast("uintptr_t", lib.osvrt_core_api())))
        _engine.configure(*ENGINE_PARTS)
        _engine.io_set_classes(ClosedResourceError, BusyResourceError)
        _done = True
