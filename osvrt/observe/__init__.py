"""Observability, apart from the runtime: traces (trace.py), the stall watchdog
(stall.py), threads() introspection (introspect.py), the stats file
(statsfile.py) and its viewer `python -m osvrt top` (top.py).  Their helpers:
the atomic words and seqlock of the stats file (shared_words.py), files
written safely at a path someone else may control (private_file.py), and
names escaped for a terminal (printable.py)."""
