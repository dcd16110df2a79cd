"""Runtime(trace=PATH) creates its file safely (issue 21, items 8 and 9):
private mode, no symlink followed, nothing planted at the path opened,
written to, blocked on or deleted."""
import json
import os
import stat
import threading

import pytest

import osvrt
from osvrt.observe import trace as tr

from support import run


async def _short():
    await osvrt.sleep(0.001)


def _started(path):
    rt = osvrt.Runtime(cpus=1, trace=path)
    rt.start()
    run(rt, _short)
    return rt


def _stop_bounded(rt, unblock=None):
    """rt.stop() in a thread: (returned in time, the exception it raised)."""
    out = {}

    def stop():
        try:
            rt.stop(timeout=5)
        except BaseException as e:        # what stop() raised is what we check
            out["error"] = e

    th = threading.Thread(target=stop, daemon=True)
    th.start()
    th.join(20)
    hung = th.is_alive()
    if hung and unblock is not None:
        unblock()                          # let the old code's blocked open() go
        th.join(20)
    return not hung, out.get("error")


def test_trace_file_is_private(tmp_path):
    path = tmp_path / "t.json"
    rt = _started(path)
    rt.stop()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    json.loads(path.read_text())
    assert sorted(os.listdir(tmp_path)) == ["t.json"]       # no temporary file left


def test_existing_own_trace_file_is_replaced(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    rt = _started(path)
    rt.stop()
    assert json.loads(path.read_text())["traceEvents"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_symlink_at_start_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "t.json"
    link.symlink_to(victim)
    with pytest.raises(FileExistsError, match="symbolic link"):
        osvrt.Runtime(cpus=1, trace=link).start()
    assert victim.read_text() == "precious" and link.is_symlink()


def test_symlink_planted_while_running_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "t.json"
    rt = _started(link)
    link.symlink_to(victim)                # planted after start()'s check
    returned, err = _stop_bounded(rt)
    assert returned
    assert isinstance(err, FileExistsError) and "symbolic link" in str(err)
    assert victim.read_text() == "precious"
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert sorted(os.listdir(tmp_path)) == ["t.json", "victim"]


def test_other_users_symlink_in_sticky_dir(tmp_path):
    # /tmp's shape: a sticky world-writable directory, a symlink in it owned
    # by another user, pointing at a file of ours.  (The tests run as root,
    # so the link is chown'd; fs.protected_symlinks may or may not be set.)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = shared / "t.json"
    rt = _started(link)
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    returned, err = _stop_bounded(rt)
    assert returned and isinstance(err, OSError)
    assert victim.read_text() == "precious"
    assert link.is_symlink() and os.lstat(link).st_uid == 65534
    assert os.listdir(shared) == ["t.json"]


def test_other_users_regular_file_is_not_replaced(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("theirs")
    os.chown(path, 65534, 65534)
    with pytest.raises(PermissionError, match="uid 65534"):
        osvrt.Runtime(cpus=1, trace=path).start()
    assert path.read_text() == "theirs"


def test_fifo_at_trace_path_neither_blocks_stop_nor_is_deleted(tmp_path):
    path = tmp_path / "t.json"
    rt = _started(path)
    os.mkfifo(path)

    def unblock():
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))

    returned, err = _stop_bounded(rt, unblock)
    assert returned, "stop() blocked opening a FIFO planted at the trace path"
    assert isinstance(err, FileExistsError) and "FIFO" in str(err)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert os.listdir(tmp_path) == ["t.json"]


def test_fifo_at_start_is_refused(tmp_path):
    path = tmp_path / "t.json"
    os.mkfifo(path)
    with pytest.raises(FileExistsError, match="FIFO"):
        osvrt.Runtime(cpus=1, trace=path).start()
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


def test_device_at_trace_path_is_not_written_or_deleted(tmp_path):
    path = tmp_path / "t.json"
    rt = _started(path)
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))     # like /dev/null
    except PermissionError:
        rt.stop()
        pytest.skip("mknod needs CAP_MKNOD")
    returned, err = _stop_bounded(rt)
    assert returned
    assert isinstance(err, FileExistsError) and "character device" in str(err)
    assert stat.S_ISCHR(os.lstat(path).st_mode)


def test_failed_write_deletes_only_what_it_created(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    path.write_text("the previous trace")
    rt = _started(path)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tr.json, "dumps", disk_full)
    returned, err = _stop_bounded(rt)
    assert returned and isinstance(err, OSError) and err.errno == 28
    assert path.read_text() == "the previous trace"
    assert os.listdir(tmp_path) == ["t.json"]                  # the temporary file is gone
