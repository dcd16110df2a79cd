"""The link of a user-space stack: a non-blocking AF_PACKET socket bound to
one Ethernet interface, read and written whole frames at a time.

Why not the classifier's ring (osvrt/net/channels): the classifier is one
runtime-wide C thread on one interface that sorts UDP datagrams into
per-flow channels; it has no path for ARP, ICMP or TCP segments, and a
second interface needs a second classifier.  The stack's link is its own
packet socket, waited on through the worker's epoll (edge-triggered,
registered once), so no OS thread sits between the wire and the stack's
green thread.

What the kernel does for us here:
- a classic BPF filter lets in only ARP and the IPv4 packets addressed to
  the stack (its address, or broadcast), so other traffic on the link costs
  no wake-up and no Python;
- PACKET_IGNORE_OUTGOING drops the copy of our own sends that an ETH_P_ALL
  socket otherwise reads back;
- PACKET_AUXDATA tells, per frame, whether the sender left the transport
  checksum for the device to fill (TP_STATUS_CSUMNOTREADY: a local sender on
  a veth with checksum offload); such a frame was never on a wire, and the
  stack completes the checksum rather than dropping it as corrupt.
"""
import ctypes
import errno
import fcntl

import socket
import struct

from ... import _engine
from .wire import ETH_P_ARP, ETH_P_IP

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
TP_STATUS_CSUMNOTREADY = 1 << 3
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SIOCGIFFLAGS = 0x8913
SIOCGIFADDR = 0x8915
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

_auxdata = struct.Struct("IIIHHHH")      # struct tpacket_auxdata
_AUX_SPACE = socket.CMSG_SPACE(_auxdata.size)
RCVBUF = 8 << 20                          # a burst of a window's worth of segments fits


def privilege_error(interface, err):
    return PermissionError(
        err.errno if isinstance(err, OSError) else errno.EPERM,
        f"osvrt.net.user_stack on {interface!r} needs CAP_NET_RAW (its AF_PACKET socket) "
        "and CAP_NET_ADMIN (to read the interface's settings): run as root, or grant them "
        "(e.g. `setcap cap_net_raw,cap_net_admin+ep` on the Python binary)")


def _ifreq(interface):
    return struct.pack("16s24x", interface.encode())


