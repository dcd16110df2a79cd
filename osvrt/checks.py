"""Argument checks shared by every module: each raises TypeError or
ValueError with a message that names the argument and the bad value, and
returns the value when it is good.  Write a new check here, not a local copy.

The checks on the switch path (delays, priorities) are the engine's (C:
module.c), so that spawn() and sleep() need no Python frame; they are named
here too."""
import math
import os

from . import _engine


def check_bool(name, value):
    """True or False, nothing else (1 and None are mistakes, not flags)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def check_int(name, value, lo, hi):
    """An int (not a bool) in lo..hi."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, not {value!r}")
    return value


def check_number(name, value, minimum, *, allow_equal):
    """A finite int or float (not a bool) above `minimum` (or equal to it when
    allow_equal)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {value!r}")
    try:
        x = float(value)             # an int beyond a float's range is not finite
    except OverflowError:
        x = math.inf
    if math.isnan(x) or math.isinf(x) or x < minimum or (x == minimum and not allow_equal):
        op = ">=" if allow_equal else ">"
        raise ValueError(f"{name} must be a finite number {op} {minimum}, not {value!r}")
    return value


def check_output_path(name, path):
    """A file path that can be written (its folder exists and takes new
    files; the path is not a folder), checked before a run of minutes
    rather than when it ends, so that its figures are not lost."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{name} {path}: is a folder, not a file")
    if not os.path.isdir(folder):
        raise ValueError(f"{name} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path}: the folder {folder} is not writable")
    return path


def count_argument(text):
    """An argparse type for a command-line count (rounds, sizes, seconds):
    a whole number >= 1, else a usage error naming the text (0 rounds end
    on an empty median, a negative size never ends a round)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        import argparse             # only where a command line is parsed
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return n


def check_delay(seconds, what="seconds"):
    """A non-negative finite number of seconds (the engine's check)."""
    return _engine.check_delay(seconds, what)


def check_timeout(timeout):
    """None (no limit) or a delay."""
    return None if timeout is None else check_delay(timeout, "timeout")


def check_priority(priority):
    """A priority in the range that keeps the fair rule finite (the engine's
    check); returns it as a float."""
    return _engine.check_priority(priority)
