"""osvrt.aio.run_per_cpu: one osvrt loop per CPU, each with its own
reuse_port listener (the per-core pattern); failures cancel the others."""
import asyncio
import os
import socket
import threading

import pytest

import osvrt
from osvrt.aio import run_per_cpu

TWO = len(os.sched_getaffinity(0)) >= 2


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not TWO, reason="needs 2 CPUs")
def test_one_loop_per_cpu_serves_one_port_together():
    port = _port()
    stop = threading.Event()
    listening = threading.Barrier(3)

    async def serve():
        loop = asyncio.get_running_loop()
        served = 0

        async def echo(reader, writer):
            nonlocal served
            served += 1
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(echo, "127.0.0.1", port, reuse_port=True)
        await asyncio.to_thread(listening.wait, 20)
        await asyncio.to_thread(stop.wait, 20)
        srv.close()
        return osvrt.current().cpu, threading.current_thread().name, served, type(loop).__name__

    def client():
        listening.wait(20)
        try:
            for i in range(64):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"%d\n" % i)
                    assert c.makefile("rb").readline() == b"%d\n" % i
        finally:
            stop.set()

    th = threading.Thread(target=client)
    th.start()
    try:
        results = run_per_cpu(serve, cpus=2, stall_threshold=None, stats_file=False)
    finally:
        stop.set()
        th.join(30)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    assert [r[0] for r in results] == cpus
    assert results[0][1] == threading.current_thread().name      # the caller runs the first
    assert results[1][1] == f"osvrt-loop-cpu{cpus[1]}"
    assert sum(r[2] for r in results) == 64
    assert all(r[2] > 0 for r in results)     # the kernel spread 64 connections over both
    assert {r[3] for r in results} == {"OsvrtEventLoop"}


@pytest.mark.skipif(not TWO, reason="needs 2 CPUs")
def test_a_failing_loop_cancels_the_others_and_its_error_is_raised():
    cancelled = []

    async def main():
        if threading.current_thread() is not threading.main_thread():
            await asyncio.sleep(0.05)
            raise KeyError("boom")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(ExceptionGroup) as caught:
        run_per_cpu(main, cpus=2, stats_file=False)
    assert [type(e) for e in caught.value.exceptions] == [KeyError]
    assert cancelled == [True]


@pytest.mark.parametrize("cpus, error", [(0, ValueError), ("2", ValueError), ([0, 0], ValueError)])
def test_bad_cpus_are_refused_before_any_loop(cpus, error):
    async def main():
        raise AssertionError("not reached")

    with pytest.raises(error):
        run_per_cpu(main, cpus=cpus)


def test_main_must_be_callable():
    with pytest.raises(TypeError, match="async function"):
        run_per_cpu(42)
