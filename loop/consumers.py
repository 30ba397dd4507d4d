"""A facility's live document consumers, each fed from a queue by a thread of its own.

Why not call them on the RunEngine's thread, as a Bluesky subscription is? Because the
consumers a runner is given talk to servers (a Tiled writer, a Kafka publisher) and the
RunEngine waits for every subscription to return before the plan goes on: a consumer that
took a second per document added four seconds to every trial, and one whose server hung held
the trial, its timeout and Ctrl-C with it; an instrument idled for a catalog. The store's
sink stays on the RunEngine's thread (a trial is complete only once its documents are
durable); each consumer after it gets the documents in order, as soon as it can take them.

One consumer has one worker thread at a time, for as long as it has documents: a second
session of the same callback (``run`` then ``resume`` on one runner, or one writer given to
both) queues behind what the first left, so two threads never call the callback at once
(found in review). A consumer stuck on one document for :data:`STUCK_SECONDS` is named while
the trials go on; one :data:`MAX_BACKLOG` documents behind is given up for the session, so a
dead server cannot grow the runner's memory without bound, and keeps a consistent prefix of
the documents (never a run with a hole in it). At a session's end :func:`drain_consumers`
waits for the consumers' last documents as long as they make progress.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

DocumentCallback = Callable[[str, dict[str, Any]], Any]

MAX_BACKLOG = 10_000
"""Documents a consumer may be behind before it is given up (four per trial: 2500 trials)."""

STUCK_SECONDS = 30.0
"""A consumer that has not returned from one document for this long is named (once a stall),
and at a session's end it is left behind."""

STOPPED_DRAIN = 5.0
"""At the end of a session that was stopped or failed, the longest the runner waits for its
consumers: whoever stopped it wants the prompt back."""

IDLE_EXIT = 5.0
"""A worker with nothing to do for this long ends; the next document starts another."""


def _name(callback: DocumentCallback) -> str:
    """How a message names a Python consumer: its class or function, not its repr's address."""
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    module = getattr(callback, "__module__", None) or type(callback).__module__
    return f"{module}.{name}" if module and module != "builtins" else str(name)


_SHARED: weakref.WeakValueDictionary[int, QueuedConsumer] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


