"""Closing a local Dask cluster prints nothing, and hides nothing else.

Under load, a worker whose heartbeat raced the cluster's shutdown logged "Failed to
communicate with scheduler during heartbeat" with a 30-line ``CommClosedError`` traceback.
``DaskExecutor.close`` now stops the workers' heartbeats and filters that one record, in the
closing window only.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest

from simulators._executor import (
    _HEARTBEAT_FAILED,
    DaskExecutor,
    _quiet_worker_shutdown,
    _ShutdownHeartbeatFilter,
)


def _record(msg: str, error: BaseException | None, level: int = logging.ERROR) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord("distributed.worker", level, __file__, 1, msg, (), exc_info)


def test_only_the_heartbeat_s_closed_connection_is_filtered() -> None:
    from distributed.comm.core import CommClosedError

    keep = _ShutdownHeartbeatFilter().filter
    assert not keep(_record(_HEARTBEAT_FAILED + ".", CommClosedError("Stream is closed")))
    # Real errors stay visible: another message, another error, or no error at all.
    assert keep(_record("Unexpected exception during heartbeat. Closing worker.", ValueError()))
    assert keep(_record(_HEARTBEAT_FAILED + ".", ValueError("not a connection")))
    assert keep(_record(_HEARTBEAT_FAILED + ".", None))
    assert keep(_record("Compute Failed", CommClosedError("a task's own")))


class _Callback:
    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class _Worker:
    def __init__(self) -> None:
        self.periodic_callbacks = {"heartbeat": _Callback(), "keep-alive": _Callback()}


def test_quieting_a_worker_stops_its_heartbeat_and_filters_once() -> None:
    log = logging.getLogger("distributed.worker")
    before = list(log.filters)
    worker = _Worker()
    try:
        _quiet_worker_shutdown(worker)
        _quiet_worker_shutdown(worker)  # idempotent
        assert worker.periodic_callbacks["heartbeat"].stopped
        assert not worker.periodic_callbacks["keep-alive"].stopped
        added = [f for f in log.filters if f not in before]
        assert len(added) == 1 and isinstance(added[0], _ShutdownHeartbeatFilter)
    finally:
        log.filters[:] = before


@pytest.mark.skipif(sys.platform == "win32", reason="local cluster start-up is slow there")
def test_close_quiets_the_local_cluster_s_workers_before_closing_them() -> None:
    executor = DaskExecutor.local(workers=1)
    seen: dict[str, Any] = {}
    try:
        executor._quiet_workers()

        def state(dask_worker: Any) -> tuple[bool, bool]:
            import logging

            from simulators._executor import _ShutdownHeartbeatFilter

            filters = logging.getLogger("distributed.worker").filters
            return (
                not dask_worker.periodic_callbacks["heartbeat"].is_running(),
                any(isinstance(f, _ShutdownHeartbeatFilter) for f in filters),
            )

        seen = executor.client.run(state)
    finally:
        executor.close()
    assert seen and all(stopped and filtered for stopped, filtered in seen.values())
    executor.close()  # idempotent, and quiet with the client gone
