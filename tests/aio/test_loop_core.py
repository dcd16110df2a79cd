"""The asyncio loop's turn in C (osvrt/_engine/aio.c, LoopCore): call_soon
makes real asyncio Handles, run_once keeps asyncio's rules (only what was
ready runs in a turn, cancelled handles are skipped, a callback's Exception
goes to the exception handler, SystemExit/KeyboardInterrupt leave the loop
with the rest of the queue kept), and debug mode uses asyncio's own code."""
import asyncio
import contextvars
import gc
import socket

import pytest

import osvrt
from osvrt import _engine

BOUND = 20.0


def run(coro_fn, *args, debug=False):
    with asyncio.Runner(debug=debug, loop_factory=osvrt.new_event_loop) as r:
        return r.run(asyncio.wait_for(coro_fn(*args), BOUND))


def test_call_soon_is_the_c_core_outside_debug_mode_and_asyncios_in_it():
    async def main():
        loop = asyncio.get_running_loop()
        return getattr(loop.call_soon, "__self__", None)

    assert isinstance(run(main), _engine.LoopCore)
    assert not isinstance(run(main, debug=True), _engine.LoopCore)


def test_call_soon_makes_asyncio_handles_that_cancel_and_carry_their_context():
    var = contextvars.ContextVar("var", default="outer")

    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        h1 = loop.call_soon(seen.append, "one")
        h2 = loop.call_soon(seen.append, "cancelled")
        h2.cancel()
        ctx = contextvars.copy_context()
        ctx.run(var.set, "inner")
        loop.call_soon(lambda: seen.append(var.get()), context=ctx)
        loop.call_soon(lambda: seen.append(var.get()))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return h1, h2, seen

    h1, h2, seen = run(main)
    assert isinstance(h1, asyncio.Handle) and not h1.cancelled() and h2.cancelled()
    assert seen == ["one", "inner", "outer"]
    assert "append" in repr(h1)


def test_callbacks_scheduled_by_a_callback_run_in_the_next_turn():
    async def main():
        loop = asyncio.get_running_loop()
        order = []

        def first():
            order.append("first")
            loop.call_soon(order.append, "scheduled-by-first")

        loop.call_soon(first)
        loop.call_soon(order.append, "second")
        for _ in range(3):
            await asyncio.sleep(0)
        return order

    assert run(main) == ["first", "second", "scheduled-by-first"]


def test_a_failing_callback_goes_to_the_exception_handler_and_the_turn_goes_on():
    async def main():
        loop = asyncio.get_running_loop()
        reports, seen = [], []
        loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))

        def boom():
            raise ValueError("boom")

        loop.call_soon(boom)
        loop.call_soon(seen.append, "after")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return reports, seen

    reports, seen = run(main)
    assert seen == ["after"]
    assert len(reports) == 1
    assert isinstance(reports[0]["exception"], ValueError)
    assert reports[0]["exception"].__traceback__ is not None
    assert reports[0]["message"].startswith("Exception in callback")
    assert isinstance(reports[0]["handle"], asyncio.Handle)


def test_keyboard_interrupt_leaves_the_loop_and_keeps_the_rest_of_the_queue():
    loop = osvrt.new_event_loop()
    seen = []
    try:
        def interrupt():
            raise KeyboardInterrupt

        loop.call_soon(interrupt)
        loop.call_soon(seen.append, "kept")
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert seen == []
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert seen == ["kept"]
    finally:
        loop.close()


def test_call_soon_after_close_and_bad_arguments_are_errors():
    loop = osvrt.new_event_loop()
    with pytest.raises(TypeError, match="callback"):
        loop.call_soon()
    with pytest.raises(TypeError, match="'later'"):
        loop.call_soon(print, later=True)
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)


