"""The catalogue of `python -m osvrt bench` rows: each row is one small
declarative entry, registered with @row in a module of osvrt/bench/rows/
(every module there is imported by rows()), so a new row needs no change to
the report, the chart or the command:

    from ..catalog import row
    from ..measure import Contender, Measure, Target

    @row("tcp_rps", order=200, full={"tcp_requests": 100_000},
         quick={"tcp_requests": 10_000})
    def tcp_rps(cpus, sizes):
        n = sizes["tcp_requests"]
        return Measure("tcp_rps", "TCP requests/s", "req/s", "higher", Contender(...),
                       [...], targets=[Target(...)], setup=..., weight=5, sizes={...})

order: the row's place in the table and chart; full/quick: its workload sizes
in the full and --quick runs (names are shared by all rows: use your own
prefix); the factory gets the CPU ids and the merged sizes."""
import importlib
import pkgutil


class RowSpec:
    """One registered row: its key, place, sizes and Measure factory."""

    __slots__ = ("key", "order", "full", "quick", "factory")

    def __init__(self, key, order, full, quick, factory):
        self.key, self.order, self.full, self.quick, self.factory = (key, order, dict(full),
                                                                     dict(quick), factory)


_REGISTRY: dict[str, RowSpec] = {}


def row(key, *, order, full=None, quick=None):
    """Register the decorated factory(cpus, sizes) -> Measure as row `key`."""
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(f"a row key is an identifier, not {key!r}")

    def register(factory):
        if key in _REGISTRY and _REGISTRY[key].factory is not factory:
            raise ValueError(f"bench row {key!r} is registered twice")
        _REGISTRY[key] = RowSpec(key, order, full or {}, quick or full or {}, factory)
        return factory
    return register


def rows():
    """Every registered row, in table order (imports osvrt/bench/rows/*)."""
    from . import rows as package
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    return sorted(_REGISTRY.values(), key=lambda r: (r.order, r.key))


def measure_keys():
    return tuple(r.key for r in rows())


def sizes(mode):
    """The merged workload sizes of every row for mode "full" or "quick"."""
    out = {}
    for r in rows():
        out.update(r.full if mode == "full" else r.quick)
    return out


def build_measures(cpus, sizes, keys=None):
    """The Measures of the rows in `keys` (default: all), in table order."""
    return [r.factory(cpus, sizes) for r in rows() if keys is None or r.key in keys]
