"""The UDP bench rows run in both placements (issue #18): the one
osvrt.run(main) gives (nothing pinned) and the dedicated-CPU layout, each
row labelled with what it pinned."""
import pytest

from osvrt.bench import catalog
from osvrt.bench import placement as P
from osvrt.bench.rows import udp as udp_rows

UDP_ROWS = ("udp_rr", "udp_tps", "sockperf_p50", "sockperf_p99", "dnsperf_qps")


def test_run_placement_pins_nothing():
    pl = P.placement("run", [0, 1])
    assert (pl.client_cpu, pl.server_cpu, pl.runtime_cpus) == (None, None, None)
    assert "nothing pinned" in pl.label and "every CPU" in pl.label


def test_dedicated_placement_names_its_cpus():
    pl = P.placement("dedicated", [3, 5, 7])
    assert (pl.client_cpu, pl.server_cpu, pl.runtime_cpus) == (3, 5, [5])
    assert pl.net_options == {"cpu": 3}        # the classifier where the label says
    assert "CPU 3" in pl.label and "CPU 5" in pl.label


@pytest.mark.parametrize("name, cpus, match", [
    ("pinned", [0, 1], "placement must be one of"),
    (None, [0, 1], "placement must be one of"),
    ("dedicated", [0], "needs 2 CPUs"),
])
def test_bad_placement_is_named(name, cpus, match):
    with pytest.raises(ValueError, match=match):
        P.placement(name, cpus)


def test_every_udp_row_runs_in_both_placements():
    keys = catalog.measure_keys()
    for base in UDP_ROWS:
        assert base in keys and base + "_dedicated" in keys, base
        run = next(r for r in catalog.rows() if r.key == base).factory([0, 1], _sizes())
        ded = next(r for r in catalog.rows() if r.key == base + "_dedicated").factory(
            [0, 1], _sizes())
        assert "osvrt.run placement" in run.title and "nothing pinned" in run.notes
        assert "dedicated CPUs" in ded.title and "pinned to CPU 0" in ded.notes


def _sizes():
    s = {}
    for r in catalog.rows():
        s.update(r.full)
    return s


def test_row_orders_put_each_dedicated_row_after_its_twin():
    order = [k for k in catalog.measure_keys() if k.split("_dedicated")[0] in UDP_ROWS]
    for base in UDP_ROWS:
        assert order.index(base + "_dedicated") == order.index(base) + 1
    assert udp_rows.SUFFIX == {"run": "", "dedicated": "_dedicated"}


def test_command_line_refuses_an_unknown_placement(capsys):
    with pytest.raises(SystemExit) as e:
        P.main(["pinned", "rr"])
    assert e.value.code == 2
    assert "invalid choice: 'pinned'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, bad", [(["--rounds", "0"], "--rounds: '0'"),
                                       (["--transactions", "-5"], "--transactions: '-5'"),
                                       (["--rounds", "x"], "--rounds: 'x'")])
def test_command_line_refuses_a_count_below_one(capsys, argv, bad):
    """--rounds 0 died on an empty list (IndexError) and --transactions -5 in
    the C client (OverflowError); both are usage errors naming the value."""
    with pytest.raises(SystemExit) as e:
        P.main([*argv, "run", "rr"])
    assert e.value.code == 2
    assert f"argument {bad}: give a whole number >= 1" in capsys.readouterr().err


def _echo_rounds_seen(monkeypatch):
    """The Placement of each osvrt echo round the comparison runs, in order
    (skips the test where osvrt.net cannot run)."""
    from osvrt.bench import peers
    why = peers.udp_unavailable()
    if why is not None:
        pytest.skip(f"osvrt.net not available: {why}")
    seen = []
    real = P.osvrt_echo_round

    def spy(pl, client, reply=None, rt_options=None):
        seen.append(pl)
        return real(pl, client, reply, rt_options)
    monkeypatch.setattr(P, "osvrt_echo_round", spy)
    return seen


