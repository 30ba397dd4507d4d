"""Hardware safety: declared limits and step sizes, interlocks, the safe state on stop.

* **Limits and ``max_step``** (for numbers; a choice must be one of its values) are checked
  by :func:`check_setpoint`, which every declared input calls from its ``check_value`` (the
  :class:`~instruments.Dispatcher` calls that for every input before the RunEngine runs, so
  a refused trial sends no message to any device) and again in ``set`` just before its put
  (defence in depth), with the device's own limits (an EPICS setpoint's DRVL/DRVH) too.
  ``max_step`` is measured from the readback and from the last setpoint (a readback may lag
  it, or a move may have been given up on short of it). A move further than ``max_step``
  ramps: each step goes as far as that rule allows (:func:`next_step`), is checked the same
  way and waited for before the next (``instruments._epics.InputDevice._ramp``); so the
  pre-check checks the target's limits and the ramp's first step.
* **Interlocks** (``door_closed == 1``, ``pressure < 5``) are checked by a :class:`Gate` at the
  start of each trial, before the first put. While one does not hold the trial waits (the
  campaign is paused, saying why, at WARNING level) and goes on by itself when they hold
  again; the time waited does not count toward the trial's ``timeout``. Ctrl-C or
  ``Gate.release()`` (the operator) ends the wait. The wait happens inside the run, so an
  abort stops it cleanly and the trial is stored as abandoned. The check is made once per
  trial, not once per input: the inputs of a trial move concurrently and the first of them
  to reach the gate checks (and waits); the others go through on the *pass* it got, so an
  operator's release lets the whole trial go on, all its moves, and only it. The pass ends
  with the trial (:meth:`Gate.end_trial`, from the inputs' ``stop()``, which the RunEngine
  calls on every device it moved when a run ends, however it ends), so the next trial
  checks the interlocks afresh. After the acquisition (the trigger and read done, the run
  still open) the trial's plan reads the interlocks again (:meth:`Gate.after_acquisition`,
  :func:`check_after_acquisition`): one that broke meanwhile (a beam dump, a vacuum burst)
  or cannot be read fails the trial as transient (:class:`InterlockBroken`), so its reading
  is stored but never learned from and the point is retried, at the gate like any trial.
  An interlock the operator released the trial despite is not checked again for it: the
  release covers that trial, as it covers all its moves. A :class:`PauseListener` (the
  runner's, through the ``Dispatcher``) hears when a wait starts and ends, so the store
  shows the campaign ``paused`` with the reason, and is polled for an operator's release
  from another process (``closedloop release``). A declared PV that is disconnected (an IOC
  restarted, a cable pulled) holds trials the same way, naming the PV, rather than failing
  one trial after another; they go on once it reconnects.
* **Safe state**: ``on_stop`` values are written by the instrument's ``close()``, which the
  runner calls on every way a campaign ends (budget spent, failure, Ctrl-C, SIGTERM). An
  input's keeps to its ``max_step`` there too: it is approached in steps, each checked by
  the same rule (within ``max_step`` of the readback and of the last setpoint) and waited
  for (``instruments._epics.InputDevice.write_safe_state``); what could not be written is
  kept in the instrument's ``safe_state_failures``.
"""

from __future__ import annotations

import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


class InterlockBroken(SafetyError, RuntimeError):
    """An interlock did not hold (or could not be read) after the trial's acquisition.

    The reading was taken while, say, the beam was dumped, so it may not measure the point;
    the condition is the facility's, not the point's, so the failure is ``transient`` (the
    dispatcher's ``is_transient`` reads the attribute) and the loop retries the point.
    """

    transient = True


