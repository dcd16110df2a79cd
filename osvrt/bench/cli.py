"""`python -m osvrt bench`: the OSv paper's comparison, on this host.

Measures osvrt against C pthreads (csrc/bench/peers.c), Python threading,
asyncio and, when installed, uvloop, trio and gevent, in alternating rounds
(measure.py), then prints a table shaped like the OSv paper's, with each
median's spread over the rounds and the conditions of the run, writes every
raw figure as JSON and, when matplotlib is installed (`pip install
'osvrt[plot]'`), draws a PNG chart of the ratios osvrt/peer.  rich, when
installed (`osvrt[bench]`), draws the tables and the progress bar.

The package, by job: catalog.py + rows/ (what is measured: one declarative
entry per row), measure.py (alternating rounds, medians, ratios),
progress.py, report.py (the text), plot.py (the chart), and this module
(the command)."""
import datetime
import json
import os
import platform
import sys
import time

from ..observe import private_file
from . import catalog
from ..checks import check_output_path
from .measure import run_measure
from .plot import draw_plot  # noqa: F401  (osvrt.bench.cli.draw_plot, as before the split)
from .progress import Progress, RichProgress, make_progress  # noqa: F401
from .report import (COLUMNS, render_compare, render_report, render_table,  # noqa: F401
                     terminal_width)

DEFAULT_JSON = "osvrt-bench.json"
DEFAULT_PLOT = "osvrt-bench.png"

# Workload sizes (each row declares its own: rows/) and rounds.  The full run
# takes 1-2 minutes on a 2-CPU KVM guest (the method wants medians of >= 5
# rounds); a loaded host stretches it, which the time budget bounds.  Measure
# weights are their shares of the budget.
FULL = catalog.sizes("full")
QUICK = catalog.sizes("quick")
MEASURE_KEYS = catalog.measure_keys()
ROUNDS = {"full": 9, "quick": 3}
BUDGET_S = {"full": 150.0, "quick": 25.0}     # rounds past min_rounds stop at the budget


def build_measures(cpus, sizes):
    """The rows of the comparison, for these CPU ids and workload sizes."""
    return catalog.build_measures(cpus, sizes)


def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes, 3 rounds and a 25 s budget for the rounds (set-ups and "
                        "fresh interpreters come on top; the report says how long it ran)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the JSON and the chart (created if missing; default: the "
                        "current directory); relative --json/--plot paths are taken in it")
    p.add_argument("--json", metavar="PATH", default=DEFAULT_JSON,
                   help=f"write the raw figures here (default: {DEFAULT_JSON}; '-' for none)")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help=f"draw the PNG chart here (default: {DEFAULT_PLOT} when matplotlib "
                        "is installed; '-' for none)")
    p.add_argument("--compare", metavar="OLD.json", default=None,
                   help="after the report, print each median's change against an earlier "
                        "run's JSON")
    p.add_argument("--cpus", metavar="CPUS", default=None,
                   help="CPUs to run on: a count (first N of this process's CPUs) or ids "
                        "such as 0,1 (default: the first two)")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"measured rounds per measure (default {ROUNDS['full']}; "
                        f"{ROUNDS['quick']} with --quick)")
    p.add_argument("--only", metavar="KEYS", default=None,
                   help="comma-separated measures to run: " + ",".join(MEASURE_KEYS))
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="time budget: past it, measures stop after 3 rounds "
                        "(default 150; 25 with --quick)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--plain", action="store_true",
                   help="plain-text tables even when rich is installed")
    return p


def parse_cpus(spec):
    """--cpus: None -> the first two CPUs of this process; 'N' -> the first N;
    'a,b' -> those ids.  ValueError (naming the value) otherwise."""
    import osvrt
    available = sorted(os.sched_getaffinity(0))
    if spec is None:
        return tuple(available[:2])
    spec = str(spec).strip()
    try:
        if "," in spec or spec.startswith("["):
            ids = [int(x) for x in spec.strip("[]()").split(",") if x.strip()]
            return osvrt.Runtime(cpus=ids).cpus
        return osvrt.Runtime(cpus=int(spec)).cpus
    except ValueError as e:
        raise ValueError(f"--cpus {spec!r}: {e}") from None




def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _out_path(args, path):
    out_dir = getattr(args, "out", None)
    if out_dir and not os.path.isabs(path):
        return os.path.join(out_dir, path)
    return path


