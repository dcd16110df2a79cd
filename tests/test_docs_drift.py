"""The docs say what the code does (issue 21, item 18): net.configure's
defaults, ep.stats()["dropped"]'s keys, the extras, the perf samples."""
import ast
import inspect
import os
import re
import subprocess

import pytest

import osvrt
import osvrt.net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def test_configure_signature_in_api_md_matches_the_code():
    api = _read("docs", "api.md")
    m = re.search(r"### `osvrt\.net\.configure\((.*?)\)`", api)
    assert m, "docs/api.md has no osvrt.net.configure heading"
    documented = {}
    for part in m.group(1).split(","):
        part = part.strip()
        if "=" in part:
            k, v = part.split("=", 1)
            documented[k.strip()] = ast.literal_eval(v.strip())
    actual = {k: p.default for k, p in inspect.signature(osvrt.net.configure).parameters.items()
              if p.default is not inspect.Parameter.empty}
    assert documented == actual
    for name in actual:
        if name != "rt":
            assert f"- `{name}`" in api, f"docs/api.md does not describe configure({name}=...)"


def test_dropped_keys_in_api_md_match_an_endpoints_stats():
    from osvrt.bench import frames
    ok, why = frames.can_open_packet_socket()
    if not ok:
        pytest.skip(f"osvrt.net needs CAP_NET_RAW ({why})")
    api = _read("docs", "api.md")
    m = re.search(r"`dropped` is a dict of counts by reason, always with these (\w+) keys:\n"
                  r"((?:  - .*\n(?:    .*\n)*)+)", api)
    assert m, "docs/api.md does not list the dropped keys"
    documented = re.findall(r'^  - `"(\w+)"`', m.group(2), re.M)
    rt = osvrt.Runtime(cpus=1)
    with rt:
        async def keys():
            ep = await osvrt.net.udp_bind(("127.0.0.1", 0))
            try:
                return sorted(ep.stats()["dropped"])
            finally:
                ep.close()
        actual = rt.run(keys)
    assert sorted(documented) == actual
    words = {3: "three", 4: "four", 5: "five", 6: "six"}
    assert m.group(1) == words.get(len(actual)), m.group(1)


def _setup_keyword(name):
    tree = ast.parse(_read("setup.py"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name}")


def _setup_extras():
    return _setup_keyword("extras_require")


def test_readme_names_every_runtime_dependency():
    readme = _read("README.md")
    deps = readme[readme.index("## Dependencies"):readme.index("The extras:")]
    for req in _setup_keyword("install_requires"):
        name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
        assert name in deps, f"README's Dependencies does not say why {name} is needed"


def test_readme_lists_every_extra_and_its_packages():
    readme = _read("README.md")
    deps = readme[readme.index("## Dependencies"):readme.index("## How it works")]
    for extra, reqs in _setup_extras().items():
        m = re.search(rf"^- `osvrt\[{extra}\]`:(.*?)(?=^- |\Z)", deps, re.M | re.S)
        assert m, f"README's Dependencies does not list osvrt[{extra}]"
        for req in reqs:
            name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
            assert name in m.group(1), f"osvrt[{extra}] in the README does not name {name}"


def test_perf_sample_symbols_exist_in_the_extensions():
    readme = _read("README.md")
    block = readme[readme.index("## Profiling with perf"):]
    names = set(re.findall(r"^#\s+[\d.]+%\s+\S+\s+\[\.\]\s+(\w+)", block, re.M))
    names |= set(re.findall(r"^#\s+-*(\w+)\s*$", block, re.M))
    assert names, "no perf samples in the README"
    import osvrt._core as core
    import osvrt._engine as engine
    syms = set()
    for so in (core.__file__, engine.__file__):
        out = subprocess.run(["nm", "-a", so], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"nm: {out.stderr.strip()}")
        syms |= {ln.split()[-1] for ln in out.stdout.splitlines() if ln.strip()}
    python_side = {"method_vectorcall_NOARGS", "_PyEval_EvalFrameDefault"}   # libpython's
    missing = sorted(n for n in names - python_side if n not in syms)
    assert not missing, f"the README's perf samples name functions that do not exist: {missing}"