def _bpf(ip):
    """A classic BPF program: accept ARP, and IPv4 whose destination is `ip`
    (4 bytes) or the limited broadcast; drop the rest.  (sock_filter:
    code u16, jt u8, jf u8, k u32.)"""
    dst = int.from_bytes(ip, "big")
    ld_h, ld_w, jeq, ret = 0x28, 0x20, 0x15, 0x06
    prog = [
        (ld_h, 0, 0, 12),                  # A = ethertype
        (jeq, 4, 0, ETH_P_ARP),            # ARP -> accept
        (jeq, 0, 4, ETH_P_IP),             # not IPv4 -> drop
        (ld_w, 0, 0, 30),                  # A = IPv4 destination
        (jeq, 1, 0, dst),                  # ours -> accept
        (jeq, 0, 1, 0xFFFFFFFF),           # broadcast -> accept, else drop
        (ret, 0, 0, 0x40000),              # accept (up to 256 KiB)
        (ret, 0, 0, 0),                    # drop
    ]
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def _attach_filter(sock, program):
    n = len(program) // 8
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", n, ctypes.addressof(buf))  # struct sock_fprog (padded)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class Link:
    """An Ethernet interface opened for the stack: .mac, .mtu, .ifindex, and
    the packet socket (.fd).  Open it with Link.open(interface, ip)."""

    def __init__(self, interface, sock, mac, mtu, ifindex):
        self.interface = interface
        self.sock = sock
        self.fd = sock.fileno()
        _engine.io_adopt(self.fd)   # its wait is edge-triggered (io.c: epochs)
        self.mac = mac
        self.mtu = mtu
        self.ifindex = ifindex
        self._anc = _AUX_SPACE

    @classmethod
    def open(cls, interface, ip):
        """Open `interface` for the stack that owns the IPv4 address `ip`
        (4 bytes).  Clear errors: PermissionError without the capabilities,
        OSError (ENODEV) for no such interface, ValueError for a link that is
        not Ethernet, is down, or where the kernel owns the same address."""
        try:
            ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise OSError(errno.ENODEV, f"osvrt.net.user_stack: no network interface named "
                                        f"{interface!r} (in this network namespace)") from None
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as e:
            raise privilege_error(interface, e) from None
        try:
            mac, mtu = cls._check(sock, interface, ip)
            _attach_filter(sock, _bpf(ip))
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((interface, ETH_P_ALL))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(interface, sock, mac, mtu, ifindex)

    @staticmethod
    def _check(sock, interface, ip):
        req = _ifreq(interface)
        try:
            hw = fcntl.ioctl(sock, SIOCGIFHWADDR, req)
            flags = struct.unpack_from("H", fcntl.ioctl(sock, SIOCGIFFLAGS, req), 16)[0]
            mtu = struct.unpack_from("i", fcntl.ioctl(sock, SIOCGIFMTU, req), 16)[0]
        except PermissionError as e:
            raise privilege_error(interface, e) from None
        family = struct.unpack_from("H", hw, 16)[0]
        if family == ARPHRD_LOOPBACK:
            raise ValueError(f"osvrt.net.user_stack: {interface!r} is a loopback interface; "
                             "the stack needs an Ethernet link it owns an address on (a veth "
                             "end or a TAP with no kernel address)")
        if family != ARPHRD_ETHER:
            raise ValueError(f"osvrt.net.user_stack: {interface!r} is not an Ethernet link "
                             f"(ARPHRD {family}); a TAP must be made in tap mode, not tun")
        if not flags & IFF_UP:
            raise ValueError(f"osvrt.net.user_stack: interface {interface!r} is down "
                             f"(`ip link set {interface} up`)")
        try:
            kaddr = fcntl.ioctl(sock, SIOCGIFADDR, req)[20:24]
        except OSError:
            kaddr = None                      # EADDRNOTAVAIL: the kernel has no address there
        if kaddr == ip:
            raise ValueError(f"osvrt.net.user_stack: the kernel already owns "
                             f"{socket.inet_ntoa(ip)} on {interface!r}; give the stack an "
                             "address the kernel does not answer for")
        return hw[18:24], mtu

    def recv(self, buf):
        """One frame into buf: (length, checksum_not_ready); raises
        BlockingIOError when none is waiting."""
        n, anc, _flags, _addr = self.sock.recvmsg_into((buf,), self._anc)
        partial = False
        for level, kind, data in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _auxdata.size:
                partial = bool(_auxdata.unpack_from(data)[0] & TP_STATUS_CSUMNOTREADY)
        return n, partial

    def send(self, frame):
        """Send one frame: 0, or the errno that lost it (the device refused
        it: an errno in REFUSED; or another send error).  A lost frame is
        lost as on a wire: TCP retransmits, ARP retries."""
        return _sent(self.sock.send, frame)

    def sendv(self, head, packet):
        """Send the frame head + packet (one sendmsg, no copy); as send()."""
        return _sent(self.sock.sendmsg, (head, packet))

    def kernel_drops(self):
        """Frames the kernel dropped because the socket's buffer was full
        (PACKET_STATISTICS; reading it resets the kernel's count)."""
        try:
            _packets, drops = struct.unpack(
                "II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        except OSError:
            return 0
        return drops

    def close(self):
        if self.fd >= 0:
            self.fd = -1
            self.sock.close()

    def forget(self):
        """The fd number is no longer this socket (EBADF, ENOTSOCK: closed
        or replaced behind our back): let go of it without closing, since
        the number may name another open file by now."""
        if self.fd >= 0:
            self.fd = -1
            self.sock.detach()


def has_capabilities():
    """(True, "") when this process has CAP_NET_RAW and CAP_NET_ADMIN, else
    (False, why), read from /proc/self/status."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError) as e:
        return False, f"cannot read the capabilities: {e}"
    missing = [name for bit, name in ((12, "CAP_NET_ADMIN"), (13, "CAP_NET_RAW"))
               if not eff >> bit & 1]
    if missing:
        return False, "missing " + " and ".join(missing)
    return True, ""


__all__ = ["Link", "REFUSED", "has_capabilities", "privilege_error"]

# Errnos of a send that the device refused (a full queue, a link gone down or
# away): counted as tx_full, as the C link does (tcp_link.c, refused()).
REFUSED = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.ENETDOWN, errno.ENXIO})


def _sent(send, frame):
    """send(frame) on the non-blocking packet socket: 0, or the errno of the
    OSError that lost the frame (InterruptedError is retried by Python)."""
    try:
        send(frame)
        return 0
    except OSError as e:
        return e.errno or errno.EIO
