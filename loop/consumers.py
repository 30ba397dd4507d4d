"""A facility's live document consumers, each fed from a queue on a thread of its own.

Why not call them on the RunEngine's thread, as a Bluesky subscription is? Because the
consumers a runner is given talk to servers (a Tiled writer, a Kafka publisher) and the
RunEngine waits for every subscription to return before the plan goes on: a consumer that
took a second per document added four seconds to every trial, and one whose server hung held
the trial, its timeout and Ctrl-C with it; an instrument idled for a catalog. The store's
sink stays on the RunEngine's thread (a trial is complete only once its documents are
durable); everything after it gets the documents in order, as soon as it can take them.

A consumer that falls :data:`MAX_BACKLOG` documents behind is given up for the session, so a
hung server cannot grow the runner's memory without bound. It keeps the documents it was
given, a consistent prefix of the campaign's (never a run with a hole in it), and the store
has them all: ``closedloop export --format jsonl`` replays them. When the runner's session
ends it waits up to :data:`DRAIN_SECONDS` in all for its consumers to take what they still
hold, then names any that did not.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

DocumentCallback = Callable[[str, dict[str, Any]], Any]

MAX_BACKLOG = 10_000
"""Documents a consumer may be behind before it is given up (four per trial: 2500 trials)."""

DRAIN_SECONDS = 30.0
"""How long a runner's session end waits, in all, for its consumers' last documents."""

SAY_WAITING = 1.0
"""A consumer still busy this long after the session's end is named while the runner waits."""

REPLAY = "`closedloop export --format jsonl` replays them from the store"

_END = object()


class QueuedConsumer:
    """``callback`` as a RunEngine subscription that returns at once and never raises.

    Each document is put on a queue that a daemon thread of this consumer's own hands to
    ``callback`` in order. A ``callback`` that raises is logged, once per consumer, and must
    not fail or abort the trial, whose documents the store keeps whatever the consumer
    does. ``label`` names the consumer in messages (an instrument file's
    ``subscriptions:`` entry). The thread starts with the first document, and
    :meth:`close` ends it, so one consumer serves several sessions of a runner.
    """

    def __init__(
        self,
        callback: DocumentCallback,
        label: str | None = None,
        *,
        max_backlog: int | None = None,
    ) -> None:
        self.callback = callback
        self.label = label or repr(callback)
        self.max_backlog = MAX_BACKLOG if max_backlog is None else max_backlog
        self.dropped = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._given_up = False
        self._raised = False

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        with self._lock:
            if self._given_up:
                self.dropped += 1
                return
            if self._queue is None or self._thread is None:
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._work,
                    args=(self._queue,),
                    name=f"consumer {self.label}",
                    daemon=True,  # a consumer that never returns must not hold the exit
                )
                self._thread.start()
            if self._queue.qsize() >= self.max_backlog:
                self._given_up = True
                self.dropped += 1
                logger.warning(
                    "subscription %s is %d documents behind: it gets no more documents in "
                    "this session (trials go on; %s)",
                    self.label,
                    self.max_backlog,
                    REPLAY,
                )
                return
            self._queue.put((name, doc))

    def _work(self, documents: queue.SimpleQueue[Any]) -> None:
        while (item := documents.get()) is not _END:
            name, doc = item
            try:
                self.callback(name, doc)
            except Exception as exc:
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

    def close(self, timeout: float) -> int:
        """End the session: let the thread hand over what it holds, waiting at most
        ``timeout`` seconds; the documents it still held then (0: all delivered). A
        consumer still busy after that keeps its daemon thread, and the next document
        starts a new thread and queue."""
        with self._lock:
            documents, thread = self._queue, self._thread
            self._queue = self._thread = None
            self._given_up = False
        if documents is None or thread is None:
            return 0
        documents.put(_END)
        thread.join(min(max(timeout, 0.0), SAY_WAITING))
        if thread.is_alive() and timeout > SAY_WAITING:
            logger.warning(
                "waiting up to %.0f s for subscription %s to take its last %d document(s)",
                timeout,
                self.label,
                documents.qsize(),  # the one it is on, and the end mark: about even
            )
            thread.join(timeout - SAY_WAITING)
        return max(documents.qsize() - 1, 0) + (1 if thread.is_alive() else 0)


def close_consumers(consumers: Sequence[QueuedConsumer], budget: float | None = None) -> None:
    """Wait up to ``budget`` seconds in all (:data:`DRAIN_SECONDS`) for ``consumers`` to
    take their last documents, and name those that did not (a warning: the campaign's
    outcome does not depend on them)."""
    deadline = time.monotonic() + (DRAIN_SECONDS if budget is None else budget)
    for consumer in consumers:
        left = consumer.close(deadline - time.monotonic())
        if left:
            logger.warning(
                "subscription %s did not take its last %d document(s) within %g s of the "
                "session's end and was left behind (%s)",
                consumer.label,
                left,
                DRAIN_SECONDS if budget is None else budget,
                REPLAY,
            )
