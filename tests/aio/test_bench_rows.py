"""The asyncio-loop rows reach `python -m osvrt bench` through the row
catalogue (osvrt/bench/rows/aio.py, @row), not through an edit of the CLI."""
import pytest

from osvrt.bench import catalog, cli


def test_aio_rows_are_registered_after_the_scheduler_and_udp_rows():
    keys = catalog.measure_keys()
    assert keys[-3:] == ("aio_handoff", "aio_spawn", "aio_http")
    assert cli.MEASURE_KEYS == keys
    specs = {r.key: r for r in catalog.rows()}
    assert [specs[k].order for k in keys[-3:]] == [200, 210, 220]
    assert specs["aio_handoff"].factory.__module__ == "osvrt.bench.rows.aio"


def test_aio_rows_sizes_and_measures():
    for mode, want in (("full", {"aio_handoff": 20_000, "aio_spawn": 20_000, "aio_http_s": 3}),
                       ("quick", {"aio_handoff": 5_000, "aio_spawn": 5_000, "aio_http_s": 1})):
        sizes = catalog.sizes(mode)
        assert {k: sizes[k] for k in want} == want
    measures = catalog.build_measures([0, 0], catalog.sizes("quick"),
                                      keys={"aio_handoff", "aio_spawn", "aio_http"})
    assert [m.key for m in measures] == ["aio_handoff", "aio_spawn", "aio_http"]
    assert all(m.osvrt.name == "osvrt" and {"asyncio", "uvloop"} <= {p.name for p in m.peers}
               for m in measures)


@pytest.mark.parametrize("argv, why", [
    (["--rounds", "0"], "argument --rounds: '0': give a whole number >= 1"),
    (["--handoff-n", "-1"], "argument --handoff-n: '-1': give a whole number >= 1"),
    (["--spawn-n", "0"], "argument --spawn-n: '0': give a whole number >= 1"),
    (["--duration", "-1"], "argument --duration: '-1': give a whole number >= 1"),
    (["--rows", ","], "--rows ',': names no row"),
    (["--rows", "handoff,nope"], "unknown rows ['nope']"),
])
def test_command_line_refuses_bad_counts_and_rows(capsys, argv, why):
    """`python -m osvrt.aio.bench`: --rounds 0 died on an empty median,
    --handoff-n -1 never ended its round, --duration -1 left wrk running,
    and an empty --rows ran nothing and exited 0; each is now a usage error."""
    from osvrt.aio import bench
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    assert why in capsys.readouterr().err