def test_timers_readers_and_cancelled_readers_in_the_c_turn():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        got = loop.create_future()
        try:
            loop.add_reader(a.fileno(), lambda: got.done() or got.set_result(a.recv(10)))
            fired = loop.create_future()
            loop.call_later(0.01, fired.set_result, "timer")
            cancelled = [loop.call_later(0.005, print, "never") for _ in range(300)]
            for h in cancelled:
                h.cancel()
            b.send(b"ping")
            return await got, await fired, len(loop._scheduled)
        finally:
            loop.remove_reader(a.fileno())
            a.close()
            b.close()

    data, timer, left = run(main)
    assert (data, timer) == (b"ping", "timer")
    assert left < 300          # the heap was rebuilt without the cancelled timers


def test_the_core_is_collected_with_its_loop():
    import weakref
    loop = osvrt.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None        # the loop <-> core cycle is collectable (traverse/clear)
    assert not [o for o in gc.get_objects() if type(o) is _engine.LoopCore
                and o.closed]


def test_loop_core_refuses_a_handle_class_of_another_shape():
    class NotAHandle:
        __slots__ = ("_callback",)

    with pytest.raises(TypeError):
        _engine.LoopCore(None, [], print, NotAHandle, asyncio.Handle)


def test_debug_mode_switched_on_while_running_takes_asyncios_turn_at_once():
    async def main():
        loop = asyncio.get_running_loop()
        before = loop._core.debug, "call_soon" in vars(loop)
        loop.set_debug(True)
        await asyncio.sleep(0)
        during = loop._core.debug, "call_soon" in vars(loop)
        slow = []
        loop.slow_callback_duration = 0.0
        loop.set_exception_handler(lambda lp, ctx: slow.append(ctx))
        loop.call_soon(sum, [1])
        for _ in range(3):
            await asyncio.sleep(0)
        loop.set_debug(False)
        await asyncio.sleep(0)
        return before, during, (loop._core.debug, "call_soon" in vars(loop))

    before, during, after = run(main)
    assert before == (False, True)
    assert during == (True, False)
    assert after == (False, True)


def test_a_busy_loop_still_lets_the_workers_green_threads_run():
    """LoopCore.run yields to the worker every 16 busy turns: a green thread beside a
    loop whose ready queue never empties still runs."""
    async def main():
        loop = asyncio.get_running_loop()

        def spin():
            if not done.done():
                loop.call_soon(spin)

        async def green():
            return "ran"

        done = loop.create_future()
        loop.call_soon(spin)
        result = await loop.run_green(green)
        done.set_result(None)
        return result

    assert run(main) == "ran"


def test_create_task_is_the_c_core_unless_a_factory_or_debug_mode_is_set():
    var = contextvars.ContextVar("var", default="outer")

    async def child():
        return var.get(), asyncio.current_task().get_name()

    async def main():
        loop = asyncio.get_running_loop()
        in_c = isinstance(getattr(loop.create_task, "__self__", None), _engine.LoopCore)
        ctx = contextvars.copy_context()
        ctx.run(var.set, "inner")
        t = loop.create_task(child(), name="kid", context=ctx)
        got = await t
        made = []
        loop.set_task_factory(lambda lp, coro, **kw: made.append(1) or asyncio.Task(
            coro, loop=lp, **kw))
        with_factory = "create_task" in vars(loop)
        await loop.create_task(child())
        loop.set_task_factory(None)
        back = "create_task" in vars(loop)
        with pytest.raises(TypeError, match="'eager'"):
            coro = child()
            try:
                loop.create_task(coro, eager=True)
            finally:
                coro.close()
        return in_c, type(t), got, with_factory, made, back

    in_c, task_type, got, with_factory, made, back = run(main)
    assert in_c and task_type is asyncio.Task
    assert got == ("inner", "kid")
    assert not with_factory and made == [1] and back


def test_create_task_on_a_closed_loop_is_refused():
    loop = osvrt.new_event_loop()
    loop.close()

    async def nothing():
        pass

    coro = nothing()
    with pytest.raises(RuntimeError, match="closed"):
        loop.create_task(coro)
    coro.close()


