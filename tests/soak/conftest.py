"""The soak suite: long runs that keep issue #11's defects fixed.

Two forms, chosen by the OSVRT_SOAK environment variable:

    pytest                                  # short form, part of the normal run (< 1 min)
    OSVRT_SOAK=long pytest tests/soak       # long form: minutes, the full counts
    OSVRT_SOAK=off pytest                   # skip the soak tests (or: pytest -m "not soak")

Every test here is marked `soak` and bounded in time; the counts of each
form are in SCALE below (the long form: 1,000,000 cross-CPU wake/wait cycles,
1,000,000 spawn+join, Event timeouts and cancels, 200 start/stop cycles).
Each test prints its figures (pytest -s shows them).
"""
import os

import pytest

MODE = os.environ.get("OSVRT_SOAK", "short").strip().lower() or "short"
if MODE not in ("short", "long", "off"):
    raise pytest.UsageError(f"OSVRT_SOAK={MODE!r}: short (default), long or off")

SCALE = {
    "short": dict(wake_cycles=100_000, leak_ops=100_000, storm_s=1.5, submitters=8,
                  submits=2_000, start_stop=50),
    "long": dict(wake_cycles=1_000_000, leak_ops=1_000_000, storm_s=20.0, submitters=8,
                 submits=50_000, start_stop=200),
}.get(MODE)


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    skip = pytest.mark.skip(reason="OSVRT_SOAK=off")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.soak)
            if MODE == "off":
                item.add_marker(skip)


@pytest.fixture
def scale():
    return dict(SCALE, mode=MODE)


@pytest.fixture
def report(request):
    """report(**figures): print this test's figures on one line."""
    def report(**figures):
        text = ", ".join(f"{k}={v}" for k, v in figures.items())
        print(f"\nSOAK[{MODE}] {request.node.name}: {text}")
    return report
