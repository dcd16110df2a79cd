"""Instructions per sockperf-style round trip of osvrt.net.user_stack's echo
server, counted by valgrind's callgrind (issue #19): wall-clock figures on the
shared 2-vCPU guest drift, counts repeat to a few per cent.

    sudo .venv/bin/python benchmarks/usertcp_instructions.py [--rounds 2000] [--out DIR]

The server (this file, `server` mode) runs under callgrind in a namespace of
its own (osvrt.bench.netns, 198.18.0.0/15) with collection off; a client in
the peer namespace opens one connection, warms it up, and callgrind collects
only while it runs exactly --rounds 64-byte request/replies (sockperf's
message format, TCP_NODELAY).  The server's runtime has no balancer, no stats
file and no idle spinning, so what is counted is the round trips, not what
runs per unit of (valgrind-slowed) wall time.  Prints the count per round
trip; the profile stays in DIR for callgrind_annotate.  Needs root.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

PORT = 7100
MSG = 64
VALGRIND_START_S = 600     # Python and osvrt starting under callgrind, on a busy host
VALGRIND_ROUNDS_S = 3600   # the measured round trips, the server under callgrind

_CLIENT = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
size = int(sys.argv[4])
msg = (1).to_bytes(8, "big") + (3).to_bytes(2, "big") + size.to_bytes(4, "big") + bytes(size - 14)
def rounds(n):
    for _ in range(n):
        s.sendall(msg)
        got = 0
        while got < size:
            got += len(s.recv(size - got))
rounds(500)
print("warm", flush=True)
sys.stdin.readline()
rounds(int(sys.argv[3]))
print("done", flush=True)
sys.stdin.readline()
'''


def serve(ifname, cidr, port):
    import osvrt
    import osvrt.net
    from osvrt.bench.usertcp import sockperf_answers

    async def main():
        stack = await osvrt.net.user_stack(ifname, cidr)

        async def echo(stream):
            buf = b""
            async with stream:
                while data := await stream.recv():
                    out, buf = sockperf_answers(buf + data)
                    if out:
                        await stream.sendall(out)

        async with await stack.tcp_listen(port) as listener:
            print("ready", flush=True)
            stream, _ = await listener.accept()
            await echo(stream)
    osvrt.run(main, cpus=1, idle_spin_us=0, balance=False, stats_file=False)


def _control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True)


def measure(rounds, out_dir):
    from osvrt.bench import netns
    from osvrt.bench.ready import read_line
    os.makedirs(out_dir, exist_ok=True)  # --out may name a directory not made yet
    out = os.path.join(out_dir, "usertcp.callgrind")
    t = netns.Topology()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    server = subprocess.Popen(
        ["ip", "netns", "exec", t.stack_ns, "valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={out}", sys.executable, "-P", os.path.abspath(__file__), "server",
         t.stack_if, t.cidr, str(PORT)],
        stdout=subprocess.PIPE, stderr=open(out + ".log", "w"), text=True, env=env)
    client = None
    try:
        # bounded, so that a process that hangs under callgrind cannot hang this script
        if read_line(server.stdout.fileno(), "the server under callgrind",
                     VALGRIND_START_S).strip() != b"ready":
            raise RuntimeError(f"the server did not start: see {out}.log")
        client = subprocess.Popen(["ip", "netns", "exec", t.peer_ns, sys.executable, "-c", _CLIENT,
                                   t.stack_ip, str(PORT), str(rounds), str(MSG)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if read_line(client.stdout.fileno(), "the client", VALGRIND_START_S).strip() != b"warm":
            raise RuntimeError("the client did not warm up")
        _control(server.pid, "-i", "on")
        client.stdin.write("\n")
        client.stdin.flush()
        if read_line(client.stdout.fileno(), "the client's round trips",
                     VALGRIND_ROUNDS_S).strip() != b"done":
            raise RuntimeError("the client did not finish its round trips")
        _control(server.pid, "-i", "off")
        _control(server.pid, "-d")
        client.stdin.write("\n")
        client.stdin.flush()
        client.wait(timeout=60)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        server.terminate()
        time.sleep(1)
        server.kill()
        server.wait()
        t.close()
    dump = out + ".1"
    totals = subprocess.run(["callgrind_annotate", dump], capture_output=True, text=True,
                            check=True).stdout
    line = next(x for x in totals.splitlines() if "PROGRAM TOTALS" in x)
    total = int(line.split()[0].replace(",", ""))
    print(f"{total / rounds:,.0f} instructions per round trip ({total:,} over {rounds} round "
          f"trips of {MSG} bytes); profile: {dump}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--out", default=None, help="directory for the profile (default: a new one)")
    a = ap.parse_args()
    if a.rounds < 1:
        sys.exit(f"--rounds must be >= 1, not {a.rounds}")
    measure(a.rounds, a.out or tempfile.mkdtemp(prefix="osvrt-usertcp-cg-"))


if __name__ == "__main__":
    main()
