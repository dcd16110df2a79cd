"""Argument parsing shared by the examples (argparse: the standard library's)."""
import argparse
import errno
import os
import sys


def parse(description, default_port):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=default_port, help="0: any free port")
    p.add_argument("--cpus", type=_cpu_count, default=None,
                   help="worker CPUs: the first N this process may use (default: all)")
    p.add_argument("--streams", action="store_true",
                   help="serve with a green thread per connection (serve_tcp and "
                        "streams) instead of the callback server (serve_tcp_protocol)")
    return p.parse_args()


def _port(text):
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a TCP port is 0..65535")
    return port


def _cpu_count(text):
    """--cpus N: 1 up to the CPUs this process may use (a slice of them would
    take -1 or 99 without a word)."""
    cpus = sorted(os.sched_getaffinity(0))
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= len(cpus):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a count must be 1..{len(cpus)} (this process may use CPUs {cpus})")
    return n


def worker_cpus(n):
    """The CPUs the runtime will use, as osvrt.Runtime(cpus=n) picks them: all
    this process may use, or the first n of them.  The servers open one
    listener per CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus if n is None else cpus[:n]


# accept() fails with these when the process (or the system) is out of file
# descriptors or buffers.  The pending connection stays in the kernel's queue,
# so the listener stays readable: retrying at once would spin, and exiting
# would let one burst of clients take the server down.  Wait a little (some
# connection will close and free an fd) and accept again, as trio's
# serve_listeners and Go's net/http do.
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_RETRY_S = 0.1


async def accept_forever(listener, handler):
    """Accept connections on listener forever and start handler(stream) for
    each one as a green thread on this CPU; survives fd exhaustion."""
    import osvrt
    out_of_fds = False
    while True:
        try:
            stream, _ = await listener.accept()
        except osvrt.ClosedResourceError:
            raise
        except OSError as e:
            if e.errno not in _OUT_OF_RESOURCES:
                raise
            if not out_of_fds:                     # once per episode, not per retry
                print(f"accept: {e.strerror}; retrying every {ACCEPT_RETRY_S} s "
                      f"until a connection closes", file=sys.stderr, flush=True)
                out_of_fds = True
            await osvrt.sleep(ACCEPT_RETRY_S)
            continue
        if out_of_fds:
            print("accept: serving again", file=sys.stderr, flush=True)
            out_of_fds = False
        osvrt.spawn(handler, stream)
