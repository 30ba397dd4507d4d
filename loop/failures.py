"""Failed trials: what kind of failure an error text names, and counts by kind.

Shared by the runner's stop report and ``closedloop status``, and kept apart from
``loop.runner`` so that ``status`` reads a store without importing the planners (torch,
BoTorch) and the instruments (bluesky, ophyd) that the runner needs.
"""

from __future__ import annotations

import builtins
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from loop.store import TrialRow
from simulators._keys import SAID_TRANSIENT


@dataclass(frozen=True)
class Failure:
    """One failed trial, for the stop report: which, what kind of failure, and why."""

    number: int
    kind: str
    error: str


# The prefix of the error of a trial the operator marked failed (loop.asktell, loop.runner).
# Their reason is free text ("y is not a number", "timed out"): read for the phrases below it
# was counted as a missing output or a timeout, and blamed on the instrument (found in review).
OPERATOR_FAILED = "marked failed by the operator: "
OPERATOR_KIND = "marked by the operator"
WORKER_LOST = "worker lost"
#: A trial that never measured: its function was still busy with an earlier, stopped call.
#: The planner learns nothing from it (``loop.runner._learned_status``), retried or not.
UNMEASURED = "not measured (function busy)"
#: A move refused by ``max_step``: it depends on where the device was (an earlier campaign's
#: safe state), not on the point, so the planner learns nothing from it either (found in
#: review: a measurable point inside the limits was taught as failing).
STEP_REFUSED = "step too large"
#: A readback outside the campaign's bounds: transient (the device missed, retried under
#: ``max_retries``), yet learned as failing when no retry follows (``loop.runner.
#: _learned_status``): such misses are usually systematic (a drive that stalls short of a
#: bound), and taught nothing with ``max_retries: 0``, the point was proposed again and again.
READBACK_MISSED = "readback out of range"

# Ordered: the first rule whose pattern occurs in a trial's error names its kind. The
# phrases are the ones the Dispatcher, the runner and the simulators write.
_FAILURE_KINDS: tuple[tuple[str, str], ...] = (
    # a Dask worker that died (or was lost) while it ran the trial (simulators._devices:
    # KilledWorker, a closed comm): the cluster's, not the function's, whose name the text
    # starts with; transient, as the detector flags it. Before "timed out after", which the
    # cause may quote.
    ("could not finish on the Dask cluster", WORKER_LOST),
    # an IOC restarted or a cable pulled (instruments._epics names the PV): whatever the
    # client library raised meanwhile (a timeout, a broken pipe), that is the cause
    ("lost the connection to PV", "connection lost"),
    # the readbacks/limits a setpoint is checked against before anything moves did not
    # answer (instruments._dispatch; transient, retried): the instrument's, not the point's,
    # and not a refused setpoint. Before "timed out after", which the cause may quote.
    ("could not be checked against the limits", "limit check unanswered"),
    # an interlock that broke (or could not be read) during a trial's acquisition
    # (instruments._safety.InterlockBroken; transient, retried): the facility's (a beam dump),
    # not the point's. Before "timed out after", which an unreadable interlock may quote.
    ("broke during the acquisition", "interlock broke"),
    ("broke during the ramp", "interlock broke"),  # between two steps of a max_step ramp
    ("cannot be checked during the ramp", "interlock broke"),
    # an output PV whose alarm severity was worse than its max_alarm (instruments._epics
    # OutputInAlarm; transient, retried): the IOC says the reading is not to be trusted
    ("worse than its max_alarm", "reading not trusted"),
    (", not a reading (a transient failure)", "reading not trusted"),
    ("cannot be checked after the acquisition", "interlock broke"),
    # a trial whose function was still busy with an earlier, stopped call, so it never
    # measured (instruments._dispatch.NOT_MEASURED): before "timed out after", which it quotes
    ("not measured: ", UNMEASURED),
    ("timed out after", "timeout"),
    ("is not finite", "non-finite output"),
    ("lies outside the campaign's bounds", READBACK_MISSED),
    ("lies outside its declared limits", READBACK_MISSED),  # stored before 2026-12-07
    ("failing region", "failing region"),
    ("injected instrument fault", "instrument fault"),
    ("larger than max_step", STEP_REFUSED),  # before the "limit check failed" it is part of
    ("limit check failed", "setpoint refused"),
    # a motor record that ended its move on a hardware limit switch (instruments._epics
    # MotorFault): the soft limits LLM/HLM let the setpoint through, the stage could not go
    ("limit switch (", "limit switch"),
    # a function (or simulator) that returned no dict, not every output, or text
    # (simulators._devices): the function, not the instrument, needs fixing
    (" did not return [", "wrong outputs"),
    ("expected a dict of outputs", "wrong outputs"),
    ("returned a non-numeric output", "wrong outputs"),
    ("missing from the event", "missing output"),
    ("is missing or not a number", "missing output"),
    ("is not a number", "missing output"),
    ("is not in the run's event", "missing readback"),
    ("runner stopped", "runner stopped"),
)
# An exception out of the user's function or a simulator: ``RuntimeError: no solution; raised
# by function measure (model.py, line 9) at x=1`` (simulators._devices). Checked before the
# phrases above: the function's own message may contain any of them.
_RAISED = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_.]*)(?::.*?)?; raised by (function|simulator) ", re.DOTALL
)
_EXCEPTION_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*):")
# A function (or simulator) that returned the wrong outputs (simulators._devices): the text
# starts with who did it (``function measure (model.py) returned a non-numeric output: y =
# 'timed out after 5 s' is a str ...``). Checked before the phrases above too: the value it
# quotes may contain any of them, and the function, not the instrument, needs fixing.
_WRONG_OUTPUTS = re.compile(
    r"^(?:function|simulator) [^\n]*? (?:did not return \[|returned [\w.]+, expected a dict of "
    r"outputs|returned a non-numeric output: )"
)
# Kinds that belong to the point measured, not to the instrument that measured it: a
# setpoint refused before anything moved, a failing region, a function that raised, returned
# the wrong outputs or a non-finite value for these inputs. Every instrument would fail there.
_POINT_KINDS = frozenset(
    {"setpoint refused", "failing region", "non-finite output", "wrong outputs"}
)


