"""Waiting for a helper process to say it is ready, with a deadline.

A server or relay the bench starts says it is ready on a pipe.  A process
that dies first closes the pipe; one that hangs would leave a plain read
waiting for ever, so every such wait is bounded and its error names the
process (and, where there is one, the end of what it wrote on stderr)."""
import os
import select
import time

START_TIMEOUT_S = 15.0


def wait_readable(fd, deadline, what, timeout):
    """Return once pipe `fd` has something to read (or its writer closed
    it); TimeoutError naming `what` past `deadline` (time.monotonic())."""
    left = deadline - time.monotonic()
    if left > 0:
        p = select.poll()                # not select(): it refuses an fd past 1023
        p.register(fd, select.POLLIN)
        if p.poll(max(1, int(left * 1000))):
            return
    raise TimeoutError(f"{what} said nothing within {timeout:g} s")


def read_line(fd, what, timeout=START_TIMEOUT_S):
    """One line (bytes, without its newline) from pipe `fd` within `timeout`
    seconds; b"" if the writer closed the pipe first.  Read a byte at a
    time, so that nothing after the line is taken from the pipe (its owner
    may go on reading it, through a file object or communicate())."""
    deadline = time.monotonic() + timeout
    line = bytearray()
    while True:
        wait_readable(fd, deadline, what, timeout)
        b = os.read(fd, 1)
        if not b or b == b"\n":
            return bytes(line)
        line += b


def wait_ready(proc, what, expect="ready", timeout=START_TIMEOUT_S, stderr=None):
    """Wait for the line `expect` on proc.stdout (a pipe).  On another line,
    on the pipe's end, or on nothing within `timeout` s: kill proc and raise
    RuntimeError naming `what`, with the end of its stderr (`stderr`: a file
    it wrote to, read from its start; else proc.stderr if that is a pipe)."""
    try:
        got = read_line(proc.stdout.fileno(), what, timeout).decode(errors="replace")
        if got.strip() == expect:
            return
        why = f"it printed {got!r}" if got else "it exited"
    except TimeoutError as e:
        why = str(e)
    proc.kill()
    proc.wait()
    tail = b""
    if stderr is not None:
        stderr.seek(0)
        tail = stderr.read()
    elif proc.stderr is not None:
        tail = proc.stderr.read()
    if isinstance(tail, bytes):
        tail = tail.decode(errors="replace")
    raise RuntimeError(f"{what} did not start ({why}): {tail[-1500:]}")
