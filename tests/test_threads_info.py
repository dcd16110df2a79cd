"""osvrt.threads(): a snapshot of the live green threads."""
import pytest

import osvrt

from support import run


def test_threads_outside_a_runtime():
    with pytest.raises(RuntimeError, match="not inside an osvrt runtime"):
        osvrt.threads()


async def _scene(cpu_b):
    stop = osvrt.Event()

    async def spinner():
        while not stop.is_set():
            for _ in range(2000):
                pass
            await osvrt.yield_now()

    async def waiter():
        await stop.wait()

    s = osvrt.spawn(spinner, name="spinner")
    w = osvrt.spawn(waiter, name="waiter", cpu=cpu_b, priority=2.0)
    await osvrt.sleep(0.05)
    infos = osvrt.threads()
    stop.set()
    await s.join()
    await w.join()
    return osvrt.current().id, s.id, w.id, infos


def test_threads_snapshot(make_rt, two_cpus):
    rt = make_rt(cpus=list(two_cpus))
    me, sid, wid, infos = run(rt, _scene, two_cpus[1])
    by_id = {i.id: i for i in infos}
    assert [i.id for i in infos] == sorted(by_id)
    assert {me, sid, wid} <= by_id.keys()
    mine = by_id[me]
    assert mine.state == "running" and isinstance(mine, osvrt.ThreadInfo)
    spin, wait = by_id[sid], by_id[wid]
    assert spin.name == "spinner" and spin.state in ("queued", "running")
    assert spin.runtime > 0.001                 # it has computed for ~50 ms
    assert wait.name == "waiter" and wait.state == "waiting"
    assert wait.cpu == two_cpus[1] and wait.pinned and wait.priority == 2.0
    assert wait.runtime < spin.runtime
    assert not any(i.name.startswith("osvrt-balancer") for i in infos)
    assert set(infos[0]._fields) == {"name", "id", "state", "cpu", "runtime", "pinned",
                                     "priority"}
