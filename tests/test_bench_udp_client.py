"""The benchmarks' C UDP client (osvrt.bench.net.rr, csrc/bench/net_bench.c):
every request is answered and counted once, with a window refilled by one
sendmmsg and replies drained before each poll; bad sizes are refused by name."""
import pytest

from osvrt.bench import net


@pytest.fixture
def echo():
    srv = net.ThreadEchoServer()
    yield srv
    srv.close()


@pytest.mark.parametrize("window", [1, 16, 64])   # more would overflow the echo socket's buffer
def test_every_request_is_answered_once(echo, window):
    r = net.rr(echo.addr, 3000, window=window)
    assert (r["done"], r["lost"]) == (3000, 0)
    assert 0 < r["p50_ns"] <= r["p99_ns"] and r["per_s"] > 0


def test_a_window_larger_than_the_requests_sends_only_the_requests(echo):
    r = net.rr(echo.addr, 5, window=16)
    assert (r["done"], r["lost"]) == (5, 0)


def test_replies_that_never_come_are_counted_lost_then_the_run_gives_up():
    # a bound socket that never answers: every window times out
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        with pytest.raises(OSError, match="timed out"):
            net.rr(mute.getsockname(), 100, window=16, timeout_ms=20)


@pytest.mark.parametrize("kw, name", [(dict(window=0), "window=0"),
                                      (dict(window=1025), "window=1025"),
                                      (dict(payload=15), "payload=15"),
                                      (dict(payload=65001), "payload=65001"),
                                      (dict(window=2.5), "window=2.5"),
                                      (dict(window=True), "window=True"),
                                      (dict(timeout_ms=0), "timeout_ms=0"),
                                      (dict(n=2 ** 61 + 1), "n=2305843009213693953")])
def test_bad_sizes_are_refused_by_name(kw, name):
    kw = dict(kw)             # the parameter's own dict stays whole for a rerun
    n = kw.pop("n", 10)       # 2**61 + 1 round trips: an 8-byte rtt array that wraps in C
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        net.rr(("127.0.0.1", 9), n, **kw)


def test_the_c_client_refuses_what_the_python_checks_refuse():
    """The C side checks too (a C caller, or a check loosened by mistake):
    EINVAL, before it allocates anything."""
    import errno
    from osvrt.bench._peers import ffi, lib
    res = ffi.new("struct osvrt_rr_result *")
    for n, window, timeout_ms in ((2 ** 61 + 1, 16, 200), (10, 1025, 200), (10, 16, 0)):
        assert lib.osvrt_net_bench_rr(b"127.0.0.1", 9, n, 64, window, -1, timeout_ms,
                                      res) == -errno.EINVAL


@pytest.mark.parametrize("busy", [False, True])
def test_the_c_echo_answers_every_request_and_counts_them(busy):
    """CEchoServer (the floors of benchmarks/client_ceiling.py): each request
    answered once, with windows that fill its batches; the stop datagram
    ends it and is not counted."""
    srv = net.CEchoServer(busy=busy)
    try:
        for window in (1, 16, 64):
            r = net.rr(srv.addr, 2000, window=window)
            assert (r["done"], r["lost"]) == (2000, 0)
    finally:
        srv.close()
    assert srv.echoed == 6000


def test_the_c_echo_answers_dns_as_dns_reply_does():
    import socket
    srv = net.CEchoServer(dns=True)
    try:
        query = bytes([0x12, 0x34, 0x01, 0xff]) + bytes(8) + b"\x07example\x03com\x00\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.sendto(query, srv.addr)
            assert c.recv(512) == net.dns_reply(query)
            c.sendto(b"short", srv.addr)           # under a DNS header: echoed as it came
            assert c.recv(512) == b"short"
    finally:
        srv.close()
