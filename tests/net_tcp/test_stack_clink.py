"""The user stack's link loop in C (csrc/net/tcp/tcp_link.c) as the
application sees it: the C link's copy of the next hops follows the ARP
cache (a peer's new MAC, learned from its ARP, is used by the very next TCP
frame, not 300 s later when the old entry expires)."""
import socket
import struct
import threading
import time

import osvrt
import osvrt.net

from tcp_support import T, PeerThread, run_stack

PORT = 7300
NEW_MAC = bytes.fromhex("020000009999")
WATCH_S = 20          # how long the peer watches for a frame to the new MAC (generous: sanitizers)


def _arp_request(sha, spa, tpa):
    return (b"\xff" * 6 + sha + b"\x08\x06" +
            struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sha, spa, b"\0" * 6, tpa))


def test_a_peer_mac_learned_from_arp_is_used_by_the_next_tcp_frame(topo):
    """The peer claims a new MAC in an ARP request; the stack's next TCP
    frame to it carries that MAC (the peer's kernel then ignores it, which
    is why the test watches the wire with a packet socket)."""
    seen = threading.Event()
    stop = threading.Event()
    ready = threading.Event()

    def sniff_and_talk():
        # A packet socket on the peer's end sees every frame, to any MAC.
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        raw.bind((topo.peer_if, 0))
        raw.settimeout(0.2)
        tcp = socket.create_connection((topo.stack_ip, PORT), timeout=T)
        try:
            tcp.sendall(b"ping")
            assert tcp.recv(4) == b"ping"           # the old MAC works
            peer_ip, stack_ip = socket.inet_aton(topo.peer_ip), socket.inet_aton(topo.stack_ip)
            raw.send(_arp_request(NEW_MAC, peer_ip, stack_ip))
            ready.wait(T)
            deadline = time.monotonic() + WATCH_S
            while time.monotonic() < deadline and not stop.is_set():
                try:
                    f = raw.recv(2048)
                except socket.timeout:
                    tcp.sendall(b"more")            # its ACK goes to the MAC the stack knows
                    continue
                if (len(f) >= 34 and f[12:14] == b"\x08\x00" and f[23] == 6
                        and f[26:30] == stack_ip and f[:6] == NEW_MAC):
                    seen.set()
                    break
        finally:
            tcp.close()
            raw.close()

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            async with await stack.tcp_listen(PORT) as listener:
                peer = PeerThread(topo.in_peer, sniff_and_talk)
                peer.start()
                stream, _ = await listener.accept()
                assert await stream.recv() == b"ping"
                await stream.sendall(b"ping")
                while stack.stats()["arp"]["requests_in"] < 2:   # the kernel's, then ours
                    await osvrt.sleep(0.01)
                ready.set()
                await osvrt.to_thread(peer.outcome)
                stream.abort()
                return stack.stats()
        finally:
            stop.set()
            await stack.aclose()

    run_stack(topo, main)
    assert seen.is_set(), "no TCP frame from the stack went to the MAC the peer's ARP announced"
