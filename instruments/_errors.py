"""Errors raised by the instruments package.

``instruments`` may not import ``loop``, so it roots its own family in ``InstrumentError``;
the loop maps (or re-parents) it under the project-wide ``ClosedLoopError``. Builtins are
mixed in where they fit, so callers that only know ``ValueError`` still catch config errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from instruments._protocol import TrialResult


class InstrumentError(Exception):
    """Root of every error the instruments package raises on purpose."""


class InstrumentConfigError(InstrumentError, ValueError):
    """An ``instrument:`` section that cannot be turned into devices.

    Raised when the campaign loads (never mid-run), naming what would have been allowed.

    Args:
        message: what is wrong and what is allowed instead.
        field: the ``instrument:`` key at fault (``simulator``, ``function``, ...), if any.
        parameter: the campaign parameter at fault, if the problem is one parameter's (its
            bounds leave the source's domain, say): the campaign loader then names that
            parameter's line, which is where the fix goes, not the ``instrument:`` line.
        fix: what to change, for the message's fix line, where the source knows it.
    """

    fix: str = ""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        parameter: str | None = None,
        fix: str = "",
    ) -> None:
        super().__init__(message)
        self.field = field
        self.parameter = parameter
        if fix:  # a subclass may have set its own before calling this
            self.fix = fix


class TrialArgumentError(InstrumentError, ValueError):
    """A trial's parameters do not match the instrument's inputs (a caller bug, not a fault).

    Raised by :func:`instruments.trial_plan` before its first ``Msg``, so no run is opened and
    no device is touched.
    """


class MeasurementRejected(InstrumentError):
    """A trial's reading that the dispatcher does not accept: an output missing or not
    finite, a readback outside the campaign's bounds (the text says which).

    Raised inside the trial's plan once the event is read, so the run closes as ``fail``
    with this text as its stop document's reason; what it read is kept with the failed
    trial. Not transient, unless every problem is a readback outside the bounds
    (``instruments._dispatch.EventReading.transient``): then the device did not get where
    the point sent it, which says nothing of the point, so it is retried and its first
    attempt is not learned.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class DocumentSinkError(InstrumentError):
    """The document sink raised while a trial ran.

    The run itself was not disturbed (the sink is called outside the RunEngine's error path),
    but the caller's persistence is broken, so this is raised rather than swallowed. The
    complete :class:`TrialResult`, with every document, travels with the error so the caller
    can still persist it.

    Args:
        message: what failed.
        trial_id: the trial whose documents could not be delivered.
        result: the trial's full result, documents included.
    """

    def __init__(self, message: str, *, trial_id: int, result: TrialResult) -> None:
        super().__init__(message)
        self.trial_id = trial_id
        self.result = result


class TrialInterrupted(KeyboardInterrupt):
    """A KeyboardInterrupt that arrived while a trial ran; the run was aborted cleanly first.

    It subclasses ``KeyboardInterrupt`` (not ``InstrumentError``) so ``except Exception``
    never swallows a user's Ctrl-C. The aborted trial's result (``exit_status='abort'``, stop
    document included) is attached so the caller can persist it before exiting.

    Args:
        trial_id: the trial that was running.
        result: its result with ``exit_status='abort'``.
    """

    def __init__(self, *, trial_id: int, result: TrialResult) -> None:
        super().__init__(f"trial {trial_id} interrupted by KeyboardInterrupt")
        self.trial_id = trial_id
        self.result = result


class DispatcherBusy(InstrumentError, RuntimeError):
    """``Dispatcher.run`` was called while another trial is running on the same RunEngine.

    A RunEngine executes one plan at a time; run concurrent trials on separate dispatchers.
    """


class DispatcherClosed(InstrumentError, RuntimeError):
    """``Dispatcher.run`` was called after ``close()`` stopped its RunEngine."""


class ExecutorUnavailable(InstrumentError, ConnectionError):
    """The campaign's Dask executor could not be reached or started (``executor:``).

    Attributes:
        address: the scheduler address tried (``None`` for a local cluster).
    """

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address
