"""SIGTERM during osvrt.run(): a graceful stop instead of sudden death.

A service manager (systemd, Docker, Kubernetes) stops a program with SIGTERM
and waits a while before SIGKILL.  Python's default for SIGTERM ends the
process at once, so no green thread's `finally:` would run.  While
osvrt.run() waits for main, this handler cancels main instead; run() then
stops the runtime (every other green thread is cancelled and its cleanup
runs) and raises SystemExit(143), the exit status a shell reports for a
process that SIGTERM ended (128 + 15).  A second SIGTERM while that cleanup
runs is taken as "now": the previous disposition comes back and the signal
is re-delivered, so a stuck cleanup can still be ended.
"""
import logging
import os
import signal
import threading

log = logging.getLogger("osvrt")

EXIT_STATUS = 128 + signal.SIGTERM


class TermGuard:
    """Installed for the duration of one osvrt.run(); see the module doc."""

    def __init__(self):
        self.main = None           # the main green thread, once submitted
        self.signalled = False
        self._previous = None
        self._installed = False

    @classmethod
    def install(cls):
        """A guard with its handler installed, or None where run() must not
        touch SIGTERM:
        - not the main thread of the main interpreter: Python allows signal
          handlers only there (signal.signal raises ValueError elsewhere);
        - SIGTERM is not at its default: the program (or its parent, with
          SIG_IGN) chose what SIGTERM does, and run() respects that choice
          (asyncio.Runner does the same for SIGINT)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        guard = cls()
        try:
            guard._previous = signal.signal(signal.SIGTERM, guard._on_sigterm)
        except ValueError:         # a sub-interpreter's main thread
            return None
        guard._installed = True
        return guard

    def watch(self, thread):
        self.main = thread
        if self.signalled:         # SIGTERM came before main was submitted
            thread.cancel()

    def _on_sigterm(self, signum, frame):
        # Runs in the main OS thread, between two bytecodes of run()'s wait.
        # Thread.cancel() is safe from any OS thread and never blocks.
        if self.signalled:
            log.warning("osvrt: second SIGTERM: ending the process now, without waiting "
                        "for the green threads' cleanup")
            self.restore()
            os.kill(os.getpid(), signal.SIGTERM)
            return
        # Never absorbed in silence: say what happens, and how to force it.
        log.warning("osvrt: SIGTERM: cancelling every green thread and letting their cleanup "
                    "run before exiting (status 143); a second SIGTERM ends the process now")
        self.signalled = True
        if self.main is not None:
            self.main.cancel()

    def restore(self):
        if self._installed:
            self._installed = False
            signal.signal(signal.SIGTERM, self._previous)