def _load_old(path):
    """The --compare document, read before anything runs, so a bad path fails
    in a second rather than after the measures."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--compare {path}: {e}") from None
    if not isinstance(old, dict) or "measures" not in old:
        raise ValueError(f"--compare {path}: not an osvrt bench JSON (no 'measures')")
    return old


def _check_outputs(args):
    """--json and an explicit --plot can be written: a typo in their folder
    fails now, not after the measures have run."""
    if args.json and args.json != "-":
        check_output_path("--json", _out_path(args, args.json))
    if args.plot is not None and args.plot != "-":
        check_output_path("--plot", _out_path(args, args.plot))


def run(args, out=None):
    """Run the comparison described by parsed `args`; returns the JSON document."""
    out = out if out is not None else sys.stdout
    cpus = parse_cpus(args.cpus)
    mode = "quick" if args.quick else "full"
    sizes = dict(QUICK if args.quick else FULL)
    sizes.update(getattr(args, "sizes", None) or {})
    rounds = args.rounds if args.rounds is not None else ROUNDS[mode]
    if rounds < 1:
        raise ValueError(f"--rounds {rounds}: must be >= 1")
    warmup = getattr(args, "warmup", None)
    warmup = 1 if warmup is None else warmup
    budget = args.budget if args.budget is not None else BUDGET_S[mode]
    if not budget > 0:
        raise ValueError(f"--budget {budget}: must be > 0 seconds")
    old = _load_old(args.compare) if getattr(args, "compare", None) else None
    if getattr(args, "out", None):
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {args.out}: {e}") from None
    _check_outputs(args)
    measures = build_measures(cpus, sizes)
    if args.only is not None:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        bad = [k for k in keys if k not in MEASURE_KEYS]
        if bad:
            raise ValueError(f"--only {args.only!r}: unknown {bad}; one of {list(MEASURE_KEYS)}")
        if not keys:                # a mistake, not "every measure" (13 minutes)
            raise ValueError(f"--only {args.only!r}: names no measure; one or more of "
                             f"{list(MEASURE_KEYS)}")
        measures = [m for m in measures if m.key in keys]

    import osvrt
    version = _version()
    doc = {
        "osvrt_bench": 1,
        "osvrt_version": version,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {
            "python": platform.python_version(),
            "python_implementation": platform.python_implementation(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
            "cpus_available": sorted(os.sched_getaffinity(0)),
            "loadavg_before": _loadavg(),
            "osvrt_path": os.path.dirname(osvrt.__file__),
        },
        "options": {"mode": mode, "cpus": list(cpus), "rounds": rounds, "warmup": warmup,
                    "budget_s": budget, "sizes": sizes,
                    "only": [m.key for m in measures] if args.only is not None else None},
        "measures": [],
    }
    total = sum((rounds + (0 if m.key == "memory" else warmup)) * len(m.contenders)
                for m in measures)
    progress = make_progress(total, enabled=not args.no_progress)
    t0 = time.monotonic()
    weights_left = sum(m.weight for m in measures)
    try:
        for m in measures:
            left = budget - (time.monotonic() - t0)
            deadline = time.monotonic() + max(0.0, left) * m.weight / weights_left
            weights_left -= m.weight
            before = progress.done
            res = run_measure(m, rounds=rounds, warmup=0 if m.key == "memory" else warmup,
                              deadline=deadline, progress=progress.step)
            planned = (rounds + (0 if m.key == "memory" else warmup)) * len(m.contenders)
            progress.done = before + planned      # skipped steps (n/a, errors) count as done
            doc["measures"].append(res)
    finally:
        progress.close()
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    doc["host"]["loadavg_after"] = _loadavg()
    width = getattr(args, "width", None) or terminal_width(out)
    plain = getattr(args, "plain", False)
    report = render_report(doc, out, width=width, plain=plain)
    doc["report"] = report
    print(report, file=out)
    if old is not None:
        print("", file=out)
        print(render_compare(old, doc, out, width=width), file=out)

    if args.json and args.json != "-":
        path = _out_path(args, args.json)
        try:
            # Private and never through a planted symlink: the default path
            # is the current directory, which may be shared (/tmp).
            private_file.write(path, "--json", lambda f: json.dump(doc, f, indent=1))
            print(f"raw figures: {os.path.abspath(path)}", file=out)
        except OSError as e:
            print(f"raw figures: not written: {e}", file=out)
    plot = args.plot if args.plot is not None else DEFAULT_PLOT
    if plot != "-":
        path = _out_path(args, plot)
        try:
            why = draw_plot(doc, path)
        except OSError as e:
            why = str(e)
        if why is None:
            print(f"chart: {os.path.abspath(path)}", file=out)
        else:
            print(f"chart: not drawn: {why}", file=out)
    out.flush()
    return doc


def _version():
    from .._version import __version__
    return __version__


def main(argv=None):
    """`python -m osvrt bench [options]`, callable from Python."""
    from ..__main__ import main as osvrt_main
    return osvrt_main(["bench"] + list(sys.argv[1:] if argv is None else argv))
