"""The floor under the aio_spawn row: what any asyncio-visible task costs.

The aio_spawn row of `python -m osvrt bench` (issue #20) holds
create_task + await of a no-op coroutine on osvrt's loop to >= 2x uvloop's
rate.  Whatever a loop does, two costs of each task are not the loop's:

- registration: asyncio.all_tasks() must list the task (asyncio.run and
  asyncio.Runner cancel what it lists at the end; anyio lists tasks through
  it), and on CPython 3.11-3.13 that is asyncio.tasks._register_task, an add
  to a WeakSet whose weak reference removes the task again when it dies;
- the coroutine itself: `_aio_nop()` made, run to its end, freed.

This script counts, with valgrind's callgrind (counts repeat on this noisy
host; wall-clock rates do not), the instructions per task of the row's own
work on uvloop (create_task + await, osvrt.aio.bench.instructions_unit),
of those two parts alone, each over its bare loop, and of osvrt's own
spawn + join of a no-op green thread (the engine's C path, no asyncio:
`python -m osvrt instructions --only spawn`).  If the two parts already
exceed half of uvloop's count, no task that asyncio can see reaches 2x
uvloop's rate on this Python, whatever runs it; if they leave less than
what osvrt's engine spends on a thread beyond its coroutine, osvrt's engine
with asyncio's registration added does not reach it either.

    .venv/bin/python -P benchmarks/aio_task_floor.py [--n 20000]
"""
import argparse
import os
import subprocess
import sys
import tempfile

from osvrt.aio import bench
from osvrt.bench import instructions

PARTS = {
    # each: its per-unit code, and the same loop without it (subtracted)
    "registration": (
        "for _ in range(n):\n    t = T()\n    tasks._register_task(t)\n    del t\n",
        "for _ in range(n):\n    t = T()\n    del t\n"),
    # run as a C Task runs it (PyIter_Send: no StopIteration raised and
    # caught in Python, which would add ~600 to the floor)
    "no-op coroutine": (
        "for _ in range(n):\n    c = nop()\n    for _ in c.__await__():\n        pass\n",
        "for _ in range(n):\n    pass\n"),
}
PRELUDE = ("import gc, sys\nfrom asyncio import tasks\ngc.disable()\nn = int(sys.argv[1])\n"
           "class T:\n    __slots__ = ('__weakref__',)\n"
           "async def nop():\n    return None\n"
           "def main():\n")


def count(code, n, timeout=600):
    """callgrind's instruction total for `python -P -c code n`."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, "-P", "-c", code, str(n)], check=True,
                       timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return bench._total(out)


def per_unit(body, n):
    """Instructions per iteration of body (inside a function, as a task's
    code runs): count(2n) - count(n), over n (start-up cancels)."""
    code = PRELUDE + "".join("    " + line + "\n" for line in body.splitlines()) + "main()\n"
    return (count(code, 2 * n) - count(code, n)) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="tasks per count (>= 1000)")
    a = ap.parse_args(argv)
    if a.n < 1000:
        ap.error(f"--n must be >= 1000, not {a.n}")
    row = bench.instructions_unit("uvloop", "spawn", a.n)
    budget = row / 2
    print(f"Python {sys.version.split()[0]}; instructions per task (callgrind, N={a.n})")
    print(f"  create_task + await on uvloop (the row)   {row:8,.0f}")
    print(f"  2x uvloop's rate allows                   {budget:8,.0f}")
    cost = {name: per_unit(body, a.n) - per_unit(bare, a.n)
            for name, (body, bare) in PARTS.items()}
    for name, c in cost.items():
        print(f"  {name:40s} {c:8,.0f}")
    floor = sum(cost.values())
    print(f"  the two together (the floor)              {floor:8,.0f}  "
          f"({'over the budget: out of reach' if floor > budget else 'within the budget'})")
    engine = instructions.per_unit("osvrt", "spawn", a.n)
    with_reg = engine + cost["registration"]
    print(f"  osvrt's own spawn + join (no asyncio)     {engine:8,.0f}")
    print(f"  ... plus asyncio's registration           {with_reg:8,.0f}  "
          f"({'over' if with_reg > budget else 'within'} the budget)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
