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

/* Copy l's open tickets into fresh (the caller holds the target's lock:
 * PyList_Append only reallocs, and runs no Python code). */
static int
joiners_compact(PyObject *l, PyObject *fresh)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(l); i++) {
        TicketObject *o = (TicketObject *)PyList_GET_ITEM(l, i);
        if (!ticket_is_claimed(o) && PyList_Append(fresh, (PyObject *)o) < 0)
            return -1;
    }
    return 0;
}

/* The target's joiners are appended to here, by joiners on any worker, and
 * taken by finish() on the target's: both under the target's slots lock.
 * Nothing under it runs Python code: the new list is made before the lock
 * (an allocation may collect), and the references we drop go after. */
static int
join_arm(WorkerObject *w, TicketObject *tk)
{
    ThreadObject *target = (ThreadObject *)tk->obj;
    PyObject *fresh = NULL, *old = NULL, *l;
    int r = 0;
    for (;;) {
        thread_slots_lock(target);
        l = target->joiners;
        Py_ssize_t n = l ? PyList_GET_SIZE(l) : 0;
        /* A new list when there is none, and when it has doubled: joins that
         * timed out (claimed tickets) are dropped then, so a million
         * join(timeout=0) polls cost O(1) memory each. */
        if (!(l == NULL || (n >= 64 && (n & (n - 1)) == 0)))
            break;                       /* (with the lock held) no new list needed */
        if (fresh != NULL) {
            if (l != NULL)
                r = joiners_compact(l, fresh);
            if (r == 0) {
                old = l;
                target->joiners = fresh;
                fresh = NULL;
            }
            break;
        }
        thread_slots_unlock(target);
        if ((fresh = PyList_New(0)) == NULL)
            return -1;
        /* and look again: the list may have changed while we allocated */
    }
    if (r == 0)
        r = PyList_Append(target->joiners, (PyObject *)tk);
    thread_slots_unlock(target);
    Py_XDECREF(old);
    Py_XDECREF(fresh);
    if (r < 0)
        return -1;
    /* No lost wake-up: finish() marks the target terminated (seq_cst) before
     * it takes the list under the lock.  If it took it before our append,
     * the lock orders its store before this load; if after, it wakes tk. */
    if (atomic_load_explicit(&target->state, memory_order_acquire) == ST_TERMINATED
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
