"""The machinery that keeps several instrument slots busy (see ``Runner._drive``).

Threads, and who does what:

* **The runner's thread (the coordinator)** owns the loop: it persists each trial before it
  is dispatched, hands it to a free slot, records each outcome, and decides when to stop.
  It never waits on a measurement or on the planner: it waits on one queue of events
  (a slot finished, the planner proposed) with a short timeout, so a stop request, the
  lease and ``max_duration`` are looked at several times a second.
* **One thread per trial in flight** (``Slot.start``) calls ``Dispatcher.run``; each slot
  has its own devices and its own ``Dispatcher``/``RunEngine`` (ADR 0003), so runs on
  different slots share nothing but the store, whose writes are serialised
  (``loop.store._serialised``).
* **One planner thread** (:class:`PlannerWorker`) ingests outcomes and suggests, so the
  planner is only ever touched from that thread and a slow model fit never delays a slot
  that frees. With K > 1 slots the coordinator keeps proposals ready ahead, as many as the
  campaign's pace needs and at most K (:meth:`Scheduler.depth`), so a slot that frees starts
  its next trial at once; with one slot nothing is proposed before the previous outcome is
  learned (plain sequential BO).

Everything a slot or the planner produces comes back as an event on ``Scheduler.events``;
only the coordinator reads them. A stop request only puts a :class:`Wake` there
(:meth:`Scheduler.wake`): the coordinator itself aborts what is in flight, never a signal
handler, which runs on the coordinator's thread and may have interrupted it inside a store
write whose lock every RunEngine's document sink is waiting for.

A slot's outcome is also kept on the slot (:attr:`Slot.done`) until the coordinator has
recorded it, so an exception that reaches the coordinator between taking the event and
recording it (a ``KeyboardInterrupt``, which a signal may raise at any bytecode) loses
nothing: the stop that follows records it from the slot (:meth:`Scheduler.unrecorded`).
Taken off the queue and dropped, it had left the trial ``running`` and the stop waiting 60 s
for a slot that had long finished (found in review).

A slot that keeps failing while the others work is *retired* (:meth:`Scheduler.record`): no
more trials, its devices closed, so one broken instrument does not use up the campaign's
``max_failures``. A slot is retired only while another one is not failing, so the last slot
still working goes on as a one-slot campaign would, ``max_failures`` deciding.

Every answer of the planner is checked on the planner thread before the coordinator sees it
(:func:`check_proposals`): exactly the points asked for, one known label each, every point a
member of the campaign's space (names, types, bounds, choices, the parameter
``constraints:``, a candidate table). A planner is whatever ``make_planner`` builds, a plugin
included, and what it returns is persisted and sent to the hardware; the dispatcher checks
bounds and choices only, so a point that broke a constraint was measured (found in review).
A breach is a :class:`PlannerError`: nothing of that answer is stored or run.

A plugin's ``ingest`` or ``suggest`` that raises is the plugin's error too, not closedloop's:
every call into a planner goes through :func:`call_planner`, which makes it a
:class:`PluginRaised` (a ``PlannerError``), so the runner measures what is in flight and stops
the campaign resumable, and ``suggest``/``plan`` refuse with the same words. It had aborted the
trials in flight as "the runner failed" and asked to report closedloop's bug (found in review).
"""

from __future__ import annotations

import logging
import math
import numbers
import queue
import re
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from instruments import Dispatcher, Instrument, TrialResult, close_instrument
from loop.errors import ClosedLoopError
from loop.failures import is_point_failure
from planners import FloatParameter, IntParameter, InvalidPoint, Observation, Planner, Point, Space
from planners._protocol import DESIGN_KINDS, ENGINE_KINDS

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often the coordinator looks at stop requests, lease and duration
# A slot is retired when its last RETIRE_AFTER trials failed in a row (instrument failures,
# not the point's: see loop.failures.is_point_failure) while another slot in use did not fail.
RETIRE_AFTER = 3

# The pace estimate of :meth:`Scheduler.depth`: averages over the last PACE_WINDOW trials and
# proposals; no queue while a suggest takes under IDLE_SHARE of a trial; otherwise
# DEPTH_PER_LOAD proposals ready per unit of planner load (see depth() for the figures).
PACE_WINDOW = 10
IDLE_SHARE = 0.01
DEPTH_PER_LOAD = 6.0

