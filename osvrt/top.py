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
                 current_id (0 when idle), cpu (host CPU id),
                 idle_since_ns (CLOCK_MONOTONIC ns when the idle period in
                 progress began, 0 when not idle: idle_ns counts a period
                 only once it ends), reserved[4]
  threads_offset: the busiest threads, written by the runtime's publisher
               about twice a second (osvrt/introspect.py), under the seqlock
               of osvrt/shared_words.py (every word stored and loaded with
               the atomics package, release/acquire):
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
import stat
import struct
import sys
import tempfile
import time

from osvrt import shared_words          # absolute: this module moves (LAYOUT.md)
from osvrt.printable import printable

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
_THREAD_WORDS = (THREADS_HEAD.size + TOP_THREADS * THREAD.size) // 8   # seq + 73 data words
SLOT_WORDS = len(SLOT_FIELDS) + 1         # the named fields, then idle_since_ns
MAX_CPUS = 8192                           # bounds the size of a file `top` accepts
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
        shared_words.load_atomics()       # first: a missing package leaves no file behind
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
        HEADER.pack_into(mm, 0, MAGIC, VERSION, ncpu, os.getpid(), SLOT.size, 0,
                         self.threads_off, 0, 0)
        # alive = 1 last, with release: a reader that loads it with acquire
        # sees the header and the slots above (shared_words.py).
        alive = shared_words.Words(mm, _ALIVE_OFF, 1)
        alive.store(0, 1, "release")
        alive.close()
        self._threads_lock = None            # the seqlock's writer, made at the first publish

    def publish_threads(self, rows):
        """rows: (id, name, host cpu, decayed runtime, state) of the busiest
        threads.  Written under the seqlock of osvrt/shared_words.py (atomic
        stores with release order), so that `top` in another process never
        takes a half-written table, on arm64 too."""
        mm = self._mm
        if mm is None:
            return
        if self._threads_lock is None:        # made here, in the publisher's thread:
            self._threads_words = shared_words.Words(mm, self.threads_off, _THREAD_WORDS)
            self._threads_lock = shared_words.SeqlockWriter(self._threads_words)
        area = bytearray(_THREAD_WORDS * 8)
        for k, (tid, name, cpu, runtime, state) in enumerate(rows[:TOP_THREADS]):
            raw = name.encode("utf-8", "replace")[:31]
            while raw:                                       # no cut UTF-8 sequence
                try:
                    raw.decode("utf-8")
                    break
                except UnicodeDecodeError:
                    raw = raw[:-1]
            THREAD.pack_into(area, THREADS_HEAD.size + k * THREAD.size, tid, cpu,
                             _STATE_CODE.get(state, 0), runtime, raw)
        THREADS_HEAD.pack_into(area, 0, 0, min(len(rows), TOP_THREADS), time.monotonic(), 0)
        self._threads_lock.write(shared_words.to_words(bytes(area))[1:])   # word 0: the seq

    def close(self, workers_exited=True):
        """Unbind the workers (only once their loops have ended), mark the
        file dead, delete it, and unmap (kept mapped when a worker is stuck:
        it may still write into it)."""
        mm = self._mm
        if mm is None:
            return
        alive = shared_words.Words(mm, _ALIVE_OFF, 1)
        alive.store(0, 0, "release")
        alive.close()
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
        if self._threads_lock is not None:     # the publisher has stopped (Runtime.stop)
            self._threads_lock = None
            self._threads_words.close()
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


