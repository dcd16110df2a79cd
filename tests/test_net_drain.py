"""Who drains the classifier's packet ring (osvrt.net.channels.service.drainer,
csrc/net/rx_workers.h): the workers themselves, in their loop and idle poll,
when every CPU runs a worker (what osvrt.run gives); the classifier's own
thread when it gets a CPU without a worker.  Delivery, ordering and the
accounting of frames per worker under the workers' drain; the rule; bad
values.  (The burst and stop tests of test_net_udp.py run under both.)"""
import os
import socket
import threading
import time

import pytest

import osvrt
import osvrt.net
from osvrt.net.channels.service import drainer
from osvrt.bench import frames as testing

T = 10


def _wait_for(pred, what):
    end = time.monotonic() + T
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


class _R:
    def __init__(self, cpus):
        self.cpus = tuple(cpus)


def test_drainer_rule():
    # Every usable CPU runs a worker: the workers drain (no thread, no wake-up of one).
    assert drainer(_R([0, 1]), allowed=[0, 1]) == "workers"
    assert drainer(_R([0]), allowed=[0]) == "workers"
    # A spare CPU: the classifier thread, confined there and polling.
    assert drainer(_R([1]), allowed=[0, 1]) == "thread"
    # cpu=N: a thread on a CPU without a worker; on a worker's CPU the workers drain.
    assert drainer(_R([1]), cpu=0, allowed=[0, 1]) == "thread"
    assert drainer(_R([0, 1]), cpu=0, allowed=[0, 1]) == "workers"
    # Asked for explicitly: as asked.
    assert drainer(_R([0, 1]), "thread", allowed=[0, 1]) == "thread"
    assert drainer(_R([1]), "workers", allowed=[0, 1]) == "workers"
    with pytest.raises(ValueError, match="'bogus'"):
        drainer(_R([0]), "bogus")


def test_configure_refuses_a_bad_drain(make_rt):
    rt = make_rt()
    with pytest.raises(ValueError, match="drain must be .*'sideways'"):
        osvrt.net.configure(rt, drain="sideways")
    assert rt.service("net") is None                 # nothing half-made is left behind
    osvrt.net.configure(rt, drain="workers")         # the runtime is still usable


def _bind(rt, **kw):
    async def b():
        return await osvrt.net.udp_bind(("127.0.0.1", 0), **kw)
    return rt.submit(b).result(timeout=T)


async def _echo(ep, n):
    for _ in range(n):
        data, addr = await ep.recvfrom()
        await ep.sendto(data, addr)


