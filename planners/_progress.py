"""How far a batch of proposals has come, for whoever waits on it.

A 96-well plate's ``closedloop suggest -n 96`` chose its proposals one by one for minutes
and printed nothing meanwhile (found in review). A planner says how many of its proposals it
has chosen with :func:`report_progress`; the command line listens with
:func:`progress_listener` and shows it. The listener is a context variable, so planners in
other threads (the runner's, a notebook's) never report to it, and a planner that reports
with no one listening pays one lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: ``(chosen, total)``: ``chosen`` of the ``total`` proposals being chosen are done.
ProgressCallback = Callable[[int, int], None]

_listener: ContextVar[ProgressCallback | None] = ContextVar("closedloop_progress", default=None)


@contextmanager
def progress_listener(callback: ProgressCallback) -> Iterator[None]:
    """Call ``callback(chosen, total)`` whenever a planner in this context reports."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def report_progress(chosen: int, total: int) -> None:
    """Say that ``chosen`` of ``total`` proposals are chosen (a plugin planner may call it
    too)."""
    callback = _listener.get()
    if callback is not None:
        callback(chosen, total)
