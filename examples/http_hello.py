"""HTTP/1.1 "hello" server with keep-alive (pipelining-safe), for wrk.

    python examples/http_hello.py [--port 8080] [--cpus N]
    wrk -t2 -c64 -d5s http://127.0.0.1:8080/
"""
import osvrt
from osvrt import net

from _common import accept_forever, parse, worker_cpus

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


async def main(host, port, cpus):
    listeners = [await net.tcp_listen((host, port), reuse_port=True, backlog=1024)
                 for _ in cpus]
    print(f"http on http://{host}:{listeners[0].address[1]}/, CPUs {list(cpus)}", flush=True)
    async with osvrt.TaskGroup() as g:
        for cpu, lst in zip(cpus, listeners):
            g.spawn(accept_forever, lst, serve, cpu=cpu)


if __name__ == "__main__":
    args = parse("HTTP/1.1 hello server on osvrt", 8080)
    try:
        cpus = worker_cpus(args.cpus)
        osvrt.run(main, args.host, args.port, cpus, cpus=cpus)
    except KeyboardInterrupt:
        pass
