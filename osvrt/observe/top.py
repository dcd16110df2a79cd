"""`python -m osvrt top [PID]`: a live per-CPU view of a running osvrt
program, read from its runtime's stats file with no cooperation from it.

The stats file
--------------
Each started Runtime (unless Runtime(stats_file=False)) creates
/dev/shm/osvrt-<pid>-<n>.stats (n counts the runtimes of the process; the
directory is tempfile.gettempdir() where /dev/shm is missing), maps it, and
points every worker's counters at its slot: the engine then updates them in
place (relaxed stores by the owning worker; csrc/worker_stats.h).  stop()
points them back, marks the file dead and deletes it; a file whose pid is
gone (a crashed process) is ignored and deleted by `top`.

Layout (native byte order; all fields naturally aligned):

  offset 0     struct osvrt_stats_header, 64 bytes (csrc/worker_stats.h):
                 u64 magic 0x5453545256534f00, u32 version 1, u32 ncpu,
                 u64 pid, u64 slot_size 128, u64 alive (1 running, 0 stopped),
                 u64 threads_offset (the offset of the threads area below;
                 osvrt's use of the first reserved word), u64 reserved[2]
  offset 64    ncpu x struct osvrt_worker_stats, 128 bytes each:
                 u64 switches, wakes_local, wakes_remote, migrations_in,
                 migrations_out, stalls, spawned, idle_ns, runq_len,
                 current_id (0 when idle), cpu (host CPU id), reserved[5]
  threads_offset: the busiest threads, written by the runtime's publisher
               about twice a second (osvrt/introspect.py):
                 u64 seq (odd while being written: a reader retries),
                 u64 count (0..10), f64 published (CLOCK_MONOTONIC s),
                 u64 reserved,
                 then 10 entries of 56 bytes: u64 id, u32 cpu (host id),
                 u32 state (0 unstarted, 1 queued, 2 running, 3 waiting,
                 4 terminated), f64 runtime (decayed, s), char name[32]
                 (UTF-8, at most 31 bytes, NUL-padded)
"""
import atexit
import glob
import itertools
import mmap
import os
import re
import struct
import sys
import tempfile
import time

MAGIC = 0x5453545256534F00
VERSION = 1
HEADER = struct.Struct("=QIIQQQQQQ")       # 64 bytes
SLOT = struct.Struct("=16Q")               # 128 bytes
SLOT_FIELDS = ("switches", "wakes_local", "wakes_remote", "migrations_in", "migrations_out",
               "stalls", "spawned", "idle_ns", "runq_len", "current_id", "cpu")
THREADS_HEAD = struct.Struct("=QQdQ")      # 32 bytes
THREAD = struct.Struct("=QIId32s")          # 56 bytes
TOP_THREADS = 10
STATES = ("unstarted", "queued", "running", "waiting", "terminated")
_STATE_CODE = {s: i for i, s in enumerate(STATES)}
_ALIVE_OFF = 32                           # offset of header.alive
_counter = itertools.count()
_open_paths = set()                        # this process's live stats files (atexit)


def stats_dir():
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _size(ncpu):
    return HEADER.size + ncpu * SLOT.size + THREADS_HEAD.size + TOP_THREADS * THREAD.size


@atexit.register
def _remove_left_files():
    # A program that exits without stopping its runtime (workers are daemon
    # threads) must not leave its file behind.
    for p in list(_open_paths):
        if not os.path.basename(p).startswith(f"osvrt-{os.getpid()}-"):
            continue                       # a forked child: the file is its parent's
        try:
            os.unlink(p)
        except OSError:
            pass


class StatsFile:
    """The writer's side: made by Runtime.start(), closed by Runtime.stop()."""

    def __init__(self, workers):
        import ctypes
        ncpu = len(workers)
        self.threads_off = HEADER.size + ncpu * SLOT.size
        d = stats_dir()
        while True:
            path = os.path.join(d, f"osvrt-{os.getpid()}-{next(_counter)}.stats")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:           # a file left by an earlier process with our pid
                continue
        try:
            os.ftruncate(fd, _size(ncpu))
            self._mm = mmap.mmap(fd, _size(ncpu))
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        self.path = path
        _open_paths.add(path)
        mm = self._mm
        for i, w in enumerate(workers):
            SLOT.pack_into(mm, HEADER.size + i * SLOT.size, *([0] * 10 + [w.cpu_id] + [0] * 5))
        self._anchor = ctypes.c_char.from_buffer(mm)
        base = ctypes.addressof(self._anchor)
        self._bound = []
        for i, w in enumerate(workers):
            w._bind_stats(base + HEADER.size + i * SLOT.size)   # values carry over
            self._bound.append(w)
            # the engine does not write `cpu`: the copy above overwrote it
            struct.pack_into("=Q", mm, HEADER.size + i * SLOT.size + 10 * 8, w.cpu_id)
        HEADER.pack_into(mm, 0, MAGIC, VERSION, ncpu, os.getpid(), SLOT.size, 1,
                         self.threads_off, 0, 0)
        self._seq = 0

    def publish_threads(self, rows):
        """rows: (id, name, host cpu, decayed runtime, state) of the busiest threads."""
        mm = self._mm
        if mm is None:
            return
        off = self.threads_off
        self._seq += 1                                       # odd: being written
        struct.pack_into("=Q", mm, off, self._seq)
        for k, (tid, name, cpu, runtime, state) in enumerate(rows[:TOP_THREADS]):
            raw = name.encode("utf-8", "replace")[:31]
            while raw:                                       # no cut UTF-8 sequence
                try:
                    raw.decode("utf-8")
                    break
                except UnicodeDecodeError:
                    raw = raw[:-1]
            THREAD.pack_into(mm, off + THREADS_HEAD.size + k * THREAD.size, tid, cpu,
                             _STATE_CODE.get(state, 0), runtime, raw)
        THREADS_HEAD.pack_into(mm, off, self._seq, min(len(rows), TOP_THREADS),
                               time.monotonic(), 0)
        self._seq += 1
        struct.pack_into("=Q", mm, off, self._seq)           # even: done

    def close(self, workers_exited=True):
        """Unbind the workers (only once their loops have ended), mark the
        file dead, delete it, and unmap (kept mapped when a worker is stuck:
        it may still write into it)."""
        mm = self._mm
        if mm is None:
            return
        struct.pack_into("=Q", mm, _ALIVE_OFF, 0)
        try:
            os.unlink(self.path)
        except OSError:
            pass
        _open_paths.discard(self.path)
        if not workers_exited:
            return
        for w in self._bound:
            w._bind_stats(0)
        self._bound = []
        del self._anchor
        self._mm = None
        mm.close()


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
