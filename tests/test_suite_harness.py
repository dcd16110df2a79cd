"""The test suite's own harness (tests/conftest.py): a collection error is
reported, not lost.  The conftest once suspended and resumed pytest's capture
to find the real stderr for its hang guard, which left pytest's terminal
writer on a closed file whenever collection failed: CI printed only
"ValueError: I/O operation on closed file"."""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_a_collection_error_is_reported(tmp_path):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_broken.py").write_text("import a_module_that_does_not_exist\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    text = out.stdout + out.stderr
    assert "1 error during collection" in text, text[-2000:]
    assert "a_module_that_does_not_exist" in text
    assert "I/O operation on closed file" not in text
