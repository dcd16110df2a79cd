"""osvrt.bench.ready: the bench's bounded wait for a helper process's
"ready" line (a hung server must not hang the bench)."""
import subprocess
import sys
import tempfile

import pytest

from osvrt.bench.ready import wait_ready


def _spawn(code, **kw):
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, **kw)


def test_ready_line_leaves_the_rest_of_the_output():
    p = _spawn("print('ready', flush=True); print('after')")
    wait_ready(p, "the test server")
    assert p.stdout.read() == "after\n"
    assert p.wait(10) == 0


def test_a_process_that_exits_is_named_with_its_stderr():
    p = _spawn("import sys; sys.stderr.write('no port'); sys.exit(3)", stderr=subprocess.PIPE)
    with pytest.raises(RuntimeError, match=r"the test server did not start \(it exited\): no port"):
        wait_ready(p, "the test server")


def test_another_line_is_not_ready():
    p = _spawn("print('listening', flush=True)", stderr=subprocess.PIPE)
    with pytest.raises(RuntimeError, match="it printed 'listening'"):
        wait_ready(p, "the test server")


def test_a_hung_process_is_killed_at_the_deadline():
    with tempfile.TemporaryFile() as err:
        p = _spawn("import sys, time; sys.stderr.write('stuck'); sys.stderr.flush(); "
                   "time.sleep(600)", stderr=err)
        with pytest.raises(RuntimeError, match=r"said nothing within 0.5 s\): stuck"):
            wait_ready(p, "the test server", timeout=0.5, stderr=err)
        assert p.poll() is not None            # killed, not left behind
