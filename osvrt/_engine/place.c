/* Where a new thread from outside the runtime goes: the load hint of a worker
 * and the least loaded worker, read from any OS thread.
 *
 * Runtime.submit / Runtime.run pick a worker for every call from a foreign
 * OS thread; in Python the pick (a key function, three memoryview reads per
 * worker, a cffi call for the current CPU) cost 2.4 us, more than the whole
 * rest of the submit.  Here it is a few loads per worker and one
 * sched_getcpu() (rseq/vDSO, no syscall). */
#define _GNU_SOURCE
#include "engine.h"

#include <sched.h>

/* Runnable threads on w, running or queued, and those pushed to it but not
 * taken in yet.  Every load is relaxed: each counter is a hint read on its
 * own (the owner and the pushers keep writing), and a stale value costs one
 * poorer placement, never correctness. */
static Py_ssize_t
load_hint(WorkerObject *w)
{
    Py_ssize_t n = atomic_load_explicit(&w->rq_len, memory_order_relaxed)
                   + atomic_load_explicit(&w->running, memory_order_relaxed);
    if (w->cpu != NULL) {
        uint64_t pushed = atomic_load_explicit(&w->cpu->pushes, memory_order_relaxed);
        uint64_t drained = atomic_load_explicit(&w->cpu->drained, memory_order_relaxed);
        if (pushed > drained)
            n += (Py_ssize_t)(pushed - drained);
    }
    return n;
}

static WorkerObject *
as_worker(PyObject *o)
{
    if (!PyObject_TypeCheck(o, &WorkerBase_Type)) {
        PyErr_Format(PyExc_TypeError, "not a Worker: %R", o);
        return NULL;
    }
    return (WorkerObject *)o;
}

static PyObject *
m_worker_load(PyObject *m, PyObject *o)
{
    WorkerObject *w = as_worker(o);
    return w ? PyLong_FromSsize_t(load_hint(w)) : NULL;
}

/* least_loaded(workers, cpu_ids): the worker with the fewest runnable
 * threads; on a tie, the one pinned to the CPU this OS thread runs on (a
 * caller that then blocks frees that CPU for it: runtime.py, _submit). */
static PyObject *
m_least_loaded(PyObject *m, PyObject *args)
{
    PyObject *workers, *cpu_ids;
    if (!PyArg_ParseTuple(args, "O!O!:least_loaded", &PyTuple_Type, &workers,
                          &PyTuple_Type, &cpu_ids))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(workers);
    if (n == 0 || PyTuple_GET_SIZE(cpu_ids) != n)
        return PyErr_Format(PyExc_ValueError,
                            "least_loaded: %zd workers and %zd CPU ids (need as many, at least one)",
                            n, PyTuple_GET_SIZE(cpu_ids));
    int here = n > 1 ? sched_getcpu() : -1;
    PyObject *best = NULL;
    Py_ssize_t best_load = 0;
    int best_here = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        WorkerObject *w = as_worker(PyTuple_GET_ITEM(workers, i));
        if (w == NULL)
            return NULL;
        long cpu = PyLong_AsLong(PyTuple_GET_ITEM(cpu_ids, i));
        if (cpu == -1 && PyErr_Occurred())
            return NULL;
        Py_ssize_t load = load_hint(w);
        int is_here = here >= 0 && cpu == here;
        if (best == NULL || load < best_load || (load == best_load && is_here && !best_here)) {
            best = (PyObject *)w;
            best_load = load;
            best_here = is_here;
        }
    }
    return Py_NewRef(best);
}

static PyObject *
m_current_cpu(PyObject *m, PyObject *unused)
{
    return PyLong_FromLong(sched_getcpu());
}

PyMethodDef place_module_methods[] = {
    {"current_cpu", m_current_cpu, METH_NOARGS,
     "current_cpu($module, /)\n--\n\n"
     "The CPU the calling OS thread runs on now (sched_getcpu: no syscall; -1 on error)."},
    {"worker_load", m_worker_load, METH_O,
     "worker_load($module, worker, /)\n--\n\n"
     "Runnable threads on worker (running, queued, pushed but not taken in): a hint."},
    {"least_loaded", m_least_loaded, METH_VARARGS,
     "least_loaded($module, workers, cpu_ids, /)\n--\n\n"
     "The least loaded of workers (a tuple; cpu_ids: their host CPUs); a tie goes\n"
     "to the one on the calling OS thread's CPU, then to the first."},
    {NULL}
};
