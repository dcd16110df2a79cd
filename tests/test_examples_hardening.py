"""The example servers are copied by users, so they must not fall over
(issue 21, items 12 and 13): the RESP server bounds every length a client
sends and rejects negative ones, and both servers survive running out of
file descriptors and serve again once fds are free."""
import os
import resource
import socket
import subprocess
import sys
import time

import pytest

import osvrt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)
import resp_server  # noqa: E402  (the example's own parser, tested directly too)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    procs = []

    def start(name, nofile=None):
        port = _free_port()
        here = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
        env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))

        def limit():
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        p = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, name), "--port", str(port),
                              "--cpus", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env, cwd=tmp_path, preexec_fn=limit)
        procs.append(p)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                return p, port
            except ConnectionRefusedError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{name} did not start: {p.stderr.read()[-2000:]!r}")
                time.sleep(0.05)

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _recv_all(c):
    """What the server sends until it closes (bounded by the socket timeout)."""
    buf = b""
    while chunk := c.recv(65536):
        buf += chunk
    return buf


def _ping(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"*1\r\n$4\r\nPING\r\n")
        return c.recv(100)


@pytest.mark.parametrize("bad", [
    b"*1\r\n$-12\r\n",                             # the 10 bytes that looped forever
    b"*-1\r\n",
    b"*1\r\n$ 4\r\nPING\r\n",
    b"*2000000\r\n",
    b"*1\r\n$4\r\nPINGxx",
])
def test_parser_rejects_bad_lengths(bad):
    with pytest.raises(resp_server.ProtocolError):
        resp_server.parse_one(bad, 0)


def test_parser_refuses_a_huge_bulk_before_its_data_arrives():
    head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % 2**62
    with pytest.raises(resp_server.ProtocolError, match="over the limit"):
        resp_server.parse_one(head, 0)
    # within the limits, incomplete: wait for more, buffer what came
    assert resp_server.parse_one(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nab", 0) == (None, 0)


def test_resp_server_answers_a_negative_length_with_an_error_and_goes_on(server):
    p, port = server("resp_server.py")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"*1\r\n$-12\r\n")
        reply = _recv_all(c)                       # unfixed: no reply, the server spins
    assert reply.startswith(b"-ERR Protocol error"), reply
    assert _ping(port) == b"+PONG\r\n"             # other clients are answered
    assert p.poll() is None


def test_resp_server_refuses_a_huge_bulk_without_buffering_it(server):
    p, port = server("resp_server.py")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % 2**62)
        reply = _recv_all(c)
    assert reply.startswith(b"-ERR Protocol error"), reply
    assert _ping(port) == b"+PONG\r\n"


@pytest.mark.parametrize("name, request_, reply", [
    ("echo_server.py", b"hello\n", b"hello\n"),
    ("resp_server.py", b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
])
def test_server_survives_fd_exhaustion_and_serves_again(server, name, request_, reply):
    p, port = server(name, nofile=64)
    clients = []
    try:
        for _ in range(100):                       # more than the server has fds for
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert p.poll() is None, p.stderr.read()[-2000:]     # unfixed: exits on EMFILE
    finally:
        for c in clients:
            c.close()
    # fds are free again: a new client is served (the queued ones end at EOF)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(request_)
                got = c.recv(100)
            if got == reply:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline and p.poll() is None, "not served again"
        time.sleep(0.1)
    assert p.poll() is None
