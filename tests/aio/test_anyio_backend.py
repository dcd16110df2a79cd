"""The anyio backend "osvrt" (osvrt.anyio): anyio.run(backend="osvrt"),
sniffio's name inside it, anyio's primitives, task groups, threads, sockets,
httpx through it, anyio's pytest plugin with anyio_backend = "osvrt", and
its options.  Loopback only."""
import asyncio
import os
import subprocess
import sys
import textwrap
import threading

import pytest

# Not importorskip: both are in the test extra, and a skip here once hid
# every test of this file from CI (sniffio was missing there).
import anyio
import sniffio

import osvrt
import osvrt.anyio  # noqa: F401  (registers the backend)
from osvrt import anyio_names

BOUND = 30.0


def run(fn, *args, **options):
    async def bounded():
        with anyio.fail_after(BOUND):
            return await fn(*args)
    return anyio.run(bounded, backend="osvrt", backend_options=options)


def test_the_backend_runs_on_osvrts_loop_and_sniffio_says_osvrt():
    async def main():
        loop = asyncio.get_running_loop()
        seen = [sniffio.current_async_library()]

        async def child():
            await anyio.sleep(0)
            seen.append(sniffio.current_async_library())

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(child)
        return type(loop).__name__, seen, anyio.get_current_task().name

    name, seen, task = run(main)
    assert name == "OsvrtEventLoop"
    assert seen == ["osvrt"] * 4
    assert task.endswith("bounded")
    # the name ends with the run
    with pytest.raises(sniffio.AsyncLibraryNotFoundError):
        sniffio.current_async_library()


def test_primitives_cancel_scopes_and_task_groups():
    async def main():
        lock, event, sem = anyio.Lock(), anyio.Event(), anyio.Semaphore(2)
        send, receive = anyio.create_memory_object_stream(10)
        order = []

        async def producer():
            async with send:
                for i in range(5):
                    async with lock, sem:
                        await send.send(i)
            event.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            async with receive:
                async for item in receive:
                    order.append(item)
            await event.wait()
        with anyio.move_on_after(0.01) as scope:
            await anyio.sleep(10)
        with pytest.raises(ExceptionGroup) as caught:
            async with anyio.create_task_group() as tg:
                async def fail():
                    raise KeyError("x")
                tg.start_soon(anyio.sleep, 10)
                tg.start_soon(fail)
        return order, scope.cancelled_caught, caught.value.exceptions

    order, timed_out, errors = run(main)
    assert order == [0, 1, 2, 3, 4]
    assert timed_out
    assert [type(e) for e in errors] == [KeyError]


def test_threads_come_back_through_the_osvrt_backend():
    """to_thread runs on a worker thread; from_thread.run/run_sync inside it
    return to the loop with sniffio saying "osvrt" (anyio's asyncio backend
    would say "asyncio" there)."""
    async def main():
        loop_thread = threading.get_ident()

        def in_worker():
            assert threading.get_ident() != loop_thread
            async def back():
                return sniffio.current_async_library(), threading.get_ident()
            return (anyio.from_thread.run(back),
                    anyio.from_thread.run_sync(sniffio.current_async_library),
                    anyio.from_thread.run_sync(lambda: type(anyio.lowlevel.current_token()
                                                            ).__name__))

        (lib, ident), lib_sync, token = await anyio.to_thread.run_sync(in_worker)
        assert ident == loop_thread
        return lib, lib_sync, token

    assert run(main) == ("osvrt", "osvrt", "EventLoopToken")


def test_tcp_sockets_and_httpx_through_the_backend():
    httpx = pytest.importorskip("httpx")

    async def main():
        async def handle(stream):
            async with stream:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += await stream.receive()
                body = request.split(b" ")[1]
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                  b"Connection: close\r\n\r\n%s" % (len(body), body))

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(b"GET /raw HTTP/1.1\r\n\r\n")
                raw = b""
                while not raw.endswith(b"/raw"):
                    raw += await s.receive()
            async with httpx.AsyncClient() as client:
                replies = [await client.get(f"http://127.0.0.1:{port}/{i}") for i in range(3)]
            tg.cancel_scope.cancel()
        return raw, [(r.status_code, r.text) for r in replies]

    raw, replies = run(main)
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert replies == [(200, "/0"), (200, "/1"), (200, "/2")]


def test_httpcore_rejects_the_name_without_the_adaptation():
    """Why osvrt.anyio adapts httpcore: its own choice refuses "osvrt"."""
    pytest.importorskip("httpx")
    import httpcore._synchronization as sync

    adapted = sync.current_async_library
    assert adapted._osvrt_adapted
    original = adapted.__wrapped__

    async def main():
        with pytest.raises(RuntimeError, match="unsupported async environment"):
            original()
        return adapted()

    assert run(main) == "asyncio"
    # outside the osvrt backend the answer is httpcore's own
    async def plain():
        return adapted()
    assert anyio.run(plain) == "asyncio"