class QueuedConsumer:
    """``callback`` as a RunEngine subscription that returns at once and never raises.

    Each document is queued; a daemon thread hands the queue to ``callback`` in order. A
    ``callback`` that raises is logged, once per consumer, and never fails or aborts the
    trial, whose documents the store keeps whatever the consumer does. ``label`` names the
    consumer in messages (an instrument file's ``subscriptions:`` entry); ``replay`` gives
    the ``--store URL -c ID`` of the campaign, for the command that replays what it missed.
    """

    def __init__(
        self,
        callback: DocumentCallback,
        label: str | None = None,
        *,
        max_backlog: int | None = None,
        replay: Callable[[], str] | None = None,
    ) -> None:
        self.callback = callback
        self.label = label or _name(callback)
        self.max_backlog = MAX_BACKLOG if max_backlog is None else max_backlog
        self.replay = replay
        self.dropped = 0
        self.given_up = False
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._raised = False
        self._busy_since: float | None = None  # when the callback took the current document
        self._stuck_said = False
        self.last_progress = time.monotonic()  # when the callback last returned
        # The trial of each start document queued and not yet taken, the trial of the last
        # start taken and whether its run's stop is still to come: what was not delivered.
        self._starts: deque[Any] = deque()
        self._queued_trial: Any = None
        self._taken_trial: Any = None
        self._run_open = False

    @classmethod
    def of(
        cls,
        callback: DocumentCallback,
        label: str | None = None,
        *,
        replay: Callable[[], str] | None = None,
    ) -> QueuedConsumer:
        """The consumer of ``callback``: one per callback object, however many runners or
        slots are given it (a writer passed to ``run`` and again to ``Runner.from_store``
        for the resume, or a factory that returns one module-level writer to every slot),
        so its documents wait in one queue and one thread calls it."""
        with _SHARED_LOCK:
            consumer = _SHARED.get(id(callback))
            if consumer is None or consumer.callback is not callback:
                consumer = cls(callback, label, replay=replay)
                _SHARED[id(callback)] = consumer
            elif replay is not None:
                consumer.replay = replay  # the latest campaign's store and id
            return consumer

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        with self._lock:
            if self.given_up:
                self.dropped += 1
                return
            trial = doc.get("trial_number") if name == "start" else self._queued_trial
            if self._queue.qsize() >= self.max_backlog:
                self.given_up = True
                self.dropped += 1
                logger.warning(
                    "subscription %s is %d documents behind: it gets no more in this "
                    "session (trials go on; %s)",
                    self.label,
                    self.max_backlog,
                    self._replay_hint(trial),
                )
                return
            if name == "start":
                self._starts.append(trial)
                self._queued_trial = trial
            self._queue.put((name, doc))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work,
                    name=f"consumer {self.label}",
                    daemon=True,  # a consumer that never returns must not hold the exit
                )
                self._thread.start()
            self._say_if_stuck()

    def _say_if_stuck(self) -> None:
        since = self._busy_since
        if since is None or self._stuck_said or time.monotonic() - since < STUCK_SECONDS:
            return
        self._stuck_said = True
        logger.warning(
            "subscription %s has not returned from a document for %.0f s; %d document(s) "
            "wait for it (trials go on; it is given up %d documents behind)",
            self.label,
            time.monotonic() - since,
            self._queue.qsize(),
            self.max_backlog,
        )

    def _work(self) -> None:
        while True:
            try:
                name, doc = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:  # __call__ starts a new worker once this one is gone
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            with self._lock:
                self._busy_since = time.monotonic()
                if name == "start":
                    self._taken_trial = self._starts.popleft() if self._starts else None
                    self._run_open = True
                elif name == "stop":
                    self._run_open = False
            try:
                self.callback(name, doc)
            except BaseException as exc:  # SystemExit too: the worker must go on
                if not self._raised:
                    self._raised = True
                    logger.warning(
                        "subscription %s raised on a %s document: %s (logged once; the "
                        "trial and the store are not affected)",
                        self.label,
                        name,
                        exc,
                    )
                logger.debug("subscription failure", exc_info=True)
            with self._lock:
                now = time.monotonic()
                if self._stuck_said:
                    self._stuck_said = False
                    logger.warning(
                        "subscription %s answers again after %.0f s; %d document(s) wait for it",
                        self.label,
                        now - (self._busy_since or now),
                        self._queue.qsize(),
                    )
                self._busy_since = None
                self.last_progress = now

    @property
    def backlog(self) -> int:
        """Documents given to this consumer that its callback has not finished with."""
        with self._lock:
            return self._queue.qsize() + (self._busy_since is not None)

    def first_missing(self) -> Any:
        """The lowest trial number of the runs this consumer does not have whole, or
        ``None`` (all delivered, or no start document seen). The lowest, not the first
        queued: with several slots runs arrive interleaved, and trial 2's start can come
        before trial 1's (found in CI: `--from-trial 2` left trial 1 out of the replay)."""
        with self._lock:
            missing = list(self._starts)
            if self._run_open and (self._queue.qsize() or self._busy_since is not None):
                missing.append(self._taken_trial)
            numbers = [t for t in missing if isinstance(t, int)]
            if numbers:
                return min(numbers)
            return missing[0] if missing else None

    def _replay_hint(self, trial: Any) -> str:
        export = self.replay() if self.replay is not None else "closedloop export"
        since = f" --from-trial {trial}" if isinstance(trial, int) else ""
        return f"`{export} --format jsonl{since}` replays them from the store"

    def end_session(self) -> None:
        """The session is over: a consumer given up gets the next session's documents."""
        with self._lock:
            self.given_up = False


def drain_consumers(
    consumers: Sequence[QueuedConsumer],
    *,
    budget: float | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Wait for ``consumers`` to take their last documents, then end their session.

    A consumer is waited for as long as it makes progress (a slow catalog that is 100
    documents behind gets all of them: a fixed wait had cut one off mid-run, found in
    review); one that has taken nothing for :data:`STUCK_SECONDS` is left behind, and so is
    every one once ``budget`` seconds have passed (``None``: no limit) or ``cancelled()``
    (a Ctrl-C or SIGTERM while waiting: whoever sent it wants the prompt back). The runner
    says after a second whom it waits for, and names each consumer it leaves with what it
    did not take and the command that replays it.
    """
    start = time.monotonic()
    said = 0.0
    waiting = [c for c in consumers if c.backlog]
    while waiting:
        now = time.monotonic()
        if cancelled() or (budget is not None and now - start >= budget):
            break
        waiting = [
            c for c in waiting if c.backlog and now - max(c.last_progress, start) < STUCK_SECONDS
        ]
        if waiting and now - start >= 1.0 and now - said >= STUCK_SECONDS:
            said = now
            logger.warning(
                "waiting for %s to take %s (Ctrl-C leaves them: the store has every document)",
                ", ".join(f"subscription {c.label}" for c in waiting),
                ", ".join(f"{c.backlog} document(s)" for c in waiting),
            )
        time.sleep(0.02)
    for consumer in consumers:
        left = consumer.backlog
        if left:
            first = consumer.first_missing()
            # Not dropped: in a process that lives on (a notebook) they still reach it once
            # it answers, and a replay then sent those runs twice (found in review, session
            # 39); the command line's process ends here, and they are lost to it.
            logger.warning(
                "subscription %s has not taken its last %d document(s)%s after %.0f s: they "
                "reach it if it answers while this process runs; once the process has ended, "
                "%s",
                consumer.label,
                left,
                f", from trial #{first}'s run on" if first is not None else "",
                time.monotonic() - start,
                consumer._replay_hint(first),
            )
        consumer.end_session()
