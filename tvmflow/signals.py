"""Ctrl-C, SIGTERM and SIGHUP: one interruption, whatever the signal.

The ``tvmflow`` command calls :func:`install` once, first thing in ``main()``.  From then on
SIGINT (Ctrl-C), SIGTERM (``kill``, ``timeout``, a CI runner) and SIGHUP (a closed terminal)
raise :class:`Interrupted` in the main thread.  It is a ``KeyboardInterrupt``, so every
``finally`` and ``except KeyboardInterrupt`` on the way up runs: the RPC tracker and servers a
command started are stopped, partial results are saved, and ``main()`` prints one
``Error: interrupted`` line and exits with :data:`~tvmflow.errors.EXIT_INTERRUPTED`.
Python's own SIGTERM and SIGHUP actions end the process at once instead, with no cleanup at
all: the servers, started in sessions of their own, were left running.

Why a signal may still wait (and what is done about it):

* Python runs a handler only in the main thread, between bytecodes.  A call into TVM's C++
  (``time_evaluator`` in this process) returns first; the measuring loops therefore keep each
  such call short and call :func:`check` between calls.
* Inside a TVM RPC call the handler runs from TVM's socket loop (EINTR ->
  ``TVMFFIEnvCheckSignals``) and the exception comes out of the call, but TVM may also turn it
  into a ``RuntimeError`` (then a TvmflowError).  The signal is remembered (:func:`received`),
  so ``main()`` still reports it as an interruption, and :func:`check` raises it again where
  code carried on.
* A command that must not be interrupted mid-call (``tune``: raising inside MetaSchedule's C++
  can crash the process) sets its own SIGINT handler, which only sets a flag; SIGTERM and SIGHUP
  are then handed to that handler too, so they stop the command the same way.

A second signal within :data:`GRACE_S` seconds of the first is ignored: the cleanup it would
cut short (stopping servers, saving results) is what the first one started.  Later ones raise
again, in case the first was swallowed.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_S = 3.0

_state: dict = {"signum": None, "at": 0.0, "kept": []}


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM or SIGHUP) arrived."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)


def install() -> dict | None:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Interrupted` (main thread only).

    Returns the handlers it replaced, for :func:`restore`; None (and changes nothing) outside
    the main thread, where Python cannot set signal handlers.  A signal the parent set to be
    ignored (``nohup``: SIGHUP; ``cmd &`` in a script: SIGINT) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    reset()
    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, _handler)
    return previous


def restore(previous: dict | None) -> None:
    """Put back the handlers :func:`install` replaced (``main()`` called in a test process)."""
    if previous and threading.current_thread() is threading.main_thread():
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def reset() -> None:
    """Forget any signal received (a new command in the same process)."""
    _state.update(signum=None, at=0.0, kept=[])


def _handler(signum: int, frame: FrameType | None) -> None:
    if signum != signal.SIGINT:
        ctrl_c = signal.getsignal(signal.SIGINT)
        if callable(ctrl_c) and ctrl_c is not _handler and \
                ctrl_c is not signal.default_int_handler:
            return ctrl_c(signum, frame)   # the command's own Ctrl-C handling (tune)
    now = time.monotonic()
    if _state["signum"] is not None and now - _state["at"] < GRACE_S:
        return                             # already stopping: let the cleanup finish
    if _state["signum"] is None:
        _state.update(signum=int(signum), at=now)
    raise Interrupted(signum)


def received() -> int | None:
    """The first stop signal received since :func:`install` (None: none)."""
    return _state["signum"]


def check() -> None:
    """Raise :class:`Interrupted` when a stop signal came: called between bounded calls of a
    long loop, so an interruption that was swallowed on the way still stops it."""
    if _state["signum"] is not None:
        raise Interrupted(_state["signum"])


def kept(what: str) -> None:
    """Record what an interrupted command kept (``main()`` says it after ``interrupted``)."""
    _state["kept"].append(what)


def kept_lines() -> list[str]:
    return list(_state["kept"])


def exit_now(code: int) -> None:
    """End an interrupted command at once: its cleanup has run (servers stopped, results
    saved), the atexit handlers run here, and the seconds Python would spend unloading TVM
    and PyTorch (several on a loaded machine) are skipped."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):   # a closed terminal (SIGHUP)
                pass
        os._exit(code)
