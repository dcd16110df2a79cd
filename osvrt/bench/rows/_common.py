"""What the rows share: checks that a round did all its work, and the setups
(a started Runtime, an echo server) that contenders run in; the UDP rows' setup
is in rows/udp.py and placement.py."""
import contextlib

from .. import peers

OSVRT_TIMEOUT = 120.0                          # one osvrt round, before it counts as hung


def completed(n):
    def check(r):
        if r.get("a") != n or r.get("b") != n:
            raise RuntimeError(f"ping-pong completed {r.get('a')}/{r.get('b')} of {n} round trips")
    return check


def all_done(n):
    def check(r):
        if r["done"] != n:
            raise RuntimeError(f"{r['done']} of {n} tasks ran")
    return check


def answered(n):
    def check(r):
        if r["answered"] != n:
            raise RuntimeError(f"{r['answered']} of {n} round trips answered")
    return check


def run_in(rt, fn, *args):
    return rt.submit(fn, *args).result(OSVRT_TIMEOUT)


@contextlib.contextmanager
def started_runtime(cpus, **options):
    import osvrt
    rt = osvrt.Runtime(cpus=cpus, **options).start()
    try:
        yield rt
    finally:
        peers.stop_runtime(rt)


@contextlib.contextmanager
def runtime_and_echo(cpus):
    with started_runtime(cpus) as rt, peers.EventEcho() as echo:
        yield rt, echo
