# The cffi module of the benchmarks' C peers (built by osvrt/bench/_build_peers.py).

from typing import Any

ffi: Any
lib: Any
