"""Hardware safety: declared limits and step sizes, interlocks, the safe state on stop.

* **Limits and ``max_step``** are checked by :func:`check_setpoint`, which every declared
  input calls from its ``check_value`` (the :class:`~instruments.Dispatcher` calls that for
  every input before the RunEngine runs, so a refused trial sends no message to any device)
  and again in ``set`` just before its put (defence in depth).
* **Interlocks** (``door_closed == 1``, ``pressure < 5``) are checked by a :class:`Gate` at the
  start of each trial, before the first put. While one does not hold the trial waits (the
  campaign is paused, saying why, at WARNING level) and goes on by itself when they hold
  again; Ctrl-C or ``Gate.release()`` (the operator) ends the wait. The wait happens inside
  the run, so an abort stops it cleanly and the trial is stored as abandoned.
* **Safe state**: ``on_stop`` values are written by the instrument's ``close()``, which the
  runner calls on every way a campaign ends (budget spent, failure, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import logging
import math
import operator
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ophyd.utils import LimitError

from instruments._errors import InstrumentError
from instruments._instrument_file import Interlock

logger = logging.getLogger("instruments.safety")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class SafetyError(InstrumentError):
    """Root of the refusals made for the hardware's sake."""


class SetpointRefused(SafetyError, LimitError):
    """A setpoint outside the declared hardware limits, or a step larger than ``max_step``.

    An ophyd ``LimitError`` (so a ``ValueError``): the Dispatcher turns it into a failed trial
    with no run opened and no device touched.
    """


class InterlockWaitCancelled(SafetyError, RuntimeError):
    """The trial was stopped while it waited for interlocks; nothing was moved."""


def check_setpoint(
    name: str,
    value: Any,
    *,
    limits: tuple[float, float] | None,
    max_step: float | None,
    current: Callable[[], float] | None,
) -> None:
    """Refuse ``value`` for input ``name`` unless it is a finite number within the limits and
    at most ``max_step`` from ``current()`` (all in the campaign's units).

    Raises:
        SetpointRefused: with the value, the limit and the input's name.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SetpointRefused(f"{name}: setpoint {value!r} is not a number")
    if not math.isfinite(value):
        raise SetpointRefused(f"{name}: setpoint {value!r} is not finite")
    if limits is not None and not limits[0] <= value <= limits[1]:
        raise SetpointRefused(
            f"{name}: setpoint {value:g} is outside the hardware limits "
            f"[{limits[0]:g}, {limits[1]:g}]"
        )
    if max_step is not None and current is not None:
        here = float(current())
        if abs(value - here) > max_step:
            raise SetpointRefused(
                f"{name}: move from {here:g} to {value:g} is a step of {abs(value - here):g}, "
                f"larger than max_step {max_step:g}"
            )


@dataclass(frozen=True)
class InterlockCheck:
    """One interlock with the function that reads its current value."""

    interlock: Interlock
    read: Callable[[], Any]

    def problem(self) -> str | None:
        """``None`` when it holds, else why not (a failed read counts as not holding)."""
        rule = self.interlock
        try:
            value = float(self.read())
        except Exception as exc:
            return f"{rule} cannot be checked: {type(exc).__name__}: {exc}"
        if _OPS[rule.op](value, rule.value):
            return None
        return f"{rule} does not hold ({rule.name} = {value:g})"


def broken(checks: Sequence[InterlockCheck]) -> list[str]:
    """The reasons of every interlock that does not hold now."""
    return [p for p in (c.problem() for c in checks) if p is not None]


class Gate:
    """Holds trials at their start until every interlock holds.

    Args:
        checks: the interlocks.
        poll: seconds between checks while waiting.
        name: the instrument's name, for the messages.
    """

    def __init__(self, checks: Sequence[InterlockCheck], *, poll: float, name: str) -> None:
        self.checks = tuple(checks)
        self.poll = poll
        self.name = name
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.pauses = 0  # times a trial had to wait (for tests and status)

    def release(self) -> None:
        """The operator's override: let the waiting trial go on although interlocks fail."""
        self._released.set()

    def wait(self, cancelled: threading.Event) -> None:
        """Return once every interlock holds (or the operator released the gate).

        Raises:
            InterlockWaitCancelled: ``cancelled`` was set (the run was stopped) meanwhile.
        """
        if not self.checks:
            return
        with self._lock:  # inputs move concurrently; one of them does the waiting
            problems = broken(self.checks)
            if not problems:
                return
            self.pauses += 1
            logger.warning(
                "%s paused: interlock %s; waiting, checking every %g s (Ctrl-C stops the "
                "campaign; it can be resumed)",
                self.name,
                "; ".join(problems),
                self.poll,
            )
            while problems:
                if cancelled.wait(self.poll):
                    raise InterlockWaitCancelled(
                        f"stopped while waiting for interlocks: {'; '.join(problems)}"
                    )
                if self._released.is_set():
                    self._released.clear()
                    logger.warning("%s: interlocks overridden by the operator", self.name)
                    return
                problems = broken(self.checks)
            logger.warning("%s: interlocks hold again; resuming", self.name)
