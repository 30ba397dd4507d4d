"""Executor failures: the cluster's are transient (retried), the simulator function's are not.

A simulated detector computing on an executor used to count any ``OSError`` or
``TimeoutError`` as a cluster fault, so a user's function that could not open its own data
file was retried as if a worker had died. These tests run the real path: a real RunEngine
(``Dispatcher``), the simulated devices, and a thread pool or a local Dask cluster.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from instruments import Dispatcher, TrialResult, load_function
from simulators import build_simulated_instrument
from simulators._executor import DaskExecutor, is_infrastructure_error


def _trial(function: Callable[[dict[str, Any]], Any], executor: Any) -> TrialResult:
    """One trial of ``function`` on ``executor`` through a real RunEngine."""
    inst = build_simulated_instrument(
        function, inputs={"x": (0.0, 1.0)}, outputs=["y"], seed=1, executor=executor
    )
    try:
        with Dispatcher(inst) as dispatcher:
            return dispatcher.run(1, "c", {"x": 0.5})
    finally:
        inst.close()


def _missing_calibration(inputs: dict[str, Any]) -> dict[str, float]:
    with open("/nonexistent/closedloop/calibration.csv"):  # the user's function is broken
        pass
    return {"y": 1.0}


def _own_timeout(inputs: dict[str, Any]) -> dict[str, float]:
    raise TimeoutError("the user's solver gave up after 100 iterations")


def _own_connection_error(inputs: dict[str, Any]) -> dict[str, float]:
    raise ConnectionRefusedError("the user's licence server is down")


@pytest.mark.parametrize(
    ("function", "kind"),
    [
        (_missing_calibration, "FileNotFoundError"),
        (_own_timeout, "TimeoutError"),
        (_own_connection_error, "ConnectionRefusedError"),
    ],
)
def test_an_error_raised_by_the_function_is_the_function_s_on_an_executor(
    function: Callable[[dict[str, Any]], Any], kind: str
) -> None:
    """On an executor exactly as in-process: failed, not transient, blamed on the function."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        remote = _trial(function, pool)
    local = _trial(function, None)
    for result in (remote, local):
        assert result.exit_status == "fail"
        assert result.transient is False, result.error
        assert f"SimulatedFault <- caused by {kind}: " in (result.error or "")


def test_only_executor_failures_count_as_the_cluster_s() -> None:
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    cluster = [
        KilledWorker("measure-1", "tcp://127.0.0.1:1", 0),
        CommClosedError("in <TCP (closed)>: Stream is closed"),
        FutureCancelledError("measure-1", "scheduler-connection-lost"),
        concurrent.futures.CancelledError(),
        asyncio.CancelledError(),
        BrokenProcessPool("a worker process died"),
    ]
    users = [
        OSError("disk"),
        FileNotFoundError(2, "No such file"),
        TimeoutError("solver"),
        ConnectionResetError("peer"),
        ValueError("bad input"),
    ]
    assert [is_infrastructure_error(e) for e in cluster] == [True] * len(cluster)
    assert [is_infrastructure_error(e) for e in users] == [False] * len(users)


USER_MODEL = """
def missing_file(inputs):
    open("/nonexistent/closedloop/calibration.csv")
    return {"y": 1.0}


def own_comm_error(inputs):
    from distributed.comm.core import CommClosedError

    raise CommClosedError("the user's own Dask client lost its scheduler")


def fine(inputs):
    return {"y": 2.0 * inputs["x"]}
"""


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[DaskExecutor]:
    executor = DaskExecutor.local(workers=1)
    try:
        yield executor
    finally:
        executor.close()


@pytest.mark.slow
def test_on_a_dask_cluster_the_function_s_errors_are_not_retried(
    tmp_path: Path, dask_executor: DaskExecutor
) -> None:
    """Even an error type Dask itself raises is the user's when the function raised it."""
    (tmp_path / "model.py").write_text(USER_MODEL)
    missing = _trial(load_function("model.py:missing_file", base_dir=tmp_path), dask_executor)
    own = _trial(load_function("model.py:own_comm_error", base_dir=tmp_path), dask_executor)
    ok = _trial(load_function("model.py:fine", base_dir=tmp_path), dask_executor)
    assert missing.exit_status == "fail" and missing.transient is False, missing.error
    assert "caused by FileNotFoundError: " in (missing.error or "")
    assert own.exit_status == "fail" and own.transient is False, own.error
    assert "caused by CommClosedError: the user's own Dask client" in (own.error or "")
    assert ok.ok and ok.outputs["y"] == pytest.approx(1.0), ok.error
