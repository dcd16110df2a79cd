"""Instructions per HTTP request (`python -m osvrt instructions --only http`):
a fixed number of keep-alive HTTP/1.1 requests served over loopback TCP, by
osvrt (the examples/http_hello.py logic on green sockets, one worker) and by
an asyncio.Protocol server (asyncio or uvloop), the same responses.

The client is a separate process (valgrind does not follow it, so only the
server's instructions are counted): CONNS connections, one request in flight
on each, sent again as soon as its response is read, until N responses.  The
server stops itself after N requests.

`--only http_fixed` runs the same servers with respond_fixed, a handler that
counts requests by length: respond()'s parsing costs about 5,500
instructions a request in every server alike, more than any server's own
work, so only without it do the counts compare the servers themselves.
"""
import os
import socket
import subprocess
import sys

CONNS = 16
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = b"hello"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


def respond(buf):
    """Every complete request in buf: (responses, rest, count)."""
    out = []
    while (end := buf.find(b"\r\n\r\n")) >= 0:
        buf = buf[end + 4:]
        out.append(RESPONSE)
    return b"".join(out), buf, len(out)


def respond_fixed(buf):
    """respond() for a client that sends nothing but REQUEST: counts whole
    requests by length instead of parsing.  The `http_fixed` workload uses
    it so that the handler's Python, which costs every server the same,
    stops hiding what the servers themselves spend per request."""
    k, rest = divmod(len(buf), len(REQUEST))
    return RESPONSE * k, (buf[-rest:] if rest else b""), k


CLIENT = r"""
import selectors, socket, sys
port, n, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = %r
size = %d
sel = selectors.DefaultSelector()
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
sent = 0
for s in socks:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if sent < n:
        s.sendall(req); sent += 1
    sel.register(s, selectors.EVENT_READ, [0])
done = 0
while done < n:
    for key, _ in sel.select():
        data = key.fileobj.recv(65536)
        if not data:
            raise SystemExit("server closed early")
        key.data[0] += len(data)
        while key.data[0] >= size:
            key.data[0] -= size
            done += 1
            if sent < n:
                key.fileobj.sendall(req); sent += 1
for s in socks:
    s.close()
""" % (REQUEST, len(RESPONSE))


def _client(port, n):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VALGRIND", "LD_PRELOAD"))}
    return subprocess.Popen([sys.executable, "-P", "-c", CLIENT, str(port), str(n), str(CONNS)],
                            env=env)


def _listener():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1024)
    return ls


def serve_osvrt(n, answer=respond):
    import osvrt
    from osvrt.net.sockets import Listener

    async def main(ls):
        served = [0]
        done = osvrt.Event()

        async def serve(stream):
            async with stream:
                buf = b""
                while data := await stream.recv():
                    out, buf, k = answer(buf + data if buf else data)
                    if out:
                        await stream.sendall(out)
                    served[0] += k
                    if served[0] >= n:
                        done.set()

        async def acceptor(listener):
            while True:
                stream, _ = await listener.accept()
                osvrt.spawn(serve, stream)

        listener = Listener(ls)
        proc = _client(listener.address[1], n)
        acc = osvrt.spawn(acceptor, listener)
        await done.wait()
        acc.cancel()
        return proc

    rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None, stats_file=False).start()
    try:
        proc = rt.run(main, _listener())
    finally:
        rt.stop(timeout=10)
    proc.wait(60)


def serve_osvrt_protocol(n, answer=respond):
    """The same responses through osvrt.net's callback server
    (serve_tcp_protocol's engine loop: accept, recv, callback, send in C)."""
    import osvrt
    from osvrt import _engine
    from osvrt.net.sockets import Listener
    served = [0]
    done = osvrt.Event()

    class Counted:
        def __init__(self, conn):
            self.buf = b""

        def data_received(self, data):
            out, self.buf, k = answer(self.buf + data if self.buf else data)
            served[0] += k
            if served[0] >= n:
                done.set()
            return out

    async def main(ls):
        listener = Listener(ls)
        proc = _client(listener.address[1], n)

        async def serve():
            server = _engine.tcp_serve(listener.fileno(), Counted, lambda c, e: None)
            try:
                await server
            finally:
                server.close()
        srv = osvrt.spawn(serve)
        await done.wait()
        srv.cancel()
        return proc

    rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None, stats_file=False).start()
    try:
        proc = rt.run(main, _listener())
    finally:
        rt.stop(timeout=10)
    proc.wait(60)


def serve_asyncio(n, peer, answer=respond):
    import asyncio

    served = [0]          # as serve_osvrt counts (a class attribute's write costs more)

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""

        def data_received(self, data):
            out, self.buf, k = answer(self.buf + data if self.buf else data)
            if out:
                self.t.write(out)
            served[0] += k
            if served[0] >= n:
                asyncio.get_running_loop().stop()

    if peer == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    ls = _listener()
    loop.run_until_complete(loop.create_server(Server, sock=ls))
    proc = _client(ls.getsockname()[1], n)
    loop.run_forever()
    proc.wait(60)
    loop.close()


def child(peer, n, fixed=False):
    """Serve n requests as `peer`; fixed: the handler counts requests by
    length (respond_fixed) instead of parsing them."""
    answer = respond_fixed if fixed else respond
    if peer == "osvrt":
        serve_osvrt(n, answer)
    elif peer == "osvrt_protocol":
        serve_osvrt_protocol(n, answer)
    else:
        serve_asyncio(n, peer, answer)
