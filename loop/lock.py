"""One runner per campaign: a lease row with a heartbeat, taken over when its owner is gone.

A runner inserts (or takes over) the campaign's row in the ``lease`` table before it touches
anything, then a daemon thread pushes the row's expiry forward every ``ttl / 5`` seconds.
Another ``run``/``resume`` of that campaign sees a live lease and refuses, naming the owner.

A lease is stale, and may be taken over, when either

* its owner ran on this very host and that process no longer exists. This is what lets a
  ``resume`` right after a SIGKILL start at once instead of waiting out the TTL; a reused pid
  only makes the check answer "alive", which errs on the safe side (refuse until expiry).
  "This very host" is the hostname *and* the PID namespace (:func:`host_id`): two
  containers sharing the host's network also share its hostname, but not its process ids; or
* its expiry has passed (the owner stopped heartbeating: killed, hung, or its machine lost
  power), **unless** its owner is a process on this host that is *stopped* (Ctrl-Z, SIGSTOP,
  a debugger: ``/proc/<pid>/stat`` state ``T``/``t``). Such a runner is not gone: taking
  its campaign over stored its trial in flight as abandoned ("process died"), and once
  continued it found its lease lost and exited 1, and its RunEngine's abort could stop
  the movers its successor drives (found in review). It is refused instead, with how to
  continue or end it (:func:`frozen_note`). A stopped process that started after the lease
  was taken only reuses the owner's id, and does not keep the lease. Without ``/proc``
  (macOS) a stopped process cannot be told from a hung one: the expiry decides.

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
from typing import NoReturn

from loop.errors import cli_command, first_line
from loop.fmt import span
from loop.store import CampaignLocked, LeaseClaim, LeaseLost, LeaseRow, Store, StoreGone

__all__ = [
    "LEASE_TTL",
    "CampaignLease",
    "CampaignLocked",
    "LeaseLost",
    "describe_lease",
    "frozen_note",
    "host_id",
    "lease_state",
    "live_lease",
    "owner_stopped",
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


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command (``state``, ``ppid``, ...:
    field *n* of proc(5) at index *n* - 3); ``None`` without ``/proc`` or such a process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (command) state ...": the command may hold spaces and parentheses itself
    return stat[stat.rfind(b")") + 2 :].split()


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (Linux's ``/proc``; else ``False``)."""
    fields = _stat(pid)
    return fields is not None and fields[:1] == [b"Z"]


