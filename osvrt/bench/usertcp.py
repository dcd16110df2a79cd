"""Servers and client rounds of the user-space stack's bench rows
(osvrt/bench/rows/usertcp.py).  The same three services on both contenders:

- PORT:     sockperf's server (ping-pong --tcp: it answers each message);
- PORT + 1: HTTP/1.1 keep-alive "hello, world" (wrk);
- PORT + 2: accept and close at once (the connection setup rate).

`user`: osvrt green threads on osvrt.net.user_stack, one CPU;
`kernel`: asyncio.Protocol servers on uvloop on kernel sockets (the fastest
idiomatic peer).  Run as a process inside a namespace:

    python -P -m osvrt.bench.usertcp user IFNAME 198.18.0.2/24 PORT
    python -P -m osvrt.bench.usertcp kernel 198.18.1.2 PORT

Each prints "ready" once listening, and serves until killed.
"""
import re
import subprocess
import sys

BODY = b"hello, world\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(BODY), BODY))


def http_answers(buf):
    """(responses for the complete requests in buf, the rest of buf)."""
    n = 0
    start = 0
    while True:
        end = buf.find(b"\r\n\r\n", start)
        if end < 0:
            break
        n += 1
        start = end + 4
    return RESPONSE * n, buf[start:]


def sockperf_answers(buf):
    """(replies for the complete sockperf messages in buf, the rest).  A
    message: sequence number (8 bytes), flags (2: 1 = from the client,
    2 = answer wanted, 4 = warm-up), length (4, the whole message), all
    big-endian; the server answers a message that wants one with the client
    bit cleared, as `sockperf server` does."""
    out = []
    pos, n = 0, len(buf)
    while n - pos >= 14:
        length = int.from_bytes(buf[pos + 10:pos + 14], "big")
        if length < 14:
            raise ValueError(f"a sockperf message of {length} bytes")
        if n - pos < length:
            break
        flags = int.from_bytes(buf[pos + 8:pos + 10], "big")
        if flags & 2:
            out.append(buf[pos:pos + 8] + (flags & ~1).to_bytes(2, "big") +
                       buf[pos + 10:pos + length])
        pos += length
    return b"".join(out), buf[pos:]


# ---- the user-space stack's server ----

async def _user_main(ifname, cidr, port):
    import osvrt
    import osvrt.net

    # The connect rate leaves rate x 60 s connections in TIME_WAIT.
    stack = await osvrt.net.user_stack(ifname, cidr, max_connections=1 << 15)

    async def echo(stream):
        buf = b""
        async with stream:
            try:
                while data := await stream.recv():
                    out, buf = sockperf_answers(buf + data)
                    if out:
                        await stream.sendall(out)
            except ConnectionError:
                pass                    # clients reset when a round ends

    async def http(stream):
        buf = b""
        async with stream:
            try:
                while data := await stream.recv():
                    out, buf = http_answers(buf + data)
                    if out:
                        await stream.sendall(out)
            except ConnectionError:
                pass

    async def just_close(stream):
        stream.close()

    async def serve(p, handler):
        async with await stack.tcp_listen(p, backlog=1024) as listener:
            while True:
                stream, _ = await listener.accept()
                if handler is just_close:
                    stream.close()
                else:
                    osvrt.spawn(handler, stream)

    async with osvrt.TaskGroup() as g:
        for p, h in ((port, echo), (port + 1, http), (port + 2, just_close)):
            g.spawn(serve, p, h)
        await osvrt.sleep(0.05)
        print("ready", flush=True)


def serve_user(ifname, cidr, port):
    import osvrt
    osvrt.run(_user_main, ifname, cidr, port, cpus=1)


# ---- the kernel-socket peer: asyncio.Protocol on uvloop ----

def serve_kernel(host, port):
    import asyncio

    import uvloop

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""

        def data_received(self, data):
            out, self.buf = sockperf_answers(self.buf + data)
            if out:
                self.t.write(out)

    class Http(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""

        def data_received(self, data):
            out, self.buf = http_answers(self.buf + data)
            if out:
                self.t.write(out)

    class Close(asyncio.Protocol):
        def connection_made(self, transport):
            transport.close()

    async def main():
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(proto, host, p, backlog=1024)
                   for proto, p in ((Echo, port), (Http, port + 1), (Close, port + 2))]
        print("ready", flush=True)
        await asyncio.gather(*(s.serve_forever() for s in servers))
    uvloop.run(main())


# ---- client rounds (run in the peer namespace) ----

def sockperf_round(ns, host, port, seconds, msg_size=64):
    """sockperf ping-pong --tcp: {"p50_us", "p99_us", "avg_us"}."""
    from .client_cpu import require_success
    out = require_success(subprocess.run(
        ["ip", "netns", "exec", ns, "sockperf", "ping-pong", "--tcp", "-i", host,
         "-p", str(port), "-t", str(max(1, round(seconds))), "-m", str(msg_size), "--full-rtt"],
        capture_output=True, text=True, timeout=seconds + 60), "sockperf")
    text = out.stdout + out.stderr

    def pct(p):
        m = re.search(rf"percentile {p}\s*=\s*([\d.]+)", text)
        if m is None:
            raise RuntimeError(f"sockperf printed no {p} percentile: {text[-800:]!r}")
        return float(m.group(1))
    avg = re.search(r"avg-(?:rtt|lat)\s*=\s*([\d.]+)", text)
    return {"p50_us": pct("50.000"), "p99_us": pct("99.000"),
            "avg_us": float(avg.group(1)) if avg else 0.0}


def wrk_round(ns, host, port, seconds, connections=64, server_pid=None):
    """One wrk run from namespace ns (a round with errors fails: wrk.read)."""
    from . import wrk
    from .client_cpu import run_client
    done, cpu = run_client(["ip", "netns", "exec", ns,
                            *wrk.argv(f"http://{host}:{port}/", seconds, connections)],
                           server_pid, timeout=seconds + 60)
    r = wrk.read(done, f"{host}:{port} from {ns}")
    if r["requests"] is None:
        del r["requests"]
    return {**r, **cpu}                 # requests: the server's CPU per request (report)


_CONNECT_CLIENT = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n = 0
end = time.monotonic() + seconds
t0 = time.monotonic()
while time.monotonic() < end:
    s = socket.create_connection((host, port), timeout=5)
    s.recv(1)                 # the server's close (FIN): accept + close done
    s.close()
    n += 1
print(n / (time.monotonic() - t0))
"""


def connect_round(ns, host, port, seconds):
    """Sequential connect + (server) accept + close, from the peer
    namespace: {"per_s"}."""
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-P", "-c", _CONNECT_CLIENT,
                          host, str(port), str(seconds)], capture_output=True, text=True,
                         timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"the connect client failed: {out.stderr[-800:]}")
    return {"per_s": float(out.stdout.strip().splitlines()[-1])}


if __name__ == "__main__":
    if sys.argv[1] == "user":
        serve_user(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "kernel":
        serve_kernel(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"usage: {sys.argv[0]} user IFNAME CIDR PORT | kernel HOST PORT")
