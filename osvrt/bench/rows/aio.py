"""The asyncio-loop rows (issue #20): osvrt.new_event_loop against uvloop and
asyncio's own loop, same rounds.  The workloads live in osvrt.aio.bench
(`python -m osvrt.aio.bench` runs them alone, and counts instructions)."""
from ...aio import bench as aio
from ..catalog import row


@row("aio_handoff", order=200, full={"aio_handoff": 20_000}, quick={"aio_handoff": 5_000})
def aio_handoff(cpus, sizes):
    return aio.measure_handoff(cpus, sizes)


@row("aio_spawn", order=210, full={"aio_spawn": 20_000}, quick={"aio_spawn": 5_000})
def aio_spawn(cpus, sizes):
    return aio.measure_spawn(cpus, sizes)


@row("aio_http", order=220, full={"aio_http_s": 3}, quick={"aio_http_s": 1})
def aio_http(cpus, sizes):
    return aio.measure_http(cpus, sizes)
