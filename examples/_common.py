"""Argument parsing shared by the examples (argparse: the standard library's)."""
import argparse
import os


def parse(description, default_port):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=default_port)
    p.add_argument("--cpus", type=int, default=None,
                   help="worker CPUs (default: every CPU this process may use)")
    return p.parse_args()


def worker_cpus(n):
    """The CPUs the runtime will use, as osvrt.Runtime(cpus=n) picks them: all
    this process may use, or the first n of them.  The servers open one
    listener per CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus if n is None else cpus[:n]