class NotAStatsFile(Exception):
    """A file named like a stats file that `top` does not read; the message
    says why (its type, owner, mode or size, or a bad header)."""


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _kind(mode):
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def _owner_of(pid):
    """The uid process `pid` runs as, or None when it cannot be told."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _open_checked(path, file_pid):
    """The stats file at `path` mapped read-only, with its header, after
    checking, before reading anything: it is a regular file (lstat, then
    fstat of what was opened with O_NOFOLLOW | O_NONBLOCK, so a FIFO never
    blocks and a symlink is never followed), it belongs to the user that
    process `file_pid` runs as, no other user can write it, and its size is
    the one its 64-byte header implies (at most MAX_CPUS slots).  Raises
    NotAStatsFile, or FileNotFoundError when it is gone."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotAStatsFile(f"it is {_kind(st.st_mode)}")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
            raise NotAStatsFile("it was replaced while being opened")
        owner = _owner_of(file_pid)
        if owner is None:
            owner = os.geteuid()
        if fst.st_uid != owner:
            raise NotAStatsFile(f"it belongs to uid {fst.st_uid}, but process {file_pid} "
                                f"runs as uid {owner}")
        if fst.st_mode & 0o022:
            raise NotAStatsFile(f"other users may write it (mode {stat.S_IMODE(fst.st_mode):o})")
        limit = _size(MAX_CPUS)
        if not HEADER.size <= fst.st_size <= limit:
            raise NotAStatsFile(f"it has {fst.st_size} bytes; a stats file has "
                                f"{HEADER.size + SLOT.size}..{limit}")
        head = os.pread(fd, HEADER.size, 0)          # the header only, first
        if len(head) < HEADER.size:
            raise NotAStatsFile("it was cut short while being read")
        magic, version, ncpu, pid, slot_size, _, toff, _, _ = HEADER.unpack(head)
        if magic != MAGIC or version != VERSION or slot_size != SLOT.size:
            raise NotAStatsFile("its header is not an osvrt stats header (version "
                                f"{VERSION})")
        if not 1 <= ncpu <= MAX_CPUS or toff != HEADER.size + ncpu * SLOT.size:
            raise NotAStatsFile(f"its header is inconsistent (ncpu {ncpu})")
        if fst.st_size != _size(ncpu):
            raise NotAStatsFile(f"it has {fst.st_size} bytes; {ncpu} CPU(s) make "
                                f"{_size(ncpu)}")
        mm = mmap.mmap(fd, _size(ncpu), prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    return mm, head


def _read_slots(mm, ncpu):
    """Each worker's counters: relaxed loads (one writer each, a hint), and
    idle_ns with acquire before idle_since_ns, the order that worker.c's
    release store of idle_ns pairs with: an idle period is never counted
    twice."""
    words = shared_words.Words(mm, HEADER.size, ncpu * SLOT.size // 8)
    try:
        cpus = []
        idle_at = SLOT_FIELDS.index("idle_ns")
        for i in range(ncpu):
            base = i * SLOT.size // 8
            vals = [words.load(base + k, "acquire" if k == idle_at else "relaxed")
                    for k in range(SLOT_WORDS)]
            now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            slot = dict(zip(SLOT_FIELDS, vals))
            since = vals[len(SLOT_FIELDS)]
            # the idle period in progress, which idle_ns holds only once it ends
            slot["idle_total_ns"] = slot["idle_ns"] + (max(0, now_ns - since) if since else 0)
            cpus.append(slot)
        return cpus
    finally:
        words.close()


def _read_threads(mm, toff):
    words = shared_words.Words(mm, toff, _THREAD_WORDS)
    try:
        data = shared_words.seqlock_read(words)
    finally:
        words.close()
    if data is None:                      # every try met a write: none this time
        return []
    area = shared_words.from_words([0] + data)
    _, count, _, _ = THREADS_HEAD.unpack_from(area)
    threads = []
    for k in range(min(count, TOP_THREADS)):
        tid, cpu, state, runtime, raw = THREAD.unpack_from(
            area, THREADS_HEAD.size + k * THREAD.size)
        threads.append({"id": tid, "cpu": cpu, "runtime": runtime,
                        "state": STATES[state] if state < len(STATES) else "?",
                        "name": raw.rstrip(b"\0").decode("utf-8", "replace")})
    return threads


def read_file(path, file_pid=None):
    """A snapshot of one stats file: dict(path, pid, alive, ncpu, cpus=[dict
    per slot], threads=[dict], t=monotonic time read), or None if it is gone.
    NotAStatsFile when it is not one `top` may read (see _open_checked);
    file_pid: the pid in its name (parsed from path when None)."""
    if file_pid is None:
        m = re.fullmatch(r"osvrt-(\d+)-(\d+)\.stats", os.path.basename(path))
        file_pid = int(m.group(1)) if m else -1
    try:
        mm, head = _open_checked(path, file_pid)
    except FileNotFoundError:
        return None
    try:
        alive = shared_words.Words(mm, _ALIVE_OFF, 1)
        try:
            is_alive = alive.load(0, "acquire")       # pairs with StatsFile's release
        finally:
            alive.close()
        _, _, ncpu, pid, _, _, toff, _, _ = HEADER.unpack(head)
        if is_alive and HEADER.unpack_from(mm)[:5] != HEADER.unpack(head)[:5]:
            raise NotAStatsFile("its header changed while being read")
        cpus = _read_slots(mm, ncpu)
        threads = _read_threads(mm, toff)
        t = time.monotonic()
        if cpus:
            # the rates' clock: the time the idle periods in progress were measured to
            t = time.clock_gettime_ns(time.CLOCK_MONOTONIC) / 1e9
    finally:
        mm.close()
    return {"path": path, "pid": pid, "alive": bool(is_alive), "ncpu": ncpu, "cpus": cpus,
            "threads": threads, "t": t}


def _remove_stale(path):
    """Delete the file of a process that no longer exists: only a regular
    file of this user's (never what another user planted, never a FIFO or
    a device)."""
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            os.unlink(path)
    except OSError:
        pass


def find(pid=None, clean=True, problems=None):
    """Stats files of running osvrt programs (of `pid` if given), as
    read_file() snapshots; files of processes that no longer exist are
    deleted when clean is true (a crash or a kill -9 leaves them).  A file
    that `top` does not read (NotAStatsFile) is left out; with `problems`
    (a dict), problems[path] = the reason."""
    found = []
    dirs = {stats_dir(), tempfile.gettempdir()}
    for d in sorted(dirs):
        pattern = f"osvrt-{pid}-*.stats" if pid is not None else "osvrt-*-*.stats"
        for path in sorted(glob.glob(os.path.join(d, pattern))):
            m = re.fullmatch(r"osvrt-(\d+)-(\d+)\.stats", os.path.basename(path))
            if not m:
                continue
            file_pid = int(m.group(1))
            if not _pid_alive(file_pid):
                if clean:
                    _remove_stale(path)
                continue
            try:
                snap = read_file(path, file_pid)
            except NotAStatsFile as e:
                if problems is not None:
                    problems[path] = str(e)
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
        idle = (a.get("idle_total_ns", a["idle_ns"])
                - b.get("idle_total_ns", b["idle_ns"])) / 1e9 / dt
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
                             f"{t['runtime'] * 1e3:>7.2f}ms  {printable(t['name'])}")
        lines.append("")
    return "\n".join(lines)


def render_rich(pairs):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text          # a Text is shown as it is: no markup in a name
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
                           f"{th['runtime'] * 1e3:.2f}ms", Text(printable(th["name"])))
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


