"""serve_tcp_protocol: a TCP server whose connections are served by
callbacks that run in the engine's accept/read/send loop (osvrt/_engine/serve.c).

    class Hello:
        def __init__(self, conn):
            self.buf = b""
        def data_received(self, data):          # bytes in ...
            self.buf += data
            ...
            return reply                        # ... bytes (or None) out

    osvrt.run(osvrt.net.serve_tcp_protocol, Hello, ("127.0.0.1", 8080))

The fast path for servers whose requests need no await (asyncio's Protocol,
in osvrt): one green thread per serving CPU accepts, reads and sends in C
with the GIL held and calls the connection's protocol object for each chunk
received.  It parks only when no connection has anything to read, so a busy
server pays no thread switch per request, where serve_tcp (a green thread
per connection, streams) pays one.  A handler that must await something (a
database, another service) belongs in serve_tcp; the two can share a runtime.

Which CPUs serve: as serve_tcp (serving_cpus): one listener per serving CPU
(SO_REUSEPORT), and the server thread pinned there.
"""
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .. import _engine
from ..kernel import spawn
from .server import serve_on_listeners

__all__ = ["serve_tcp_protocol"]

log = logging.getLogger("osvrt")


def _report(listener_address):
    def on_error(conn, exc):
        if conn is None:                          # accept: out of fds or buffers
            log.warning("serve_tcp_protocol on %s: accept failed (%s); retrying in 0.1 s",
                        listener_address, exc)
        elif not isinstance(exc, ConnectionError):   # a reset peer is not news
            log.error("serve_tcp_protocol on %s: %r failed; connection closed",
                      listener_address, conn, exc_info=exc)
    return on_error


async def _serve_one(listener, factory):
    server = _engine.tcp_serve(listener.fileno(), factory, _report(listener.address))
    try:
        await server
    finally:
        server.close()                            # every connection closed
        listener.close()


async def serve_tcp_protocol(factory: Callable[[Any], Any], address: tuple[str, int], *,
                             cpus: Iterable[int] | None = None, backlog: int = 1024,
                             on_listen: Callable[[tuple[str, int]], object] | None = None
                             ) -> None:
    """Serve TCP on address (host, port) until cancelled.  For each accepted
    connection, `factory(conn)` returns its protocol object, whose
    `data_received(data)` is called with every chunk of bytes received; what
    it returns (bytes-like, or None) is sent.  Optional `connection_lost(exc)`
    is called once when the connection ends (exc None after EOF or
    conn.close(), the OSError of a reset).  `conn.write(data)` sends more,
    `conn.close()` closes after the output is sent.  A callback that raises
    an Exception closes its connection (logged on the "osvrt" logger).
    cpus, backlog, on_listen: as serve_tcp."""
    if not callable(factory):
        raise TypeError(f"factory must be a callable taking a connection, not {factory!r}")
    if on_listen is not None and not callable(on_listen):
        raise TypeError(f"on_listen must be a callable taking (host, port) or None, "
                        f"not {on_listen!r}")
    await serve_on_listeners(address, cpus, backlog, on_listen,
                             lambda lst, cpu: spawn(_serve_one, lst, factory, cpu=cpu,
                                                    name=f"serve-tcp-protocol-{cpu}"))