def check_setpoint(
    name: str,
    value: Any,
    *,
    limits: tuple[float, float] | None,
    max_step: float | None,
    current: Callable[[], float] | None,
    choices: Collection[Any] | None = None,
    device_limits: tuple[float, float] | None = None,
    device_source: str = "",
    commanded: Callable[[], float | None] | None = None,
) -> None:
    """Refuse ``value`` for input ``name`` unless it is a finite number within the limits and
    at most ``max_step`` from ``current()`` and from ``commanded()`` (all in the campaign's
    units), or a choice.

    ``commanded()`` is where the device was last told to go (its setpoint PV or a motor's
    VAL read back, else the last value written), ``None`` when not known. A readback alone
    is not enough: one that lags its setpoint, or a move given up on before it reached its
    tolerance (a timed-out trial), leaves the device still heading for the last setpoint,
    so a step measured from the readback alone could change the setpoint by far more than
    ``max_step`` (found in review: 30 -> 90 -> 30 with a readback 3 s behind). Both
    distances must be within ``max_step``.

    ``device_limits`` are the device's own limits (an EPICS setpoint PV's control limits,
    DRVL/DRVH), converted to the campaign's units; ``device_source`` says whose, for the
    message. A value outside them is refused like one outside ``limits``: the IOC would
    refuse or clamp the put, and the move would only fail at its tolerance timeout.

    A choice (a value that is not a number, e.g. ``"Pd-A"`` for a ``choice`` parameter on a
    plugin device) has no numeric limits to check, but it must be one of ``choices`` when
    they are given; and an input that declares ``limits`` or ``max_step`` only takes
    numbers, since a limit that cannot be checked must not be skipped. A ``current()``
    reading that is not a finite number refuses the move when ``max_step`` is declared:
    ``abs(value - nan) > max_step`` is False, so an unreadable position would otherwise
    let any step through.

    Raises:
        SetpointRefused: with the value, the limit and the input's name.
    """
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise SetpointRefused(f"{name}: setpoint {value!r} is not one of its values ({allowed})")
    if isinstance(value, bool) or not isinstance(value, int | float):
        declared = [k for k, v in (("limits", limits), ("max_step", max_step)) if v is not None]
        if declared:
            raise SetpointRefused(
                f"{name}: setpoint {value!r} is not a number, but the input declares "
                f"{' and '.join(declared)}, which only a number can be checked against"
            )
        return  # a choice: nothing numeric to check
    if not math.isfinite(value):
        raise SetpointRefused(f"{name}: setpoint {value!r} is not finite")
    if limits is not None and not limits[0] <= value <= limits[1]:
        raise SetpointRefused(
            f"{name}: setpoint {value:g} is outside the hardware limits "
            f"[{limits[0]:g}, {limits[1]:g}]"
        )
    if device_limits is not None and not device_limits[0] <= value <= device_limits[1]:
        raise SetpointRefused(
            f"{name}: setpoint {value:g} is outside the device's own limits "
            f"[{device_limits[0]:g}, {device_limits[1]:g}]"
            + (f" ({device_source})" if device_source else "")
            + ", which it would refuse or clamp"
        )
    if max_step is not None and current is not None:
        reading = current()
        try:
            here = float(reading)
        except (TypeError, ValueError):
            here = math.nan
        if not math.isfinite(here):
            raise SetpointRefused(
                f"{name}: its current reading {reading!r} is not a finite number, so a move "
                f"to {value:g} cannot be checked against max_step {max_step:g}; refused"
            )
        if abs(value - here) > max_step:
            raise SetpointRefused(
                f"{name}: move from {here:g} to {value:g} is a step of {abs(value - here):g}, "
                f"larger than max_step {max_step:g}"
            )
        told = commanded() if commanded is not None else None
        if told is not None and math.isfinite(told) and abs(value - told) > max_step:
            raise SetpointRefused(
                f"{name}: move to {value:g} is a step of {abs(value - told):g} from its last "
                f"setpoint {told:g} (the readback, {here:g}, has not caught up with it), "
                f"larger than max_step {max_step:g}"
            )


def next_step(value: float, here: float, told: float, max_step: float) -> float | None:
    """The setpoint one step of a ramp toward ``value`` writes: ``value`` itself when it is
    within ``max_step`` of both the readback ``here`` and the last setpoint ``told``, else
    the nearest point to it that is; ``None`` when no point is (the readback and the last
    setpoint more than twice ``max_step`` apart: a device that has not followed).

    One rule for both ramps: a trial's move (:meth:`instruments._epics.InputDevice.set`)
    and the safe state's approach (``write_safe_state``); each step is checked by
    :func:`check_setpoint` as any setpoint is, so a ramp never asks for what a single
    move may not.
    """
    low, high = max(here, told) - max_step, min(here, told) + max_step
    if low > high:
        return None
    nxt = min(max(value, low), high)
    # In floats ``(here + max_step) - here`` can be a bit more than ``max_step``, and the
    # step was refused by the check it was made for, mid-ramp (with max_step 0.1, 99 % of
    # ramps; found in review): nudged toward the middle until it passes the same test.
    middle = (here + told) / 2
    for _ in range(64):
        if abs(nxt - here) <= max_step and abs(nxt - told) <= max_step:
            break
        nxt = math.nextafter(nxt, middle)
    return nxt


