"""The bench report as text: the table (one table, or one block per measure on
a narrow terminal; rich draws it when installed), the legend, the
conditions and the summary, and the comparison with an earlier run."""
import io
import shutil
import sys
import textwrap

from . import _rich as _richmod
from . import client_cpu


def _rich():
    return _richmod.rich_or_none()


# The table's peer columns, in order; a column shows only if some row has it.
COLUMNS = [
    ("c_futex", "C futex"), ("c_mutex", "C mutex"), ("threading", "threading"),
    ("asyncio", "asyncio"), ("uvloop", "uvloop"), ("trio", "trio"), ("gevent", "gevent"),
    ("kernel_udp", "kernel UDP"), ("uvloop_protocol", "uvloop-P"),
    ("asyncio_protocol", "asyncio-P"), ("osvrt1", "osvrt 1cpu"),
    ("uvloop_kernel", "uvloop-P, kernel TCP"),
]


WIDE_MIN = 100          # below this many columns, one block per measure

def _symbols(stream):
    enc = getattr(stream, "encoding", None) or "ascii"
    try:
        "≤≥µ×—–±".encode(enc)
    except (UnicodeEncodeError, LookupError):
        return {"<=": "<=", ">=": ">=", "us": "us", "x": "x", "none": "-", "range": "-",
                "pm": "+-", "unicode": False}
    return {"<=": "≤", ">=": "≥", "us": "µs", "x": "×", "none": "—", "range": "–",
            "pm": "±", "unicode": True}


def fmt_value(v):
    if v is None:
        return "?"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(r):
    return f"{r:.3f}" if r < 1 else f"{r:.2f}" if r < 100 else f"{r:,.0f}"


def column_header(name):
    return dict(COLUMNS).get(name, name)


def _fmt_op(t, sym):
    op = {"<=": sym["<="], ">=": sym[">="], "<": "<", ">": ">"}[t["op"]]
    return f"{op}{t['value']:.3g}"


def _fmt_target(t, sym, mark=""):
    if t["ratio"] is None:
        return f"n/a vs {column_header(t['peer'])} ({_fmt_op(t, sym)}): {t['why_not']}"
    word = "met" if t["met"] else "MISSED"
    return (f"{fmt_ratio(t['ratio'])}{mark} vs {column_header(t['peer'])} ({_fmt_op(t, sym)}) "
            f"{word}")


def _unit_label(r, sym):
    return {"us": sym["us"]}.get(r["unit"], r["unit"])


def _fmt_spread(sp, sym):
    """'±4%' (half the interquartile range, as a share of the median), '!'
    appended when the row is unstable; '' for a single round."""
    if not sp or sp.get("n", 2) < 2:
        return ""
    return f"{sym['pm']}{50 * sp['iqr_rel']:.0f}%" + ("!" if sp["unstable"] else "")


def _fmt_range(sp, sym):
    if not sp:
        return ""
    return f"{fmt_value(sp['min'])}{sym['range']}{fmt_value(sp['max'])}"


def _columns(results):
    """The peer columns some measured row has, in COLUMNS order."""
    present = {name for r in results if r["status"] == "ok"
               for name in list(r["contenders"]) + list(r["unavailable"])}
    cols = [(k, h) for k, h in COLUMNS if k in present]
    cols += [(k, k) for k in sorted(present - set(dict(COLUMNS)) - {"osvrt"})]
    return cols


def _cell_text(r, name, sym):
    if name in r["contenders"]:
        cell = r["contenders"][name]
        if cell["error"]:
            return "error"
        sp = _fmt_spread(cell.get("spread"), sym)
        return fmt_value(cell["median"]) + (f" {sp}" if sp else "")
    if name in r["unavailable"]:
        return "n/a"
    return sym["none"]


