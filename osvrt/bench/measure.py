"""The method: osvrt and its peers measured side by side in
the same run, in alternating rounds, reported as medians, and every claim a
ratio of osvrt against a peer from the same rounds.

A Measure is one row of the comparison: an osvrt Contender, the peer
Contenders and the Targets (ratios osvrt/peer).  run_measure() runs it: one
untimed warm-up round, then `rounds` rounds in which every contender runs once,
in an order that rotates from round to round (so no contender always runs
first, or always right after the same one).  A contender's figure is the
median over rounds; a ratio is the median of the per-round ratios
osvrt/peer.  Nothing here is specific to the workloads (see cli.py).
"""
import contextlib
import gc
import statistics
import time


class Unavailable(Exception):
    """Raised by a Measure's setup when the row cannot be measured here
    (a missing module, too few CPUs): the row prints n/a and the reason."""


class Contender:
    """One column of a row.  run(ctx) runs one measured round and returns the
    workload's dict; its figure is result[key] * scale.  check(result) raises
    if the round did not do all its work.  requires: a module that must
    import, or the contender is reported unavailable."""

    def __init__(self, name, label, run, *, key="ns", scale=1.0, check=None, requires=None):
        self.name, self.label, self.run = name, label, run
        self.key, self.scale, self.check, self.requires = key, scale, check, requires

    def figure(self, ctx):
        """(this round's figure, the workload's other numbers)."""
        r = self.run(ctx)
        if self.check is not None:
            self.check(r)
        v = r[self.key] * self.scale
        if not v > 0:
            raise RuntimeError(f"{self.name}: measured {v!r}")
        return v, {k: x for k, x in r.items()
                   if k != self.key and isinstance(x, (int, float)) and not isinstance(x, bool)}


class Target:
    """ratio (osvrt/peer, same rounds) `op` value, e.g. Target("c_futex", "<=", 1/3)."""

    OPS = {"<=": lambda r, v: r <= v, "<": lambda r, v: r < v,
           ">=": lambda r, v: r >= v, ">": lambda r, v: r > v}

    def __init__(self, peer, op, value, text):
        if op not in self.OPS:
            raise ValueError(f"op={op!r}: one of {sorted(self.OPS)}")
        self.peer, self.op, self.value, self.text = peer, op, value, text

    def met(self, ratio):
        return self.OPS[self.op](ratio, self.value)


class Measure:
    """One row.  setup(): a context manager whose value every contender's
    run() receives (a started Runtime, an echo server, ...); it may raise
    Unavailable.  weight: the share of the time budget this row gets."""

    def __init__(self, key, title, unit, better, osvrt, peers, *, targets=(), setup=None,
                 weight=1.0, sizes=None, notes=None):
        if better not in ("lower", "higher"):
            raise ValueError(f"better={better!r}: lower or higher")
        self.key, self.title, self.unit, self.better = key, title, unit, better
        self.osvrt, self.peers, self.targets = osvrt, list(peers), list(targets)
        self.setup = setup or contextlib.nullcontext
        self.weight, self.sizes, self.notes = weight, dict(sizes or {}), notes

    @property
    def contenders(self):
        return [self.osvrt] + self.peers


def median(xs):
    return statistics.median(xs) if xs else None


# A row is unstable when its rounds' interquartile range exceeds this share of
# the median: the median is then a weak claim (a loaded host, a frequency
# change, a contender that drifts between rounds).
UNSTABLE_IQR = 0.25


def spread(xs):
    """The rounds' spread: min, max, quartiles (inclusive method, so defined
    from 2 rounds on), IQR as a share of the median, and whether that share
    passes UNSTABLE_IQR.  None for no rounds."""
    if not xs:
        return None
    m = statistics.median(xs)
    if len(xs) > 1:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    rel = (q3 - q1) / m if m else 0.0
    return {"n": len(xs), "min": min(xs), "max": max(xs), "q1": q1, "q3": q3, "iqr_rel": rel,
            "unstable": len(xs) > 1 and rel > UNSTABLE_IQR}


def _available(c):
    if c.requires is None:
        return None
    try:
        __import__(c.requires)
    except ImportError:
        return f"{c.requires} not installed"
    except Exception as e:        # a broken install: say so, measure the rest
        return f"{c.requires} does not import: {e}"
    return None


