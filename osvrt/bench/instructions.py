"""`python -m osvrt instructions`: instructions per switch and per spawn, counted
by valgrind's callgrind, for osvrt and its event-loop peers.

Wall-clock figures on a shared 2-vCPU guest drift by 30%; instruction counts
repeat (osvrt's within about 0.5%, the peers' exactly), so a change to the
hot path can be judged by them without noise.  The difference method cancels
start-up and shutdown: each workload runs N and 2N units in two processes,
and (count(2N) - count(N)) / N is the cost of one unit.  A colocated switch is
half a round trip of an Event (osvrt) or Future (asyncio, uvloop) ping-pong
between two threads of one CPU.
"""
import json
import os
import re
import shutil
import subprocess
import sys

from ..checks import check_output_path
from ..observe import private_file

# http, http_fixed: osvrt/bench/http_load.py (http_fixed: requests counted by
# length, not parsed, so that the servers' own cost is what differs)
WORKLOADS = ("switch", "spawn", "http", "http_fixed")
PEERS = ("osvrt", "osvrt_protocol", "asyncio", "uvloop")
# osvrt_protocol: the same responses through osvrt.net.serve_tcp_protocol's
# engine loop (http only; osvrt is the stream server of examples/http_hello.py)
_ONLY = {"osvrt_protocol": ("http", "http_fixed")}


# ---- the workloads, run in the child: the same ones that `python -m osvrt
# bench` times (osvrt.bench.peers), so counts and times describe one thing

def child(peer, kind, n):
    import gc
    from . import peers
    if peer not in ("osvrt", "osvrt_protocol"):
        __import__(peer)                  # its modules in the frozen heap too
    # No cyclic GC during the count, for every peer alike: spawn+join keeps N
    # tasks alive at once, and the collections that triggers grow faster than
    # N (measured: 7,165 instructions a task at N = 2,000, 6,314 at 4,000), so
    # with GC on the per-unit figure depends on N and on the size of the heap.
    # Without it, the count is the cost of scheduling alone, and it repeats.
    gc.collect()
    gc.disable()
    if kind in ("http", "http_fixed"):
        from . import http_load
        return http_load.child(peer, n, fixed=kind == "http_fixed")
    if peer == "osvrt":
        # One CPU: both sides of the ping-pong are colocated by construction.
        # No watchdog and no stats file: their OS threads wake on wall-clock
        # periods, which under valgrind's slowdown would add work per unit.
        import osvrt
        rt = osvrt.Runtime(cpus=1, balance=False, stall_threshold=None,
                           stats_file=False).start()
        try:
            if kind == "switch":
                cpu = rt.cpus[0]
                rt.run(peers.osvrt_event_pingpong, n, cpu, cpu)
            else:
                rt.run(peers.osvrt_spawn_join, n)
        finally:
            peers.stop_runtime(rt)
    elif kind == "switch":
        peers.asyncio_future_pingpong(n, peer)
    else:
        peers.asyncio_spawn_join(n, peer)


# ---- the parent ------------------------------------------------------------

_COLLECTED = re.compile(r"I\s+refs:\s+([\d,]+)")


def _count(peer, kind, n, timeout):
    """Instructions of one child process that runs n units."""
    code = (f"from osvrt.bench.instructions import child; child({peer!r}, {kind!r}, {n})")
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, "-P", "-c", code]
    env = dict(os.environ, PYTHONHASHSEED="0")    # the same dict layouts in every run
    import osvrt
    root = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    m = _COLLECTED.search(p.stderr)
    if p.returncode != 0 or m is None:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"callgrind run of {peer} {kind} failed: {tail}")
    return int(m.group(1).replace(",", ""))


def per_unit(peer, kind, n, timeout=600):
    """Instructions per unit (one-way switch, or one spawn+join) of `peer`."""
    low, high = _count(peer, kind, n, timeout), _count(peer, kind, 2 * n, timeout)
    per = (high - low) / n
    return per / 2 if kind == "switch" else per


def available(peer):
    if peer in ("osvrt", "osvrt_protocol", "asyncio"):
        return True
    try:
        __import__(peer)
    except ImportError:
        return False
    return True


