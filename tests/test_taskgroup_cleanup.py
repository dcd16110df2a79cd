"""TaskGroup corner cases that asyncio.TaskGroup gets right (issue 21, items
4 and 5): a sibling is cancelled once, so the cleanup in its `finally:` runs
to the end; a child's exception keeps the __context__ and traceback it had,
with no Cancelled of the group's chained to it."""
import pytest

import osvrt

LIMIT = 10


class Boom(Exception):
    pass


async def _fail_after(delay, exc):
    await osvrt.sleep(delay)
    raise exc


@pytest.mark.parametrize("body_waits_in", ["aexit", "block"])
def test_a_sibling_cleanup_runs_to_the_end(body_waits_in):
    log = []

    async def sibling():
        try:
            await osvrt.sleep(3600)
        finally:
            log.append("cleanup began")
            # cleanup that awaits several times: a second cancel would cut it short
            for _ in range(5):
                await osvrt.sleep(0.02)
            log.append("cleanup ended")

    async def main():
        with osvrt.timeout(LIMIT):
            with pytest.raises(ExceptionGroup) as info:
                async with osvrt.TaskGroup() as g:
                    g.spawn(sibling)
                    g.spawn(_fail_after, 0.02, Boom("child"))
                    if body_waits_in == "block":
                        await osvrt.sleep(3600)
        return info.value

    eg = osvrt.run(main, cpus=1)
    assert [type(e) for e in eg.exceptions] == [Boom]
    assert log == ["cleanup began", "cleanup ended"]


def test_a_sibling_on_another_cpu_is_cancelled_once(two_cpus):
    log = []

    async def sibling():
        try:
            await osvrt.sleep(3600)
        finally:
            for _ in range(5):
                await osvrt.sleep(0.02)
            log.append("cleanup ended")

    async def main():
        with osvrt.timeout(LIMIT):
            with pytest.raises(ExceptionGroup):
                async with osvrt.TaskGroup() as g:
                    g.spawn(sibling, cpu=two_cpus[1])
                    g.spawn(_fail_after, 0.02, Boom("child"), cpu=two_cpus[0])
    osvrt.run(main, cpus=list(two_cpus))
    assert log == ["cleanup ended"]


@pytest.mark.parametrize("body_waits_in", ["aexit", "block"])
def test_a_child_exception_has_no_cancelled_context(body_waits_in):
    async def main():
        with osvrt.timeout(LIMIT):
            with pytest.raises(ExceptionGroup) as info:
                async with osvrt.TaskGroup() as g:
                    g.spawn(_fail_after, 0.02, Boom("child"))
                    if body_waits_in == "block":
                        await osvrt.sleep(3600)
        return info.value

    eg = osvrt.run(main, cpus=1)
    (boom,) = eg.exceptions
    assert boom.__context__ is None, repr(boom.__context__)
    # its traceback is the child's own: no TaskGroup frame of the body's wait
    names = []
    tb = boom.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "_fail_after" in names
    assert "_wait_for" not in names and "__aexit__" not in names, names


def test_a_child_exception_keeps_its_own_context():
    async def child():
        await osvrt.sleep(0.02)
        try:
            raise KeyError("first")
        except KeyError:
            raise Boom("while handling")

    async def main():
        with osvrt.timeout(LIMIT):
            with pytest.raises(ExceptionGroup) as info:
                async with osvrt.TaskGroup() as g:
                    g.spawn(child)
                    await osvrt.sleep(3600)
        return info.value

    (boom,) = osvrt.run(main, cpus=1).exceptions
    assert isinstance(boom.__context__, KeyError)
