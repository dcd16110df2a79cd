/* timer.c - a timer of one worker (its owner alone arms and fires it, and
 * worker.c keeps the heap; a cancel may come from another worker, so fn is
 * taken with an exchange, engine.h's timer_take).  A timer either calls fn(arg) or,
 * cheaper and the common case (sleep, timeouts of waits), wakes a Ticket with
 * arg as the value its await returns. */
#include "engine.h"

TimerObject *
timer_new(double deadline, PyObject *fn, PyObject *arg, int wakes)
{
    TimerObject *tm = PyObject_GC_New(TimerObject, &Timer_Type);
    if (tm == NULL)
        return NULL;
    tm->deadline = deadline;
    tm->fn = Py_NewRef(fn);
    tm->arg = Py_NewRef(arg);
    tm->wakes = wakes;
    PyObject_GC_Track(tm);
    return tm;
}

void
timer_disarm(TimerObject *tm)
{
    PyObject *arg, *fn = timer_take(tm, &arg);
    Py_XDECREF(fn);
    Py_XDECREF(arg);
}

static PyObject *
timer_cancel(TimerObject *tm, PyObject *unused)
{
    timer_disarm(tm);
    Py_RETURN_NONE;
}

static PyObject *
timer_get_armed(TimerObject *tm, void *c)
{
    return PyBool_FromLong(timer_armed(tm));
}

static int
timer_traverse(TimerObject *tm, visitproc visit, void *arg)
{
    Py_VISIT(tm->fn);
    Py_VISIT(tm->arg);
    return 0;
}

static int
timer_clear(TimerObject *tm)
{
    timer_disarm(tm);
    return 0;
}

static void
timer_dealloc(TimerObject *tm)
{
    PyObject_GC_UnTrack(tm);
    timer_disarm(tm);
    PyObject_GC_Del(tm);
}

static PyMemberDef timer_members[] = {
    {"deadline", T_DOUBLE, offsetof(TimerObject, deadline), READONLY, NULL},
    {NULL}
};

static PyGetSetDef timer_getset[] = {
    {"armed", (getter)timer_get_armed, NULL, "False once fired or cancelled.", NULL},
    {NULL}
};

static PyMethodDef timer_methods[] = {
    {"cancel", (PyCFunction)timer_cancel, METH_NOARGS,
     "Disarm the timer (from any worker); a fired timer stays fired."},
    {NULL}
};

PyTypeObject Timer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osvrt._engine.Timer",
    .tp_basicsize = sizeof(TimerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)timer_dealloc,
    .tp_traverse = (traverseproc)timer_traverse,
    .tp_clear = (inquiry)timer_clear,
    .tp_members = timer_members,
    .tp_getset = timer_getset,
    .tp_methods = timer_methods,
};
