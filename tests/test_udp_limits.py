"""udp_bind's two channel limits (issue 21, item 14): capacity 1..2**20 and
buffer_size 1..2**30; the default buffer_size is derived within the limit,
so the largest capacity never raises a ValueError about a buffer_size the
caller never passed."""
import pytest

import osvrt
import osvrt.net
from osvrt.bench import frames as testing
from osvrt.net.channels.udp import default_buffer_size

ok, why = testing.can_open_packet_socket()


def test_default_buffer_size_stays_within_the_c_limit():
    assert default_buffer_size(1) == 128 * 1024
    assert default_buffer_size(256) == 512 * 1024
    assert default_buffer_size(2**20) == 2**30
    for cap in (1, 64, 65, 2**19, 2**19 + 1, 2**20):
        assert 1 <= default_buffer_size(cap) <= 2**30


def _bind(**kw):
    async def main():
        ep = await osvrt.net.udp_bind(("127.0.0.1", 0), **kw)
        try:
            return ep.stats()
        finally:
            ep.close()
    return osvrt.run(main, cpus=1)


@pytest.mark.skipif(not ok, reason=f"osvrt.net needs CAP_NET_RAW ({why})")
def test_the_largest_capacity_binds_with_the_default_buffer():
    st = _bind(capacity=2**20)
    assert st["capacity"] == 2**20 and st["buffer_size"] == 2**30


@pytest.mark.skipif(ok, reason="checks the argument order without CAP_NET_RAW")
def test_the_largest_capacity_passes_the_checks_without_the_capability():
    with pytest.raises(PermissionError):     # the checks passed; only the capability is missing
        _bind(capacity=2**20)


@pytest.mark.parametrize("kw, message", [
    ({"capacity": 2**20 + 1}, r"capacity must be in 1\.\.1048576"),
    ({"capacity": 0}, r"capacity must be in 1\.\.1048576"),
    ({"buffer_size": 2**30 + 1}, r"buffer_size must be in 1\.\.1073741824"),
    ({"buffer_size": -1}, r"buffer_size must be in 1\.\.1073741824"),
])
def test_each_limit_is_named(kw, message):
    with pytest.raises(ValueError, match=message):
        _bind(**kw)
