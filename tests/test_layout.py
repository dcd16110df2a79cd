"""The layout's rules (issue #22), checked on the source: no import circle
among osvrt's Python modules (imports inside functions included), importing
osvrt loads neither rich nor the bench or viewer code, and the parts built on
the runtime use its service interface, not its private attributes."""
import ast
import functools
import pathlib
import re
import subprocess
import sys

import pytest

import osvrt

ROOT = pathlib.Path(osvrt.__file__).parent
# the checkout (C sources, setup.py): the installed package has none of them
REPO = pathlib.Path(__file__).resolve().parents[1]


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), is_pkg, path


def _exists(name):
    p = ROOT.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def import_graph():
    """module -> set of osvrt modules it imports (anywhere in its body)."""
    graph = {}
    for name, is_pkg, path in _modules():
        package = name if is_pkg else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if _exists(f"{mod}.{a.name}") else mod
                           for a in node.names]
            else:
                continue
            for t in targets:
                if t.startswith("osvrt") and _exists(t) and t != name:
                    # a package's own children, and a child's parent package,
                    # are not a circle (Python imports parents first)
                    if not (t.startswith(name + ".") or name.startswith(t + ".")):
                        edges.add(t)
        graph[name] = edges
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def test_no_import_circle():
    graph = import_graph()
    assert "osvrt.runtime" in graph and "osvrt.kernel" in graph["osvrt.runtime"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_import_osvrt_loads_no_tooling():
    code = ("import sys, osvrt, osvrt.net; "
            "print(' '.join(m for m in sys.modules if m == 'rich' or m.startswith('rich.') "
            "or m.startswith('osvrt.bench') or m == 'osvrt.observe.top' "
            "or m == 'matplotlib' or m == 'asyncio' or m.startswith('osvrt.aio')))")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == []


# `rt._x`, `.rt._x`, `runtime._x` on another module's object: the service
# interface (Runtime.workers, handle_for, worker_for, attach_service, service,
# core, stopping, live_threads) replaces them.
PRIVATE_RUNTIME = re.compile(r"\brt\._(?!_)\w+|\.rt\._(?!_)\w+|\brt\._\w+")


@pytest.mark.parametrize("name,is_pkg,path", [m for m in _modules()
                                              if m[0] != "osvrt.runtime"],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_no_module_reaches_into_the_runtime(name, is_pkg, path):
    hits = [f"{path.name}:{i}: {line.strip()}"
            for i, line in enumerate(path.read_text().splitlines(), 1)
            if PRIVATE_RUNTIME.search(line.split("#")[0])]
    assert hits == []


# ---- no module reaches into another's private attributes --------------------
#
# An underscored name belongs to the module that defines it: a module-level
# name, a method or class attribute, an attribute it assigns on self, a
# __slots__ entry; the engine's (osvrt/_engine/*.c) belong to the engine's
# types (their PyMemberDef/PyGetSetDef/PyMethodDef tables) or, for module
# functions, to the engine module.  A module may use `x._name` only for a name
# it defines itself (its own class's fields on another instance), or a field
# of the engine type its class extends (thread.py: ThreadBase, worker.py:
# WorkerBase: the two Python halves of the engine's objects).  `from m import
# _name` is a reach too, except for a package's own private modules
# (`from . import _engine`).  Names that osvrt does not define at all (the
# standard library's, asyncio's Handle fields in osvrt.aio) are not osvrt's
# to judge here; FOREIGN names the places where such a name is spelled like
# one of osvrt's.  No osvrt reach is allowed.

# (module, attribute): another library's private field, spelled like an
# osvrt one, which the check cannot tell apart by name.
FOREIGN = {
    # pytest-benchmark's BenchmarkFixture._timer (its clock for every round),
    # not osvrt.deadline's _timer
    ("osvrt.pytest_plugin", "_timer"),
}

def _engine_private_names():
    """engine type name -> its underscored fields; '' -> the module's functions."""
    tables, types = {}, {}
    for c in sorted((REPO / "osvrt" / "_engine").glob("*.c")):
        src = c.read_text()
        for m in re.finditer(r"(?:PyMemberDef|PyGetSetDef|PyMethodDef)\s+(\w+)\[\]\s*=\s*\{(.*?)\n\};",
                             src, re.S):
            tables[m.group(1)] = set(re.findall(r'\{\s*"(_[A-Za-z]\w*)"', m.group(2)))
        for m in re.finditer(r"PyTypeObject\s+\w+\s*=\s*\{(.*?)\n\};", src, re.S):
            body = m.group(1)
            name = re.search(r'\.tp_name\s*=\s*"([\w.]+)"', body).group(1).rpartition(".")[2]
            used = re.findall(r"\.tp_(?:members|getset|methods)\s*=\s*(\w+)", body)
            types[name] = set().union(*(tables.get(t, set()) for t in used))
    in_types = set().union(*types.values())
    types[""] = set().union(*tables.values()) - in_types
    return types


def _is_module(name):
    """A Python module, a package, or a compiled extension (osvrt._engine)."""
    p = ROOT.parent.joinpath(*name.split("."))
    return _exists(name) or any(p.parent.glob(p.name + ".*.so"))


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _defined_names(tree):
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) \
                and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"):
            out.add(n.attr)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            out.update(n.names)
        elif isinstance(n, ast.ClassDef) is False and isinstance(n, ast.Assign) \
                and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in n.targets):
            out.update(e.value for e in ast.walk(n.value)
                       if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return {x for x in out if _private(x)}


def _extended_engine_types(tree):
    return {ast.unparse(b).split(".", 1)[1] for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
            for b in n.bases if ast.unparse(b).startswith("_engine.")}


def private_reaches(modules, engine):
    """modules: {name: (source, is_pkg)}; engine: _engine_private_names().
    Every place where a module uses another's underscored name."""
    trees = {name: ast.parse(src, name) for name, (src, _) in modules.items()}
    owners = {}
    for name, tree in trees.items():
        for x in _defined_names(tree):
            owners.setdefault(x, set()).add(name)
    for names in engine.values():
        for x in names:
            owners.setdefault(x, set()).add("osvrt._engine")
    hits = []
    for name, tree in trees.items():
        mine = _defined_names(tree)
        for ty in _extended_engine_types(tree):
            mine |= engine.get(ty, set())
        package = name if modules[name][1] else name.rpartition(".")[0]
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and _private(n.attr):
                v = n.value
                if isinstance(v, ast.Name) and v.id in ("self", "cls"):
                    continue
                if isinstance(v, ast.Call) and ast.unparse(v.func) == "super":
                    continue
                if n.attr in mine or n.attr not in owners or (name, n.attr) in FOREIGN:
                    continue
                hits.append(f"{name}:{n.lineno}: {ast.unparse(n)} "
                            f"(owned by {', '.join(sorted(owners[n.attr]))})")
            elif isinstance(n, ast.ImportFrom):
                base = (package.split(".")[:len(package.split(".")) - n.level + 1]
                        if n.level else [])
                mod = ".".join(base + ([n.module] if n.module else []))
                for a in n.names:
                    if _private(a.name) and f"{mod}.{a.name}" not in modules \
                            and not _is_module(f"{mod}.{a.name}") and mod.startswith("osvrt"):
                        hits.append(f"{name}:{n.lineno}: from {mod} import {a.name}")
    return sorted(hits)


def test_no_module_reaches_into_another_modules_private_attributes():
    modules = {name: (path.read_text(), is_pkg) for name, is_pkg, path in _modules()}
    assert private_reaches(modules, _engine_private_names()) == []


def test_the_private_reach_check_finds_one():
    engine = _engine_private_names()
    assert "_w" in engine["ThreadBase"] and "_bind" in engine["WorkerBase"]
    mods = {
        "osvrt.a": ("class A:\n    def __init__(self):\n        self._x = 1\n"
                    "    def same(self, other):\n        return other._x\n"
                    "def _helper():\n    pass\n", False),
        "osvrt.b": ("from . import a\nfrom .a import _helper\n"
                    "def f(o, t):\n    return o._x, t._w\n", False),
        "osvrt.c": ("from . import _engine\nclass T(_engine.ThreadBase):\n    pass\n"
                    "def g(t):\n    return t._w\n", False),
    }
    assert private_reaches(mods, engine) == [
        "osvrt.b:2: from osvrt.a import _helper",
        "osvrt.b:4: o._x (owned by osvrt.a)",
        "osvrt.b:4: t._w (owned by osvrt._engine)",
    ]


class _Svc:
    def __init__(self, log):
        self.log = log

    def stop(self):
        self.log.append("stop")

    def stats(self):
        return {"n": 1}


def test_attach_service_stops_with_the_runtime_and_reports_stats():
    log = []
    rt = osvrt.Runtime(cpus=1).start()
    try:
        svc = _Svc(log)
        assert rt.attach_service("mine", svc) is svc
        assert rt.service("mine") is svc and rt.service("other") is None
        assert rt.stats()["mine"] == {"n": 1}
        with pytest.raises(ValueError, match="'mine' is already attached"):
            rt.attach_service("mine", _Svc(log))
        with pytest.raises(TypeError, match="has no stop"):
            rt.attach_service("bad", object())
        with pytest.raises(TypeError, match="non-empty str"):
            rt.attach_service("", svc)
        assert rt.workers and rt.core is not None and not rt.stopping
        assert rt.worker_for(rt.cpus[0]) is rt.workers[0]
    finally:
        rt.stop()
    assert log == ["stop"] and rt.stopping
    with pytest.raises(RuntimeError, match="stopped its services"):
        rt.attach_service("late", _Svc(log))
    assert "bad" not in rt.stats()


def test_engine_hooks_are_looked_up_once_at_bind():
    """The engine calls into Python through functions it looked up on the
    Worker's and the Runtime's classes at _bind: a hook replaced on an
    instance afterwards is not called (it was, with a lookup per call)."""
    rt = osvrt.Runtime(cpus=1).start()
    try:
        w = rt.workers[0]
        called = []
        w._settle = lambda t: called.append(t)           # an instance attribute: ignored
        assert rt.submit(osvrt.sleep, 0).result(5) is None
        assert called == []
    finally:
        rt.stop()


def test_bind_refuses_a_class_without_the_hooks():
    from osvrt import _engine

    class Bare(_engine.WorkerBase):
        pass
    rt = osvrt.Runtime(cpus=1).start()
    try:
        with pytest.raises(AttributeError, match="_before_idle"):
            Bare()._bind(rt, {}, _engine.LiveSet(), int(osvrt._core.ffi.cast(
                "uintptr_t", rt.core)), 0, 0)
    finally:
        rt.stop()


def _not_async():
    return 42


def test_one_constructor_for_spawn_submit_and_system_threads():
    """spawn, submit and the runtime's own threads are made by the engine's
    one constructor: the same checks and the same words, and system threads
    are never in the live set (nothing to undo by hand)."""
    src = (ROOT / "runtime.py").read_text()
    assert "_start_coroutine" not in src and "_spawned -= 1" not in src
    rt = osvrt.Runtime(cpus=2, balance=True).start()
    try:
        assert rt.stats()["threads_spawned"] == 0 and rt.live_threads() == []

        async def spawn_it(fn, **kw):
            try:
                osvrt.spawn(fn, **kw)
            except (TypeError, ValueError) as e:
                return type(e), str(e)

        def submit_it(fn, **kw):
            try:
                rt.submit(fn, **kw)
            except (TypeError, ValueError) as e:
                return type(e), str(e)

        async def fine():
            pass

        for fn, kw in ((_not_async, {}), (42, {}), (fine, {"name": 3})):
            spawned = rt.submit(functools.partial(spawn_it, fn, **kw)).result(5)
            submitted = submit_it(fn, **kw)
            assert spawned is not None and spawned == submitted, (spawned, submitted)
    finally:
        rt.stop()


def test_each_fact_in_one_place():
    """The fair rule's constants are the engine's; the stats file's layout is
    checked against the C header (cffi's sizes and offsets)."""
    import struct

    from osvrt import _engine, fair
    from osvrt.observe import statsfile
    assert fair.TAU == _engine.FAIR["TAU"] == 0.2 and fair.THYST == _engine.FAIR["THYST"]
    assert "TAU = 0.200" not in (ROOT / "fair.py").read_text()
    statsfile.check_layout()
    with pytest.raises(ImportError, match="slot 120 != 128 bytes"):
        statsfile.check_layout(slot=struct.Struct("=15Q"))
    with pytest.raises(ImportError, match="slot fields .* != "):
        statsfile.check_layout(fields=statsfile.SLOT_FIELDS[:5] + ("x",)
                               + statsfile.SLOT_FIELDS[5:])
    assert statsfile.MAGIC == 0x5453545256534F00


def test_bench_peers_are_their_own_module():
    """The C benchmark peers are built as osvrt.bench._peers, not into the
    runtime's osvrt._core, and the core's public header does not include them."""
    from osvrt import _core
    for name in ("osvrt_peer_queue", "osvrt_peer_futex_pingpong", "osvrt_net_bench_rr"):
        assert not hasattr(_core.lib, name), name
    from osvrt.bench import _peers
    assert hasattr(_peers.lib, "osvrt_peer_queue") and hasattr(_peers.lib, "osvrt_net_bench_rr")
    osvrt_h = (REPO / "csrc" / "core" / "osvrt.h").read_text()
    assert '#include "peers.h"' not in osvrt_h


def test_importing_osvrt_leaves_the_engine_alone():
    """No import side effects: the engine is set up once, by the first
    Runtime.start(), whatever was imported in which order before."""
    code = ("import osvrt.sync, osvrt.readiness, osvrt.kernel, osvrt._setup as s, osvrt; "
            "before = s._done; "
            "r = osvrt.run(osvrt.sleep, 0); "
            "print(before, s._done, r)")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["False", "True", "None"]
    for name in ("kernel.py", "thread.py", "readiness.py"):
        src = (ROOT / name).read_text()
        assert not re.search(r"^_engine\.\w+\(", src, re.M), name


def test_repeated_blocks_are_gone():
    """Definitions that were written more than once now have one home."""
    csrc = REPO / "csrc"
    sources = [p for p in csrc.rglob("*.[ch]")]
    for fn, home in (("cpu_relax(void)", "relax.h"), ("osvrt_stat_add(", "stat.h")):
        defs = [p.name for p in sources
                if re.search(r"static inline void " + re.escape(fn), p.read_text())
                or re.search(r"^static void " + re.escape(fn), p.read_text(), re.M)]
        assert defs == [home], (fn, defs)
    runtime = (ROOT / "runtime.py").read_text()
    assert "def _load(" not in runtime and "def _check_number(" not in runtime
    assert "def _check_int(" not in (ROOT / "net" / "channels" / "service.py").read_text()


# Lines that say nothing alone (punctuation, imports, bare returns): a run
# of them is not a repeated block.
_THIN = {"{", "}", "};", ")", "]", "else", "else {", "} else {", "break;", "return;",
         "continue;", "pass", "try:", "finally:", "return 0;", "return -1;", "return NULL;"}


def _significant_lines(text):
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        s = " ".join(line.split())
        if s and not s.startswith(("#", "//", "/*", "*", "import ", "from ")) and s not in _THIN:
            out.append((i, s))
    return out


def repeated_runs(files, n=6):
    """Places where n significant lines (white space folded) stand again, in
    the same file or another: [(file, line, file, line)]."""
    seen, hits = {}, []
    for name, text in files:
        lines = _significant_lines(text)
        for k in range(len(lines) - n + 1):
            key = tuple(s for _, s in lines[k:k + n])
            first = seen.get(key)
            if first is None:
                seen[key] = (name, lines[k][0])
            elif first[0] != name or first[1] + n <= lines[k][0]:
                hits.append((*first, name, lines[k][0]))
    return hits


def test_no_block_is_written_twice():
    """No six significant lines of osvrt's Python, engine or C core stand
    twice (in one file or two).  The cffi cdefs are copies of C headers by
    design, checked declaration by declaration in test_cdef_headers.py."""
    cdefs = {"osvrt/_build.py", "osvrt/bench/_build_peers.py"}
    paths = [p for p in sorted(REPO.joinpath("osvrt").rglob("*.py")) + sorted(
             REPO.joinpath("osvrt", "_engine").glob("*.[ch]")) + sorted(
             REPO.joinpath("csrc").rglob("*.[ch]"))
             if str(p.relative_to(REPO)) not in cdefs]
    files = [(str(p.relative_to(REPO)), p.read_text()) for p in paths]
    hits = repeated_runs(files)
    # on the whole, runs overlap: name each pair of places once
    assert sorted({(a, b) for a, _, b, _ in hits}) == [], hits[:10]


def test_the_repeat_finder_finds_one():
    body = "a = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf = 6\n"
    assert repeated_runs([("x.py", body + "g = 7\n" + body)]) == [("x.py", 1, "x.py", 8)]
    assert repeated_runs([("x.py", body), ("y.c", "int q;\n" + body)]) == [("x.py", 1, "y.c", 2)]
    assert repeated_runs([("x.py", body.replace("f = 6", "f = 7") + body)]) == []


def test_each_heap_and_each_wait_end_is_written_once():
    """The engine's two heaps share one entry shape and one sift-up and
    sift-down; cancel() and the timeout's interrupt end a wait through one
    function (they were the same lines with other names)."""
    engine = REPO / "osvrt" / "_engine"
    c = "\n".join(p.read_text() for p in sorted(engine.glob("*.[ch]")))
    assert len(re.findall(r"^\w*sift_up\(", c, re.M)) == 1
    assert len(re.findall(r"^\w*sift_down\(", c, re.M)) == 1
    assert len(re.findall(r"^struct \w*_entry \{", c, re.M)) == 1
    thread_c = (engine / "thread.c").read_text()
    assert thread_c.count("atomic_store_explicit(&t->pending, 1, memory_order_seq_cst);") == 1


def test_old_module_names_still_work_as_dotted_names():
    # `import osvrt.net.streams` found the alias in sys.modules but left no
    # attribute on the package, so osvrt.net.streams.Stream was AttributeError.
    code = ("import osvrt.net.streams, osvrt.net.udp, osvrt.net.sockets, osvrt.net.channels.udp\n"
            "assert osvrt.net.streams.Stream is osvrt.net.sockets.Stream\n"
            "assert osvrt.net.udp is osvrt.net.channels.udp\n"
            "from osvrt.net.streams import open_tcp_stream\n"
            "assert open_tcp_stream is osvrt.net.sockets.open_tcp_stream\n")
    subprocess.run([sys.executable, "-P", "-c", code], check=True)


def test_the_thread_views_a_service_uses():
    """What replaced the private reaches: read-only views of a Thread, a C
    handle set once, and the worker entries osvrt.aio runs its loop with."""
    rt = osvrt.Runtime(cpus=1).start()
    try:
        async def main():
            t = osvrt.current()
            assert t.worker is rt.workers[0] and t.coro is not None
            h = t.handle or rt.handle_for(t)
            assert t.handle == h and rt.handle_for(t) == h       # allocated once
            with pytest.raises(ValueError, match="set once"):
                t.handle = h + 1
            with pytest.raises(AttributeError):
                t.worker = rt.workers[0]
            ticket = t.new_ticket()
            assert osvrt.kernel.wake(ticket) and not osvrt.kernel.wake(ticket)
            await osvrt.kernel.park()                  # the wake made it runnable
            return t
        t = rt.run(main)
        assert t.coro is None                          # dropped when it ended
        w = rt.workers[0]
        assert not w.stop_requested and callable(w.run_loop)
    finally:
        rt.stop()
    assert w.stop_requested
