"""OSv's fair rule: decayed runtime, kept cheap with a per-CPU normalizer.

A thread's runtime R is an exponentially decaying integral of the CPU time it
used, R(t) = integral of p * run(s) * exp(-(t - s)/TAU) ds.  Each CPU runs the
runnable thread with the smallest R (OSv core/sched.cc).

Nothing is re-computed per tick.  Each CPU keeps a normalizer c that grows as
exp(elapsed/TAU); a thread stores R'' = c * R / TAU, relative to its CPU's c.
Running for dt multiplies c by exp(dt/TAU) and adds p * (c_new - c_old) to the
running thread's R''.  Queued and sleeping threads are not touched: their true
R = TAU * R'' / c decays by itself as c grows.

The worker loop (_engine/worker.c) inlines `advance` and `charge` in C;
this module is their reference, and holds the parts that are not hot.
"""
import math

from ._engine import FAIR

# The constants are the engine's (osvrt/_engine/engine.h), read from there:
TAU = FAIR["TAU"]                        # decay time constant (s), OSv's tau
THYST = FAIR["THYST"]                    # hysteresis: credited on switch-in, charged on switch-out
SWITCH_PENALTY = FAIR["SWITCH_PENALTY"]  # charged to the incoming thread when the outgoing stays runnable
RENORM_LIMIT = FAIR["RENORM_LIMIT"]      # when c passes this (2**63) ...
RENORM_FACTOR = FAIR["RENORM_FACTOR"]    # ... c and every R'' on the CPU are scaled by this (2**-126)

INV_TAU = 1.0 / TAU
# A charge of dt seconds at normalizer c is p * c * expm1(dt/TAU) in R'' units.
THYST_UNITS = math.expm1(THYST / TAU)
PENALTY_UNITS = math.expm1(SWITCH_PENALTY / TAU)


def advance(c, dt):
    """The normalizer after dt seconds of CPU time."""
    return c * math.exp(dt * INV_TAU)


def charge(r2, p, c_old, c_new):
    """R'' of a thread of priority p that ran while c went from c_old to c_new."""
    return r2 + p * (c_new - c_old)


def true_runtime(r2, c):
    """R in seconds (the decayed integral) from R'' and its CPU's normalizer."""
    return TAU * r2 / c


def time_until(r2_head, r2_cur, p, c):
    """Seconds the current thread (R''=r2_cur, priority p) may still run before
    its R'' reaches the head of the queue's (r2_head):
    tau * ln(1 + (R''_head - R''_cur) / (p * c))."""
    if r2_cur >= r2_head:
        return 0.0
    return TAU * math.log1p((r2_head - r2_cur) / (p * c))


def export_runtime(r2, c):
    """A CPU-independent form of R'' (R / TAU), for moving a thread."""
    return r2 / c


def import_runtime(exported, c):
    """R'' on a CPU whose normalizer is c, from export_runtime()."""
    return exported * c


def renormalized(r2, missed):
    """R'' of a sleeper that missed `missed` renormalizations of its CPU: one
    is a plain rescale; after two or more its R is below 2**-63 of a normal
    value, i.e. zero for all purposes (OSv does the same)."""
    if missed <= 0:
        return r2
    if missed == 1:
        return r2 * RENORM_FACTOR
    return 0.0


def priority_of_nice(n):
    """OSv's mapping of a nice value to a priority: p = exp(n * ln(86) / 20)."""
    return math.exp(n * math.log(86.0) / 20.0)
