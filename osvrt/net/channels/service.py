"""The classifier of one Runtime: the C object (csrc/net/classifier.h), its
thread, its flows and its statistics.

One per Runtime, made on first use (udp_bind, or configure() beforehand with
options) and attached to it as the service "net" (Runtime.attach_service):
its stop() (close every endpoint, then stop and join the classifier thread,
if any, and detach the ring from the workers, if they drain it: both, after
a hand-over) runs before the workers are joined, its
stats() is rt.stats()["net"].  Who drains the ring: drainer() below.
The C object itself is freed when this object is collected, never while an
endpoint (which holds a reference) may still read its flows.
"""
import errno
import logging
import os
import threading
import weakref

from ... import _fork
from ..._core import ffi, lib
from ...checks import check_int

log = logging.getLogger("osvrt")

_make_lock = threading.Lock()     # one classifier per runtime, even when two CPUs race
_fork.new_lock_in_child(globals(), "_make_lock")

DROP_REASONS = ("malformed", "no_flow", "too_big", "truncated", "channel_full", "rule", "ring")

AUTO = "auto"


def placement(rt, cpu=AUTO, spin_us=50, allowed=None):
    """Where the classifier thread runs and whether it polls: (cpu, cpu_mask,
    spin_ns, why).  The rule (measured on 1 and 2 CPUs, see the README):

    - cpu="auto" (the default) and the process may use CPUs that run no
      worker of rt: the classifier is confined to those spare CPUs and polls
      an adaptive window (at most spin_us) after each burst, yielding the CPU
      between looks, so a thread runnable there (a client) always goes first;
    - cpu="auto" and every usable CPU runs a worker (a one-CPU host, or a
      runtime on every CPU): it is not pinned and never polls (spin 0): it
      sleeps in poll() and is woken by the kernel's receive path;
    - cpu=N: pinned to CPU N; it polls only if N runs no worker of rt.
    spin_us=0 turns polling off everywhere."""
    # The main thread's CPUs: this may run in a worker's helper thread, pinned.
    allowed = sorted(allowed if allowed is not None else os.sched_getaffinity(os.getpid()))
    workers = set(getattr(rt, "cpus", None) or ())
    spin_ns = int(spin_us * 1000)
    if cpu is None or cpu == AUTO:
        spare = [c for c in allowed if c not in workers and c < 64]
        if spare and workers:
            mask = sum(1 << c for c in spare)
            return -1, mask, spin_ns, f"spare CPUs {spare}: pinned there, adaptive polling"
        return -1, 0, 0, "no CPU without a worker: unpinned, no polling"
    if cpu in workers:
        return cpu, 0, 0, f"CPU {cpu} runs a worker: no polling"
    return cpu, 0, spin_ns, f"CPU {cpu}: adaptive polling"
DRAINS = ("workers", "thread")


def drainer(rt, drain=AUTO, cpu=AUTO, allowed=None):
    """Who reads the classifier's packet ring: "workers" or "thread".

    - "workers": every worker of rt drains the ring itself, in its loop and
      its idle poll, and sleeps on it in its epoll_wait (csrc/net/rx_workers.h):
      a datagram for a green thread of the draining CPU reaches it with no
      thread wake-up at all, and one asleep costs one wake (the worker's);
    - "thread": the classifier's own OS thread (placement() says where).
    drain="auto" (the default) picks the thread only where it gets a CPU of
    its own (cpu="auto" with a spare CPU, or cpu=N on a CPU without a worker),
    where it polls and the workers' idle stays as short as before, and there
    only while its polling pays: when, over 64 bursts, requests came
    pipelined, most bursts had to wake it, and another thread kept its CPU
    busy, it hands the ring to the workers (csrc/net/classifier.c,
    hand_over; Net.drain then says "workers", and the workers' frame counts
    start from the hand-over), and the workers give it back once 64 bursts
    average under 5/4 of a frame: requests one at a time again, which the
    thread's polling serves fastest (csrc/net/rx_workers.h, the hand-back).
    With a worker on every CPU (what osvrt.run gives) the
    workers drain, which removes the classifier thread's wake-up from every
    request (measured: README, "Two placements")."""
    if drain not in (AUTO,) + DRAINS:
        raise ValueError(f"drain must be 'auto', 'workers' or 'thread', not {drain!r}")
    if drain != AUTO:
        return drain
    pcpu, mask, _spin, _why = placement(rt, cpu, 1, allowed)
    own_cpu = mask != 0 or (pcpu >= 0 and pcpu not in set(getattr(rt, "cpus", None) or ()))
    return "thread" if own_cpu else "workers"


MALFORMED_REASONS = tuple(
    ffi.string(lib.osvrt_pkt_verdict_name(v)).decode()
    for v in range(lib.OSVRT_PKT_NVERDICTS))