@dataclass(frozen=True)
class InterlockCheck:
    """One interlock with the function that reads its current value."""

    interlock: Interlock
    read: Callable[[], Any]

    def problem(self) -> str | None:
        """``None`` when it holds, else why not.

        A failed read or a reading that is not a finite number counts as not holding,
        whatever the operator: ``nan != 1`` is True, so without this an unreadable sensor
        would satisfy every ``!=`` interlock.
        """
        return self._problem("does not hold")

    def _problem(self, fails: str, when: str = "") -> str | None:
        """:meth:`problem`, with ``fails`` saying how a reading that breaks the rule reads
        ("does not hold" before a trial, "broke during the acquisition" after it) and
        ``when`` (" after the acquisition") when it could not be checked."""
        rule = self.interlock
        try:
            value = float(self.read())
        except Exception as exc:
            return f"{rule} cannot be checked{when}: {type(exc).__name__}: {exc}"
        if not math.isfinite(value):
            return f"{rule} cannot be checked{when}: {rule.name} reads {value}, not a finite number"
        if _OPS[rule.op](value, rule.value):
            return None
        return f"{rule} {fails} ({rule.name} = {value:g})"


@dataclass(frozen=True)
class ConnectionCheck:
    """A device that must be connected before a trial moves anything (a PV that dropped
    out pauses the campaign, naming it, instead of failing trial after trial)."""

    source: str  # e.g. "PV closedloop:sim:temp:RBV"
    role: str  # e.g. "input temperature"
    connected: Callable[[], bool]

    def problem(self) -> str | None:
        """``None`` when connected, else which device is not."""
        try:
            ok = bool(self.connected())
        except Exception:
            ok = False
        return None if ok else f"{self.source} ({self.role}) is disconnected"


def broken(checks: Sequence[InterlockCheck]) -> list[str]:
    """The reasons of every interlock that does not hold now."""
    return [p for p in (c.problem() for c in checks) if p is not None]


class PauseListener(Protocol):
    """Told when a :class:`Gate` starts and stops waiting; asked for an operator's release.

    Called on the waiting device's thread. Each method gets the gate, so one listener can
    serve several instrument slots. A listener that raises is logged and ignored: the gate's
    safety decision never depends on it.
    """

    def paused(self, gate: Gate, reason: str) -> None:
        """A trial waits: ``reason`` says which interlocks do not hold (called again when
        the reason changes)."""

    def release_requested(self, gate: Gate) -> str | None:
        """Polled while waiting: who released the gate (to proceed despite the interlocks),
        or ``None``."""

    def resumed(self, gate: Gate, how: str) -> None:
        """The wait ended: ``how`` is "interlocks hold again", "devices connected again"
        (the wait was for disconnected devices), "released by WHO" or "stopped"."""


