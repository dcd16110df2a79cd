"""ARP for one stack (RFC 826): answer requests for our address, learn the
senders on our link's subnet that ask us, resolve next hops with a bounded
cache, retry a request every RETRY_S up to TRIES times, and hold the packets
that wait for an answer (at most QUEUE per address and PENDING addresses;
dropped and counted when no answer came, or no room was left).

Bounded because the other side of the link chooses what we see: every
sender address of a request, every source of an echo request is one it
picked.  A packet for an address off the subnet is dropped and counted: the
stack has no router, so no ARP answer could come for it.

State owner: the stack's worker (every call comes from a green thread of
the stack's CPU), so the cache is a plain dict.  Time is the stack's
monotonic clock in nanoseconds.
"""
from . import wire

RETRY_NS = 1_000_000_000        # a request every second (as Linux's default retrans_time)
TRIES = 3                       # then the address is unreachable (Linux: mcast_solicit 3)
QUEUE = 64                      # packets held per unresolved address
LIFETIME_NS = 300 * 1_000_000_000   # an entry is trusted this long after it was last confirmed
CACHE = 1024                    # entries at most: then the expired, then the oldest, go
PENDING = 256                   # unresolved addresses with packets held, at most
NEVER = (1 << 63) - 1


class _Pending:
    __slots__ = ("packets", "tries", "next_ns")

    def __init__(self):
        self.packets = []
        self.tries = 0
        self.next_ns = 0


class Arp:
    """Resolution and replies for the address `ip` (4 bytes) of `mac`.
    send_frame(frame) puts a frame on the link; unreachable(ip) is told when
    an address did not answer TRIES requests; learned(ip, mac, expires_ns),
    when given, is told every entry made or confirmed (the C link's copy of
    the next hops follows the cache through it)."""

    def __init__(self, mac, ip, send_frame, unreachable, learned=None, *,
                 on_link=lambda ip: True, deadline_moved=lambda: None):
        self.mac = mac
        self.ip = ip
        self._send = send_frame
        self._unreachable = unreachable
        self._learned = learned
        self._on_link = on_link          # on_link(ip bytes): on our subnet
        # Told when a request goes out for a new address: its retry is a
        # deadline the owner's timer may not be sleeping towards yet.
        self._deadline_moved = deadline_moved
        self.cache = {}                 # ip bytes -> (mac, confirmed_ns), oldest first
        self._pending = {}              # ip bytes -> _Pending
        self.counters = {"requests_in": 0, "replies_out": 0, "requests_out": 0,
                         "replies_in": 0, "announcements": 0, "unresolved_drops": 0,
                         "queue_full_drops": 0, "pending_full_drops": 0,
                         "off_link_drops": 0, "ignored": 0, "malformed": 0}

    # ---- input ----

    def input(self, payload, now_ns):
        parsed = wire.parse_arp(payload)
        c = self.counters
        if isinstance(parsed, str):
            c["malformed"] += 1
            return
        oper, sha, spa, _tha, tpa = parsed
        if spa == self.ip and sha != self.mac:
            c["ignored"] += 1                  # someone else claims our address: not learned
            return
        # RFC 826's merge: refresh a sender we know; add it if the packet is
        # for us, and it is on our subnet (where a next hop can be).
        if spa != b"\0\0\0\0" and (spa in self.cache or (tpa == self.ip and self._on_link(spa))):
            self._learn(spa, sha, now_ns)
        if tpa != self.ip:
            c["ignored"] += 1
            return
        if oper == wire.ARP_REQUEST:
            c["requests_in"] += 1
            reply = wire.arp(wire.ARP_REPLY, self.mac, self.ip, sha, spa)
            self._send(wire.ethernet(sha, self.mac, wire.ETH_P_ARP, reply))
            c["replies_out"] += 1
        elif oper == wire.ARP_REPLY:
            c["replies_in"] += 1

    def _learn(self, ip, mac, now_ns):
        cache = self.cache
        if cache.pop(ip, None) is None and len(cache) >= CACHE:
            self._make_room(now_ns)
        cache[ip] = (mac, now_ns)       # (re)inserted: the dict stays oldest-confirmed first
        if self._learned is not None:
            self._learned(ip, mac, now_ns + LIFETIME_NS)
        p = self._pending.pop(ip, None)
        if p is not None:
            for packet in p.packets:
                self._send(wire.ethernet(mac, self.mac, wire.ETH_P_IP, packet))

    def _make_room(self, now_ns):
        """Drop the expired entries, or else the oldest-confirmed one."""
        cache = self.cache
        for ip in [ip for ip, (_mac, at) in cache.items() if now_ns - at >= LIFETIME_NS]:
            del cache[ip]
        if len(cache) >= CACHE:
            del cache[next(iter(cache))]

    # ---- output ----

    def lookup(self, ip, now_ns):
        e = self.cache.get(ip)
        if e is not None and now_ns - e[1] < LIFETIME_NS:
            return e[0]
        return None

    def expiry(self, ip):
        """When the entry for ip stops being trusted (ns), or None."""
        e = self.cache.get(ip)
        return None if e is None else e[1] + LIFETIME_NS

    def hold(self, ip, packet, now_ns):
        """Keep packet (bytes) until ip resolves; send a request if none is out."""
        p = self._pending.get(ip)
        if p is None:
            if not self._on_link(ip):
                self.counters["off_link_drops"] += 1
                return
            if len(self._pending) >= PENDING:
                self.counters["pending_full_drops"] += 1
                return
            p = self._pending[ip] = _Pending()
        if len(p.packets) >= QUEUE:
            p.packets.pop(0)
            self.counters["queue_full_drops"] += 1
        p.packets.append(packet)
        if p.tries == 0:
            self._request(ip, p, now_ns)
            self._deadline_moved()

    def _request(self, ip, p, now_ns):
        p.tries += 1
        p.next_ns = now_ns + RETRY_NS
        req = wire.arp(wire.ARP_REQUEST, self.mac, self.ip, wire.ZERO_MAC, ip)
        self._send(wire.ethernet(wire.BROADCAST, self.mac, wire.ETH_P_ARP, req))
        self.counters["requests_out"] += 1

    def announce(self):
        """A gratuitous ARP request (sender = target = our address): peers that
        cached an old owner of the address update it."""
        req = wire.arp(wire.ARP_REQUEST, self.mac, self.ip, wire.ZERO_MAC, self.ip)
        self._send(wire.ethernet(wire.BROADCAST, self.mac, wire.ETH_P_ARP, req))
        self.counters["announcements"] += 1

    # ---- time ----

    def next_deadline(self):
        if not self._pending:
            return NEVER
        return min((p.next_ns for p in self._pending.values()), default=NEVER)

    def on_timer(self, now_ns):
        for ip, p in list(self._pending.items()):
            if p.next_ns > now_ns:
                continue
            if p.tries < TRIES:
                self._request(ip, p, now_ns)
                continue
            del self._pending[ip]
            self.counters["unresolved_drops"] += len(p.packets)
            self._unreachable(ip)

    def stats(self):
        return {**self.counters, "cache": len(self.cache), "pending": len(self._pending)}
