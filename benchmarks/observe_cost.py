"""What seeing the scheduler costs: the one-way switch of an Event ping-pong
(osvrt.bench.peers.osvrt_event_pingpong) with trace recording on vs off, and
with the stats file on vs off, configurations alternating within each round.

    python benchmarks/observe_cost.py [--rounds 5] [--n 100000]

Prints ns per switch, per configuration and round, and the same-round ratios
(trace/off, nostats/off) with their median."""
import argparse
import os
import statistics
import tempfile

import osvrt
from osvrt.bench.peers import osvrt_event_pingpong

CONFIGS = {"off": {}, "trace": {"trace": True}, "nostats": {"stats_file": False}}


def once(cfg, n, cpu_a, cpu_b, tmp):
    opts = dict(CONFIGS[cfg])
    if opts.pop("trace", False):
        opts["trace"] = os.path.join(tmp, "t.json")
        opts["trace_events"] = 4 * n + 10_000
    rt = osvrt.Runtime(cpus=2, balance=False, **opts)
    rt.start()
    try:
        return rt.run(osvrt_event_pingpong, n, cpu_a, cpu_b)["ns"]
    finally:
        rt.stop(timeout=30)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=100_000)
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))[:2]
    with tempfile.TemporaryDirectory() as tmp:
        for label, (a, b) in (("colocated", (cpus[0], cpus[0])), ("apart", (cpus[0], cpus[1]))):
            n = args.n if label == "colocated" else max(1, args.n // 5)
            ratios = {"trace": [], "nostats": []}
            for r in range(args.rounds):
                order = list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))
                ns = {cfg: once(cfg, n, a, b, tmp) for cfg in order}
                for k in ratios:
                    ratios[k].append(ns[k] / ns["off"])
                print(f"{label} round {r}: " + "  ".join(f"{k} {v:.0f} ns" for k, v in ns.items())
                      + f"  trace/off {ns['trace'] / ns['off']:.3f}"
                      + f"  nostats/off {ns['nostats'] / ns['off']:.3f}", flush=True)
            print(f"{label}: median trace/off {statistics.median(ratios['trace']):.3f}  "
                  f"median nostats/off {statistics.median(ratios['nostats']):.3f}", flush=True)


if __name__ == "__main__":
    main()
