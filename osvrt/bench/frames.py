"""Helpers for testing and measuring osvrt.net on loopback: can this process
open a packet socket, Ethernet/IPv4/UDP frame building (well formed or
broken on purpose), injecting frames into an interface, and the kernel's
own drop counters.  Nothing here is used by the runtime itself."""
import os
import socket
import struct

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800


def can_open_packet_socket():
    """(True, "") if this process may open an AF_PACKET socket, else (False,
    why): what udp_bind needs (CAP_NET_RAW)."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as e:
        return False, f"no CAP_NET_RAW: {e}"
    except OSError as e:
        return False, f"no AF_PACKET sockets here: {e}"
    s.close()
    return True, ""


def csum(data):
    """The Internet checksum (RFC 1071), complemented, as it goes in a header."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(payload, dst, src=("127.0.0.1", 40000), *, ip_options=b"", pad_to=0, frag=0,
              bad_ip_csum=False, bad_udp_csum=False, udp_len_delta=0, ip_len_delta=0,
              ihl=None, truncate=None, ttl=64):
    """An Ethernet frame carrying an IPv4 UDP datagram from src to dst
    ((ip, port) pairs), with correct checksums unless asked otherwise.
    ip_options: bytes (a multiple of 4); pad_to: Ethernet padding up to
    this frame length; truncate: cut the frame to this many bytes."""
    sip, sport = src
    dip, dport = dst
    udp_len = 8 + len(payload)
    ihl_bytes = 20 + len(ip_options)
    tot = ihl_bytes + udp_len + ip_len_delta
    ver_ihl = 0x40 | (ihl if ihl is not None else ihl_bytes // 4)
    ip = struct.pack("!BBHHHBBH4s4s", ver_ihl, 0, tot & 0xFFFF, 0x1234, frag, ttl, 17, 0,
                     socket.inet_aton(sip), socket.inet_aton(dip)) + ip_options
    c = csum(ip)
    if bad_ip_csum:
        c ^= 0x5A5A
    ip = ip[:10] + struct.pack("!H", c) + ip[12:]
    pseudo = socket.inet_aton(sip) + socket.inet_aton(dip) + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, (udp_len + udp_len_delta) & 0xFFFF, 0) + payload
    uc = csum(pseudo + udp) or 0xFFFF
    if bad_udp_csum:
        uc ^= 0x0101
    udp = udp[:6] + struct.pack("!H", uc) + udp[8:]
    frame = b"\0" * 12 + struct.pack("!H", ETH_P_IP) + ip + udp
    if len(frame) < pad_to:
        frame += b"\xee" * (pad_to - len(frame))
    if truncate is not None:
        frame = frame[:truncate]
    return frame


def inject(frames, interface="lo"):
    """Send raw Ethernet frames out of `interface` (on lo they come straight
    back in, where the classifier sees them).  Needs CAP_NET_RAW."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind((interface, 0))
        for f in frames:
            s.send(f)
    finally:
        s.close()


def softnet_drops():
    """Packets the kernel dropped before any tap saw them (the per-CPU backlog
    was full): the sum of /proc/net/softnet_stat's second column."""
    try:
        with open("/proc/net/softnet_stat") as f:
            return sum(int(line.split()[1], 16) for line in f if line.strip())
    except OSError:
        return 0


def udp_socket_stats():
    """The kernel's Udp counters from /proc/net/snmp as a dict."""
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


def free_port(ip="127.0.0.1"):
    """A UDP port that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pid_threads():
    """Names of this process's OS threads (from /proc: pthreads included)."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names
