"""osvrt ships its types (#21 item 16): py.typed, the engine's stubs, text
signatures on the engine's builtins, osvrt.__version__, and a type checker
that reads them."""
import importlib.util
import inspect
import pathlib
import re
import subprocess
import sys

import pytest

import osvrt
from osvrt import _engine

ROOT = pathlib.Path(osvrt.__file__).parent
# the checkout (C sources, setup.py): the installed package has none of them
REPO = pathlib.Path(__file__).resolve().parents[1]


def test_version_is_one_fact():
    setup = (REPO / "setup.py").read_text()
    assert "version=VERSION" in setup and "_version.py" in setup
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", osvrt.__version__)
    from osvrt.bench import cli
    assert cli._version() == osvrt.__version__


def test_the_package_is_typed():
    assert (ROOT / "py.typed").is_file()
    assert (ROOT / "_engine.pyi").is_file() and (ROOT / "_core.pyi").is_file()


def test_engine_builtins_have_signatures():
    sig = inspect.signature(osvrt.spawn)
    assert list(sig.parameters) == ["fn", "args", "name", "cpu", "priority"]
    assert sig.parameters["args"].kind is inspect.Parameter.VAR_POSITIONAL
    assert sig.parameters["priority"].default == 1.0
    assert list(inspect.signature(osvrt.sleep).parameters) == ["seconds"]
    assert list(inspect.signature(osvrt.Thread.join).parameters) == ["self", "timeout"]
    for name in ("current", "current_worker", "wake", "claim", "schedule", "wake_at", "park",
                 "yield_now", "sleep", "spawn", "check_delay", "check_priority", "next_id",
                 "monotonic", "sock_recv", "sock_recv_into", "sock_sendall", "io_budget"):
        inspect.signature(getattr(_engine, name))      # ValueError without a text signature


def test_stubs_name_every_public_engine_name():
    stub = (ROOT / "_engine.pyi").read_text()
    for name in dir(_engine):
        if not name.startswith("__"):
            assert re.search(rf"^(def|class) {name}\b|^{name}: ", stub, re.M), name


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_a_type_checker_reads_the_stubs(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("import osvrt\n\nasync def main() -> None:\n"
                    "    t = osvrt.spawn(main, name='x')\n"
                    "    await osvrt.sleep(0.1)\n"
                    "    await t.join()\n\n"
                    "v: str = osvrt.__version__\n")
    bad = tmp_path / "bad.py"
    bad.write_text("import osvrt\n\nasync def main() -> None:\n"
                   "    await osvrt.sleep('one second')\n")
    cmd = [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / "c"),
           "--python-version", "3.11"]
    ok = subprocess.run(cmd + [str(good)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    ko = subprocess.run(cmd + [str(bad)], capture_output=True, text=True, timeout=300)
    assert ko.returncode == 1 and 'incompatible type "str"' in ko.stdout, ko.stdout
