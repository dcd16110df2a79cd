"""HTTP/1.1 "hello" server with keep-alive (pipelining-safe), for wrk.

    python examples/http_hello.py [--port 8080] [--cpus N] [--streams]
    wrk -t2 -c64 -d5s http://127.0.0.1:8080/

Two ways to serve the same responses.  By default the callback server
(net.serve_tcp_protocol): a protocol object per connection whose
data_received() the engine calls for each chunk read, sending what it
returns (no green thread per connection, no switch per request).  With
--streams, a green thread per connection that awaits stream.recv() and
stream.sendall() (net.serve_tcp): the way to write a handler that awaits
something else between requests.
"""
import osvrt
from osvrt import net

from _common import parse, worker_cpus

BODY = b"hello"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
CLOSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
         b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


def respond(buf):
    """Answer every complete request in buf: (responses, rest, close)."""
    out = []
    while (end := buf.find(b"\r\n\r\n")) >= 0:
        head = buf[:end].lower()
        buf = buf[end + 4:]
        if b"\r\nconnection: close" in head or head.endswith(b"http/1.0"):
            out.append(CLOSE)
            return b"".join(out), buf, True
        out.append(RESPONSE)
    return b"".join(out), buf, False


async def serve(stream):
    async with stream:
        buf = b""
        try:
            while data := await stream.recv():
                buf += data
                out, buf, close = respond(buf)
                if out:
                    await stream.sendall(out)
                if close:
                    return
                if len(buf) > 65536:
                    return                        # no request head is that long
        except ConnectionError:
            pass


class Hello:
    """The callback form of serve(): one per connection (net.serve_tcp_protocol)."""
    __slots__ = ("conn", "buf")

    def __init__(self, conn):
        self.conn, self.buf = conn, b""

    def data_received(self, data):
        out, buf, close = respond(self.buf + data if self.buf else data)
        if close:
            self.conn.close()                 # after `out` is sent
        elif len(buf) > 65536:                # no request head is that long
            self.conn.close()
        self.buf = buf
        return out


async def main(host, port, cpus, streams=False):
    # one listener per serving CPU, connections served where they were
    # accepted; cpus=None serves on one CPU under the GIL (measured: faster
    # than several, see osvrt/net/server.py)
    def on_listen(a):
        print(f"http on http://{host}:{a[1]}/, CPUs {net.serving_cpus(cpus)}", flush=True)
    if streams:
        await net.serve_tcp(serve, (host, port), cpus=cpus, on_listen=on_listen)
    else:
        await net.serve_tcp_protocol(Hello, (host, port), cpus=cpus, on_listen=on_listen)


if __name__ == "__main__":
    args = parse("HTTP/1.1 hello server on osvrt", 8080)
    try:
        cpus = worker_cpus(args.cpus)
        # the runtime has every CPU asked for; which of them serve: net.serving_cpus
        osvrt.run(main, args.host, args.port, cpus if args.cpus else None, args.streams,
                  cpus=cpus)
    except KeyboardInterrupt:
        pass