def test_cpus_gives_the_loops_runtime_more_workers():
    async def main():
        loop = asyncio.get_running_loop()
        cpus = loop.runtime.cpus

        async def where():
            return osvrt.current().cpu, threading.current_thread().name

        async def join_other():
            return await osvrt.spawn(where, cpu=cpus[1]).join()

        return cpus, await loop.run_green(where), await loop.run_green(join_other)

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    cpus, here, there = run(main, cpus=2, stall_threshold=None)
    assert len(cpus) == 2
    assert here == (cpus[0], threading.current_thread().name)
    assert there == (cpus[1], f"osvrt-cpu{cpus[1]}")


@pytest.mark.parametrize("options, error, words", [
    ({"cpus": 0}, ValueError, "cpus=0"),
    ({"cpus": "2"}, ValueError, "'2'"),
    ({"cpus": True}, ValueError, "True"),
    ({"cpus": [0, 0]}, ValueError, "twice"),
    ({"cpus": 10**6}, ValueError, "1000000"),
    ({"cpu": 10**6}, ValueError, "1000000"),
    ({"cpu": True}, ValueError, "True"),      # True == 1: it passed the membership check
    ({"cpu": 0.0}, ValueError, "0.0"),
    ({"loop_factory": asyncio.new_event_loop}, TypeError, "backend='asyncio'"),
    ({"use_uvloop": True}, TypeError, "use_uvloop"),
    ({"cpuz": 1}, TypeError, "'cpuz'"),
    ({"debug": "yes"}, TypeError, "'yes'"),
])
def test_bad_options_are_named_before_a_loop_exists(options, error, words):
    before = threading.active_count()
    with pytest.raises(error, match=words.replace("(", r"\(").replace("[", r"\[")):
        anyio.run(anyio.sleep, 0, backend="osvrt", backend_options=options)
    assert threading.active_count() == before
    with pytest.raises(TypeError, match="dict"):
        osvrt.anyio.loop_factory_for([("cpus", 1)])


def test_debug_and_runtime_options_reach_the_loop():
    async def main():
        loop = asyncio.get_running_loop()
        return loop.get_debug(), loop.runtime.cpus

    debug, cpus = run(main, debug=True, stats_file=False)
    assert debug and len(cpus) == 1


_PLUGIN_TEST = '''
import asyncio, pytest, sniffio

@pytest.fixture
def anyio_backend():
    return "osvrt"

@pytest.mark.anyio
async def test_inside():
    assert sniffio.current_async_library() == "osvrt"
    assert type(asyncio.get_running_loop()).__name__ == "OsvrtEventLoop"
'''


def test_anyios_pytest_plugin_accepts_the_osvrt_backend(tmp_path):
    """No import of osvrt.anyio in the test module: osvrt's own pytest plugin
    makes the name loadable."""
    (tmp_path / "test_inside.py").write_text(textwrap.dedent(_PLUGIN_TEST))
    proc = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_inside.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_the_backend_module_is_one_module_under_two_names():
    import importlib
    mod = importlib.import_module(anyio_names.BACKEND_MODULE)
    from osvrt.aio import anyio_backend
    assert mod is anyio_backend
    assert anyio._core._eventloop.get_async_backend("osvrt") is osvrt.anyio.OsvrtBackend


_NO_SNIFFIO = '''
import sys
sys.modules["sniffio"] = None          # as if it were not installed
import anyio
from osvrt import anyio_names
anyio_names.install()                    # the name, as osvrt's pytest plugin installs it

async def main():
    return 1

try:
    anyio.run(main, backend="osvrt")
except LookupError as e:                 # anyio's own error, ours as its cause
    print("run:", repr(e.__cause__))
try:
    import osvrt.anyio
except ImportError as e:
    print("import:", e)
'''


def test_without_sniffio_the_backend_refuses_to_load_and_says_why():
    """Without sniffio, anyio would answer "asyncio" inside the backend:
    loading it fails instead, naming sniffio and the extra that brings it."""
    proc = subprocess.run([sys.executable, "-P", "-c", _NO_SNIFFIO], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    for line in lines:
        assert "needs sniffio" in line and "pip install 'osvrt[anyio]'" in line, proc.stdout


_LATE_HTTPCORE = '''
import osvrt.anyio, sys
assert "httpcore" not in sys.modules
import anyio, httpx

async def main():
    async def handle(stream):
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n"
                              b"Connection: close\\r\\n\\r\\nok")
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/")
        tg.cancel_scope.cancel()
    return r.text

print(anyio.run(main, backend="osvrt"))
'''


def test_httpcore_loaded_after_osvrt_anyio_is_adapted_when_it_loads():
    pytest.importorskip("httpx")
    proc = subprocess.run([sys.executable, "-P", "-c", _LATE_HTTPCORE], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("cpu", [True, 1.0])
def test_a_cpu_that_only_compares_equal_to_an_id_is_refused_up_front(cpu):
    # True == 1 and 1.0 == 1 passed the membership check; the loop's own check
    # refused them later, after anyio had started (a task destroyed pending).
    with pytest.raises(ValueError, match=r"backend_options\['cpu'\]"):
        osvrt.anyio.loop_factory_for({"cpu": cpu, "cpus": 2})