def _wide_rows(results, sym):
    """(header, rows) of the one-table layout; a row of 2 cells is a measure
    that could not be measured, a row of blanks carries a further target."""
    cols = _columns(results)
    header = ["measure", "osvrt"] + [h for _, h in cols] + ["ratio osvrt/peer (target)"]
    rows = []
    for r in results:
        label = f"{r['title']} ({_unit_label(r, sym)})"
        if r["status"] != "ok":
            rows.append([label, f"n/a ({r['reason']})" if r["status"] == "n/a"
                         else f"error ({r['reason']})"])
            continue
        cells = [label] + [_cell_text(r, name, sym) for name in ["osvrt"] + [k for k, _ in cols]]
        targets = [_fmt_target(t, sym, _ratio_mark(r, t["peer"])) for t in r["targets"]] or [""]
        rows.append(cells + [targets[0]])
        for extra in targets[1:]:
            rows.append([""] * len(cells) + [extra])
    return header, rows


def _plain_grid(header, rows, right):
    """Columns padded to their widest cell; `right`: indexes aligned right.
    The last column is left ragged.  Rows shorter than the header (a reason
    in place of figures) run on from their first cell."""
    ncol = len(header)
    widths = [len(h) for h in header]
    for row in rows:
        if len(row) == ncol:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))
    widths[0] = max([widths[0]] + [len(row[0]) for row in rows])

    def line(row):
        if len(row) < ncol:
            return f"{row[0]:<{widths[0]}}  " + "  ".join(row[1:])
        return "  ".join(f"{c:>{widths[i]}}" if i in right else f"{c:<{widths[i]}}"
                         for i, c in enumerate(row)).rstrip()
    rule = "-" * (sum(widths[:-1]) + 2 * (ncol - 1) + max(widths[-1], 12))
    return [line(header), rule] + [line(row) for row in rows], len(rule)


def _wide_width(results, sym):
    header, rows = _wide_rows(results, sym)
    lines, _ = _plain_grid(header, rows, set(range(1, len(header) - 1)))
    return max(len(x) for x in lines)


def _block_rows(r, sym):
    """One measure's narrow block: a row per contender that has a figure
    (contender, median, ±IQR, min–max, osvrt/peer, target)."""
    rows = []
    targets = {t["peer"]: t for t in r["targets"]}
    for name, cell in r["contenders"].items():
        if cell["error"]:
            rows.append([column_header(name), "error", "", "", "", cell["error"]])
            continue
        sp = cell.get("spread")
        ratio = r["ratios"].get(name, {}).get("median")
        t = targets.get(name)
        target = ""
        if t is not None and t["ratio"] is not None:
            target = f"{_fmt_op(t, sym)} {'met' if t['met'] else 'MISSED'}"
        rows.append([column_header(name), fmt_value(cell["median"]), _fmt_spread(sp, sym),
                     _fmt_range(sp, sym),
                     "" if ratio is None else fmt_ratio(ratio) + _ratio_mark(r, name), target])
    return rows


def _ratio_unstable(r, name):
    """The per-round ratios osvrt/name spread more than UNSTABLE_IQR: steady
    contenders can still give an unsteady ratio (rounds that load differently)."""
    return bool(((r["ratios"].get(name) or {}).get("spread") or {}).get("unstable"))


def _ratio_mark(r, name):
    return "!" if _ratio_unstable(r, name) else ""


def _block_notes(r, sym):
    """The lines under a narrow block: peers not measured, targets without a ratio."""
    notes = []
    if r["unavailable"]:
        notes.append("n/a: " + ", ".join(f"{column_header(k)} ({v})" for k, v in r["unavailable"].items()))
    notes += [_fmt_target(t, sym) for t in r["targets"] if t["ratio"] is None]
    return notes


BLOCK_HEADER = ["", "median", "spread", "min{range}max", "osvrt/peer", "target"]


def _block_title(r, sym):
    return f"{r['title']} ({_unit_label(r, sym)}, {r['better']} is better)"