class Gate:
    """Holds trials at their start until every interlock holds; one check (or one release)
    per trial, whatever the number of its inputs (see the module docstring).

    Args:
        checks: the interlocks.
        poll: seconds between checks while waiting.
        name: the instrument's name, for the messages.
        listener: told about pauses, polled for releases (see :class:`PauseListener`).
        connections: devices that must be connected too; while one is not, trials wait
            like for an interlock (and only its disconnection is reported).
    """

    def __init__(
        self,
        checks: Sequence[InterlockCheck],
        *,
        poll: float,
        name: str,
        listener: PauseListener | None = None,
        connections: Sequence[ConnectionCheck] = (),
    ) -> None:
        self.checks = tuple(checks)
        self.connections = tuple(connections)
        self.poll = poll
        self.name = name
        self.listener = listener
        self._lock = threading.Lock()  # held by the one mover that checks (and waits)
        self._released = threading.Event()
        # The current trial's pass: ids of the movers that went through on it; ``None``: no
        # trial holds one, the next mover checks. Its own lock, never held while waiting, so
        # ``end_trial`` (called on the RunEngine's thread) cannot block on a wait.
        self._pass_lock = threading.Lock()
        self._pass: set[int] | None = None
        # The interlocks (``str(rule)``) the operator released the current trial despite:
        # :meth:`after_acquisition` does not fail that trial for them. Ends with its pass.
        self._overridden: frozenset[str] = frozenset()
        self.pauses = 0  # times a trial had to wait (for tests and status)
        self.overrides: list[str] = []  # who released a wait, in order
        # Seconds spent waiting, so a trial's timeout can leave them out (see ``waited``).
        self._clock = threading.Lock()
        self._waited = 0.0
        self._waiting_since: float | None = None

    def waited(self) -> float:
        """Total seconds trials have spent waiting at this gate, the current wait included.

        A monotonic clock that stands still while nothing waits: the
        :class:`~instruments.Dispatcher` subtracts it from a run's elapsed time, so a trial
        held by an open door is paused, not timed out.
        """
        with self._clock:
            ongoing = 0.0
            if self._waiting_since is not None:
                ongoing = time.monotonic() - self._waiting_since
            return self._waited + ongoing

    def release(self) -> None:
        """The operator's override: let the waiting trial go on although interlocks fail.

        For the wait in progress only: a wait clears it when it starts, so a release given
        while nothing waited never lets a later trial through unchecked.
        """
        self._released.set()

    def end_trial(self) -> None:
        """The trial is over (its moves are done, failed or stopped): its pass ends, and the
        next move checks the interlocks afresh.

        Called by every input's ``stop()``, which the RunEngine calls on the devices it
        moved at the end of each run. Never blocks on a wait in progress.
        """
        with self._pass_lock:
            self._pass = None
            self._overridden = frozenset()

    def after_acquisition(self) -> list[str]:
        """Why the current trial's acquisition cannot be trusted: each interlock that does
        not hold now, or cannot be read (``interlock pressure < 5 broke during the
        acquisition (pressure = 7.2)``); empty when they all hold.

        Called by the trial's plan after its trigger and read, before its run closes (so
        before ``end_trial``): an interlock the operator released this trial despite is
        left out, since the release covers the whole trial. Connections are not checked
        apart: an interlock on a lost PV cannot be read, and says so.
        """
        return self._broken("broke during the acquisition", " after the acquisition")

    def during_ramp(self) -> list[str]:
        """Why a ramp (``instruments._epics.InputDevice._ramp``) may not write its next
        step: each interlock that does not hold now, or cannot be read (``interlock
        door_closed == 1 broke during the ramp (door_closed = 0)``), as after the
        acquisition. The gate passed the trial before its first write; a ramp is many
        writes over many seconds, and a furnace went on heating for six steps with its door
        opened after the first (found in review)."""
        return self._broken("broke during the ramp", " during the ramp")

    def _broken(self, fails: str, when: str) -> list[str]:
        """The current trial's interlocks that do not hold now, said with ``fails`` and
        ``when`` (:meth:`InterlockCheck._problem`), leaving out those the operator
        released it despite."""
        with self._pass_lock:
            overridden = self._overridden
        problems = (
            c._problem(fails, when) for c in self.checks if str(c.interlock) not in overridden
        )
        return [f"interlock {p}" for p in problems if p is not None]

    def wait(self, cancelled: threading.Event, *, mover: object) -> None:
        """Return once ``mover`` (an input) may move in this trial.

        The first mover of a trial checks the interlocks and, while one does not hold,
        waits until they do or the operator releases the gate; either way the trial then
        holds a pass, and its other movers return at once, even if an interlock broke
        meanwhile (they are checked once, at the start of the trial, before the first put).
        A mover that comes back while the pass is still open is a new trial whose end was
        not signalled (``set()`` called outside a RunEngine): it checks afresh.

        Raises:
            InterlockWaitCancelled: ``cancelled`` was set (the run was stopped) before or
                while waiting; no pass is given.
        """
        if not self.checks and not self.connections:
            return
        with self._lock:  # inputs move concurrently; the trial's first does the waiting
            if cancelled.is_set():  # stopped while another mover waited: do not wait again
                raise InterlockWaitCancelled("stopped before the interlocks were checked")
            if self._on_pass(mover):
                return
            overridden = self._check(cancelled)
            with self._pass_lock:  # not after a stop: end_trial may have run already
                if cancelled.is_set():
                    raise InterlockWaitCancelled("stopped while passing the interlocks")
                self._pass = {id(mover)}
                self._overridden = overridden

    def _on_pass(self, mover: object) -> bool:
        """Whether ``mover`` goes through on the current trial's pass (adding it)."""
        with self._pass_lock:
            if self._pass is None:
                return False
            if id(mover) in self._pass:  # its second move: the pass is a finished trial's
                self._pass = None
                self._overridden = frozenset()
                return False
            self._pass.add(id(mover))
            return True

    def _check(self, cancelled: threading.Event) -> frozenset[str]:
        """Return once every interlock holds or the operator released the gate (see
        :meth:`wait`); called with ``_lock`` held.

        Returns:
            The interlocks (``str(rule)``) the trial goes on despite: none when they hold;
            on a release, those that did not hold at the last check, or every interlock
            when it was a wait for disconnected devices (none of them could be checked).
        """
        # What the trial waited for last: disconnected devices or interlocks (a pause for a
        # lost PV may start as an interlock that cannot be read, until the client notices).
        problems, connections, failing = self._problems()
        if not problems:
            return frozenset()
        self._released.clear()  # a release is for a wait in progress, not a later one
        self.pauses += 1
        with self._clock:
            self._waiting_since = time.monotonic()
        reason = _reason(problems)
        logger.warning(
            "%s paused: %s; waiting, checking every %g s (`closedloop release` "
            "proceeds despite it; Ctrl-C stops the campaign, which can be resumed)",
            self.name,
            reason,
            self.poll,
        )
        self._tell("paused", reason)
        how = "stopped"
        try:
            while problems:
                if cancelled.wait(self.poll):
                    raise InterlockWaitCancelled(
                        f"stopped while waiting for interlocks: {'; '.join(problems)}"
                    )
                who = self._release_by()
                if who is not None:
                    self.overrides.append(who)
                    logger.warning(
                        "%s: interlocks overridden by %s although %s",
                        self.name,
                        who,
                        "; ".join(problems),
                    )
                    how = f"released by {who}"
                    return failing
                problems, lost, now_failing = self._problems()
                if problems:
                    connections, failing = lost, now_failing
                if problems and _reason(problems) != reason:
                    reason = _reason(problems)
                    self._tell("paused", reason)
            how = "devices connected again" if connections else "interlocks hold again"
            logger.warning("%s: %s; resuming", self.name, how)
            return frozenset()
        finally:
            with self._clock:
                if self._waiting_since is not None:
                    self._waited += time.monotonic() - self._waiting_since
                self._waiting_since = None
            self._tell("resumed", how)

    def problems(self) -> list[str]:
        """Why a trial would wait now: disconnected devices if any (an interlock on them
        cannot be read anyway), else the interlocks that do not hold."""
        return self._problems()[0]

    def _problems(self) -> tuple[list[str], bool, frozenset[str]]:
        """:meth:`problems`, whether they are disconnected devices (so the end of a wait
        says what came back), and the interlocks (``str(rule)``) a release would override:
        those that do not hold, or every one while devices are disconnected (none could be
        checked)."""
        gone = [p for p in (c.problem() for c in self.connections) if p is not None]
        if gone:
            return gone, True, frozenset(str(c.interlock) for c in self.checks)
        found = [(str(c.interlock), c.problem()) for c in self.checks]
        failing = frozenset(rule for rule, p in found if p is not None)
        return [f"interlock {p}" for _, p in found if p is not None], False, failing

    def _release_by(self) -> str | None:
        """Who released the gate: ``release()`` in this process, or the listener's operator."""
        if self._released.is_set():
            self._released.clear()
            return "the operator"
        if self.listener is None:
            return None
        try:
            return self.listener.release_requested(self)
        except Exception as exc:
            logger.warning("%s: cannot ask for an operator's release: %s", self.name, exc)
            return None

    def _tell(self, what: str, text: str) -> None:
        if self.listener is None:
            return
        try:
            getattr(self.listener, what)(self, text)
        except Exception as exc:
            logger.warning("%s: the pause listener failed (%s): %s", self.name, what, exc)


