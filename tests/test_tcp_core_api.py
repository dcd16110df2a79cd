"""The TCP engine's C API (csrc/net/tcp/tcp.h) as osvrt._core exposes it to
osvrt/net/tcp/: two stacks joined in memory through cffi, with a fake clock.
The protocol itself is tested in C (csrc/tests/test_tcp*.c); this checks the
cdef in osvrt/_build.py against the header (cffi compiles the struct layouts
and enum values into _core) and that the calls work from Python."""
import errno

from osvrt._core import ffi, lib

CLIENT, SERVER = 0xC6120001, 0xC6120002   # 198.18.0.1, 198.18.0.2


def _stack(addr):
    cfg = ffi.new("struct osvrt_tcp_config *")
    lib.osvrt_tcp_config_init(cfg)
    cfg.addr = addr
    cfg.isn_key = [addr, 12345]
    err = ffi.new("int *")
    s = lib.osvrt_tcp_new(cfg, err)
    assert s != ffi.NULL, err[0]
    return ffi.gc(s, lib.osvrt_tcp_free)


def _pump(a, b, now):
    """Move packets both ways until neither side has any; returns how many."""
    buf = ffi.new("uint8_t[2048]")
    moved = 0
    while True:
        n_round = 0
        for src, dst in ((a, b), (b, a)):
            while (n := lib.osvrt_tcp_output(src, buf, 2048, now)) > 0:
                assert lib.osvrt_tcp_input(dst, buf, n, 0, now) == 0
                n_round += 1
        if not n_round:
            return moved
        moved += n_round


def test_names_and_constants():
    assert ffi.string(lib.osvrt_tcp_state_name(lib.OSVRT_TCP_ESTABLISHED)) == b"ESTABLISHED"
    assert ffi.string(lib.osvrt_tcp_drop_name(lib.OSVRT_TCP_DROP_BAD_CSUM)) == b"bad_checksum"
    assert lib.osvrt_tcp_state_name(lib.OSVRT_TCP_NSTATES) == ffi.NULL
    stats = ffi.new("struct osvrt_tcp_stats *")
    assert len(stats.drops) == lib.OSVRT_TCP_NDROPS
    assert len(stats.conns) == lib.OSVRT_TCP_NSTATES


def test_bad_config_is_refused():
    cfg = ffi.new("struct osvrt_tcp_config *")
    lib.osvrt_tcp_config_init(cfg)           # no address
    err = ffi.new("int *")
    assert lib.osvrt_tcp_new(cfg, err) == ffi.NULL
    assert err[0] == -errno.EINVAL


def test_connect_accept_transfer_close():
    c, s = _stack(CLIENT), _stack(SERVER)
    now = 10**9
    lid = lib.osvrt_tcp_listen(s, 8080, 16)
    assert lid >= 0
    cid = lib.osvrt_tcp_connect(c, SERVER, 8080, 0, now)
    assert cid >= 0
    _pump(c, s, now)
    raddr, rport = ffi.new("uint32_t *"), ffi.new("uint16_t *")
    sid = lib.osvrt_tcp_accept(s, lid, raddr, rport)
    assert sid >= 0 and raddr[0] == CLIENT and rport[0] >= 49152
    events = ffi.new("struct osvrt_tcp_event[8]")
    n = lib.osvrt_tcp_events(c, events, 8)
    assert any(events[i].id == cid and events[i].flags & lib.OSVRT_TCP_EV_ESTABLISHED
               for i in range(n))
    data = bytes(range(256)) * 400
    sent = 0
    got = bytearray()
    buf = ffi.new("uint8_t[65536]")
    while len(got) < len(data):
        if sent < len(data):
            r = lib.osvrt_tcp_send(c, cid, data[sent:], len(data) - sent, now)
            assert r > 0 or r == -errno.EAGAIN
            sent += max(r, 0)
        _pump(c, s, now)
        while (r := lib.osvrt_tcp_recv(s, sid, buf, 65536, now)) > 0:
            got += ffi.buffer(buf, r)
        assert r == -errno.EAGAIN
        now += 10**6
    assert bytes(got) == data
    info = ffi.new("struct osvrt_tcp_conn_info *")
    assert lib.osvrt_tcp_conn_info(c, cid, info) == 0
    assert info.state == lib.OSVRT_TCP_ESTABLISHED and info.remote_port == 8080
    assert lib.osvrt_tcp_close(c, cid, now) == 0
    _pump(c, s, now)
    assert lib.osvrt_tcp_recv(s, sid, buf, 16, now) == 0            # EOF
    assert lib.osvrt_tcp_state(c, cid) == -errno.EBADF
    stats = ffi.new("struct osvrt_tcp_stats *")
    lib.osvrt_tcp_get_stats(s, stats)
    assert stats.bytes_in == len(data) and stats.accepts == 1
    assert stats.conns[lib.OSVRT_TCP_CLOSE_WAIT] == 1
    assert lib.osvrt_tcp_next_deadline(c) < 2**63 - 1              # TIME_WAIT's timer


def test_batched_output_and_input():
    """One cffi call moves many packets each way (output_many / input_many)."""
    c, s = _stack(CLIENT), _stack(SERVER)
    now = 10**9
    lid = lib.osvrt_tcp_listen(s, 8081, 16)
    cids = [lib.osvrt_tcp_connect(c, SERVER, 8081, 0, now) for _ in range(5)]
    stride, cap = 1600, 64
    buf = ffi.new("uint8_t[]", stride * cap)
    lens = ffi.new("uint32_t[]", cap)
    offs = ffi.new("uint32_t[]", [i * stride for i in range(cap)])
    results = ffi.new("uint8_t[]", cap)
    assert lib.osvrt_tcp_output_many(c, buf, 10, lens, cap, now) == -errno.EINVAL
    for _ in range(3):                               # SYNs, SYN-ACKs, ACKs
        for src, dst in ((c, s), (s, c)):
            n = lib.osvrt_tcp_output_many(src, buf, stride, lens, cap, now)
            assert lib.osvrt_tcp_input_many(dst, buf, offs, lens, n, 0, now, results) == n
            assert all(results[i] == 0 for i in range(n))
    accepted = 0
    while lib.osvrt_tcp_accept(s, lid, ffi.NULL, ffi.NULL) >= 0:
        accepted += 1
    assert accepted == 5
    assert all(lib.osvrt_tcp_state(c, i) == lib.OSVRT_TCP_ESTABLISHED for i in cids)
    # a corrupted packet in a batch: counted and reported, the others taken
    lib.osvrt_tcp_send(c, cids[0], b"abc", 3, now)
    lib.osvrt_tcp_send(c, cids[1], b"def", 3, now)
    n = lib.osvrt_tcp_output_many(c, buf, stride, lens, cap, now)
    assert n == 2
    buf[lens[0] - 1] ^= 0xFF
    assert lib.osvrt_tcp_input_many(s, buf, offs, lens, n, 0, now, results) == 1
    assert [results[0], results[1]] == [lib.OSVRT_TCP_DROP_BAD_CSUM, 0]
