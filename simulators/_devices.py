"""Ophyd devices that put a pure simulator function behind the same interface as hardware.

A simulated instrument is a set of :class:`SimActuator` (one per input: ``set`` it like a
motor) and a :class:`SimDetector` (``trigger`` it, then ``read`` it like a detector). The loop
and the Bluesky plans cannot tell them from real devices, so a dry run exercises the very code
path that drives hardware; that is the point of wrapping rather than calling the function.

Design choices that matter to callers:

* **Data keys are the parameter and output names.** Each actuator's readback signal is named
  exactly like the actuator (as ophyd's ``EpicsMotor`` names ``user_readback``) and its
  setpoint ``{name}_setpoint``; each detector signal is renamed to its output name, even when
  that name is a Python keyword such as ``yield`` (the attribute is then ``yield_``). An
  event's ``data`` therefore reads ``{"temperature": ..., "yield": ...}`` with no mapping.
* **Validation happens before anything moves.** ``SimActuator.set`` refuses a value outside its
  limits or choices with :class:`SimLimitError` (an ophyd ``LimitError``, so a ``ValueError``)
  and leaves both signals untouched, as a motor controller refuses an out-of-range move.
* **The physics sees the achieved values**: the detector evaluates the function on the
  actuators' *readbacks*, so an imperfect controller (``readback_error``) shows up in the
  results exactly as it would in a lab.
* **Triggering never blocks the RunEngine.** With ``latency > 0`` the function runs on a
  ``threading.Timer`` and the returned ``DeviceStatus`` completes from there; the RunEngine's
  event loop keeps serving other devices (and pause/abort requests) meanwhile.
* **A detector never enters its function twice at once.** A stop (a trial's timeout, an
  abort) fails the Status at once, but a running Python function cannot be interrupted: it
  runs on, and the next trigger waits for it to return before calling it again (a function
  that drives a real instrument must not be entered twice). The wait is on the trigger's own
  thread and ends when that trigger is stopped in turn, so a function that never returns
  costs each later trial its timeout, never a second call. Slots have their own detectors,
  so they do not wait for one another; on a Dask executor a stop ends the worker running
  the function (:meth:`~simulators.DaskExecutor.abort`), and nothing waits.
* **Heavy simulations can compute on a Dask cluster** (``executor=``, a
  :class:`~simulators.DaskExecutor`): ``trigger()`` submits the pure function and the
  Status completes from the future's callback (after ``latency`` at the earliest). Fault
  draws and noise stay local and seeded; a worker that dies mid-measurement fails the
  Status with a *transient* :class:`SimulatedFault` naming the cause (a scheduler that
  runs it again instead restarts it: its lost run counts as a wait). The time a task
  waits for a free worker is kept on the detector's ``queue_waited()`` clock, which the
  dispatcher keeps off the trial's ``timeout``.
* **Failures travel through the Status**, as real device errors do: an injected fault or an
  exception in the function fails the status with :class:`SimulatedFault`, which the
  RunEngine turns into a failed run.
* **Faults a lab sees can be injected**, each by a probability per trigger (or per move):
  ``failure_rate`` (the Status fails: a transient fault), ``hang_rate`` (the Status never
  completes, like a detector that stopped answering; only ``stop()`` ends it), ``nan_rate``
  (every output reads NaN or +/-inf), ``out_of_range_rate`` on an actuator (the readback
  lands outside its limits, like an encoder glitch or a runaway controller), and a
  ``failing_region`` predicate over the inputs (a deterministic failure wherever it holds,
  like a reactor that clogs above some temperature). The region is judged on the
  *setpoints*, the point the instrument was asked to measure, not on the readbacks: its
  failure belongs to the point (never retried, learned by the planner as the point's), so
  it must fail that point every time and no other. Judged on the readbacks, an encoder
  glitch (``out_of_range_rate``) at a good point read as the region's fault at a point no
  one asked for: a permanent failure of the good point, its readings lost, where the
  dispatcher would have failed it as a readback out of range with the readings stored
  (found in review). Faults are what the engine must survive, so each is reproducible
  from the seed and none ever blocks the RunEngine.
* **Randomness is reproducible.** Each detector owns a seeded ``numpy.random.Generator`` and
  draws its fault decision and noise at trigger time, in the caller's thread, so the same seed
  gives the same sequence regardless of thread timing. A fault whose rate is 0 draws nothing,
  so enabling none keeps an instrument's noise stream exactly what it was.
"""

from __future__ import annotations

import asyncio
import keyword
import logging
import math
import re
import reprlib
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, Kind
from ophyd.device import DEVICE_RESERVED_ATTRS
from ophyd.signal import InternalSignal
from ophyd.utils import LimitError

from simulators._executor import UNANNOUNCED, UNANNOUNCED_ATTR, is_infrastructure_error
from simulators._expressions import ExpressionError, parse_expression
from simulators._functions import TestProblem
from simulators._keys import SAID_TRANSIENT, data_key_clashes, misnamed_hint, near_name

logger = logging.getLogger(__name__)

SimFunction = Callable[[dict[str, Any]], Mapping[str, Any]]  # called with a fresh dict
ReadbackError = float | Callable[[float], float] | None
Seed = int | np.random.SeedSequence | None

_WAIT_POLL = 0.5
"""Seconds between a waiting trigger's checks that it was not stopped meanwhile (a stop
also wakes it at once; this only bounds a missed wake-up)."""

_NOT_REMOTE: Any = object()
"""``remote=`` when nothing was computed elsewhere: evaluate the function here. A sentinel,
not ``None``: ``None`` is what a remote function that forgot its ``return`` sent back."""


