"""osvrt.bench: osvrt measured against its peers on this host.

- peers.py: the workloads (osvrt's, the C pthread peers' from csrc/bench/peers.c,
  threading's, asyncio's, uvloop's, trio's, gevent's), one measured round each;
- measure.py: alternating rounds, medians and ratios (the method: same-run ratios, alternating rounds);
- cli.py: `python -m osvrt bench`, the table, the JSON and the PNG chart.

The pytest-benchmark suites in benchmarks/ import their workloads from
osvrt.bench.peers.  Nothing here is imported by `import osvrt`.
"""
