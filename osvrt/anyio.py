"""osvrt as an anyio backend named "osvrt" (the extra osvrt[anyio]).

    import anyio, osvrt.anyio
    anyio.run(main, backend="osvrt", backend_options={"cpus": 2})

    # pytest, with anyio's plugin (osvrt's own pytest plugin registers the
    # name, so conftest.py needs no import):
    @pytest.fixture
    def anyio_backend():
        return "osvrt"

Inside, sniffio.current_async_library() == "osvrt".  The backend is anyio's
own asyncio backend running on osvrt's asyncio loop (osvrt.new_event_loop):
anyio's maintainer declined third-party backends, and the asyncio backend's
loop_factory is its supported door for another loop, the one uvloop uses.
backend_options: cpus (default 1: the CPUs of the loop's Runtime; the loop
runs on one, the others run green threads started there and size the
to_thread pool), cpu (the loop's CPU), debug, and osvrt.Runtime's options.
See docs/api.md, "The anyio backend".
"""
from . import anyio_names
from .aio.anyio_backend import NAME, OsvrtBackend, loop_factory_for

__all__ = ["NAME", "OsvrtBackend", "loop_factory_for"]

anyio_names.install()
