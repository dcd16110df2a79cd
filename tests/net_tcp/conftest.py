"""Fixtures of the user-space stack's tests: network namespaces made per test
(osvrt/bench/netns.py: a stack namespace and a peer namespace joined by a
veth, or through a middle namespace with a lossy relay), addresses from
198.18.0.0/15, deleted after the test even when it fails.  Tests that need
them skip, with the reason, where CAP_NET_ADMIN/CAP_NET_RAW or `ip` is
missing."""
import pytest

from osvrt.bench import netns

from tcp_support import OK, WHY


@pytest.fixture
def topo():
    if not OK:
        pytest.skip(f"user_stack tests: {WHY}")
    with netns.Topology() as t:
        yield t


@pytest.fixture
def lossy_topo():
    if not OK:
        pytest.skip(f"user_stack tests: {WHY}")
    with netns.Topology(relay=True) as t:
        yield t
