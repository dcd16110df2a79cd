"""The bench chart (a PNG, matplotlib): per measure, the ratios osvrt/peer."""
from .report import _fmt_ratio, _fmt_value, _header


CHART_OPS = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}


def _chart_unit(unit):
    return {"us": "µs"}.get(unit, unit)


def draw_plot(doc, path):
    """A PNG: per measure, one horizontal bar per peer with the ratio
    osvrt/peer (median of the per-round ratios), its interquartile range as a
    whisker, 1 (parity) and the target as lines, on a linear axis.  Returns
    None, or the reason it was not drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'osvrt[plot]')"
    results = [r for r in doc["measures"] if r["status"] == "ok" and r["ratios"]]
    if not results:
        return "no ratio was measured"
    heights = [max(2, len(r["ratios"])) for r in results]
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 0.42 * sum(heights) + 1.0 * len(results)
                                                          + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False,
                             constrained_layout=True)      # room for the suptitle, unlike tight_layout
    for ax, r in zip(axes[:, 0], results):
        lower = r["better"] == "lower"
        targets = {t["peer"]: t for t in r["targets"]}
        names = list(r["ratios"])[::-1]
        ratios = [r["ratios"][n]["median"] for n in names]
        lo = [r["ratios"][n]["median"] - ((r["ratios"][n].get("spread") or {}).get("q1")
                                          or r["ratios"][n]["median"]) for n in names]
        hi = [((r["ratios"][n].get("spread") or {}).get("q3") or r["ratios"][n]["median"])
              - r["ratios"][n]["median"] for n in names]
        good = [(x < 1) == lower and x != 1 for x in ratios]
        colors = ["#27ae60" if g else "#c0392b" for g in good]
        labels = [f"{_header(n)}  ({_fmt_value(r['contenders'][n]['median'])} "
                  f"{_chart_unit(r['unit'])})" for n in names]
        ypos = list(range(len(names)))
        ax.barh(ypos, ratios, color=colors, height=0.6, xerr=[lo, hi],
                error_kw={"ecolor": "#333333", "capsize": 3, "lw": 1})
        ax.set_yticks(ypos, labels, fontsize=8)
        ax.axvline(1.0, color="#555555", lw=1)
        xmax = max([x + h for x, h in zip(ratios, hi)] + [1.0]
                   + [t["value"] for t in r["targets"]])
        for i, n in enumerate(names):
            ax.text(ratios[i] + hi[i] + xmax * 0.01, i, _fmt_ratio(ratios[i]), va="center",
                    fontsize=8)
            t = targets.get(n)
            if t is not None:
                ax.plot([t["value"]] * 2, [i - 0.42, i + 0.42], color="#2c3e50", lw=2,
                        ls=(0, (2, 1)))
                word = "" if t["met"] is None else " met" if t["met"] else " missed"
                ax.text(t["value"], i + 0.45, f"target {CHART_OPS[t['op']]}{t['value']:.3g}{word}",
                        fontsize=7, ha="center", va="bottom", color="#2c3e50")
        ax.set_xlim(0, xmax * 1.18)
        ax.set_ylim(-0.6, len(names) - 0.4 + 0.35)
        osvrt_med = r["contenders"]["osvrt"]["median"]
        ax.set_title(f"{r['title']}: osvrt {_fmt_value(osvrt_med)} {_chart_unit(r['unit'])}"
                     f" — osvrt/peer, {'lower' if lower else 'higher'} is better",
                     fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
    axes[-1, 0].set_xlabel("ratio osvrt / peer (median of per-round ratios; whisker: "
                           "interquartile range; green: osvrt ahead)", fontsize=8)
    fig.suptitle(f"osvrt bench on {doc['host']['system']}, CPUs {doc['options']['cpus']} "
                 f"({doc['options']['rounds']} alternating rounds)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