_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")
# A float a planner returns this share of its range outside a bound, or an int this close to
# an integer, is floating-point rounding (``0.1 + 0.2`` for an upper bound of 0.3), put on
# the bound or the integer before the check: the planners' own tolerance (a candidate row
# matches within 1e-9 in the encoded space; a constraint holds within a 1e-9 relative slack,
# ``planners._constraints``). Anything farther out is refused.
_ROUNDING = 1e-9
_SHOWN = 200  # characters of a planner's value shown in an error


class PlannerError(ClosedLoopError, RuntimeError):
    """A planner broke the ``Planner`` protocol: a proposal outside the campaign's space (or
    its constraints), another number of points than asked for, labels that do not match.

    A defect of the planner, not of the campaign, the instrument or closedloop: nothing of the
    answer was stored or run; the campaign stops resumable, its trials kept.

    Attributes:
        planner: the planner's class, ``module:Class`` (:func:`planner_name`).
        problem: what it did.
        fix: what to do about it.
    """

    def __init__(self, planner: str, problem: str, *, fix: str = "") -> None:
        self.planner = planner
        self.problem = problem
        self.fix = fix or self.default_fix()
        super().__init__(f"{self.headline()}\n  fix: {self.fix}")

    def headline(self) -> str:
        """The message's first line: what the planner did."""
        return (
            f"planner {self.planner} broke the planner protocol: {self.problem}; nothing of "
            "its answer was stored or run"
        )

    def default_fix(self) -> str:
        """The fix when the caller gives none."""
        return (
            "fix the planner (a suggest(n, pending) returns exactly n points of the campaign's "
            "space, and sets last_kinds to one label per point) and run the command again: "
            "the campaign's stored trials are kept"
        )


class PluginRaised(PlannerError):
    """A planner plugin's ``ingest`` or ``suggest`` raised: an error in the plugin's code.

    Made by :func:`call_planner` from any exception but a ``ClosedLoopError``; the plugin's
    exception is the ``__cause__`` (logged with its traceback at ``-v``). Not closedloop's
    bug, so no "please report it": the plugin's author fixes it and resumes.
    """

    def headline(self) -> str:
        return (
            f"planner plugin {self.planner}: {self.problem} (an error in the plugin's code, "
            "not in closedloop or the campaign)"
        )

    def default_fix(self) -> str:
        return "fix the plugin (`closedloop -v ...` shows its traceback) and run the command again"


def is_builtin(planner: object) -> bool:
    """Whether ``planner`` is one of closedloop's own (its class from the ``planners``
    package), whose exception is closedloop's bug to report, not a plugin's error."""
    module = type(planner).__module__
    return module == "planners" or module.startswith("planners.")


def call_planner(planner: Planner, method: str, *args: Any, **kwargs: Any) -> Any:
    """``planner.<method>(*args, **kwargs)``; an exception a plugin raises becomes a
    :class:`PluginRaised` naming it (its exception kept as ``__cause__``).

    The one way the engine calls a planner's ``ingest`` or ``suggest``, so a plugin's error
    is worded and handled alike by ``run``, ``resume``, ``suggest`` and ``plan``. Left as
    they are: a ``ClosedLoopError`` (already worded), anything but an ``Exception`` (Ctrl-C),
    the constraints' ``InfeasibleSpaceError`` (the campaign's constraints leave no point: the
    file's fault, exit 2, whoever samples the space), and every exception of a built-in
    planner (closedloop's bug: the command line asks to report it).
    """
    try:
        return getattr(planner, method)(*args, **kwargs)
    except ClosedLoopError:
        raise
    except Exception as exc:
        from planners import InfeasibleSpaceError

        if is_builtin(planner) or isinstance(exc, InfeasibleSpaceError):
            raise
        name = planner_name(planner)
        logger.debug("planner plugin %s: %s raised", name, method, exc_info=exc)
        said = _shown_text(exc)
        raised = f"{method} raised {type(exc).__name__}" + (f": {said}" if said else "")
        raise PluginRaised(name, raised) from exc


