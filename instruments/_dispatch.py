"""Run one trial on a real RunEngine and turn whatever happened into a ``TrialResult``.

The dispatcher is the only place the loop meets Bluesky. It owns a ``RunEngine`` (one plan
at a time), forwards every document to the caller's sink the moment it is emitted (so the
store holds a run's start before its devices move), and converts every instrument fault
into data: a failed trial is a row with an error, never an exception through the loop.

bluesky 1.15 always runs the RunEngine's asyncio loop on its own daemon thread (started by
the constructor); ``RE(plan)`` blocks the *calling* thread on a ``threading.Event`` through
the engine's ``during_task``. So a dispatcher may be driven from the main thread or a worker
thread, and ``close()`` must stop and join that loop thread.

A faulty instrument costs one trial, never the campaign:

* **Timeout.** ``run(..., timeout=N)`` arms a watchdog; a run still going after ``N`` s
  (not counting time spent waiting at the instrument's interlock gate: a trial held by an
  open door is paused, not failed; nor a detector's wait in an executor's queue for a free
  worker, its ``queue_waited()`` clock; nor a freeze of the process, Ctrl-Z until ``fg``)
  is aborted through the RunEngine (``RE.abort``, as Ctrl-C is), so its cleanup runs and
  its stop document (``exit_status='abort'``) is emitted and stored. The trial comes back
  ``fail`` with "timed out after N s" and ``transient=True``. Detectors left
  mid-acquisition are then ``stop()``-ped: bluesky stops only the devices it moved, and a
  detector still "busy" would refuse the next trial's trigger.
* **Non-finite outputs** (NaN, +/-inf) fail the trial; the values stay in the result (and so
  in the store), but a failed trial never reaches a model as a measurement.
* **Readbacks outside the declared limits** (``readback_limits``, the campaign's bounds),
  or missing from the run's event, fail the trial the same way: the instrument did not do
  what was asked (or cannot show it did), so its measurement may describe a point outside
  the search space and cannot be learned from. A parameter's readback is the event's value
  under the parameter's name, else under its device's name; the start document records
  that map (``readback_keys``) so ``resume`` reads a crashed trial's readbacks from its
  stored documents by the same rule (:func:`outputs_and_readbacks`, used by both).
* **Transient or not.** A failure is ``transient`` when a timeout caused it or when an
  exception in its chain says so (a ``transient=True`` attribute, as the simulators'
  injected faults carry, or a ``TimeoutError``/``ConnectionError``); the loop's retry
  policy retries only those.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import numbers
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from bluesky import RunEngine
from bluesky.protocols import Checkable, Readable
from bluesky.run_engine import get_bluesky_event_loop, set_bluesky_event_loop
from bluesky.utils import DuringTask, Msg, RunEngineInterrupted
from ophyd.utils import LimitError

from instruments._errors import (
    DispatcherBusy,
    DispatcherClosed,
    DocumentSinkError,
    InstrumentConfigError,
    MeasurementRejected,
    TrialInterrupted,
    describe_exception,
)
from instruments._plans import STREAM_NAME, readback_keys, trial_plan
from instruments._protocol import ExitStatus, Instrument, TrialResult
from instruments._safety import Gate, PauseListener, SetpointRefused, check_setpoint
from instruments._validation import install as fast_document_validation
from instruments._versions import PLANNER_STACK, closedloop_version, installed_versions

logger = logging.getLogger(__name__)

DocumentSink = Callable[[str, dict[str, Any]], None]
_LIMIT_CHECK_TIMEOUT = 10.0  # s; an async check_value is a local limit test, not a move
_STOP_TIMEOUT = 10.0  # s; an async stop() of a detector after an abort
_FAILURE_READ_SECONDS = 1.0  # s in all; the inputs read after a failed run (best effort)
# s; how long a caller waits for a RunEngine to take an abort (see _EngineCall): the timeout
# watchdog and Ctrl-C during a run; Dispatcher.abort takes its own limit.
_ABORT_WAIT = 5.0
# s; the longest a deadline's thread sleeps at a time (see _Stopwatch): it then sees whether
# the process was frozen meanwhile.
_WATCH_SLICE = 0.5
# s; a wake this much later than the sleep asked for means the process was not scheduled at
# all (SIGSTOP, Ctrl-Z; see _Stopwatch), not that the machine was busy.
_FROZEN_AFTER = 2.0
# Relative slack every readback gets on its limits, for float rounding alone: a value sent
# through a unit conversion and back (0.2 mL/min -> uL/s -> 0.19999999999999998) is the
# value asked for, even against a zero-width range (a ``fixed`` parameter's [v, v]).
_ROUNDING_REL = 1e-9
# Absolute slack for a range whose bounds are all 0, where a relative one is 0 as well.
_ROUNDING_ABS = 1e-12


class _AbortOnInterrupt(DuringTask):
    """Block like bluesky's plain ``DuringTask``, but turn Ctrl-C into a clean abort.

    Without bluesky's SIGINT handler (we pass ``context_managers=[]`` because the loop owns
    signals), a KeyboardInterrupt that reaches ``RE.__call__`` makes the engine inject a
    panic into its loop thread, which can leave it unrecoverable ("panicked") and skip the
    stop document. Aborting instead runs the cleanup and emits ``exit_status='abort'``.
    ``DefaultDuringTask`` is avoided too: it would drive a Qt event loop if matplotlib with
    a Qt backend happened to be imported.
    """

    def __init__(self) -> None:
        super().__init__()
        self.run_engine: RunEngine | None = None
        self.abort: Callable[[str], bool] | None = None
        self.interrupted = False

    def block(self, blocking_event: threading.Event) -> None:
        try:
            blocking_event.wait()
        except KeyboardInterrupt:
            self.interrupted = True
            logger.warning("KeyboardInterrupt during a trial: aborting the run")
            if self.abort is not None:
                self.abort("KeyboardInterrupt")
            elif self.run_engine is not None:
                _request_abort(self.run_engine, "KeyboardInterrupt")
            # A second Ctrl-C here propagates to the RunEngine, which then halts hard.
            blocking_event.wait()


class _EngineCall:
    """One ``RE.abort``/``RE.halt`` on a daemon thread, waited for with a time limit.

    bluesky's ``abort`` and ``halt`` wait, without a limit, for the engine's event loop to
    take the request. A loop that is blocked (a device call that does not return, a
    document sink waiting for a lock the caller holds) would hold the caller for ever: a
    timeout watchdog, the runner's stop, Ctrl-C. So the call runs on its own thread and the
    caller waits at most ``wait`` s; a call not yet taken stays under way (it lands when the
    loop frees), and asking again meanwhile joins it instead of starting another.
    """

    def __init__(self, run_engine: RunEngine, what: str, reason: str | None) -> None:
        self.delivered: bool | None = None  # None: not yet taken
        self.warned = False

        def call() -> None:
            try:
                if what == "abort":
                    run_engine.abort(reason or "")
                else:
                    run_engine.halt()
            except Exception as exc:  # TransitionError: the run ended meanwhile
                logger.debug("%s not delivered: %s", what, exc)
                self.delivered = False
                return
            self.delivered = True

        self.thread = threading.Thread(target=call, name=f"closedloop-{what}", daemon=True)
        self.thread.start()

    def wait(self, seconds: float) -> bool | None:
        """Whether it was delivered; ``None`` while the engine has not taken it yet
        (``seconds`` of running time: a freeze, see :class:`_Stopwatch`, does not count)."""
        _wait_running(self._joined, seconds)
        return None if self.thread.is_alive() else self.delivered

    def _joined(self, seconds: float) -> bool:
        self.thread.join(seconds)
        return not self.thread.is_alive()


def _request_abort(run_engine: RunEngine, reason: str, wait: float = _ABORT_WAIT) -> bool:
    """Abort ``run_engine``'s run (see :class:`_EngineCall`); ``False`` when none was
    running. ``True`` also when the engine has not taken the abort within ``wait`` s."""
    if run_engine.state in ("idle", "panicked"):
        return False
    call = _EngineCall(run_engine, "abort", reason)
    delivered = call.wait(wait)
    if delivered is None:
        logger.warning(
            "the RunEngine did not take the abort within %g s (its event loop is blocked); "
            "the abort stays under way",
            wait,
        )
        return True
    return delivered


#: How a trial that never started measuring begins its error (``loop.failures``: a kind of
#: its own, which the planner does not learn as a failure of the point).
NOT_MEASURED = "not measured: "


def _unstarted(detectors: Sequence[Any]) -> str:
    """Why a detector's last (stopped) trigger never started measuring, if one says so
    (``unstarted()``: a simulated detector whose function was still busy with an earlier,
    stopped call); ``""`` otherwise."""
    for detector in detectors:
        said = getattr(detector, "unstarted", None)
        try:
            reason = said() if callable(said) else None
        except Exception:  # a detector that cannot say: the plain timeout stands
            reason = None
        if reason:
            return str(reason)
    return ""


def partial_outputs(exc: BaseException) -> dict[str, float]:
    """The outputs a failed measurement did deliver, from the first exception in ``exc``'s
    chain that carries them (``partial_outputs``: a function that returned one output of
    two, or one as text): stored with the failed trial, so nothing measured is lost. The
    planner still hears only that the trial failed."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = getattr(current, "partial_outputs", None)
        if isinstance(found, Mapping) and found:
            return {str(k): float(v) for k, v in found.items()}
        current = current.__cause__ or current.__context__
    return {}


