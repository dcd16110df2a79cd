"""The user-space TCP stack's target runs (issue #19): 64 MiB echoed through
8 concurrent connections between kernel clients in a peer namespace and a
user_stack server, SHA-256 equal, on a clean link and through a relay at 2%
loss with 1% duplication and 2% reordering.  64 MiB runs in the long form
(OSVRT_SOAK=long); the short form echoes 8 MiB (tests/net_tcp runs smaller
sizes on every run).  Printed: seconds and the stack's retransmissions."""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "net_tcp"))
from tcp_support import OK, WHY  # noqa: E402
from test_stack_tcp import _echo_run  # noqa: E402

MODE = os.environ.get("OSVRT_SOAK", "short").strip().lower() or "short"
TOTAL = {"long": 64 << 20, "short": 8 << 20}.get(MODE, 0)
pytestmark = pytest.mark.skipif(not OK, reason=f"user_stack tests: {WHY}")


@pytest.mark.parametrize("lossy", [False, True], ids=["clean", "loss2pct"])
def test_echo_64mib_eight_connections(lossy):
    from osvrt.bench import netns
    with netns.Topology(relay=lossy) as topo:
        if lossy:
            topo.start_relay(loss=0.02, dup=0.01, reorder=0.02, seed=64)
        t0 = time.monotonic()
        stats = _echo_run(topo, 8, TOTAL // 8, limit=600)
        took = time.monotonic() - t0
        relay = topo.relay_counts() if lossy else {}
    print(f"\n{TOTAL >> 20} MiB through 8 connections ({'2% loss' if lossy else 'clean'}): "
          f"{took:.1f} s, retransmissions {stats['retransmissions']}, relay {relay}")
    assert stats["tcp"]["accepts"] == 8
    if lossy:
        assert relay["dropped"] > 0 and stats["retransmissions"] > 0
