"""The README's recipes work in the state its own commands leave (issue 21,
item 15): after the test command (a non-editable install, so this checkout
holds an unbuilt osvrt/ package) as after the main command (editable).

A recipe run from the checkout must not import the checkout's package: the
recipes use `python -P`.  Run here from the checkout itself (in CI, the
state of the test command) and from a copy of the unbuilt sources (that
state on any machine, editable installs included)."""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


def _blocks(text):
    """(is the main or test command, lines) of each plain fenced block."""
    out = []
    for m in re.finditer(r"(<!-- (\S+) -->\n)?```(\w*)\n(.*?)```", text, re.S):
        if m.group(3):                        # ```python: example code, not commands
            continue
        out.append((m.group(2) in ("main-command", "test-command"), m.group(4).splitlines()))
    return out


def _recipe_lines():
    """Command lines of the README (fenced blocks other than the two
    commands, and inline `python ... --help`) that run osvrt's Python."""
    text = _readme()
    lines = []
    for is_command, block in _blocks(text):
        if is_command:
            continue
        for line in block:
            line = line.strip()
            if line.startswith("#") or line.startswith("$ "):
                continue                      # output shown, not a recipe
            if re.search(r"\bpython3? (-\S+ )*(-m osvrt|-c )", line):
                lines.append(line)
    lines += re.findall(r"`(python[^`]*-m osvrt[^`]*--help)`", text)
    return lines


def test_recipes_do_not_import_the_checkout():
    lines = _recipe_lines()
    assert len(lines) >= 6, lines
    bad = [ln for ln in lines if not re.search(r"\bpython3? -P\b", ln)]
    assert not bad, f"recipes that would import the checkout's unbuilt package: {bad}"


def test_extras_are_added_without_replacing_an_editable_install():
    text = _readme()
    test_cmd = re.search(r"<!-- test-command -->\n```\n(.*?)```", text, re.S).group(1)
    rest = text.replace(test_cmd, "")
    plain = re.findall(r"pip install (?!-e )['\"]?\.\[", rest)
    assert not plain, "a `pip install '.[extra]'` without -e replaces an editable install"


def _runnable(line):
    """The argv to run for a recipe line (what can run in a test: --help of
    a command, or a `python -P -c` snippet), or None."""
    m = re.search(r"\$\((python.*)\)\s*(#.*)?$", line)   # SO=$(python -P -c '...')
    if m:
        argv = shlex.split(m.group(1))
    else:
        argv = shlex.split(line.split("#")[0].rstrip(" \\"))
        if "-m" not in argv:
            return None
        i = argv.index("-m")
        argv = argv[:i + 3] if len(argv) > i + 2 and not argv[i + 2].startswith("-") \
            else argv[:i + 2]
        argv.append("--help")
    if argv[0] not in ("python", "python3"):
        return None
    return [sys.executable] + argv[1:]


def _unbuilt_copy(tmp_path):
    """A directory that looks like a fresh checkout: osvrt/'s sources and no
    built extension."""
    d = tmp_path / "checkout"
    shutil.copytree(os.path.join(ROOT, "osvrt"), d / "osvrt",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return d


@pytest.mark.parametrize("where", ["checkout", "unbuilt-copy"])
def test_recipes_run(where, tmp_path):
    cwd = ROOT if where == "checkout" else str(_unbuilt_copy(tmp_path))
    argvs = [a for a in map(_runnable, _recipe_lines()) if a is not None]
    assert any("-c" in a for a in argvs) and any("top" in a for a in argvs), argvs
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for argv in argvs:
        out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120,
                             env=env, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, (argv, out.stderr[-2000:])
        assert "ModuleNotFoundError" not in out.stderr


def test_an_unbuilt_checkout_says_so_and_how_to_run(tmp_path):
    """Without -P, `python -m osvrt` from a checkout whose extensions are not
    built imports the checkout; osvrt/_engine/ (the engine's C sources) then
    came in as an empty namespace package and the import failed on a missing
    attribute ('PARK').  It must say what is wrong and what to run instead,
    as the README quotes it."""
    cwd = _unbuilt_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "osvrt", "--help"], cwd=cwd, capture_output=True,
                         text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert f"osvrt's C extensions are not built in {cwd / 'osvrt'}" in out.stderr, out.stderr
    assert "with -P" in out.stderr and "pip install -e ." in out.stderr
    assert "osvrt's C extensions are not built" in _readme()