def is_transient(exc: BaseException) -> bool:
    """Whether any exception in ``exc``'s chain marks a failure worth retrying.

    An exception says so with a ``transient`` attribute (``True``/``False``, the first one
    found wins); otherwise a ``TimeoutError`` or ``ConnectionError`` (what ophyd raises for
    an unanswered put or a lost PV) counts as transient, and anything else does not.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    fallback = False
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        flag = getattr(current, "transient", None)
        if isinstance(flag, bool):
            return flag
        if isinstance(current, TimeoutError | ConnectionError):
            fallback = True
        current = current.__cause__ or current.__context__
    return fallback


#: How a readback outside the campaign's bounds is said (``loop.failures`` reads the phrase).
OUT_OF_BOUNDS = "lies outside the campaign's bounds"


def readback_problems(
    readbacks: Mapping[str, Any],
    limits: Mapping[str, tuple[float, float]],
    tolerance: float = 0.0,
) -> list[str]:
    """What is wrong with numeric readbacks against their declared ``(lower, upper)`` limits.

    A readback may stray ``tolerance`` times the span outside the limits (a controller's
    deadband at a bound) before it counts. A zero-width range (a ``fixed`` parameter,
    limits ``[v, v]``) has no span, so there the fraction is of ``|v|``; every range also
    allows float rounding (a relative ``1e-9`` of the bounds' magnitude), so a readback that
    went through a unit conversion is not failed for its last bit. A missing, non-numeric or
    non-finite readback of a limited input counts too: a value that cannot be checked is
    never taken as within its limits. An empty list means the readbacks are acceptable.
    """
    problems: list[str] = []
    for name, (lower, upper) in limits.items():
        if name not in readbacks:
            problems.append(
                f"readback {name} is not in the run's event, so it cannot be checked against "
                f"its declared limits [{lower:g}, {upper:g}] (the input's reading must be "
                f"keyed {name!r} or by its device's name)"
            )
            continue
        raw = readbacks[name]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            problems.append(f"readback {name} = {raw!r} is not a number")
            continue
        if not math.isfinite(value):
            problems.append(f"readback {name} = {value} is not finite")
            continue
        slack = _slack(lower, upper, tolerance)
        if not (lower - slack <= value <= upper + slack):
            problems.append(
                f"readback {name} = {value:g} {OUT_OF_BOUNDS} [{lower:g}, {upper:g}] for it"
            )
    return problems


def _slack(lower: float, upper: float, tolerance: float) -> float:
    """How far a readback may lie outside ``[lower, upper]``: ``tolerance`` of the span (of
    the magnitude for a zero-width range), and never less than float rounding."""
    magnitude = max(abs(lower), abs(upper))
    span = upper - lower
    return max(
        tolerance * (span if span > 0 else magnitude), _ROUNDING_REL * magnitude, _ROUNDING_ABS
    )


@dataclass(frozen=True)
class EventReading:
    """What a trial's primary event says: see :func:`outputs_and_readbacks`."""

    outputs: dict[str, float]
    readbacks: dict[str, Any]
    problems: list[str]  # empty when the measurement is acceptable

    @property
    def transient(self) -> bool:
        """Whether every problem is a readback outside the campaign's bounds: the device
        did not get where the trial sent it (a drive that stalled short of a bound, a
        controller's overshoot), the instrument's condition and not the point's. Learned as
        the point's failure, a point the device once missed was walled off (found in
        review); a point it misses on every attempt is learned as failing after its retry,
        as any transient failure is (``loop.runner._learned_status``)."""
        return bool(self.problems) and all(OUT_OF_BOUNDS in p for p in self.problems)


def _readbacks_in(data: Mapping[str, Any], readback_keys: Mapping[str, str]) -> dict[str, Any]:
    """Parameter name -> its readback in an event's ``data``: under the parameter's name,
    else under its device's (``readback_keys``)."""
    readbacks: dict[str, Any] = {}
    for name, other in readback_keys.items():
        key = name if name in data else other
        if key in data:
            readbacks[name] = data[key]
    return readbacks


def outputs_and_readbacks(
    data: Mapping[str, Any],
    *,
    outputs: Sequence[str],
    needed: Collection[str] | None,
    readback_keys: Mapping[str, str],
    limits: Mapping[str, tuple[float, float]],
    tolerance: float = 0.0,
    stored: bool = False,
) -> EventReading:
    """Read a trial's outputs and readbacks from its primary event's ``data``, and say what
    makes the measurement unacceptable.

    The one rule for the live dispatcher and for ``resume``'s reconciliation of a trial
    whose runner died (it read readbacks under the parameter name only, so a device named
    unlike its parameter made a measured trial ``failed`` after a crash; found in review).

    * ``readback_keys`` names every parameter, with its device's name
      (:func:`readback_keys`), or with itself where that is not known (a run stored
      before the start document recorded the map). A parameter's readback is
      ``data[name]``, else ``data[readback_keys[name]]``.
    * Every output in ``needed`` (``None``: every output) must be present, a number and
      finite; a non-finite value is kept in ``outputs`` (the store keeps it) but is a
      problem. ``stored``: ``data`` came back from the store, which keeps a NaN or an
      infinity as null, so a null output is a non-finite one (NaN), not a missing number.
    * An output outside ``needed`` (a side output: no objective or outcome constraint
      reads it) may be missing or not finite: the trial's objective reading is good, and
      failing the trial for a monitoring channel's NaN lost it for the planner (every
      trial of a campaign whose side detector read NaN failed; found in review). A
      non-finite side value is kept in ``outputs``; a missing one is left out, and a
      text value (not a number) is still a problem: that is a broken instrument.
    * Readbacks are checked against ``limits`` (:func:`readback_problems`).

    The last problem about a key not found (or not a number) lists the event's data keys,
    so a user can see what the instrument did record.
    """
    readbacks = _readbacks_in(data, readback_keys)
    values: dict[str, float] = {}
    problems: list[str] = []
    for name in outputs:
        side = needed is not None and name not in needed
        if name not in data:
            if not side:
                problems.append(f"output {name!r} missing from the event")
            continue
        raw = data[name]
        if stored and raw is None:
            values[name] = math.nan
            if not side:
                problems.append(f"output {name!r} is not finite: stored as null (NaN or infinite)")
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            problems.append(f"output {name!r} is not a number: {raw!r}")
            continue
        values[name] = value
        if not side and not math.isfinite(value):
            problems.append(f"output {name!r} is not finite: {value}")
    problems.extend(readback_problems(readbacks, limits, tolerance))
    unkeyed = [
        i
        for i, p in enumerate(problems)
        if "not in the run's event" in p or "missing" in p or "not a number" in p
    ]
    if unkeyed:
        problems[unkeyed[-1]] += f" (event data keys: {sorted(data)})"
    return EventReading(values, readbacks, problems)


# The stop document ``resume`` writes for a run whose process died before closing it.
DIED_REASON = "process died; reconciled by closedloop resume"


def closing_stop_document(
    documents: Sequence[tuple[str, Mapping[str, Any]]],
    reason: str = DIED_REASON,
    *,
    now: float | None = None,
) -> dict[str, Any] | None:
    """The stop document a run cut short by its process dying never got, or ``None``.

    ``None`` when there is nothing to close: no start document (the run never began), or a
    stop already stored. Otherwise a stop with ``exit_status='abort'`` (the run was
    interrupted, as Ctrl-C would have), ``reason``, and ``num_events`` counted per stream
    from the stored events, so a catalog (Tiled's TiledWriter, a RunRouter) sees a finished
    run instead of one that is open for ever. Only the RunStop schema's keys: event-model
    refuses any other.
    """
    start: Mapping[str, Any] | None = None
    streams: dict[str, str] = {}  # descriptor uid -> stream name
    counts: dict[str, int] = {}
    for name, doc in documents:
        if name == "start":
            start = doc
        elif name == "stop":
            return None
        elif name == "descriptor":
            stream = str(doc.get("name") or STREAM_NAME)
            streams[str(doc.get("uid"))] = stream
            counts.setdefault(stream, 0)
        elif name in ("event", "event_page"):
            of = streams.get(str(doc.get("descriptor")))
            if of is not None:
                counts[of] += len(doc.get("seq_num") or []) if name == "event_page" else 1
    if start is None or not isinstance(start.get("uid"), str):
        return None
    return {
        "run_start": start["uid"],
        "time": time.time() if now is None else now,
        "uid": str(uuid.uuid4()),
        "exit_status": "abort",
        "reason": reason,
        "num_events": counts,
    }


class Dispatcher:
    """Executes trials as Bluesky runs on one instrument, one trial at a time.

    Args:
        instrument: the devices to drive. The dispatcher does not close it.
        run_engine: an engine to use instead of creating one (the caller then owns it and
            its subscriptions, context managers, metadata and ``scan_id_source``;
            ``close()`` leaves it running). An engine the dispatcher creates numbers its
            runs by trial (``scan_id`` = the trial number, see :meth:`run`) and adds
            closedloop's version to the start documents' ``versions``.
        document_sink: called with ``(name, doc)`` for every document as it is emitted,
            on the RunEngine's thread, so a store can persist a run incrementally. If it
            raises, the run continues and ``run()`` raises :class:`DocumentSinkError`
            afterwards, carrying the complete result.
        readback_limits: parameter name -> declared ``(lower, upper)``; a successful run
            whose readback lies outside them (or is missing) fails (see
            :func:`readback_problems`). These parameters are numeric: a value for one that
            is not a number is refused before any device moves.
        readback_tolerance: fraction of a span a readback may stray outside its limits.
        choices: parameter name -> its declared values (a ``choice`` parameter); a value
            not among them is refused before any device moves. Numeric limits and
            ``max_step`` do not apply to such values.
        needed_outputs: the outputs a run must read as finite numbers to succeed (a
            campaign's objectives and outcome-constrained outputs); ``None``: every
            output. Another output may read NaN or be missing (see
            :func:`outputs_and_readbacks`).
        interlock_listener: attached to the instrument's interlock gate, if it has one
            (declared instruments): told when a trial waits for interlocks and polled for an
            operator's release (see :class:`instruments._safety.PauseListener`).
        subscriptions: more callbacks ``(name, doc)`` for every run, called after the
            ``document_sink`` (a facility's live consumers: the store keeps each document
            first), called on the RunEngine's thread. A callback that raises fails the
            run, as bluesky's subscriptions do; the runner passes queued ones that return
            at once and never raise (``loop.consumers.QueuedConsumer``).

    A trial's ``timeout`` does not count waits: the interlock gate's, nor a detector's
    wait for a worker. A detector may offer ``queue_waited() -> float``: the total seconds
    its triggers have spent waiting in an executor's queue, the current wait included (a
    monotonic clock that stands still while nothing waits, like
    :meth:`instruments._safety.Gate.waited`); the simulators' detectors on a Dask executor
    do. Detectors without it (real Ophyd devices) are timed from the start of the run.

    Raises:
        InstrumentConfigError: an output name collides with a parameter name (both would
            be one event data key).
    """

    def __init__(
        self,
        instrument: Instrument,
        *,
        run_engine: RunEngine | None = None,
        document_sink: DocumentSink | None = None,
        readback_limits: Mapping[str, tuple[float, float]] | None = None,
        readback_tolerance: float = 0.0,
        interlock_listener: PauseListener | None = None,
        choices: Mapping[str, Sequence[Any]] | None = None,
        needed_outputs: Collection[str] | None = None,
        subscriptions: Sequence[DocumentSink] = (),
    ) -> None:
        clash = sorted(set(instrument.outputs).intersection(instrument.inputs))
        if clash:
            raise InstrumentConfigError(
                f"instrument {instrument.name!r}: names {clash} are both parameters and "
                "outputs; rename the outputs so each event data key is unique"
            )
        self.instrument = instrument
        self.document_sink = document_sink
        self.subscriptions = list(subscriptions)
        self.readback_limits = dict(readback_limits or {})
        self.readback_tolerance = float(readback_tolerance)
        self.choices = {name: tuple(values) for name, values in (choices or {}).items()}
        self.needed_outputs = None if needed_outputs is None else frozenset(needed_outputs)
        gate = getattr(instrument, "gate", None)
        self._gate = gate if isinstance(gate, Gate) else None
        if interlock_listener is not None and self._gate is not None:
            self._gate.listener = interlock_listener
        self._owns_engine = run_engine is None
        self._during = _AbortOnInterrupt()
        # The trial number of the run in progress: its scan_id (see _scan_id).
        self._trial_number: int | None = None
        fast_document_validation()  # the engine validates each document it composes
        if run_engine is None:
            # context_managers=[]: no SigintHandler (it needs the main thread and would
            # fight the loop's own signal handling). The engine starts its loop thread now.
            run_engine = RunEngine(
                {}, context_managers=[], during_task=self._during, scan_id_source=self._scan_id
            )
            versions = run_engine.md.setdefault("versions", {})
            versions["closedloop"] = closedloop_version()
            versions |= installed_versions(PLANNER_STACK)
            self._during.run_engine = run_engine
            self._during.abort = self._request_abort
        self.run_engine: RunEngine = run_engine
        self._lock = threading.Lock()
        self._abort_lock = threading.Lock()
        self._aborting: _EngineCall | None = None  # an abort the engine has not taken yet
        self._closed = False
        # bluesky 1.15 does not put RE.abort(reason) into the stop document; keep it here.
        self._abort_reason = ""

    def _scan_id(self, md: Mapping[str, Any]) -> int:
        """The engine's ``scan_id_source``: the trial's number in its campaign.

        Each slot has its own engine, and a resumed campaign new ones, so bluesky's count
        (the previous scan_id + 1) gave two runs of one campaign the same scan_id (1, 1, 2,
        2 with two slots; 1, 2, 1 after a resume) and a catalog search by scan_id found
        several (found in review). The trial number is unique within the campaign. A run
        started without one (``run`` called without ``trial_number``) counts on as bluesky
        does.
        """
        if self._trial_number is not None:
            return self._trial_number
        previous = md.get("scan_id", 0)
        return (previous if isinstance(previous, int) else 0) + 1

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the engine's event-loop thread (if this dispatcher created the engine).

        Idempotent. A run still in progress (e.g. from another thread) is halted first.
        """
        if self._closed:
            return
        self._closed = True
        if not self._owns_engine:
            return
        RE = self.run_engine
        if RE.state not in ("idle", "panicked"):
            # bounded: a loop blocked for good must not hold the runner's exit
            if _EngineCall(RE, "halt", None).wait(_ABORT_WAIT) is None:
                logger.warning("RunEngine did not take the halt within %g s", _ABORT_WAIT)
        loop = RE.loop
        loop.call_soon_threadsafe(loop.stop)
        thread: threading.Thread | None = getattr(RE, "_th", None)
        if thread is not None:
            thread.join(timeout=5.0)
            if thread.is_alive():
                logger.warning("RunEngine loop thread did not stop within 5 s")
                return
        if not loop.is_running():
            loop.close()
        # The engine registered its loop as bluesky's global one; do not leave a closed
        # loop there for ophyd-async helpers to find.
        if get_bluesky_event_loop() is loop:
            set_bluesky_event_loop(None)

    def abort(self, reason: str = "aborted by request", *, wait: float = _ABORT_WAIT) -> bool:
        """Abort the running trial, if any; safe from another thread.

        The run is cleaned up and closed with ``exit_status='abort'``; the ``run()`` in
        progress returns a result with that status. Returns whether a run was interrupted
        (or an abort is under way: the engine had not taken it within ``wait`` s, because
        its event loop is blocked; it lands when the loop frees, and asking again does not
        repeat it). Never waits longer than ``wait``.
        """
        self._abort_reason = reason
        return self._request_abort(reason, wait)

    def _request_abort(self, reason: str, wait: float = _ABORT_WAIT) -> bool:
        RE = self.run_engine
        with self._abort_lock:
            call = self._aborting
            if call is None or not call.thread.is_alive():
                if RE.state in ("idle", "panicked"):
                    return False
                call = self._aborting = _EngineCall(RE, "abort", reason)
        delivered = call.wait(wait)
        if delivered is None:
            if not call.warned:
                call.warned = True
                logger.warning(
                    "%s: the RunEngine did not take the abort within %g s (its event loop "
                    "is blocked); the abort stays under way",
                    self.instrument.name,
                    wait,
                )
            return True
        return delivered

    # ------------------------------------------------------------------ trials
    def run(
        self,
        trial_id: int,
        campaign: str,
        parameters: Mapping[str, Any],
        md: Mapping[str, Any] | None = None,
        *,
        document_sink: DocumentSink | None = None,
        timeout: float | None = None,
        trial_number: int | None = None,
    ) -> TrialResult:
        """Execute one trial as one Bluesky run and report it.

        Device faults (failed statuses, limit errors, exceptions in ``set``/``trigger``/
        ``read``, missing or non-numeric outputs) and aborts come back as a result with
        ``exit_status`` ``fail``/``abort`` and an ``error`` text; they are not raised.

        Args:
            trial_id: the store's id, recorded in the start document.
            campaign: campaign name, recorded in the start document.
            parameters: commanded values, one per instrument input.
            md: extra start-document metadata.
            document_sink: this trial's sink, used instead of the dispatcher's (e.g. one
                that knows the trial id); same contract as the constructor's.
            timeout: seconds the run may take (from when the RunEngine is called, not
                counting time spent waiting for the instrument's interlocks: a trial held
                by them waits, the campaign paused, for as long as they do not hold; nor
                the time a detector's measurement waits for a free worker, see the class
                docstring; nor the time the process was frozen, stopped by Ctrl-Z until
                ``fg``: see :class:`_Stopwatch`); a run
                still going then is aborted and comes back ``fail``, "timed out after N s",
                ``timed_out`` and ``transient``. ``None``: no limit.
            trial_number: the campaign's number of the trial, recorded in the start
                document as ``trial_number`` and, on an engine this dispatcher created, as
                its ``scan_id`` (a caller's own engine keeps its ``scan_id_source``).

        Returns:
            The trial's result, with every document of its run.

        Raises:
            TrialArgumentError: parameters do not match the inputs (a caller bug).
            DispatcherBusy: another trial is running on this dispatcher.
            DispatcherClosed: the dispatcher was closed.
            DocumentSinkError: the sink raised; the result is attached.
            TrialInterrupted: Ctrl-C arrived; the run was aborted and closed first, and the
                result (``exit_status='abort'``) is attached. A ``KeyboardInterrupt``.
        """
        if self._closed:
            raise DispatcherClosed("this dispatcher is closed")
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not self._lock.acquire(blocking=False):
            raise DispatcherBusy(f"trial {trial_id}: a trial is already running on this dispatcher")
        try:
            sink = document_sink if document_sink is not None else self.document_sink
            self._trial_number = trial_number
            try:
                return self._run_locked(
                    trial_id, campaign, parameters, md, sink, timeout, trial_number
                )
            finally:
                self._trial_number = None
        finally:
            self._lock.release()

    def _run_locked(
        self,
        trial_id: int,
        campaign: str,
        parameters: Mapping[str, Any],
        md: Mapping[str, Any] | None,
        sink: DocumentSink | None,
        timeout: float | None = None,
        trial_number: int | None = None,
    ) -> TrialResult:
        keys = readback_keys(self.instrument.inputs)  # what trial_plan records

        def verdict(data: Mapping[str, Any]) -> None:
            reading = self._reading(data, keys)
            if reading.problems:
                raise MeasurementRejected("; ".join(reading.problems), transient=reading.transient)

        # trial_plan checks the arguments (TrialArgumentError) before any Msg exists.
        plan = trial_plan(
            self.instrument,
            parameters,
            campaign=campaign,
            trial_id=trial_id,
            trial_number=trial_number,
            md=md,
            check=verdict,
        )
        documents: list[tuple[str, dict[str, Any]]] = []
        sink_errors: list[BaseException] = []

        def collect(name: str, document: Mapping[str, object]) -> None:
            doc = cast(dict[str, Any], document)
            if name == "stop" and doc.get("exit_status") == "abort" and not doc.get("reason"):
                # bluesky leaves an abort's reason empty: say why (a timeout, Ctrl-C), as a
                # failed run's stop says its error, for a catalog reading the stored runs
                why = "KeyboardInterrupt" if self._during.interrupted else self._abort_reason
                if why:
                    doc = {**doc, "reason": why}
            documents.append((name, doc))
            if sink is None or sink_errors:
                return
            try:
                sink(name, doc)
            except Exception as exc:  # reported after the run; must not disturb it
                # one line: the runner reports the consequence (a store that went away ends
                # the command with its own message); the traceback is for -v
                logger.warning("document sink failed on a %s document: %s", name, exc)
                logger.debug("document sink failure", exc_info=True)
                sink_errors.append(exc)

        self._during.interrupted = False
        self._abort_reason = ""
        started = time.time()
        t0 = time.perf_counter()
        exit_status: ExitStatus = "success"
        error: str | None = None
        try:
            self._check_limits(parameters)
        except Exception as exc:
            plan.close()
            # A refusal, or a check that could not be made: a readback too slow to answer, a
            # PV lost (a timeout, a lost connection), which may well pass next time. That
            # used to read "limit check failed" too, and was never retried.
            unchecked = not isinstance(exc, LimitError) and is_transient(exc)
            if unchecked:
                error = (
                    "the setpoints could not be checked against the limits, no device moved: "
                    f"{describe_exception(exc)}"
                )
            else:
                error = f"limit check failed, no device moved: {describe_exception(exc)}"
            logger.info("trial %s rejected before dispatch: %s", trial_id, error)
            return TrialResult(
                run_uid=None,
                exit_status="fail",
                error=error,
                started=started,
                finished=time.time(),
                duration=time.perf_counter() - t0,
                transient=unchecked,
            )
        marks: list[tuple[float, str]] = []
        previous_hook = self.run_engine.msg_hook

        def mark(msg: Msg) -> None:
            marks.append((time.perf_counter(), msg.command))
            if previous_hook is not None:
                previous_hook(msg)

        self.run_engine.msg_hook = mark  # type: ignore[assignment]  # annotated as None
        timed_out = threading.Event()
        timer = self._arm_timeout(trial_id, timeout, timed_out)
        transient = False
        rejected = False
        salvaged: dict[str, float] = {}
        try:
            subscribers: list[Any] = [collect, *self.subscriptions]  # the store's sink first
            self.run_engine(plan, subscribers)
        except MeasurementRejected as exc:
            rejected = True  # the plan's verdict: _result reads it again, outputs kept
            transient = exc.transient
        except RunEngineInterrupted:
            if any(n == "stop" and d.get("exit_status") == "success" for n, d in documents):
                # The abort landed after the run had closed: it finished, as its stop
                # document says, and is a measurement like any other.
                logger.info("trial %s: aborted after its run had ended successfully", trial_id)
            else:
                exit_status = "abort"
                reason = "KeyboardInterrupt" if self._during.interrupted else self._abort_reason
                error = f"run aborted: {reason or 'interrupted'}"
        except Exception as exc:
            exit_status = "fail"
            error = describe_exception(exc)
            transient = is_transient(exc)
            salvaged = partial_outputs(exc)
        finally:
            if timer is not None:
                timer.cancel()
            self.run_engine.msg_hook = previous_hook
        end = time.perf_counter()
        if exit_status == "abort":
            self._stop_detectors()
        if timed_out.is_set() and not self._during.interrupted and exit_status != "success":
            # Ours, not the user's: a timed-out run is a failed trial, worth a retry.
            exit_status, transient = "fail", True
            error = f"timed out after {timeout:g} s; the run was aborted through the RunEngine"
            unstarted = _unstarted(self.instrument.detectors)
            if unstarted:  # it never measured: not its point's timeout (loop.failures)
                error = f"{NOT_MEASURED}{unstarted}; {error}"
        result = self._result(
            documents, keys, exit_status, error, started, end - t0, rejected=rejected
        )
        if result.exit_status == "fail" and not result.outputs:
            result.outputs = {k: v for k, v in salvaged.items() if k in self.instrument.outputs}
        if result.exit_status == "fail" and not result.readbacks and not timed_out.is_set():
            result.readbacks = self._readbacks_after_failure(keys)
        result.instrument_busy = _busy_time(marks, end)
        result.timed_out = timed_out.is_set() and result.exit_status != "success"
        result.transient = transient and result.exit_status == "fail"
        if result.exit_status != "success":
            logger.info("trial %s %s: %s", trial_id, result.exit_status, result.error)
        if self._during.interrupted:
            raise TrialInterrupted(trial_id=trial_id, result=result)
        if sink_errors:
            raise DocumentSinkError(
                f"trial {trial_id}: document sink raised "
                f"{describe_exception(sink_errors[0])}; the run itself completed",
                trial_id=trial_id,
                result=result,
            ) from sink_errors[0]
        return result

    def _arm_timeout(
        self, trial_id: int, timeout: float | None, flag: threading.Event
    ) -> _Watchdog | None:
        """A watchdog that aborts the run after ``timeout`` s and sets ``flag`` if it did.

        Time spent waiting at the instrument's interlock gate does not count: the README
        promises that a trial held by an open door waits with the campaign paused, so the
        door must not use up the time the instrument has to do its work. Nor does the time
        a detector's measurement waits in an executor's queue for a free worker (several
        slots sharing fewer Dask workers, an HPC queue still pending): it has not started,
        and would otherwise time out, count as a failure and retire its slot unmeasured.
        """
        if timeout is None:
            return None

        def expire() -> None:
            reason = f"timed out after {timeout:g} s"
            # Set first: the run may end the instant the abort lands.
            flag.set()
            self._abort_reason = reason
            if not self._request_abort(reason):
                flag.clear()  # the run had already ended: nothing timed out
                return
            logger.info("trial %s %s: aborting its run", trial_id, reason)

        return _Watchdog(timeout, expire, self.waited_clock())

    def waited_clock(self) -> Callable[[], float]:
        """The seconds this trial spends waiting rather than working, from now: the
        interlock gate's waits, plus the longest of the detectors' executor-queue waits.

        A detector's ``queue_waited()`` (see the class docstring) is its own wait; the
        detectors of one trial are triggered together, so their waits overlap and the
        longest one is the trial's (their sum would count one wait several times over).
        A clock that fails is read as standing still: the timeout then counts that wait,
        as it would without the clock, rather than losing its watchdog.
        """
        gate = self._gate.waited if self._gate is not None else _never_waited
        queues: list[Callable[[], float]] = []
        for detector in self.instrument.detectors:
            clock = getattr(detector, "queue_waited", None)
            if callable(clock):
                queues.append(clock)
        if not queues:
            return gate
        last = [_read_clock(clock, 0.0) for clock in queues]
        bases = list(last)

        def waited() -> float:
            for i, clock in enumerate(queues):
                last[i] = max(last[i], _read_clock(clock, last[i]))
            return gate() + max(now - base for now, base in zip(last, bases, strict=True))

        return waited

    def _stop_detectors(self) -> None:
        """``stop()`` every detector after an abort, so none is left "busy".

        bluesky calls ``stop()`` only on devices it ``set``; a detector whose trigger hung
        would otherwise refuse the next trial's trigger. Errors are logged, not raised:
        the trial's outcome is already decided.
        """
        for detector in self.instrument.detectors:
            stop = getattr(detector, "stop", None)
            if not callable(stop):
                continue
            try:
                outcome = stop(success=False)
                if inspect.isawaitable(outcome):
                    future = asyncio.run_coroutine_threadsafe(_await(outcome), self.run_engine.loop)
                    _result_within(future, _STOP_TIMEOUT)
            except Exception as exc:
                logger.warning("stopping detector %r after an abort failed: %s", detector, exc)

    def _check_limits(self, parameters: Mapping[str, Any]) -> None:
        """Check every commanded value against its device before any device moves.

        ``bps.mv`` sets devices one after another, so a limit error on the second input
        would come after the first had started moving; checking all first keeps a rejected
        trial side-effect free. Async ``check_value`` (ophyd-async) runs on the engine loop.
        A choice must be one of its declared values, and a numeric parameter's value a
        number: a device's own ``check_value`` lets a non-number through when it declares
        no numeric limits (that is how it takes choices), so the campaign's kinds decide.

        Raises:
            Exception: the first refusal (or failure to check), in the inputs' order.
        """
        for _, exc in self._each_check(parameters, every=False):
            raise exc

    def refusals(self, parameters: Mapping[str, Any]) -> dict[str, str]:
        """Every value the pre-check of :meth:`run` refuses: parameter name -> why (a trial
        fails at the first; a preview, ``plan --dry-run --at``, says each)."""
        return {name: str(exc) or type(exc).__name__ for name, exc in self._each_check(parameters)}

    def _each_check(
        self, parameters: Mapping[str, Any], *, every: bool = True
    ) -> Iterator[tuple[str, Exception]]:
        """``(name, why)`` for each parameter whose value is refused (or cannot be checked);
        without ``every``, only until the first."""
        refused: set[str] = set()
        for name, value in parameters.items():
            try:
                allowed = self.choices.get(name)
                if allowed is not None:
                    check_setpoint(
                        name, value, limits=None, max_step=None, current=None, choices=allowed
                    )
                elif name in self.readback_limits and (
                    isinstance(value, bool) or not isinstance(value, numbers.Real)
                ):
                    raise SetpointRefused(f"{name}: setpoint {value!r} is not a number")
            except Exception as exc:
                refused.add(name)
                yield name, exc
                if not every:
                    return
        for name, device in self.instrument.inputs.items():
            if not isinstance(device, Checkable) or name in refused:
                continue
            try:
                outcome = device.check_value(parameters[name])
                if inspect.isawaitable(outcome):
                    future = asyncio.run_coroutine_threadsafe(_await(outcome), self.run_engine.loop)
                    _result_within(future, _LIMIT_CHECK_TIMEOUT)
            except Exception as exc:
                yield name, exc
                if not every:
                    return

    def _result(
        self,
        documents: list[tuple[str, dict[str, Any]]],
        keys: Mapping[str, str],
        exit_status: ExitStatus,
        error: str | None,
        started: float,
        duration: float,
        *,
        rejected: bool = False,
    ) -> TrialResult:
        """The trial's result from its documents. ``rejected``: the plan failed the run on
        its reading (``MeasurementRejected``), whose verdict is reached here again from the
        event, the readings kept, rather than taken from the stop document's reason."""
        run_uid: str | None = None
        primary: set[str] = set()
        data: dict[str, Any] = {}
        for name, doc in documents:
            if name == "start":
                run_uid = doc["uid"]
            elif name == "descriptor" and doc.get("name") == STREAM_NAME:
                primary.add(doc["uid"])
            elif name == "event" and doc.get("descriptor") in primary:
                data.update(doc["data"])
            elif name == "stop" and exit_status == "success" and not rejected:
                # Belt and braces: trust the stop document if the engine did not raise.
                if doc.get("exit_status") in ("fail", "abort"):
                    exit_status = doc["exit_status"]
                    error = doc.get("reason") or f"run ended with {exit_status}"

        reading = self._reading(data, keys)
        readbacks = reading.readbacks
        outputs: dict[str, float] = {}
        if exit_status == "success":
            outputs = reading.outputs
            if reading.problems:
                exit_status = "fail"
                error = "; ".join(reading.problems)
        return TrialResult(
            run_uid=run_uid,
            exit_status=exit_status,
            outputs=outputs,
            readbacks=readbacks,
            error=error,
            documents=documents,
            started=started,
            finished=started + duration,
            duration=duration,
        )

    def _readbacks_after_failure(self, keys: Mapping[str, str]) -> dict[str, Any]:
        """Where the inputs are now, for a trial whose run failed before its event (a move
        that failed or stalled, a detector that raised): stored as its readbacks, for the
        technician reading a stalled stage's trial; the planner still learns the failure at
        the commanded point (``loop.runner.Runner._observation``).

        Read after the run has closed, off the RunEngine's loop, so nothing waits on it: the
        RunEngine has already stopped what it moved, and an abort or a timeout cannot arrive
        while a slow device answers (made inside the plan, the read held the loop for up to
        an input's timeout, and an abort then turned a failed trial into an aborted one:
        found in review, session 38). Best effort and bounded: only a device that says its
        read may be left unfinished without harm (``abandonable_read``: a PV's or a
        motor's, ``instruments._epics.InputDevice``; a simulator's) is read, unless it
        reports itself disconnected, and what has not answered within
        ``_FAILURE_READ_SECONDS`` in all is left out (its read goes on, unwaited for, on a
        daemon thread). A plugin input's unfinished read locked a faulted controller; a
        Python API instrument's own device may hold a driver lock the next trial's ``set``
        then waits on, on the RunEngine's loop (both found in review). Not after a timeout:
        a device that hung may hang again.
        """
        inputs = [
            device
            for device in self.instrument.inputs.values()
            if isinstance(device, Readable)
            and getattr(device, "abandonable_read", False) is True
            and getattr(device, "connected", True) is not False
        ]
        if not inputs:
            return {}
        data: dict[str, Any] = {}

        def read_all() -> None:
            for device in inputs:
                try:
                    reading = device.read()
                    if inspect.isawaitable(reading):  # an ophyd-async device: its loop's
                        getattr(reading, "close", lambda: None)()
                        continue
                    data.update({k: v["value"] for k, v in dict(reading).items()})
                except Exception as exc:
                    logger.info("reading %s after a failed run: %s", device.name, exc)

        thread = threading.Thread(target=read_all, name="read-after-failure", daemon=True)
        thread.start()
        thread.join(_FAILURE_READ_SECONDS)
        return _readbacks_in(dict(data), keys)

    def _reading(self, data: Mapping[str, Any], keys: Mapping[str, str]) -> EventReading:
        """The event's outputs and readbacks, and what makes them unacceptable: one rule for
        the plan's verdict and the result (:func:`outputs_and_readbacks`)."""
        return outputs_and_readbacks(
            data,
            outputs=self.instrument.outputs,
            needed=self.needed_outputs,
            readback_keys=keys,
            limits=self.readback_limits,
            tolerance=self.readback_tolerance,
        )


class _Stopwatch:
    """Seconds of running time since it was started: not the seconds ``waited`` adds
    meanwhile (a gate's interlock waits, a detector's queue wait), nor a freeze.

    ``time.monotonic()`` runs on while the process is stopped (SIGSTOP, Ctrl-Z until
    ``fg``), so a trial frozen 2 s into a 5 s measurement for 25 s was timed out by its
    20 s ``timeout`` the moment it ran again, counted as the instrument's failure (found in
    review). The instrument did nothing wrong: the time the process could not run is not
    the instrument's. The stopwatch is read by a thread that sleeps at most
    ``_WATCH_SLICE`` s at a time (:func:`_wait_running`); a lap that took more than
    ``_FROZEN_AFTER`` s longer than its sleep asked for means the process was not scheduled
    at all, and that lap counts as the sleep asked for. Linux's monotonic clock stands
    still in system suspend (a laptop asleep), so that needs nothing. The cost: a device
    call that holds the GIL for seconds on end keeps the watching thread from running too,
    and that stretch is taken for a freeze; a call that never lets go of it could not be
    timed out anyway (the abort needs the interpreter).
    """

    def __init__(self, waited: Callable[[], float] | None = None) -> None:
        self._waited = waited if waited is not None else _never_waited
        self._last = time.monotonic()
        self._waited_last = self._waited()
        self.running = 0.0  # seconds counted so far
        self.frozen = 0.0  # seconds left out as a freeze

    def lap(self, asked: float) -> float:
        """Count the time since the last lap, which slept ``asked`` s; the running total."""
        now, waited = time.monotonic(), self._waited()
        step, wait = now - self._last, waited - self._waited_last
        self._last, self._waited_last = now, waited
        if step > asked + _FROZEN_AFTER:
            self.frozen += step - asked
            # A wait under way through the freeze (a door open meanwhile) grew with it.
            self.running += max(0.0, asked - wait)
        else:
            self.running += step - wait
        return self.running


def _wait_running(
    ready: Callable[[float], bool], seconds: float, watch: _Stopwatch | None = None
) -> bool:
    """Whether ``ready(s)`` (a wait of at most ``s`` s: ``Event.wait``, a join) said yes
    within ``seconds`` of running time as ``watch`` counts it (see :class:`_Stopwatch`).

    ``ready`` is asked in slices of at most ``_WATCH_SLICE`` s, each of which must return
    false only once its ``s`` s have passed.
    """
    watch = watch if watch is not None else _Stopwatch()
    asked = 0.0
    while True:
        left = seconds - watch.lap(asked)
        if left <= 0:
            return False
        asked = min(left, _WATCH_SLICE)
        if ready(asked):
            return True


def _result_within(future: concurrent.futures.Future[Any], seconds: float) -> Any:
    """``future.result(timeout=seconds)``, ``seconds`` being running time: a process frozen
    while an async device call ran (Ctrl-Z) does not fail that call when it runs again."""
    if not _wait_running(lambda s: bool(concurrent.futures.wait([future], s).done), seconds):
        raise TimeoutError(f"no answer within {seconds:g} s")
    return future.result()


class _Watchdog:
    """Calls ``expire`` once ``timeout`` s of running time have passed, not counting the
    seconds ``waited`` adds meanwhile (a gate's interlock waits) nor a freeze of the process
    (see :class:`_Stopwatch`); ``cancel()`` before then prevents it.

    A plain ``threading.Timer`` cannot stop its clock; this one re-counts the time left
    whenever it wakes, at least every ``_WATCH_SLICE`` s.
    """

    def __init__(
        self, timeout: float, expire: Callable[[], None], waited: Callable[[], float]
    ) -> None:
        self._timeout = timeout
        self._expire = expire
        self.watch = _Stopwatch(waited)
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="trial-timeout", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        if _wait_running(self._cancelled.wait, self._timeout, self.watch):
            return
        if not self._cancelled.is_set():
            self._expire()

    def cancel(self) -> None:
        """Stop the watchdog (like ``Timer.cancel``, an ``expire`` already under way still
        runs: the dispatcher's sees the run ended and takes back its flag)."""
        self._cancelled.set()


def _read_clock(clock: Callable[[], float], otherwise: float) -> float:
    """A detector's ``queue_waited()``, or ``otherwise`` if it fails or is not a number."""
    try:
        value = float(clock())
    except Exception as exc:
        logger.debug("a detector's queue_waited() failed: %s", exc)
        return otherwise
    return value if math.isfinite(value) else otherwise


def _never_waited() -> float:
    """The wait clock of an instrument without an interlock gate."""
    return 0.0


# Messages during which the RunEngine is inside device code or waiting on its statuses.
_DEVICE_COMMANDS = frozenset({"set", "trigger", "read", "wait", "stage", "unstage"})


def _busy_time(marks: list[tuple[float, str]], end: float) -> float:
    """Seconds between a device message being processed and the next message.

    The RunEngine calls ``msg_hook`` just before processing each message, so the gap to the
    next call is that message's processing time (plus a negligible scheduling tick).
    No marks (the run failed before its first message): no time in device code.
    """
    if not marks:
        return 0.0
    busy = 0.0
    for (t, command), nxt in zip(marks, [*marks[1:], (end, "")], strict=True):
        if command in _DEVICE_COMMANDS:
            busy += nxt[0] - t
    return busy


async def _await(awaitable: Any) -> Any:
    return await awaitable
