"""The programs in examples/ run as the README shows and answer a real request:
the echo server echoes, the HTTP server says hello over a kept-alive
connection, the RESP server answers PING, SET and GET."""
import os
import socket
import subprocess
import sys
import time

import pytest

import osvrt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def example(tmp_path):
    procs = []

    def start(name):
        port = _free_port()
        # the osvrt this test imports (installed, or a checkout built in place)
        here = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
        env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, name), "--port", str(port),
                              "--cpus", "2" if len(os.sched_getaffinity(0)) > 1 else "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             cwd=tmp_path)
        procs.append(p)
        deadline = time.monotonic() + 20
        while True:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=5)
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


def _read_until(sock, marker):
    buf = b""
    while marker not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {buf!r}"
        buf += chunk
    return buf


def test_echo_server_echoes(example):
    with example("echo_server.py") as c:
        for msg in (b"hello\n", b"x" * 100_000):
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += c.recv(65536)
            assert got == msg


def test_http_hello_keeps_the_connection_alive(example):
    with example("http_hello.py") as c:
        for _ in range(3):
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = _read_until(c, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += c.recv(65536)
            assert b"hello" in body.lower()


def test_resp_server_answers_ping_set_get(example):
    with example("resp_server.py") as c:
        c.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert _read_until(c, b"\r\n") == b"+PONG\r\n"
        c.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n")
        assert _read_until(c, b"\r\n") == b"+OK\r\n"
        c.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        assert _read_until(c, b"v1\r\n") == b"$2\r\nv1\r\n"


@pytest.mark.parametrize("name", ["echo_server.py", "http_hello.py", "resp_server.py"])
@pytest.mark.parametrize("argv, bad", [(["--cpus", "-1"], "'-1'"), (["--cpus", "99999"], "'99999'"),
                                       (["--cpus", "0"], "'0'"), (["--port", "70000"], "'70000'")])
def test_examples_refuse_a_bad_cpu_count_or_port(name, argv, bad):
    """--cpus -1 served on all CPUs but the last and --cpus 99 on every CPU
    (a slice of the CPU list), --port 70000 on port 4464: now a usage error
    that names the value, before anything starts."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *argv],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert f"argument {argv[0]}: {bad}" in p.stderr, p.stderr
