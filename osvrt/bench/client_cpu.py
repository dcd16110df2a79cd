"""The CPU that a real client and the server used, beside what the client
measured.

On a host with few CPUs the client shares them with the server, and a fast
server can leave the client busy all the time: then the client, not the
server, set the rate, and the row's ratio is a floor of the server's.  Each
round of a client-driven throughput row records the client's CPU share and,
where the server is a process of its own, the server's; the report names the
rows whose client was busy throughout and gives each server's CPU time per
request (what the server would need with a client that cost nothing).
"""
import os
import resource
import subprocess
import time

CLIENT_BOUND = 0.95     # of one CPU: the client was busy all the time it ran


def _process_cpu_s(pid):
    """User + system seconds of every thread of process pid (/proc/pid/stat
    fields 14 and 15), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_client(cmd, server_pid=None, **kwargs):
    """subprocess.run(cmd, **kwargs), and {"client_cpu_share": share} (plus
    "server_cpu_share" for server_pid): CPU seconds over wall seconds while the
    client ran.  The client's time comes from RUSAGE_CHILDREN, which grows
    only as children are reaped; while we wait for the client we reap no
    other child, so the difference is the client's (with its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = _process_cpu_s(server_pid) if server_pid is not None else None
    start = time.monotonic()
    done = subprocess.run(cmd, **kwargs)
    wall = time.monotonic() - start
    server_after = _process_cpu_s(server_pid) if server_pid is not None else None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if wall <= 0:
        return done, {}
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    shares = {"client_cpu_share": round(used / wall, 3)}
    if server_before is not None and server_after is not None:
        shares["server_cpu_share"] = round((server_after - server_before) / wall, 3)
    return done, shares


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else None


def summary(measure):
    """[(contender, median client share, median server CPU us per unit of
    the measure's figure, or None)] over the rounds that recorded them."""
    out = []
    for name, cell in measure["contenders"].items():
        # rounds[i] is the figure of the round whose other numbers are details[i]
        pairs = [(v, d) for v, d in zip(cell.get("rounds") or (), cell.get("details", ()))
                 if "client_cpu_share" in d]
        if not pairs:
            continue
        per = [d["server_cpu_share"] / v * 1e6 for v, d in pairs
               if "server_cpu_share" in d and v > 0]
        out.append((name, _median([d["client_cpu_share"] for _, d in pairs]), _median(per)))
    return out