def test_create_future_and_get_debug_are_the_c_core_and_follow_set_debug():
    """Every Future and Task asks loop.get_debug() as it is made: the core
    answers from its flag, which set_debug keeps equal to the loop's."""
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        seen = [loop.get_debug()]
        loop.set_debug(True)
        seen.append(loop.get_debug())
        debug_fut = loop.create_future()     # made in debug mode: it records its origin
        loop.set_debug(False)
        seen.append(loop.get_debug())
        return (type(fut), fut.get_loop() is loop, seen, debug_fut._source_traceback is not None,
                getattr(loop.create_future, "__self__", None))

    kind, same_loop, seen, traced, owner = run(main)
    assert kind is asyncio.Future and same_loop
    assert seen == [False, True, False] and traced
    assert isinstance(owner, _engine.LoopCore)


def test_futures_and_tasks_made_in_two_steps_belong_to_their_loop():
    """create_future and create_task (no name, no context) make the C Future
    and Task by their __new__ and __init__, with one {"loop": loop} dict for
    all (aio.c, two_step_new): each is the loop's, the shared dict stays
    {"loop": loop} with no reference gained, no coroutine or object is kept,
    and a Future or Task class with a Python __init__ or __new__, or a
    metaclass __call__, is called as usual, with every keyword."""
    import sys
    import weakref

    class Traced(asyncio.Future):             # a Python __init__: called as usual
        def __init__(self, **kw):
            self.kw = dict(kw)
            kw["loop"] = "changed"             # its own copy: never the core's dict
            super().__init__(loop=self.kw["loop"])

    class OwnNew(asyncio.Future):             # its own __new__: called as usual
        def __new__(cls, *args, **kw):
            self = super().__new__(cls)
            self.made_by_new = kw
            return self

    calls = []

    class Meta(type):                         # a metaclass __call__: called as usual
        def __call__(cls, *args, **kw):
            calls.append(kw)
            return super().__call__(*args, **kw)

    class MetaFuture(asyncio.Future, metaclass=Meta):
        pass

    class StrictTask(asyncio.Task):           # needs every keyword create_task passes
        def __init__(self, coro, *, loop, name, context):
            super().__init__(coro, loop=loop, name=name, context=context)

    async def child():                        # a name: the task itself would make a cycle
        return asyncio.current_task().get_name()

    def shared_dict(core, loop):
        found = [o for o in gc.get_referents(core) if type(o) is dict and o.get("loop") is loop]
        assert len(found) == 1, found
        return found[0]

    async def make_some(loop, coros):
        futs = [loop.create_future() for _ in range(1000)]
        tasks = []
        for _ in range(100):
            coro = child()
            coros.append(weakref.ref(coro))
            tasks.append(loop.create_task(coro))
        done = [await t for t in tasks]
        return (all(f.get_loop() is loop and type(f) is asyncio.Future for f in futs)
                and all(t.get_loop() is loop and d == t.get_name() for t, d in zip(tasks, done))
                and all(t.get_name().startswith("Task-") for t in tasks))

    async def main():
        loop = asyncio.get_running_loop()
        core = loop.loop_core
        fast = core.two_step
        kw = shared_dict(core, loop)
        coros = []
        await make_some(loop, coros)          # warm: what a first round leaves is not a leak
        await asyncio.sleep(0)                # out of the wake-up (its Handle holds a task)
        gc.collect()
        refs, kw_refs = sys.getrefcount(loop), sys.getrefcount(kw)
        coros.clear()
        mine = await make_some(loop, coros)
        await asyncio.sleep(0)
        gc.collect()
        leaked = (sys.getrefcount(loop) - refs, sys.getrefcount(kw) - kw_refs,
                  sum(r() is not None for r in coros))
        kept = kw == {"loop": loop}
        made = []
        for cls in (Traced, OwnNew, MetaFuture):
            core.bind_future(cls)
            made.append((core.two_step[0], loop.create_future(), loop.create_future()))
        core.bind_task(StrictTask)
        strict_task = loop.create_task(child())
        strict = (core.two_step[1] or type(strict_task) is not StrictTask, await strict_task)
        core.bind_future(asyncio.Future)
        core.bind_task(asyncio.Task)
        return (fast, mine, leaked, kept, made, strict, core.two_step,
                loop.create_future().get_loop() is loop)

    fast, mine, leaked, kept, made, strict, back, after = run(main)
    assert fast == (True, True)
    assert mine and leaked == (0, 0, 0) and kept
    (t_fast, t1, t2), (o_fast, o1, _), (m_fast, m1, m2) = made
    assert not (t_fast or o_fast or m_fast)
    assert t1.kw == t2.kw == {"loop": t1.get_loop()} and t1.get_loop() is t2.get_loop()
    assert type(o1).__name__ == "OwnNew" and o1.made_by_new == {"loop": o1.get_loop()}
    assert calls == [{"loop": m1.get_loop()}] * 2 and m2.get_loop() is m1.get_loop()
    assert strict[0] is False and strict[1].startswith("Task-")
    assert back == (True, True) and after


