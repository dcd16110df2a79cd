"""`python -m osvrt top [PID]`: a live per-CPU view of a running osvrt
program, read from its runtime's stats file with no cooperation from it.

The stats file's layout and its writer are in statsfile.py.  top reads only:
it checks a file before reading it (_open_checked), loads the words the
runtime stores with the atomics package (shared_words.py: the seqlock of the
threads area, idle_ns with acquire), and shows every name, path and command
line through printable() (printable.py).
"""
import glob
import mmap
import os
import re
import stat
import sys
import tempfile
import time

from . import shared_words
from .printable import printable
from .statsfile import (ALIVE_OFFSET, HEADER, MAGIC, SLOT, SLOT_FIELDS, SLOT_WORDS, STATES,
                        THREAD, THREAD_WORDS, THREADS_HEAD, TOP_THREADS, VERSION, file_size,
                        pid_namespace, process_start, stats_dir)
from .statsfile import StatsFile  # noqa: F401 (re-exported)

MAX_CPUS = 8192                           # bounds the size of a file `top` accepts


# ---- the reader's side -------------------------------------------------------

def _pid_alive(pid):
    if pid <= 0:                          # kill() would test a process group, or every process
        return False
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


class WriterEnded(NotAStatsFile):
    """A stats file whose writer has provably ended (a crash, a kill -9):
    find() deletes it when it is this user's and still the file judged
    (ident: its (st_dev, st_ino))."""

    def __init__(self, message, ident):
        super().__init__(message)
        self.ident = ident


def _host_cpus():
    """The most workers a runtime of this host can have: the highest
    possible CPU id + 1 (os.cpu_count() where that cannot be read)."""
    n = os.cpu_count() or 1
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            ids = f.read().strip()
        n = max(n, max(int(part.split("-")[-1]) for part in ids.split(",")) + 1)
    except (OSError, ValueError):
        pass
    return min(n, MAX_CPUS)


