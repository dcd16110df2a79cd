"""`python -m osvrt top [PID]`: a live per-CPU view of a running osvrt
program, read from its runtime's stats file with no cooperation from it.

The stats file's layout and its writer are in statsfile.py.
"""
import glob
import os
import re
import sys
import tempfile
import time

from .statsfile import (HEADER, MAGIC, SLOT, SLOT_FIELDS, STATES, THREAD, THREADS_HEAD,
                        TOP_THREADS, VERSION, StatsFile, stats_dir)  # noqa: F401 (StatsFile: re-exported)


# ---- the reader's side -------------------------------------------------------

def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def read_file(path):
    """A snapshot of one stats file: dict(path, pid, alive, ncpu, cpus=[dict
    per slot], threads=[dict], t=monotonic time read), or None if it is not
    a stats file (or is gone)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < HEADER.size:
        return None
    magic, version, ncpu, pid, slot_size, alive, toff, _, _ = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or slot_size != SLOT.size \
            or len(data) < HEADER.size + ncpu * SLOT.size:
        return None
    cpus = []
    for i in range(ncpu):
        vals = SLOT.unpack_from(data, HEADER.size + i * SLOT.size)
        cpus.append(dict(zip(SLOT_FIELDS, vals)))
    threads = []
    if toff and len(data) >= toff + THREADS_HEAD.size + TOP_THREADS * THREAD.size:
        seq, count, published, _ = THREADS_HEAD.unpack_from(data, toff)
        if seq % 2 == 0:
            for k in range(min(count, TOP_THREADS)):
                tid, cpu, state, runtime, raw = THREAD.unpack_from(
                    data, toff + THREADS_HEAD.size + k * THREAD.size)
                threads.append({"id": tid, "cpu": cpu, "runtime": runtime,
                                "state": STATES[state] if state < len(STATES) else "?",
                                "name": raw.rstrip(b"\0").decode("utf-8", "replace")})
    return {"path": path, "pid": pid, "alive": bool(alive), "ncpu": ncpu, "cpus": cpus,
            "threads": threads, "t": time.monotonic()}


def find(pid=None, clean=True):
    """Stats files of running osvrt programs (of `pid` if given), as
    read_file() snapshots; files of processes that no longer exist are
    deleted when clean is true (a crash or a kill -9 leaves them)."""
    found = []
    dirs = {stats_dir(), tempfile.gettempdir()}
    for d in sorted(dirs):
        pattern = f"osvrt-{pid}-*.stats" if pid is not None else "osvrt-*-*.stats"
        for path in sorted(glob.glob(os.path.join(d, pattern))):
            m = re.fullmatch(r"osvrt-(\d+)-(\d+)\.stats", os.path.basename(path))
            if not m:
                continue
            snap = read_file(path)
            file_pid = int(m.group(1))
            if not _pid_alive(file_pid):
                if clean:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                continue
            if snap is None or not snap["alive"] or snap["pid"] != file_pid:
                continue
            found.append(snap)
    return found


def rows(before, after):
    """Per-CPU rows from two snapshots of one file (rates over the gap)."""
    dt = max(after["t"] - before["t"], 1e-9)
    out = []
    for b, a in zip(before["cpus"], after["cpus"]):
        idle = (a["idle_ns"] - b["idle_ns"]) / 1e9 / dt
        out.append({
            "cpu": a["cpu"],
            "switches_s": max(0, a["switches"] - b["switches"]) / dt,
            "runq": a["runq_len"],
            "idle_pct": min(100.0, max(0.0, 100.0 * idle)),
            "mig_in": a["migrations_in"], "mig_out": a["migrations_out"],
            "wakes_local": a["wakes_local"], "wakes_remote": a["wakes_remote"],
            "running": a["current_id"], "stalls": a["stalls"],
        })
    return out


COLUMNS = (("CPU", "cpu", "{}"), ("SWITCH/S", "switches_s", "{:.0f}"), ("RUNQ", "runq", "{}"),
           ("IDLE%", "idle_pct", "{:.1f}"), ("MIG-IN", "mig_in", "{}"),
           ("MIG-OUT", "mig_out", "{}"), ("WAKE-L", "wakes_local", "{}"),
           ("WAKE-R", "wakes_remote", "{}"), ("STALLS", "stalls", "{}"),
           ("RUNNING", "running", "{}"))


def _cell(key, fmt, value):
    if key == "running" and value == 0:
        return "-"
    return fmt.format(value)


def render_text(pairs):
    """Plain text for [(before, after)] snapshots of one or more runtimes."""
    lines = []
    for before, after in pairs:
        lines.append(f"osvrt pid {after['pid']}  {os.path.basename(after['path'])}  "
                     f"{after['ncpu']} CPU(s)")
        table = [[h for h, _, _ in COLUMNS]]
        for r in rows(before, after):
            table.append([_cell(k, f, r[k]) for _, k, f in COLUMNS])
        widths = [max(len(row[c]) for row in table) for c in range(len(COLUMNS))]
        for row in table:
            lines.append("  ".join(v.rjust(w) for v, w in zip(row, widths)))
        if after["threads"]:
            lines.append("")
            lines.append("busiest threads (decayed runtime)")
            lines.append(f"{'ID':>10}  {'CPU':>4}  {'STATE':<10}  {'RUNTIME':>9}  NAME")
            for t in after["threads"]:
                lines.append(f"{t['id']:>10}  {t['cpu']:>4}  {t['state']:<10}  "
                             f"{t['runtime'] * 1e3:>7.2f}ms  {t['name']}")
        lines.append("")
    return "\n".join(lines)


def render_rich(pairs):
    from rich.console import Group
    from rich.table import Table
    parts = []
    for before, after in pairs:
        t = Table(title=f"osvrt pid {after['pid']} ({os.path.basename(after['path'])}, "
                        f"{after['ncpu']} CPUs)", title_justify="left")
        for h, _, _ in COLUMNS:
            t.add_column(h, justify="right")
        for r in rows(before, after):
            t.add_row(*[_cell(k, f, r[k]) for _, k, f in COLUMNS])
        parts.append(t)
        if after["threads"]:
            tt = Table(title="busiest threads (decayed runtime)", title_justify="left")
            for h in ("ID", "CPU", "STATE", "RUNTIME", "NAME"):
                tt.add_column(h, justify="left" if h in ("STATE", "NAME") else "right")
            for th in after["threads"]:
                tt.add_row(str(th["id"]), str(th["cpu"]), th["state"],
                           f"{th['runtime'] * 1e3:.2f}ms", th["name"])
            parts.append(tt)
    return Group(*parts)


# ---- the command -----------------------------------------------------------------

def add_arguments(p):
    p.add_argument("pid", nargs="?", type=int,
                   help="the process to watch; without it, the only running osvrt "
                        "program (or a list to choose from)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between refreshes (default 1)")
    p.add_argument("--once", action="store_true",
                   help="print one snapshot (rates over one interval) as plain text and exit")
    p.add_argument("--plain", action="store_true", help="plain text even where rich is installed")


def _choose(pid):
    if pid is not None:
        snaps = find(pid)
        if not snaps:
            raise ValueError(f"no running osvrt runtime in process {pid} "
                             f"(looked for {stats_dir()}/osvrt-{pid}-*.stats)")
        return pid
    snaps = find()
    pids = sorted({s["pid"] for s in snaps})
    if len(pids) == 1:
        return pids[0]
    if not pids:
        raise ValueError(f"no running osvrt program found (no live {stats_dir()}/osvrt-*.stats)")
    print("running osvrt programs:")
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        print(f"  {p}  {cmd[:100]}")
    if not sys.stdin.isatty():
        raise ValueError("several osvrt programs run: give a PID")
    answer = input("PID: ").strip()
    if not answer.isdigit() or int(answer) not in pids:
        raise ValueError(f"{answer!r} is not one of {pids}")
    return int(answer)


def run(args):
    if not (args.interval > 0):
        raise ValueError(f"--interval must be > 0, not {args.interval}")
    pid = _choose(args.pid)
    prev = {s["path"]: s for s in find(pid)}
    if args.once:
        time.sleep(args.interval)
        now = find(pid)
        pairs = [(prev.get(s["path"], s), s) for s in now]
        if not pairs:
            raise ValueError(f"process {pid}'s runtime stopped")
        print(render_text(pairs), flush=True)
        return 0
    use_rich = not args.plain and sys.stdout.isatty()
    if use_rich:
        try:
            from rich.live import Live
        except ImportError:
            use_rich = False
    if use_rich:
        with Live(render_rich([]), auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(args.interval)
                now = find(pid)
                if not now:
                    break
                live.update(render_rich([(prev.get(s["path"], s), s) for s in now]),
                            refresh=True)
                prev = {s["path"]: s for s in now}
    else:
        while True:
            time.sleep(args.interval)
            now = find(pid)
            if not now:
                break
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(render_text([(prev.get(s["path"], s), s) for s in now]), flush=True)
            prev = {s["path"]: s for s in now}
    print(f"process {pid}: the osvrt runtime stopped", flush=True)
    return 0