def test_create_future_before_the_run_and_after_a_second_init_names_the_loop():
    """A Future made before the loop runs (no running loop to fall back on)
    is the loop's.  A LoopCore initialised again for another loop drops the
    dict that named the first (its two-step paths off until bound again):
    its Futures are the other loop's, before and after binding again."""
    from asyncio import events

    from osvrt.aio.loop import _Handle

    loop = osvrt.new_event_loop()
    other = osvrt.new_event_loop()
    try:
        assert loop.create_future().get_loop() is loop
        core = _engine.LoopCore(loop, loop._ready, loop._callback_failed, _Handle, events.Handle)
        core.bind_future(asyncio.Future)
        first = (core.two_step, core.create_future().get_loop() is loop)
        core.__init__(other, other._ready, other._callback_failed, _Handle, events.Handle)
        second = (core.two_step, core.create_future().get_loop() is other)
        core.bind_future(asyncio.Future)
        third = (core.two_step, core.create_future().get_loop() is other)
    finally:
        other.close()
        loop.close()
    assert first == ((True, False), True)
    assert second == ((False, False), True)
    assert third == ((True, False), True)


def test_the_park_and_wake_run_no_python_frame():
    """Outside debug mode the loop thread's turns, parks and yields are
    LoopCore.run's, in C: between two callbacks no Python function of the
    loop runs (the Python park was ~6,000 instructions of frames a wake)."""
    import sys
    import threading

    import osvrt.aio.loop              # not only through another test's import

    loop_code = {f.__code__ for f in vars(osvrt.aio.loop.OsvrtEventLoop).values()
                 if hasattr(f, "__code__")}

    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        def profile(frame, event, arg):
            if event == "call" and frame.f_code in loop_code:
                seen.append(frame.f_code.co_name)

        sys.setprofile(profile)
        try:
            for _ in range(3):
                await asyncio.sleep(0.001)             # a park that a timer ends
            woke = loop.create_future()                # a park that another thread ends
            threading.Timer(0.01, loop.call_soon_threadsafe,
                            (woke.set_result, "woken")).start()
            got = await woke
        finally:
            sys.setprofile(None)
        # the loop thread's coroutine is resumed at its one await of the
        # C run; call_soon_threadsafe's frames are the other thread's;
        # call_at is the task's own (asyncio.sleep makes its timer), not the park's
        return got, [n for n in seen if n not in ("_loop_thread", "call_soon_threadsafe",
                                                  "_write_to_self", "_idle_ticket", "call_at")]

    got, frames = run(main)
    assert got == "woken"
    assert frames == []


def test_turning_debug_mode_on_while_parked_ends_the_c_run_and_asyncio_turns_go_on():
    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(0.001, loop.set_debug, True)
        await asyncio.sleep(0.01)          # parked in C when the timer turns debug on
        in_debug = loop.get_debug(), "call_soon" in vars(loop)
        await asyncio.sleep(0.001)         # a park in asyncio's turn (loop._idle)
        loop.set_debug(False)
        await asyncio.sleep(0.001)         # and back in C
        return in_debug, "call_soon" in vars(loop)

    assert run(main) == ((True, False), True)