#: Exception names of a device that did not finish in time (ophyd's, ophyd-async's,
#: asyncio's, the EPICS layer's): the kind ``timeout``.
_TIMEOUT_NAMES = frozenset(
    {"TimeoutError", "DeviceTimeout", "WaitTimeoutError", "StatusTimeoutError"}
)


def said_transient(error: str | None) -> bool:
    """Whether ``error`` is an exception out of a function that said it is transient
    (``transient = True``; ``simulators._keys.SAID_TRANSIENT`` ends its text)."""
    text = error or ""
    return _RAISED.match(text) is not None and text.endswith(SAID_TRANSIENT)


def failure_kind(error: str | None) -> str:
    """A short kind for a failed trial's error text, to count failures by cause.

    A trial the operator marked failed (``tell --fail``, the prompt's ``fail``/``skip``) is
    ``marked by the operator``, whatever their reason says. Known phrases map to a kind
    (``connection lost``, ``worker lost``, ``limit check unanswered``, ``timeout``,
    ``non-finite output``, ``readback out of range``, ``wrong outputs``, ...); an exception
    out of the user's function is ``function raised RuntimeError`` (``simulator raised ...``
    for a built-in); any other error is named by its innermost exception type
    (``"OSError"``), or ``other``.
    """
    text = error or ""
    if text.startswith(OPERATOR_FAILED):
        return OPERATOR_KIND
    raised = _RAISED.match(text)
    if raised is not None:
        return f"{raised.group(2)} raised {raised.group(1)}"
    if _WRONG_OUTPUTS.match(text):
        return "wrong outputs"
    for pattern, kind in _FAILURE_KINDS:
        if pattern in text:
            return kind
    innermost = text.split(" <- caused by ")[-1].strip()
    match = _EXCEPTION_NAME.match(innermost)
    if match is None:
        return "other"
    # a device's own timeout is one kind whatever library raised it: ophyd's, ophyd-async's
    # and the dispatcher's were counted as three (found in review)
    return "timeout" if match.group(1) in _TIMEOUT_NAMES else match.group(1)


def is_point_failure(error: str | None) -> bool:
    """Whether a failure belongs to the point (every instrument would fail there), not to
    the instrument that ran it: the scheduler never retires a slot for one (see
    ``_POINT_KINDS``)."""
    kind = failure_kind(error)
    return kind in _POINT_KINDS or kind.startswith(("function raised", "simulator raised"))


def failure_counts(failures: Sequence[Failure]) -> dict[str, int]:
    """Failures by kind, most frequent first (ties in order of first occurrence)."""
    return dict(Counter(f.kind for f in failures).most_common())


def failures_of(trials: Sequence[TrialRow]) -> list[Failure]:
    """Every failed trial of a campaign, in order, with its kind and error."""
    return [failure(t.number, t.error) for t in trials if t.status == "failed"]


def failure(number: int, error: str | None) -> Failure:
    """The failed trial ``number`` with its error text and the kind of failure it names."""
    return Failure(number=number, kind=failure_kind(error), error=error or "(no error text)")


# The failure kinds (``loop.failures.failure_kind``) of the failures the instruments flag
# transient (``instruments._dispatch.is_transient``): the dispatcher's timeout, a simulator's
# injected fault, a Dask worker lost, a PV connection lost, a limit check left unanswered,
# an interlock that broke during the acquisition.
_TRANSIENT_KINDS = frozenset(
    {
        "timeout",
        "instrument fault",
        WORKER_LOST,
        "connection lost",
        "limit check unanswered",
        "interlock broke",
        "reading not trusted",
        READBACK_MISSED,
    }
)
# Exception names (a failure's kind when no phrase above names it) of timeouts and lost
# connections, which the dispatcher counts as transient: TimeoutError, ConnectionResetError,
# ophyd's WaitTimeoutError, the EPICS layer's DeviceTimeout and DeviceConnectionError.
_TRANSIENT_NAMES = ("TimeoutError", "Timeout", "ConnectionError")


def transient_failure(error: str | None) -> bool:
    """Whether a failure whose error text is ``error`` was transient, read from its kind.

    For the failed trials whose ``transient`` flag the store does not hold: those written
    before the column existed (NULL; a store written by a closedloop before it, or by one
    still running such a version on a shared store), and those ``resume`` reconciles from
    their documents (the exception is gone; its text is what is left). Taken as not
    transient, a resumed planner learned such first attempts as failed points where the
    live loop had learned nothing, and walled itself off from good regions (found in
    review).
    """
    kind = failure_kind(error)
    if kind in _TRANSIENT_KINDS or said_transient(error):
        return True
    name = kind.rsplit(".", 1)[-1]  # an exception's name, e.g. ophyd.utils.WaitTimeoutError
    if not name.isidentifier():  # "function raised TimeoutError": the function's own fault
        return False
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, TimeoutError | ConnectionError):
        return True
    return name.endswith(_TRANSIENT_NAMES)


def was_transient(trial: TrialRow) -> bool:
    """Whether ``trial`` failed transiently: its ``transient`` flag, else (a row written
    before the flag existed) :func:`transient_failure` of its error. The one reading of the
    flag for the planner (``loop.runner._learned_status``)."""
    if trial.transient is not None:
        return trial.transient
    return trial.status == "failed" and transient_failure(trial.error)
