"""Helpers of the user-space stack's tests: run a green-thread program with
a stack in the stack namespace, bounded in time; kernel peers in threads
with socket timeouts.  Every wait is bounded (T seconds), none is timed."""
import hashlib
import socket
import threading

import osvrt
from osvrt.bench import netns

OK, WHY = netns.can_make_namespaces()
T = 60            # seconds a whole scenario may take before the test fails


def run_stack(topo, main, *args, cpus=1, limit=T):
    """main(*args) as the first green thread of a runtime whose workers live
    in the stack namespace; its result (or exception)."""
    async def bounded():
        with osvrt.timeout(limit):
            return await main(*args)
    return topo.in_stack(osvrt.run, bounded, cpus=cpus)


class PeerThread(threading.Thread):
    """fn(*args) in a Python thread (its kernel sockets made in the peer
    namespace by the caller); .outcome() re-raises its exception."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self._fn, self._args = fn, args
        self.result = None
        self.error = None

    def run(self):
        try:
            self.result = self._fn(*self._args)
        except BaseException as e:
            self.error = e

    def outcome(self, timeout=None):
        timeout = T if timeout is None else timeout
        self.join(timeout)
        if self.is_alive():
            raise AssertionError("the peer thread did not finish in time")
        if self.error is not None:
            raise self.error
        return self.result


def pattern(n, seed):
    """n bytes that differ per seed (so swapped streams are caught)."""
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * 2048   # 64 KiB
    reps = n // len(block) + 1
    return (block * reps)[:n]


def kernel_echo_client(sock, addr, payload, chunk=65536):
    """Send payload on the connected kernel socket (from a sender thread),
    read the echo; the SHA-256 of what came back."""
    sock.settimeout(T)
    sock.connect(addr)
    err = []

    def sender():
        try:
            for i in range(0, len(payload), chunk):
                sock.sendall(payload[i:i + chunk])
            sock.shutdown(socket.SHUT_WR)
        except BaseException as e:
            err.append(e)
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got, sha = read_to_eof(sock)
    t.join(T)
    sock.close()
    if err:
        raise err[0]
    return got, sha


def read_to_eof(sock):
    """Read the kernel socket to EOF: (bytes, SHA-256 hex)."""
    h = hashlib.sha256()
    got = 0
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        h.update(data)
        got += len(data)
    return got, h.hexdigest()
