/* The kinds of wait, each plugged into the scheduler through one small table
 * of operations (struct wait_ops, engine.h), as OSv's wait_object keeps the
 * scheduler ignorant of what a thread waits for: the Ticket's await
 * (thread.c) calls poll, arm, disarm and result, and names no kind.  A new
 * kind (a TCP segment, an asyncio future) is a TK_ value and an entry here. */
#include "engine.h"

int event_register(PyObject *event, TicketObject *tk);   /* event.c */
int event_is_set(PyObject *event);

/* ---- park (kernel.park: the wait is already open) and yield ---- */

static PySendResult
the_wake_value(TicketObject *tk, PyObject *arg, PyObject **result)
{
    *result = Py_NewRef(arg);
    return PYGEN_RETURN;
}

static PySendResult
nothing(TicketObject *tk, PyObject *arg, PyObject **result)
{
    *result = Py_NewRef(Py_None);
    return PYGEN_RETURN;
}

/* ---- sleep ---- */

static int
sleep_poll(TicketObject *tk, ThreadObject *me, PyObject **result)
{
    if (tk->delay == 0.0)            /* sleep(0) only yields */
        tk->kind = TK_YIELD;
    return 0;
}

/* ---- Event.wait (event.c) ---- */

static int
event_poll(TicketObject *tk, ThreadObject *me, PyObject **result)
{
    if (!event_is_set(tk->obj))
        return 0;
    *result = Py_NewRef(Py_True);
    return 1;
}

static int
event_arm(WorkerObject *w, TicketObject *tk)
{
    return event_register(tk->obj, tk);
}

static PySendResult
event_result(TicketObject *tk, PyObject *arg, PyObject **result)
{
    if (arg == TIMED_OUT)
        return wait_timeout_error("osvrt.Event.wait", NULL, tk->delay);
    *result = Py_NewRef(Py_True);
    return PYGEN_RETURN;
}

/* ---- Thread.join ---- */

static int
join_poll(TicketObject *tk, ThreadObject *me, PyObject **result)
{
    ThreadObject *target = (ThreadObject *)tk->obj;
    if (atomic_load_explicit(&target->state, memory_order_acquire) == ST_TERMINATED) {
        *result = thread_outcome(target);
        return *result ? 1 : -1;
    }
    if (me == target) {
        PyObject *name = PyObject_GetAttr((PyObject *)target, str_name);
        if (name == NULL)
            return -1;
        PyErr_Format(PyExc_RuntimeError, "green thread %R cannot join itself", name);
        Py_DECREF(name);
        return -1;
    }
    return 0;
}

static int
join_arm(WorkerObject *w, TicketObject *tk)
{
    ThreadObject *target = (ThreadObject *)tk->obj;
    if (target->joiners == NULL && (target->joiners = PyList_New(0)) == NULL)
        return -1;
    /* Drop joins that timed out (claimed tickets) once the list doubles:
     * a million join(timeout=0) polls then cost O(1) memory each. */
    Py_ssize_t n = PyList_GET_SIZE(target->joiners);
    if (n >= 64 && (n & (n - 1)) == 0) {
        PyObject *keep = PyList_New(0);
        if (keep == NULL)
            return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            TicketObject *o = (TicketObject *)PyList_GET_ITEM(target->joiners, i);
            if (!ticket_is_claimed(o) && PyList_Append(keep, (PyObject *)o) < 0) {
                Py_DECREF(keep);
                return -1;
            }
        }
        Py_SETREF(target->joiners, keep);
    }
    if (PyList_Append(target->joiners, (PyObject *)tk) < 0)
        return -1;
    /* No lost wake-up: published before this re-check; the end of the
     * target marks it terminated before it wakes its joiners. */
    if (atomic_load_explicit(&target->state, memory_order_seq_cst) == ST_TERMINATED
        && wake_ticket(tk, NULL) < 0)
        return -2;
    return 0;
}

static PySendResult
join_result(TicketObject *tk, PyObject *arg, PyObject **result)
{
    ThreadObject *target = (ThreadObject *)tk->obj;
    if (atomic_load_explicit(&target->state, memory_order_acquire) == ST_TERMINATED) {
        *result = thread_outcome(target);
        return *result ? PYGEN_RETURN : PYGEN_ERROR;
    }
    PyObject *name = PyObject_GetAttr((PyObject *)target, str_name);
    if (name == NULL)
        return PYGEN_ERROR;
    wait_timeout_error("join of green thread", name, tk->delay);
    Py_DECREF(name);
    return PYGEN_ERROR;
}

/* ---- fd readiness (io.c) ---- */

static PySendResult
io_result(TicketObject *tk, PyObject *arg, PyObject **result)
{
    if (arg == TIMED_OUT) {
        io_timeout_error(tk);
        return PYGEN_ERROR;
    }
    if (PyExceptionInstance_Check(arg)) {   /* closed while waited on, or lost */
        PyErr_SetObject((PyObject *)Py_TYPE(arg), arg);
        return PYGEN_ERROR;
    }
    *result = Py_NewRef(arg);
    return PYGEN_RETURN;
}

const struct wait_ops wait_kinds[TK_COUNT] = {
    [TK_PARK] = {.result = the_wake_value},
    [TK_YIELD] = {.result = nothing},
    [TK_SLEEP] = {.poll = sleep_poll, .result = nothing, .opens = 1},
    [TK_EVENT] = {.poll = event_poll, .arm = event_arm, .result = event_result, .opens = 1},
    [TK_JOIN] = {.poll = join_poll, .arm = join_arm, .result = join_result, .opens = 1},
    [TK_IO] = {.arm = io_register, .disarm = io_end, .result = io_result, .opens = 1},
};