def _open_error(err, interface):
    if err in (errno.EPERM, errno.EACCES):
        return PermissionError(
            err, "osvrt.net needs CAP_NET_RAW to read packets from an AF_PACKET socket "
                 f"on {interface!r}: run as root, or grant it (e.g. `setcap cap_net_raw+ep` "
                 "on the Python binary)")
    if err == errno.ENODEV:
        return OSError(err, f"osvrt.net: no network interface named {interface!r}")
    return OSError(err, f"osvrt.net: cannot open the packet ring on {interface!r}: "
                        f"{os.strerror(err)}")


class Net:
    """The classifier of a runtime.  Made by net_of() / configure()."""

    def __init__(self, rt, *, interface="lo", ring_frames=8192, frame_size=2048, spin_us=50,
                 cpu=AUTO, burst=64, buckets=1024, prefilter=True, spin_yield=True, drain=AUTO,
                 small_frame_size=512):
        if not isinstance(interface, str) or not interface or len(interface) >= 16:
            raise ValueError(f"interface must be a network interface name, not {interface!r}")
        check_int("ring_frames", ring_frames, 8, 1 << 20)
        check_int("frame_size", frame_size, 256, 16 << 20)
        check_int("small_frame_size", small_frame_size, 256, 16 << 20)
        check_int("burst", burst, 1, 4096)
        check_int("buckets", buckets, 1, 1 << 24)
        if isinstance(spin_us, bool) or not isinstance(spin_us, (int, float)) or not 0 <= spin_us <= 1e6:
            raise ValueError(f"spin_us must be a number of microseconds in 0..1e6, not {spin_us!r}")
        if cpu is not None and cpu != AUTO:
            check_int("cpu", cpu, 0, (os.cpu_count() or 1) - 1)
        if not isinstance(prefilter, bool):
            raise TypeError(f"prefilter must be True or False, not {prefilter!r}")
        if not isinstance(spin_yield, bool):
            raise TypeError(f"spin_yield must be True or False, not {spin_yield!r}")
        self._drain = drainer(rt, drain, cpu)            # ValueError for a bad value
        if rt.core is None:
            raise RuntimeError("osvrt.net: the runtime is not started (rt.start() first)")
        self.interface = interface
        self._lock = threading.Lock()         # endpoints set, closing, stopping
        self._endpoints = weakref.WeakSet()
        self._keep = []                       # rules' code: alive until the thread is joined
        self._stopped = False
        self._crt = rt.core                   # for stats(); the C classifier holds its own reference
        cfg = ffi.new("struct osvrt_net_config *")
        name = ffi.new("char[]", interface.encode())
        cfg.ifname = name
        cfg.ring_frames = ring_frames
        cfg.frame_size = frame_size
        cfg.small_frame_size = small_frame_size
        cfg.buckets = buckets
        cfg.burst = burst
        pcpu, mask, spin_ns, self.placement = placement(rt, cpu, spin_us)
        cfg.spin_ns = spin_ns
        cfg.cpu = pcpu
        cfg.cpu_mask = mask
        cfg.spin_yield = spin_yield
        cfg.prefilter = prefilter
        # "auto" chose the thread: it may hand the ring over (drainer())
        cfg.handover = drain == AUTO and self._drain == "thread"
        self.cpu, self.cpu_mask, self.spin_us = pcpu, mask, spin_ns / 1000
        err = ffi.new("int *")
        cnet = lib.osvrt_net_new(rt.core, cfg, err)
        if cnet == ffi.NULL:
            raise _open_error(err[0], interface)
        self._cnet = ffi.gc(cnet, lib.osvrt_net_free)
        self._ncpu = len(rt.cpus)
        if self._drain == "workers":
            self.placement = "no thread: every worker drains the ring in its loop and idle"
            self.cpu, self.cpu_mask, self.spin_us = -1, 0, 0
            e = lib.osvrt_net_start_workers(cnet)
            what = "attach the packet ring to the workers"
        else:
            e = lib.osvrt_net_start(cnet)
            what = "start the classifier thread"
        if e:
            raise OSError(e, f"osvrt.net: cannot {what}: {os.strerror(e)}")
        self._cstats = ffi.new("struct osvrt_net_stats *")
        self._wstats = ffi.new("struct osvrt_net_workers_stats *")
        self._rstats = ffi.new("struct osvrt_net_ring_stats[]", lib.OSVRT_NET_MAX_RINGS)

    @property
    def drain(self):
        """Who reads the ring now: "workers" or "thread" (drainer(); an
        "auto" thread hands it to the workers under pipelined requests, and
        takes it back when they come one at a time again)."""
        if self._drain == "thread" and lib.osvrt_net_handed_over(self._cnet):
            return "workers"
        return self._drain

    def __repr__(self):
        return (f"<osvrt.net classifier on {self.interface!r} "
                f"{'stopped' if self._stopped else 'running'} endpoints={len(self._endpoints)}>")

    @property
    def cnet(self):
        """The C classifier (a cffi `struct osvrt_net *`): flows live in it."""
        return self._cnet

    @property
    def core(self):
        """The C runtime the classifier wakes green threads on (it outlives
        the classifier's thread)."""
        return self._crt

    def add_endpoint(self, what, open_flow, make_endpoint, keep=None):
        """One step under the service's lock, so that stop() closes every
        endpoint there is: flow = open_flow(cnet) adds a flow (it raises if it
        cannot), keep (a rule's code) then stays alive until the classifier is
        released, and make_endpoint(flow) is the endpoint stop() will close.
        RuntimeError, naming `what`, once the classifier is stopped."""
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{what}: the runtime's classifier is stopped")
            flow = open_flow(self._cnet)
            if keep is not None:
                self._keep.append(keep)       # its code outlives any call in flight
            try:
                ep = make_endpoint(flow)
            except BaseException:
                # No endpoint will ever remove it: the port would stay taken
                # ("already has a flow") for the classifier's life.  (A second
                # remove, by an endpoint's finalizer, finds nothing.)
                lib.osvrt_net_flow_remove(self._cnet, flow)
                raise
            self._endpoints.add(ep)
            return ep

    def remove_endpoint(self, ep, close):
        """Forget ep and run close() under the service's lock (stop() and
        stats() wait for it).  close() returns False if ep was closed before;
        so does this."""
        with self._lock:
            if not close():
                return False
            self._endpoints.discard(ep)
            return True

    def stop(self):
        """Close every endpoint (their ports and flows), then stop and join
        the classifier thread, detach the rings from the workers, and give
        back the packet sockets and rings (20 MiB by default), so a Runtime
        kept after stop() holds none of them.
        Idempotent.  The runtime calls it on stop."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            endpoints = list(self._endpoints)
        for ep in endpoints:
            try:
                ep.close()
            except Exception:                 # never leave the thread running
                log.exception("osvrt.net: closing %r at stop failed", ep)
        with self._lock:                      # not while stats() reads the socket
            lib.osvrt_net_release(self._cnet)

    def stats(self):
        """Counters of the classifier: frames and packets seen, packets put
        into channels, drops by reason (malformed ones by kind), wake-ups
        sent, and each open endpoint's own stats()."""
        s, ws = self._cstats, self._wstats
        with self._lock:                      # see stop(): the socket may be going away
            lib.osvrt_net_get_stats(self._cnet, s)
            lib.osvrt_net_workers_get_stats(self._cnet, ws)
            rings = [{"frame_size": r.frame_size, "frames": r.frames, "max_frame": r.max_frame,
                      "taken": r.taken}
                     for r in self._rstats[0:lib.osvrt_net_get_ring_stats(self._cnet, self._rstats)]]
            drain = self.drain
            by_worker = ([lib.osvrt_rt_rx_frames(self._crt, i) for i in range(self._ncpu)]
                         if drain == "workers" else [])
            handed_over = drain != self._drain
        return {
            "interface": self.interface,
            "running": not self._stopped,
            "frames": s.frames,
            "packets": s.packets,
            "received": s.received,
            "ignored": s.ignored,
            "dropped": {
                "malformed": s.dropped_malformed,
                "no_flow": s.dropped_no_flow,
                "too_big": s.dropped_too_big,
                "truncated": s.dropped_truncated,
                "channel_full": s.dropped_channel_full,
                "rule": s.dropped_rule,
                "ring": s.dropped_ring,
            },
            "malformed": {MALFORMED_REASONS[v]: s.malformed[v]
                          for v in range(lib.OSVRT_PKT_NVERDICTS) if v >= 3},
            "wakes_sent": s.wakes,
            "bursts": s.bursts,
            "sleeps": s.sleeps,
            "gso_packets": s.gso_packets,
            "copied": s.copied,
            "rings": rings,
            "spin_hits": s.spin_hits,
            "link_errors": s.link_errors,
            "last_link_errno": s.last_link_errno,
            "placement": self.placement + _drain_story(handed_over, ws.handbacks),
            "drain": drain,
            "drain_handed_over": handed_over,
            "drain_handovers": ws.handovers,
            "drain_handbacks": ws.handbacks,
            "frames_by_worker": by_worker,
            "drain_contended": ws.contended,
            "drain_rehomed": ws.rehomed,
            # the thread's CPU(s) and polling: none once it handed over
            "cpu": None if handed_over else self.cpu if self.cpu >= 0 else
            [c for c in range(64) if self.cpu_mask >> c & 1] or None,
            "spin_us": 0 if handed_over else self.spin_us,
            "endpoints": [ep.stats() for ep in list(self._endpoints)],
        }