def planner_name(planner: object) -> str:
    """A planner's class as a ``plugin:`` names one: ``module:Class``, or ``path.py:Class`` for
    a class from a file (``instruments.import_user_module`` registers the file's module under
    a private ``_closedloop_user_...`` name, which would mean nothing to its author)."""
    kind = type(planner)
    module = kind.__module__
    if module.startswith("_closedloop_user_"):
        module = getattr(sys.modules.get(module), "__file__", None) or module
    return f"{module}:{kind.__qualname__}"


def _shown(value: object) -> str:
    return _shown_text(repr(value))


def _shown_text(value: object) -> str:
    """``str(value)`` on one line, at most ``_SHOWN`` characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def check_proposals(
    planner: Planner,
    n: int,
    points: object,
    space: Space | None,
    pending: Sequence[Point] = (),
) -> list[tuple[Point, str]]:
    """``(point, kind)`` for each point of ``planner.suggest(n)``'s answer ``points``, each
    point as the space has it (``Space.validate``: Python types, a choice's own value, a
    candidate table's row), or :class:`PlannerError`.

    The planner's ``last_kinds`` must label each point: a string of letters, digits and
    ``_.-`` (it is stored, and shown in tables), not one of :data:`ENGINE_KINDS`. With a
    ``space``, every point must be a member of it (names, types, bounds, choices, the
    parameter constraints, a candidate table), within floating-point rounding (``_ROUNDING``).

    One check for every planner, built in or a plugin, where its answer enters the engine:
    the dispatcher refuses only what the instrument's limits and choices refuse, and a
    constraint is known to the planners alone. Returning fewer points has no meaning the
    loop could act on: the built-in planners always return ``n`` (a finite space whose
    every point is measured gets repeats, with a warning), or raise.
    """
    name = planner_name(planner)
    if not isinstance(points, Sequence) or isinstance(points, str | bytes):
        raise PlannerError(
            name,
            f"suggest(n={n}) returned {type(points).__name__} {_shown(points)}, not a list of "
            "points",
        )
    if len(points) != n:
        raise PlannerError(
            name,
            f"suggest(n={n}) returned {len(points)} point(s), not {n}; a planner that has no "
            "new point left proposes repeats (the built-in planners do once a finite space is "
            "exhausted) or raises an error saying why",
        )
    kinds: Any = getattr(planner, "last_kinds", None)
    if not isinstance(kinds, Sequence) or isinstance(kinds, str | bytes) or len(kinds) != n:
        raise PlannerError(
            name, f"after suggest(n={n}) its last_kinds is {_shown(kinds)}, not {n} label(s)"
        )
    for kind in kinds:
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise PlannerError(
                name,
                f"its last_kinds labels a point {_shown(kind)}; a label is a word of letters, "
                "digits and _ . - (at most 40), e.g. 'model'",
            )
        if kind in ENGINE_KINDS:
            raise PlannerError(
                name,
                f"its last_kinds labels a point {kind!r}, which the engine keeps for its own "
                f"trials ({', '.join(sorted(ENGINE_KINDS))}); use e.g. 'model'",
            )
    checked: list[tuple[Point, str]] = []
    for i, (point, kind) in enumerate(zip(points, kinds, strict=True)):
        if not isinstance(point, Mapping):
            raise PlannerError(
                name, f"suggest(n={n}) returned {_shown(point)} as point {i + 1}, not a mapping"
            )
        if space is not None:
            try:  # names, types, bounds, choices: the message names the value
                box = space.coerce(_unrounded(space, point))
            except (InvalidPoint, TypeError, ValueError) as exc:
                raise PlannerError(
                    name, f"suggest(n={n}) proposed {_shown(dict(point))}: {exc}"
                ) from None
            try:  # constraints, a candidate table: the message shows the point
                point = space.validate(box)
            except (InvalidPoint, TypeError, ValueError) as exc:
                raise PlannerError(
                    name, f"suggest(n={n}) proposed a point outside the campaign's space: {exc}"
                ) from None
        checked.append((dict(point), kind))
    if space is not None:
        _say_repeats(name, space, [p for p, _ in checked], pending)
    return checked


_REPEATS_SAID: set[str] = set()  # planners whose repeated in-flight points were named


def _say_repeats(name: str, space: Space, points: list[Point], pending: Sequence[Point]) -> None:
    """Warn, once per planner, when it proposes a point already being measured (pending or
    in the same batch) in a space with a float parameter, where no such repeat is ever
    needed: two slots then measured identical parameters at once, without a word (found in
    review, a plugin). Not refused: a planner may want replicates; a finite space, once
    exhausted, repeats on purpose (the built-in planners say so themselves)."""
    if name in _REPEATS_SAID or math.isfinite(space.cardinality()):
        return
    from planners._baselines import near_duplicate

    for i, point in enumerate(points):
        others = [*pending, *points[:i]]
        if others and near_duplicate(space, point, others):
            _REPEATS_SAID.add(name)
            logger.warning(
                "planner %s proposed %s, a point already being measured (pending, or earlier "
                "in its batch): two trials will measure the same parameters. A planner should "
                "keep its proposals apart from suggest()'s pending points",
                name,
                point,
            )
            return


def _unrounded(space: Space, point: Mapping[str, Any]) -> dict[str, Any]:
    """``point`` with floats within ``_ROUNDING`` of their range outside a bound put on it,
    and ints within ``_ROUNDING`` of an integer made that integer (see ``_ROUNDING``)."""
    out = dict(point)
    for p in space.parameters:
        value = out.get(p.name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        v = float(value)
        if not math.isfinite(v):
            continue
        if isinstance(p, IntParameter):
            whole = round(v)
            if v != whole and abs(v - whole) <= _ROUNDING:
                out[p.name] = whole
        elif isinstance(p, FloatParameter):
            lo, hi = p.bounds
            slack = _ROUNDING * (hi - lo)
            if hi < v <= hi + slack:
                out[p.name] = hi
            elif lo - slack <= v < lo:
                out[p.name] = lo
    return out


@dataclass
class Proposal:
    """A point ready to run: from the planner, or a retry of a failed point.

    Attributes:
        parameters: the point.
        kind: ``initial``/``model``/... as the planner said, or ``retry``.
        suggest_seconds: this point's share of the suggest call that made it.
        retry: for a retry, ``(first attempt's trial id, attempt)``: the store's id, which the
            retry's start document records as ``retry_of``.
    """

    parameters: Point
    kind: str
    suggest_seconds: float = 0.0
    retry: tuple[int, int] | None = None


@dataclass
class Job:
    """A persisted trial handed to a slot."""

    slot: int
    trial_id: int
    number: int
    proposal: Proposal
    started: float = field(default_factory=time.perf_counter)


@dataclass
class SlotDone:
    """A slot finished its job: ``result``, or the exception its thread raised."""

    job: Job
    result: TrialResult | None
    error: BaseException | None = None
    recorded: bool = False  # the coordinator has it (from the queue or from its slot)


@dataclass
class Proposed:
    """The planner thread's answer to one request."""

    proposals: list[Proposal]
    error: BaseException | None = None


@dataclass
class Wake:
    """Nothing happened but the coordinator should look again (a stop was requested)."""


Event = SlotDone | Proposed | Wake


class Slot:
    """One instrument with its own Dispatcher (and so its own RunEngine).

    Attributes:
        index: 0-based slot number, stored with each trial it runs.
        job: the trial in flight, or ``None`` when idle.
        done: ``job``'s outcome once its run ended, until the coordinator records it.
        retired: why the slot gets no more trials (see :meth:`Scheduler.record`), or ``None``.
        streak: the slot's last failed trials in a row (instrument failures), oldest first.
    """

    def __init__(self, index: int, instrument: Instrument, dispatcher: Dispatcher) -> None:
        self.index = index
        self.instrument = instrument
        self.dispatcher = dispatcher
        self.job: Job | None = None
        self.done: SlotDone | None = None
        self.retired: str | None = None
        self.streak: list[Job] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(
        self, job: Job, run: Callable[[], TrialResult], events: queue.SimpleQueue[Event]
    ) -> None:
        """Run ``run()`` (one ``Dispatcher.run``) on a thread; report on ``events``."""
        self.job, self.done = job, None

        def target() -> None:
            try:
                result = run()
            except BaseException as exc:  # the coordinator decides what it means
                self.report(SlotDone(job, None, exc), events)
                return
            self.report(SlotDone(job, result), events)

        self._thread = threading.Thread(
            target=target, name=f"closedloop-slot-{self.index}", daemon=True
        )
        try:
            self._thread.start()
        except BaseException:  # no thread, no report: the job is not the slot's
            self.job, self._thread = None, None
            raise

    def settle(self, job: Job, result: TrialResult, events: queue.SimpleQueue[Event]) -> None:
        """``job`` ends with ``result`` without a run (stopped or failed before its run)."""
        self.job = job
        self.report(SlotDone(job, result), events)

    def report(self, done: SlotDone, events: queue.SimpleQueue[Event]) -> None:
        """Keep ``done`` on the slot, then queue it: the event may be lost, the slot's copy
        stays until :meth:`finish` (see the module's docstring)."""
        self.done = done
        events.put(done)

    def finish(self) -> None:
        """Mark idle (the coordinator calls it when it records the slot's outcome)."""
        if self.done is not None:
            self.done.recorded = True  # its event, still queued, is dropped when taken
        self.job = None
        self.done = None
        self._thread = None

    def close(self, *, safe_state: bool = True) -> None:
        """Close the dispatcher and the devices (once); ``safe_state=False``: write no
        declared safe state (see ``instruments.close_instrument``)."""
        if self._closed:
            return
        self._closed = True
        self.dispatcher.close()
        close_instrument(self.instrument, safe_state=safe_state)


class PlannerWorker:
    """The one thread that touches the planner: ingest what finished, then suggest.

    ``ingest`` only buffers (the coordinator calls it as outcomes are recorded); the buffer
    is handed to ``planner.ingest`` on this thread right before the next ``suggest``.
    """

    def __init__(
        self, planner: Planner, events: queue.SimpleQueue[Event], space: Space | None = None
    ) -> None:
        self.planner = planner
        self.events = events
        self.space = space  # every proposal must be a member (check_proposals); None: unchecked
        self._buffer: list[Observation] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._unanswered = False  # a request whose answer the coordinator has not taken
        self._raised = False  # the planner raised on this thread: hand it nothing more
        self.received = 0  # outcomes handed over by the coordinator so far
        self.since: float | None = None  # Unix time of the outstanding request

    @property
    def busy(self) -> bool:
        """A request is outstanding: suggesting, or its answer not yet taken from ``events``.

        Not "the thread is alive": the thread ends as soon as it has queued its answer, and
        until the coordinator takes that answer its points are in no one's pending list. A
        request made in that window re-proposed them (two slots of a Sobol campaign were
        handed the same point 10 times in 40 trials).
        """
        return self._unanswered

    def answered(self) -> None:
        """The coordinator has taken this request's answer (its points are now ``ready``)."""
        self._unanswered = False
        self.since = None

    def ingest(self, observations: Sequence[Observation]) -> None:
        with self._lock:
            self._buffer.extend(observations)
            self.received += len(observations)

    def request(self, n: int, pending: Sequence[Point]) -> None:
        """Start one ``suggest(n, pending)`` on the planner thread (one at a time)."""
        if self.busy:
            raise RuntimeError("the planner is already suggesting")
        pending = list(pending)
        self._unanswered = True
        self.since = time.time()

        def target() -> None:
            try:
                with self._lock:
                    learned, self._buffer = self._buffer, []
                if learned:
                    call_planner(self.planner, "ingest", learned)
                t0 = time.perf_counter()
                points = call_planner(self.planner, "suggest", n, pending=pending)
                seconds = time.perf_counter() - t0
                checked = check_proposals(self.planner, n, points, self.space, pending)
                share = seconds / max(n, 1)
                self.events.put(Proposed([Proposal(p, k, share) for p, k in checked]))
            except BaseException as exc:
                self._raised = not isinstance(exc, PlannerError) or isinstance(exc, PluginRaised)
                self.events.put(Proposed([], exc))

        self._thread = threading.Thread(target=target, name="closedloop-planner", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for a suggest in progress (its proposal is dropped: nothing was persisted),
        then hand the planner what it has not yet ingested, so it ends knowing every outcome.

        A plugin's ``ingest`` that raises here is a warning naming it, not an error: the
        trials are stored and nothing more is proposed in this session, so the campaign
        ends as it was ending (a completed campaign had exited 1 with "please report it" and
        no summary; found in review). The next session's rebuild meets the error again."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return
        with self._lock:
            learned, self._buffer = self._buffer, []
        if learned and not self._raised:  # a planner that raised would only raise again
            try:
                call_planner(self.planner, "ingest", learned)
            except PluginRaised as exc:
                logger.warning(
                    "%s, at the end of the session: the campaign's trials are stored and "
                    "nothing more was to be proposed (the next resume, suggest or plan "
                    "hands the plugin the same trials)",
                    exc.headline(),
                )


class Scheduler:
    """Slots, the planner thread, the proposals ready to run, and the event queue.

    Args:
        slots: the instrument slots.
        planner: the rebuilt planner (touched only from the planner thread from now on).
        batch_size: ``planner.batch_size`` q: at least q proposals per suggest call.
        lookahead: at most this many proposals ready beyond the idle slots (K with K > 1
            slots; 0 with one slot: sequential); how many within that is :meth:`depth`.
        initial: for a campaign with no trial yet, the size of the planner's initial design;
            before the first outcome no more proposals are made ahead than complete it (see
            :meth:`wanted`). ``None``: no such limit.
        space: the campaign's space, which every proposal must be a member of
            (:func:`check_proposals`); ``None`` (tests of the request policy): unchecked.
    """

    def __init__(
        self,
        slots: Sequence[Slot],
        planner: Planner,
        *,
        batch_size: int = 1,
        lookahead: int = 0,
        initial: int | None = None,
        space: Space | None = None,
    ) -> None:
        self.slots = list(slots)
        # SimpleQueue: its put() is reentrant, so a signal handler on the coordinator's
        # thread may wake it (wake()) even while that thread is inside get().
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.planner = PlannerWorker(planner, self.events, space)
        self.ready: deque[Proposal] = deque()
        self.batch_size = max(1, batch_size)
        self.lookahead = max(0, lookahead)
        self.initial = initial
        self._trial_seconds: deque[float] = deque(maxlen=PACE_WINDOW)
        self._suggest_seconds: deque[float] = deque(maxlen=PACE_WINDOW)
        self._depth = self.lookahead  # the last depth logged

    def idle(self) -> list[Slot]:
        """Slots ready for a trial (not busy, not retired)."""
        return [s for s in self.slots if not s.busy and s.retired is None]

    def proposing(self) -> tuple[float, int] | None:
        """``(since, waiting)`` while idle slots wait for the planner: the Unix time its
        request started and how many slots have no proposal ready; ``None`` otherwise
        (planning ahead while every slot measures is the design, not a wait). Read by the
        lease's heartbeat thread for ``status``."""
        since = self.planner.since
        if since is None or not self.planner.busy:
            return None
        waiting = len(self.idle()) - len(self.ready)
        return (since, waiting) if waiting > 0 else None

    def active(self) -> list[Slot]:
        """Slots not retired."""
        return [s for s in self.slots if s.retired is None]

    def retired(self) -> list[Slot]:
        return [s for s in self.slots if s.retired is not None]

    def record(self, job: Job, status: str, error: str | None) -> str | None:
        """Count a trial's outcome toward its slot's record; why the slot is now retired.

        A completed trial ends the slot's run of failures; a failed one extends it, unless
        the failure belongs to the point (``loop.failures.is_point_failure``: refused before
        any device moved, a failing region, a function that raised or returned the wrong or
        non-finite outputs for these inputs: every slot would fail there);
        an abandoned trial (a stop) counts for nothing. The slot is retired when its last
        ``RETIRE_AFTER`` trials failed in a row while another slot in use has no failure
        in a row (its last outcome a success, or none yet): then this instrument, not the
        campaign's instruments as a whole, is what fails. A broken instrument that fails at
        once is retired before the others' first trials end (waiting for their successes
        let it use up ``max_failures`` first); when every slot fails, none is retired and
        ``max_failures`` decides. Returns the reason when this outcome retired the slot.
        """
        slot = self.slots[job.slot]
        if status == "completed":
            slot.streak.clear()
            return None
        if status != "failed" or is_point_failure(error):
            return None
        slot.streak.append(job)
        if slot.retired is not None or len(slot.streak) < RETIRE_AFTER:
            return None
        healthy = [s.index for s in self.active() if s is not slot and not s.streak]
        if not healthy:
            return None
        numbers = ", ".join(f"#{j.number}" for j in slot.streak[-RETIRE_AFTER:])
        others = ", ".join(str(i) for i in healthy)
        slot.retired = (
            f"its last {RETIRE_AFTER} trials failed in a row ({numbers}) while slot(s) "
            f"{others} did not fail"
        )
        logger.warning("instrument slot %d retired: %s", slot.index, slot.retired)
        return slot.retired

    def wake(self) -> None:
        """Make the coordinator look at once (safe from a signal handler)."""
        self.events.put(Wake())

    def busy(self) -> list[Slot]:
        return [s for s in self.slots if s.busy]

    def unrecorded(self) -> list[SlotDone]:
        """Outcomes reported by the slots and not yet recorded, whether or not their event
        was taken off the queue (one taken and then lost to an interrupt is among them)."""
        return [
            s.done
            for s in self.slots
            if s.job is not None and s.done is not None and s.done.job is s.job
        ]

    def in_flight(self) -> int:
        return sum(s.busy for s in self.slots)

    def pending_points(self) -> list[Point]:
        """Points in flight and queued: the planner must not propose them again."""
        points = [s.job.proposal.parameters for s in self.slots if s.job is not None]
        return points + [p.parameters for p in self.ready]

    def wanted(self, room: int | None) -> int:
        """How many proposals to ask for now (0: none), given ``room`` trials left to start.

        Exactly as many as the slots that would otherwise wait (idle slots beyond the ready
        proposals), made jointly; when no slot waits but fewer than :meth:`ahead` proposals
        are ready, one more. Never fewer than ``batch_size``, never more than ``room``.

        Why one at a time ahead, not the whole shortfall: every proposal should be made
        with the freshest outcomes. Asking for the full shortfall (idle + lookahead - ready)
        at once turned the loop into batch BO with q = 3-8 whenever the planner was the
        bottleneck (a 0.25 s suggest against 0.1 s measurements), and a q = 8 suggest takes
        long enough for every slot to free again, so the batches stayed large
        (``benchmarks/parallel.py`` part b, 4 slots x 60 Hartmann6 trials: median regret
        0.061 on seeds 0-4, against 0.0017 one at a time).
        """
        if self.planner.busy:
            return 0
        waiting = len(self.idle()) - len(self.ready)
        if waiting > 0:
            n = waiting
        elif len(self.ready) < self.ahead():
            n = 1
        else:
            return 0
        n = max(n, self.batch_size)
        if room is not None:
            n = min(n, room - len(self.ready))
        return max(n, 0)

    def ahead(self) -> int:
        """Proposals to keep ready beyond the idle slots: :meth:`depth`, except before the
        first outcome of a new campaign, when only the rest of the initial design.

        Before any outcome the planner can only make design points, so a full lookahead
        would grow the initial design by up to K points and make a K-slot campaign a
        different experiment from the one-slot one: Hartmann6 with 8 initial Sobol points
        instead of 5 settles in the second basin on seeds 0, 1 and 3 where 5 points do so on
        seed 0 only (``benchmarks/parallel.py`` part b; 4 slots had grown the design to 8).
        A slot that frees before the first outcome is known may still start a design point:
        slots that would wait are always served (:meth:`wanted`).
        """
        if self.initial is None or self.planner.received > 0:
            return self.depth()
        return min(self.lookahead, max(0, self.initial - self.in_flight()))

    def depth(self) -> int:
        """How many proposals the pace of this campaign needs ready (at most ``lookahead``).

        Every ready proposal is pending for the ones made after it, and stale by the
        outcomes that arrive while it waits: the deeper the queue, the more each suggest is
        one point of a large batch chosen on old data. Hartmann6, 4 slots x 60 trials,
        seeds 0-9, median final regret (1 slot: 0.0001):

        * through the loop at latency U(0.5, 1.5) s (``benchmarks/parallel.py`` part b):
          0.0066 with four ready (95 % of slot time busy), 0.0012 with two (~89 % busy);
        * the planner alone in simulated time (``benchmarks/async_sim.py``), every slot
          served the moment it frees: 0.0003 with none ready, 0.0007 with one.

        A queue that runs dry idles an instrument, though, and how deep it must be depends
        on the planner's load, slots x suggest time / trial time: ~0.7 above (4 x 0.18 s /
        1.05 s), where two slots often free within one suggest. So the depth follows the
        measured pace, averaged over the last ``PACE_WINDOW`` trials and model proposals
        (every proposal but a design point, :data:`DESIGN_KINDS`, whatever the planner calls
        it; a retry is made by the engine, not suggested):

        * no queue while a suggest takes under ``IDLE_SHARE`` (1 %) of a trial: a freed
          slot then waits at most that long, and each proposal is made from every outcome
          so far with only the trials in flight pending (a real instrument taking minutes);
        * otherwise ``ceil(DEPTH_PER_LOAD x load)``, at most ``lookahead``: 4 slots are
          fed from four ready above load 0.5, from one up to load 1/6 (e.g. 0.2 s suggests
          against 5 s trials). 6 per unit of load keeps part a at >= 95 % busy: at 4 the
          load's ups and downs took the queue to 3 or 2 and the slots to ~94 %;
        * ``lookahead`` until two trials and one model proposal have been timed (a planner
          that never models, Sobol or random, keeps ``lookahead``: it has no quality to lose).
          Timing only proposals labelled ``model`` kept a planner whose proposals say
          ``local`` at ``lookahead``: on 3 slots (0.2 s trials, 5 ms suggests) it suggested
          with 5 points pending, 2 of them queued, where ``model`` had 3, none queued (found
          in review).
        """
        if len(self._trial_seconds) < 2 or not self._suggest_seconds:
            return self.lookahead
        trial = max(statistics.fmean(self._trial_seconds), 1e-9)
        suggest = statistics.fmean(self._suggest_seconds)
        load = max(len(self.active()), 1) * suggest / trial
        depth = 0 if suggest < IDLE_SHARE * trial else math.ceil(DEPTH_PER_LOAD * load)
        depth = min(self.lookahead, depth)
        if depth != self._depth:
            logger.info(
                "keeping %d proposal(s) ready: suggest %.2f s, trial %.2f s, planner load %.2f",
                depth,
                suggest,
                trial,
                load,
            )
            self._depth = depth
        return depth

    def abort_all(self, reason: str, wait: float = POLL_SECONDS) -> None:
        """Abort every run in flight, waiting at most ``wait`` s for each RunEngine to take
        it (an abort not yet taken stays under way; asking again does not repeat it)."""
        for slot in self.busy():
            slot.dispatcher.abort(reason, wait=wait)

    def next_event(self, timeout: float = POLL_SECONDS) -> Event | None:
        """The next event (``None`` after ``timeout``), timed for :meth:`depth`.

        Taking a :class:`Proposed` ends the planner's request (:attr:`PlannerWorker.busy`):
        the caller puts its proposals in :attr:`ready` before it asks again.
        """
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(event, Wake):
            return event
        if isinstance(event, SlotDone):
            if event.recorded:
                return None  # recorded already, from its slot (Scheduler.unrecorded)
            self._trial_seconds.append(time.perf_counter() - event.job.started)
            return event
        self.planner.answered()
        if event.error is None:  # not design points: they cost next to nothing
            self._suggest_seconds.extend(
                p.suggest_seconds for p in event.proposals if p.kind not in DESIGN_KINDS
            )
        return event

    def close(self, *, safe_state: bool = True) -> None:
        """Close every slot's dispatcher and devices (logging, never raising)."""
        for slot in self.slots:
            try:
                slot.close(safe_state=safe_state)
            except Exception as exc:
                logger.warning("closing slot %d failed: %s", slot.index, exc)
