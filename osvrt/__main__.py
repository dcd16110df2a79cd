"""The osvrt command line: `python -m osvrt <command> ...`.

Commands are listed in COMMANDS (name -> (module, one-line help)); a command's
module is imported only when it runs, and provides add_arguments(parser) and
run(args).  Add a command by adding a line.
"""
import argparse
import importlib
import os
import sys

COMMANDS = {
    "bench": ("osvrt.bench.cli",
              "measure osvrt against C pthreads, threading, asyncio, uvloop, trio and "
              "gevent on this host (the OSv paper's comparison)"),
    "instructions": ("osvrt.bench.instructions",
                     "count instructions per switch and per spawn under valgrind's callgrind "
                     "(osvrt, asyncio, uvloop): figures that repeat on a noisy host"),
    "top": ("osvrt.observe.top",
            "a live per-CPU view of a running osvrt program (switches/s, run queue, idle, "
            "migrations, wake-ups, busiest threads), from its stats file"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(
        prog="python -m osvrt",
        description="osvrt: green threads scheduled the way OSv schedules threads.",
        epilog="`python -m osvrt <command> --help` describes a command.")
    sub = p.add_subparsers(dest="command", metavar="command", title="commands")
    for name, (module, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        p.parse_args(argv)                 # --help, or an error naming the commands
        p.print_help()
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    cp = argparse.ArgumentParser(prog=f"python -m osvrt {name}", description=COMMANDS[name][1])
    module.add_arguments(cp)
    args = cp.parse_args(argv[1:])
    try:
        rc = module.run(args)
    except ValueError as e:
        cp.error(str(e))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output went away (`| head -1`): end quietly, with
        # the status a shell gives a command killed by SIGPIPE.
        _stdout_to_devnull()
        return 141
    return rc if isinstance(rc, int) else 0


def _stdout_to_devnull():
    """Point stdout's descriptor at /dev/null, so that the interpreter's last
    flush of what is still buffered does not fail again (the recipe of the
    Python docs, signal module, "Note on SIGPIPE")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):   # not a real file (captured): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
