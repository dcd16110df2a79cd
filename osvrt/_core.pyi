# The cffi module over the C core (built by osvrt/_build.py): `ffi` and `lib`
# are cffi objects whose attributes come from the cdef there.
from typing import Any

ffi: Any
lib: Any