@pytest.mark.parametrize("cpu", [0, 1])
def test_workers_drain_echo_on_either_cpu(make_rt, cpu):
    """An echo green thread pinned to either CPU gets every request in order
    from the workers' drain; the frames the workers took add up to the
    classifier's, no classifier thread exists, and the ring's home follows
    the reader (it starts on worker 0)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    rt = make_rt(cpus=2)
    osvrt.net.configure(rt, drain="workers")
    ep = _bind(rt)
    n = 300
    fut = rt.submit(_echo, ep, n, cpu=cpu)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(T)
    c.connect(ep.address)
    for i in range(n):
        c.send(b"%06d" % i)
        assert c.recv(64) == b"%06d" % i
    fut.result(timeout=T)
    # A worker counts a drain's frames when the drain returns, after the
    # datagrams it published were read: the sum may lag the classifier's
    # count for the end of that drain (csrc/core/cpu.c, rx_use).
    _wait_for(lambda: sum(rt.stats()["net"]["frames_by_worker"]) == rt.stats()["net"]["frames"],
              "the workers' frame counts to add up to the classifier's")
    st = rt.stats()["net"]
    assert st["drain"] == "workers"
    assert "osvrt-net" not in testing.pid_threads()
    assert sum(st["frames_by_worker"]) == st["frames"] >= n
    assert st["received"] == n and st["dropped"]["ring"] == 0
    if cpu == 1:
        assert st["drain_rehomed"] >= 1              # the socket moved to worker 1's epoll
    c.close()
    ep.close()


def test_worker_woken_by_its_own_drain_does_not_kick_itself(make_rt):
    """A worker asleep in epoll_wait that the packet socket wakes drains the
    frame and wakes its own reader: it is awake, so that wake must not kick
    it (an eventfd write, then an epoll_wait and a read to take it back).
    idle_spin_us=0: every request finds the worker asleep."""
    rt = make_rt(cpus=[0], idle_spin_us=0)
    osvrt.net.configure(rt, drain="workers")
    ep = _bind(rt)
    n = 40
    fut = rt.submit(_echo, ep, n + 1)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(T)
    c.connect(ep.address)
    c.send(b"first")                      # the submit's own kick is behind us after this
    assert c.recv(64) == b"first"
    before = rt.stats()["cpus"][0]
    for i in range(n):
        c.send(b"%06d" % i)
        assert c.recv(64) == b"%06d" % i
    after = rt.stats()["cpus"][0]
    fut.result(timeout=T)
    assert after["idle_sleeps"] > before["idle_sleeps"]     # it did sleep
    assert after["kicks_sent"] - before["kicks_sent"] == 0
    c.close()
    ep.close()


def test_workers_drain_two_flows_two_readers_isolated(make_rt):
    """Two endpoints, each read on its own CPU, flooded at once: each gets its
    own datagrams only, each in order; a full channel drops only its own."""
    rt = make_rt(cpus=2)
    osvrt.net.configure(rt, drain="workers")
    small = _bind(rt, capacity=8)                    # floods: drops its own only
    big = _bind(rt, capacity=4096)
    stop = threading.Event()

    async def read_all(ep):
        got = []
        while not stop.is_set() or ep.pending():
            try:
                with osvrt.timeout(0.05):
                    data, _ = await ep.recvfrom()
            except TimeoutError:
                continue
            got.append(data)
        return got
    fs = rt.submit(read_all, small, cpu=0)
    fb = rt.submit(read_all, big, cpu=1)
    soft0 = testing.softnet_drops()

    def lost():           # before the channels: at the ring, or before any tap
        return rt.stats()["net"]["dropped"]["ring"] + testing.softnet_drops() - soft0
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    N = 2000
    for i in range(N):
        c.sendto(b"s%05d" % i, small.address)
        c.sendto(b"b%05d" % i, big.address)
    _wait_for(lambda: big.stats()["received"] + lost() >= N
              and small.stats()["received"] + small.stats()["dropped"]["channel_full"]
              + lost() >= N, "the flood to be delivered or counted")
    stop.set()
    s_got, b_got = fs.result(timeout=T), fb.result(timeout=T)
    assert all(d.startswith(b"s") for d in s_got) and s_got == sorted(s_got)
    assert all(d.startswith(b"b") for d in b_got) and b_got == sorted(b_got)
    assert big.stats()["dropped"]["channel_full"] == 0
    if lost() == 0:
        assert len(b_got) == N
    c.close()
    small.close()
    big.close()


def _echo_forever(ep):
    async def echo():
        while True:
            try:
                data, addr = await ep.recvfrom()
            except OSError:                      # closed: the test is over
                return
            await ep.sendto(data, addr)
    return echo


def _seq_pingpong(addr, n, window):
    """n sequence-numbered requests, `window` in flight, from a plain socket:
    every reply comes back, in the order sent (a net channel keeps order)."""
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(T)
    c.connect(addr)
    try:
        sent = got = 0
        while got < n:
            while sent < n and sent - got < window:
                c.send(b"%08d" % sent)
                sent += 1
            assert c.recv(64) == b"%08d" % got
            got += 1
    finally:
        c.close()


def _spare_cpu_runtime(make_rt, **net):
    """A runtime on CPU 1 whose classifier thread gets CPU 0, the client's
    (named: on a larger host "auto" would give it every CPU without a worker,
    and it would run away from the client; drain stays "auto")."""
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    rt = make_rt(cpus=[1])
    osvrt.net.configure(rt, cpu=0, **net)
    assert rt.stats()["net"]["drain"] == "thread"
    return rt


def _hand_over(rt, addr, handovers):
    """Pipelined requests (the C client, 16 in flight) from the thread's CPU
    until the thread has handed the ring over `handovers` times in all."""
    from osvrt.bench.net import rr
    # The thread looks back every 64 bursts: a few rounds, in case a loaded
    # host lets its polling catch some of them at first.
    for _ in range(20):
        r = rr(addr, 5000, window=16, cpu=0, timeout_ms=2000)
        assert (r["done"], r["lost"]) == (5000, 0)
        if rt.stats()["net"]["drain_handovers"] >= handovers:
            break
    st = rt.stats()["net"]
    assert st["drain_handovers"] == handovers, st["placement"]
    assert st["drain"] == "workers" and st["drain_handed_over"], st["placement"]
    return st


def test_auto_thread_hands_the_ring_over_under_pipelined_load_and_takes_it_back(make_rt):
    """drain="auto" with a spare CPU starts the classifier thread there; a
    client on that CPU with 16 requests in flight keeps it waking and sharing
    its CPU, so it hands the ring to the worker (classifier.c, hand_over).
    The worker keeps it while requests stay pipelined, and gives it back
    once they come one at a time (rx_workers.h, the hand-back), which the
    thread's polling serves fastest; pipelined again, it goes over again.
    Nothing is lost or reordered across either change, and stop() undoes
    both (no thread, no hook left)."""
    from osvrt.bench.net import rr
    rt = _spare_cpu_runtime(make_rt)
    ep = _bind(rt)
    fut = rt.submit(_echo_forever(ep))
    st = _hand_over(rt, ep.address, 1)
    assert "handed the ring to the workers" in st["placement"]
    # The thread waits for the ring, asleep (it is not gone).
    assert "osvrt-net" in testing.pid_threads()
    # Still pipelined: the worker keeps it (no back and forth).
    frames0 = sum(st["frames_by_worker"])
    r = rr(ep.address, 20000, window=16, cpu=0, timeout_ms=2000)
    assert (r["done"], r["lost"]) == (20000, 0)
    st = rt.stats()["net"]
    assert (st["drain"], st["drain_handovers"], st["drain_handbacks"]) == ("workers", 1, 0)
    assert sum(st["frames_by_worker"]) >= frames0 + 20000
    # One at a time: back to the thread within a window of 64 bursts, every
    # reply in order across the change.
    _seq_pingpong(ep.address, 300, 1)
    _wait_for(lambda: rt.stats()["net"]["drain_handbacks"] == 1, "the hand-back")
    st = rt.stats()["net"]
    assert (st["drain"], st["drain_handed_over"]) == ("thread", False), st["placement"]
    assert "took the ring back" in st["placement"]
    assert st["frames_by_worker"] == []      # counted only while the workers drain
    # One at a time, the thread's (pipelined from this unpinned process, the
    # requests might meet the hand-over's terms on the thread's CPU).
    _seq_pingpong(ep.address, 300, 1)
    st = rt.stats()["net"]
    assert (st["drain"], st["drain_handovers"], st["drain_handbacks"]) == ("thread", 1, 1)
    # Pipelined again: over again (the C test checks it is the same `workers`).
    _hand_over(rt, ep.address, 2)
    _seq_pingpong(ep.address, 500, 16)       # in order, whoever drains
    st = rt.stats()["net"]
    assert st["dropped"]["ring"] == 0 and st["dropped"]["channel_full"] == 0
    ep.close()
    assert fut.result(timeout=T) is None
    rt.service("net").stop()
    assert rt.stats()["net"]["running"] is False
    assert "osvrt-net" not in testing.pid_threads()


@pytest.mark.parametrize("window, drain", [(1, "auto"), (16, "thread")])
def test_thread_stays_for_ping_pong_and_when_asked_for(make_rt, window, drain):
    """One request in flight is one frame a burst: the auto thread keeps the
    ring (its polling is what makes that fast).  drain="thread" never hands
    it over, pipelined or not."""
    from osvrt.bench.net import rr
    rt = _spare_cpu_runtime(make_rt, drain=drain)
    ep = _bind(rt)
    fut = rt.submit(_echo_forever(ep))
    r = rr(ep.address, 20000 if window == 16 else 3000, window=window, cpu=0, timeout_ms=2000)
    assert r["lost"] == 0
    st = rt.stats()["net"]
    assert st["bursts"] >= 64 * 3                      # the thread looked back several times
    assert (st["drain"], st["drain_handed_over"]) == ("thread", False)
    assert "osvrt-net" in testing.pid_threads()
    ep.close()
    fut.result(timeout=T)
