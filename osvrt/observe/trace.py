"""Scheduler traces: what each CPU ran, when, and what crossed between CPUs,
as a Chrome trace-event JSON file that ui.perfetto.dev (or chrome://tracing,
or Perfetto's trace_processor) opens.

    osvrt.run(main, trace="sched.json")        # or Runtime(trace="sched.json")

While a runtime records, each worker appends fixed-size events to a C buffer
of `trace_events` entries (osvrt/_engine/worker.c, struct trace_event): the
switch path pays one store of 40 bytes.  A full buffer drops further events
and counts them (Worker.trace_lost; the file's otherData.lost_events).  At
stop() the buffers are taken and written here.

The file holds, for a process:

* one track per CPU (tid = the worker's index in rt.cpus, named
  "CPU <host cpu id>");
* a complete slice ("ph": "X") per green-thread run, named after the thread
  (see "Names" below), args {"id": thread id}; a run ends at the CPU's next
  switch or idle period;
* "idle" slices: the CPU waited in the core's idle (polling, then asleep);
  the slice also covers the wake-up path up to the next switch, so that the
  flow of the wake-up that ended it lands inside it;
* flows: an arrow ("ph": "s" on the poster's track, "ph": "f", "bp": "e" on
  the receiver's, same "id") for each hand-over of a thread from one CPU to
  another: "wake" (a cross-CPU wake-up, or a new thread started on another
  CPU) and "migrate" (the balancer, an idle pull or pin() moved it; an
  instant event "migrate" marks the move too).  Threads submitted from other
  OS threads arrive with no arrow;
* a counter track per CPU, "run queue cpu<host id>": queued threads after
  each switch and each arrival.

Timestamps are microseconds from the first event.

Names: the engine records thread ids only.  A run is named after its thread
when the thread's name is known: unnamed threads are "green-<id>" (their
name anyway); threads made by Runtime.submit(name=...) and the runtime's own
threads are registered as they are made; threads named at osvrt.spawn(...,
name=...) are picked up by a sampler that looks at the live threads about
twice a second, and once more when stop() begins.  A named thread spawned
and ended between two samples shows as "green-<id>".
"""
import json
import os
import struct

from . import private_file
from .printable import printable

EVENT = struct.Struct("=dIIQQQ")       # struct trace_event (engine.h), native layout
SWITCH, POST, ARRIVE, MIGRATE, IDLE = 1, 2, 3, 4, 5
DEFAULT_EVENTS = 1_000_000
MAX_EVENTS = 1 << 28                   # 10 GiB per CPU: a typo, not a trace


def check_path(trace):
    """None, or the path as given (str, bytes or os.PathLike); TypeError otherwise."""
    if trace is None:
        return None
    if isinstance(trace, bool) or not isinstance(trace, (str, bytes, os.PathLike)):
        raise TypeError(f"trace must be a file path (str or os.PathLike) or None, not {trace!r}")
    path = os.fspath(trace)
    if not path:
        raise ValueError("trace: the path is empty")
    return path


def check_events(n):
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"trace_events must be an int, not {n!r}")
    if not 1 <= n <= MAX_EVENTS:
        raise ValueError(f"trace_events must be 1..{MAX_EVENTS} (events per CPU), not {n!r}")
    return n


def check_writable(path):
    """Fail at start(), before any worker runs, when the trace could not be
    written at stop(): the directory must exist and be writable, and what
    is at the path must be nothing or a regular file of this user's
    (private_file.check_target: a symlink, FIFO or device is refused)."""
    p = os.fsdecode(path)
    parent = os.path.dirname(os.path.abspath(p))
    shown = printable(p)
    if not os.path.isdir(parent):
        raise FileNotFoundError(2, f"osvrt: trace={shown}: no such directory", parent)
    private_file.check_target(p, "trace")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(13, f"osvrt: trace={shown}: cannot create files in "
                              f"{printable(parent)}", parent)


def decode(buf):
    """The events in one worker's buffer: (ts, kind, cpu_index, a, b, c) tuples."""
    return list(EVENT.iter_unpack(buf))


def _us(ts, t0):
    return round((ts - t0) * 1e6, 3)