def _drain_story(handed_over, handbacks):
    """What the auto thread did with the ring, for stats()["placement"]."""
    if handed_over:
        return "; handed the ring to the workers (its polling stopped paying: pipelined requests)"
    if handbacks:
        return (f"; took the ring back from the workers {handbacks} time(s) (requests came one "
                "at a time again)")
    return ""


def _runtime_of(rt):
    if rt is not None:
        return rt
    return _current_runtime()


def _current_runtime():
    from ... import kernel
    w = kernel.current_worker()
    if w is None:
        raise kernel.outside()
    return w.rt


def net_of(rt=None, **options):
    """The classifier of `rt` (default: the current green thread's runtime),
    made and started if it does not exist yet (with `options`, see
    configure())."""
    rt = _runtime_of(rt)
    net = rt.service("net")
    if net is not None and not options:
        return net
    with _make_lock:
        net = rt.service("net")
        if net is None:
            if rt.stopping or rt.core is None:
                raise RuntimeError(f"osvrt.net: {rt!r} is not running")
            net = Net(rt, **options)
            try:
                rt.attach_service("net", net)
            except RuntimeError:
                net.stop()                 # its services already stopped (stop is idempotent)
                raise RuntimeError(f"osvrt.net: {rt!r} is stopping") from None
            if rt.stopping:
                # stop() began while we made it: its services may have
                # stopped already, so stop it here (stop is idempotent).
                net.stop()
                raise RuntimeError(f"osvrt.net: {rt!r} is stopping")
        elif options:
            raise RuntimeError("osvrt.net.configure(): this runtime's classifier is already "
                               "running; configure it before the first udp_bind")
    return net


