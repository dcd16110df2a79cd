"""A tiny RESP (Redis protocol) server: PING, SET, GET (and ECHO, DEL), for
redis-benchmark.  The store is one dict shared by every CPU: each command is a
few bytecodes with no await inside, so under the GIL it is atomic.

    python examples/resp_server.py [--port 6380] [--cpus N]
    redis-benchmark -p 6380 -t ping,set,get -n 100000 -c 50 -q
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


def parse_one(buf, pos):
    """One command from buf at pos: (args, new_pos), or (None, pos) if incomplete."""
    if pos >= len(buf):
        return None, pos
    if buf[pos] != 42:                                # inline command: "PING\r\n"
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None, pos
        return buf[pos:end].split(), end + 2
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None, pos
    n = int(buf[pos + 1:end])
    p = end + 2
    args = []
    for _ in range(n):
        end = buf.find(b"\r\n", p)
        if end < 0:
            return None, pos
        size = int(buf[p + 1:end])
        start = end + 2
        if start + size + 2 > len(buf):
            return None, pos
        args.append(buf[start:start + size])
        p = start + size + 2
    return args, p


async def serve(stream):
    async with stream:
        buf = b""
        try:
            while data := await stream.recv():
                buf = buf + data if buf else data
                out = []
                pos = 0
                while True:
                    args, pos = parse_one(buf, pos)
                    if args is None:
                        break
                    if args:
                        out.append(execute(args))
                buf = buf[pos:]
                if out:
                    await stream.sendall(b"".join(out))
        except (ConnectionError, ValueError):
            pass


async def main(host, port, cpus):
    # serve_tcp: one listener per serving CPU, connections pinned where they
    # were accepted; cpus=None serves on one CPU under the GIL (measured:
    # faster than several, see osvrt/net/server.py)
    def on_listen(a):
        print(f"RESP on {host}:{a[1]}, CPUs {net.serving_cpus(cpus)}", flush=True)
    await net.serve_tcp(serve, (host, port), cpus=cpus, on_listen=on_listen)


if __name__ == "__main__":
    args = parse("RESP (PING/SET/GET) server on osvrt", 6380)
    try:
        cpus = worker_cpus(args.cpus)
        # the runtime has every CPU asked for; which of them serve: net.serving_cpus
        osvrt.run(main, args.host, args.port, cpus if args.cpus else None, cpus=cpus)
    except KeyboardInterrupt:
        pass
