"""Instructions per UDP transaction (one request, one reply) of the osvrt.net
echo server (a green thread on a net channel, the bench's OsvrtEchoServer)
and of the bench's kernel peer (a kernel UDP socket served by a Python
thread), counted by valgrind's callgrind (issue #18): wall-clock figures on
the shared 2-vCPU guest drift, counts repeat (the workers' drain within 1%,
the classifier's thread within ~8%: its sleeps and wakes depend on how
valgrind interleaves the threads).  User-space instructions only: the
kernel's work in syscalls (the peer's recvfrom and sendto per transaction,
osvrt's sendmmsg per batch, the packet ring's copy) is not in the counts.

    sudo PYTHONPATH=. .venv/bin/python benchmarks/udp_instructions.py \
        [--n 2000] [--window 1,16] [--servers workers,thread,kernel] [--out DIR]

The server (this file, `server` mode, importing osvrt from the tree this
file is in) runs under callgrind with collection off; the C client of the bench (osvrt.bench.net.rr, this process, not under
valgrind) warms it up, then callgrind collects while the client runs N
transactions (dump), then 2N (dump): (count(2N) - count(N)) / N is the cost
of one transaction, every thread of the server counted (the worker, and the
classifier thread where it has one), with start-up, warm-up and the
collection switches cancelled out.  Servers: "workers" (the workers drain the
packet ring: what osvrt.run gives), "thread" (the classifier's own thread:
the dedicated layout), "kernel" (the peer).  The runtime has one CPU, no
balancer, no stats file, no watchdog and no polling (idle_spin_us=0,
spin_us=0), so what is counted is the transactions, not what runs per unit
of (valgrind-slowed) wall time.  Under valgrind the server is ~50x slower
than the client, so with --window 16 it finds up to 16 requests queued at
each wake (its per-batch costs are shared by them), with --window 1 none:
every transaction pays a sleep and a wake-up.  The profiles stay in DIR for
callgrind_annotate.  Needs root (CAP_NET_RAW) and valgrind.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

SERVERS = ("workers", "thread", "kernel")
VALGRIND_START_S = 600     # Python and osvrt starting under callgrind, on a busy host
_TOTAL = re.compile(r"^summary:\s+(\d+)", re.M)


def serve(kind):
    """The echo of `kind`, until stdin closes; prints its port."""
    if kind == "kernel":
        from osvrt.bench.net import ThreadEchoServer
        server = ThreadEchoServer()
        print("ready", server.addr[1], flush=True)
        sys.stdin.read()
        server.close()
        return
    import osvrt
    import osvrt.net
    from osvrt.bench.net import OsvrtEchoServer
    rt = osvrt.Runtime(cpus=1, idle_spin_us=0, balance=False, stats_file=False,
                       stall_threshold=None).start()
    try:
        osvrt.net.configure(rt, spin_us=0, drain=kind)
        server = OsvrtEchoServer(rt)
        print("ready", server.addr[1], flush=True)
        sys.stdin.read()
        server.close()
    finally:
        rt.stop(timeout=30)


def _control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True)


def _dumped(out, k, timeout=60):
    """The instruction total of dump number k (callgrind writes it after
    callgrind_control -d returns)."""
    path = f"{out}.{k}"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path) as f:
                m = _TOTAL.search(f.read())
            if m:
                return int(m.group(1)), path
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump {path}")


def count(kind, n, window, out_dir):
    """Instructions per transaction of server `kind` with `window` requests
    in flight: (per transaction, path of the 2N profile)."""
    from osvrt.bench.net import rr
    from osvrt.bench.ready import read_line
    out = os.path.join(out_dir, f"udp-{kind}-w{window}.callgrind")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, PYTHONHASHSEED="0")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, "-P", os.path.abspath(__file__), "server", kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(out + ".log", "w"),
        text=True, env=env)
    try:
        # bounded: a server that hangs under callgrind must not hang this script
        line = read_line(server.stdout.fileno(), f"the {kind} server under callgrind",
                         VALGRIND_START_S).decode().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"the {kind} server did not start: see {out}.log")
        addr = ("127.0.0.1", int(line[1]))

        def run(k):
            r = rr(addr, k, window=window, timeout_ms=10_000)
            if r["done"] != k:
                raise RuntimeError(f"{kind}: {r['done']} of {k} transactions answered")
        run(500)                                   # warm: caches, the EWMA, the dicts
        _control(server.pid, "-i", "on")
        run(n)
        _control(server.pid, "-d")
        run(2 * n)
        _control(server.pid, "-d")
        _control(server.pid, "-i", "off")
        low, _ = _dumped(out, 1)
        high, path = _dumped(out, 2)
        server.stdin.close()
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return (high - low) / n, path


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        serve(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="transactions N (then 2N)")
    ap.add_argument("--window", default="1,16", help="requests in flight, comma-separated")
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="comma-separated: " + ",".join(SERVERS))
    ap.add_argument("--out", default=None, help="directory for the profiles (default: a new one)")
    a = ap.parse_args()
    if a.n < 1:
        sys.exit(f"--n must be >= 1, not {a.n}")
    servers = [s for s in a.servers.split(",") if s]
    bad = [s for s in servers if s not in SERVERS]
    if bad:
        sys.exit(f"--servers {a.servers!r}: unknown {bad}; one of {list(SERVERS)}")
    try:
        windows = [int(w) for w in a.window.split(",") if w]
    except ValueError:
        sys.exit(f"--window must be comma-separated ints, not {a.window!r}")
    if not windows or min(windows) < 1:
        sys.exit(f"--window must be ints >= 1, not {a.window!r}")
    out_dir = a.out or tempfile.mkdtemp(prefix="osvrt-udp-cg-")
    os.makedirs(out_dir, exist_ok=True)
    for w in windows:
        for kind in servers:
            per, path = count(kind, a.n, w, out_dir)
            print(f"window {w:2d} {kind:8s} {per:10,.0f} instructions per transaction "
                  f"(N={a.n}); profile: {path}", flush=True)


if __name__ == "__main__":
    main()