async def net_for_green_thread():
    """net_of() for the current green thread's runtime, without holding its
    CPU while the classifier is made: mapping the packet ring takes the
    kernel milliseconds (100-180 ms on a busy machine), so it is made on the
    runtime's offload pool (osvrt.to_thread) while this green thread waits and
    the worker runs others.  A cancel leaves the setup to finish on its own:
    net_of() stores the classifier on the runtime, so nothing is lost."""
    from ...offload import to_thread
    rt = _current_runtime()
    net = rt.service("net")
    if net is not None:
        return net
    return await to_thread(net_of, rt)


def configure(rt=None, *, interface="lo", ring_frames=8192, frame_size=2048, spin_us=50,
              cpu=AUTO, burst=64, buckets=1024, prefilter=True, spin_yield=True, drain=AUTO,
              small_frame_size=512):
    """Start the classifier of `rt` with these options, before its first
    udp_bind (RuntimeError after).  From a green thread, or from any thread
    with rt given.

    interface:   the interface to read (default "lo")
    ring_frames: frames in each AF_PACKET ring (default 8192)
    frame_size:  bytes per ring frame (default 2048: an MTU-sized datagram;
                 larger ones are read whole from the socket and counted as
                 "copied", or, if the kernel could not queue a copy, dropped
                 as "truncated")
    small_frame_size: bytes per frame of a second ring that takes the frames
                 that fit it (default 512: up to 394 bytes of UDP payload),
                 so small-packet traffic walks a quarter of the memory; the
                 two rings' frames are read in arrival order.  At least
                 frame_size: one ring
    spin_us:     the longest window the classifier polls the ring after a
                 burst before it sleeps in poll(); the window adapts to the
                 gaps between recent bursts, and placement may turn it off
                 (0: never polls)
    cpu:         "auto" (default): CPUs without a worker if there are any
                 (polling there), else unpinned without polling; or a CPU
                 id (polling only if no worker runs there); see placement()
    spin_yield:  yield the CPU between polls (default True), so a thread
                 runnable on the classifier's CPU always goes first
    burst:       frames handled per burst (one wake per flow per burst)
    buckets:     flow-table buckets
    prefilter:   keep UDP/TCP packets to ports without a flow out of the ring
                 in the kernel (a BPF filter: no copy, no wake-up for other
                 traffic); False lets every frame in (all are counted)
    drain:       who reads the ring: "auto" (default: the workers when every
                 CPU runs one, the classifier thread when it gets a CPU of
                 its own), "workers" or "thread"; see drainer()
    """
    return net_of(rt, interface=interface, ring_frames=ring_frames, frame_size=frame_size,
                  spin_us=spin_us, cpu=cpu, burst=burst, buckets=buckets, prefilter=prefilter,
                  spin_yield=spin_yield, drain=drain, small_frame_size=small_frame_size)
