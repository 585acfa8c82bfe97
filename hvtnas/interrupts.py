"""Ctrl-C and SIGTERM as a ``KeyboardInterrupt`` in the main thread that is never lost.

Python runs a signal's handler at the next bytecode of the main thread, wherever that is. When
that is inside a garbage-collection callback or a ``__del__`` (SQLAlchemy's weakref callbacks run
often while a study is open), the ``KeyboardInterrupt`` cannot propagate: Python prints "Exception
ignored in ..." with a traceback and drops it, and the command goes on as if Ctrl-C had not been
pressed (seen in a search whose trial slept in its training). Here such a dropped interrupt is
sent again to the main thread (``signal.pthread_kill``, which also wakes a sleeping call) until
it is raised where it can propagate, and nothing is printed for it.

When the interrupt lands inside a query, SQLAlchemy's clean-up on the way out can fail too (the
connection is already closed) and it logs "Error closing cursor" with a traceback, which Python's
last-resort log handler prints: that handler skips records whose exception arose while an
interrupt propagated.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

RESEND_AFTER_S = 0.01  # lets the main thread leave the hook first; if not, the handler sends again


@dataclass
class _Pending:
    signum: int | None = None  # the signal being raised (at most one)
    dropped: bool = False  # Python dropped its KeyboardInterrupt: it is being sent again
    in_hook: bool = False  # the main thread is in the hook: a signal now would be dropped too


_pending = _Pending()


@dataclass
class Replaced:
    """What ``install`` replaced, for ``restore``."""

    hook: Callable[[Any], object]
    handlers: dict[signal.Signals, Any] = field(default_factory=dict)


class _NotCausedByAnInterrupt(logging.Filter):
    """Passes a record unless its exception was raised while a ``KeyboardInterrupt`` propagated."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        while error is not None:
            if isinstance(error, KeyboardInterrupt):
                return False
            error = error.__context__
        return True


_QUIET_CLEANUP = _NotCausedByAnInterrupt()  # one instance: adding it again is a no-op


def _send_again(signum: int) -> None:
    # from another thread: ``pthread_kill`` to the main thread interrupts a sleep or a wait there
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(RESEND_AFTER_S, signal.pthread_kill, args=(main, signum))
    timer.daemon = True
    timer.start()


def _raise_interrupt(once: bool) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        if _pending.in_hook:
            _send_again(signum)
            return
        # ``once``: a second signal must not interrupt the recording of the first (a worker gets
        # Ctrl-C from the terminal and SIGTERM from its parent); a re-sent one is the first again
        if once and _pending.signum is not None and not _pending.dropped:
            return
        _pending.signum, _pending.dropped = signum, False
        raise KeyboardInterrupt

    return handler


def _resend_dropped(previous: Callable[[Any], object]) -> Callable[[Any], None]:
    def hook(unraisable: Any) -> None:
        if not issubclass(unraisable.exc_type, KeyboardInterrupt) or _pending.signum is None:
            previous(unraisable)
            return
        _pending.in_hook = True
        try:
            _pending.dropped = True
            _send_again(_pending.signum)
        finally:
            _pending.in_hook = False

    return hook


def install(once: bool = False, sigint_even_if_ignored: bool = False) -> Replaced:
    """From now on, in this process's main thread, SIGINT (unless ignored, as in a shell's
    background job, or ``sigint_even_if_ignored``) and SIGTERM (preemption) raise
    ``KeyboardInterrupt``, sent again if Python drops it; ``once``: only the first signal does."""
    global _pending
    _pending = _Pending()
    handler = _raise_interrupt(once)
    replaced = Replaced(hook=sys.unraisablehook)
    replaced.handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, handler)
    if sigint_even_if_ignored or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        replaced.handlers[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = _resend_dropped(replaced.hook)
    if logging.lastResort is not None:  # what prints a library's log records when none is configured
        logging.lastResort.addFilter(_QUIET_CLEANUP)
    return replaced


def restore(replaced: Replaced) -> None:
    """Put back the handlers and the hook that ``install`` replaced."""
    sys.unraisablehook = replaced.hook
    if logging.lastResort is not None:
        logging.lastResort.removeFilter(_QUIET_CLEANUP)
    for signum, former in replaced.handlers.items():
        signal.signal(signum, former)


@contextlib.contextmanager
def interrupts_raised(once: bool = False) -> Iterator[None]:
    """``install`` for the block (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    replaced = install(once)
    try:
        yield
    finally:
        restore(replaced)
