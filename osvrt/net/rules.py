"""Classifier rules: a C callback that the classifier calls for every
datagram of a flow, without calling into Python, to pick the flow's lane (a channel with
its own reader) or to drop the datagram.  Written in Python, compiled to
machine code by numba.cfunc:

    from osvrt.net import rules

    @rules.rule
    def by_first_byte(data, length, saddr, sport):
        if length == 0:
            return -1                 # drop (counted as dropped by "rule")
        return data[0] & 1            # lane 0 or 1

    ep = await osvrt.net.udp_bind(("127.0.0.1", 9000), lanes=2, rule=by_first_byte)
    data, addr = await ep.recvfrom(lane=1)

Signature: int32 rule(uint8* data, uint32 length, uint32 saddr, uint32 sport)
with data/length the UDP payload, saddr the source IPv4 address in network
byte order, sport the source port.  Return the lane, 0 <= lane < lanes;
anything else drops the datagram (dropped["rule"]).  A rule runs wherever
the ring is drained (the classifier's thread, or a worker in its loop or its
idle poll: service.drainer) for every datagram: it must be short, must not raise
(compile with error_model="numpy", the default here), and must not touch
Python objects.  udp_bind also takes any C function pointer with this
signature (an int address, or an object with an .address such as a
numba cfunc).
"""
import ctypes

SIGNATURE = "int32(CPointer(uint8), uint32, uint32, uint32)"


def rule(fn=None, *, cache=False):
    """Decorator: compile fn with numba.cfunc(SIGNATURE, nopython=True)."""
    import numba

    def compile_(f):
        return numba.cfunc(SIGNATURE, nopython=True, cache=cache, error_model="numpy")(f)
    return compile_ if fn is None else compile_(fn)


def key_lanes(lanes, sep=b" "):
    """An example rule: steer by a key at the start of the payload.  The key
    is the bytes before the first `sep` (the whole payload without one); its
    FNV-1a hash picks one of `lanes` lanes, so every request for a key goes
    to the same lane (and the same reader), as a sharded cache would want.
    An empty key drops the datagram."""
    if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 64:
        raise ValueError(f"lanes must be an int in 1..64, not {lanes!r}")
    if not isinstance(sep, bytes) or len(sep) != 1:
        raise ValueError(f"sep must be one byte, not {sep!r}")
    s = sep[0]

    @rule
    def steer(data, length, saddr, sport):
        h = 2166136261
        n = 0
        for i in range(length):
            b = data[i]
            if b == s:
                break
            h = ((h ^ b) * 16777619) & 0xFFFFFFFF
            n += 1
        if n == 0:
            return -1
        return h % lanes
    return steer


def fnv1a_lane(key, lanes):
    """The lane key_lanes(lanes) gives `key` (bytes), computed in Python."""
    h = 2166136261
    for b in key:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % lanes


def rule_pointer(r):
    """(cffi function pointer, object to keep alive) for udp_bind's rule."""
    from .._core import ffi
    if r is None:
        return ffi.NULL, None
    sig = getattr(r, "_sig", None)                     # a numba cfunc
    if sig is not None:
        from numba.core import sigutils
        args, ret = sigutils.normalize_signature(SIGNATURE)
        if tuple(sig.args) != tuple(args) or sig.return_type != ret:
            raise TypeError(f"rule: {r!r} has signature {sig}; a rule needs {SIGNATURE}")
    if hasattr(r, "address"):
        addr = r.address
    elif isinstance(r, ctypes._CFuncPtr):
        addr = ctypes.cast(r, ctypes.c_void_p).value
    elif isinstance(r, int) and not isinstance(r, bool):
        addr = r
    else:
        raise TypeError(f"rule must be a numba cfunc (osvrt.net.rules.rule), a ctypes "
                        f"function pointer or an address, not {r!r}")
    if not addr:
        raise ValueError(f"rule: {r!r} has a NULL address")
    if not 0 < addr < 1 << 64:
        # cffi would take it modulo 2**64: a negative one called through
        # as a wild pointer on the first datagram
        raise ValueError(f"rule: {r!r} is not an address (0 < address < 2**64)")
    return ffi.cast("osvrt_rule_fn", addr), r
