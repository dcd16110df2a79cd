"""Writing a file at a path that someone else may control (a trace in /tmp).

The file is written to a private temporary file in the same directory
(tempfile.mkstemp: O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, named
.osvrt-tmp.XXXXXXXX.tmp), then renamed over the path.  So:

* nothing planted at the path is ever opened: a symlink is not followed, a
  FIFO cannot block the writer, a device node is never written to;
* the path is replaced only when what is there is a regular file that this
  user owns, or nothing; anything else (a symlink, a FIFO, a device, a
  socket, a directory, another user's file) is refused with an OSError that
  names it, and left as it was;
* a failed write deletes only the temporary file it made: the path keeps
  whatever it had;
* readers see the old file or the whole new one, never a half-written one
  (rename(2) is atomic within a directory).
"""
import errno
import os
import stat
import tempfile

from .printable import printable

TMP_PREFIX = ".osvrt-tmp."

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def check_target(path, what):
    """Raise OSError unless `path` is absent or a regular file this user
    owns (lstat: a symlink is judged as itself, never followed).  `what`
    names the setting in the message, e.g. "trace"."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    shown = printable(os.fsdecode(path))
    for test, kind in _KINDS:
        if test(st.st_mode):
            if kind == "a directory":
                raise IsADirectoryError(errno.EISDIR, f"osvrt: {what}={shown} is a directory",
                                        path)
            raise FileExistsError(errno.EEXIST, f"osvrt: {what}={shown} is {kind}: osvrt "
                                  "neither follows nor replaces it (give a path to a "
                                  "regular file or to nothing)", path)
    if not stat.S_ISREG(st.st_mode):
        raise FileExistsError(errno.EEXIST, f"osvrt: {what}={shown} is not a regular file",
                              path)
    if st.st_uid != os.geteuid():
        raise PermissionError(errno.EPERM, f"osvrt: {what}={shown} belongs to uid "
                              f"{st.st_uid}, not to this user (uid {os.geteuid()}): "
                              "osvrt does not replace it", path)


def write(path, what, fill, binary=False):
    """Write `path` through a private temporary file: fill(f) writes the
    text (bytes, with binary=True) to the open file f; then the temporary
    file is renamed over path.
    Raises OSError (and leaves `path` as it was) when path is not absent or
    our own regular file, or when writing fails."""
    path = os.fsdecode(path)
    parent = os.path.dirname(os.path.abspath(path))
    check_target(path, what)
    # A short fixed prefix, not the file's name: a name near NAME_MAX (255
    # bytes) that start() accepted would make the temporary name too long.
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=TMP_PREFIX, suffix=".tmp", text=not binary)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            fill(f)
        check_target(path, what)     # again: something may have been planted meanwhile
        os.replace(tmp, path)        # rename(2) replaces a directory entry, never follows it
    except BaseException:
        try:
            os.unlink(tmp)           # ours alone: made above with O_EXCL
        except OSError:
            pass
        raise