def _started(fields: list[bytes]) -> float | None:
    """When the process of these ``/proc`` fields started, in Unix seconds (``None``: unknown).

    proc(5) gives the start in clock ticks since boot (field 22), ``/proc/stat`` the boot
    time (``btime``, whole seconds: the result is good to about a second).
    """
    try:
        ticks = int(fields[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def owner_stopped(lease: LeaseRow) -> bool:
    """Whether the lease's owner is a process on this host that is stopped right now.

    Stopped: state ``T`` (SIGSTOP, SIGTSTP: Ctrl-Z) or ``t`` (a debugger holds it) in
    ``/proc/<pid>/stat``. A process that started after the lease was taken (more than 2 s
    after ``acquired_at``: the start time is good to a second) has only been given the dead
    owner's id: left stopped, it would otherwise hold the campaign for good. ``False``
    elsewhere than Linux, and for an owner on another host: nothing here can tell.
    """
    if lease.host != host_id() or lease.pid <= 0:
        return False
    fields = _stat(lease.pid)
    if not fields or fields[0] not in (b"T", b"t"):
        return False
    started = _started(fields)
    return started is None or started <= lease.acquired_at + 2.0


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
    """Why ``lease`` may be taken over, or ``None`` while its owner may still be running, or
    is stopped on this host (:func:`owner_stopped`; the module's docstring says why).

    A process of this host that exists, is not stopped and missed its heartbeats is hung (or
    its id was given to another process): it is taken over, and the reason says it exists.
    """
    now = time.time()
    here = lease.host == host_id()
    if here and not pid_alive(lease.pid):
        return f"process {lease.pid} no longer exists on this host"
    if lease.expires >= now:
        return None
    silent = f"its last heartbeat was {span(max(now - lease.heartbeat, 0.0))} ago"
    if not here:
        return silent
    if owner_stopped(lease):
        return None
    return (
        f"{silent}, though process {lease.pid} still exists on this host (hung; waiting for "
        "the store to take writes, a full disk or another program's lock, which its log "
        "says: then it may hold a measurement not yet stored, so free the disk or stop it "
        "with Ctrl-C first; or its id now belongs to another process)"
    )


def lease_state(lease: LeaseRow) -> str | None:
    """What the lease's holder is doing, as ``status --json``'s ``runner.state`` says it:
    ``running`` (heartbeating), ``stopped`` (:func:`owner_stopped`), ``missed heartbeat``
    (its expiry passed: hung, killed on another host, or cut off from the store; the next
    ``resume`` takes it over); ``None`` when its process is gone from this host."""
    here = lease.host == host_id()
    if here and not pid_alive(lease.pid):
        return None
    if owner_stopped(lease):
        return "stopped"
    return "missed heartbeat" if lease.expires < time.time() else "running"


def frozen_note(lease: LeaseRow, then: str) -> str | None:
    """How to get on when the lease's owner is stopped on this host (else ``None``):
    ``process 4818 on this host is stopped (Ctrl-Z?) ...: `fg` ... continues it; ...``.

    ``then``: what continues the campaign once the process ended (``closedloop resume ...``).
    A stopped process keeps a SIGTERM pending until it runs again (the runner handles it:
    a clean stop), hence the ``kill -CONT`` after the ``kill``.
    """
    if not owner_stopped(lease):
        return None
    pid = lease.pid
    silent = max(time.time() - lease.heartbeat, 0.0)
    return (
        f"process {pid} on this host ({lease.owner}) is stopped (Ctrl-Z?) and has not "
        f"heartbeated for {span(silent)}: `fg` in its terminal or `kill -CONT {pid}` "
        f"continues it; `kill {pid}; kill -CONT {pid}` ends it (a clean stop, as Ctrl-C), "
        f"and then {then}"
    )


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
    frozen = frozen_note(lease, f"`{cli_command('resume', url, campaign_id)}` continues it")
    if frozen is not None:
        return (
            f"campaign '{name}' (id {campaign_id}) in {url} is held by a runner that is not "
            f"running: {frozen}; or rename the new campaign"
        )
    return (
        f"campaign '{name}' (id {campaign_id}) is running in {url} right now, driven by "
        f"{describe_lease(lease)}; wait for it or stop it (Ctrl-C) before starting another, "
        "or rename the new campaign"
    )


def describe_lease(lease: LeaseRow) -> str:
    """``host:pid (heartbeat 2 s ago)``, for messages."""
    return f"{lease.owner} (heartbeat {span(max(time.time() - lease.heartbeat, 0.0))} ago)"


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
        self._wake = threading.Event()  # a heartbeat now (beat_now), or the stop
        self._thread: threading.Thread | None = None
        self.shows_proposing = False  # the last heartbeat wrote a planner that slots wait for

    @property
    def claim(self) -> LeaseClaim:
        """The row this runner writes (``Store.create_campaign`` takes it with the campaign)."""
        return LeaseClaim(
            owner=self.owner, host=self.host, pid=self.pid, token=self.token, ttl=self.ttl
        )

    def adopt(self, campaign_id: int) -> None:
        """Record a lease taken together with a new campaign (``Store.create_campaign``)."""
        self.campaign_id = campaign_id

    def check_free(self, campaign_id: int) -> None:
        """Raise the ``CampaignLocked`` that :meth:`acquire` would, now, without taking the
        lease: ``resume`` asks before it says it is resuming (it printed "resuming; ..."
        and then refused, found in review). :meth:`acquire` decides, later."""
        current = self.store.lease(campaign_id)
        if current is not None and current.token != self.token and stale_reason(current) is None:
            self._refuse_live(campaign_id, current)

    def _refuse_live(self, campaign_id: int, current: LeaseRow) -> NoReturn:
        """``CampaignLocked`` for a lease a live runner holds (or a stopped process)."""
        resume = cli_command("resume", self.store.url, campaign_id)
        frozen = frozen_note(current, f"`{resume}` continues the campaign")
        if frozen is not None:
            raise CampaignLocked(
                f"campaign {campaign_id} is held by a stopped process, not taken over: {frozen}",
                owner=current.owner,
            )
        ttl = current.expires - current.heartbeat
        raise CampaignLocked(
            f"campaign {campaign_id} is being run by {describe_lease(current)}; only "
            "one runner may drive a campaign. Stop that runner (Ctrl-C) or wait for "
            f"it; the lease of a runner that died is taken over {span(ttl)} after its "
            "last heartbeat (at once on the same host)",
            owner=current.owner,
        )

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
                self._refuse_live(campaign_id, current)
            if self.store.replace_lease(campaign_id, current.token, self.claim):
                logger.info("took over campaign %s from %s: %s", campaign_id, current.owner, why)
                self.campaign_id = campaign_id
                return f"took over from {current.owner}: {why}"
        raise CampaignLocked(
            f"campaign {campaign_id}: other runners keep taking its lease; try again",
            owner="unknown",
        )

    # ------------------------------------------------------------------ heartbeat
    def start_heartbeat(
        self,
        elapsed: Callable[[], float] | None = None,
        on_beat: Callable[[], None] | None = None,
        proposing: Callable[[], tuple[float, int] | None] | None = None,
    ) -> None:
        """Refresh the lease every ``interval`` s on a daemon thread.

        Args:
            elapsed: the campaign's running time so far; written with each heartbeat so a
                killed runner loses at most one interval of ``max_duration`` accounting.
            on_beat: called after each heartbeat that kept the lease (the runner takes an
                operator's ``closedloop stop`` there); what it raises is logged, and the
                heartbeats go on.
            proposing: since when the planner has been choosing proposals that how many
                idle slots wait for, or ``None``; written with each heartbeat for
                ``status`` (:class:`loop.store.LeaseRow`).
        """
        if self.campaign_id is None:
            raise RuntimeError("acquire or adopt a campaign's lease before heartbeating")
        if self._thread is not None:
            return
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(
            target=self._beat,
            args=(self.campaign_id, elapsed, on_beat, proposing),
            name=f"closedloop-lease-{self.campaign_id}",
            daemon=True,
        )
        self._thread.start()

    def _beat(
        self,
        campaign_id: int,
        elapsed: Callable[[], float] | None,
        on_beat: Callable[[], None] | None,
        proposing: Callable[[], tuple[float, int] | None] | None,
    ) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            waiting = proposing() if proposing is not None else None
            try:
                held = self.store.renew_lease(
                    campaign_id,
                    self.token,
                    self.ttl,
                    elapsed=elapsed() if elapsed else None,
                    proposing=waiting,
                )
            except Exception as exc:  # a busy or unreachable store: retry next beat
                logger.warning("lease heartbeat for campaign %s failed: %s", campaign_id, exc)
                continue
            self.shows_proposing = waiting is not None
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
            if on_beat is not None:
                try:
                    on_beat()
                except Exception as exc:  # e.g. a busy store: asked again next beat
                    logger.warning("campaign %s: after its heartbeat: %s", campaign_id, exc)

    def beat_now(self) -> None:
        """Heartbeat at once rather than at the next interval: the planner's proposal that
        a heartbeat showed slots waiting for has come (``status`` would show it for up to
        an interval more)."""
        self._wake.set()

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread (the lease stays until released or expired)."""
        self._stop.set()
        self._wake.set()
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
                f"campaign {self.campaign_id}: another runner{self._new_owner()} took over "
                "this runner's lease (it stalled for longer than the lease's TTL); stopping "
                "without writing more"
            )

    def _new_owner(self) -> str:
        """`` (host:pid)`` of the runner holding the lease now, or nothing when it cannot be
        read: the message named it or not by which thread saw the loss first."""
        try:
            lease = self.store.lease(self.campaign_id or 0)
        except Exception:
            return ""
        return f" ({lease.owner})" if lease is not None and lease.token != self.token else ""

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
