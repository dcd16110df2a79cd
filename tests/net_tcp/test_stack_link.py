"""The user-space stack's link layers, with the kernel of a peer namespace
as the other end: ARP (the peer's kernel resolves the stack's address; the
stack resolves the peer's and announces itself), ICMP echo answered to the
kernel's own ICMP socket (and to `ping` where installed), malformed and
fragmented packets counted and dropped, argument errors that name the value,
PermissionError without the capabilities, and the wire helpers themselves."""
import errno
import shutil
import socket
import struct
import subprocess
import sys

import pytest

import osvrt
import osvrt.net
from osvrt.net.tcp import wire
from osvrt.net.tcp.stack import parse_address

from tcp_support import T, run_stack


# ---- wire helpers (no namespace needed) ----

def _csum_reference(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@pytest.mark.parametrize("data", [b"", b"\x01", b"\xff\xff", b"\xff\xff" * 7, bytes(range(256)),
                                  b"\x12\x34\x56", b"\0\0\0\0"])
def test_checksum_matches_rfc1071(data):
    assert wire.checksum(data) == _csum_reference(data)


def test_ipv4_parse_reasons():
    good = wire.ipv4(b"\xc6\x12\0\1", b"\xc6\x12\0\2", 1, b"x" * 8)
    assert not isinstance(wire.parse_ipv4(good), str)
    bad = bytearray(good)
    bad[10] ^= 1
    assert wire.parse_ipv4(bytes(bad)) == "ip_checksum"
    frag = bytearray(good)
    struct.pack_into("!H", frag, 6, 0x2000)          # MF
    struct.pack_into("!H", frag, 10, 0)
    struct.pack_into("!H", frag, 10, wire.checksum(frag[:20]))
    assert wire.parse_ipv4(bytes(frag)) == "ip_fragment"
    assert wire.parse_ipv4(good[:19]) == "ip_short"
    assert wire.parse_ipv4(b"\x65" + good[1:]) == "ip_version"
    assert wire.parse_ipv4(good[:-1]) == "ip_length"


def test_echo_reply_and_refusals():
    req = bytearray(struct.pack("!BBHHH", 8, 0, 0, 7, 9) + b"abc")
    struct.pack_into("!H", req, 2, wire.checksum(req))
    rep = wire.echo_reply(bytes(req))
    assert rep[0] == 0 and rep[4:] == bytes(req[4:]) and wire.checksum(rep) == 0
    bad = bytearray(req)
    bad[-1] ^= 1
    assert wire.echo_reply(bytes(bad)) == "icmp_checksum"
    assert wire.echo_reply(b"\x08\0\0") == "icmp_short"


@pytest.mark.parametrize("address,match", [
    ("198.18.0.2", "prefix length"), ("198.18.0.300/24", "not an IPv4"),
    ("2001:db8::1/64", "IPv4"), ("198.18.0.0/24", "host address"),
    ("198.18.0.255/24", "host address"), ("198.18.0.2/31", "/31"), ("198.18.0.2/0", "/0")])
def test_bad_address_names_it(address, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_address(address)
    assert address in str(info.value) or match.startswith("/")


def test_address_type():
    with pytest.raises(TypeError, match="198.18.0.2/24"):
        parse_address(12)


# ---- in namespaces ----

def _icmp_echo(s, dst, ident, seq, payload, bad_csum=False):
    msg = bytearray(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload)
    struct.pack_into("!H", msg, 2, wire.checksum(msg) ^ (0x0101 if bad_csum else 0))
    s.sendto(bytes(msg), (dst, 0))


def _echo_replies(s, ident, want, timeout=T):
    """Read ICMP echo replies with our ident until `want` arrived (or time out)."""
    import time
    seen = []
    end = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < end:
        s.settimeout(max(0.05, end - time.monotonic()))
        try:
            data, addr = s.recvfrom(4096)
        except socket.timeout:
            break
        ihl = (data[0] & 0xF) * 4
        icmp = data[ihl:]
        if icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
            seen.append((addr[0], struct.unpack("!H", icmp[6:8])[0], bytes(icmp[8:])))
    return seen


def test_arp_and_ping_answered(topo):
    """The peer's kernel resolves the stack's address by ARP and gets echo
    replies from it; the stack counts both, and bad echo requests are
    counted and not answered."""
    def peer_ping():
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            _icmp_echo(s, topo.stack_ip, 0x4242, 9, b"bad", bad_csum=True)
            for seq in range(3):
                _icmp_echo(s, topo.stack_ip, 0x4242, seq, b"osvrt-%d" % seq)
            return _echo_replies(s, 0x4242, 3)
        finally:
            s.close()

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            replies = await osvrt.to_thread(topo.in_peer, peer_ping)
            ping = None
            if shutil.which("ping"):
                ping = await osvrt.to_thread(
                    topo.peer_run, "ping", "-c", "2", "-W", "5", topo.stack_ip,
                    capture_output=True, text=True, timeout=T)
            return replies, stack.stats(), ping
        finally:
            await stack.aclose()

    replies, stats, ping = run_stack(topo, main)
    assert sorted(replies) == [(topo.stack_ip, i, b"osvrt-%d" % i) for i in range(3)]
    assert stats["icmp"]["echo_requests"] == 3 and stats["icmp"]["echo_replies"] == 3
    assert stats["dropped"]["icmp_checksum"] == 1
    assert stats["arp"]["requests_in"] >= 1 and stats["arp"]["replies_out"] >= 1
    assert stats["arp"]["announcements"] == 1
    if ping is not None:
        assert ping.returncode == 0, ping.stdout + ping.stderr
    neigh = topo.peer_run("ip", "neigh", "show", topo.stack_ip, capture_output=True,
                          text=True).stdout
    assert stats["mac"] in neigh.lower()


def test_fragments_and_other_protocols_are_counted(topo):
    """An IPv4 fragment and a UDP datagram to the stack are dropped and
    counted by reason (no reassembly, no UDP)."""
    def peer_send():
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0x2000, 64, 1, 0,
                                        socket.inet_aton(topo.peer_ip),
                                        socket.inet_aton(topo.stack_ip)))
            struct.pack_into("!H", hdr, 10, wire.checksum(hdr))
            s.sendto(bytes(hdr) + b"\x08\0\0\0\0\0\0\0", (topo.stack_ip, 0))
        finally:
            s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"x", (topo.stack_ip, 9))
        u.close()

    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            await osvrt.to_thread(topo.in_peer, peer_send)
            while stack.stats()["dropped"]["ip_protocol"] < 1 or \
                    stack.stats()["dropped"]["ip_fragment"] < 1:
                await osvrt.sleep(0.01)
            return stack.stats()
        finally:
            await stack.aclose()

    stats = run_stack(topo, main, limit=20)
    assert stats["dropped"]["ip_fragment"] == 1
    assert stats["dropped"]["ip_protocol"] == 1
    assert stats["icmp"]["echo_replies"] == 0


