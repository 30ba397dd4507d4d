"""Errors raised by the instruments package.

``instruments`` may not import ``loop``, so it roots its own family in ``InstrumentError``;
the loop maps (or re-parents) it under the project-wide ``ClosedLoopError``. Builtins are
mixed in where they fit, so callers that only know ``ValueError`` still catch config errors.
"""

from __future__ import annotations

import re
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


# bluesky's wrapper for a device whose Status failed: its text is the Status's repr (the
# device, done, success), so the device's own error leads and the wrapper follows.
_STATUS_WRAPPERS = frozenset({"FailedStatus"})
# Exceptions whose text says all there is without their class name: a simulated instrument's
# faults (simulators.SimulatedFault) are written for the user ("function measure (model.py)
# did not return ['y'] ...").
_SELF_DESCRIBING = frozenset({"SimulatedFault"})


def describe_exception(exc: BaseException) -> str:
    """What went wrong, for the store's ``error`` column: the message that says it first.

    The device's (or the user's function's) own exception sits in ``__cause__``/
    ``__context__``, wrapped by bluesky's ``FailedStatus`` and possibly a
    ``SimulatedFault``. ``closedloop status`` shows the first words of the text, so what a
    user needs leads (``RuntimeError: pH probe not calibrated; raised by function measure
    (flaky.py, line 9) at ph=3.7``), not the wrappers' class names (found in review:
    ``FailedStatus <- caused by SimulatedFa…``). So:

    * an exception whose text repeats its cause's is left out (it says nothing new), unless
      it quotes the cause as ``Type: message`` with more context: then it stands for both;
    * a ``FailedStatus`` with a cause follows its cause, as ``(via FailedStatus: ...)``;
    * distinct messages read outer first: ``A: lost the PV <- caused by B: timed out``.
    """
    chain: list[tuple[str, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < 5:
        seen.add(id(current))
        chain.append((type(current).__name__, str(current).strip()))
        current = current.__cause__ or current.__context__
    shown: list[str | None] = [None] * len(chain)
    trailer: list[str] = []
    for i in reversed(range(len(chain))):  # innermost first: a wrapper may replace its cause
        name, text = chain[i]
        mine = (
            text if (text and name in _SELF_DESCRIBING) else (f"{name}: {text}" if text else name)
        )
        if i + 1 == len(chain):
            shown[i] = mine
            continue
        inner_name, inner_text = chain[i + 1]
        quoted = f"{inner_name}: {inner_text}" if inner_text else inner_name
        if text and quoted in text:
            # a status that quotes its cause says which device (instruments._epics): its
            # text is the whole story, without the wrapper's class name before it
            shown[i], shown[i + 1] = (text if name in _STATUS_WRAPPERS else mine), None
        elif text and inner_text and inner_text in text:
            # The outer repeats its cause with context ("failing_region could not be
            # evaluated: x is not defined"): it stands for both. Only a status wrapper, or
            # the same text again, leaves the cause to speak.
            if text != inner_text and name not in _STATUS_WRAPPERS:
                shown[i], shown[i + 1] = mine, None
            continue
        elif name in _STATUS_WRAPPERS:
            trailer.append(_tidy_status(mine))
        else:
            shown[i] = mine
    described = " <- caused by ".join(s for s in shown if s is not None)
    if trailer:
        described += f" (via {'; '.join(trailer)})"
    return described


_OBJECT_REPR = re.compile(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-f]+>")
_STATUS_FLAGS = re.compile(r", done=\w+, success=\w+(?=\))")


def _tidy_status(text: str) -> str:
    """A status wrapper's text without what only Python needs: ``<pkg.OutputDetector object
    at 0x7f...>`` becomes ``OutputDetector``, and ``done=True, success=False`` (always so
    for a failed status) goes (found in review: every failure line carried the address)."""
    return _STATUS_FLAGS.sub("", _OBJECT_REPR.sub(r"\1", text))
