"""Progress on stderr while the bench runs: rich's bar on a terminal when rich
is installed, else a bar drawn with \\r (terminal) or one line per measure
(a log file)."""
import shutil
import sys
import time

from . import _rich as _richmod


def _rich():
    return _richmod.rich_or_none()


class Progress:
    """The plain progress display: a bar redrawn with \\r on a terminal, and
    one line per measure otherwise (a log gets no carriage returns)."""

    def __init__(self, total, stream=None, enabled=True):
        self.total, self.done = max(1, total), 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_title = None

    def step(self, label):
        self.done = min(self.total, self.done + 1)
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.t0
        if self.tty:
            width = shutil.get_terminal_size((80, 20)).columns
            bar_w = 24
            fill = int(bar_w * self.done / self.total)
            line = (f"[{'#' * fill}{'.' * (bar_w - fill)}] {self.done}/{self.total} "
                    f"{elapsed:5.1f}s  {label}")
            self.stream.write("\r" + line[:width - 1].ljust(width - 1))
            self.stream.flush()
        else:
            title = label.split(":")[0]
            if title != self._last_title:
                self._last_title = title
                self.stream.write(f"[{100 * self.done // self.total:3d}%] {elapsed:5.1f}s  "
                                  f"{title}\n")
                self.stream.flush()

    def close(self):
        if self.enabled and self.tty:
            width = shutil.get_terminal_size((80, 20)).columns
            self.stream.write("\r" + " " * (width - 1) + "\r")
            self.stream.flush()


class RichProgress:
    """rich.progress on a terminal.  Refreshed by step() only (no refresh
    thread): a round takes milliseconds to seconds, and a thread waking 10
    times a second would run beside the rounds being measured."""

    def __init__(self, total, stream):
        rich = _rich()
        self.total, self.done = max(1, total), 0
        console = rich.console.Console(file=stream, stderr=stream is sys.stderr)
        p = rich.progress
        self._bar = p.Progress(p.BarColumn(), p.MofNCompleteColumn(), p.TimeElapsedColumn(),
                               p.TextColumn("{task.description}"), console=console,
                               auto_refresh=False, transient=True)
        self._task = self._bar.add_task("", total=self.total)
        self._bar.start()

    def step(self, label):
        self.done = min(self.total, self.done + 1)
        self._bar.update(self._task, completed=self.done, description=label, refresh=True)

    def close(self):
        self._bar.stop()


def make_progress(total, stream=None, enabled=True):
    stream = stream if stream is not None else sys.stderr
    if enabled and _rich() is not None and hasattr(stream, "isatty") and stream.isatty():
        return RichProgress(total, stream)
    return Progress(total, stream=stream, enabled=enabled)
