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
  that frees. With K > 1 slots the coordinator keeps K proposals ready ahead
  (``lookahead``), so a slot that frees starts its next trial at once; with one slot
  nothing is proposed before the previous outcome is learned (plain sequential BO).

Everything a slot or the planner produces comes back as an event on ``Scheduler.events``;
only the coordinator reads them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from instruments import Dispatcher, Instrument, TrialResult
from planners import Observation, Planner, Point

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often the coordinator looks at stop requests, lease and duration


@dataclass
class Proposal:
    """A point ready to run: from the planner, or a retry of a failed point.

    Attributes:
        parameters: the point.
        kind: ``initial``/``model``/... as the planner said, or ``retry``.
        suggest_seconds: this point's share of the suggest call that made it.
        retry: for a retry, ``(first attempt's trial number, attempt)``.
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


@dataclass
class Proposed:
    """The planner thread's answer to one request."""

    proposals: list[Proposal]
    error: BaseException | None = None


Event = SlotDone | Proposed


class Slot:
    """One instrument with its own Dispatcher (and so its own RunEngine).

    Attributes:
        index: 0-based slot number, stored with each trial it runs.
        job: the trial in flight, or ``None`` when idle.
    """

    def __init__(self, index: int, instrument: Instrument, dispatcher: Dispatcher) -> None:
        self.index = index
        self.instrument = instrument
        self.dispatcher = dispatcher
        self.job: Job | None = None
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, job: Job, run: Callable[[], TrialResult], events: queue.Queue[Event]) -> None:
        """Run ``run()`` (one ``Dispatcher.run``) on a thread; report on ``events``."""
        self.job = job

        def target() -> None:
            try:
                result = run()
            except BaseException as exc:  # the coordinator decides what it means
                events.put(SlotDone(job, None, exc))
                return
            events.put(SlotDone(job, result))

        self._thread = threading.Thread(
            target=target, name=f"closedloop-slot-{self.index}", daemon=True
        )
        self._thread.start()

    def finish(self) -> None:
        """Mark idle (the coordinator calls it when it has the slot's event)."""
        self.job = None
        self._thread = None

    def close(self) -> None:
        self.dispatcher.close()
        self.instrument.close()


class PlannerWorker:
    """The one thread that touches the planner: ingest what finished, then suggest.

    ``ingest`` only buffers (the coordinator calls it as outcomes are recorded); the buffer
    is handed to ``planner.ingest`` on this thread right before the next ``suggest``.
    """

    def __init__(self, planner: Planner, events: queue.Queue[Event]) -> None:
        self.planner = planner
        self.events = events
        self._buffer: list[Observation] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.received = 0  # outcomes handed over by the coordinator so far

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def ingest(self, observations: Sequence[Observation]) -> None:
        with self._lock:
            self._buffer.extend(observations)
            self.received += len(observations)

    def request(self, n: int, pending: Sequence[Point]) -> None:
        """Start one ``suggest(n, pending)`` on the planner thread (one at a time)."""
        if self.busy:
            raise RuntimeError("the planner is already suggesting")
        pending = list(pending)

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
        lookahead: proposals to keep ready beyond the idle slots (K with K > 1 slots: a
            freed slot never waits for the planner; 0 with one slot: sequential). One is not
            enough: four 1 s slots ask for ~4 proposals/s and a 0.19 s suggest gives ~5/s, so
            the planner is ~75 % busy and a one-deep queue runs dry whenever two slots free
            close together (``benchmarks/parallel.py`` part a: utilisation 79 % with 1,
            95 % with K).
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
        self.events: queue.Queue[Event] = queue.Queue()
        self.planner = PlannerWorker(planner, self.events)
        self.ready: deque[Proposal] = deque()
        self.batch_size = max(1, batch_size)
        self.lookahead = max(0, lookahead)
        self.initial = initial

    def idle(self) -> list[Slot]:
        return [s for s in self.slots if not s.busy]

    def busy(self) -> list[Slot]:
        return [s for s in self.slots if s.busy]

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
        """Proposals to keep ready beyond the idle slots: ``lookahead``, except before the
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
            return self.lookahead
        return min(self.lookahead, max(0, self.initial - self.in_flight()))

    def abort_all(self, reason: str) -> None:
        for slot in self.busy():
            slot.dispatcher.abort(reason)

    def next_event(self, timeout: float = POLL_SECONDS) -> Event | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Close every slot's dispatcher and devices (logging, never raising)."""
        for slot in self.slots:
            try:
                slot.close()
            except Exception as exc:
                logger.warning("closing slot %d failed: %s", slot.index, exc)
