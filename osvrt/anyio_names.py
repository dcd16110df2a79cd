"""How the name "osvrt" reaches anyio, and through sniffio, httpcore.

- anyio imports a backend as the module `anyio._backends._<name>`.  A finder
  on sys.meta_path answers that one name with osvrt.aio.anyio_backend, so
  `anyio.run(..., backend="osvrt")` and anyio's pytest plugin
  (`anyio_backend = "osvrt"`) load it on first use.  install() costs no
  import of anyio: osvrt's pytest plugin calls it at every pytest start.
- Inside the backend sniffio reports "osvrt".  httpcore (under httpx) asks
  sniffio and accepts only "asyncio" and "trio" (RuntimeError "Running under
  an unsupported async environment" otherwise); for "asyncio" it uses anyio,
  which is exactly what the osvrt backend is.  So, once httpcore is loaded,
  its choice is taught that "osvrt" means that: its module function
  httpcore._synchronization.current_async_library is wrapped (only "osvrt"
  is mapped; every other answer, and every error, is httpcore's own).
"""
import importlib.abc
import importlib.util
import sys
import threading

from . import _fork

BACKEND_MODULE = "anyio._backends._osvrt"
_HTTPCORE_CHOICE = "httpcore._synchronization"
_lock = threading.Lock()
_fork.new_lock_in_child(globals(), "_lock")
_installed = False


class _Finder(importlib.abc.MetaPathFinder):
    """Answers BACKEND_MODULE with osvrt's backend module, and wraps the
    loading of httpcore's choice so that it is adapted once it ran."""

    def find_spec(self, fullname, path, target=None):
        if fullname == BACKEND_MODULE:
            return importlib.util.spec_from_loader(fullname, _BackendLoader())
        if fullname == _HTTPCORE_CHOICE:
            spec = _spec_from_others(self, fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _AdaptAfter(spec.loader)
            return spec
        return None


def _spec_from_others(me, fullname, path, target):
    for finder in sys.meta_path:
        if finder is me or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _BackendLoader(importlib.abc.Loader):
    """Makes BACKEND_MODULE the very module osvrt.aio.anyio_backend (one
    module under two names, so one OsvrtBackend class)."""

    def create_module(self, spec):
        from .aio import anyio_backend
        return anyio_backend

    def exec_module(self, module):
        pass            # already executed under its own name


class _AdaptAfter(importlib.abc.Loader):
    """httpcore's own loader, then the adaptation (see the module's help)."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        adapt_httpcore(module)

    def __getattr__(self, name):          # resources, get_source, ...: httpcore's own
        return getattr(self._loader, name)


def adapt_httpcore(module):
    """Wrap module.current_async_library (httpcore._synchronization's) so
    that sniffio's "osvrt" is taken as "asyncio"; idempotent."""
    original = getattr(module, "current_async_library", None)
    if original is None or getattr(original, "_osvrt_adapted", False):
        return

    def current_async_library():
        try:
            import sniffio
        except ImportError:   # then nothing says "osvrt" (osvrt.anyio needs sniffio)
            return original()
        try:
            name = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            name = None
        if name == "osvrt":
            # The osvrt backend is anyio on an asyncio loop: httpcore's
            # "asyncio" path (anyio's primitives and network backend).
            return "asyncio"
        return original()

    current_async_library._osvrt_adapted = True
    current_async_library.__wrapped__ = original
    current_async_library.__doc__ = original.__doc__
    module.current_async_library = current_async_library
    # httpcore's network backend chooser took the name by import
    auto = sys.modules.get("httpcore._backends.auto")
    if auto is not None and getattr(auto, "current_async_library", None) is original:
        auto.current_async_library = current_async_library


def install():
    """Put the finder on sys.meta_path (once) and adapt an httpcore that is
    already loaded."""
    global _installed
    with _lock:
        if not _installed:
            sys.meta_path.insert(0, _Finder())
            _installed = True
    loaded = sys.modules.get(_HTTPCORE_CHOICE)
    if loaded is not None:
        adapt_httpcore(loaded)