def chrome_events(per_cpu, cpu_ids, names=None, pid=None):
    """Chrome trace events from each worker's decoded events (a list per
    worker index); cpu_ids[i] is worker i's host CPU; names: id -> name."""
    names = names or {}
    pid = os.getpid() if pid is None else pid
    t0 = min((evs[0][0] for evs in per_cpu if evs), default=0.0)
    out = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
            "args": {"name": f"osvrt (pid {pid})"}}]
    for i, cpu in enumerate(cpu_ids):
        out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": i,
                    "args": {"name": f"CPU {cpu}"}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": i,
                    "args": {"sort_index": i}})

    def name_of(tid):
        return names.get(tid) or f"green-{tid}"

    # Flows: pair each ARRIVE with the POST of the same flow key (thread id,
    # hand-over count mod 2**16) just before it; only pairs whose both ends
    # were recorded are drawn (a submit from a foreign OS thread arrives with
    # no post; a full buffer may drop either).  Each pair gets its own id,
    # so keys that wrap around never join two hand-overs.
    ends = {}
    for i, evs in enumerate(per_cpu):
        for k, ev in enumerate(evs):
            if ev[1] == POST or ev[1] == ARRIVE:
                ends.setdefault(ev[4], []).append((ev[0], ev[1] == ARRIVE, i, k))
    flow_of = {}                  # (track, event index) -> pair id
    pair = 0
    for seq in ends.values():
        seq.sort()
        open_post = None
        for ts, arrive, i, k in seq:
            if not arrive:
                open_post = (i, k)
            elif open_post is not None:
                pair += 1
                flow_of[open_post] = flow_of[(i, k)] = pair
                open_post = None
    flow_names = {}               # pair id -> "wake" or "migrate", from its POST

    body = []
    for i, evs in enumerate(per_cpu):
        cpu = cpu_ids[i] if i < len(cpu_ids) else i
        counter = f"run queue cpu{cpu}"
        run = None                # (thread id, start ts) of the open run
        idle = None               # start ts of the open idle slice
        last = t0                 # keeps slices on a track in order
        migrating = {}            # thread id -> destination index (a MIGRATE just seen)

        def close_run(end):
            nonlocal run, last
            if run is not None:
                tid, start = run
                start = max(start, last)
                end = max(end, start)
                body.append({"ph": "X", "name": name_of(tid), "cat": "run", "pid": pid,
                             "tid": i, "ts": _us(start, t0), "dur": _us(end, start) if end > start
                             else 0.0, "args": {"id": tid}})
                last = end
                run = None

        def close_idle(end):
            nonlocal idle, last
            if idle is not None:
                start = max(idle, last)
                end = max(end, start)
                body.append({"ph": "X", "name": "idle", "cat": "idle", "pid": pid, "tid": i,
                             "ts": _us(start, t0), "dur": _us(end, start) if end > start
                             else 0.0})
                last = end
                idle = None

        for k, (ts, kind, _, a, b, c) in enumerate(evs):
            if kind == SWITCH:
                close_run(ts)
                close_idle(ts)
                run = (b, ts)
                body.append({"ph": "C", "name": counter, "pid": pid, "tid": i,
                             "ts": _us(ts, t0), "args": {"threads": c}})
            elif kind == IDLE:
                start = ts - a / 1e9
                close_run(start)
                close_idle(start)
                idle = start
            elif kind == ARRIVE:
                fid = flow_of.get((i, k))
                if fid is not None:
                    body.append({"ph": "f", "bp": "e", "name": "wake", "cat": "flow",
                                 "id": fid, "pid": pid, "tid": i, "ts": _us(ts, t0),
                                 "args": {"id": a}})
                body.append({"ph": "C", "name": counter, "pid": pid, "tid": i,
                             "ts": _us(ts, t0), "args": {"threads": c + 1}})
            elif kind == MIGRATE:
                migrating[a] = c
                dest = cpu_ids[c] if c < len(cpu_ids) else c
                body.append({"ph": "i", "s": "t", "name": "migrate", "cat": "migrate",
                             "pid": pid, "tid": i, "ts": _us(ts, t0),
                             "args": {"id": a, "thread": name_of(a), "to_cpu": dest}})
            elif kind == POST:
                kind_name = "migrate" if migrating.pop(a, None) == c else "wake"
                fid = flow_of.get((i, k))
                if fid is not None:
                    flow_names[fid] = kind_name
                    body.append({"ph": "s", "name": kind_name, "cat": "flow", "id": fid,
                                 "pid": pid, "tid": i, "ts": _us(ts, t0), "args": {"id": a}})
        if evs:
            end = evs[-1][0]
            close_run(end)
            close_idle(end)

    # An "f" may come before its "s" was seen (another track's events are
    # read later): give each the name of its "s" now.
    for ev in body:
        if ev["ph"] == "f":
            ev["name"] = flow_names.get(ev["id"], "wake")
    body.sort(key=lambda e: e["ts"])
    return out + body


def write(path, per_cpu, cpu_ids, names=None, lost=None, pid=None):
    """Write the Chrome trace JSON for the decoded events to `path`."""
    events = chrome_events(per_cpu, cpu_ids, names, pid)
    other = {"clock": "CLOCK_MONOTONIC", "cpus": list(cpu_ids),
             "lost_events": list(lost or [0] * len(cpu_ids))}

    def fill(f):
        f.write('{"displayTimeUnit": "ns", "otherData": ')
        json.dump(other, f)
        f.write(', "traceEvents": [\n')
        for k, ev in enumerate(events):
            if k:
                f.write(",\n")
            f.write(json.dumps(ev, separators=(",", ":")))
        f.write("\n]}\n")

    # A private temporary file renamed into place: mode 0600, nothing at
    # the path is followed or opened, a failed write leaves the path as it
    # was (private_file.py).
    private_file.write(path, "trace", fill)
    return len(events)
