"""A lossy Ethernet relay for the user-space stack's tests: forwards every
frame between two interfaces (a bridge of two veth ends, in a namespace of
its own) and, for IPv4 frames only, drops, duplicates and delays them with a
seeded random generator, so TCP sees loss, duplication and reordering
(`tc netem` is not available on every machine).  ARP passes untouched, so
resolution is not what a test measures.

    python -m osvrt.bench.relay IF_A IF_B --loss 0.02 --dup 0.01 --reorder 0.02 --seed 1

Prints "ready" once both packet sockets are bound; on SIGTERM prints its
counts as one JSON line and exits.  Needs CAP_NET_RAW.
"""
import argparse
import heapq
import json
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33


def _open(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--loss", type=float, default=0.02)
    ap.add_argument("--dup", type=float, default=0.01)
    ap.add_argument("--reorder", type=float, default=0.02)
    ap.add_argument("--delay-ms", type=float, default=2.0,
                    help="how long a frame picked for reordering is held back")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    for name in ("loss", "dup", "reorder"):
        v = getattr(args, name)
        if not 0 <= v < 1:
            ap.error(f"--{name} must be in [0, 1), not {v}")
    rng = random.Random(args.seed)
    sa, sb = _open(args.a), _open(args.b)
    other = {sa.fileno(): sb, sb.fileno(): sa}
    by_fd = {sa.fileno(): sa, sb.fileno(): sb}
    counts = {"frames": 0, "forwarded": 0, "dropped": 0, "duplicated": 0, "delayed": 0}
    held = []                      # (release time, seq, socket, frame)
    seq = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    poller = select.poll()
    for s in (sa, sb):
        poller.register(s, select.POLLIN)
    print("ready", flush=True)

    def send(s, frame):
        try:
            s.send(frame)
            counts["forwarded"] += 1
        except OSError:
            counts["dropped"] += 1

    while not stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, s, frame = heapq.heappop(held)
            send(s, frame)
        timeout = None if not held else max(0, int((held[0][0] - now) * 1000) + 1)
        try:
            ready = poller.poll(timeout if timeout is not None else 200)
        except InterruptedError:
            continue
        for fd, _ev in ready:
            src, dst = by_fd[fd], other[fd]
            for _ in range(64):
                try:
                    frame = src.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                counts["frames"] += 1
                if len(frame) < 14 or frame[12:14] != b"\x08\x00":
                    send(dst, frame)
                    continue
                r = rng.random()
                if r < args.loss:
                    counts["dropped"] += 1
                    continue
                if rng.random() < args.reorder:
                    seq += 1
                    counts["delayed"] += 1
                    heapq.heappush(held, (time.monotonic() + args.delay_ms / 1000, seq, dst,
                                          frame))
                    continue
                send(dst, frame)
                if rng.random() < args.dup:
                    counts["duplicated"] += 1
                    send(dst, frame)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