def run_measure(m, *, rounds=5, warmup=1, min_rounds=3, deadline=None, progress=None):
    """Run measure m; returns a plain dict (JSON-ready) with every round's
    figure, the medians, the ratios and the targets.  progress(label) is
    called after every contender run.  After min_rounds rounds, no new round
    starts past `deadline` (time.monotonic())."""
    res = {
        "key": m.key, "title": m.title, "unit": m.unit, "better": m.better,
        "sizes": m.sizes, "notes": m.notes, "status": "ok", "reason": None,
        "contenders": {}, "unavailable": {}, "ratios": {}, "targets": [],
        "rounds_planned": rounds, "rounds_done": 0,
    }
    live = []
    for c in m.contenders:
        why = _available(c)
        if why is None:
            live.append(c)
            res["contenders"][c.name] = {"label": c.label, "rounds": [], "median": None,
                                         "spread": None, "error": None, "details": []}
        else:
            res["unavailable"][c.name] = why
    t0 = time.monotonic()
    try:
        with m.setup() as ctx:
            values = {c.name: [] for c in live}
            for r in range(-warmup, rounds):
                if r >= min_rounds and deadline is not None and time.monotonic() > deadline:
                    break
                order = live[r % len(live):] + live[:r % len(live)] if r >= 0 else live
                for c in order:
                    cell = res["contenders"][c.name]
                    if cell["error"] is None:
                        # Untimed: each round starts from a collected heap, so
                        # it pays only for the collections its own allocations
                        # trigger, not for the garbage and survivors the
                        # contender before it left (asyncio's 5,000 tasks a
                        # round made the next contender's round pay a full
                        # collection of the bench's whole heap).
                        gc.collect()
                        try:
                            v, details = c.figure(ctx)
                        except Exception as e:
                            cell["error"] = f"{type(e).__name__}: {e}"
                            v = None
                        if r >= 0:
                            values[c.name].append(v)
                            if v is not None:
                                cell["details"].append(details)
                    if progress is not None:
                        progress(f"{m.title}: {c.name}")
                if r >= 0:
                    res["rounds_done"] = r + 1
    except Unavailable as e:
        res["status"], res["reason"] = "n/a", str(e)
        return _unmeasured_targets(m, res)
    except Exception as e:
        res["status"], res["reason"] = "error", f"{type(e).__name__}: {e}"
        return _unmeasured_targets(m, res)
    finally:
        res["elapsed_s"] = round(time.monotonic() - t0, 3)
    for name, vs in values.items():
        cell = res["contenders"][name]
        cell["rounds"] = [v for v in vs if v is not None]
        cell["median"] = median(cell["rounds"]) if cell["error"] is None else None
        cell["spread"] = spread(cell["rounds"]) if cell["error"] is None else None
    own = values.get(m.osvrt.name, [])
    for p in m.peers:
        if p.name not in values:
            continue
        ratios = [a / b for a, b in zip(own, values[p.name]) if a is not None and b]
        if ratios and res["contenders"][p.name]["error"] is None \
                and res["contenders"][m.osvrt.name]["error"] is None:
            res["ratios"][p.name] = {"median": median(ratios), "rounds": ratios,
                                     "spread": spread(ratios)}
    return _targets(m, res)


def _unmeasured_targets(m, res):
    """A row whose setup failed keeps its targets, each unmeasured, with why."""
    for t in m.targets:
        res["targets"].append({"peer": t.peer, "op": t.op, "value": t.value, "text": t.text,
                               "ratio": None, "met": None,
                               "why_not": res["reason"]})
    return res


def _targets(m, res):
    for t in m.targets:
        ratio = res["ratios"].get(t.peer, {}).get("median")
        entry = {"peer": t.peer, "op": t.op, "value": t.value, "text": t.text,
                 "ratio": ratio, "met": None if ratio is None else bool(t.met(ratio))}
        if ratio is None:
            entry["why_not"] = (res["unavailable"].get(t.peer)
                                or (res["contenders"].get(t.peer) or {}).get("error")
                                or (res["contenders"].get(m.osvrt.name) or {}).get("error")
                                or "not measured")
        res["targets"].append(entry)
    return res