def _render_narrow_plain(results, sym, width):
    out = []
    for r in results:
        if out:
            out.append("")
        out.append(_block_title(r, sym))
        if r["status"] != "ok":
            out += textwrap.wrap(("n/a" if r["status"] == "n/a" else "error") + f" ({r['reason']})",
                                 width - 1, initial_indent="  ", subsequent_indent="    ")
            continue
        header = [h.format(range=sym["range"]) for h in BLOCK_HEADER]
        rows = _block_rows(r, sym)
        keep = list(range(len(header)))
        while True:
            lines, w = _plain_grid([header[i] for i in keep], [[row[i] for i in keep] for row in rows],
                                   set(range(1, len(keep) - 1)))
            if max(len(x) for x in lines) + 2 <= width or 3 not in keep:
                break
            keep.remove(3)            # min–max goes first when the terminal is narrow
        del lines[1]                  # the rule under the header: the title is the rule here
        out += ["  " + x for x in lines]
        for note in _block_notes(r, sym):
            out += textwrap.wrap(note, width - 1, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(out)


def _rich_box(sym):
    """rich's SIMPLE_HEAD (a rule under the header, no other lines), drawn
    with '-' where the stream cannot print box characters."""
    box = _rich().box
    if sym["unicode"]:
        return box.SIMPLE_HEAD
    return box.Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


def _rich_console(width, sym):
    rich = _rich()
    buf = io.StringIO()
    return rich.console.Console(file=buf, width=width, force_terminal=False, no_color=True,
                                emoji=False, highlight=False, legacy_windows=False,
                                safe_box=not sym["unicode"]), buf


def _render_wide_rich(results, sym, width):
    rich = _rich()
    header, rows = _wide_rows(results, sym)
    console, buf = _rich_console(width, sym)
    table = rich.table.Table(box=_rich_box(sym), pad_edge=False, show_edge=False)
    for i, h in enumerate(header):
        last = i == len(header) - 1
        table.add_column(h, justify="left" if i in (0, len(header) - 1) else "right",
                         no_wrap=not last, overflow="fold")
    for row in rows:
        if len(row) < len(header):     # not measured: the reason across the figures
            table.add_row(row[0], *[""] * (len(header) - 2), row[1])
        else:
            table.add_row(*row)
    console.print(table)
    return "\n".join(x.rstrip() for x in buf.getvalue().rstrip("\n").splitlines())


def _render_narrow_rich(results, sym, width):
    rich = _rich()
    console, buf = _rich_console(width, sym)
    box = _rich_box(sym)
    for r in results:
        if r["status"] != "ok":
            console.print(_block_title(r, sym))
            console.print(f"  {'n/a' if r['status'] == 'n/a' else 'error'} ({r['reason']})")
            console.print()
            continue
        table = rich.table.Table(title=_block_title(r, sym), title_justify="left", box=box,
                                 pad_edge=False, show_edge=False)
        for i, h in enumerate(BLOCK_HEADER):
            table.add_column(h.format(range=sym["range"]),
                             justify="left" if i in (0, 5) else "right", overflow="fold")
        for row in _block_rows(r, sym):
            table.add_row(*row)
        console.print(table)
        for note in _block_notes(r, sym):
            console.print(textwrap.fill(note, width - 1, initial_indent="  ",
                                        subsequent_indent="    "))
        console.print()
    return "\n".join(x.rstrip() for x in buf.getvalue().rstrip("\n").splitlines())


def terminal_width(stream=None):
    """Columns of the terminal the report goes to (COLUMNS wins, as
    shutil.get_terminal_size reads it); 120 when it is not a terminal."""
    return shutil.get_terminal_size((120, 24)).columns


def render_table(results, stream=None, width=None, plain=None):
    """The comparison as text, fitted to `width` columns: one table with a
    column per peer when it fits (and width >= WIDE_MIN), otherwise one block
    per measure listing only the contenders it measured.  rich draws the
    tables when installed, unless `plain`."""
    sym = _symbols(stream if stream is not None else sys.stdout)
    width = width or terminal_width(stream)
    use_rich = not plain and _rich() is not None
    # rich puts 3 characters between columns where the plain grid puts 2
    wide = width >= WIDE_MIN and _wide_width(results, sym) + (
        len(_columns(results)) + 2 if use_rich else 0) < width
    if wide:
        if use_rich:
            return _render_wide_rich(results, sym, width)
        header, rows = _wide_rows(results, sym)
        return "\n".join(_plain_grid(header, rows, set(range(1, len(header) - 1)))[0])
    if use_rich:
        return _render_narrow_rich(results, sym, width)
    return _render_narrow_plain(results, sym, width)


# What each column ran, per measure: the legend prints only the measures that ran.
LEGEND = {
    "osvrt": {
        "switch_colocated": "Event ping-pong, two green threads pinned to one CPU",
        "switch_apart": "Event ping-pong, green threads pinned to two CPUs",
        "spawn_join": "spawn + join of no-op green threads",
        "memory": "green thread parked on an Event, Runtime(cpus=1), fresh interpreter",
        "foreign_wake": "rt.run(async no-op) from the main thread",
        "pushlist": "the C pushlist, 2 producer pthreads + 1 consumer",
        # the row's title names its placement; UDP_NOTE says what each pins
        **{k + sfx: what for sfx in ("", "_dedicated")
           for k, what in (("udp_rr", "a UDP echo green thread on an osvrt.net channel"),
                           ("udp_tps", "a UDP echo green thread on an osvrt.net channel"),
                           ("sockperf_p50", "a UDP echo green thread on an osvrt.net channel"),
                           ("sockperf_p99", "a UDP echo green thread on an osvrt.net channel"),
                           ("dnsperf_qps", "a DNS-answering green thread on an osvrt.net "
                                           "channel"))},
    },
    "c_futex": {"*": "two pthreads handing a turn over a futex word (csrc/bench/peers.c)"},
    "c_mutex": {"switch_colocated": "two pthreads, mutex + condvar (OSv's own test shape)",
                "switch_apart": "two pthreads, mutex + condvar (OSv's own test shape)",
                "pushlist": "a FIFO under a pthread mutex, same 2 producers + 1 consumer"},
    "threading": {"switch_colocated": "Condition ping-pong, two threads on one CPU",
                  "switch_apart": "Event ping-pong, two threads on two CPUs",
                  "spawn_join": "Thread start + join",
                  "memory": "Thread parked on an Event",
                  "foreign_wake": "Event round trip to a second thread"},
    "asyncio": {"switch_colocated": "Future hand-off", "spawn_join": "create_task + await",
                "memory": "Task parked on an Event"},
    "uvloop": {"*": "as asyncio, on uvloop's loop"},
    "trio": {"switch_colocated": "lowlevel park/reschedule",
             "spawn_join": "nursery.start_soon", "memory": "task parked on a trio.Event"},
    "gevent": {"switch_colocated": "Event ping-pong", "spawn_join": "spawn + joinall",
               "memory": "greenlet parked on an Event"},
    "kernel_udp": {"*": "a kernel UDP socket on 127.0.0.1 served by a Python thread (unpinned "
                        "in the osvrt.run placement, on the second CPU in the dedicated one)"},
}
# said once when a UDP row ran
UDP_NOTE = ("UDP rows: each runs twice. osvrt.run placement: what osvrt.run(main) gives, a "
            "worker on every CPU and nothing pinned (client, echo, classifier, peer thread). "
            "Dedicated: the client (C, osvrt.bench.net, or sockperf/dnsperf) and the classifier's "
            "thread on the first CPU (pipelined requests make it hand the ring to the worker), "
            "osvrt's one worker and the peer's thread on the second")


def _legend(results, sym, width):
    ran = [r for r in results if r["status"] == "ok"]
    titles = {r["key"]: r["title"] for r in ran}
    out = ["columns (what each ran, per measure):"]
    names = ["osvrt"] + [k for k, _ in _columns(ran)]
    wrap = max(40, min(width, 110) - 1)
    for k in names:
        per = LEGEND.get(k, {})
        keys = [r["key"] for r in ran if k in r["contenders"] or k in r["unavailable"]]
        if "*" in per:
            text = per["*"]
        else:
            parts = [(per.get(key) or next(
                (r["contenders"][k]["label"] for r in ran if r["key"] == key
                 and k in r["contenders"]), None), key) for key in keys]
            text = "; ".join(f"{titles[key]}: {p}" if len(keys) > 1 else p
                             for p, key in parts if p)
        if text:
            out += textwrap.wrap(text, wrap, initial_indent=f"  {column_header(k):<10} ",
                                 subsequent_indent=" " * 13)
    if any(r["key"].startswith(("udp_", "sockperf_", "dnsperf_")) for r in ran):
        out += textwrap.wrap(UDP_NOTE, wrap, initial_indent="  ", subsequent_indent="    ")
    from .measure import UNSTABLE_IQR
    out += textwrap.wrap(
        f"{sym['pm']}N%: half the interquartile range of the rounds, as a share of the median; "
        f"! unstable: interquartile range > {100 * UNSTABLE_IQR:.0f}% of the median (after a "
        f"ratio: of the per-round ratios; trust the median less; rerun on a quieter host or "
        f"with more --rounds)",
        wrap, initial_indent="  ", subsequent_indent="    ")
    cells = {c for r in ran for c in _wide_rows([r], sym)[1][0][1:]}
    if "n/a" in cells:
        out.append("  n/a: not installed or not measurable here")
    if sym["none"] in cells:
        out.append(f"  {sym['none']}: not part of that measure")
    return out


def render_report(doc, stream=None, width=None, plain=None):
    """Header, table, legend and summary, as printed."""
    results = doc["measures"]
    sym = _symbols(stream if stream is not None else sys.stdout)
    width = width or terminal_width(stream)
    h = doc["host"]
    load = " ".join(f"{x:.2f}" for x in h["loadavg_before"]) if h["loadavg_before"] else "?"
    head = (f"osvrt bench: osvrt {doc['osvrt_version']} on {h['python']} "
            f"({h['python_implementation']}), {h['system']}; CPUs {doc['options']['cpus']} "
            f"of {h['cpus_available']}")
    method = (f"{doc['options']['rounds']} alternating rounds per measure after "
              f"{doc['options']['warmup']} warm-up, medians; ratios = median of per-round "
              f"osvrt/peer; load average at start {load}")
    out = textwrap.wrap(head, width - 1) + textwrap.wrap(method, width - 1)
    out += ["", render_table(results, stream, width=width, plain=plain), ""]
    out += _legend(results, sym, width)
    unavailable = {}
    for r in results:
        for name, why in r["unavailable"].items():
            unavailable.setdefault(name, why)
    errors = [f"{r['title']}: {name}: {cell['error']}" for r in results
              for name, cell in r["contenders"].items() if cell["error"]]
    if unavailable:
        out += textwrap.wrap("unavailable peers: " + "; ".join(
            f"{k} ({v})" for k, v in unavailable.items()), width - 1, subsequent_indent="  ")
    for r in results:
        if r["status"] != "ok":
            out.append(f"not measured: {r['title']}: {r['reason']}")
        elif r["rounds_done"] < r["rounds_planned"]:
            out.append(f"{r['title']}: {r['rounds_done']} of {r['rounds_planned']} rounds "
                       f"(time budget)")
    unstable = []
    for r in results:
        if r["status"] != "ok":
            continue
        which = [column_header(n) for n, c in r["contenders"].items()
                 if (c.get("spread") or {}).get("unstable")]
        which += [f"osvrt/{column_header(n)}" for n in r["ratios"] if _ratio_unstable(r, n)]
        if which:
            unstable.append(f"{r['title']} ({', '.join(which)})")
    if unstable:
        out += textwrap.wrap("unstable: " + "; ".join(unstable), width - 1,
                             subsequent_indent="  ")
    for r in results:
        for name, cell in r["contenders"].items():
            lost = sum(d.get("lost", 0) for d in cell.get("details", []))
            if lost:
                done = sum(d.get("done", d.get("answered", d.get("completed", 0)))
                           for d in cell["details"])
                out.append(f"{r['title']}: {column_header(name)} lost {lost:,} requests "
                           f"({done:,} answered; see the JSON)")
    out += _client_bound(results, sym, width)
    for e in errors:
        out.append(f"error: {e}")
    tally = {"met": 0, "MISSED": 0, "n/a": 0}
    for r in results:
        for t in r["targets"]:
            tally["n/a" if t["met"] is None else "met" if t["met"] else "MISSED"] += 1
        if r["status"] != "ok" and not r["targets"]:
            tally["n/a"] += 1
    out.append(f"targets: {tally['met']} met, {tally['MISSED']} missed, "
               f"{tally['n/a']} not measured; ran {doc['elapsed_s']:.0f} s")
    out += [""] + render_status(doc, sym, width)
    return "\n".join(out)


def _client_bound(results, sym, width):
    """A line per throughput measure whose rounds timed their client
    (osvrt/bench/client_cpu.py): the client's CPU share per contender, the
    contenders against which the client was busy all the time it ran, and
    each server's CPU time per request."""
    out = []
    for r in results:
        if r["status"] != "ok" or r["better"] != "higher":
            continue
        rows = client_cpu.summary(r)
        if not rows:
            continue
        line = (f"{r['title']}: the client's CPU (median share of one CPU) "
                + ", ".join(f"{column_header(n)} {c:.2f}" for n, c, _ in rows))
        busy = [column_header(n) for n, c, _ in rows if c >= client_cpu.CLIENT_BOUND]
        if busy:
            line += (f"; against {', '.join(busy)} the client was busy all the time it ran, "
                     "so the client may have set that rate")
        costs = [(n, us) for n, _, us in rows if us is not None]
        if costs:
            line += ("; server CPU per request (an osvrt server's includes its idle polling) "
                     + ", ".join(f"{column_header(n)} {us:.2f} {sym['us']}" for n, us in costs))
        out += textwrap.wrap(line, width - 1, subsequent_indent="  ")
    return out


def conditions(doc):
    """One sentence: the conditions every figure of this run was taken under
    (what a status table must quote beside the figures)."""
    h, o = doc["host"], doc["options"]

    def load(key):
        v = h.get(key)
        return " ".join(f"{x:.2f}" for x in v) if v else "?"
    only = f" --only {','.join(o['only'])}" if o.get("only") else ""   # a partial run says so
    return (f"{o.get('mode', '?')} run (`python -m osvrt bench"
            f"{' --quick' if o.get('mode') == 'quick' else ''}{only}`), {o.get('rounds')} alternating "
            f"rounds after {o.get('warmup')} warm-up (fewer where the time budget of "
            f"{o.get('budget_s')} s ran out), CPUs {o.get('cpus')} of "
            f"{h.get('cpus_available')}, {h.get('python_implementation')} {h.get('python')}, "
            f"{h.get('system')}, osvrt {doc.get('osvrt_version')}; load average "
            f"{load('loadavg_before')} at start, {load('loadavg_after')} at end (other "
            f"processes' load is in every figure; the ratios are same-run)")


def status_rows(doc, sym=None):
    """Per target of every row: [measure, peer, ratio median, min–max over the
    rounds, rounds, target, verdict]: the README status table's cells."""
    sym = sym or _symbols(None)
    rows = []
    for r in doc["measures"]:
        for t in r["targets"]:
            title = f"{r['title']} ({_unit_label(r, sym)})"
            if t["ratio"] is None:
                why = t.get("why_not") or r.get("reason") or "not measured"
                word = "error" if r["status"] == "error" else "n/a"
                rows.append([title, column_header(t["peer"]), "", "", "",
                             _fmt_op(t, sym), f"{word}: {why}"])
                continue
            sp = (r["ratios"].get(t["peer"]) or {}).get("spread") or {}
            rng = (f"{fmt_ratio(sp['min'])}{sym['range']}{fmt_ratio(sp['max'])}"
                   if sp else "")
            rows.append([title, column_header(t["peer"]),
                         fmt_ratio(t["ratio"]) + _ratio_mark(r, t["peer"]), rng,
                         str(sp.get("n", "")), _fmt_op(t, sym), "met" if t["met"] else "MISSED"])
        if not r["targets"] and r["status"] != "ok":
            rows.append([r["title"], "", "", "", "", "", f"n/a: {r['reason']}"])
    return rows


STATUS_HEADER = ["measure", "vs", "osvrt/peer", "min{range}max", "rounds", "target", ""]


def render_status(doc, sym=None, width=120):
    """The status block: the run's conditions, then one line per target with
    the ratio's median and its min-max across the rounds (plain text, for
    pasting into a status table)."""
    sym = sym or _symbols(None)
    out = textwrap.wrap("status (osvrt/peer per round; median, min" + sym["range"] + "max) "
                        "under these conditions: " + conditions(doc), max(40, width - 1),
                        subsequent_indent="  ")
    header = [h.format(range=sym["range"]) for h in STATUS_HEADER]
    rows = status_rows(doc, sym)
    lines, _ = _plain_grid(header, rows, {2, 3, 4})
    if max(len(x) for x in lines) + 2 <= width:
        return out + ["  " + x for x in lines]
    for row in rows:                 # narrow: the measure and peer above the figures
        out.append(f"  {row[0]} vs {row[1]}" if row[1] else f"  {row[0]}")
        figures = (f"{row[2]} [{row[3]}] over {row[4]} rounds, target {row[5]}: {row[6]}"
                   if row[2] else f"target {row[5]}: {row[6]}" if row[5] else row[6])
        out += textwrap.wrap(figures, max(40, width - 1), initial_indent="    ",
                             subsequent_indent="      ")
    return out


def render_compare(old, new, stream=None, width=None):
    """This run against an earlier JSON: per measure and contender measured in
    both, the old and new medians and new/old, and whether that is better."""
    sym = _symbols(stream if stream is not None else sys.stdout)
    width = width or terminal_width(stream)
    old_rows = {r["key"]: r for r in old.get("measures", []) if r.get("status") == "ok"}
    header = ["measure", "contender", "old", "new", "new/old", ""]
    rows = []
    for r in new["measures"]:
        o = old_rows.get(r["key"])
        if r["status"] != "ok" or o is None:
            continue
        first = True
        for name, cell in r["contenders"].items():
            before = (o["contenders"].get(name) or {}).get("median")
            after = cell["median"]
            if not before or not after:
                continue
            ch = after / before
            if abs(ch - 1) < 0.02:
                verdict = "same"
            else:
                verdict = "better" if (ch < 1) == (r["better"] == "lower") else "worse"
            rows.append([f"{r['title']} ({_unit_label(r, sym)})" if first else "", column_header(name),
                         fmt_value(before), fmt_value(after), f"{fmt_ratio(ch)}{sym['x']}",
                         verdict])
            first = False
    title = f"change against {old.get('started', '?')} (osvrt {old.get('osvrt_version', '?')}):"
    if not rows:
        return title + " no measure in common"
    lines, w = _plain_grid(header, rows, {2, 3, 4})
    if w > width - 1:          # narrow: the measure on its own line above its contenders
        lines = []
        for row in rows:
            if row[0]:
                lines.append(row[0])
            arrow = "→" if sym["unicode"] else "->"
            lines.append(f"  {row[1]:<10} {row[2]:>9} {arrow} {row[3]:<9} {row[4]:>6} {row[5]}")
    return "\n".join([title, "  within 2%: same; better/worse by the measure's direction"]
                     + lines)
