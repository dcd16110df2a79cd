"""A user-space TCP/IP stack on an owned Ethernet link (issue #19).

    stack = await osvrt.net.user_stack("veth0", "198.18.0.2/24")
    async with await stack.tcp_listen(8000) as listener:
        stream, addr = await listener.accept()
    stream = await stack.open_tcp_stream("198.18.0.1", 9000)
    stack.stats(); await stack.aclose()

The stack answers ARP and ICMP echo for its address and runs TCP with the
engine of csrc/net/tcp/ (tcp.h: sans-I/O, in C).  Streams and listeners have
the API of osvrt.net's kernel streams.  Modules: wire (frame formats), link
(the AF_PACKET socket), arp, stack (UserStack: the link and timer threads,
the engine's driver, stats), streams (Stream, Listener).
"""
from .stack import UserStack, user_stack
from .streams import Listener, Stream

__all__ = ["Listener", "Stream", "UserStack", "user_stack"]