def measure(peers=PEERS, kinds=WORKLOADS, n=None, quick=False):
    """{kind: {peer: instructions per unit}} for every available peer."""
    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind is not installed (Debian: apt-get install valgrind)")
    sizes = {"switch": 2000 if quick else 10000, "spawn": 2000 if quick else 10000,
             "http": 2000 if quick else 10000, "http_fixed": 2000 if quick else 10000}
    out = {}
    for kind in kinds:
        out[kind] = {}
        for peer in peers:
            if available(peer) and kind in _ONLY.get(peer, (kind,)):
                out[kind][peer] = per_unit(peer, kind, n or sizes[kind])
    return out


# The targets: a switch <= 3,000 instructions; a spawn
# + join <= 1/4 of asyncio's.
def report(result):
    lines = ["instructions per unit (callgrind, difference of N and 2N units):"]
    for kind, row in result.items():
        unit = {"switch": "one-way colocated switch", "spawn": "spawn + run + join",
                "http": "HTTP keep-alive request (server side, loopback)",
                "http_fixed": "HTTP keep-alive request, requests counted by length, not parsed "
                              "(the servers' own cost)"}[kind]
        cells = ", ".join(f"{p} {v:,.0f}" for p, v in row.items())
        lines.append(f"  {unit}: {cells}")
        o, a = row.get("osvrt"), row.get("asyncio")
        if kind == "switch" and o is not None:
            lines.append(f"    target <= 3,000: {'met' if o <= 3000 else 'MISSED'}")
        u = row.get("uvloop")
        if kind == "switch" and o is None:
            lines.append("    target <= 3,000: n/a (osvrt not measured: not in --peers)")
        if kind == "http" and not u:
            lines.append(f"    target osvrt/uvloop-Protocol <= 0.5: n/a ({_why_missing('uvloop')})")
        if kind == "spawn" and not a:
            lines.append(f"    target osvrt/asyncio <= 0.25: n/a ({_why_missing('asyncio')})")
        for name in ("osvrt", "osvrt_protocol"):
            o2 = row.get(name)
            if kind in ("http", "http_fixed") and o2 is not None and u:
                r = o2 / u
                what = {"osvrt": "osvrt streams", "osvrt_protocol": "osvrt serve_tcp_protocol"}[name]
                # The target (#17) is on the parsing handler alone.
                verdict = (f"target <= 0.5: {'met' if r <= 0.5 else 'MISSED'}"
                           if kind == "http" else "no target (the target is on the http row)")
                lines.append(f"    {what}/uvloop-Protocol {r:.3f}, {verdict}")
        if kind == "spawn" and o is not None and a:
            r = o / a
            lines.append(f"    osvrt/asyncio {r:.3f}, target <= 0.25: {'met' if r <= 0.25 else 'MISSED'}")
    return "\n".join(lines)


def _why_missing(peer):
    return (f"{peer} not measured: "
            f"{'not in --peers' if available(peer) else 'not installed'}")


def add_arguments(p):
    p.add_argument("--quick", action="store_true", help="smaller N (2,000 units)")
    p.add_argument("--only", default=",".join(WORKLOADS),
                   help="comma-separated workloads: " + ",".join(WORKLOADS))
    p.add_argument("--peers", default=",".join(PEERS),
                   help="comma-separated: " + ",".join(PEERS) + " (missing ones are skipped; "
                        "osvrt_protocol counts http and http_fixed only)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the figures here")


def _names(option, spec, known):
    """The comma-separated names of an option, each one of `known`, at
    least one (an empty list would count nothing and say nothing)."""
    names = [k.strip() for k in spec.split(",") if k.strip()]
    bad = [k for k in names if k not in known]
    if bad or not names:
        raise ValueError(f"{option} {spec!r}: {f'unknown {bad}' if bad else 'names nothing'}; "
                         f"one or more of {list(known)}")
    return names


def run(args):
    kinds = _names("--only", args.only, WORKLOADS)
    peers = _names("--peers", args.peers, PEERS)
    if args.json:
        check_output_path("--json", args.json)
    result = measure(peers, kinds, quick=args.quick)
    print(report(result))
    if args.json:
        try:
            private_file.write(args.json, "--json", lambda f: json.dump(result, f, indent=1))
        except OSError as e:         # the figures are printed above: say why, no traceback
            print(f"figures: not written: {e}", file=sys.stderr)
            return 1
