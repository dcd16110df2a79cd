"""ARP for one stack (RFC 826): answer requests for our address, learn the
senders that ask us, resolve next hops with a small cache, retry a request
every RETRY_S up to TRIES times, and hold the packets that wait for an
answer (at most QUEUE per address; dropped and counted when no answer came).

State owner: the stack's worker (every call comes from a green thread of
the stack's CPU), so the cache is a plain dict.  Time is the stack's
monotonic clock in nanoseconds.
"""
from . import wire

RETRY_NS = 1_000_000_000        # a request every second (as Linux's default retrans_time)
TRIES = 3                       # then the address is unreachable (Linux: mcast_solicit 3)
QUEUE = 64                      # packets held per unresolved address
LIFETIME_NS = 300 * 1_000_000_000   # an entry is trusted this long after it was last confirmed
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

    def __init__(self, mac, ip, send_frame, unreachable, learned=None):
        self.mac = mac
        self.ip = ip
        self._send = send_frame
        self._unreachable = unreachable
        self._learned = learned
        self.cache = {}                 # ip bytes -> (mac, confirmed_ns)
        self._pending = {}              # ip bytes -> _Pending
        self.counters = {"requests_in": 0, "replies_out": 0, "requests_out": 0,
                         "replies_in": 0, "announcements": 0, "unresolved_drops": 0,
                         "queue_full_drops": 0, "ignored": 0, "malformed": 0}

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
        # RFC 826's merge: refresh a sender we know; add it if the packet is for us.
        if spa != b"\0\0\0\0" and (spa in self.cache or tpa == self.ip):
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
        self.cache[ip] = (mac, now_ns)
        if self._learned is not None:
            self._learned(ip, mac, now_ns + LIFETIME_NS)
        p = self._pending.pop(ip, None)
        if p is not None:
            for packet in p.packets:
                self._send(wire.ethernet(mac, self.mac, wire.ETH_P_IP, packet))

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
            p = self._pending[ip] = _Pending()
        if len(p.packets) >= QUEUE:
            p.packets.pop(0)
            self.counters["queue_full_drops"] += 1
        p.packets.append(packet)
        if p.tries == 0:
            self._request(ip, p, now_ns)

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