def _skipped(problems):
    """The files left out and why, for an error message (paths escaped)."""
    if not problems:
        return ""
    return "; left out: " + "; ".join(f"{printable(p)}: {why}"
                                      for p, why in sorted(problems.items()))


def _choose(pid, problems):
    if pid is not None:
        snaps = find(pid, problems=problems)
        if not snaps:
            raise ValueError(f"no running osvrt runtime in process {pid} "
                             f"(looked for {printable(stats_dir())}/osvrt-{pid}-*.stats)"
                             + _skipped(problems))
        return pid
    snaps = find(problems=problems)
    pids = sorted({s["pid"] for s in snaps})
    if len(pids) == 1:
        return pids[0]
    if not pids:
        raise ValueError(f"no running osvrt program found (no live "
                         f"{printable(stats_dir())}/osvrt-*.stats)" + _skipped(problems))
    print("running osvrt programs:")
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        print(f"  {p}  {printable(cmd[:100])}")
    if not sys.stdin.isatty():
        raise ValueError("several osvrt programs run: give a PID")
    answer = input("PID: ").strip()
    if not answer.isdigit() or int(answer) not in pids:
        raise ValueError(f"{answer!r} is not one of {pids}")
    return int(answer)


def _warn_skipped(problems, _said=set()):
    """Say once per file, on stderr, which files named like stats files
    were not read, and why."""
    for path, why in sorted(problems.items()):
        if path not in _said:
            _said.add(path)
            print(f"osvrt top: not reading {printable(path)}: {why}", file=sys.stderr)


def run(args):
    if not (args.interval > 0):
        raise ValueError(f"--interval must be > 0, not {args.interval}")
    problems = {}
    pid = _choose(args.pid, problems)
    _warn_skipped(problems)
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