def _writer_ended(pid, start, ns):
    """Why the process that wrote a stats file has provably ended, or None
    when it may still run.  pid: the pid in the file's name; start, ns: the
    writer's start time and pid namespace from the header (0: unknown).
    NotAStatsFile for a file from another pid namespace: its pid names
    another process here, so nothing can be told from this one."""
    own_ns = pid_namespace()
    if ns and own_ns and ns != own_ns:
        raise NotAStatsFile(f"it was written in another pid namespace (inode {ns}; this "
                            f"one's is {own_ns}), where pid {pid} is not the process of "
                            "that pid here: it is neither read nor deleted")
    if not _pid_alive(pid):
        return f"process {pid} no longer exists"
    now = process_start(pid)
    if start and now is not None and now != start:
        return (f"process {pid} is another process than its writer (the pid was reused: "
                f"it started at tick {now}, the writer at tick {start})")
    return None


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
    blocks and a symlink is never followed), no other user can write it,
    its size is the one its 64-byte header implies (at most as many slots
    as this host has CPUs), its writer may still run (_writer_ended), and
    it belongs to the user that process `file_pid` runs as.  Raises
    NotAStatsFile (WriterEnded when its writer has ended), or
    FileNotFoundError when it is gone."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotAStatsFile(f"it is {_kind(st.st_mode)}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:                  # another user's 0600 file, or replaced by a symlink
        raise NotAStatsFile(f"it cannot be opened ({e.strerror}): it belongs to uid "
                            f"{st.st_uid}, and osvrt top runs as uid {os.geteuid()}") from None
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
            raise NotAStatsFile("it was replaced while being opened")
        if fst.st_mode & 0o022:
            raise NotAStatsFile(f"other users may write it (mode {stat.S_IMODE(fst.st_mode):o})")
        limit = file_size(MAX_CPUS)
        if not HEADER.size <= fst.st_size <= limit:
            raise NotAStatsFile(f"it has {fst.st_size} bytes; a stats file has "
                                f"{HEADER.size + SLOT.size}..{limit}")
        head = os.pread(fd, HEADER.size, 0)          # the header only, first
        if len(head) < HEADER.size:
            raise NotAStatsFile("it was cut short while being read")
        magic, version, ncpu, pid, slot_size, _, toff, start, ns = HEADER.unpack(head)
        if magic == MAGIC and version == 1 and file_pid > 0 and not _pid_alive(file_pid):
            # An earlier osvrt's file (no start time in it), its pid gone:
            # stale by the rule of its own version.
            raise WriterEnded(f"its writer has ended: process {file_pid} no longer exists",
                              (fst.st_dev, fst.st_ino))
        if magic != MAGIC or version != VERSION or slot_size != SLOT.size:
            raise NotAStatsFile("its header is not an osvrt stats header (version "
                                f"{VERSION})")
        if ncpu > _host_cpus():
            # One slot costs about a millisecond to read: a made-up count
            # would make every refresh take seconds.
            raise NotAStatsFile(f"its header claims {ncpu} CPUs; this host has "
                                f"{_host_cpus()}")
        if not 1 <= ncpu <= MAX_CPUS or toff != HEADER.size + ncpu * SLOT.size:
            raise NotAStatsFile(f"its header is inconsistent (ncpu {ncpu})")
        if fst.st_size != file_size(ncpu):
            raise NotAStatsFile(f"it has {fst.st_size} bytes; {ncpu} CPU(s) make "
                                f"{file_size(ncpu)}")
        ended = _writer_ended(file_pid if file_pid > 0 else pid, start, ns)
        if ended is not None:
            raise WriterEnded(f"its writer has ended: {ended}", (fst.st_dev, fst.st_ino))
        # After the writer's check: a file whose pid now runs as another
        # user is still recognized as stale, and deleted.
        owner = _owner_of(file_pid)
        if owner is None:
            owner = os.geteuid()
        if fst.st_uid != owner:
            raise NotAStatsFile(f"it belongs to uid {fst.st_uid}, but process {file_pid} "
                                f"runs as uid {owner}")
        mm = mmap.mmap(fd, file_size(ncpu), prot=mmap.PROT_READ)
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
    words = shared_words.Words(mm, toff, THREAD_WORDS)
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
    NotAStatsFile when it is not one `top` may read (see _open_checked),
    WriterEnded when the process that wrote it has ended;
    file_pid: the pid in its name (parsed from path when None)."""
    if file_pid is None:
        m = re.fullmatch(r"osvrt-(\d+)-(\d+)\.stats", os.path.basename(path))
        file_pid = int(m.group(1)) if m else -1
    try:
        mm, head = _open_checked(path, file_pid)
    except FileNotFoundError:
        return None
    try:
        alive = shared_words.Words(mm, ALIVE_OFFSET, 1)
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


def _remove_stale(path, ident):
    """Delete the file of a writer that has ended: only a regular file of
    this user's (never what another user planted, never a FIFO or a
    device), and only the file that was judged (ident: (st_dev, st_ino)),
    not one made at its path since."""
    try:
        st = os.lstat(path)
        if (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
                and (st.st_dev, st.st_ino) == ident):
            os.unlink(path)
    except OSError:
        pass


def find(pid=None, clean=True, problems=None):
    """Stats files of running osvrt programs (of `pid` if given), as
    read_file() snapshots; files whose writer has provably ended (its pid
    is gone, or is another process's: the header's start time) are deleted
    when clean is true (a crash or a kill -9 leaves them).  A file that
    `top` does not read (NotAStatsFile: one from another pid namespace
    too) is left out; with `problems` (a dict), problems[path] = the
    reason."""
    found = []
    dirs = {stats_dir(), tempfile.gettempdir()}
    for d in sorted(dirs):
        pattern = f"osvrt-{pid}-*.stats" if pid is not None else "osvrt-*-*.stats"
        for path in sorted(glob.glob(os.path.join(d, pattern))):
            m = re.fullmatch(r"osvrt-(\d+)-(\d+)\.stats", os.path.basename(path))
            if not m:
                continue
            file_pid = int(m.group(1))
            try:
                snap = read_file(path, file_pid)
            except WriterEnded as e:
                if clean:
                    _remove_stale(path, e.ident)
                continue
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
    try:
        answer = input("PID: ").strip()
    except EOFError:                      # Ctrl-D at the prompt
        print()
        raise ValueError(f"no PID given (end of input); give one of {pids}") from None
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
    if not (0 < args.interval <= 86400):            # nan, inf and a huge sleep too
        raise ValueError(f"--interval must be > 0 and at most 86400 seconds, not {args.interval}")
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
