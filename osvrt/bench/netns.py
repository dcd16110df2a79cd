"""Network namespaces for the user-space stack's tests and bench rows: a
stack namespace and a peer namespace joined by a veth pair (or by two veth
pairs through a middle namespace where a relay forwards, drops, duplicates
and reorders frames), addresses from 198.18.0.0/15 only, and ways to run
code inside a namespace.  Needs CAP_NET_ADMIN (root); nothing leaves the
namespaces, and Topology.close() (also on failure) deletes them, which
deletes their links.  Nothing here is used by the runtime itself.
"""
import ctypes
import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import itertools

CLONE_NEWNET = 0x40000000
STACK_IP = "198.18.0.2"
PEER_IP = "198.18.0.1"
PREFIX = 24
KERNEL_IP = "198.18.1.2"        # the kernel-socket server of the bench rows
KERNEL_PEER_IP = "198.18.1.1"
_count = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def can_make_namespaces():
    """(True, "") when this process may make network namespaces and veths."""
    if shutil.which("ip") is None:
        return False, "the `ip` command (iproute2) is not installed"
    from ..net.tcp.link import has_capabilities
    ok, why = has_capabilities()
    if not ok:
        return False, f"network namespaces need CAP_NET_ADMIN and CAP_NET_RAW ({why})"
    return True, ""


def _setns(fd):
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def call_in(ns, fn, *args, **kwargs):
    """fn(*args, **kwargs) run in a new OS thread that entered network
    namespace `ns`; its result, or its exception.  Threads that fn starts
    (a Runtime's workers) inherit the namespace, and sockets it makes stay
    in it wherever they are used later."""
    box = {}

    def body():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:       # handed to the caller
            box["error"] = e
    t = threading.Thread(target=body, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def ip(*args, ns=None, check=True):
    cmd = ["ip"] + (["-n", ns] if ns else []) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r


def set_tx_checksum(ns, ifname, on):
    """ethtool -K ifname tx on|off, in namespace ns (SIOCETHTOOL, since the
    ethtool command may be missing).  With it off the kernel fills in
    transport checksums itself and sends no TSO super-frames."""
    def body():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            ev = ctypes.create_string_buffer(struct.pack("II", 0x17, 1 if on else 0))
            ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(ev)).ljust(40, b"\0")
            fcntl.ioctl(s.fileno(), 0x8946, ifr)
        finally:
            s.close()
    call_in(ns, body)


