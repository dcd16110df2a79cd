"""osvrt.net: green sockets on the kernel's stack (streams.py: TCP, Unix,
UDP sockets, getaddrinfo; no privileges), and UDP on net channels.

A classifier thread in C (csrc/net/classifier.c) reads every frame that arrives
on an interface (default ``lo``) from an AF_PACKET ring, sorts the packets
into per-flow channels (lock-free single-producer single-consumer rings in
C memory) and wakes the green thread that owns each flow, once per burst.
Protocol processing (here: UDP) then runs in that green thread, which reads
the channel as plain memory, with no syscall and no call into C::

    import osvrt, osvrt.net

    async def main():
        ep = await osvrt.net.udp_bind(("127.0.0.1", 9000))
        data, addr = await ep.recvfrom()
        await ep.sendto(data, addr)
        ep.close()

    osvrt.run(main)

Needs CAP_NET_RAW (the AF_PACKET socket): without it, udp_bind raises
PermissionError.  The classifier starts with the first udp_bind of a runtime
(or with configure()) and stops with the runtime; rt.stats()["net"] and
ep.stats() count what arrived, what was dropped and why, and the wake-ups.
Modules: sockets (kernel sockets), channels/ (service: the classifier of a
runtime; lane: reading a channel; udp: endpoints), rules (classifier rules
compiled with numba.cfunc).
"""
import sys as _sys

from . import sockets as _sockets
from .channels import udp as _udp
from .channels.service import configure, net_of
from .sockets import (Listener, Stream, UdpSocket, getaddrinfo, open_tcp_stream,
                      open_unix_stream, tcp_listen, udp_socket, unix_listen)
from .channels.udp import UdpEndpoint, udp_bind
from .server import serve_tcp, serving_cpus
from .protocol_server import serve_tcp_protocol
from .tcp import UserStack, user_stack

# The names these modules had before the #22 layout (osvrt.net.streams,
# osvrt.net.udp), kept importable for callers written against them.
_sys.modules.setdefault(__name__ + ".streams", _sockets)
_sys.modules.setdefault(__name__ + ".udp", _udp)
# and as attributes: `import osvrt.net.streams` finds the module in sys.modules
# and does not set it on the package, so `osvrt.net.streams.Stream` needs these.
streams = _sockets
udp = _udp

__all__ = ["Listener", "Stream", "UdpEndpoint", "UdpSocket", "configure", "getaddrinfo",
           "net_of", "open_tcp_stream", "open_unix_stream", "serve_tcp", "serve_tcp_protocol",
           "serving_cpus", "tcp_listen", "udp_bind", "udp_socket", "unix_listen", "UserStack",
           "user_stack"]
