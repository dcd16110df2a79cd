"""osvrt as an asyncio event loop (issue #20).

    import asyncio, osvrt
    asyncio.run(main(), loop_factory=osvrt.new_event_loop)          # Python 3.12+
    with asyncio.Runner(loop_factory=osvrt.new_event_loop) as r:    # 3.11+
        r.run(main())
    anyio.run(main, backend="asyncio",
              backend_options={"loop_factory": osvrt.new_event_loop})

See osvrt/aio/loop.py and docs/api.md ("asyncio event loop") for how the loop
runs on the runtime and how it differs from uvloop."""
from .loop import OsvrtEventLoop, new_event_loop
from .percpu import run_per_cpu

__all__ = ["OsvrtEventLoop", "new_event_loop", "run_per_cpu"]