def test_bad_arguments_name_the_value(topo):
    async def main():
        errors = {}
        for args in [("nosuch0", topo.cidr), ("lo", topo.cidr), (topo.stack_if, "198.18.0.2"),
                     ("x" * 20, topo.cidr), (topo.stack_if, "banana/24")]:
            try:
                await osvrt.net.user_stack(*args)
            except (OSError, ValueError, TypeError) as e:
                errors[args] = e
        for bad in (0, 1 << 21, "many"):
            try:
                await osvrt.net.user_stack(topo.stack_if, topo.cidr, max_connections=bad)
            except (TypeError, ValueError) as e:
                errors[("max_connections", bad)] = e
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        try:
            for port in (0, 65536, -1):
                try:
                    await stack.tcp_listen(port)
                except ValueError as e:
                    errors[("listen", port)] = e
            try:
                await stack.tcp_listen("80")
            except TypeError as e:
                errors[("listen", "80")] = e
            for host in ("198.19.0.1", "198.18.0.2", "198.18.0.255"):
                try:
                    await stack.open_tcp_stream(host, 80)
                except OSError as e:
                    errors[("connect", host)] = e
            try:
                await stack.open_tcp_stream(topo.peer_ip, 0)
            except ValueError as e:
                errors[("connect", 0)] = e
            try:
                await osvrt.net.user_stack(topo.stack_if, "198.18.0.3/24")
            except Exception as e:            # a second stack on the same link is allowed
                errors["second"] = e
        finally:
            await stack.aclose()
        return errors

    errors = run_stack(topo, main)
    e = errors[("nosuch0", topo.cidr)]
    assert isinstance(e, OSError) and e.errno == errno.ENODEV and "nosuch0" in str(e)
    assert isinstance(errors[("lo", topo.cidr)], ValueError) and "loopback" in str(
        errors[("lo", topo.cidr)])
    assert "198.18.0.2" in str(errors[(topo.stack_if, "198.18.0.2")])
    assert "x" * 20 in str(errors[("x" * 20, topo.cidr)])
    assert "banana/24" in str(errors[(topo.stack_if, "banana/24")])
    for port in (0, 65536, -1):
        assert str(port) in str(errors[("listen", port)])
    assert isinstance(errors[("listen", "80")], TypeError)
    for host in ("198.19.0.1", "198.18.0.2", "198.18.0.255"):
        e = errors[("connect", host)]
        assert e.errno == errno.ENETUNREACH and host in str(e)
    assert "0" in str(errors[("connect", 0)])
    assert "second" not in errors
    for bad in (0, 1 << 21, "many"):
        assert "max_connections" in str(errors[("max_connections", bad)])


