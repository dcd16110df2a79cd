"""The bench chart (a PNG, matplotlib): per measure, the ratios osvrt/peer.

Drawn so that it cannot mislead: the ratio axis is logarithmic (a ratio of
1/3 and one of 3 are the same distance from parity; a linear axis squashed
the small ones), each bar grows from parity (1) to the ratio, green means
the row's target against that peer was met, red that it was missed, grey
that the peer has no target; every figure and word sits in the bar's label
on the left, so no text is drawn over a bar, a whisker or another label."""
import math
import os

from ..observe import private_file
from .report import fmt_ratio, fmt_value, column_header

CHART_OPS = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}
MET, MISSED, NO_TARGET = "#27ae60", "#c0392b", "#95a5a6"


def _chart_unit(unit):
    return {"us": "µs"}.get(unit, unit)


def bar_color(target):
    """Green only for a met target; red for a missed one; grey without one."""
    if target is None or target.get("met") is None:
        return NO_TARGET
    return MET if target["met"] else MISSED


def _label(r, name, target):
    cell = r["contenders"][name]
    ratio = r["ratios"][name]
    sp = ratio.get("spread") or {}
    rng = (f" [{fmt_ratio(sp['min'])}–{fmt_ratio(sp['max'])}]"
           if sp.get("n", 1) > 1 else "")
    text = (f"{column_header(name)} ({fmt_value(cell['median'])} {_chart_unit(r['unit'])}): "
            f"{fmt_ratio(ratio['median'])}{rng}")
    if target is not None:
        word = "" if target["met"] is None else " met" if target["met"] else " MISSED"
        text += f"\ntarget {CHART_OPS[target['op']]}{target['value']:.3g}{word}"
    return text


def _leading_digit(x):
    """The first significant digit of x > 0 (0.3 -> 3, 200 -> 2)."""
    return int(round(x / 10 ** math.floor(math.log10(x)), 6))


def _limits(values):
    """Log-axis limits around every ratio, whisker end, target and parity,
    with a margin, at least a factor 4 wide."""
    lo, hi = min(values + [1.0]), max(values + [1.0])
    lo, hi = lo / 1.5, hi * 1.5
    if hi / lo < 4:
        mid = math.sqrt(lo * hi)
        lo, hi = mid / 2, mid * 2
    return lo, hi


def figure(doc):
    """The matplotlib Figure of the chart, or (None, reason)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return None, "matplotlib is not installed (pip install 'osvrt[plot]')"
    results = [r for r in doc["measures"] if r["status"] == "ok" and r["ratios"]]
    if not results:
        return None, "no ratio was measured"
    heights = [max(2, len(r["ratios"])) for r in results]
    fig, axes = plt.subplots(len(results), 1,
                             figsize=(10, 0.62 * sum(heights) + 0.9 * len(results) + 0.8),
                             gridspec_kw={"height_ratios": heights}, squeeze=False,
                             constrained_layout=True)      # room for the suptitle, unlike tight_layout
    for ax, r in zip(axes[:, 0], results):
        lower = r["better"] == "lower"
        targets = {t["peer"]: t for t in r["targets"]}
        names = list(r["ratios"])[::-1]
        med = [r["ratios"][n]["median"] for n in names]
        q1 = [(r["ratios"][n].get("spread") or {}).get("q1") or m for n, m in zip(names, med)]
        q3 = [(r["ratios"][n].get("spread") or {}).get("q3") or m for n, m in zip(names, med)]
        ypos = list(range(len(names)))
        # each bar from parity (1) to the ratio: left of 1 is "osvrt smaller"
        ax.barh(ypos, [m - 1.0 for m in med], left=1.0, height=0.55,
                color=[bar_color(targets.get(n)) for n in names],
                xerr=[[m - a for m, a in zip(med, q1)], [b - m for m, b in zip(med, q3)]],
                error_kw={"ecolor": "#333333", "capsize": 3, "lw": 1})
        ax.set_xscale("log")
        ax.set_yticks(ypos, [_label(r, n, targets.get(n)) for n in names], fontsize=7.5)
        ax.axvline(1.0, color="#555555", lw=1)
        marks = []
        for i, n in enumerate(names):
            t = targets.get(n)
            if t is not None:
                ax.plot([t["value"]] * 2, [i - 0.38, i + 0.38], color="#2c3e50", lw=2,
                        ls=(0, (2, 1)))
                marks.append(t["value"])
        lo, hi = _limits(med + q1 + q3 + marks)
        ax.set_xlim(lo, hi)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        # within about a decade the major ticks are one or two: label 2..9 too
        few = hi / lo < 30
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda x, _: f"{x:g}" if few and _leading_digit(x) in (2, 3, 5) else ""))
        osvrt_med = r["contenders"]["osvrt"]["median"]
        ax.set_title(f"{r['title']}: osvrt {fmt_value(osvrt_med)} {_chart_unit(r['unit'])}"
                     f" — osvrt/peer, {'lower' if lower else 'higher'} is better",
                     fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", which="both", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
    axes[-1, 0].set_xlabel("ratio osvrt / peer, log scale (median of per-round ratios "
                           "[min–max]; whisker: interquartile range)\ndashed: the target; "
                           "green: target met, red: target missed, grey: no target",
                           fontsize=8)
    o = doc.get("options", {})
    fig.suptitle(f"osvrt bench on {doc['host']['system']}, CPUs {o.get('cpus')} "
                 f"({o.get('rounds')} alternating rounds)", fontsize=10)
    return fig, None


def draw_plot(doc, path):
    """Write the chart as a PNG at `path`.  Returns None, or the reason it
    was not drawn."""
    fig, why = figure(doc)
    if fig is None:
        return why
    import matplotlib.pyplot as plt
    try:
        # The format from the name (.png, .svg, .pdf; PNG without one), as
        # savefig(path) chose it; written as the JSON is (private, no
        # symlink followed).
        fmt = os.path.splitext(os.fsdecode(path))[1][1:].lower() or "png"
        if fmt not in fig.canvas.get_supported_filetypes():
            raise ValueError(f"--plot {path}: matplotlib writes no {fmt!r} files")
        private_file.write(path, "--plot", lambda f: fig.savefig(f, format=fmt, dpi=110),
                           binary=True)
    finally:
        plt.close(fig)
    return None
