"""fork() and a started Runtime: the child gets a copy of the runtime's memory
but none of its worker OS threads (fork copies only the calling thread), so
a green thread submitted there would never run.  Instead, every runtime that
was running at the fork is marked, in the child, as inherited: submit() and
run() raise RuntimeError saying why, and stop() returns at once (there is
nothing of it to stop in the child).  A new Runtime made in the child works.
Its workers' counters are moved off the parent's stats file (a shared
mapping) into their own memory.
"""
import os
import threading
import weakref

# Runtimes started in this process and not yet stopped.
_running: "weakref.WeakSet[object]" = weakref.WeakSet()
# In a child forked while they ran: runtime -> the parent's pid.  Kept here,
# not on the Runtime, so the mark is this module's own state.
_inherited: "weakref.WeakKeyDictionary[object, int]" = weakref.WeakKeyDictionary()
# Whether any runtime was ever marked: a plain bool, because the truth test
# of a WeakKeyDictionary is a Python-level __len__ call, and forked_from runs
# on every submit() and run() (the foreign-thread round trip).
_any_inherited = False


def started(rt):
    _running.add(rt)


def stopped(rt):
    _running.discard(rt)


def _after_fork_in_child():
    global _any_inherited
    parent = os.getppid()
    for rt in list(_running):
        _inherited[rt] = parent
        _any_inherited = True
        _unshare_stats(rt)
    _running.clear()


def _unshare_stats(rt):
    """Point rt's workers' counters back at their own memory.  The stats file
    is a shared mapping, so a worker that goes on running here (fork() from
    a green thread) would count the child's work in the parent's file."""
    stats_file = getattr(rt, "_stats_file", None)
    if stats_file is not None:
        stats_file.forget_in_child()


def forked_from(rt):
    """The pid of the parent rt was running in when this process was forked
    from it, or None (rt is this process's own).  Cheap when no runtime was
    inherited: one test of a bool."""
    return _inherited.get(rt) if _any_inherited else None


def refusal(rt):
    """The RuntimeError for using rt in a child forked while it ran."""
    return RuntimeError(
        f"this Runtime was started in process {forked_from(rt)}, and this process "
        f"(pid {os.getpid()}) is a child forked from it: its worker threads did not "
        f"survive fork(), so it cannot run green threads here; start a new Runtime "
        f"(or osvrt.run()) in the child")


def new_lock_in_child(namespace, name):
    """In every child forked from this process, give the module whose
    globals are `namespace` a new threading.Lock called `name`.  fork()
    copies a lock as it was: held, if another thread of the parent was
    inside it, and that thread does not exist in the child, so the copy
    would never be released there."""
    def renew():
        namespace[name] = threading.Lock()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=renew)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
