"""The CPU that a real client and the server used, beside what the client
measured.

On a host with few CPUs the client shares them with the server, and a fast
server can leave the client busy all the time it runs: then the client, not
the server, set the rate, and the row's ratio says little about the servers.
Each round of a client-driven throughput row records the client's CPU share
and, where the server is a process of its own and the client says how many
requests it made, the server's CPU time per request (the C UDP client of
osvrt.bench.net.rr runs in the bench's own process, beside the server, and
records the same figures itself).  The report prints both
(osvrt/bench/report.py).

What the shares cannot split: on loopback and veth the sender's syscall runs
the receiver's side of the kernel's stack, so part of a client's CPU is
work done for the server and the other way round.
"""
import os
import subprocess
import tempfile
import time

from .measure import median

CLIENT_BOUND = 0.95     # of one CPU: the client was busy all the time it ran
_POLL_S = 0.002         # how often run_client looks whether the client ended


def stat_cpu_seconds(path):
    """User + system seconds from a /proc .../stat file (fields 14 and 15:
    a whole process's for /proc/PID/stat, one thread's for .../task/TID/stat);
    OSError if it cannot be read (the process or thread is gone)."""
    with open(path, "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()     # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid):
    """stat_cpu_seconds of process pid, or None once it is gone."""
    try:
        return stat_cpu_seconds(f"/proc/{pid}/stat")
    except OSError:
        return None


def require_success(done, tool):
    """A real client that failed is an error, not a row from its partial
    output: RuntimeError with its exit status and the tail of what it said."""
    if done.returncode != 0:
        said = (done.stderr or "") + (done.stdout or "")
        raise RuntimeError(f"{tool} exited with status {done.returncode}: {said[-500:]!r}")
    return done


def run_client(cmd, server_pid=None, *, timeout, check=False):
    """Run the client cmd to its end, as subprocess.run(cmd,
    capture_output=True, text=True, timeout=timeout, check=check) would, and
    return (CompletedProcess, cpu) where cpu is {"client_cpu_share": CPU
    seconds over wall seconds of the client's run} plus, for server_pid,
    {"server_cpu_s": the server's CPU seconds over the same run}.  The
    client's time is its own rusage (os.wait4 on its pid; its children
    included), not a difference of RUSAGE_CHILDREN, which any other child
    reaped meanwhile would inflate."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        server_before = _process_cpu_s(server_pid) if server_pid is not None else None
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        status = usage = None
        try:
            status, usage = _wait(proc, start + timeout)
        finally:
            wall = time.monotonic() - start
            server_after = _process_cpu_s(server_pid) if server_pid is not None else None
            if status is None:          # timed out or interrupted: never left running
                proc.kill()
                status, _ = _wait(proc, None)
            # reaped here, not by Popen (which would then find no child)
            proc.returncode = os.waitstatus_to_exitcode(status)
        if usage is None:
            raise subprocess.TimeoutExpired(cmd, timeout)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode,
                                           out.read().decode(errors="replace"),
                                           err.read().decode(errors="replace"))
    if check:
        done.check_returncode()
    cpu = {"client_cpu_share": round((usage.ru_utime + usage.ru_stime) / wall, 3)
           if wall > 0 else 0.0}
    if server_before is not None and server_after is not None:
        cpu["server_cpu_s"] = round(server_after - server_before, 4)
    return done, cpu


def _wait(proc, deadline):
    """(wait status, rusage) of proc once it ended; (None, None) past the
    deadline (None: no deadline)."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline is not None else 0)
        if pid:
            return status, usage
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(_POLL_S)


def summary(measure):
    """[(contender, median client share, median server CPU us per request
    or None)] over the rounds that recorded them."""
    out = []
    for name, cell in measure["contenders"].items():
        details = [d for d in cell.get("details", ()) if "client_cpu_share" in d]
        if not details:
            continue
        per = [d["server_cpu_s"] / d["requests"] * 1e6 for d in details
               if "server_cpu_s" in d and d.get("requests")]
        out.append((name, median([d["client_cpu_share"] for d in details]), median(per)))
    return out