class SimulatedFault(RuntimeError):
    """A simulated instrument failed to deliver a measurement.

    Raised through the trigger Status (never from ``trigger()`` itself), so the RunEngine
    reports it like any device failure and the run ends with ``exit_status="fail"``.

    Attributes:
        device: Name of the detector.
        trigger_number: 1-based count of the trigger that failed.
        injected: ``True`` for a fault injected on purpose (``failure_rate``,
            ``failing_region``); ``False`` when the simulator function raised or returned
            something unusable, or a measurement was stopped.
        transient: ``True`` when trying the same point again may well succeed (a
            ``failure_rate`` fault); an engine with a retry policy reads this attribute.
            ``False`` for a deterministic failure (``failing_region``, a broken function).
            An exception the function raised is not transient by its type (a solver's
            ``TimeoutError`` recurs at the same point), only by its own ``transient``
            attribute: a function that drives a real instrument knows a stalled pump from
            a bad point, and says so.
        partial_outputs: the outputs the function did return as numbers when it returned
            the wrong set (one missing, one text): a measurement was made, so the
            dispatcher stores them with the failed trial instead of losing them (found in
            review: a function that missed ``purity`` lost its measured ``y``).
    """

    def __init__(
        self,
        message: str,
        *,
        device: str,
        trigger_number: int,
        injected: bool,
        transient: bool = False,
        partial_outputs: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(message)
        self.device = device
        self.trigger_number = trigger_number
        self.injected = injected
        self.transient = transient
        self.partial_outputs = dict(partial_outputs or {})


@dataclass
class _Call:
    """A detector's function call in progress in this process (see ``SimDetector._claim``).

    Attributes:
        number: The trigger it computes.
        owner: The detector whose trigger it is (a guard passes from a closed detector to
            the next: :data:`_GUARDS`).
        stopped: ``time.monotonic()`` when that trigger was stopped (its trial timed out or
            was aborted) while the function ran on; ``None`` while it is still wanted.
    """

    number: int
    owner: object = None
    stopped: float | None = None


class SimLimitError(LimitError):
    """A value outside an actuator's limits or choices; nothing was moved.

    Attributes:
        device: Name of the actuator.
        value: The refused value.
        limits: ``(lower, upper)`` or the tuple of allowed choices.
    """

    def __init__(self, message: str, *, device: str, value: Any, limits: tuple[Any, ...]) -> None:
        super().__init__(message)
        self.device = device
        self.value = value
        self.limits = limits


class _TriggerStatus(DeviceStatus):
    """A ``DeviceStatus`` whose text, once it failed, is why.

    The RunEngine writes ``str(FailedStatus(status))`` into the stop document's ``reason``;
    with the plain ``DeviceStatus`` that says only ``success=False``. The exception's text
    alone ("injected instrument fault", the function's own message) is what a catalog's
    reader wants: with the status's repr before it, the stored runs of every failed trial
    began ``_TriggerStatus(device=measure, done=True, success=False): ...`` (found in
    review), as plugin and EPICS devices' did before ``instruments._epics._ExplainedStatus``.
    """

    def __str__(self) -> str:
        exc = self.exception() if self.done else None
        return str(exc) if exc is not None and str(exc) else super().__str__()

    __repr__ = __str__


def _finished_status(device: Device) -> DeviceStatus:
    status = DeviceStatus(device)
    status.set_finished()
    return status


class SimActuator(Device):
    """A settable simulator input: a number within limits, or one of a set of choices.

    ``set`` is instantaneous; the Status it returns is already finished. Put latency on the
    detector, where a slow instrument spends its time.

    Args:
        name: Device name, which is also the name of the readback data key; use the
            parameter's name.
        limits: ``(lower, upper)``, both inclusive, for a numeric input.
        choices: The allowed values of a categorical input (give either this or ``limits``).
        integer: Only accept integral numbers (an ``int`` parameter); readbacks are ``int``.
        readback_error: How the achieved value differs from the setpoint: a standard
            deviation (Gaussian, from the seeded generator) or a function
            ``setpoint -> achieved``. Default exact. Numeric, non-integer inputs only. The
            achieved value is not clipped to the limits: real controllers overshoot too.
        out_of_range_rate: Probability that a move's readback lands outside the limits, by
            5 to 50 % of their span (at least 1 for an integer input): an injected
            controller fault. Numeric inputs only. The setpoint is still the commanded value.
        seed: Seed of the readback-error generator.
        initial: Starting value; default the middle of the limits or the first choice.
        units: The unit of the value (``degC``), recorded in the run's descriptor.
        **kwargs: Passed to ``ophyd.Device`` (e.g. ``parent``).

    Raises:
        ValueError: for inconsistent arguments (both/neither of limits and choices, bad
            limits, a readback error on a categorical or integer input).
    """

    readback = Cpt(InternalSignal, kind=Kind.hinted)
    setpoint = Cpt(InternalSignal, kind=Kind.normal)

    #: Its read is this process's soft signals: ``instruments.Dispatcher`` may read it
    #: after a failed run and leave the read unfinished without harm.
    abandonable_read = True

    def __init__(
        self,
        name: str,
        *,
        limits: tuple[float, float] | None = None,
        choices: Sequence[Any] | None = None,
        integer: bool = False,
        readback_error: ReadbackError = None,
        out_of_range_rate: float = 0.0,
        seed: Seed = None,
        initial: Any = None,
        units: str | None = None,
        **kwargs: Any,
    ) -> None:
        _check_rate("out_of_range_rate", out_of_range_rate)
        self._sim_units = units
        if (limits is None) == (choices is None):
            raise ValueError(f"actuator {name!r}: give exactly one of limits= or choices=")
        self._sim_choices: tuple[Any, ...] | None = None
        self._sim_limits: tuple[float, float] | None = None
        if choices is not None:
            if isinstance(choices, str) or len(choices) < 1:
                raise ValueError(f"actuator {name!r}: choices must be a non-empty sequence")
            if readback_error is not None or integer or out_of_range_rate:
                raise ValueError(f"actuator {name!r}: a categorical input is exact")
            self._sim_choices = tuple(choices)
        else:
            lower, upper = _check_limits(name, limits)
            if integer and readback_error is not None:
                raise ValueError(f"actuator {name!r}: an integer input is exact")
            self._sim_limits = (lower, upper)
        if isinstance(readback_error, Real) and not (
            math.isfinite(readback_error) and readback_error >= 0
        ):
            raise ValueError(f"actuator {name!r}: readback_error sd must be finite and >= 0")
        self._sim_integer = bool(integer)
        self._sim_readback_error = readback_error
        self._sim_out_of_range_rate = float(out_of_range_rate)
        self._sim_rng = np.random.default_rng(seed)
        super().__init__(name=name, **kwargs)
        # Data key of the reading == parameter name, exactly as EpicsMotor does it.
        self.readback.name = self.name
        if initial is None:
            if self._sim_choices is not None:
                initial = self._sim_choices[0]
            else:
                lower, upper = self._sim_limits or (0.0, 0.0)
                initial = (lower + upper) / 2.0
                if self._sim_integer:
                    initial = math.floor(initial)
        start = self.check_value(initial)
        self.setpoint.put(start, internal=True)
        self.readback.put(start, internal=True)

    def describe(self) -> dict[str, Any]:
        """Ophyd's description of the readback and setpoint, with what a catalog shows of
        an input (event-model's data-key fields): its ``units`` (the campaign's ``unit:``),
        its ``limits`` as control limits, a categorical input's text ``choices``. Without
        them a descriptor said less than the campaign file (found in review)."""
        described: dict[str, Any] = super().describe()
        extra: dict[str, Any] = {}
        if self._sim_units:
            extra["units"] = self._sim_units
        if self._sim_limits is not None:
            lower, upper = self._sim_limits
            extra["limits"] = {"control": {"low": lower, "high": upper}}
        elif self._sim_choices is not None and all(isinstance(c, str) for c in self._sim_choices):
            extra["choices"] = list(self._sim_choices)
        for key in described:
            described[key].update(extra)
        return described

    @property
    def limits(self) -> tuple[Any, ...]:
        """``(lower, upper)`` for a numeric input, the choices for a categorical one."""
        return self._sim_choices if self._sim_choices is not None else tuple(self._sim_limits or ())

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The allowed values, or ``None`` for a numeric input."""
        return self._sim_choices

    @property
    def position(self) -> Any:
        """The achieved value (readback), as for an ophyd positioner."""
        return self.readback.get()

    def check_value(self, value: Any) -> Any:
        """Return ``value`` in canonical form if allowed, else raise :class:`SimLimitError`.

        Canonical means a Python ``float`` (``int`` if ``integer``) or the matching element of
        ``choices``, so numpy scalars never leak into documents.
        """
        if self._sim_choices is not None:
            for choice in self._sim_choices:
                # 1 == True and "1" != 1: compare like with like, never a bool with a number.
                if isinstance(value, bool) != isinstance(choice, bool) or isinstance(
                    value, str
                ) != isinstance(choice, str):
                    continue
                try:
                    if bool(value == choice):
                        return choice
                except (TypeError, ValueError):  # e.g. an array compared with a scalar
                    continue
            raise SimLimitError(
                f"{self.name}: {value!r} is not one of {list(self._sim_choices)}",
                device=self.name,
                value=value,
                limits=self._sim_choices,
            )
        lower, upper = self._sim_limits or (math.nan, math.nan)
        # Say which rule the value breaks: "600 is not a number within limits" read as if
        # 600 were not a number (found in review).
        limits = f"[{lower:g}, {upper:g}]"
        problem = None
        if not isinstance(value, Real) or isinstance(value, bool):
            kind = "an integer" if self._sim_integer else "a number"
            problem = f"{value!r} is not {kind} (limits {limits})"
        elif not lower <= float(value) <= upper:
            problem = f"{float(value):.10g} is outside its limits {limits}"
        elif self._sim_integer and not (isinstance(value, Integral) or float(value).is_integer()):
            problem = f"{float(value):.10g} is not an integer (limits {limits})"
        if problem is not None:
            raise SimLimitError(
                f"{self.name}: {problem}",
                device=self.name,
                value=value,
                limits=(lower, upper),
            )
        return int(value) if self._sim_integer else float(value)

    def set(self, value: Any, **kwargs: Any) -> DeviceStatus:
        """Move to ``value``: validate first, then write setpoint and readback.

        Raises:
            SimLimitError: if ``value`` is not allowed; no signal is changed.
        """
        target = self.check_value(value)
        achieved = self._out_of_range(self._achieved(target))
        self.setpoint.put(target, internal=True)
        self.readback.put(achieved, internal=True)
        return _finished_status(self)

    def locate(self) -> dict[str, Any]:
        """Setpoint and readback, as ``bluesky.protocols.Locatable`` asks."""
        return {"setpoint": self.setpoint.get(), "readback": self.readback.get()}

    def _achieved(self, target: Any) -> Any:
        error = self._sim_readback_error
        if error is None or self._sim_choices is not None or self._sim_integer:
            return target
        if callable(error):
            return float(error(target))
        return float(target + error * self._sim_rng.standard_normal()) if error else target

    def _out_of_range(self, achieved: Any) -> Any:
        """With probability ``out_of_range_rate``, a readback beyond one of the limits."""
        rate = self._sim_out_of_range_rate
        if not rate or self._sim_limits is None:
            return achieved
        rng = self._sim_rng
        hit, side, size = rng.random() < rate, rng.random() < 0.5, rng.random()
        if not hit:
            return achieved
        lower, upper = self._sim_limits
        span = upper - lower if upper > lower else 1.0
        offset = (0.05 + 0.45 * size) * span
        if self._sim_integer:
            offset = max(1, math.ceil(offset))
            return int(upper + offset) if side else int(lower - offset)
        value = upper + offset if side else lower - offset
        logger.info(
            "%s: injected out-of-range readback %g (limits %s)", self.name, value, self._sim_limits
        )
        return float(value)


def _show_inputs(inputs: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in inputs.items()
    )


def _check_rate(name: str, rate: Any) -> None:
    if not (isinstance(rate, Real) and not isinstance(rate, bool) and 0.0 <= float(rate) <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {rate!r}")


def _check_limits(name: str, limits: Any) -> tuple[float, float]:
    try:
        lower, upper = (float(v) for v in limits)
    except (TypeError, ValueError):
        raise ValueError(f"actuator {name!r}: limits must be (lower, upper)") from None
    if not (math.isfinite(lower) and math.isfinite(upper) and lower <= upper):
        raise ValueError(f"actuator {name!r}: limits must be finite with lower <= upper")
    return lower, upper


_ATTR_PATTERN = re.compile(r"\W")


def _attribute_names(outputs: tuple[str, ...]) -> dict[str, str]:
    """Output name -> a safe, unique component attribute name (``yield`` -> ``yield_``)."""
    taken: set[str] = set()
    result: dict[str, str] = {}
    for out in outputs:
        attr = _ATTR_PATTERN.sub("_", out)
        if not attr or attr[0].isdigit() or attr[0] == "_":
            attr = "out_" + attr
        while (
            keyword.iskeyword(attr)
            or attr in DEVICE_RESERVED_ATTRS
            or hasattr(SimDetector, attr)
            or attr in taken
        ):
            attr += "_"
        taken.add(attr)
        result[out] = attr
    return result


_CLASS_CACHE: dict[tuple[type, tuple[str, ...]], type[SimDetector]] = {}
_CLASS_CACHE_LOCK = threading.Lock()


# The output keys each function returned that its campaign's `outputs:` does not list,
# already warned of (SimDetector._note_unlisted); gone with the function (a file edited and
# imported again is a new function, whose keys are news again).
_UNLISTED: weakref.WeakKeyDictionary[Callable[..., Any], set[str]] = weakref.WeakKeyDictionary()


class _Guard:
    """Who runs a function now, shared by the detectors that must not call it at once
    (``SimDetector._claim``): ``call`` (or ``None``) under ``done``, notified on every
    change; ``holders``: the open detectors that hold it (one at a time)."""

    def __init__(self) -> None:
        self.done = threading.Condition()
        self.call: _Call | None = None
        self.holders = 0


# function -> its guards, one per slot position. A detector takes the first guard no open
# detector holds, and gives it back when it closes. So a campaign's slots (open at once) hold
# a guard each and call the function at once, as they should; the next session in this
# process (a resume after an interrupt, in a notebook) takes the guards its closed
# predecessors held, and its first trial waits for a call one of them left running (found
# in review, session 39: built anew, a detector entered the function a second time at once;
# keyed by the slot's seed, a resumed session's fresh seed missed it, review AC).
_GUARDS: dict[Any, list[_Guard]] = {}
_GUARDS_LOCK = threading.Lock()


def _function_key(function: Callable[..., Any]) -> Any:
    """What names ``function`` across sessions: its module and qualified name (a notebook
    cell run again, or a campaign file imported again after an edit, makes a new function
    object that drives the same instrument); a bound method or a callable object by its
    object (a built-in problem's ``evaluate``: each campaign has its own)."""
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None)
    if isinstance(module, str) and isinstance(name, str) and not hasattr(function, "__self__"):
        return (module, name)
    return id(function)


def _take_guard(function: Callable[..., Any]) -> _Guard:
    """The first guard of ``function`` that no open detector holds (see :data:`_GUARDS`)."""
    with _GUARDS_LOCK:
        guards = _GUARDS.setdefault(_function_key(function), [])
        guard = next((g for g in guards if g.holders == 0), None)
        if guard is None:
            guard = _Guard()
            guards.append(guard)
        guard.holders += 1
        return guard


def _give_back(guard: _Guard) -> None:
    with _GUARDS_LOCK:
        guard.holders = max(0, guard.holders - 1)


def _detector_class(base: type[SimDetector], outputs: tuple[str, ...]) -> type[SimDetector]:
    """A subclass of ``base`` with one hinted signal component per output.

    Ophyd components are class attributes, but the outputs are only known at run time, so the
    class is made on demand (and cached: one class per distinct output tuple).
    """
    with _CLASS_CACHE_LOCK:
        cls = _CLASS_CACHE.get((base, outputs))
        if cls is None:
            cls = _CLASS_CACHE[(base, outputs)] = _make_detector_class(base, outputs)
        return cls


def _make_detector_class(base: type[SimDetector], outputs: tuple[str, ...]) -> type[SimDetector]:
    attrs = _attribute_names(outputs)
    namespace: dict[str, Any] = {
        attr: Cpt(InternalSignal, value=math.nan, kind=Kind.hinted) for attr in attrs.values()
    }
    namespace["_output_attrs"] = attrs
    namespace["__module__"] = base.__module__
    namespace["__doc__"] = base.__doc__
    # ophyd derives a namedtuple from the class name, so it must be an identifier.
    class_name = f"{base.__name__}_" + "_".join(attrs.values())
    namespace["__qualname__"] = class_name
    return type(class_name, (base,), namespace)


def _check_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
    if isinstance(outputs, str):
        raise ValueError("outputs must be a sequence of names, not one string")
    names = tuple(outputs)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"outputs must be non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"output names must be unique, got {names!r}")
    return names


def _on_event_loop() -> bool:
    """Whether this thread is running an asyncio event loop (the RunEngine's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class SimDetector(Device):
    """A triggerable detector that evaluates a pure function of the actuators' readbacks.

    One hinted signal per output, named exactly like the output. ``trigger()`` snapshots the
    input readbacks, draws the fault decision and the noise, and returns a ``DeviceStatus``
    that finishes after ``latency`` seconds, the function computed on a timer thread. At
    ``latency`` 0 the Status is finished before ``trigger()`` returns when it is called
    outside an event loop (a script); called on one (the RunEngine's), the function still
    runs on a thread of its own, since a slow or hung function would block the loop and no
    timeout or abort could then end the run. Noise is additive Gaussian and is
    not clipped: a measured yield can read 1.01, as an HPLC can. Non-finite function outputs
    are passed through unchanged for the engine to filter.

    Args:
        name: Device name (not a data key; the signals carry the output names).
        outputs: Output names, in order; the function must return at least these keys.
        inputs: Parameter name -> actuator; the function receives ``{name: readback}``.
        function: The pure simulator, inputs dict -> outputs dict.
        noise: Gaussian noise sd for every output, or a dict per output (missing ones: 0).
        floors: the lowest reading of an output (missing ones: none), applied after the
            noise: a quantity that cannot be negative (a yield, a peak area) reads 0, not
            the -12 % that noise on a small value made of it (found in review: such a
            reading became a dataset campaign's best).
        latency: Seconds from trigger to completion.
        failure_rate: Probability that a trigger fails with an injected, transient
            :class:`SimulatedFault`.
        hang_rate: Probability that a trigger's Status never completes (until ``stop()``).
        nan_rate: Probability that every output of a trigger reads NaN, +inf or -inf.
        failing_region: A predicate over the inputs (e.g. an
            :class:`~simulators.Expression` such as ``x1 + x2 > 1.5``); a trigger whose
            inputs' *setpoints* satisfy it fails, every time: a deterministic,
            non-transient fault of the point (see the module docstring for why not the
            readbacks, which the function itself is given).
        seed: Seed of the generator behind noise and failures.
        executor: Where ``function`` runs: ``None`` in this process; a
            :class:`~simulators.DaskExecutor` (anything with ``submit(function, inputs)``
            returning a ``distributed.Future``) to compute on a Dask cluster. One that also
            has ``watch(future, listener)`` (as ``DaskExecutor.watch``) tells when a task
            starts, so the wait before is kept off the trial's timeout
            (:meth:`queue_waited`).
        **kwargs: Passed to ``ophyd.Device``.

    Attributes:
        last_noiseless: Noiseless outputs of the last successful trigger (empty after a
            failure), for regret scoring and tests.
        trigger_count: Number of triggers so far.
    """

    _output_attrs: dict[str, str] = {}
    _sim_outputs: tuple[str, ...]
    _sim_noise_sd: list[float]
    _sim_floors: list[float]
    _sim_signals: list[InternalSignal]
    _sim_inputs: dict[str, SimActuator]
    _sim_function: SimFunction
    _sim_latency: float
    _sim_failure_rate: float
    _sim_hang_rate: float
    _sim_nan_rate: float
    _sim_failing_region: Callable[[Mapping[str, Any]], Any] | None
    _sim_unlisted: set[str]
    _sim_rng: np.random.Generator
    _sim_lock: threading.Lock
    _sim_pending: DeviceStatus | None
    _sim_timer: threading.Timer | None
    _sim_executor: Any
    _sim_future: Any
    _sim_guard: _Guard
    _sim_closed: bool
    _sim_call_done: threading.Condition
    _sim_clock: threading.Lock  # guards the queue-wait clock (queue_waited)
    _sim_queue_total: float
    _sim_queue_read: float
    _sim_queued: tuple[int, float] | None  # (trigger number, waiting since)
    _sim_watched: int | None  # the trigger whose task the executor reports on
    last_noiseless: dict[str, float]
    trigger_count: int

    def __new__(cls, name: str, *, outputs: Sequence[str], **kwargs: Any) -> SimDetector:
        # The base class has no output components; make (or reuse) the subclass that has.
        concrete = cls if cls._output_attrs else _detector_class(cls, _check_outputs(outputs))
        return super().__new__(concrete)

    def __init__(
        self,
        name: str,
        *,
        outputs: Sequence[str],
        inputs: Mapping[str, SimActuator],
        function: SimFunction,
        noise: float | Mapping[str, float] = 0.0,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        hang_rate: float = 0.0,
        nan_rate: float = 0.0,
        failing_region: Callable[[Mapping[str, Any]], Any] | None = None,
        seed: Seed = None,
        executor: Any = None,
        floors: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        self._sim_outputs = _check_outputs(outputs)
        if tuple(self._output_attrs) != self._sim_outputs:
            raise ValueError(f"{type(self).__name__} is built for outputs {self._output_attrs}")
        if not callable(function):
            raise TypeError(f"function must be callable, got {function!r}")
        if not (isinstance(latency, Real) and math.isfinite(latency) and latency >= 0):
            raise ValueError(f"latency must be a finite number of seconds >= 0, got {latency!r}")
        _check_rate("failure_rate", failure_rate)
        _check_rate("hang_rate", hang_rate)
        _check_rate("nan_rate", nan_rate)
        if failing_region is not None and not callable(failing_region):
            raise TypeError(f"failing_region must be a predicate, got {failing_region!r}")
        self._sim_noise_sd = _noise_vector(noise, self._sim_outputs)
        self._sim_floors = [float((floors or {}).get(o, -math.inf)) for o in self._sim_outputs]
        prepare = getattr(executor, "prepare", None)
        if callable(prepare):
            # Pickled now, once: a function that cannot be sent (a module-level lock) is a
            # configuration error naming it (FunctionNotSendable), not a TypeError per trial.
            prepare(function)
        super().__init__(name=name, **kwargs)
        self._sim_signals = [getattr(self, self._output_attrs[out]) for out in self._sim_outputs]
        for out, signal in zip(self._sim_outputs, self._sim_signals, strict=True):
            signal.name = out
        self._sim_inputs = dict(inputs)
        self._sim_function = function
        # keys `outputs:` does not list, warned of: one set per function, so a campaign's
        # slots (a detector each, one function) say it once (it was once per slot)
        try:
            self._sim_unlisted = _UNLISTED.setdefault(function, set())
        except TypeError:  # a callable that takes no weak reference: a set of its own
            self._sim_unlisted = set()
        self._sim_latency = float(latency)
        self._sim_failure_rate = float(failure_rate)
        self._sim_hang_rate = float(hang_rate)
        self._sim_nan_rate = float(nan_rate)
        self._sim_failing_region = failing_region
        self._sim_rng = np.random.default_rng(seed)
        self._sim_lock = threading.Lock()
        self._sim_pending = None
        self._sim_timer = None
        self._sim_executor = executor
        self._sim_future = None
        # Only an in-process call waits for one left running: a detector on an executor
        # holds no shared guard, whose left-over call its abort had taken for one it waited
        # for, and stored a trial that ran as "not measured" (review AD, session 39).
        self._sim_guard = _take_guard(function) if executor is None else _Guard()
        self._sim_closed = executor is not None  # nothing to give back
        self._sim_unstarted: str | None = None  # why the last stopped trigger never started
        self._sim_call_done = self._sim_guard.done
        self._sim_clock = threading.Lock()
        self._sim_queue_total = 0.0
        self._sim_queue_read = 0.0
        self._sim_queued = None
        self._sim_watched = None
        self.last_noiseless = {}
        self.trigger_count = 0

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output names, in order (= the data keys of ``read()``)."""
        return self._sim_outputs

    @property
    def latency(self) -> float:
        """Seconds from trigger to completion."""
        return self._sim_latency

    def trigger(self) -> DeviceStatus:
        """Start one measurement; the Status finishes when the outputs hold the new values.

        A second trigger while one is in flight fails its own Status (a real detector cannot
        take two exposures at once) and leaves the first untouched. A trigger after a stopped
        one whose function is still running waits for it (see ``_claim``).
        """
        # No stop() on failure: stop() aborts the measurement in flight, which must not happen
        # because a *second* trigger was refused or this one failed.
        status = _TriggerStatus(self, call_stop_on_failure=False)
        with self._sim_lock:
            self.trigger_count += 1
            number = self.trigger_count
            busy = self._sim_pending is not None and not self._sim_pending.done
            if not busy:
                self._sim_pending = status
                self._sim_unstarted = None
                # Draw everything now, in a fixed order, so a seed fixes the whole sequence.
                rng = self._sim_rng
                fail = bool(rng.random() < self._sim_failure_rate)
                z = rng.standard_normal(len(self._sim_outputs))
                # Rates of 0 draw nothing: enabling no fault keeps the stream unchanged.
                hang = bool(self._sim_hang_rate and rng.random() < self._sim_hang_rate)
                bad: float | None = None
                if self._sim_nan_rate and rng.random() < self._sim_nan_rate:
                    bad = (math.nan, math.inf, -math.inf)[int(rng.integers(3))]
                values = {key: act.readback.get() for key, act in self._sim_inputs.items()}
                setpoints = {key: act.setpoint.get() for key, act in self._sim_inputs.items()}
                if hang:
                    # The Status stays pending: only stop()/close() (an abort) ends it.
                    logger.info("%s: trigger #%d hangs (injected, hang_rate)", self.name, number)
                    self.last_noiseless = {}
                    return status
                if self._sim_executor is not None and not fail and not self._in_region(setpoints):
                    self._submit(status, number, values, setpoints, fail, z, bad)
                    return status
                if self._sim_latency > 0 or _on_event_loop() or self._sim_call is not None:
                    # Never on an event loop's thread (the RunEngine's): a function that
                    # does not return must leave the loop free to take the timeout's abort,
                    # Ctrl-C and the runner's stop. At latency 0 the thread starts at once
                    # (Timer(0)); an abort (stop()) fails the Status, and whatever the
                    # function returns later is dropped (_complete). Nor in a script's
                    # thread while a stopped call still runs: the wait for it is the
                    # timer thread's (_claim), and trigger() returns at once.
                    timer = threading.Timer(
                        self._sim_latency,
                        self._complete,
                        args=(status, number, values, setpoints, fail, z, bad),
                    )
                    timer.daemon = True
                    self._sim_timer = timer
                    timer.start()
                    return status
        if not busy:  # latency 0, called outside any event loop (a script, a test)
            self._complete(status, number, values, setpoints, fail, z, bad)
            return status
        fault = SimulatedFault(
            f"{self.name}: trigger #{number} refused: an earlier trigger is still in progress",
            device=self.name,
            trigger_number=number,
            injected=False,
        )
        _fail(status, fault)
        return status

    def _submit(
        self,
        status: DeviceStatus,
        number: int,
        inputs: dict[str, Any],
        setpoints: dict[str, Any],
        fail: bool,
        z: np.ndarray[Any, np.dtype[np.float64]],
        bad: float | None,
    ) -> None:
        """Send the function to the executor; complete from the future's done-callback.

        Called under ``_sim_lock``. Once the future is done, a thread of the trial's own
        fetches the result, waits out what is left of ``latency`` on a timer, then publishes
        as the in-process path does.
        """
        started = time.monotonic()
        try:
            future = self._sim_executor.submit(self._sim_function, inputs)
        except Exception as exc:  # e.g. the client was closed: a failed measurement
            if not self._scheduler_lost(exc):
                self._complete(status, number, inputs, setpoints, fail, z, bad, remote=exc)
            return
        self._sim_future = future
        self._watch_queue(future, number, started)

        def done(fut: Any) -> None:
            # Dask runs every future's done-callback on one thread per process, and fetching
            # may wait for a re-run (a result lost with its worker): on a thread of its own,
            # so other slots' trials are not held up behind it.
            threading.Thread(
                target=finish, args=(fut,), name=f"{self.name}-result", daemon=True
            ).start()

        def finish(fut: Any) -> None:
            # The queue clock must see such a re-run: the wait ends once the result is in hand.
            fetch = getattr(self._sim_executor, "result", None)
            remote: Any
            try:
                remote = fetch(fut) if callable(fetch) else fut.result()
            except BaseException as exc:  # the function raised, or the cluster failed
                remote = exc
            self._unwatch(number)
            if isinstance(remote, BaseException) and self._scheduler_lost(remote):
                return
            left = self._sim_latency - (time.monotonic() - started)
            if left > 0 and not status.done:
                timer = threading.Timer(
                    left,
                    self._complete,
                    args=(status, number, inputs, setpoints, fail, z, bad, remote),
                )
                timer.daemon = True
                with self._sim_lock:
                    self._sim_timer = timer
                timer.start()
                return
            self._complete(status, number, inputs, setpoints, fail, z, bad, remote)

        future.add_done_callback(done)

    def queue_waited(self) -> float:
        """Total seconds this detector's triggers have spent waiting in the executor's
        queue for a free worker, the current wait included.

        A monotonic clock that stands still while nothing waits (always, in process): the
        :class:`~instruments.Dispatcher` subtracts it from a run's elapsed time, as it does
        an interlock gate's, so a trial's ``timeout`` counts the time its function runs,
        not the time it waited for one of a busy cluster's workers (more slots than worker
        threads, an HPC queue whose jobs have not started). A wait starts when the function
        is sent and ends when the executor says a worker started it
        (:meth:`~simulators.DaskExecutor.watch`), or when its future is done or the trigger
        stopped; a task whose worker was lost under it (ended by an abort, an HPC job's
        end, a dead node) waits again until it restarts, from when its lost run started.
        """
        with self._sim_clock:
            total = self._sim_queue_total
            if self._sim_queued is not None:
                total += max(0.0, time.monotonic() - self._sim_queued[1])
            # A start reported with the time it arrived may close a wait a moment before a
            # reading already taken: never go back.
            self._sim_queue_read = max(self._sim_queue_read, total)
            return self._sim_queue_read

    def _watch_queue(self, future: Any, number: int, since: float) -> None:
        """Open trigger ``number``'s queue wait (from ``since``, when it was sent), if the
        executor can tell when its task starts; called under ``_sim_lock``."""
        watch = getattr(self._sim_executor, "watch", None)
        if not callable(watch):
            return
        with self._sim_clock:
            self._sim_watched = number
            self._sim_queued = (number, since)

        def listener(waiting: bool, at: float) -> None:
            self._queue_wait(number, waiting, at)

        try:
            followed = bool(watch(future, listener))
        except Exception as exc:
            logger.debug("%s: cannot follow the executor's queue: %s", self.name, exc)
            followed = False
        if not followed:  # nobody can tell when it starts: the wait is not counted
            with self._sim_clock:
                if self._sim_watched == number:
                    self._sim_watched = self._sim_queued = None

    def _queue_wait(self, number: int, waiting: bool, at: float) -> None:
        """Trigger ``number``'s task waits again (``waiting``) or no longer (started, done,
        stopped) from ``at`` (``time.monotonic()``); anything about an earlier trigger, or
        after this one's future is done, is ignored."""
        with self._sim_clock:
            queued = self._sim_queued
            if waiting:
                if queued is None and self._sim_watched == number:
                    self._sim_queued = (number, at)
            elif queued is not None and queued[0] == number:
                self._sim_queue_total += max(0.0, at - queued[1])
                self._sim_queued = None

    def _unwatch(self, number: int | None = None) -> None:
        """Trigger ``number``'s task (by default the watched one) is over, its future done or
        the trigger stopped: its wait ends now, and nothing reopens it."""
        at = time.monotonic()
        with self._sim_clock:
            number = self._sim_watched if number is None else number
            if number is None or self._sim_watched != number:
                return
            self._sim_watched = None
            queued = self._sim_queued
            if queued is not None and queued[0] == number:
                self._sim_queue_total += max(0.0, at - queued[1])
                self._sim_queued = None

    def _in_region(self, setpoints: Mapping[str, Any]) -> bool:
        """Whether ``setpoints`` lie in the failing region (or the predicate cannot tell).

        Asked before a point is sent to an executor: a point that fails anyway is not worth
        a cluster's time. ``_evaluate`` asks again and reports why, as in-process.
        """
        region = self._sim_failing_region
        if region is None:
            return False
        try:
            return bool(region(dict(setpoints)))
        except Exception:  # _evaluate reports the broken predicate
            return True

    def _scheduler_lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the executor's scheduler is gone *and* a listener (the
        runner) was told, so it stops the campaign and its abort ends this measurement.

        Without a listener the measurement fails (see ``_evaluate``), not transient:
        retrying on a client without a scheduler fails at once, every time.
        """
        executor = self._sim_executor
        lost = getattr(executor, "lost", None)
        reason = lost(exc) if callable(lost) else None
        return reason is not None and bool(executor.report_lost(reason))

    def close(self) -> None:
        """Cancel a measurement in flight (its Status fails) and release ophyd resources;
        give the function's guard back, for the next session's detector (a call left
        running is still waited for there)."""
        self._abort("closed")
        self.destroy()
        if not self._sim_closed:
            self._sim_closed = True
            _give_back(self._sim_guard)

    def unstarted(self) -> str | None:
        """Why the last trigger, stopped, never called the function (it waited for an
        earlier stopped call still running), or ``None``. The dispatcher words such a
        trial's timeout with it: "not measured", not a timeout of its point (found in
        review: with retries, points never measured were learned as failing)."""
        return self._sim_unstarted

    def stop(self, *, success: bool = False) -> None:
        """Abort a measurement in flight, as the RunEngine does on pause or abort."""
        self._abort("stopped")
        super().stop(success=success)

    def _abort(self, why: str) -> None:
        with self._sim_lock:
            timer, pending, future = self._sim_timer, self._sim_pending, self._sim_future
            self._sim_timer = self._sim_future = None
        self._unwatch()
        if timer is not None:
            timer.cancel()
        waiting = ""
        with self._sim_call_done:
            call = self._sim_call
            if call is not None and pending is not None and not pending.done:
                if call.owner is self and call.stopped is None:
                    call.stopped = time.monotonic()  # its own trigger's call: runs on, unwanted
                else:  # an earlier trigger's (or another detector's): this one waited for it
                    ago = (
                        "" if call.stopped is None else f"{time.monotonic() - call.stopped:.3g} s "
                    )
                    self._sim_unstarted = (
                        f"{_source(self._sim_function, self.name)} was still running the call "
                        f"of a trial stopped {ago}before (a running function cannot be "
                        "interrupted), so this trial never called it"
                    )
                    waiting = (
                        f", while waiting for {_source(self._sim_function, self.name)}, still "
                        f"running from trigger #{call.number} (stopped {ago}ago), so it was "
                        "not called"
                    )
            self._sim_call_done.notify_all()  # a waiting trigger sees its Status failed
        if pending is not None and not pending.done:
            # Before the future is cancelled: its callback would otherwise fail the Status
            # first, with the cancellation, and the stop would read as a cluster fault.
            fault = SimulatedFault(
                f"{self.name}: trigger #{self.trigger_count} {why} before completion{waiting}",
                device=self.name,
                trigger_number=self.trigger_count,
                injected=False,
            )
            _fail(pending, fault)
        if future is not None and not future.done():
            # A DaskExecutor also kills the worker process still running the function (its
            # nanny starts a fresh one); a plain executor's future can only be cancelled.
            abort = getattr(self._sim_executor, "abort", None)
            try:
                if callable(abort):
                    abort(future)
                else:
                    future.cancel()
            except Exception as exc:  # the client is closing: nothing left to cancel
                logger.debug("cancelling a Dask future: %s", exc)

    def _complete(
        self,
        status: DeviceStatus,
        number: int,
        inputs: dict[str, Any],
        setpoints: dict[str, Any],
        fail: bool,
        z: np.ndarray[Any, np.dtype[np.float64]],
        bad: float | None = None,
        remote: Any = _NOT_REMOTE,
    ) -> None:
        """Evaluate, publish, finish the Status. Runs on the timer thread (or the executor's
        callback); in the caller's thread only at latency 0 outside an event loop.

        ``inputs`` are the readbacks the function is given; ``setpoints`` the commanded
        values the failing region is judged on. ``bad`` is an injected non-finite reading
        (``nan_rate``) that replaces every output.
        ``remote`` is what an executor computed (the outputs, or the exception it raised);
        by default the function is evaluated here.
        """
        if status.done:  # aborted while waiting
            return
        local = remote is _NOT_REMOTE
        if local and not self._claim(status, number):
            return  # stopped while an earlier call still ran: this one never started
        try:
            try:
                noiseless = self._evaluate(number, inputs, setpoints, fail, remote)
            finally:
                if local:  # before the Status finishes: the next trigger finds it free
                    self._release()
            if bad is not None:
                logger.info("%s: trigger #%d reads %s (injected, nan_rate)", self.name, number, bad)
                noiseless = [bad] * len(noiseless)
            sds, floors = self._sim_noise_sd, self._sim_floors
            noisy = [
                _floored(float(v + sd * dz), low)
                for v, sd, dz, low in zip(noiseless, sds, z, floors, strict=True)
            ]
            if status.done:  # aborted while the function ran: publish nothing
                return
            for signal, value in zip(self._sim_signals, noisy, strict=True):
                signal.put(value, internal=True)
            self.last_noiseless = dict(zip(self._sim_outputs, noiseless, strict=True))
        except SimulatedFault as fault:
            self.last_noiseless = {}
            logger.info("%s", fault)
            _fail(status, fault)
            return
        except BaseException as exc:  # a broken signal or callback must not hang the RunEngine
            if _is_interrupt(exc):
                raise
            broken = SimulatedFault(
                f"{self.name}: trigger #{number} failed: {type(exc).__name__}: {exc}",
                device=self.name,
                trigger_number=number,
                injected=False,
            )
            broken.__cause__ = exc
            self.last_noiseless = {}
            _fail(status, broken)
            return
        if not status.done:
            status.set_finished()

    def _claim(self, status: DeviceStatus, number: int) -> bool:
        """Wait until no earlier call of the function runs, then mark trigger ``number``'s
        as running; ``False`` (never calling it) if ``status`` was stopped meanwhile.

        A stopped trigger's function cannot be interrupted and runs on. Calling the
        function again meanwhile entered it twice (three times after a retry and the next
        point: found in review), which a function driving a real instrument must never see.
        Waiting rather than refusing (as a plugin device's stuck call is refused): a slow
        call that returns in time leaves the next trial its measurement, and a refusal
        would fail trial after trial within milliseconds, spending ``max_failures`` and
        the retries of points never measured; waiting, a function that never returns
        costs each trial its own timeout. Runs on the trigger's timer thread, never the
        RunEngine's.
        """
        with self._sim_call_done:
            call = self._sim_call
            if call is not None and call.stopped is not None:
                logger.warning(
                    "%s: %s is still running for a trial stopped %.3g s ago (timed out or "
                    "aborted; a running function cannot be interrupted): this trial waits "
                    "for it to return, a function is never called twice at once (one that "
                    "may not return: `executor: {kind: local}` ends it with its trial)",
                    self.name,
                    _source(self._sim_function, self.name),
                    time.monotonic() - call.stopped,
                )
                logger.debug("%s: trigger #%d waits for #%d", self.name, number, call.number)
            while self._sim_call is not None and not status.done:
                self._sim_call_done.wait(_WAIT_POLL)
            if status.done:
                return False
            self._sim_call = _Call(number, owner=self)
            return True

    @property
    def _sim_call(self) -> _Call | None:
        """The function's call in progress, this detector's or one a closed predecessor left
        running in this process (see :data:`_GUARDS`); set and read under
        ``_sim_call_done``."""
        return self._sim_guard.call

    @_sim_call.setter
    def _sim_call(self, call: _Call | None) -> None:
        self._sim_guard.call = call

    def _release(self) -> None:
        """The function returned (or raised): the next trigger may call it."""
        with self._sim_call_done:
            call, self._sim_call = self._sim_call, None
            if call is not None and call.stopped is not None:
                logger.info(
                    "%s: the function call of stopped trigger #%d returned after %.3g s more",
                    self.name,
                    call.number,
                    time.monotonic() - call.stopped,
                )
            self._sim_call_done.notify_all()

    def _evaluate(
        self,
        number: int,
        inputs: dict[str, Any],
        setpoints: dict[str, Any],
        fail: bool,
        remote: Any = _NOT_REMOTE,
    ) -> list[float]:
        """Noiseless outputs in order, or raise :class:`SimulatedFault` saying what happened.

        The function gets ``inputs`` (the readbacks: the physics sees what was achieved);
        the failing region is judged on ``setpoints``, the point asked for (module
        docstring). Nothing here looks at whether a readback is within its limits: that is
        the dispatcher's check of the stored event, as for any instrument.
        """

        def fault(
            message: str, *, injected: bool = False, transient: bool = False
        ) -> SimulatedFault:
            return SimulatedFault(
                f"{self.name}: trigger #{number}: {message}",
                device=self.name,
                trigger_number=number,
                injected=injected,
                transient=transient,
            )

        if fail:
            rate = self._sim_failure_rate
            raise fault(
                f"injected instrument fault (failure_rate={rate:g})", injected=True, transient=True
            )
        region = self._sim_failing_region
        if region is not None:
            try:
                inside = bool(region(dict(setpoints)))
            except BaseException as exc:  # a broken predicate is a broken instrument, not a hang
                if _is_interrupt(exc):
                    raise
                raise fault(f"failing_region could not be evaluated: {exc}") from exc
            if inside:
                what = getattr(region, "text", None) or getattr(region, "__name__", "predicate")
                raise fault(
                    f"injected fault: setpoints ({_show_inputs(setpoints)}) lie in the "
                    f"failing region `{what}`",
                    injected=True,
                )
        who = _source(self._sim_function, self.name)
        if isinstance(remote, BaseException):
            lost = getattr(self._sim_executor, "lost", None)
            gone = lost(remote) if callable(lost) else None
            if gone is not None:
                raise fault(f"{who} could not run: {gone}") from remote
            if is_infrastructure_error(remote):
                # distributed says "died while running it" of a trial only queued there too
                unstarted = UNANNOUNCED if getattr(remote, UNANNOUNCED_ATTR, False) else ""
                raise fault(
                    f"{who} could not finish on the Dask cluster{unstarted}: "
                    f"{type(remote).__name__}: {remote}",
                    transient=True,
                ) from remote
            raise self._raised(number, remote, inputs) from remote
        try:
            raw = self._sim_function(dict(inputs)) if remote is _NOT_REMOTE else remote
        except BaseException as exc:
            # SystemExit (a script's ``sys.exit``) or GeneratorExit out of the user's code is
            # a failed measurement too: let through, it would escape trigger() into the
            # RunEngine (latency 0) or kill the timer thread and leave the Status pending.
            if _is_interrupt(exc):
                raise
            raise self._raised(number, exc, inputs) from exc
        # What the function did wrong leads, then whose it is: the user reads "function
        # measure (model.py) did not return ...", not the detector's name and trigger count.
        if not isinstance(raw, Mapping):
            raise self._broken(
                number, f"{who} returned {type(raw).__name__}, expected a dict of outputs"
            )
        readings = {out: _reading(out, raw[out]) for out in self._sim_outputs if out in raw}
        kept = {out: r for out, r in readings.items() if isinstance(r, float)}
        missing = [out for out in self._sim_outputs if out not in raw]
        if not missing:  # else the failure names every key, and "add it to outputs" misleads
            self._note_unlisted(raw, who)
        if missing:
            raise self._broken(
                number,
                f"{who} did not return {missing} (it returned {_returned(raw)})"
                f"{_near_names(missing, list(raw), self._sim_outputs)}",
                kept,
            )
        # Raised here, not from an exception of float(): the fault's text is the whole story
        # (output, function, value), and the Dispatcher's description keeps it.
        problem = next((r for r in readings.values() if isinstance(r, str)), None)
        if problem is not None:
            raise self._broken(number, f"{who} returned a non-numeric output: {problem}", kept)
        return [kept[out] for out in self._sim_outputs]

    def _note_unlisted(self, raw: Mapping[Any, Any], who: str) -> None:
        """Warn once per key of the keys the function returns that ``outputs:`` does not
        list: they are not stored, and a silent drop hid a measurement the user meant to
        keep (found in review; a key first returned on a later trial was not named either,
        when the warning was once per detector)."""
        if _builtin(self._sim_function):
            return  # a built-in simulator computes every output; a campaign picks some
        unlisted = sorted(
            str(k) for k in raw if k not in self._sim_outputs and str(k) not in self._sim_unlisted
        )
        if unlisted:
            self._sim_unlisted.update(unlisted)
            logger.warning(
                "%s returns %s, which the campaign's `outputs:` does not list: not stored "
                "(add them to `outputs:` to keep them)",
                who,
                unlisted,
            )

    def _broken(
        self,
        number: int,
        message: str,
        partial: Mapping[str, float] | None = None,
        *,
        transient: bool = False,
    ) -> SimulatedFault:
        """A measurement the function failed (not injected; not transient unless it says
        so); ``partial``: the outputs it did return as numbers, kept with the failed trial."""
        return SimulatedFault(
            message,
            device=self.name,
            trigger_number=number,
            injected=False,
            transient=transient,
            partial_outputs=partial,
        )

    def _raised(self, number: int, exc: BaseException, inputs: Mapping[str, Any]) -> SimulatedFault:
        """The fault for an exception out of the function: the function's own message first
        (``RuntimeError: pH probe not calibrated``), then where it came from, with the line of
        the user's file that raised it and the inputs it was given."""
        text = str(exc).strip()
        what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        where = _source(self._sim_function, self.name, exc)
        # inputs["temprature"]: a bare KeyError failed every trial (found in review)
        used = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else None
        # not a key some input's value is (a table indexed by a choice: gains[inputs["mode"]]
        # raised KeyError: 'mode2', which was called a misspelt 'mode'; found in review)
        values = {str(v) for v in inputs.values()}
        typo = isinstance(used, str) and used not in inputs and used not in values
        near = near_name(used, inputs) if typo and isinstance(used, str) else None
        hint = misnamed_hint([(str(used), near)] if near is not None else [], "parameter")
        message = f"{what}; raised by {where} at {_show_inputs(inputs)}{hint}"
        flag = getattr(exc, "transient", None)  # the function's word, never its type's
        if flag is True:  # in the text too: a crash's resume has only the text to read
            message += SAID_TRANSIENT
        return self._broken(number, message, transient=flag is True)


def _builtin(function: Any) -> bool:
    """Whether ``function`` is this package's (a built-in or dataset simulator)."""
    module = getattr(function, "__module__", None) or ""
    return bool(module.split(".")[0] == __name__.split(".")[0])


_SENT_BY_VALUE = "<dynamic-code>"
"""``co_filename`` of code cloudpickle sent by value (a campaign file's, to Dask workers)."""


def _source(function: Any, device: str, exc: BaseException | None = None) -> str:
    """Who computes a detector's outputs, as its error texts name it.

    ``simulator branin`` for a built-in or dataset simulator (a function of this package:
    the detector bears the simulator's name); ``function measure (model.py)`` for the user's
    own (``instrument: {function: ...}`` or the Python API), with the line of that file an
    exception ``exc`` was raised from when its traceback reaches it (``model.py, line 12``).
    """
    if _builtin(function):
        return f"simulator {device}"
    name = getattr(function, "__name__", None) or type(function).__name__
    code = getattr(function, "__code__", None)
    if code is None:
        return f"function {name}"
    filename = code.co_filename
    line = None
    tb = exc.__traceback__ if exc is not None else None
    while tb is not None:
        # A campaign's file travels to Dask workers by value, and cloudpickle names its code
        # "<dynamic-code>" there (its line numbers kept): such a frame is of that file too.
        if tb.tb_frame.f_code.co_filename in (filename, _SENT_BY_VALUE):
            line = tb.tb_lineno
        tb = tb.tb_next
    short = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return f"function {name} ({short}" + (f", line {line})" if line else ")")


def _reading(name: str, value: Any) -> float | str:
    """One output as a float, or what is wrong with it (``cost = array([2.]) is a ndarray,
    not a number``), refusing what ``float()`` would quietly accept.

    A bool is not a measurement (``True`` would read 1.0), and a numeric string (``"1.5"``)
    is a function that formatted its result instead of returning it: refused like any other
    text, as setpoints are (a number must be a number, not something that parses as one).
    """
    if not isinstance(value, bool | np.bool_ | str | bytes):
        try:
            return float(value)
        except OverflowError:  # 10**400: a number, but no float holds it
            return (
                f"{name} = {reprlib.repr(value)} is too large for a float (at most "
                f"{sys.float_info.max:.4g})"
            )
        except (TypeError, ValueError):
            pass
    what = "None" if value is None else f"a {type(value).__name__}"
    hint = ""
    if isinstance(value, np.ndarray) and value.size == 1:
        hint = " (return a plain number: value.item() for a one-element array)"
    return f"{name} = {reprlib.repr(value)} is {what}, not a number{hint}"


def _near_names(missing: Sequence[str], returned: Sequence[Any], outputs: Sequence[str]) -> str:
    """``; is 'yield' meant to be 'yield_pct'? ...`` for a returned key close to a missing
    output's name, else ``""``: a renamed output fails every trial, and the two names side
    by side are the fix."""
    extra = [str(k) for k in returned if k not in outputs]
    pairs = [(near, out) for out in missing if (near := near_name(out, extra)) is not None]
    return misnamed_hint(pairs, "output")


def _returned(raw: Mapping[Any, Any]) -> str:
    """What a function returned, keys and values, for the error of a trial it failed: a
    value under a misspelt key is otherwise lost with the trial (``{'Yield': 0.83}`` for the
    output ``yield``: found in review), and from the error it can be told (``tell``)."""
    items = sorted(raw.items(), key=lambda kv: str(kv[0]))
    shown = []
    for key, value in items[:20]:
        text = repr(value)  # a float as it round-trips
        shown.append(f"{key!r}: {text if len(text) <= 40 else text[:39] + '…'}")
    more = f", … {len(items) - 20} more" if len(items) > 20 else ""
    return "{" + ", ".join(shown) + more + "}"


def _is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's Ctrl-C, which must reach the RunEngine (it aborts the run).

    Only the main thread receives a real Ctrl-C; a ``KeyboardInterrupt`` raised on a timer
    thread came from the simulator's own code, and re-raising it there would only kill the
    thread and leave the Status pending, so it fails the measurement like any other error.
    """
    return isinstance(exc, KeyboardInterrupt) and (
        threading.current_thread() is threading.main_thread()
    )


def _fail(status: DeviceStatus, exc: Exception) -> None:
    try:
        status.set_exception(exc)
    except Exception:  # already completed by a racing abort: the first outcome stands
        logger.debug("status %r already finished; dropping %r", status, exc)


def _floored(value: float, floor: float) -> float:
    """``value``, or ``floor`` where a finite reading lies below it (an injected NaN or
    infinity stays what it is: ``nan_rate``'s fault)."""
    return floor if math.isfinite(value) and value < floor else value


def _noise_vector(noise: float | Mapping[str, float], outputs: tuple[str, ...]) -> list[float]:
    if isinstance(noise, Mapping):
        unknown = sorted(set(noise) - set(outputs))
        if unknown:
            raise ValueError(f"noise given for unknown outputs {unknown}; outputs are {outputs}")
        sds = [noise.get(out, 0.0) for out in outputs]
    else:
        sds = [noise] * len(outputs)
    for sd in sds:
        if not (isinstance(sd, Real) and math.isfinite(sd) and sd >= 0):
            raise ValueError(f"noise sd must be a finite number >= 0, got {sd!r}")
    return [float(sd) for sd in sds]


@dataclass
class SimulatedInstrument:
    """A simulator as Ophyd devices: one actuator per input, detector(s) for the outputs.

    Attributes:
        name: Instrument name (also the detector's device name).
        inputs: Parameter name -> actuator (``bps.mv(inputs["temperature"], 80)``).
        detectors: Devices to trigger and read; one for a simulator.
        outputs: Output names, i.e. the detectors' data keys.
        problem: The built-in problem behind it, if any (for regret and reports).
    """

    name: str
    inputs: dict[str, SimActuator]
    detectors: list[SimDetector]
    outputs: tuple[str, ...]
    problem: TestProblem | None = field(default=None, repr=False)

    @property
    def detector(self) -> SimDetector:
        """The (first) detector."""
        return self.detectors[0]

    def close(self) -> None:
        """Abort anything in flight and release the devices; safe to call twice."""
        for det in self.detectors:
            det.close()
        for act in self.inputs.values():
            act.destroy()


InputSpec = Any  # ParamSpec-like object, (lower, upper), choices, or {"bounds"|"values": ...}


def _actuator_kwargs(name: str, spec: InputSpec) -> dict[str, Any]:
    """Turn one input description into ``SimActuator`` keyword arguments."""
    kind = getattr(spec, "kind", None) or getattr(spec, "type", None)
    if isinstance(spec, Mapping):
        kind = spec.get("kind", spec.get("type"))
        values, bounds = spec.get("values"), spec.get("bounds")
    else:
        values, bounds = getattr(spec, "values", None), getattr(spec, "bounds", None)
        if callable(values):  # a Mapping-like object's .values method, not choices
            values = None
    unit = spec.get("unit") if isinstance(spec, Mapping) else getattr(spec, "unit", None)
    units = {"units": str(unit)} if unit else {}
    if values is not None:
        return {"choices": tuple(values), **units}
    if bounds is not None:
        return {"limits": tuple(bounds), "integer": kind == "int", **units}
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        items = tuple(spec)
        is_number = [isinstance(v, Real) and not isinstance(v, bool) for v in items]
        if len(items) == 2 and all(is_number):
            return {"limits": items}
        return {"choices": items}
    raise ValueError(
        f"input {name!r}: expected a parameter (with bounds or values), (lower, upper) or a "
        f"list of choices, got {spec!r}"
    )


def build_simulated_instrument(
    function: SimFunction | TestProblem,
    *,
    inputs: Mapping[str, InputSpec] | None = None,
    outputs: Sequence[str] | None = None,
    noise: float | Mapping[str, float] = 0.0,
    latency: float = 0.0,
    failure_rate: float = 0.0,
    seed: Seed = None,
    name: str = "sim",
    readback_error: ReadbackError | Mapping[str, ReadbackError] = None,
    hang_rate: float = 0.0,
    nan_rate: float = 0.0,
    readback_out_of_range_rate: float = 0.0,
    failing_region: str | Callable[[Mapping[str, Any]], Any] | None = None,
    executor: Any = None,
    floors: Mapping[str, float] | None = None,
) -> SimulatedInstrument:
    """Wrap a pure function (or a built-in :class:`TestProblem`) as Ophyd devices.

    Each input becomes a :class:`SimActuator` named like the input, limited to its bounds or
    choices; the outputs become one :class:`SimDetector` named ``name``. A single ``seed``
    seeds every device through independent child streams, so a whole instrument is
    reproducible from one number.

    Args:
        function: The simulator (inputs dict -> outputs dict), or a ``TestProblem``, whose
            parameters and outputs then become the defaults for ``inputs``/``outputs``.
        inputs: Name -> a parameter object with ``bounds``/``values`` (``ParamSpec``, the
            planners' parameter models, or a dict with those keys), ``(lower, upper)``, or a
            list of choices. A plain sequence of exactly two numbers means limits; to declare
            two numeric choices use a parameter object with ``values``.
        outputs: Output names (data keys).
        noise: Gaussian sd for all outputs or per output.
        floors: The lowest reading per output (see :class:`SimDetector`), e.g. a dataset's
            outputs that were never measured below 0; by default a ``TestProblem``'s own.
        latency: Seconds per trigger.
        failure_rate: Probability that a trigger fails.
        seed: One seed for the whole instrument.
        name: Instrument (and detector) name; must differ from every data key.
        readback_error: Controller error sd (or a function of the setpoint) for all numeric
            inputs, or per input name.
        hang_rate: Probability that a trigger never completes.
        nan_rate: Probability that a trigger's outputs are NaN or +/-inf.
        readback_out_of_range_rate: Probability, per numeric input and trial, that the
            input's readback lands outside its limits.
        failing_region: Where every trigger fails: an expression over the numeric inputs'
            names (``"x1 + x2 > 1.5"``, parsed by :func:`simulators.parse_expression`,
            never ``eval``'d) or a predicate ``inputs -> bool``, judged on the inputs'
            setpoints (the point asked for), not their readbacks.
        executor: compute the function on a Dask cluster (a
            :class:`~simulators.DaskExecutor`) instead of in this process.

    Raises:
        ValueError: on unusable inputs/outputs or name clashes between data keys;
            :class:`~simulators.ExpressionError` (a ``ValueError``) for a bad
            ``failing_region`` expression.
    """
    problem = function if isinstance(function, TestProblem) else None
    if problem is not None:
        func: SimFunction = problem.evaluate
        inputs = inputs if inputs is not None else {p.name: p for p in problem.parameters}
        outputs = outputs if outputs is not None else problem.outputs
        floors = floors if floors is not None else problem.floors
    else:
        func = function  # type: ignore[assignment]
    if inputs is None or outputs is None:
        raise ValueError("a plain function needs inputs= and outputs=")
    out_names = _check_outputs(outputs)
    clashes = data_key_clashes(inputs, out_names, name)
    if clashes:
        raise ValueError(f"instrument {name!r}: names clash between data keys: {clashes}")
    if isinstance(readback_error, Mapping):
        unknown = sorted(set(readback_error) - set(inputs))
        if unknown:
            raise ValueError(f"readback_error given for unknown inputs {unknown}")

    all_kwargs = {key: _actuator_kwargs(key, spec) for key, spec in inputs.items()}
    region = failing_region
    if isinstance(region, str):
        numeric = [key for key, kw in all_kwargs.items() if "limits" in kw]
        region = parse_expression(region, numeric)
        if not region.is_condition:
            raise ExpressionError(
                "failing_region must be a condition such as `x1 + x2 > 1.5`, not a number",
                text=region.text,
            )
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    seeds = root.spawn(len(inputs) + 1)
    actuators: dict[str, SimActuator] = {}
    for (key, kwargs), child in zip(all_kwargs.items(), seeds[1:], strict=True):
        error = readback_error.get(key) if isinstance(readback_error, Mapping) else readback_error
        if error and "limits" in kwargs and not kwargs.get("integer"):
            kwargs["readback_error"] = error
        if readback_out_of_range_rate and "limits" in kwargs:
            kwargs["out_of_range_rate"] = readback_out_of_range_rate
        actuators[key] = SimActuator(key, seed=child, **kwargs)
    detector = SimDetector(
        name,
        outputs=out_names,
        inputs=actuators,
        function=func,
        noise=noise,
        latency=latency,
        failure_rate=failure_rate,
        hang_rate=hang_rate,
        nan_rate=nan_rate,
        failing_region=region,
        seed=seeds[0],
        executor=executor,
        floors=floors,
    )
    logger.debug(
        "built simulated instrument %r: inputs %s, outputs %s", name, list(inputs), out_names
    )
    return SimulatedInstrument(
        name=name, inputs=actuators, detectors=[detector], outputs=out_names, problem=problem
    )
