"""One runner per campaign: a lease row with a heartbeat, taken over when its owner is gone.

A runner inserts (or takes over) the campaign's row in the ``lease`` table before it touches
anything, then a daemon thread pushes the row's expiry forward every ``ttl / 5`` seconds.
Another ``run``/``resume`` of that campaign sees a live lease and refuses, naming the owner.

A lease is stale, and may be taken over, when either

* its expiry has passed (the owner stopped heartbeating: killed, frozen, or its machine lost
  power), or
* its owner ran on this very host and that process no longer exists. This is what lets a
  ``resume`` right after a SIGKILL start at once instead of waiting out the TTL; a reused pid
  only makes the check answer "alive", which errs on the safe side (refuse until expiry).
  "This very host" is the hostname *and* the PID namespace (:func:`host_id`): two
  containers sharing the host's network also share its hostname, but not its process ids.

Taking over is a compare-and-swap on the stale row's random token, so two runners racing
for the same stale lease cannot both win. Every write that advances the campaign checks the
token in its own transaction (``Store.add_trial``/``finish_trial``/``finish_campaign``), so
a runner that stalled past its expiry and was replaced cannot write over its successor.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from loop.errors import first_line
from loop.store import CampaignLocked, LeaseClaim, LeaseLost, LeaseRow, Store, StoreGone

__all__ = [
    "LEASE_TTL",
    "CampaignLease",
    "CampaignLocked",
    "LeaseLost",
    "describe_lease",
    "host_id",
    "live_lease",
    "pid_alive",
    "stale_reason",
]

logger = logging.getLogger(__name__)

LEASE_TTL = 30.0  # s; a killed runner on another host blocks its campaign at most this long
_TAKEOVER_ATTEMPTS = 5


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (``True`` when unsure).

    A zombie, a process that exited (a kill) and whose parent has not collected its exit
    status yet, answers the signal check but will never heartbeat again: it counts as
    gone. A robot that kills a hung ``closedloop suggest`` it started and goes on without
    waiting for it leaves such a zombie, and the next command waited out the whole TTL for
    its lease (found while testing ask/tell's lease).
    """
    if pid <= 0:
        return False
    if os.name != "posix":  # pragma: no cover - no cheap check; expiry still applies
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (Linux's ``/proc``; else ``False``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # "pid (command) state ...": the command may hold spaces and parentheses itself
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"


def host_id() -> str:
    """Where a process id means something: the hostname, and on Linux the PID namespace.

    Containers run with host networking share the hostname but each has its own process
    ids, so a pid checked from another container says nothing about the owner: without the
    namespace a live runner there would look dead and lose its lease at once. Elsewhere (no
    ``/proc``) the hostname alone is what we have.
    """
    name = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:
        return name
    return f"{name} {namespace}"


def stale_reason(lease: LeaseRow) -> str | None:
    """Why ``lease`` may be taken over, or ``None`` while its owner may still be running."""
    now = time.time()
    if lease.expires < now:
        return f"its last heartbeat was {now - lease.heartbeat:.0f} s ago"
    if lease.host == host_id() and not pid_alive(lease.pid):
        return f"process {lease.pid} no longer exists on this host"
    return None


def live_lease(store: Store, campaign_id: int) -> LeaseRow | None:
    """The campaign's lease if a runner (probably) holds it right now."""
    lease = store.lease(campaign_id)
    if lease is None or stale_reason(lease) is not None:
        return None
    return lease


def running_namesake(name: str, campaign_id: int, lease: LeaseRow, url: str) -> str | None:
    """Why a new campaign ``name`` must not start beside campaign ``campaign_id`` of the same
    name, whose lease is ``lease``; ``None`` when that lease is stale.

    ``run`` always starts a new campaign, so it cannot collide with the running one in the
    store, but two campaigns of one name drive one instrument. The CLI asks before building
    the devices (a quick refusal), the store again when it creates the campaign (the race).
    """
    if stale_reason(lease) is not None:
        return None
    return (
        f"campaign '{name}' (id {campaign_id}) is running in {url} right now, driven by "
        f"{describe_lease(lease)}; wait for it or stop it (Ctrl-C) before starting another, "
        "or rename the new campaign"
    )


def describe_lease(lease: LeaseRow) -> str:
    """``host:pid (heartbeat 2 s ago)``, for messages."""
    return f"{lease.owner} (heartbeat {max(time.time() - lease.heartbeat, 0.0):.0f} s ago)"


class CampaignLease:
    """This process's claim on one campaign, and the thread that keeps it alive.

    Args:
        store: where the lease row lives.
        ttl: seconds a heartbeat keeps the lease; after that, any runner may take it over.
        interval: seconds between heartbeats (``ttl / 5`` by default, so four missed
            heartbeats in a row are needed to lose the lease).

    Attributes:
        owner: ``host:pid``, shown to a runner that is refused.
        token: random per instance; the store's writes check it.
        lost: set when a heartbeat found the lease taken over; the runner must stop.
        gone: why the store's file is no longer the one written (deleted or replaced), as
            a heartbeat found it (``Store.gone``); the runner stops and rescues its data.
    """

    def __init__(self, store: Store, *, ttl: float = LEASE_TTL, interval: float | None = None):
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        self.store = store
        self.ttl = float(ttl)
        self.interval = interval if interval is not None else self.ttl / 5
        self.host = host_id()
        self.pid = os.getpid()
        self.owner = f"{socket.gethostname()}:{self.pid}"
        self.token = secrets.token_hex(16)
        self.campaign_id: int | None = None
        self.lost = threading.Event()
        self.gone: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def claim(self) -> LeaseClaim:
        """The row this runner writes (``Store.create_campaign`` takes it with the campaign)."""
        return LeaseClaim(
            owner=self.owner, host=self.host, pid=self.pid, token=self.token, ttl=self.ttl
        )

    def adopt(self, campaign_id: int) -> None:
        """Record a lease taken together with a new campaign (``Store.create_campaign``)."""
        self.campaign_id = campaign_id

    def acquire(self, campaign_id: int) -> str | None:
        """Take the campaign's lease, or raise ``CampaignLocked`` naming its live owner.

        Returns:
            Why a previous owner's lease was taken over, or ``None`` if it was free.
        """
        for _ in range(_TAKEOVER_ATTEMPTS):
            current = self.store.lease(campaign_id)
            if current is None:
                if self.store.insert_lease(campaign_id, self.claim):
                    self.campaign_id = campaign_id
                    return None
                continue  # another runner inserted first: look at its lease
            if current.token == self.token:
                self.campaign_id = campaign_id
                return None
            why = stale_reason(current)
            if why is None:
                ttl = current.expires - current.heartbeat
                raise CampaignLocked(
                    f"campaign {campaign_id} is being run by {describe_lease(current)}; only "
                    "one runner may drive a campaign. Stop that runner (Ctrl-C) or wait for "
                    f"it; the lease of a runner that died is taken over {ttl:.0f} s after its "
                    "last heartbeat (at once on the same host)",
                    owner=current.owner,
                )
            if self.store.replace_lease(campaign_id, current.token, self.claim):
                logger.info("took over campaign %s from %s: %s", campaign_id, current.owner, why)
                self.campaign_id = campaign_id
                return f"took over from {current.owner}: {why}"
        raise CampaignLocked(
            f"campaign {campaign_id}: other runners keep taking its lease; try again",
            owner="unknown",
        )

    # ------------------------------------------------------------------ heartbeat
    def start_heartbeat(self, elapsed: Callable[[], float] | None = None) -> None:
        """Refresh the lease every ``interval`` s on a daemon thread.

        Args:
            elapsed: the campaign's running time so far; written with each heartbeat so a
                killed runner loses at most one interval of ``max_duration`` accounting.
        """
        if self.campaign_id is None:
            raise RuntimeError("acquire or adopt a campaign's lease before heartbeating")
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat,
            args=(self.campaign_id, elapsed),
            name=f"closedloop-lease-{self.campaign_id}",
            daemon=True,
        )
        self._thread.start()

    def _beat(self, campaign_id: int, elapsed: Callable[[], float] | None) -> None:
        while not self._stop.wait(self.interval):
            try:
                held = self.store.renew_lease(
                    campaign_id, self.token, self.ttl, elapsed=elapsed() if elapsed else None
                )
            except Exception as exc:  # a busy or unreachable store: retry next beat
                logger.warning("lease heartbeat for campaign %s failed: %s", campaign_id, exc)
                continue
            if not held:
                # neutral: a `suggest`/`tell` heartbeats its lease too (loop.asktell)
                logger.error(
                    "campaign %s: its lease was taken over by another process", campaign_id
                )
                self.lost.set()
                return
            self.gone = self.store.gone()
            if self.gone is not None:
                logger.error("campaign %s: %s", campaign_id, self.gone)
                return

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread (the lease stays until released or expired)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.interval, 1.0) + 10.0)
            self._thread = None

    def check(self) -> None:
        """Raise ``LeaseLost`` if a heartbeat found the lease taken over, ``StoreGone`` if it
        found the store's file deleted or replaced."""
        if self.gone is not None:
            raise StoreGone(self.gone)
        if self.lost.is_set():
            raise LeaseLost(
                f"campaign {self.campaign_id}: another runner took over this runner's lease "
                "(it stalled for longer than the lease's TTL); stopping without writing more"
            )

    def release(self) -> None:
        """Stop heartbeating and free the campaign (unless the lease was lost)."""
        self.stop_heartbeat()
        if self.campaign_id is not None and not self.lost.is_set():
            try:
                self.store.release_lease(self.campaign_id, self.token)
            except Exception as exc:  # expiry frees it anyway
                logger.warning(
                    "could not release the lease of campaign %s (its expiry frees it): %s",
                    self.campaign_id,
                    first_line(exc, type(exc).__name__),
                )

    def __enter__(self) -> CampaignLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