class Topology:
    """Namespaces `stack_ns` and `peer_ns`; the stack's interface
    `stack_if` (no kernel address) and the peer's `peer_if` with PEER_IP.
    With relay=True, a middle namespace `mid_ns` holds `mid_a` (towards the
    stack) and `mid_b` (towards the peer), and start_relay() runs the relay
    there."""

    def __init__(self, relay=False, tx_checksum=False, mtu=1500, kernel_server=False):
        n = f"{os.getpid() % 100000}x{next(_count)}"
        # kernel_server: a third namespace `kernel_ns`, one veth hop from the
        # peer too (KERNEL_IP, on its own /24), for the kernel-socket peer.
        self.kernel_ns = f"osvrt-k{n}" if kernel_server else None
        self.kernel_if, self.peer_kif = f"tk{n}", f"tq{n}"
        self.kernel_ip = KERNEL_IP
        self.stack_ns, self.peer_ns = f"osvrt-s{n}", f"osvrt-p{n}"
        self.stack_if, self.peer_if = f"ts{n}", f"tp{n}"
        self.mid_ns = f"osvrt-m{n}" if relay else None
        self.mid_a, self.mid_b = f"ta{n}", f"tb{n}"
        self.relay = None
        self.stack_ip, self.peer_ip = STACK_IP, PEER_IP
        self.cidr = f"{STACK_IP}/{PREFIX}"
        self._made = []
        try:
            self._make(relay, tx_checksum, mtu)
        except BaseException:
            self.close()
            raise

    def _ns(self, name):
        ip("netns", "add", name)
        self._made.append(name)
        ip("link", "set", "lo", "up", ns=name)
        # No IPv6 chatter (router solicitations, MLD) on the test links.
        subprocess.run(["ip", "netns", "exec", name, "sh", "-c",
                        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                        "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"],
                       capture_output=True, timeout=30)

    def _make(self, relay, tx_checksum, mtu):
        for name in (self.stack_ns, self.peer_ns) + ((self.mid_ns,) if relay else ()):
            self._ns(name)
        if relay:
            self._veth(self.stack_if, self.stack_ns, self.mid_a, self.mid_ns, mtu)
            self._veth(self.mid_b, self.mid_ns, self.peer_if, self.peer_ns, mtu)
            for i in (self.mid_a, self.mid_b):
                ip("link", "set", i, "up", ns=self.mid_ns)
        else:
            self._veth(self.stack_if, self.stack_ns, self.peer_if, self.peer_ns, mtu)
        ip("link", "set", self.stack_if, "up", ns=self.stack_ns)
        ip("addr", "add", f"{PEER_IP}/{PREFIX}", "dev", self.peer_if, ns=self.peer_ns)
        ip("link", "set", self.peer_if, "up", ns=self.peer_ns)
        if not tx_checksum:
            set_tx_checksum(self.peer_ns, self.peer_if, False)
        if self.kernel_ns is not None:
            self._ns(self.kernel_ns)
            self._veth(self.kernel_if, self.kernel_ns, self.peer_kif, self.peer_ns, mtu)
            ip("addr", "add", f"{KERNEL_IP}/{PREFIX}", "dev", self.kernel_if, ns=self.kernel_ns)
            ip("link", "set", self.kernel_if, "up", ns=self.kernel_ns)
            ip("addr", "add", f"{KERNEL_PEER_IP}/{PREFIX}", "dev", self.peer_kif, ns=self.peer_ns)
            ip("link", "set", self.peer_kif, "up", ns=self.peer_ns)

    def _veth(self, a, ns_a, b, ns_b, mtu):
        # Made in its namespaces at once: a pair made in the root namespace
        # and then moved stayed there if the move failed (or Ctrl-C came
        # between), and deleting the namespaces does not remove it.
        ip("link", "add", a, "netns", ns_a, "mtu", mtu, "type", "veth",
           "peer", "name", b, "netns", ns_b, "mtu", mtu)

    def start_relay(self, *, loss=0.02, dup=0.01, reorder=0.02, seed=1, delay_ms=2.0):
        """The relay (osvrt/bench/relay.py) in the middle namespace, as a
        process; stopped by close()."""
        assert self.mid_ns is not None, "made without relay=True"
        cmd = ["ip", "netns", "exec", self.mid_ns, sys.executable, "-P", "-m",
               "osvrt.bench.relay", self.mid_a, self.mid_b, "--loss", str(loss),
               "--dup", str(dup), "--reorder", str(reorder), "--seed", str(seed),
               "--delay-ms", str(delay_ms)]
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.relay = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env)
        from .ready import wait_ready
        wait_ready(self.relay, "the relay")     # "ready" once both sockets are bound
        return self.relay

    def relay_counts(self):
        """Stop the relay and return what it counted (a dict)."""
        import json
        if self.relay is None:
            return {}
        self.relay.terminate()
        out, _err = self.relay.communicate(timeout=10)
        self.relay = None
        for line in out.splitlines()[::-1]:
            if line.startswith("{"):
                return json.loads(line)
        return {}

    def in_stack(self, fn, *args, **kwargs):
        return call_in(self.stack_ns, fn, *args, **kwargs)

    def in_peer(self, fn, *args, **kwargs):
        return call_in(self.peer_ns, fn, *args, **kwargs)

    def peer_socket(self, *args):
        """A kernel socket made in the peer namespace."""
        return self.in_peer(socket.socket, *args)

    def popen_in(self, ns, cmd, **kwargs):
        """A process started in namespace ns that imports the osvrt this
        process runs (PYTHONPATH), as subprocess.Popen."""
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=env, **kwargs)

    def peer_run(self, *cmd, **kwargs):
        """A command run in the peer namespace (subprocess.run)."""
        return subprocess.run(["ip", "netns", "exec", self.peer_ns, *cmd], **kwargs)

    def close(self):
        if self.relay is not None:
            self.relay.kill()
            self.relay.wait()
            self.relay = None
        for name in reversed(self._made):
            ip("netns", "del", name, check=False)
        self._made.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
