"""TCP echo server: one green thread per connection, one listener per CPU.

    python examples/echo_server.py [--port 7000] [--cpus N]
    printf 'hello\n' | nc -q1 127.0.0.1 7000
"""
import osvrt
from osvrt import net

from _common import accept_forever, parse, worker_cpus


async def echo(stream):
    async with stream:
        try:
            while data := await stream.recv():
                await stream.sendall(data)
        except ConnectionError:
            pass                                  # the client reset the connection


async def main(host, port, cpus):
    # one listener per CPU on the same port: the kernel spreads connections
    listeners = [await net.tcp_listen((host, port), reuse_port=True) for _ in cpus]
    print(f"echo server on {host}:{listeners[0].address[1]}, CPUs {list(cpus)}", flush=True)
    async with osvrt.TaskGroup() as g:
        for cpu, lst in zip(cpus, listeners):
            g.spawn(accept_forever, lst, echo, cpu=cpu)


if __name__ == "__main__":
    args = parse("TCP echo server on osvrt", 7000)
    try:
        cpus = worker_cpus(args.cpus)
        osvrt.run(main, args.host, args.port, cpus, cpus=cpus)
    except KeyboardInterrupt:
        pass
