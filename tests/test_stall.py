"""The stall detector: a green thread that runs too long without a trap is
reported (once, by name) and counted."""
import logging
import time

import pytest

import osvrt


def _busy(seconds):
    """Compute for `seconds` of this thread's CPU time: the detector charges CPU
    time, so on a loaded host a wall-clock loop could fall under the threshold."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _stall_records(caplog, name):
    return [r for r in caplog.records
            if r.name == "osvrt" and r.levelno == logging.WARNING and name in r.getMessage()]


def test_a_busy_loop_is_reported_once_with_its_name_and_counted(make_rt, caplog):
    caplog.set_level(logging.WARNING, logger="osvrt")
    rt = make_rt(stall_threshold=0.1)
    c = rt.cpus[-1]
    i = rt.cpus.index(c)
    before = [s["stalls"] for s in rt.stats()["cpus"]]

    async def hog():
        await osvrt.sleep(0.001)
        _busy(0.3)                     # no await for 300 ms
        await osvrt.sleep(0.2)         # give the watchdog time to look again
        return "done"

    assert rt.submit(hog, cpu=c, name="the-stalling-one").result(timeout=15) == "done"
    assert len(_stall_records(caplog, "the-stalling-one")) == 1
    after = [s["stalls"] for s in rt.stats()["cpus"]]
    assert after[i] - before[i] == 1


def test_a_thread_that_traps_often_is_not_reported(make_rt, caplog):
    caplog.set_level(logging.WARNING, logger="osvrt")
    # A threshold well above the 1 ms between traps, and above what a loaded
    # machine may add by taking the worker's OS thread away for a while.
    rt = make_rt(cpus=1, stall_threshold=0.5)

    async def polite():
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            _busy(0.001)
            await osvrt.yield_now()
        return "done"

    assert rt.submit(polite, name="the-polite-one").result(timeout=15) == "done"
    assert _stall_records(caplog, "the-polite-one") == []
    assert sum(s["stalls"] for s in rt.stats()["cpus"]) == 0


def test_the_threshold_is_honoured(make_rt, caplog):
    caplog.set_level(logging.WARNING, logger="osvrt")
    rt = make_rt(stall_threshold=2.0)

    async def hog():
        await osvrt.sleep(0.001)
        _busy(0.3)
        await osvrt.sleep(0.1)
        return "done"

    assert rt.submit(hog, name="short-enough").result(timeout=15) == "done"
    assert _stall_records(caplog, "short-enough") == []
    assert sum(s["stalls"] for s in rt.stats()["cpus"]) == 0


def test_stall_threshold_none_disables_the_detector(make_rt, caplog):
    caplog.set_level(logging.WARNING, logger="osvrt")
    rt = make_rt(stall_threshold=None)

    async def hog():
        await osvrt.sleep(0.001)
        _busy(0.3)
        await osvrt.sleep(0.1)
        return "done"

    assert rt.submit(hog, name="unwatched").result(timeout=15) == "done"
    assert _stall_records(caplog, "unwatched") == []
    assert sum(s["stalls"] for s in rt.stats()["cpus"]) == 0


def test_two_stalling_threads_are_each_reported(make_rt, caplog):
    caplog.set_level(logging.WARNING, logger="osvrt")
    rt = make_rt(cpus=1, stall_threshold=0.1)

    async def hog():
        await osvrt.sleep(0.001)
        _busy(0.3)
        await osvrt.sleep(0.1)

    async def main():
        a = osvrt.spawn(hog, name="stall-a")
        b = osvrt.spawn(hog, name="stall-b")
        await a.join()
        await b.join()

    rt.submit(main).result(timeout=15)
    assert len(_stall_records(caplog, "stall-a")) == 1
    assert len(_stall_records(caplog, "stall-b")) == 1
    assert rt.stats()["cpus"][0]["stalls"] == 2


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.1, float("nan"), float("inf")])
def test_bad_stall_threshold_is_a_value_error(bad):
    with pytest.raises(ValueError):
        osvrt.Runtime(cpus=1, stall_threshold=bad)


@pytest.mark.parametrize("bad", ["0.1", [0.1], True])
def test_non_number_stall_threshold_is_rejected(bad):
    with pytest.raises((TypeError, ValueError)):
        osvrt.Runtime(cpus=1, stall_threshold=bad)


def test_good_stall_thresholds_are_accepted():
    for good in (0.001, 1, 2.5, None):
        osvrt.Runtime(cpus=1, stall_threshold=good)
