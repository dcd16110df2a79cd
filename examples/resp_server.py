"""A tiny RESP (Redis protocol) server: PING, SET, GET (and ECHO, DEL), for
redis-benchmark.  The store is one dict shared by every CPU: each command is a
few bytecodes with no await inside, so under the GIL it is atomic.

    python examples/resp_server.py [--port 6380] [--cpus N] [--streams]
    redis-benchmark -p 6380 -t ping,set,get -n 100000 -c 50 -q

By default connections are served by the callback server
(net.serve_tcp_protocol, the Resp class below); --streams serves them with a
green thread each (net.serve_tcp, serve() below): the same parser and store.

Every length a client sends is checked before anything is buffered for it
(MAX_LINE, MAX_ARGS, MAX_BULK, MAX_COMMAND below); a malformed or oversized
command gets "-ERR Protocol error" and the connection is closed.  The
acceptor survives running out of file descriptors (_common.accept_forever).
"""
import osvrt
from osvrt import net

from _common import parse, worker_cpus

STORE = {}
OK, PONG, NIL = b"+OK\r\n", b"+PONG\r\n", b"$-1\r\n"


def bulk(v):
    return b"$%d\r\n%s\r\n" % (len(v), v)


def execute(args):
    cmd = args[0].upper()
    if cmd == b"PING":
        return PONG if len(args) == 1 else bulk(args[1])
    if cmd == b"SET" and len(args) >= 3:
        STORE[args[1]] = args[2]
        return OK
    if cmd == b"GET" and len(args) == 2:
        v = STORE.get(args[1])
        return NIL if v is None else bulk(v)
    if cmd == b"ECHO" and len(args) == 2:
        return bulk(args[1])
    if cmd == b"DEL":
        return b":%d\r\n" % sum(STORE.pop(k, None) is not None for k in args[1:])
    if cmd in (b"CONFIG", b"COMMAND"):
        return b"*0\r\n"                              # redis-benchmark's probes
    return b"-ERR unknown command '%s'\r\n" % cmd


# Every length a client sends is bounded before anything is buffered for it
# (Redis has the same kind of limits: proto-max-bulk-len, 1M arguments, 64 KiB
# inline).  A client past a limit gets "-ERR Protocol error" and is
# disconnected, as Redis does.
MAX_LINE = 64 * 1024           # an inline command, or a "*<n>" / "$<n>" header line
MAX_ARGS = 1024                # arguments in one command
MAX_BULK = 1024 * 1024         # bytes in one argument
MAX_COMMAND = 4 * 1024 * 1024  # bytes one command may occupy in the buffer


class ProtocolError(ValueError):
    """The client broke the protocol or a limit; the connection is closed."""


def _length(buf, start, end, limit, what):
    """The decimal length in buf[start:end]: digits only, 0..limit."""
    digits = buf[start:end]
    if not digits.isdigit():        # no sign, space, "_" or "+": what int() would take
        raise ProtocolError(f"invalid {what} length {bytes(digits[:20])!r}")
    if len(digits) > 10 or int(digits) > limit:
        raise ProtocolError(f"{what} length {bytes(digits[:20]).decode()} is over "
                            f"the limit of {limit}")
    return int(digits)


def _line_end(buf, pos):
    """Where the line at pos ends (its \r\n), or -1 while incomplete."""
    end = buf.find(b"\r\n", pos, pos + MAX_LINE + 2)
    if end < 0 and len(buf) - pos > MAX_LINE:
        raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
    return end


def parse_one(buf, pos):
    """One command from buf (bytes or bytearray) at pos: (args, new_pos), or
    (None, pos) if incomplete.  Raises ProtocolError (a ValueError) for a
    malformed command or one over a limit, before buffering it."""
    if pos >= len(buf):
        return None, pos
    if buf[pos] != 42:                                # inline command: "PING\r\n"
        end = _line_end(buf, pos)
        if end < 0:
            return None, pos
        return [bytes(a) for a in buf[pos:end].split()], end + 2
    end = _line_end(buf, pos)
    if end < 0:
        return None, pos
    n = _length(buf, pos + 1, end, MAX_ARGS, "multibulk")
    p = end + 2
    args = []
    for _ in range(n):
        if p >= len(buf):
            break
        if buf[p] != 36:                              # "$"
            raise ProtocolError(f"expected '$', got {bytes(buf[p:p + 1])!r}")
        end = _line_end(buf, p)
        if end < 0:
            break
        size = _length(buf, p + 1, end, MAX_BULK, "bulk")
        start = end + 2
        if start + size + 2 > len(buf):
            break
        if buf[start + size:start + size + 2] != b"\r\n":
            raise ProtocolError("a bulk argument not followed by \\r\\n")
        args.append(bytes(buf[start:start + size]))
        p = start + size + 2
    else:
        return args, p
    if len(buf) - pos > MAX_COMMAND:
        raise ProtocolError(f"a command larger than {MAX_COMMAND} bytes")
    return None, pos


async def serve(stream):
    async with stream:
        # A bytearray: appending a chunk and dropping what was parsed cost
        # what they copy, not the whole buffer each time (no quadratic cost
        # for a large argument that arrives in many chunks).
        buf = bytearray()
        try:
            while data := await stream.recv():
                buf += data
                out, bad = answer_all(buf)
                if out:
                    await stream.sendall(out)
                if bad:
                    return                            # Redis closes the connection too
        except ConnectionError:
            pass


def answer_all(buf):
    """The replies to every whole command in buf, dropped from it: (bytes,
    bad).  bad: a protocol error, whose -ERR reply ends the bytes; the
    connection must then be closed (as Redis does).  What serve() and Resp
    share."""
    out = []
    pos = 0
    try:
        while True:
            args, pos = parse_one(buf, pos)
            if args is None:
                break
            if args:
                out.append(execute(args))
    except ProtocolError as e:
        out.append(b"-ERR Protocol error: %s\r\n" % str(e).encode())
        return b"".join(out), True
    del buf[:pos]
    return b"".join(out), False


class Resp:
    """The callback form of serve(): one per connection (net.serve_tcp_protocol)."""
    __slots__ = ("conn", "buf")

    def __init__(self, conn):
        self.conn, self.buf = conn, bytearray()

    def data_received(self, data):
        self.buf += data
        out, bad = answer_all(self.buf)
        if bad:
            self.conn.close()                 # after the error is sent, as Redis does
        return out or None


async def main(host, port, cpus, streams=False):
    # one listener per serving CPU, connections served where they were
    # accepted; cpus=None serves on one CPU under the GIL (measured: faster
    # than several, see osvrt/net/server.py)
    def on_listen(a):
        print(f"RESP on {host}:{a[1]}, CPUs {net.serving_cpus(cpus)}", flush=True)
    if streams:
        await net.serve_tcp(serve, (host, port), cpus=cpus, on_listen=on_listen)
    else:
        await net.serve_tcp_protocol(Resp, (host, port), cpus=cpus, on_listen=on_listen)


if __name__ == "__main__":
    args = parse("RESP (PING/SET/GET) server on osvrt", 6380)
    try:
        cpus = worker_cpus(args.cpus)
        # the runtime has every CPU asked for; which of them serve: net.serving_cpus
        osvrt.run(main, args.host, args.port, cpus if args.cpus else None, args.streams,
                  cpus=cpus)
    except KeyboardInterrupt:
        pass