def check_after_acquisition(gate: Gate) -> None:
    """Fail the trial if an interlock broke during its acquisition (see
    :meth:`Gate.after_acquisition`).

    Raises:
        InterlockBroken: naming every interlock that does not hold now (transient).
    """
    problems = gate.after_acquisition()
    if problems:
        logger.warning(
            "%s: %s; the trial fails as transient (instrument.max_retries re-measures its point)",
            gate.name,
            _reason(problems),
        )
        raise InterlockBroken(_reason(problems))


def check_during_ramp(gate: Gate) -> None:
    """Stop a ramp before its next write if an interlock broke since the trial passed the
    gate (see :meth:`Gate.during_ramp`).

    Raises:
        InterlockBroken: naming every interlock that does not hold now (transient: the
            trial fails, nothing is acquired, and with ``max_retries`` its point is
            retried at the gate).
    """
    problems = gate.during_ramp()
    if problems:
        logger.warning(
            "%s: %s; the ramp stops, the trial fails as transient (instrument.max_retries "
            "re-measures its point)",
            gate.name,
            _reason(problems),
        )
        raise InterlockBroken(_reason(problems))


def _reason(problems: Sequence[str]) -> str:
    """``interlock door_closed == 1 does not hold (door_closed = 0)``; several joined by ``;``."""
    return "; ".join(problems)
