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
"""

from __future__ import annotations

import logging
import math
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from instruments import Dispatcher, Instrument, TrialResult, close_instrument
from loop.failures import is_point_failure
from planners import Observation, Planner, Point

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

    def __init__(self, planner: Planner, events: queue.SimpleQueue[Event]) -> None:
        self.planner = planner
        self.events = events
        self._buffer: list[Observation] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._unanswered = False  # a request whose answer the coordinator has not taken
        self.received = 0  # outcomes handed over by the coordinator so far

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

        def target() -> None:
            try:
                with self._lock:
                    learned, self._buffer = self._buffer, []
                if learned:
                    self.planner.ingest(learned)
                t0 = time.perf_counter()
                points = self.planner.suggest(n, pending=pending)
                seconds = time.perf_counter() - t0
                kinds = list(self.planner.last_kinds)
                share = seconds / max(len(points), 1)
                self.events.put(
                    Proposed([Proposal(p, k, share) for p, k in zip(points, kinds, strict=True)])
                )
            except BaseException as exc:
                self.events.put(Proposed([], exc))

        self._thread = threading.Thread(target=target, name="closedloop-planner", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for a suggest in progress (its proposal is dropped: nothing was persisted),
        then hand the planner what it has not yet ingested, so it ends knowing every outcome."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return
        with self._lock:
            learned, self._buffer = self._buffer, []
        if learned:
            self.planner.ingest(learned)


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
    """

    def __init__(
        self,
        slots: Sequence[Slot],
        planner: Planner,
        *,
        batch_size: int = 1,
        lookahead: int = 0,
        initial: int | None = None,
    ) -> None:
        self.slots = list(slots)
        # SimpleQueue: its put() is reentrant, so a signal handler on the coordinator's
        # thread may wake it (wake()) even while that thread is inside get().
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.planner = PlannerWorker(planner, self.events)
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
        measured pace, averaged over the last ``PACE_WINDOW`` trials and model proposals:

        * no queue while a suggest takes under ``IDLE_SHARE`` (1 %) of a trial: a freed
          slot then waits at most that long, and each proposal is made from every outcome
          so far with only the trials in flight pending (a real instrument taking minutes);
        * otherwise ``ceil(DEPTH_PER_LOAD x load)``, at most ``lookahead``: 4 slots are
          fed from four ready above load 0.5, from one up to load 1/6 (e.g. 0.2 s suggests
          against 5 s trials). 6 per unit of load keeps part a at >= 95 % busy: at 4 the
          load's ups and downs took the queue to 3 or 2 and the slots to ~94 %;
        * ``lookahead`` until two trials and one model proposal have been timed (a planner
          that never models, Sobol or random, keeps ``lookahead``: it has no quality to lose).
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
        if event.error is None:  # model proposals only: design points cost next to nothing
            self._suggest_seconds.extend(
                p.suggest_seconds for p in event.proposals if p.kind == "model"
            )
        return event

    def close(self, *, safe_state: bool = True) -> None:
        """Close every slot's dispatcher and devices (logging, never raising)."""
        for slot in self.slots:
            try:
                slot.close(safe_state=safe_state)
            except Exception as exc:
                logger.warning("closing slot %d failed: %s", slot.index, exc)