def test_engine_link_calls_name_bad_arguments(topo):
    """The per-segment calls through the engine (stack.fast, _engine.TcpLink)
    refuse bad arguments with errors naming them, and give an engine error
    as the kernel's OSError (an id that names no connection: EBADF)."""
    async def main():
        stack = await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        fast, got = stack.fast, {}
        calls = {"cap 0 is out": lambda: fast.recv(1, 0),
                 "cap 131072 is out": lambda: fast.recv(1, 1 << 17),
                 "id -1 is out": lambda: fast.recv(-1, 10), "arguments": lambda: fast.recv(1),
                 "4 is out": lambda: fast.send(1, b"abc", 4),
                 "5 is out": lambda: fast.recv_into(1, bytearray(3), 5),
                 "read-only": lambda: fast.recv_into(1, b"abc", 1),
                 "Bad file descriptor": lambda: fast.send(12345, b"abc", 0)}
        try:
            for name, call in calls.items():
                try:
                    call()
                except Exception as e:
                    got[name] = e
        finally:
            await stack.aclose()
        return got

    got = run_stack(topo, main)
    for name in ("cap 0 is out", "cap 131072 is out", "id -1 is out", "4 is out", "5 is out"):
        assert isinstance(got[name], ValueError) and name in str(got[name]), (name, got[name])
    assert isinstance(got["arguments"], TypeError) and "2 arguments" in str(got["arguments"])
    assert isinstance(got["read-only"], (TypeError, BufferError))
    e = got["Bad file descriptor"]
    assert type(e) is OSError and e.errno == errno.EBADF and str(e).startswith(
        "[Errno 9] sendall: ")


def test_down_link_and_kernel_owned_address(topo):
    from osvrt.bench.netns import ip
    ip("addr", "add", "198.18.0.9/24", "dev", topo.stack_if, ns=topo.stack_ns)

    async def main():
        errors = []
        try:
            await osvrt.net.user_stack(topo.stack_if, "198.18.0.9/24")
        except ValueError as e:
            errors.append(e)
        return errors
    (owned,) = run_stack(topo, main)
    assert "kernel already owns 198.18.0.9" in str(owned)
    ip("link", "set", topo.stack_if, "down", ns=topo.stack_ns)

    async def main2():
        try:
            await osvrt.net.user_stack(topo.stack_if, topo.cidr)
        except ValueError as e:
            return e
    down = run_stack(topo, main2)
    assert "down" in str(down) and topo.stack_if in str(down)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop capabilities")
def test_no_capabilities_is_a_permission_error():
    """Without CAP_NET_RAW the AF_PACKET socket is refused: PermissionError
    naming the capabilities."""
    from osvrt.net.tcp.link import has_capabilities
    if not has_capabilities()[0]:
        pytest.skip("this process has no capabilities to drop")
    code = ("import osvrt, osvrt.net\n"
            "async def main():\n"
            "    try:\n"
            "        await osvrt.net.user_stack('lo', '198.18.0.2/24')\n"
            "    except PermissionError as e:\n"
            "        print('PE', e)\n"
            "osvrt.run(main, cpus=1)\n")
    r = subprocess.run(["setpriv", "--bounding-set=-net_raw,-net_admin", "--inh-caps=-all",
                        sys.executable, "-P", "-c", code], capture_output=True, text=True,
                       timeout=T)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("PE") and "CAP_NET_RAW" in r.stdout and "CAP_NET_ADMIN" in r.stdout
