"""A campaign paused by its interlocks, as the store and the operator see it.

An instrument file's interlocks are checked by a :class:`~instruments._safety.Gate` at the
start of every trial; while one does not hold, the trial waits. :class:`CampaignPause` is the
runner's listener for those waits (handed to every ``Dispatcher``, which attaches it to the
instrument's gate):

* when a wait starts the campaign row becomes ``paused`` with the reason
  ("interlock door_closed == 1 does not hold (door_closed = 0)"), and ``closedloop status``
  shows it; when the wait ends it is ``running`` again. Each is also a ``campaign_event`` row.
* while waiting, the gate polls :meth:`CampaignPause.release_requested`, which takes an
  operator's release recorded by ``closedloop release`` (another process) from the store: the
  trial then proceeds *despite* the interlocks, and the store keeps who released it, when,
  and what they overrode. A release is for the wait in progress only: it lets that trial go
  on, every input of it (a gate waits once per trial, not once per input, and its other
  inputs go through on the same pass); the next trial checks the interlocks again. A
  release the runner has not taken when the wait ends by itself is closed as not needed
  (``Store.unpause_campaign``), so it cannot carry over to a later trial either.

Several instrument slots may wait at once: the campaign stays ``paused`` until the last one
goes on, and one release lets every slot waiting at that moment go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from loop.store import Store

logger = logging.getLogger(__name__)


class CampaignPause:
    """The runner's :class:`~instruments._safety.PauseListener` (see the module docstring).

    Args:
        store: the campaign's store.
        campaign_id: returns the campaign's id (known once the campaign is created).
        token: returns the runner's lease token (writes are refused if it lost the lease).
    """

    def __init__(
        self, store: Store, campaign_id: Callable[[], int], token: Callable[[], str | None]
    ) -> None:
        self.store = store
        self._campaign_id = campaign_id
        self._token = token
        self._lock = threading.Lock()
        self._waiting: dict[int, str] = {}  # id(gate) -> why it waits
        self._released: dict[int, str] = {}  # id(gate) -> who released it (taken by another)

    def paused(self, gate: Any, reason: str) -> None:
        with self._lock:
            self._waiting[id(gate)] = reason
            self.store.pause_campaign(self._campaign_id(), self._reason(), token=self._token())

    def release_requested(self, gate: Any) -> str | None:
        with self._lock:
            if id(gate) in self._released:
                return self._released.pop(id(gate))
            overridden = self._waiting.get(id(gate), "")
            event = self.store.take_release(
                self._campaign_id(), outcome=f"the waiting trial proceeded despite: {overridden}"
            )
            if event is None:
                return None
            who = event.by or "the operator"
            for other in self._waiting:
                if other != id(gate):
                    self._released[other] = who
            return who

    def resumed(self, gate: Any, how: str) -> None:
        with self._lock:
            self._waiting.pop(id(gate), None)
            self._released.pop(id(gate), None)
            if self._waiting:
                self.store.pause_campaign(self._campaign_id(), self._reason(), token=self._token())
            else:
                self.store.unpause_campaign(self._campaign_id(), how, token=self._token())

    def _reason(self) -> str:
        """Every distinct reason of the slots waiting now."""
        return "; ".join(dict.fromkeys(self._waiting.values()))
