"""The user stack's ARP (osvrt/net/tcp/arp.py) against a hostile link: the
senders it learns and the packets it holds are chosen by whoever is on the
other side, so the cache and the queue are bounded and off-subnet addresses
are neither learned nor held; and a held packet is retried and finally
dropped even when no TCP timer would wake the stack's timer thread."""
import socket
import struct

import osvrt
import osvrt.net
from osvrt.net.tcp import arp as arp_mod
from osvrt.net.tcp import wire

from tcp_support import run_stack

OUR_MAC, OUR_IP = bytes.fromhex("02000000aa01"), socket.inet_aton("198.18.0.2")
NET, MASK = int.from_bytes(socket.inet_aton("198.18.0.0"), "big"), 0xFFFFFF00


def _arp(sent):
    return arp_mod.Arp(OUR_MAC, OUR_IP, sent.append, lambda ip: None,
                       on_link=lambda ip: int.from_bytes(ip, "big") & MASK == NET)


def _request_from(mac, ip):
    return wire.arp(wire.ARP_REQUEST, mac, ip, wire.ZERO_MAC, OUR_IP)


def test_senders_off_the_subnet_are_answered_not_learned():
    sent = []
    a = _arp(sent)
    a.input(_request_from(b"\x02" * 6, socket.inet_aton("10.0.0.9")), 0)
    a.input(_request_from(b"\x04" * 6, socket.inet_aton("198.18.0.9")), 0)
    assert len(sent) == 2                       # both asked for our address: both answered
    assert list(a.cache) == [socket.inet_aton("198.18.0.9")]


def test_the_cache_is_bounded_and_keeps_the_newest():
    a = _arp([])
    a._on_link = lambda ip: True                 # as many senders as a /16 holds
    n = arp_mod.CACHE + 500
    for i in range(n):
        a.input(_request_from(struct.pack("!IH", i, 2), (NET + 1 + i).to_bytes(4, "big")), i)
    assert len(a.cache) == arp_mod.CACHE
    assert a.lookup((NET + n).to_bytes(4, "big"), n) is not None      # the newest stays
    assert a.lookup((NET + 1).to_bytes(4, "big"), n) is None          # the oldest went


def test_expired_entries_go_before_live_ones():
    a = _arp([])
    a._on_link = lambda ip: True
    old = socket.inet_aton("198.18.0.5")
    a.input(_request_from(b"\x02" * 6, old), 0)
    later = arp_mod.LIFETIME_NS + 1
    for i in range(arp_mod.CACHE - 1):
        a.input(_request_from(b"\x04" * 6, (NET + 256 + i).to_bytes(4, "big")), later)
    fresh = socket.inet_aton("198.18.255.1")
    a.input(_request_from(b"\x06" * 6, fresh), later)
    assert old not in a.cache and fresh in a.cache
    assert len(a.cache) == arp_mod.CACHE


def test_held_packets_are_bounded_and_off_subnet_ones_dropped():
    sent = []
    a = _arp(sent)
    a.hold(socket.inet_aton("10.1.2.3"), b"p", 0)        # no router: no answer could come
    assert a.stats()["pending"] == 0 and a.counters["off_link_drops"] == 1
    a._on_link = lambda ip: True
    for i in range(arp_mod.PENDING + 10):
        a.hold((NET + 1 + i).to_bytes(4, "big"), b"p", 0)
    assert a.stats()["pending"] == arp_mod.PENDING
    assert a.counters["pending_full_drops"] == 10


def test_a_held_packet_is_retried_and_dropped_without_a_tcp_timer(topo):
    """An ICMP echo from an on-link address that never answers ARP: the
    stack holds its reply and asks; with no TCP deadline armed, nothing used
    to wake the timer thread for the retries, and the reply stayed held
    forever after one request."""
    ghost = socket.inet_aton("198.18.0.77")

    def send_echo(stack_mac):
        icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"x" * 8
        icmp = icmp[:2] + struct.pack("!H", wire.checksum(icmp)) + icmp[4:]
        pkt = wire.ipv4(ghost, socket.inet_aton(topo.stack_ip), wire.IPPROTO_ICMP, icmp)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            s.bind((topo.peer_if, 0))
            s.send(wire.ethernet(stack_mac, b"\x02\x00\x00\x00\x00\x77", wire.ETH_P_IP, pkt))
        finally:
            s.close()

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            mac = bytes.fromhex(stack.stats()["mac"].replace(":", ""))
            await osvrt.to_thread(topo.in_peer, send_echo, mac)
            for _ in range(200):                    # TRIES requests RETRY_NS apart, then a drop
                a = stack.stats()["arp"]
                if a["unresolved_drops"]:
                    break
                await osvrt.sleep(0.05)
            return a
        finally:
            await stack.aclose()

    a = run_stack(topo, main)
    assert a["requests_out"] >= arp_mod.TRIES
    assert a["unresolved_drops"] == 1 and a["pending"] == 0
