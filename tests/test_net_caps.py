"""Without CAP_NET_RAW, udp_bind raises PermissionError naming CAP_NET_RAW
(checked in a child process that has dropped the capability: capsh, or
setpriv as an unprivileged user), and nothing is left half made."""
import os
import shutil
import subprocess
import sys

import pytest

import osvrt

# Where the osvrt under test was imported from (a built checkout, or
# site-packages): the child must import that one, not a source tree.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))

CHILD = r"""
import osvrt, osvrt.net
async def main():
    try:
        await osvrt.net.udp_bind(("127.0.0.1", 0))
    except PermissionError as e:
        return "PermissionError: " + str(e)
    return "no error"
rt = osvrt.Runtime(cpus=1).start()
try:
    print(rt.submit(main).result(timeout=10))
    print("net" in rt.stats())
finally:
    rt.stop(timeout=2)
"""


def _runners():
    out = []
    if shutil.which("capsh") and os.geteuid() == 0:
        out.append(("capsh", ["capsh", "--drop=cap_net_raw", "--"]))
    if shutil.which("setpriv") and os.geteuid() == 0:
        out.append(("setpriv", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "--inh-caps=-all", "--bounding-set=-net_raw", "--"]))
    return out


def _run(prefix, child=CHILD):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if prefix[0] == "capsh":
        cmd = prefix + ["-c", f"exec {sys.executable} -P -c \"$CHILD\""]
        env["CHILD"] = child
    else:
        cmd = prefix + [sys.executable, "-P", "-c", child]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd="/")


@pytest.mark.parametrize("runner", [r[0] for r in _runners()] or ["none"])
def test_permission_error_names_cap_net_raw(runner):
    runners = dict(_runners())
    if runner not in runners:
        pytest.skip("needs root and capsh or setpriv to drop CAP_NET_RAW in a child")
    # An unprivileged child (setpriv: user nobody) may be unable to read the
    # install at all (a checkout or venv under a 0700 directory): then this
    # runner cannot show anything, which is not a failure of osvrt.
    probe = _run(runners[runner], "import osvrt")
    if probe.returncode != 0:
        pytest.skip(f"the child cannot import osvrt as it runs here: {probe.stderr[-300:]}")
    r = _run(runners[runner])
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("PermissionError: "), r.stdout
    assert "CAP_NET_RAW" in lines[0]
    assert lines[1] == "False"          # no classifier was left registered
