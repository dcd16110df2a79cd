"""Observability, apart from the runtime: traces (trace.py), the stall watchdog
(stall.py), threads() introspection (introspect.py), the stats file and its
viewer `python -m osvrt top` (top.py)."""
