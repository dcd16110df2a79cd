"""Classifier rules compiled with numba.cfunc: the C classifier calls them
per datagram without the GIL to steer datagrams to lanes (by a key in the
payload) or drop them; bad rules and lanes are refused with clear errors."""
import socket
import time

import pytest

import osvrt
import osvrt.net
from osvrt.bench import frames as testing
from osvrt.net import rules

numba = pytest.importorskip("numba")
ok, why = testing.can_open_packet_socket()
pytestmark = pytest.mark.skipif(not ok, reason=f"osvrt.net needs CAP_NET_RAW ({why})")

T = 10


def bind_in(rt, address=("127.0.0.1", 0), **kw):
    async def b():
        return await osvrt.net.udp_bind(address, **kw)
    return rt.submit(b).result(timeout=T)


@rules.rule
def odd_even(data, length, saddr, sport):
    """Lane 1 for an odd first byte, lane 0 for an even one; '!' or an empty
    payload is dropped."""
    if length == 0 or data[0] == 33:
        return -1
    return data[0] & 1


def test_rule_steers_to_lanes_and_drops(rt):
    ep = bind_in(rt, lanes=2, rule=odd_even)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect(ep.address)
    msgs = [b"a1", b"b1", b"c2", b"d2", b"!no", b"", b"e3", b"f3"]     # a=97 odd, b=98 even

    async def lanes(n0, n1):
        l0 = [(await ep.recvfrom(lane=0))[0] for _ in range(n0)]
        l1 = [(await ep.recvfrom(lane=1))[0] for _ in range(n1)]
        return l0, l1
    fut = rt.submit(lanes, 3, 3)
    for attempt in range(20):          # resend if the packet ring dropped any
        for m in msgs:
            c.send(m)
        try:
            l0, l1 = fut.result(timeout=0.5)
            break
        except TimeoutError:
            continue
    assert l0[:3] == [b"b1", b"d2", b"f3"]
    assert l1[:3] == [b"a1", b"c2", b"e3"]
    st = ep.stats()
    assert st["lanes"] == 2 and st["dropped"]["rule"] >= 2
    assert rt.stats()["net"]["dropped"]["rule"] >= 2
    c.close()
    ep.close()


def test_key_rule_example_one_reader_per_lane(rt):
    """The example rule: a key at the start of the payload picks the lane, so
    each key's requests always reach the same lane's reader (here, readers on
    two different CPUs echo what they get)."""
    LANES = 2
    ep = bind_in(rt, lanes=LANES, rule=rules.key_lanes(LANES))
    seen = [[] for _ in range(LANES)]

    async def serve(lane):
        while True:
            try:
                data, addr = await ep.recvfrom(lane=lane)
            except OSError:
                return
            seen[lane].append(data.split(b" ")[0])
            await ep.sendto(data, addr)
    servers = [rt.submit(serve, i, cpu=rt.cpus[i % len(rt.cpus)]) for i in range(LANES)]
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect(ep.address)
    c.settimeout(0.3)
    keys = [b"user:%d" % i for i in range(40)]
    for k in keys:
        msg = k + b" get"
        for _ in range(30):
            c.send(msg)
            try:
                if c.recv(100) == msg:
                    break
            except socket.timeout:
                continue
        else:
            pytest.fail(f"no reply for {msg!r}")
    ep.close()
    for s in servers:
        s.result(timeout=T)
    for lane in range(LANES):
        for k in seen[lane]:
            assert rules.fnv1a_lane(k, LANES) == lane, (k, lane)
    assert all(seen), "both lanes should get keys"
    assert {k for lane in seen for k in lane} == set(keys)
    c.close()


def test_bad_rules_and_lanes(rt):
    wrong = numba.cfunc("int32(int32)")(lambda x: x)
    with pytest.raises(TypeError, match="signature"):
        bind_in(rt, rule=wrong)
    with pytest.raises(TypeError, match="rule must be"):
        bind_in(rt, rule=lambda *a: 0)
    with pytest.raises(ValueError, match="lanes"):
        bind_in(rt, lanes=65, rule=odd_even)
    with pytest.raises(ValueError, match="lanes"):
        rules.key_lanes(0)
    ep = bind_in(rt, lanes=2, rule=odd_even)

    async def bad_lane():
        for lane in (2, -1, False, 0.0):          # False and 0.0 passed as lane 0
            with pytest.raises(ValueError, match="lane must be"):
                await ep.recvfrom(lane=lane)
    rt.submit(bad_lane).result(timeout=T)
    ep.close()
    # An int outside the address space was taken modulo 2**64: rule=-1 was a
    # wild pointer called on the first datagram (a segfault).
    for addr in (-1, 1 << 64, (1 << 64) + 5):
        with pytest.raises(ValueError, match=str(addr)):
            bind_in(rt, rule=addr)


def test_rule_runs_without_the_gil(rt):
    """While the main thread holds the GIL in a busy loop, the classifier
    still runs the rule (C, no GIL) and fills the channel."""
    ep = bind_in(rt, lanes=2, rule=odd_even)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect(ep.address)
    before = ep.stats()["received"]
    for _ in range(20):
        c.send(b"a")
    end = time.monotonic() + 0.2
    while time.monotonic() < end:                  # hold the GIL (switch interval aside)
        pass
    deadline = time.monotonic() + T
    while ep.stats()["received"] + rt.stats()["net"]["dropped"]["ring"] < before + 20:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert ep.pending(lane=1) == ep.stats()["received"] - before
    c.close()
    ep.close()
