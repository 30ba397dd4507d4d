"""Evaluate simulator functions on a Dask cluster, behind a detector's trigger Status.

A :class:`DaskExecutor` wraps a ``distributed.Client``: either to a ``LocalCluster`` it starts
itself (worker *processes* on 127.0.0.1, closed with the executor, reachable only with the
throwaway TLS certificate it was started with: :meth:`DaskExecutor.local`) or to a running
scheduler (``tcp://host:8786``, e.g. one that dask-jobqueue started on a Slurm/PBS allocation;
an unencrypted one is warned about once, :func:`_warn_unauthenticated`).
:class:`~simulators.SimDetector` calls :meth:`DaskExecutor.submit` from ``trigger()`` and
completes its Status from the future's done-callback, so the RunEngine, the plan and the
documents are exactly those of an in-process simulator. Each task announces when a worker
starts it (:meth:`DaskExecutor.watch`): until then the trial only waits for a free worker
(more slots than worker threads, an HPC queue still pending), and its ``timeout`` does not
count that wait (the detector's ``queue_waited()`` clock, which the dispatcher subtracts).
A task whose worker is lost while it runs (an HPC job's walltime, a node that dies, or our
own :meth:`~DaskExecutor.abort` of another trial there), and that the scheduler runs again,
is timed from its new start: its lost run and its new wait do not count either. Trials that
wait while no worker is connected at all (batch jobs that never start) are warned about at
a growing interval (:meth:`DaskExecutor._nag`), not only once at connect.

The function travels by cloudpickle: built-in simulators and module-level functions of an
importable module are sent by reference (the worker imports them); a function loaded from a
campaign's ``path/to/file.py`` lives in a module only this process knows, so that module is
registered to be pickled by value.

Failures. A scheduler that does not answer within ``connect_timeout`` raises
:class:`ExecutorUnavailable` naming the address and what to check; so does a port that
accepts the connection but never speaks Dask (the dashboard's 8787 given for the scheduler's
8786), since the handshake is bounded by the same limit; a port that answers in another
protocol (an ssh banner, an HTTP reply) is named as not a scheduler; and a cluster whose
workers cannot import ``simulators`` (a worker that cannot unpickle a task closes itself and
the task would wait for ever). A trial that is aborted (its ``timeout``, a stop) while its
function runs gets its worker restarted (:meth:`DaskExecutor.abort`): a running task cannot
be interrupted, and a worker left busy would hold every later trial sent to it. The worker
is announced to the scheduler as leaving first, so the other trials queued on it (or
running in its other threads) are rescheduled, not failed. A trial aborted while still
queued is only cancelled: no worker is touched. A scheduler
that is lost mid-campaign is reported to :attr:`DaskExecutor.on_lost` (the runner stops the
campaign, resumable) instead of failing one trial after another. A worker that dies while
computing a trial makes its future fail (``KilledWorker``: the local cluster is started with
``distributed.scheduler.allowed-failures: 0``, so a trial whose worker died is not silently
re-run elsewhere); the detector turns that into a failed, *transient* trial (retried under
``max_retries``), and the campaign goes on with the remaining and restarted workers. An
exception the simulator function itself raises (of any type, ``OSError`` included) fails
its trial as it would in-process, and is not retried (:func:`is_infrastructure_error`). A
function that cannot be pickled at all (a module-level lock, open file or connection in its
file) is refused once, when the detector is built (:meth:`DaskExecutor.prepare` raises
:class:`FunctionNotSendable`), not failed trial after trial as if it had raised.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_GRACE = 5.0
"""Seconds beyond ``connect_timeout`` before a probe thread that did not return is given up."""
_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # SIGTERM is TerminateProcess on Windows
_WORKER_GONE_WAIT = 10.0  # s for the scheduler to notice a worker ended by abort()
_SETTLE = 2.0  # s for a cancellation to reach the scheduler and the worker (abort())
#: s at most for one worker (or nanny) to answer a call of abort()'s. A worker answers on its
#: event loop in milliseconds; one already gone (another slot's abort ended it, or it died)
#: held ``Client.run`` for distributed's 30 s connect timeout, and with it Ctrl-C's clean
#: stop (found in review, session 39).
_ASK_TIMEOUT = 5.0
_LOST_REASONS = ("scheduler-connection-lost",)
"""``FutureCancelledError.reason`` when the client lost its scheduler (distributed 2024+)."""

_STARTED_TOPIC = "closedloop-task-started"
"""The Dask event topic on which a task announces that a worker started it (:func:`_call`)."""
_CLUSTER_TOPIC = "all"
"""The scheduler's own event topic: ``add-worker``, ``remove-worker`` (any cause), and a few
calls (``run-function``, ``gather``); :meth:`DaskExecutor._on_cluster_event` reads it."""
_WORKERLESS_FIRST = 60.0
"""Seconds a trial waits for a worker, none connected, before :meth:`DaskExecutor._nag`
first warns; then at twice that wait, four times, ... (see :data:`_WORKERLESS_GAP`)."""
_WORKERLESS_GAP = 3600.0  # s: the warnings' interval stops doubling here (then one an hour)
_KEY_PREFIX = "closedloop-call-"
"""Task keys of :meth:`DaskExecutor.submit`: unique, and known before the task is sent."""
_QUIET_WAIT = 5.0  # s at most to quiet a local cluster's workers before closing it
_HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"
"""distributed.worker's message when a heartbeat's connection to the scheduler closed."""
_USER_MODULE_PREFIX = "_closedloop_user_"  # instruments._build names loaded files like this
_RAISED_BY_FUNCTION = "_closedloop_raised_by_function"
"""Set on an exception the simulator function raised on a worker (it travels back with the
exception's ``__dict__`` when pickled), so it is never taken for the cluster's fault."""

# Where Dask's own failures live: (module, class) pairs, resolved only when distributed is
# already imported (if it is not, none of its exceptions can exist in this process).
_DISTRIBUTED_ERRORS = (
    ("distributed.scheduler", "KilledWorker"),  # the worker died running the task
    ("distributed.scheduler", "NoWorkerError"),  # no worker to run it within the timeout
    ("distributed.scheduler", "NoValidWorkerError"),
    ("distributed.comm.core", "CommClosedError"),  # a scheduler/worker connection closed
    ("distributed.core", "RPCClosed"),
    ("distributed.client", "ClosedClientError"),  # submitted to a client already closed
    ("distributed.exceptions", "WorkerStartTimeoutError"),
)


class ExecutorUnavailable(RuntimeError):
    """The Dask scheduler could not be reached or the local cluster could not start.

    Attributes:
        address: the scheduler address tried (``None`` for a local cluster).
    """

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


class FunctionNotSendable(ValueError):
    """The simulator function cannot be pickled, so it cannot be sent to the Dask cluster.

    A configuration error, raised when the detector is built (before the first trial): the
    function never ran, and every trial would fail the same way. The message names the
    function, its file, the pickling error and the module-level names it comes from.

    Attributes:
        function: the function that cannot be sent.
    """

    def __init__(self, message: str, *, function: Any) -> None:
        super().__init__(message)
        self.function = function


def _call(blob: bytes, inputs: dict[str, Any]) -> Any:
    """What a worker runs: the (cloudpickled) pure function on one inputs dict.

    It first tells the client that it started (:func:`_announce_start`): until then the
    trial only waited for a free worker, which its ``timeout`` does not count.
    An exception the function raises is marked as the function's before it travels back:
    a user's ``OSError`` (a missing data file) or even a ``CommClosedError`` of its own is
    then reported as the function's failure, not retried as the cluster's.
    """
    import cloudpickle

    _announce_start()
    function = cloudpickle.loads(blob)
    try:
        raw = function(inputs)
    except Exception as exc:
        try:
            setattr(exc, _RAISED_BY_FUNCTION, True)
        except (AttributeError, TypeError):  # an exception class without a __dict__
            pass
        raise
    return dict(raw) if isinstance(raw, Mapping) else raw


def _announce_start() -> None:
    """On a worker, in a task: log a :data:`_STARTED_TOPIC` event with the task's key and
    the worker's address, which the scheduler forwards to the subscribed client
    (:meth:`DaskExecutor._on_started`). Best effort: a task that cannot tell (run outside a
    worker) still runs, and its trial's wait then ends only with its result."""
    try:
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(
            _STARTED_TOPIC, {"key": str(worker.get_current_task()), "worker": worker.address}
        )
    except Exception as exc:  # not on a worker, or another distributed version
        logger.debug("could not announce a task's start: %s", exc)


def _infrastructure_types() -> tuple[type[BaseException], ...]:
    """The exception classes of executor failures: cancelled or broken futures, and Dask's
    own (a killed worker, a closed connection to the scheduler or a worker)."""
    types: list[type[BaseException]] = [
        concurrent.futures.CancelledError,  # distributed's FutureCancelledError too
        asyncio.CancelledError,
        concurrent.futures.BrokenExecutor,  # a process pool whose worker died
    ]
    if "distributed" in sys.modules:
        import importlib

        for module_name, name in _DISTRIBUTED_ERRORS:
            try:
                found = getattr(importlib.import_module(module_name), name, None)
            except ImportError:  # another distributed version: that class is not there
                continue
            if isinstance(found, type) and issubclass(found, BaseException):
                types.append(found)
    return tuple(types)


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether a future failed because of the executor (a worker died, a connection closed,
    the future was cancelled) rather than because the simulator function raised.

    Only the former is worth a retry. Anything the user's function raised is the user's,
    whatever its type: an ``OSError`` or ``TimeoutError`` from its own code would fail again
    the same way (and a ``FileNotFoundError`` in-process is not retried either).
    """
    if getattr(exc, _RAISED_BY_FUNCTION, False):
        return False
    return isinstance(exc, _infrastructure_types())


#: Set on a ``KilledWorker`` whose task no worker announced starting
#: (:meth:`DaskExecutor.result`), and how the trial's error then says so: distributed's own
#: text says "all those workers died while running it" of a trial only queued behind
#: another there, which never ran (found in review, session 39). Not "never started": a
#: function that ends its worker at once loses its announcement with it, so such a trial is
#: not sent again either (tried and reverted the same session: it ran twice).
UNANNOUNCED_ATTR = "_closedloop_unannounced"
UNANNOUNCED = (
    " (the worker it was sent to died before it reported starting it: it was queued there "
    "behind another trial, or ended the worker at once)"
)


class _Task:
    """What :class:`DaskExecutor` knows of a pending task: when (``time.monotonic()``) and
    on which worker it started, since when it waits for one (sent, or its worker lost),
    and who to tell (:meth:`DaskExecutor.watch`)."""

    __slots__ = ("listener", "ran", "started", "waiting", "worker")

    def __init__(self) -> None:
        self.started: float | None = None
        self.ran = False  # a worker announced it started it, at any time (never reset)
        self.worker = ""
        self.waiting = time.monotonic()
        self.listener: Callable[[bool, float], None] | None = None


def _tell(listener: Callable[[bool, float], None], waiting: bool, at: float) -> None:
    """Call a :meth:`DaskExecutor.watch` listener; its failure is logged, never raised into
    the client's event loop."""
    try:
        listener(waiting, at)
    except Exception as exc:
        logger.warning("a Dask task's wait listener failed: %s: %s", type(exc).__name__, exc)


class DaskExecutor:
    """A Dask client (and, for ``local``, the cluster it started) for simulated detectors.

    Use :meth:`local` or :meth:`connect`; call :meth:`close` at the end of the campaign.

    Attributes:
        address: the scheduler's address.
        kind: ``local`` or ``dask``.
    """

    def __init__(self, client: Any, cluster: Any, kind: str) -> None:
        self.client = client
        self.cluster = cluster
        self.kind = kind
        self.address: str = str(getattr(client.scheduler, "address", ""))
        self.on_lost: Callable[[str], None] | None = None
        """Called with the reason, on a thread of its own, whenever a trial finds the
        scheduler gone (its future cancelled because the connection was lost, or the client
        closed); it must be idempotent. The runner sets it to its ``request_stop``: without
        a scheduler no trial can finish, so the campaign stops (resumable) rather than
        spending its failure budget on trials that fail at once. Unset, each such trial
        fails (not transient) naming the scheduler."""
        self._lost: str | None = None
        self._lost_lock = threading.Lock()
        self._closed = False
        self._blobs: dict[int, bytes] = {}
        self._functions: list[Any] = []
        self._tasks: dict[str, _Task] = {}  # key -> its start, while its future is pending
        self._tasks_lock = threading.Lock()
        self._stopping = threading.Event()  # set by close(): ends the _nag thread
        self._nagging: threading.Thread | None = None
        self._announced = self._subscribe()

    def _subscribe(self) -> bool:
        """Listen for the tasks' start announcements (:func:`_announce_start`) and for the
        scheduler's removal of workers (:meth:`_on_cluster_event`); whether this client can
        follow the starts. One subscription per topic and client: the scheduler forwards
        every task's event on the topic (another campaign's on a shared scheduler too:
        unknown keys are ignored)."""
        try:
            self.client.subscribe_topic(_STARTED_TOPIC, self._on_started)
            self.client.subscribe_topic(_CLUSTER_TOPIC, self._on_cluster_event)
        except Exception as exc:  # a stand-in client, or one already closed
            logger.debug("cannot follow when Dask tasks start: %s", exc)
            return False
        return True

    def _on_cluster_event(self, event: Any) -> None:
        """The scheduler's event (on the client's event loop): a worker it removed, for any
        reason, gives back the tasks that had started there (:meth:`_requeued`).

        Before this, only a worker :meth:`abort` ended reopened its other tasks' waits; a
        worker lost otherwise (an HPC job at its walltime, a node that died) had its tasks
        rescheduled by the scheduler (``allowed-failures``, 3 by default) while their
        trials' ``timeout`` went on counting: the lost run, the wait for another worker
        (for an HPC queue, minutes) and the re-run, so a trial well within its limit timed
        out. The scheduler logs every removal on this topic before it reschedules the
        worker's tasks, so the wait reopens before the task can start again.
        """
        try:
            _, message = event
            if message.get("action") != "remove-worker":
                return
            worker = str(message["worker"])
        except Exception:  # another version's event, or not a removal
            return
        self._requeued(worker)

    def _on_started(self, event: Any) -> None:
        """A task announced its start (on the client's event loop: quick, never blocking).

        Timed by this process's clock when the announcement arrives (the worker's and the
        scheduler's clocks are other machines'), so a trial's wait ends a few milliseconds
        late, never early."""
        at = time.monotonic()
        try:
            _, message = event
            key, worker = str(message["key"]), str(message.get("worker", ""))
        except Exception:  # not ours: the topic is public
            return
        with self._tasks_lock:
            task = self._tasks.get(key)
            if task is None:  # another client's task, or a future already done
                return
            task.started, task.worker, task.ran = at, worker, True
            listener = task.listener
        if listener is not None:
            _tell(listener, False, at)

    def watch(self, future: Any, listener: Callable[[bool, float], None]) -> bool:
        """Follow ``future``'s wait for a worker: ``listener(False, at)`` when its task
        starts, ``listener(True, at)`` if it has to wait again (``at``: ``time.monotonic()``
        in this process); whether that can be told.

        A trial's ``timeout`` should count the time its function runs, not the time it
        waits in the cluster for a free worker (more trials than worker threads, an HPC
        queue whose jobs have not started): :class:`~simulators.SimDetector` keeps that
        wait on its ``queue_waited()`` clock, which the dispatcher's watchdog subtracts. A
        task already started is reported at once (with its start time); a task that waits
        again is one whose worker :meth:`abort` ended while it ran there too (another
        thread of that worker), or whose worker was lost otherwise (an HPC job's end, a
        dead node), rescheduled by the scheduler: then ``at`` is when its lost run started,
        as that run is lost and its time must not count either (its next start, like its
        first, starts its timeout afresh). The listener runs on the client's event loop or
        the caller's thread, and must be quick; it is dropped (never called again) once the
        future's result is fetched (:meth:`result`). ``False``: this executor cannot tell
        when its tasks start (the listener is never called).
        """
        key = str(getattr(future, "key", ""))
        with self._tasks_lock:
            task = self._tasks.get(key) if self._announced else None
            if task is None:
                return False
            task.listener = listener
            started = task.started
        if started is not None:
            _tell(listener, False, started)
        return True

    def _forget(self, future: Any) -> None:
        """The future's result is in hand (or it was never sent): drop its task's record."""
        with self._tasks_lock:
            self._tasks.pop(str(getattr(future, "key", "")), None)

    def _requeued(self, worker: str, aborted: Any = None) -> None:
        """``worker`` is gone (ended by :meth:`abort`, or lost): the tasks that had started
        there (other than the aborted one) are rescheduled and wait for a worker again.

        Each re-runs from its beginning, so its listener is told that it waits since its
        lost run started: its trial's ``timeout`` then counts from the new start, as it
        did from the first. Idempotent (an abort's own removal is also reported by the
        scheduler, :meth:`_on_cluster_event`): a task already waiting again, or already
        restarted on another worker, is left as it is.
        """
        at = time.monotonic()
        told: list[tuple[Callable[[bool, float], None], float]] = []
        with self._tasks_lock:
            for key, task in self._tasks.items():
                if task.worker != worker or task.started is None or key == str(aborted):
                    continue
                if task.listener is not None:
                    told.append((task.listener, task.started))
                task.started, task.worker, task.waiting = None, "", at
        for listener, since in told:
            _tell(listener, True, since)

    def _nag(self) -> None:
        """While trials wait with no worker connected to the scheduler, warn, at a growing
        interval, for how long and what to check (a thread, from the first :meth:`submit`).

        A campaign whose batch jobs never start (a wrong account or partition, a job
        script that fails at once, a queue held for maintenance) otherwise waited without
        end after the one warning at connect, and a log read the next morning did not say
        why. The warnings come when the longest wait reaches :data:`_WORKERLESS_FIRST`,
        then twice that, four times, ..., at most :data:`_WORKERLESS_GAP` apart: visible in
        a log, not one line a second. Only with no worker at all: trials queued behind
        busy workers are the cluster's normal work.

        The wait itself is not bounded: a trial that has not started has lost nothing, HPC
        jobs pending for hours are ordinary (a busy partition, a reservation), and any
        limit short enough to matter would stop campaigns that were about to run. An
        operator who wants one has them already: ``budget.max_duration``, Ctrl-C (the
        waiting trials are stored ``abandoned``, and ``closedloop resume`` goes on), or
        the scheduler's own ``distributed.scheduler.no-workers-timeout``.
        """
        due = _WORKERLESS_FIRST
        while not self._stopping.wait(min(5.0, _WORKERLESS_FIRST / 4)):
            now = time.monotonic()
            with self._tasks_lock:
                waits = [
                    now - task.waiting for task in self._tasks.values() if task.started is None
                ]
            if not waits:
                due = _WORKERLESS_FIRST
                continue
            longest = max(waits)
            if longest < due:
                continue
            due = longest + min(due, _WORKERLESS_GAP)
            if self._workers() == 0:
                logger.warning("%s", self._workerless(len(waits), longest))

    def _workers(self) -> int | None:
        """How many workers the scheduler has (0 or more), or ``None`` if it cannot tell."""
        try:
            return len(self.client.scheduler_info(n_workers=1)["workers"])
        except Exception as exc:  # closing, or the scheduler gone (reported elsewhere)
            logger.debug("asking the Dask scheduler for its workers: %s", exc)
            return None

    def _workerless(self, count: int, waited: float) -> str:
        """The warning of :meth:`_nag`: ``count`` trials, the longest waiting ``waited`` s."""
        trials = "1 trial has" if count == 1 else f"{count} trials have"
        head = (
            f"{trials} waited {_span(waited)} for a Dask worker, and no worker is connected to "
            f"the scheduler at {self.address}: "
        )
        if self.cluster is not None:
            return head + (
                "the local cluster's worker processes are not running (run with --verbose to "
                "see distributed's logs); the trials start when a worker does"
            )
        return head + (
            "check that the cluster's batch jobs are running (`squeue -u $USER`, "
            "`qstat -u $USER`) and, if they ended or never started, the cluster's job script "
            "(`print(cluster.job_script())`) and the jobs' logs; the trials start as soon as "
            "a worker joins (Ctrl-C stops the campaign, resumable)"
        )

    @classmethod
    def local(cls, workers: int = 2, *, connect_timeout: float = 10.0) -> DaskExecutor:
        """Start a ``LocalCluster``: ``workers`` processes with one thread each, on loopback,
        speaking mutual TLS with a throwaway certificate (``tls://127.0.0.1``).

        Dask's ``tcp://`` comms authenticate no one, and loopback is no boundary on a shared
        host (a beamline's control machine): any local user could connect to the scheduler,
        a nanny or a worker and run code there as the campaign's user, with its files and
        its EPICS access (found in review). ``Security.temporary()`` makes a key and a
        self-signed certificate in this process's memory, never on disk; the scheduler,
        nannies, workers and client each present it and accept only peers that present it
        too. The nannies hand it to their worker processes over their private pipe, so no
        other process can learn it. It also satisfies ``distributed.comm.require-encryption``
        (a setting meant for an HPC cluster's TLS), which the plain cluster had to refuse.
        The certificate files of dask's configuration (for a ``kind: dask`` cluster) are
        not used: a cluster that lives as long as the campaign needs no others. The cost, on
        a loaded 2-core machine: about 0.4 s more start-up (the RSA key, the handshakes) and
        a few milliseconds per task, nothing beside a simulation worth sending to a cluster.

        Raises:
            ExecutorUnavailable: the cluster could not start (``cryptography``, which makes
                the certificate, missing included).
        """
        import dask
        from distributed import Client, LocalCluster
        from distributed.security import Security

        _quiet_distributed()
        try:
            security = Security.temporary()
        except ImportError as exc:  # cryptography: a closedloop dependency, so a broken install
            raise ExecutorUnavailable(
                "`executor: {kind: local}` secures its cluster with a throwaway TLS certificate, "
                "made with the `cryptography` package, which is not installed in this Python "
                f"({sys.executable}): install it (`{sys.executable} -m pip install cryptography`"
                "), or use `kind: inprocess`"
            ) from exc
        except (ValueError, TypeError) as exc:  # e.g. an unknown distributed.comm.tls.min-version
            raise ExecutorUnavailable(
                f"dask's TLS configuration is not valid ({type(exc).__name__}: {exc}); fix "
                "distributed.comm.tls.* in dask's configuration (~/.config/dask/, DASK_* "
                "variables)"
            ) from exc
        # The cluster object (in this process) closes a worker's nanny for good when no
        # worker of its name is back `lost-worker-timeout` (15 s) after one left. A trial
        # aborted while its function runs ends that worker's process (_end_worker), and its
        # nanny starts another; two aborts 15 s apart caught the restart under way, the
        # only nanny was closed, and the campaign waited for a worker for ever (found in
        # review). This cluster's nannies restart their workers: none is given up on. Read
        # by distributed when a worker leaves, so set for the process, not only here.
        dask.config.set({"distributed.deploy.lost-worker-timeout": "3650 days"})
        try:
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    protocol="tls",
                    security=security,
                    # No dashboard (None turns only the dashboard *pages* off), and the
                    # scheduler's HTTP server on a free loopback port, never 8787: a second
                    # campaign on this machine must not collide with the first.
                    dashboard_address=None,
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    # The workers' own log, in their processes: a function's exception
                    # is the trial's error line already (distributed.worker's "Compute
                    # Failed" repeated it in 7 lines, found in review); --verbose shows it.
                    silence_logs=_worker_log_level(),
                    # Ctrl-C is the campaign's to handle, not each worker's (see the module).
                    preload=["simulators._dask_worker"],
                )
        except Exception as exc:
            raise ExecutorUnavailable(
                f"could not start a local Dask cluster with {workers} worker(s): "
                f"{type(exc).__name__}: {exc}; "
                + (_main_guard_hint() or "try fewer `workers` or `kind: inprocess`")
            ) from exc
        try:
            client = Client(cluster, timeout=connect_timeout, security=security)
        except Exception as exc:
            cluster.close()
            raise ExecutorUnavailable(
                f"could not connect to the local Dask cluster: {type(exc).__name__}: {exc}"
            ) from exc
        logger.info(
            "started a local Dask cluster at %s (%d workers)", cluster.scheduler_address, workers
        )
        return cls(client, cluster, "local")

    @classmethod
    def connect(cls, address: str, *, connect_timeout: float = 10.0) -> DaskExecutor:
        """Connect to a running scheduler at ``address`` within ``connect_timeout`` s.

        ``connect_timeout`` bounds the TCP connection and then, separately, the Dask
        handshake (:func:`_probe_scheduler`): a port that accepts but is not a scheduler (the
        dashboard's, an ssh port, a proxy) would otherwise hold the handshake for ever, and
        the error says which step failed. Then every worker must be able to import
        ``simulators`` (see :meth:`check_workers`).

        A ``tls://`` address is reached with the TLS settings of dask's own configuration
        (``distributed.comm.tls.ca-file``, ``.client.cert``, ``.client.key``; see
        :func:`_connection_args`); missing, unreadable or refused, they are named in the
        error with what to set, not reported as a scheduler that did not answer.

        Raises:
            ExecutorUnavailable: nothing answered in time, or not as a Dask scheduler, or
                not with the TLS this machine is configured for, or a worker cannot import
                ``simulators`` (the message names the address or the workers, and what to
                check).
        """
        from distributed import Client

        _quiet_distributed()
        try:
            _probe_scheduler(address, connect_timeout)
        except (_TLSProblem, _UnknownHost) as exc:  # its message says what to fix
            raise ExecutorUnavailable(str(exc), address=address) from exc
        except _NotAScheduler as exc:
            raise ExecutorUnavailable(
                f"something answered at {address} but not as a Dask scheduler (an ssh or "
                "HTTP port?); give the scheduler's address, e.g. tcp://host:8786 (its port is "
                "8786 by default; 8787 is its dashboard's)",
                address=address,
            ) from exc
        except Exception as exc:
            # The probe's own errors (OSError, TimeoutError) say what failed and for how long.
            why = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            raise ExecutorUnavailable(_unreachable(address, why), address=address) from exc
        try:
            client = Client(address, timeout=connect_timeout, set_as_default=False)
        except Exception as exc:
            raise ExecutorUnavailable(
                _unreachable(address, f"{type(exc).__name__}: {exc}"), address=address
            ) from exc
        executor = cls(client, None, "dask")
        _warn_unauthenticated(address)
        try:
            executor.check_workers(connect_timeout)
        except BaseException:
            executor.close()
            raise
        return executor

    def check_workers(self, timeout: float) -> None:
        """Refuse a cluster whose workers cannot import ``simulators``.

        Every task is ``simulators._executor._call``, sent by reference: a worker that
        cannot import it cannot even read the task, closes itself (gracefully, so nothing
        restarts it) and the trial waits for ever. Checking the workers present now turns
        that into one error at connect time. Workers that join later (an adaptive
        cluster) are not checked: start them from the same environment.

        Raises:
            ExecutorUnavailable: naming the workers that cannot import it, and why.
        """
        outcome: list[Any] = []

        def ask() -> None:
            try:
                # A stdlib function travels by reference to any worker; importing the
                # submodule imports the package and everything a task needs from it.
                outcome.append(
                    self.client.run(
                        importlib.util.find_spec, "simulators._executor", on_error="return"
                    )
                )
            except Exception as exc:
                outcome.append(exc)

        thread = threading.Thread(target=ask, name="closedloop-dask-check", daemon=True)
        thread.start()
        thread.join(timeout + _GRACE)
        if not outcome or isinstance(outcome[0], Exception):
            why = outcome[0] if outcome else f"no answer within {timeout:g} s"
            logger.warning("could not check the Dask workers at %s: %s", self.address, why)
            return
        missing = {
            str(worker): (f"{type(got).__name__}: {got}" if got is not None else "not found")
            for worker, got in outcome[0].items()
            if got is None or isinstance(got, BaseException)
        }
        if missing:
            listed = "; ".join(f"{worker} ({why})" for worker, why in sorted(missing.items()))
            raise ExecutorUnavailable(
                f"{len(missing)} Dask worker(s) at {self.address} cannot import closedloop's "
                f"`simulators` package, which every trial runs through: {listed}; install "
                "closedloop in the workers' Python environment (the same one as this "
                "machine's, e.g. the environment dask-jobqueue starts them in)",
                address=self.address,
            )
        if not outcome[0]:
            # A WARNING (the CLI hides INFO): without it a campaign waits in silence, each
            # trial timing out, while a dask-jobqueue allocation is still pending.
            logger.warning(
                "no Dask worker is connected to the scheduler at %s yet: trials wait for "
                "one (their `timeout` starts when a worker starts them); start workers "
                "(`dask worker %s`), or check that your dask-jobqueue jobs are running",
                self.address,
                self.address,
            )

    def prepare(self, function: Callable[[dict[str, Any]], Mapping[str, Any]]) -> None:
        """Pickle ``function`` now, once, for every trial :meth:`submit` sends.

        :class:`~simulators.SimDetector` calls this when it is built. A function that
        cannot be pickled (its file holds a module-level ``threading.Lock``, an open file, a
        connection) is then one configuration error before the campaign starts; pickled at
        the first submit, it failed every trial as if the function had raised ``TypeError``,
        spending ``max_failures`` on a function that never ran (found in review).

        Raises:
            FunctionNotSendable: naming the function, its file, the pickling error, and the
                fix (create such objects inside the function, or ``executor: inprocess``).
        """
        self._blob(function)

    def submit(
        self, function: Callable[[dict[str, Any]], Mapping[str, Any]], inputs: Mapping[str, Any]
    ) -> Any:
        """Submit ``function(inputs)``; returns a ``distributed.Future`` (never cached).

        Raises:
            FunctionNotSendable: ``function`` cannot be pickled (see :meth:`prepare`).
        """
        blob = self._blob(function)
        key = f"{_KEY_PREFIX}{uuid.uuid4().hex}"
        with self._tasks_lock:  # before it is sent: its start may be announced at once
            self._tasks[key] = _Task()
            if self._nagging is None and self._announced and not self._closed:
                self._nagging = threading.Thread(
                    target=self._nag, name="closedloop-dask-nag", daemon=True
                )
                self._nagging.start()
        try:
            future = self.client.submit(_call, blob, dict(inputs), key=key)
        except BaseException:
            self._forget(types.SimpleNamespace(key=key))
            raise
        return future

    def result(self, future: Any, timeout: float | None = None) -> Any:
        """``future``'s result (or its exception raised), its task's record dropped once the
        result is in hand.

        A task's result stays on the worker that computed it until it is fetched. If that
        worker dies first (another trial's function crashed it, an HPC job ended), the
        scheduler computes the task again, and fetching waits for that re-run. The task's
        record (its start, its worker, its listener) is therefore kept until now, not
        dropped when the future first finished: the worker's removal then reopens the
        trial's wait from the lost run's start, and the re-run starts its ``timeout`` afresh,
        as for a task lost while it ran. Dropped when the future finished, a trial whose
        result was lost this way timed out while its function had run well within its
        limit each time (found in review: three lost results of a 0.5 s function, and a
        5 s timeout).

        A ``KilledWorker`` whose task no worker announced starting is marked
        (:data:`UNANNOUNCED_ATTR`), so the trial's error can say so.
        """
        try:
            return future.result(timeout)
        except Exception as exc:
            if type(exc).__name__ == "KilledWorker" and self._unannounced(future):
                setattr(exc, UNANNOUNCED_ATTR, True)
            raise
        finally:
            self._forget(future)

    def _unannounced(self, future: Any) -> bool:
        """Whether no worker announced starting ``future``'s task (and starts are announced
        on this cluster at all: without that, nothing can be said)."""
        with self._tasks_lock:
            task = self._tasks.get(str(getattr(future, "key", "")))
            return self._announced and task is not None and not task.ran

    def _blob(self, function: Callable[[dict[str, Any]], Mapping[str, Any]]) -> bytes:
        """``function`` cloudpickled (cached: a campaign sends the same function each trial)."""
        blob = self._blobs.get(id(function))
        if blob is None:
            import cloudpickle

            module = sys.modules.get(getattr(function, "__module__", "") or "")
            if module is not None and module.__name__.startswith(_USER_MODULE_PREFIX):
                # Only this process can import a campaign's file, and the modules of its
                # folder it imported (instruments._build._load_file): send their code along.
                for other in _folder_modules(module):
                    cloudpickle.register_pickle_by_value(other)
            try:
                blob = cloudpickle.dumps(function)
            except Exception as exc:  # TypeError, PicklingError, RecursionError, ...
                raise FunctionNotSendable(
                    _not_sendable(function, exc, self.kind), function=function
                ) from exc
            self._blobs[id(function)] = blob
            self._functions.append(function)  # keeps id() unique while cached
        return blob

    def abort(self, future: Any) -> None:
        """Cancel ``future``; if its function is running, end the worker process running it.

        ``Future.cancel`` only releases the result: a function already running goes on in
        the worker's thread (a Python thread cannot be interrupted), the scheduler counts the
        worker free and gives it the next trials, which then wait behind the runaway one and
        time out in turn. So the worker process running it is killed and its nanny starts a
        fresh one, as after a crash; not ``Client.restart_workers``, whose graceful restart
        first waits seconds for a close that cannot happen while the function runs.

        Only a function that is running ends its worker (:meth:`_running_on` asks the
        worker). A trial still queued (more trials than worker threads, or workers still
        starting) is only cancelled: the scheduler's ``processing`` lists every task
        *assigned* to a worker, queued ones included, and killing the worker a queued trial
        was assigned to killed another slot's healthy trial running there (found in
        review). The worker is unregistered as leaving on purpose before it is killed
        (:meth:`_end_worker`), so the other trials queued on it, or running in its other
        threads, are sent to another worker instead of failing as ``KilledWorker``. A
        worker without a nanny would not come back, so it is left alone (logged): it stays
        busy until the function returns.
        """
        if future.done():
            return
        worker: str | None = None
        key = getattr(future, "key", None)
        try:
            worker = next((w for w, keys in self.client.processing().items() if key in keys), None)
        except Exception as exc:  # the client is closing: nothing left to find
            logger.debug("looking up the worker of a Dask future: %s", exc)
        try:
            future.cancel()
        except Exception as exc:
            logger.debug("cancelling a Dask future: %s", exc)
        if worker is None:  # still queued in the scheduler: cancelled, it will never run
            return
        pid = self._running_on(worker, key)
        if pid is None:  # it was queued on that worker, behind another trial: cancelled
            return
        try:
            nanny = self.client.scheduler_info()["workers"].get(worker, {}).get("nanny")
        except Exception as exc:
            logger.debug("asking the scheduler about worker %s: %s", worker, exc)
            return
        if not nanny:
            logger.warning(
                "Dask worker %s has no nanny to restart it: it stays busy until the aborted "
                "trial's function returns",
                worker,
            )
            return
        logger.warning(
            "a trial was aborted while its function ran on Dask worker %s: ending that "
            "worker's process so the next trials do not wait behind it",
            worker,
        )
        self._end_worker(worker, str(nanny), pid, key)

    def _running_on(self, worker: str, key: Any) -> int | None:
        """The pid of ``worker`` if one of its threads runs the task ``key``, else ``None``.

        Asked after the future was cancelled, so the answer cannot go stale: a task the
        worker only held (assigned, waiting for a thread) is dropped when the scheduler's
        cancellation reaches it and never starts, one already started shows in its threads
        until the function returns. The worker answers on its event loop, even while its
        task threads are busy; while it still holds the task unstarted (the cancellation
        on its way), it is asked again, for :data:`_SETTLE` s at most.
        """
        deadline = time.monotonic() + _SETTLE
        while True:
            try:
                answers = self.client.run(
                    _task_activity,
                    key,
                    workers=[worker],
                    on_error="return",
                    callback_timeout=_ASK_TIMEOUT,
                )
            except Exception as exc:  # the client is closing, or the worker is gone
                logger.debug("asking Dask worker %s about its task: %s", worker, exc)
                return None
            answer = answers.get(worker)
            if not isinstance(answer, tuple):  # the worker is gone, or could not answer
                logger.debug("Dask worker %s did not say what it runs: %r", worker, answer)
                return None
            activity, pid = answer
            if activity == "executing":
                return int(pid)
            if activity != "queued" or time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def _end_worker(self, worker: str, nanny: str, pid: int, key: Any) -> None:
        """Kill ``worker``'s process ``pid`` through its ``nanny``, which starts a new one.

        First the scheduler is told that the worker leaves on purpose
        (:meth:`_announce_leaving`): a worker that dies unannounced makes every task
        assigned to it suspicious, and with ``allowed-failures: 0`` each fails as
        ``KilledWorker``, trials only queued behind the runaway one included. Announced,
        they are rescheduled (on the fresh worker, or another). Only once the scheduler has
        dropped the cancelled task, else it would reschedule that one too and run it again
        elsewhere; if it cannot be told, the worker is killed unannounced, as before.
        """
        self._quiet(worker)
        announced = self._released(worker, key) and self._announce_leaving(worker)
        try:
            # A stdlib function travels by reference. Sent to the nanny (same host, and it
            # answers, so the scheduler logs no failed call), which then starts a fresh
            # worker as after any crash. Addressed directly: an unregistered worker's nanny
            # is no longer known to the scheduler as such.
            self.client.run(os.kill, pid, _KILL, workers=[nanny], callback_timeout=_ASK_TIMEOUT)
        except Exception as exc:
            logger.warning("could not end Dask worker %s: %s: %s", worker, type(exc).__name__, exc)
            return
        self._requeued(worker, key)
        if announced:
            return
        # Until the scheduler has seen it go, it counts the cancelled worker free and may hand
        # it the next trial, which would then die with it (KilledWorker).
        deadline = time.monotonic() + _WORKER_GONE_WAIT
        while time.monotonic() < deadline:
            try:
                if worker not in self.client.scheduler_info()["workers"]:
                    return
            except Exception:  # the client is closing: nothing left to wait for
                return
            time.sleep(0.05)
        logger.warning("Dask worker %s was ended but the scheduler still lists it", worker)

    def _quiet(self, worker: str) -> None:
        """Stop ``worker``'s heartbeats before it is announced as leaving and killed.

        A heartbeat that reached the scheduler between the two was answered "missing", and
        the worker then closed itself and its nanny for good ("Scheduler was unaware of
        this worker; shutting down"): no fresh worker started, and the campaign's trials
        waited for one without end (1 of 3 test-suite runs; found in CI). The worker's
        event loop answers while its task threads are busy. Best effort: a worker that
        cannot be asked is ended as before.
        """

        async def quiet(dask_worker: Any) -> None:
            dask_worker.periodic_callbacks["heartbeat"].stop()

        try:
            self.client.run(
                quiet, workers=[worker], on_error="return", callback_timeout=_ASK_TIMEOUT
            )
        except Exception as exc:  # the client is closing
            logger.debug("stopping Dask worker %s's heartbeats: %s", worker, exc)

    def _announce_leaving(self, worker: str) -> bool:
        """Have the scheduler remove ``worker`` as an expected departure, its tasks
        rescheduled, without closing it; whether that was done.

        ``Scheduler.remove_worker(expected=True, close=False)``, run in the scheduler's
        process. Not through its ``unregister`` call: the RPC layer takes ``close`` for
        itself, so the scheduler would also tell the worker to close, gracefully, and its
        nanny with it, which then does not start a fresh one. The function is a closure,
        so cloudpickle sends it by value: a scheduler without closedloop installed runs it
        too. One that refuses (``distributed.scheduler.pickle: false``, another signature)
        leaves the kill unannounced.
        """
        stimulus_id = f"closedloop-abort-{time.time()}"

        async def remove(dask_scheduler: Any) -> Any:
            return await dask_scheduler.remove_worker(
                address=worker, stimulus_id=stimulus_id, expected=True, close=False
            )

        try:
            self.client.run_on_scheduler(remove)
        except Exception as exc:
            logger.debug("announcing the end of Dask worker %s: %s", worker, exc)
            return False
        return True

    def _released(self, worker: str, key: Any) -> bool:
        """Whether the scheduler has dropped the cancelled ``key`` from ``worker``'s tasks
        (the cancellation travels on its own stream), waiting :data:`_SETTLE` s at most."""
        deadline = time.monotonic() + _SETTLE
        while True:
            try:
                if key not in self.client.processing(workers=[worker]).get(worker, ()):
                    return True
            except Exception as exc:
                logger.debug("asking the scheduler about worker %s: %s", worker, exc)
                return False
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def lost(self, exc: BaseException | None = None) -> str | None:
        """Why no trial can run on this executor any more, or ``None`` if it still can.

        True when the client is closed or closing (it gave up reconnecting), or ``exc`` is
        the error of a future cancelled because the connection to the scheduler was lost,
        or of a submit to a closed client.
        """
        if self._closed:
            return None  # closed on purpose, at the end of the campaign
        gone = getattr(self.client, "status", "running") in ("closing", "closed")
        if exc is not None and not gone and not getattr(exc, _RAISED_BY_FUNCTION, False):
            if getattr(exc, "reason", None) in _LOST_REASONS:
                gone = True
            elif type(exc).__name__ == "ClosedClientError":
                gone = True
        if not gone:
            return None
        return (
            f"the Dask scheduler at {self.address} is gone (the connection to it was lost); "
            "restart it (or check the network), then resume the campaign"
        )

    def report_lost(self, reason: str) -> bool:
        """Tell :attr:`on_lost` that the scheduler is gone; whether anyone listens.

        A caller that gets ``True`` may leave its measurement pending: the listener stops
        the campaign, which aborts it. Every report is passed on (logged once), not only
        the first: a trial that started while the first stop was being delivered must be
        aborted too, and a stop request is idempotent.
        """
        callback = self.on_lost
        if callback is None:
            return False
        with self._lost_lock:
            first, self._lost = self._lost is None, self._lost or reason
        if first:
            logger.warning("%s", reason)

        def tell() -> None:
            try:
                callback(reason)
            except Exception as exc:
                logger.warning("the executor's on_lost callback failed: %s", exc)

        # On a thread of its own: the callback aborts runs, and the caller may be the
        # RunEngine's thread (a trigger) or the Dask client's event loop (a callback).
        threading.Thread(target=tell, name="closedloop-dask-lost", daemon=True).start()
        return True

    def close(self) -> None:
        """Close the client and, for a local cluster, its workers (idempotent).

        A local cluster's workers are told first to stop their heartbeats and to drop the
        one error a heartbeat caught in the shutdown logs (:func:`_quiet_worker_shutdown`):
        closing the cluster retires the workers and then ends the scheduler, and a worker
        whose heartbeat was in flight then printed a 30-line ``CommClosedError`` traceback
        ("Failed to communicate with scheduler during heartbeat") on a loaded machine.
        Only in this closing window, and only on the workers this executor started: every
        other record, and the same error during the campaign, stays visible.
        """
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self.cluster is not None:
            self._quiet_workers()
        if self._announced:
            try:
                # Else the scheduler publishes this client's own removal on the topic, to
                # this client, whose connection is closing: a CRITICAL "Closed comm" record
                # and its traceback in the scheduler's log (this process's, for `local`).
                # Sent on the same stream as the close, so it arrives first.
                self.client.unsubscribe_topic(_CLUSTER_TOPIC)
            except Exception as exc:
                logger.debug("unsubscribing from the Dask scheduler's events: %s", exc)
        try:
            self.client.close()
        except Exception as exc:  # a scheduler already gone
            logger.debug("closing the Dask client: %s", exc)
        if self.cluster is not None:
            try:
                self.cluster.close()
            except Exception as exc:
                logger.warning("closing the local Dask cluster: %s", exc)

    def _quiet_workers(self) -> None:
        """Run :func:`_quiet_worker_shutdown` on every worker, bounded in time (a scheduler
        already gone must not hold the close)."""
        if getattr(self.client, "status", "running") != "running":
            return
        done = threading.Event()

        def run() -> None:
            try:
                self.client.run(_quiet_worker_shutdown, on_error="return")
            except Exception as exc:  # the cluster is going anyway
                logger.debug("quieting the Dask workers before closing: %s", exc)
            finally:
                done.set()

        thread = threading.Thread(target=run, name="closedloop-dask-quiet", daemon=True)
        thread.start()
        if not done.wait(_QUIET_WAIT):
            logger.debug("quieting the Dask workers took over %g s; closing anyway", _QUIET_WAIT)

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _span(seconds: float) -> str:
    """A wait for a log line: ``45 s``, ``12 min``, ``2 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _not_sendable(function: Any, exc: BaseException, kind: str) -> str:
    """Why ``function`` cannot go to the cluster, and the fix: ``function measure (inst.py)
    cannot be sent to the Dask cluster (executor: local): TypeError: cannot pickle
    '_thread.lock' object, from its module-level LOCK (a lock); ...``."""
    name = getattr(function, "__name__", None) or type(function).__name__
    code = getattr(function, "__code__", None)
    where = ""
    if code is not None:
        where = f" ({code.co_filename.replace(chr(92), '/').rsplit('/', 1)[-1]})"
    culprits = _unpicklable_globals(function)
    source = f", from its module-level {', '.join(culprits)}" if culprits else ""
    return (
        f"function {name}{where} cannot be sent to the Dask cluster (executor: {kind}): "
        f"{type(exc).__name__}: {exc}{source}; every value a function uses travels with it, "
        "so keep locks, open files and connections out of the module level (create them "
        "inside the function), or run it in this process with `executor: {kind: inprocess}`"
    )


def _unpicklable_globals(function: Any, seen: set[int] | None = None) -> list[str]:
    """The module-level names ``function`` uses that cannot be pickled: ``LOCK (a lock)``,
    or ``LOCK (a lock, used by helper)`` when a helper function it calls holds it."""
    import cloudpickle

    seen = set() if seen is None else seen
    seen.add(id(function))
    code = getattr(function, "__code__", None)
    scope = getattr(function, "__globals__", None)
    if code is None or not isinstance(scope, dict):
        return []
    names: list[str] = []
    codes = [code]
    while codes:  # the function's own names and those of the lambdas/comprehensions in it
        current = codes.pop()
        names += [n for n in current.co_names if n not in names]
        codes += [c for c in current.co_consts if isinstance(c, types.CodeType)]
    found: list[str] = []
    for name in names:
        if name not in scope or isinstance(scope[name], types.ModuleType):
            continue
        value = scope[name]
        try:
            cloudpickle.dumps(value)
        except Exception:
            if isinstance(value, types.FunctionType) and id(value) not in seen:
                inner = _unpicklable_globals(value, seen)
                if inner:
                    found += [f"{n[:-1]}, used by {name})" for n in inner]
                    continue
            found.append(f"{name} (a {type(value).__name__})")
    return found


class _UnknownHost(Exception):
    """The address's host name does not resolve (DNS says there is no such host): final,
    not retried until ``connect_timeout`` and then reported as a port nothing accepted on,
    with a longer timeout among the fixes (found in review, session 39)."""


def _unknown_host(exc: BaseException) -> bool:
    """Whether ``exc``'s innermost cause says its host name is not known: ``EAI_NONAME``
    (a typo, a host that does not exist), not ``EAI_AGAIN``, a DNS server's hiccup, which
    is retried like a refusal."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME


