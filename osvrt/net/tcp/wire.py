"""Wire formats of the user-space stack's link: Ethernet II, ARP (RFC 826),
IPv4 (RFC 791) and ICMP echo (RFC 792).  Parsing checks what a stack must
check (lengths, versions, checksums) and says why a frame is refused, so the
stack can count drops by reason; building makes complete frames with their
checksums.  Pure functions on bytes: no sockets, no state.
"""
import struct

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_HLEN = 14
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\0" * 6

IPPROTO_ICMP = 1
IPPROTO_TCP = 6

ARP_REQUEST = 1
ARP_REPLY = 2

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8

_eth = struct.Struct("!6s6sH")
_arp = struct.Struct("!HHBBH6s4s6s4s")
_ip = struct.Struct("!BBHHHBBH4s4s")


def checksum(data):
    """The Internet checksum (RFC 1071) of data, complemented, as it goes in a
    header.  The one's-complement sum of 16-bit big-endian words is the value
    of the bytes as one big number modulo 0xffff (2**16 = 1 mod 0xffff), which
    Python's big integers compute in C: no loop over words in bytecode."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    n = int.from_bytes(data, "big")
    s = n % 0xFFFF
    if s == 0 and n != 0:
        s = 0xFFFF          # a nonzero sum that is a multiple of 0xffff is 0xffff, not 0
    return ~s & 0xFFFF


def mac_str(mac):
    return ":".join(f"{b:02x}" for b in mac)


def ethernet(dst, src, ethertype, payload):
    """An Ethernet II frame (no FCS: the NIC or the kernel adds it)."""
    return _eth.pack(dst, src, ethertype) + payload


def parse_ethernet(frame):
    """(dst, src, ethertype, payload view) or None if shorter than a header."""
    if len(frame) < ETH_HLEN:
        return None
    dst, src, ethertype = _eth.unpack_from(frame)
    return dst, src, ethertype, memoryview(frame)[ETH_HLEN:]


# ---- ARP -----------------------------------------------------------------

def arp(oper, sha, spa, tha, tpa):
    """An ARP packet for Ethernet/IPv4 (28 bytes)."""
    return _arp.pack(1, ETH_P_IP, 6, 4, oper, sha, spa, tha, tpa)


def parse_arp(payload):
    """(oper, sha, spa, tha, tpa), or a str saying why it is refused."""
    if len(payload) < _arp.size:
        return "arp_short"
    htype, ptype, hlen, plen, oper, sha, spa, tha, tpa = _arp.unpack_from(payload)
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
        return "arp_unsupported"
    return oper, sha, spa, tha, tpa


# ---- IPv4 ----------------------------------------------------------------

class IPv4:
    """A parsed IPv4 header: the fields the stack uses, and the packet (header
    and payload, without Ethernet padding) as a memoryview."""
    __slots__ = ("src", "dst", "proto", "ihl", "packet", "ttl")

    def __init__(self, src, dst, proto, ihl, packet, ttl):
        self.src, self.dst, self.proto, self.ihl, self.packet, self.ttl = (
            src, dst, proto, ihl, packet, ttl)

    @property
    def payload(self):
        return self.packet[self.ihl:]


def parse_ipv4(payload):
    """An IPv4 or a str naming why the packet is dropped: "ip_short",
    "ip_version", "ip_header_length", "ip_length", "ip_checksum",
    "ip_fragment" (fragments are not reassembled: counted and dropped)."""
    n = len(payload)
    if n < 20:
        return "ip_short"
    vihl, _tos, total, _ident, frag, ttl, proto, _sum, src, dst = _ip.unpack_from(payload)
    if vihl >> 4 != 4:
        return "ip_version"
    ihl = (vihl & 0xF) * 4
    if ihl < 20 or ihl > n:
        return "ip_header_length"
    if total < ihl or total > n:
        return "ip_length"
    if checksum(payload[:ihl]) != 0:
        return "ip_checksum"
    if frag & 0x3FFF:            # MF set, or a nonzero offset
        return "ip_fragment"
    return IPv4(src, dst, proto, ihl, payload[:total], ttl)


def ipv4(src, dst, proto, payload, ttl=64, ident=0):
    """An IPv4 header (no options, DF set) followed by payload."""
    total = 20 + len(payload)
    hdr = bytearray(_ip.pack(0x45, 0, total, ident & 0xFFFF, 0x4000, ttl, proto, 0, src, dst))
    struct.pack_into("!H", hdr, 10, checksum(hdr))
    return bytes(hdr) + bytes(payload)


# ---- ICMP echo -----------------------------------------------------------

def echo_reply(icmp):
    """The ICMP echo reply to the echo request `icmp` (the ICMP message, with
    its header), or a str naming why it is refused: "icmp_short",
    "icmp_checksum", "icmp_not_echo" (other types are counted, not answered)."""
    if len(icmp) < 8:
        return "icmp_short"
    if checksum(icmp) != 0:
        return "icmp_checksum"
    if icmp[0] != ICMP_ECHO_REQUEST or icmp[1] != 0:
        return "icmp_not_echo"
    reply = bytearray(icmp)
    reply[0] = ICMP_ECHO_REPLY
    reply[2:4] = b"\0\0"
    struct.pack_into("!H", reply, 2, checksum(reply))
    return bytes(reply)


def tcp_checksum(src, dst, segment):
    """The TCP checksum of segment (checksum field included as it is) with the
    IPv4 pseudo-header: 0 when the segment's checksum is right."""
    pseudo = src + dst + struct.pack("!BBH", 0, IPPROTO_TCP, len(segment))
    return checksum(pseudo + bytes(segment))
