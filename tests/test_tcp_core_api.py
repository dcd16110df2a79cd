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
