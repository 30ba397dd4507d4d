"""Evaluate simulator functions on a Dask cluster, behind a detector's trigger Status.

A :class:`DaskExecutor` wraps a ``distributed.Client``: either to a ``LocalCluster`` it starts
itself (worker *processes* on 127.0.0.1, closed with the executor) or to a running scheduler
(``tcp://host:8786``, e.g. one that dask-jobqueue started on a Slurm/PBS allocation).
:class:`~simulators.SimDetector` calls :meth:`DaskExecutor.submit` from ``trigger()`` and
completes its Status from the future's done-callback, so the RunEngine, the plan and the
documents are exactly those of an in-process simulator.

The function travels by cloudpickle: built-in simulators and module-level functions of an
importable module are sent by reference (the worker imports them); a function loaded from a
campaign's ``path/to/file.py`` lives in a module only this process knows, so that module is
registered to be pickled by value.

Failures. A scheduler that does not answer within ``connect_timeout`` raises
:class:`ExecutorUnavailable` naming the address and what to check. A worker that dies while
computing a trial makes its future fail (``KilledWorker``: the local cluster is started with
``distributed.scheduler.allowed-failures: 0``, so a trial whose worker died is not silently
re-run elsewhere); the detector turns that into a failed, *transient* trial (retried under
``max_retries``), and the campaign goes on with the remaining and restarted workers. An
exception the simulator function itself raises (of any type, ``OSError`` included) fails
its trial as it would in-process, and is not retried (:func:`is_infrastructure_error`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

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


def _call(blob: bytes, inputs: dict[str, Any]) -> Any:
    """What a worker runs: the (cloudpickled) pure function on one inputs dict.

    An exception the function raises is marked as the function's before it travels back:
    a user's ``OSError`` (a missing data file) or even a ``CommClosedError`` of its own is
    then reported as the function's failure, not retried as the cluster's.
    """
    import cloudpickle

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
        self._closed = False
        self._blobs: dict[int, bytes] = {}
        self._functions: list[Any] = []

    @classmethod
    def local(cls, workers: int = 2, *, connect_timeout: float = 10.0) -> DaskExecutor:
        """Start a ``LocalCluster``: ``workers`` processes with one thread each, on loopback.

        Raises:
            ExecutorUnavailable: the cluster could not start.
        """
        import dask
        from distributed import Client, LocalCluster

        try:
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
        except Exception as exc:
            raise ExecutorUnavailable(
                f"could not start a local Dask cluster with {workers} worker(s): "
                f"{type(exc).__name__}: {exc}; try fewer `workers` or `kind: inprocess`"
            ) from exc
        try:
            client = Client(cluster, timeout=connect_timeout)
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

        Raises:
            ExecutorUnavailable: nothing answered in time (the message names the address and
                what to check).
        """
        from distributed import Client

        try:
            client = Client(address, timeout=connect_timeout, set_as_default=False)
        except Exception as exc:
            raise ExecutorUnavailable(
                f"no Dask scheduler answered at {address} within {connect_timeout:g} s "
                f"({type(exc).__name__}: {exc}); start one (`dask scheduler`, or a "
                "dask-jobqueue cluster) and give its address as `executor.address`, raise "
                "`executor.connect_timeout`, or use `executor: {kind: local}`",
                address=address,
            ) from exc
        return cls(client, None, "dask")

    def submit(
        self, function: Callable[[dict[str, Any]], Mapping[str, Any]], inputs: Mapping[str, Any]
    ) -> Any:
        """Submit ``function(inputs)``; returns a ``distributed.Future`` (never cached)."""
        blob = self._blobs.get(id(function))
        if blob is None:
            import cloudpickle

            module = sys.modules.get(getattr(function, "__module__", "") or "")
            if module is not None and module.__name__.startswith(_USER_MODULE_PREFIX):
                # Only this process can import a campaign's file: send its code along.
                cloudpickle.register_pickle_by_value(module)
            blob = self._blobs[id(function)] = cloudpickle.dumps(function)
            self._functions.append(function)  # keeps id() unique while cached
        return self.client.submit(_call, blob, dict(inputs), pure=False)

    def close(self) -> None:
        """Close the client and, for a local cluster, its workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        except Exception as exc:  # a scheduler already gone
            logger.debug("closing the Dask client: %s", exc)
        if self.cluster is not None:
            try:
                self.cluster.close()
            except Exception as exc:
                logger.warning("closing the local Dask cluster: %s", exc)

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
