"""The stats file of a Runtime: the writer's side (StatsFile, made by
Runtime.start(), closed by Runtime.stop()) and the layout that the reader,
`python -m osvrt top` (top.py), shares.  Kept apart from top.py so that
the runtime never imports the viewer.

The stats file
--------------
Each started Runtime (unless Runtime(stats_file=False)) creates
/dev/shm/osvrt-<pid>-<n>.stats (n counts the runtimes of the process; the
directory is tempfile.gettempdir() where /dev/shm is missing), maps it, and
points every worker's counters at its slot: the engine then updates them in
place (relaxed stores by the owning worker; csrc/core/worker_stats.h).  stop()
points them back, marks the file dead and deletes it.  A file whose writer
has ended (a crashed process: its pid is gone, or now another process's,
told by the start time in the header) is ignored and deleted by `top`, and
by the next StatsFile of a process that got its pid; one written in another
pid namespace is never deleted.

Layout (native byte order; all fields naturally aligned):

  offset 0     struct osvrt_stats_header, 64 bytes (csrc/core/worker_stats.h):
                 u64 magic 0x5453545256534f00, u32 version 2, u32 ncpu,
                 u64 pid, u64 slot_size 128, u64 alive (1 running, 0 stopped),
                 then osvrt's use of the three reserved words:
                 u64 threads_offset (the offset of the threads area below),
                 u64 start_time (the writer's start time: field 22 of
                 /proc/<pid>/stat, clock ticks after boot), u64 pid_ns (the
                 inode of the writer's /proc/self/ns/pid); each 0 when it
                 could not be read.  With these `top` tells the writer from
                 a later process that got its pid, and a file written in
                 another pid namespace (a container sharing /dev/shm), whose
                 pid means another process here.
  offset 64    ncpu x struct osvrt_worker_stats, 128 bytes each:
                 u64 switches, wakes_local, wakes_remote, migrations_in,
                 migrations_out, stalls, spawned, idle_ns, runq_len,
                 current_id (0 when idle), cpu (host CPU id),
                 idle_since_ns (CLOCK_MONOTONIC ns when the idle period in
                 progress began, 0 when not idle: idle_ns counts a period
                 only once it ends), reserved[4]
  threads_offset: the busiest threads, written by the runtime's publisher
               about twice a second (osvrt/observe/introspect.py), under the
               seqlock of shared_words.py (every word stored and loaded with
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
import itertools
import mmap
import os
import stat
import struct
import tempfile
import time

from .._core import ffi, lib
from . import shared_words

# The layout is csrc/core/worker_stats.h's: the constants come from there, and
# the struct formats below are checked against it (check_layout) at import.
MAGIC = lib.OSVRT_STATS_MAGIC
# 2 since the header records the writer's start time and pid namespace; a
# version 1 file has neither: `top` leaves it out.
VERSION = lib.OSVRT_STATS_VERSION
HEADER = struct.Struct("=QIIQQQQQQ")       # 64 bytes
SLOT = struct.Struct("=16Q")               # 128 bytes
SLOT_FIELDS = ("switches", "wakes_local", "wakes_remote", "migrations_in", "migrations_out",
               "stalls", "spawned", "idle_ns", "runq_len", "current_id", "cpu")
THREADS_HEAD = struct.Struct("=QQdQ")      # 32 bytes
THREAD = struct.Struct("=QIId32s")          # 56 bytes
TOP_THREADS = 10
STATES = ("unstarted", "queued", "running", "waiting", "terminated")
_STATE_CODE = {s: i for i, s in enumerate(STATES)}
ALIVE_OFFSET = 32                         # offset of header.alive
THREAD_WORDS = (THREADS_HEAD.size + TOP_THREADS * THREAD.size) // 8   # seq + 73 data words
SLOT_WORDS = len(SLOT_FIELDS) + 1         # the named fields, then idle_since_ns
_HEADER_FIELDS = (("magic", 0), ("version", 8), ("ncpu", 12), ("pid", 16), ("slot_size", 24),
                  ("threads_offset", 40), ("start_time", 48), ("pid_ns", 56))


def check_layout(header=HEADER, slot=SLOT, fields=SLOT_FIELDS):
    """ImportError unless the struct formats match the C layout that cffi
    read from worker_stats.h (sizes, every field's offset)."""
    wrong = []
    if header.size != ffi.sizeof("struct osvrt_stats_header"):
        wrong.append(f"header {header.size} != {ffi.sizeof('struct osvrt_stats_header')} bytes")
    if slot.size != ffi.sizeof("struct osvrt_worker_stats"):
        wrong.append(f"slot {slot.size} != {ffi.sizeof('struct osvrt_worker_stats')} bytes")
    for name, off in _HEADER_FIELDS:
        if ffi.offsetof("struct osvrt_stats_header", name) != off:
            wrong.append(f"header.{name} not at {off}")
    c_fields = [ffi.string(lib.osvrt_stats_names[i]).decode() for i in range(11)]
    if list(fields) != c_fields:
        wrong.append(f"slot fields {list(fields)} != {c_fields}")
    for i, name in enumerate(c_fields):
        if lib.osvrt_stats_offsets[i] != 8 * i:
            wrong.append(f"slot.{name} at {lib.osvrt_stats_offsets[i]}, not {8 * i}")
    if lib.osvrt_stats_offsets[11] != ALIVE_OFFSET:
        wrong.append(f"header.alive not at {ALIVE_OFFSET}")
    if wrong:
        raise ImportError("osvrt: the stats file layout (observe/statsfile.py) disagrees with "
                          "csrc/core/worker_stats.h: " + "; ".join(wrong))


check_layout()
_counter = itertools.count()
_open_paths: set[str] = set()                      # this process's live stats files (atexit)


def process_start(pid="self"):
    """Process `pid`'s start time (field 22 of /proc/<pid>/stat: clock ticks
    after boot), or None when it cannot be read (no such process, no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        # Field 2, the command name, may hold spaces and ')': count after the last ')'.
        return int(data[data.rindex(b")") + 1:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_namespace():
    """The inode of this process's pid namespace, or None when it cannot be told."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def stats_dir():
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def file_size(ncpu):
    """The size of the stats file of an ncpu-worker runtime."""
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


def _create(d):
    """(path, fd) of a new stats file of this process's in directory d."""
    while True:
        path = os.path.join(d, f"osvrt-{os.getpid()}-{next(_counter)}.stats")
        try:
            return path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # An earlier process with our pid left it (a crash, a kill -9):
            # removed when that is certain, and the next name is taken all
            # the same (a `top` that judged the old file may be about to
            # delete whatever is at its path).
            if _left_by_an_ended_process(path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


def _left_by_an_ended_process(path):
    """True when `path` is our own regular stats file that names our pid,
    our pid namespace and another start time: its writer has ended, as this
    pid is ours now.  A file that cannot be read, or whose writer cannot be
    told (another namespace, a word left 0), is not."""
    ours = (os.getpid(), process_start(), pid_namespace())
    if None in ours:
        return False
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            head = os.pread(fd, HEADER.size, 0)
        finally:
            os.close(fd)
    except OSError:
        return False
    if len(head) < HEADER.size:
        return False
    magic, version, _, pid, _, _, _, start, ns = HEADER.unpack(head)
    return (magic == MAGIC and version == VERSION and pid == ours[0] and ns == ours[2]
            and start not in (0, ours[1]))


class StatsFile:
    """The writer's side: made by Runtime.start(), closed by Runtime.stop()."""

    def __init__(self, workers):
        import ctypes
        shared_words.load_atomics()       # first: a missing package leaves no file behind
        ncpu = len(workers)
        self.threads_off = HEADER.size + ncpu * SLOT.size
        path, fd = _create(stats_dir())
        try:
            os.ftruncate(fd, file_size(ncpu))
            # Blocks given now: ftruncate leaves a sparse file, and on a full
            # tmpfs the first store into the mapping would be a SIGBUS that
            # ends the program; this is an OSError (ENOSPC) the caller logs.
            os.posix_fallocate(fd, 0, file_size(ncpu))
            self._mm = mmap.mmap(fd, file_size(ncpu))
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
            w.bind_stats(base + HEADER.size + i * SLOT.size)   # values carry over
            self._bound.append(w)
            # the engine does not write `cpu`: the copy above overwrote it
            struct.pack_into("=Q", mm, HEADER.size + i * SLOT.size + 10 * 8, w.cpu_id)
        HEADER.pack_into(mm, 0, MAGIC, VERSION, ncpu, os.getpid(), SLOT.size, 0,
                         self.threads_off, process_start() or 0, pid_namespace() or 0)
        # alive = 1 last, with release: a reader that loads it with acquire
        # sees the header and the slots above (shared_words.py).
        alive = shared_words.Words(mm, ALIVE_OFFSET, 1)
        alive.store(0, 1, "release")
        alive.close()
        self._threads_lock = None            # the seqlock's writer, made at the first publish

    def publish_threads(self, rows):
        """rows: (id, name, host cpu, decayed runtime, state) of the busiest
        threads.  Written under the seqlock of shared_words.py (atomic
        stores with release order), so that `top` in another process never
        takes a half-written table, on arm64 too."""
        mm = self._mm
        if mm is None:
            return
        if self._threads_lock is None:        # made here, in the publisher's thread:
            self._threads_words = shared_words.Words(mm, self.threads_off, THREAD_WORDS)
            self._threads_lock = shared_words.SeqlockWriter(self._threads_words)
        area = bytearray(THREAD_WORDS * 8)
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

    def forget_in_child(self):
        """In a child forked while this file was in use: point the workers'
        counters back at their own memory, so that nothing of the child's is
        counted in the parent's file.  The mapping stays (a publisher's views
        may hold it) and the file is the parent's: neither is touched."""
        for w in self._bound:
            w.bind_stats(0)
        self._bound = []

    @property
    def closed(self):
        """True once close() has unmapped the file."""
        return self._mm is None

    def close(self, workers_exited=True):
        """Unbind the workers (only once their loops have ended), mark the
        file dead, delete it, and unmap (kept mapped when a worker is stuck:
        it may still write into it; the runtime calls close() again once the
        last stuck worker's loop has ended)."""
        mm = self._mm
        if mm is None:
            return
        alive = shared_words.Words(mm, ALIVE_OFFSET, 1)
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
            w.bind_stats(0)
        self._bound = []
        del self._anchor
        if self._threads_lock is not None:     # the publisher has stopped (Runtime.stop)
            self._threads_lock = None
            self._threads_words.close()
        self._mm = None
        mm.close()