class _NotAScheduler(Exception):
    """Something answered at the address, but not with Dask's handshake (an ssh banner, an
    HTTP reply): a port of another service was given for the scheduler's."""


def _probe_scheduler(address: str, timeout: float) -> None:
    """Open one Dask connection to ``address`` and complete its handshake.

    Two steps, each timed on its own, so that the error says which one failed: the TCP
    connection (retried until ``timeout``, as Dask does, for a scheduler still starting),
    then the handshake, whose reply must come within another ``timeout``.
    ``Client(timeout=...)`` bounds the connection only: the handshake after it waits for
    the peer's first message with no limit, for ever when the port accepts but never speaks
    Dask. Timing both under one limit (as before) let a refused port, retried until the
    limit, race the outer timeout and be reported as "accepted but no handshake". Runs on
    its own event loop in a daemon thread so a caller's running loop is never touched.

    Raises:
        OSError: nothing accepted the connection (refused, unreachable, an unknown host),
            or the peer closed it during the handshake.
        TimeoutError: the connection was accepted but no handshake came within ``timeout``.
        _NotAScheduler: the peer answered, not in Dask's protocol (an ssh or HTTP port).
        _TLSProblem: a ``tls://`` address without a TLS configuration, with one that cannot
            be loaded, or whose certificates the scheduler and this machine do not accept
            (not retried: a refused certificate is refused again); or a ``tcp://`` address
            where dask's configuration requires encryption (see :func:`_connection_args`).
    """
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import get_backend

    connection_args = _connection_args(address)
    scheme, location = parse_address(address)
    connector = get_backend(scheme).get_connector()
    tls = scheme == "tls"

    async def tcp_connect() -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause, refused = 0.05, None
        while True:
            left = deadline - loop.time()
            if refused is not None and left <= 0:
                raise OSError(
                    f"nothing accepted the connection for {timeout:g} s: {_root_cause(refused)}"
                ) from refused
            try:
                return await asyncio.wait_for(
                    connector.connect(location, deserialize=True, **connection_args),
                    max(left, 0.01),
                )
            except TimeoutError as exc:  # asyncio's too (3.11+); also an OSError: first
                raise OSError(
                    f"no reply to the TCP connection within {timeout:g} s: a wrong host, "
                    "or a firewall?"
                ) from exc
            except ValueError as exc:  # tornado: the peer spoke before the TLS handshake
                if tls:
                    raise _TLSProblem(_not_tls(address, exc)) from exc
                raise
            except OSError as exc:  # refused (a scheduler still starting?): retry, as Dask
                if _unknown_host(exc):
                    raise _UnknownHost(
                        f"the host name in {address} is not known ({_root_cause(exc)}); check "
                        "the host name in `executor.address` (the scheduler's machine, as "
                        "`dask scheduler` printed its address)"
                    ) from exc
                refusal = _ssl_error(exc) if tls else None
                if refusal is not None and getattr(refusal, "reason", "") in _NOT_TLS:
                    raise _TLSProblem(_not_tls(address, refusal)) from exc
                if refusal is not None:  # a certificate refused: refused again, so final
                    raise _TLSProblem(_tls_refused(address, refusal)) from exc
                refused = exc
                await asyncio.sleep(min(pause, max(deadline - loop.time(), 0.0)))
                pause = min(pause * 2, 1.0)

    async def handshake() -> None:
        comm = await tcp_connect()
        try:
            # What distributed.comm.connect does once connected: send ours, read theirs.
            await comm.write(comm.handshake_info())
            reply = await asyncio.wait_for(comm.read(), timeout)
        except TimeoutError as exc:
            raise TimeoutError(
                f"the port accepted the connection but sent no Dask handshake within "
                f"{timeout:g} s: is it a scheduler's port?"
            ) from exc
        except OSError as exc:
            if tls:  # TLS 1.3: a server checks the client's certificate after the handshake
                raise _TLSProblem(_tls_closed(address, exc)) from exc
            raise OSError(
                f"the port accepted the connection but closed it during the Dask handshake "
                f"({_root_cause(exc)}): is it a scheduler's port, and does it want tls://?"
            ) from exc
        except Exception as exc:  # a banner or HTTP reply read as Dask frames
            raise _NotAScheduler(f"{type(exc).__name__}: {exc}"[:200]) from exc
        finally:
            comm.abort()
        if not isinstance(reply, dict):
            raise _NotAScheduler(f"its first message was {type(reply).__name__}, not a handshake")

    async def probe() -> None:
        try:
            await handshake()
        finally:
            _close_orphaned_streams()

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            asyncio.run(probe())
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="closedloop-dask-probe", daemon=True)
    thread.start()
    thread.join(2 * timeout + _GRACE)
    if not outcome:
        raise TimeoutError(f"no Dask handshake within {2 * timeout:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def _close_orphaned_streams() -> None:
    """Close every socket tornado still watches on the running loop (the probe's own).

    A ``tls://`` connection to a scheduler without TLS fails in tornado's
    ``IOStream.start_tls`` ("IOStream is not idle"): the scheduler spoke first. tornado
    raises before it takes the socket over and nothing closes the plain stream, which stays
    registered with tornado's ``IOLoop`` for this event loop; tornado in turn keeps that
    ``IOLoop`` in its map of loops until some later loop starts. So each refused probe left
    an open connection to the scheduler, garbage-collected (with a ``ResourceWarning``)
    whenever another part of the process next used tornado (found by the test suite, where
    the warning failed an unrelated test). Everything registered here is the probe's: it
    runs on an event loop of its own, and a good connection was already aborted.
    """
    from tornado.ioloop import IOLoop

    ioloop = IOLoop.current()
    handlers: dict[Any, tuple[Any, Any]] = getattr(ioloop, "handlers", {})
    for fd, (fileobj, _) in list(handlers.items()):
        ioloop.remove_handler(fd)
        ioloop.close_fd(fileobj)


_UNAUTHENTICATED = ("tcp", "ws")
"""Dask comm schemes without TLS: anyone who can connect is served."""
_warned_unauthenticated: set[str] = set()
"""Addresses :func:`_warn_unauthenticated` already warned about in this process."""


def _warn_unauthenticated(address: str) -> None:
    """Warn, once per address and process, that the scheduler at ``address`` (a remote
    ``tcp://`` or ``ws://`` one) lets anyone who reaches it run code.

    Dask's plain comms authenticate no one: whoever can open a connection to the scheduler
    (or to a worker) can submit functions, which then run as the workers' users, and a
    worker it took over sends back results that this process unpickles. A lab's private
    cluster may rely on network isolation for that, and the README promises that plain
    ``tcp://`` works, so it is not refused; but the user should know what the address
    exposes, and where TLS is set up. A loopback address is not warned about: it is the
    user's own scheduler on this machine (its exposure to the machine's other users is
    the README's to tell), and ``kind: local`` is the way to have one that is secured.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        host = str(parse_host_port(location)[0])
    except (ValueError, TypeError):  # Client accepted it, so this is only a guess's failure
        return
    if scheme not in _UNAUTHENTICATED or address in _warned_unauthenticated:
        return
    if _is_loopback(host):
        return
    _warned_unauthenticated.add(address)
    logger.warning(
        "the Dask scheduler at %s is unencrypted and accepts anyone (%s://): whoever can "
        "reach it, or one of its workers, can run code as this user and as the workers' "
        "users; unless only you can reach that network, give the cluster TLS and its "
        "tls:// address (dask's distributed.comm.tls.* settings: README, \"Several "
        'instruments at once, and simulations on Dask")',
        address,
        scheme,
    )


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or a name) is this machine's loopback interface."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {str(entry[4][0]).split("%", 1)[0] for entry in found}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


class _TLSProblem(Exception):
    """A scheduler's address cannot be reached with the TLS settings of dask's
    configuration (none, unreadable, or refused); the message says which and what to set."""


_TLS_SETTINGS = (
    ("ca_file", "distributed.comm.tls.ca-file"),
    ("cert", "distributed.comm.tls.client.cert"),
    ("key", "distributed.comm.tls.client.key"),
)
"""The client's TLS fields of ``distributed.security.Security`` and their dask settings."""
_TLS_HOW = (
    "set distributed.comm.tls.ca-file (the CA that signed the cluster's certificates), "
    "distributed.comm.tls.client.cert and distributed.comm.tls.client.key (a certificate "
    "and key that CA signed: the files the scheduler and workers use) in dask's "
    "configuration: ~/.config/dask/distributed.yaml, or DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY "
    "in the environment of `closedloop run`"
)


def _connection_args(address: str) -> dict[str, Any]:
    """The connection arguments of a client of ``address``: those dask's own configuration
    gives (``Security()``, as ``distributed.Client`` builds them), checked first.

    TLS is configured where Dask keeps it, not in the campaign file: the
    ``distributed.comm.tls.*`` settings (a YAML file under ``~/.config/dask/``, or
    ``DASK_DISTRIBUTED__COMM__TLS__*`` variables), where ``dask scheduler --tls-*``,
    dask-jobqueue and the workers' users already put them, which every Dask client on this
    machine reads, and which ``Client(address)`` itself reads after this probe. A campaign
    option would be a second place for the same files, one that must agree with the first,
    and would put key paths into a file meant to be shared. Without them a ``tls://``
    address failed as "no Dask scheduler answered ... (TypeError: TLS expects a
    `ssl_context` argument ... Instead got None)", a scheduler that did answer; a CA
    without a client certificate the same way (Dask builds no TLS context from a CA alone).

    Raises:
        _TLSProblem: ``tls://`` without a CA or a client certificate in the configuration,
            with a file it names missing or unloadable; or another scheme where the
            configuration requires encryption (``distributed.comm.require-encryption``).
    """
    from distributed.comm.addressing import parse_address
    from distributed.security import Security

    scheme, _ = parse_address(address)
    try:
        security = Security()
    except (ValueError, TypeError) as exc:  # e.g. an unknown distributed.comm.tls.min-version
        raise _TLSProblem(
            f"dask's TLS configuration is not valid ({type(exc).__name__}: {exc}); fix "
            "distributed.comm.tls.* in dask's configuration (~/.config/dask/, DASK_* variables)"
        ) from exc
    if scheme != "tls":
        if security.require_encryption and scheme in ("tcp", "ws"):
            raise _TLSProblem(
                f"dask's configuration requires encryption (distributed.comm.require-encryption"
                f"), so it refuses the unencrypted {address}: give the scheduler's tls:// "
                "address, or unset distributed.comm.require-encryption if it has no TLS"
            )
        return dict(security.get_connection_args("client"))
    settings = security.get_tls_config_for_role("client")
    missing = [name for field, name in _TLS_SETTINGS[:2] if not settings.get(field)]
    if missing:
        raise _TLSProblem(
            f"{address} asks for TLS (tls://), and dask's configuration on this machine has "
            f"no {' or '.join(missing)}: {_TLS_HOW}; or give the scheduler's tcp:// address "
            "if it does not use TLS"
        )
    named = [(name, str(settings[field])) for field, name in _TLS_SETTINGS if settings.get(field)]
    absent = [f"{name} = {path}" for name, path in named if "\n" not in path]
    absent = [entry for entry in absent if not os.path.isfile(entry.split(" = ", 1)[1])]
    if absent:
        raise _TLSProblem(
            f"the TLS files dask's configuration gives for the Dask scheduler at {address} "
            f"are not there: {'; '.join(absent)} (not a file); fix the paths in dask's "
            "configuration (~/.config/dask/, DASK_DISTRIBUTED__COMM__TLS__* variables)"
        )
    try:
        return dict(security.get_connection_args("client"))
    except (OSError, ValueError) as exc:  # ssl.SSLError: not PEM, a key not the cert's
        files = "; ".join(f"{name} = {path}" for name, path in named if "\n" not in path)
        raise _TLSProblem(
            f"could not load the TLS certificate and key dask's configuration gives for the "
            f"Dask scheduler at {address} ({files}): {type(exc).__name__}: {exc}; they must "
            "be PEM files, the key the certificate's"
        ) from exc


_NOT_TLS = ("WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST")
"""OpenSSL's reasons for a reply that is not TLS at all (a plain Dask or HTTP server)."""


def _ssl_error(exc: BaseException) -> BaseException | None:
    """The ``ssl.SSLError`` among ``exc``'s causes (distributed wraps it), if any."""
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_setting(name: str) -> str:
    """``name = value`` of one dask setting, for an error (a PEM text given inline is not
    shown)."""
    import dask

    value = dask.config.get(name, default=None)
    shown = "(inline PEM)" if isinstance(value, str) and "\n" in value else value
    return f"{name} = {shown}"


def _tls_refused(address: str, exc: BaseException) -> str:
    """The TLS handshake with ``address`` failed on a certificate (``exc``, an SSLError)."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        why = (
            "this machine does not trust the scheduler's certificate: "
            f"{_tls_setting('distributed.comm.tls.ca-file')} must be the CA that signed it"
        )
    else:
        why = (
            "is it a TLS scheduler's port, and does it accept this machine's certificate "
            f"({_tls_setting('distributed.comm.tls.client.cert')}, which the CA the "
            "scheduler trusts must have signed)?"
        )
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return (
        f"the TLS handshake with the Dask scheduler at {address} failed ({reason}: "
        f"{getattr(exc, 'verify_message', None) or exc}); {why}"
    )


def _tls_closed(address: str, exc: BaseException) -> str:
    """``address`` closed the connection after the TLS handshake, before Dask's: a server
    checking the client's certificate (TLS 1.3) refuses it only then."""
    return (
        f"the Dask scheduler at {address} closed the connection after the TLS handshake "
        f"({_root_cause(exc)}): it does not accept this machine's certificate "
        f"({_tls_setting('distributed.comm.tls.client.cert')}); it must be signed by the CA "
        "the scheduler trusts (the cluster's distributed.comm.tls.ca-file)"
    )


def _not_tls(address: str, exc: BaseException) -> str:
    """Something at ``address`` answered in the clear where a TLS handshake was due. A Dask
    scheduler without TLS greets every connection at once: its greeting arrives before the
    TLS handshake starts (tornado's ``ValueError: IOStream is not idle``) or as the reply to
    it (OpenSSL's ``WRONG_VERSION_NUMBER``), whichever comes first."""
    why = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
    return (
        f"something answered at {address}, but not over TLS ({why}); if the scheduler does "
        "not use TLS give its tcp:// address"
    )


def _unreachable(address: str, why: str) -> str:
    """The error for a scheduler that did not answer, ``why`` saying how, and the fixes."""
    return (
        f"no Dask scheduler answered at {address} ({why}); start one (`dask scheduler`, or "
        "a dask-jobqueue cluster) and give its address as `executor.address` (the "
        "scheduler's port, 8786 by default, not the dashboard's 8787), raise "
        "`executor.connect_timeout`, or use `executor: {kind: local}`"
    )


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of ``exc``, ``ConnectionRefusedError: [Errno 111] Connection
    refused`` rather than distributed's wrapping ``CommClosedError: in <TCPConnector>: ...``."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"


def _task_activity(key: Any, dask_worker: Any = None) -> tuple[str, int]:
    """On a worker, through ``Client.run`` (:meth:`DaskExecutor.abort`): whether one of its
    threads runs the task ``key`` (``"executing"``), it holds the task without running it
    (``"queued"``: assigned, waiting for a thread, or its cancellation not yet arrived), or
    neither (``""``); and the worker's pid, to end it.

    ``Worker.get_call_stack`` is what ``Client.call_stack`` asks a worker: the keys its
    threads are running now, not those merely assigned to it.
    """
    executing = bool(dask_worker.get_call_stack(keys=[key]))
    tasks = getattr(getattr(dask_worker, "state", None), "tasks", None) or {}
    return ("executing" if executing else "queued" if key in tasks else "", os.getpid())


class _ShutdownHeartbeatFilter(logging.Filter):
    """Drops distributed.worker's "Failed to communicate with scheduler during heartbeat"
    records whose error is a closed connection; passes everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_HEARTBEAT_FAILED):
            return True
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, OSError)  # CommClosedError is an OSError


def _quiet_worker_shutdown(dask_worker: Any = None) -> None:
    """On a worker about to be closed with its cluster: stop its heartbeats, and drop the
    heartbeat's closed-connection error should one already be in flight.

    Run by :meth:`DaskExecutor.close` through ``Client.run`` (which passes the worker as
    ``dask_worker``) just before a local cluster closes: it retires the workers and ends
    the scheduler, and a heartbeat racing that ends in ``CommClosedError``, which the worker
    logs at ERROR with its traceback. Nothing else is filtered, and never mid-campaign.
    """
    callbacks = getattr(dask_worker, "periodic_callbacks", None) or {}
    heartbeat = callbacks.get("heartbeat")
    if heartbeat is not None:
        heartbeat.stop()
    log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _ShutdownHeartbeatFilter) for f in log.filters):
        log.addFilter(_ShutdownHeartbeatFilter())


def _main_guard_hint() -> str:
    """What to do when the script that runs the campaign starts its local cluster at its
    top level: the workers start by importing that script again (multiprocessing's spawn),
    which runs its campaign again in each, and they fail. The fix offered had been fewer
    workers (found in review, session 39); ``""`` for a notebook, the command line, or a
    script with the guard."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    # multiprocessing imports neither closedloop's command line nor a package's __main__.py
    # (`python -m pkg`) again (review AC, session 39)
    if not path or (spec is not None and spec.name.rpartition(".")[2] == "__main__"):
        return ""
    if spec is not None and spec.name.startswith("loop."):
        return ""
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return ""
    if any(_is_main_guard(node) for node in tree.body):  # at the top level, as it works
        return ""
    return (
        f"the script {Path(path).name} runs the campaign at its top level, and each worker "
        "of a local cluster starts by importing it again: put its code under "
        '`if __name__ == "__main__":`'
    )


def _is_main_guard(node: ast.AST) -> bool:
    """Whether ``node`` is ``if __name__ == "__main__":`` (either way round, within an
    ``and``, or as ``in`` a tuple): the guard itself, not any mention of the two names
    (``logging.getLogger(__name__)`` had hidden the hint: reviews AC and AD, session 39)."""
    if not isinstance(node, ast.If):
        return False
    for test in ast.walk(node.test):  # `... and ...`, `__name__ in ("__main__", ...)` too
        if not isinstance(test, ast.Compare):
            continue
        sides = [test.left, *test.comparators]
        inside = [n for s in sides for n in ast.walk(s)]
        names = any(isinstance(n, ast.Name) and n.id == "__name__" for n in inside)
        main = any(isinstance(n, ast.Constant) and n.value == "__main__" for n in inside)
        if names and main:
            return True
    return False


def _worker_log_level() -> int:
    """The level the local cluster's worker processes log at: CRITICAL, unless the
    application logs INFO itself (the CLI's ``--verbose``), as :func:`_quiet_distributed`."""
    return (
        logging.INFO
        if logging.getLogger().getEffectiveLevel() <= logging.INFO
        else logging.CRITICAL
    )


def _quiet_distributed() -> None:
    """Keep distributed's INFO chatter (cluster start, worker registration, the dashboard
    address: some 50 lines a campaign) off the user's terminal.

    distributed gives its loggers level INFO and its own handlers; ``silence_logs`` only
    turns those handlers down, and the records still propagate to the handler the CLI puts
    on the root logger. Raised to WARNING unless the application logs INFO itself (the
    CLI's ``--verbose`` sets the root logger to DEBUG): then the details are wanted. The
    client's own errors go further, to CRITICAL: each reaches the detector as a failed
    future (reported on the trial's line) or a lost scheduler (reported once, by
    :meth:`DaskExecutor.lost`), and the client would log a 60-line traceback for a
    scheduler that went away.
    """
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        return
    levels = {"distributed": logging.WARNING, "dask": logging.WARNING}
    levels["distributed.client"] = logging.CRITICAL
    for name, level in levels.items():
        log = logging.getLogger(name)
        if log.level < level:
            log.setLevel(level)
    for name in _SAID_BY_US:
        log = logging.getLogger(name)
        if not any(isinstance(f, _SaidByUs) for f in log.filters):
            log.addFilter(_SaidByUs())


#: distributed's records that say again, in its words, what a trial's line or closedloop's
#: own warning says (a worker lost under a trial, a worker restarted after an abort): an
#: ERROR naming a task key meant nothing to the user and read as a crash (found in review,
#: session 39). Dropped unless ``--verbose`` (:func:`_quiet_distributed`).
_SAID_BY_US = {
    "distributed.scheduler": (f"Task {_KEY_PREFIX}", "marked as failed because"),
    "distributed.nanny": ("Restarting worker", ""),
}


class _SaidByUs(logging.Filter):
    """Drops the records of :data:`_SAID_BY_US`; passes everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        start, within = _SAID_BY_US.get(record.name, ("", ""))
        if not start:
            return True
        text = record.getMessage()
        return not (text.startswith(start) and within in text)


def _folder_modules(module: types.ModuleType) -> list[types.ModuleType]:
    """``module`` and every loaded module of its file's folder (``import helpers`` of a
    ``helpers.py`` beside a campaign's file), which a worker could not import by name."""
    folder = os.path.dirname(getattr(module, "__file__", None) or "")
    found = [module]
    for other in list(sys.modules.values()):
        file = getattr(other, "__file__", None)
        if other is not module and file and folder and os.path.dirname(file) == folder:
            found.append(other)
    return found
