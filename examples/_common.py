"""Argument parsing shared by the examples (argparse: the standard library's)."""
import argparse


def parse(description, default_port):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=default_port)
    p.add_argument("--cpus", type=int, default=None,
                   help="worker CPUs (default: every CPU this process may use)")
    return p.parse_args()
