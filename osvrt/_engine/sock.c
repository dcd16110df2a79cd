/* sock.c - the socket path's share of the engine: the cooperative I/O budget.
 *
 * A green thread yields the CPU only at a trap, and OSv's fair rule is applied
 * only there.  A socket call that finds data (or buffer space) ready returns
 * without one, so a connection whose peer always has data ready would keep
 * its worker for as long as it likes: timers, I/O-woken readers and every
 * other thread on the CPU starve (issue #21, item 3).  As tokio's coop
 * budget does, each resume of a thread grants IO_BUDGET calls that complete
 * at once (worker.c resets it); the call after those yields, the loop takes
 * in wake-ups, fires timers, polls readiness and lets the rule pick again.
 */
#include "engine.h"

/* io_budget() -> None while the budget lasts (one is spent), or an awaitable
 * yield once it is spent.  None outside a worker (a plain call from an OS
 * thread has no CPU to share). */
static PyObject *
m_io_budget(PyObject *m, PyObject *unused)
{
    WorkerObject *w = tls_worker;
    if (w == NULL || --w->io_budget > 0)
        Py_RETURN_NONE;
    w->io_budget = IO_BUDGET;      /* if the rule keeps us running, a fresh budget */
    return (PyObject *)ticket_new(NULL, TK_YIELD);
}

PyMethodDef sock_module_methods[] = {
    {"io_budget", m_io_budget, METH_NOARGS,
     "io_budget(): spend one of the current thread's socket calls; None while\n"
     "some are left, else an awaitable that yields (await it)."},
    {NULL}
};