def test_compare_drains_runs_each_drain_against_the_kernel_peer(monkeypatch):
    """--drains: one osvrt contender per classifier drain, alternating with
    the kernel peer; each round's echo ran under the drain it names."""
    seen = _echo_rounds_seen(monkeypatch)
    r = P.compare_drains(P.placement("run"), "rr", rounds=2, n=50, window=1)
    # a warm-up round, then the order (kernel, thread, workers) turned around every round
    assert [pl.net_options.get("drain") for pl in seen] == \
        ["thread", "workers", "workers", "thread", "thread", "workers"]
    for d in ("thread", "workers"):
        assert r[f"{d}_ratio_ns"] > 0 and r[f"{d}_per_s"] > 0
        assert r[f"{d}_ratio_ns_min"] <= r[f"{d}_ratio_ns"] <= r[f"{d}_ratio_ns_max"]
    assert len(r["kernel_rounds"]) == 2 and r["warmup"] == 1
    assert r["kernel_ns"] > 0


def test_compare_rings_runs_each_ring_size_against_the_kernel_peer(monkeypatch):
    """--ring-frames: one osvrt contender per packet-ring size; each round's
    classifier had the ring it names."""
    import osvrt.net.channels.service as service
    seen = _echo_rounds_seen(monkeypatch)
    made = []                                 # the ring of each classifier made
    real_net = service.Net.__init__

    def recording(self, rt, **kw):
        made.append(kw.get("ring_frames"))
        real_net(self, rt, **kw)
    monkeypatch.setattr(service.Net, "__init__", recording)
    r = P.compare_rings(P.placement("run"), "rr", sizes=(512, 64), rounds=1, n=50, window=1)
    assert [pl.net_options.get("ring_frames") for pl in seen] == [512, 64, 64, 512]
    assert made == [512, 64, 64, 512]
    for f in (512, 64):
        assert r[f"ring{f}_per_s"] > 0
        assert r[f"ring{f}_ratio_ns_min"] <= r[f"ring{f}_ratio_ns"] <= r[f"ring{f}_ratio_ns_max"]


def test_compare_small_frames_runs_each_slot_size_against_the_kernel_peer(monkeypatch):
    """--small-frames: one osvrt contender per small_frame_size; each round's
    classifier had the rings it names (2048: one ring)."""
    seen = _echo_rounds_seen(monkeypatch)
    import osvrt.net.channels.service as service
    rings = []                                # the rings' frame sizes of each classifier made
    real_stats = service.Net.stats

    def recording(self):
        s = real_stats(self)
        rings.append([r["frame_size"] for r in s["rings"]])
        return s
    monkeypatch.setattr(service.Net, "stats", recording)
    r = P.compare_small_frames(P.placement("run"), "rr", sizes=(512, 2048), rounds=1, n=50,
                               window=1)
    assert [pl.net_options.get("small_frame_size") for pl in seen] == [512, 2048, 2048, 512]
    assert [512, 2048] in rings and [2048] in rings
    for s in (512, 2048):
        assert r[f"small{s}_per_s"] > 0
        assert r[f"small{s}_ratio_ns_min"] <= r[f"small{s}_ratio_ns"] <= r[f"small{s}_ratio_ns_max"]


def test_command_line_takes_one_comparison(capsys):
    assert P._sizes_argument("8192,1024") == (8192, 1024)
    with pytest.raises(SystemExit):
        P.main(["--ring-frames", "8192,4", "run", "rr"])
    assert "a ring has at least 8 frames, not 4" in capsys.readouterr().err
    assert P._frame_sizes_argument("512,2048") == (512, 2048)
    with pytest.raises(SystemExit):
        P.main(["--small-frames", "512,100", "run", "rr"])
    assert "a ring frame has at least 256 bytes, not 100" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        P.main(["--drains", "--ring-frames", "8192,1024", "run", "rr"])
    assert e.value.code == 2
    assert "give one of them" in capsys.readouterr().err
