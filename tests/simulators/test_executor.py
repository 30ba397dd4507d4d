"""Executor failures: the cluster's are transient (retried), the simulator function's are not.

A simulated detector computing on an executor used to count any ``OSError`` or
``TimeoutError`` as a cluster fault, so a user's function that could not open its own data
file was retried as if a worker had died. These tests run the real path: a real RunEngine
(``Dispatcher``), the simulated devices, and a thread pool or a local Dask cluster.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from instruments import Dispatcher, TrialResult, load_function
from simulators import build_simulated_instrument
from simulators._executor import DaskExecutor, ExecutorUnavailable, is_infrastructure_error


def _trial(function: Callable[[dict[str, Any]], Any], executor: Any, **kwargs: Any) -> TrialResult:
    """One trial of ``function`` on ``executor`` through a real RunEngine."""
    inst = build_simulated_instrument(
        function, inputs={"x": (0.0, 1.0)}, outputs=["y"], seed=1, executor=executor, **kwargs
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
        assert (result.error or "").startswith(f"{kind}: "), result.error
        assert "; raised by function " in (result.error or "")


def test_only_executor_failures_count_as_the_cluster_s() -> None:
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    cluster = [
        KilledWorker("measure-1", "tcp://127.0.0.1:1", 0),  # type: ignore[arg-type]
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
    assert (missing.error or "").startswith("FileNotFoundError: ")
    assert own.exit_status == "fail" and own.transient is False, own.error
    assert (own.error or "").startswith("CommClosedError: the user's own Dask client")
    assert ok.ok and ok.outputs["y"] == pytest.approx(1.0), ok.error


@pytest.mark.slow
def test_a_function_file_s_own_modules_travel_to_the_workers(
    tmp_path: Path, dask_executor: DaskExecutor
) -> None:
    """A module beside the campaign's file (``import helpers``) is importable while the
    file runs, and goes to the workers with it: they cannot import it by name."""
    (tmp_path / "cl_worker_helpers.py").write_text(
        "import os\ndef pid():\n    return os.getpid()\n"
    )
    (tmp_path / "model.py").write_text(
        "import cl_worker_helpers\n"
        "def measure(inputs):\n"
        "    return {'y': float(cl_worker_helpers.pid())}\n"
    )
    result = _trial(load_function("model.py:measure", base_dir=tmp_path), dask_executor)
    assert result.ok, result.error
    assert result.outputs["y"] != os.getpid()  # computed on a worker
    assert str(tmp_path) not in sys.path  # only while the file ran


def test_a_remote_none_fails_and_is_not_computed_again_here() -> None:
    """Was: a function that forgot its ``return`` sent back None, which read as "nothing
    computed remotely", so it ran a second time in the runner's process."""
    calls: list[str] = []

    def forgot_return(inputs: dict[str, Any]) -> None:
        calls.append(threading.current_thread().name)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="remote") as pool:
        result = _trial(forgot_return, pool)
    assert result.exit_status == "fail" and result.transient is False
    assert "function forgot_return (test_executor.py) returned NoneType, expected a dict" in (
        result.error or ""
    )
    assert len(calls) == 1 and calls[0].startswith("remote"), calls


def test_a_point_in_the_failing_region_is_not_sent_to_the_executor() -> None:
    """Was: submitted, computed on the cluster, then failed by the region and thrown away."""
    calls: list[dict[str, Any]] = []

    def model(inputs: dict[str, Any]) -> dict[str, float]:
        calls.append(inputs)
        return {"y": 1.0}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        inside = _trial(model, pool, failing_region="x > 0.4")
        outside = _trial(model, pool, failing_region="x > 0.6")
    assert inside.exit_status == "fail" and inside.transient is False
    assert "lie in the failing region `x > 0.4`" in (inside.error or "")
    assert outside.ok and calls == [{"x": 0.5}], calls  # only the point outside was computed


@pytest.mark.timeout(60)
def test_a_port_that_accepts_but_never_speaks_dask_fails_within_connect_timeout() -> None:
    """Was: the TCP connect was bounded, the Dask handshake after it was not: the dashboard's
    port (or an ssh port, a proxy) hung the run for ever."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                accepted.append(server.accept()[0])  # and never answer
        except OSError:  # closed at the end of the test
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    try:
        with pytest.raises(ExecutorUnavailable) as info:
            DaskExecutor.connect(f"tcp://127.0.0.1:{port}", connect_timeout=1)
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        server.close()
        for conn in accepted:
            conn.close()
        thread.join(5)
    assert info.value.address == f"tcp://127.0.0.1:{port}"
    assert "sent no Dask handshake within 1 s" in str(info.value)
    assert "not the dashboard's 8787" in str(info.value)


SLOW_OR_FAST = """
import time


def measure(inputs):
    if inputs["x"] > 0.5:
        time.sleep(600)  # a runaway simulation
    return {"y": inputs["x"]}
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_trial_aborted_while_its_function_runs_frees_the_worker(
    tmp_path: Path, dask_executor: DaskExecutor
) -> None:
    """Was: the future was cancelled but the function went on in the worker's only thread,
    so the next, instant trial waited behind it and timed out too."""
    (tmp_path / "model.py").write_text(SLOW_OR_FAST)
    measure = load_function("model.py:measure", base_dir=tmp_path)
    inst = build_simulated_instrument(
        measure, inputs={"x": (0.0, 1.0)}, outputs=["y"], seed=1, executor=dask_executor
    )
    try:
        with Dispatcher(inst) as dispatcher:
            runaway = dispatcher.run(1, "c", {"x": 0.9}, timeout=1)
            # generous: a fresh worker process starts in seconds; the old one sleeps 600 s
            fast = dispatcher.run(2, "c", {"x": 0.25}, timeout=120)
    finally:
        inst.close()
    assert runaway.exit_status == "fail" and runaway.timed_out, runaway.error
    assert fast.ok and fast.outputs["y"] == pytest.approx(0.25), fast.error


@pytest.mark.slow
@pytest.mark.timeout(25)  # distributed's connect timeout is 30 s
def test_asking_a_worker_that_is_gone_does_not_hold_an_abort(
    dask_executor: DaskExecutor,
) -> None:
    """Was: a slot's abort asked a worker another slot's abort had just ended what it ran,
    and ``Client.run`` waited 30 s to connect to it, which held Ctrl-C's clean stop (found in
    review, session 39). Now the question is bounded, and the answer is "nothing of ours"."""
    scheme = dask_executor.client.scheduler.address.split("://")[0]
    with socket.socket() as sock:  # a port nothing listens on: a worker that is gone
        sock.bind(("127.0.0.1", 0))
        gone = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
    assert dask_executor._running_on(gone, "closedloop-call-gone") is None


def _scheduler_process(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A ``dask scheduler`` of its own (so it can be killed like a lost one), no workers."""
    info = tmp_path / "scheduler.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from distributed.cli.dask_scheduler import main; main()",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(info),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not info.exists() or not info.read_text().strip():
            if proc.poll() is not None:
                raise RuntimeError(f"dask scheduler exited with {proc.returncode}")
            threading.Event().wait(0.1)
        return proc, str(json.loads(info.read_text())["address"])
    except BaseException:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_lost_scheduler_is_reported_to_on_lost_and_the_trial_aborted(tmp_path: Path) -> None:
    """Was: each trial failed (transient, then ClosedClientError) until max_failures ended
    the campaign `failed`. The executor tells ``on_lost`` (the runner's ``request_stop``),
    whose abort ends the trial, so the campaign stops resumable."""
    proc, address = _scheduler_process(tmp_path)
    try:
        executor = DaskExecutor.connect(address, connect_timeout=10)
        inst = build_simulated_instrument(
            lambda inputs: {"y": 1.0},
            inputs={"x": (0.0, 1.0)},
            outputs=["y"],
            seed=1,
            executor=executor,
        )
        told: list[str] = []
        try:
            with Dispatcher(inst) as dispatcher:

                def stop(reason: str) -> None:  # what the runner's request_stop does
                    told.append(reason)
                    dispatcher.abort(reason)

                def kill_once_submitted() -> None:
                    # no worker: the task waits in the scheduler until it is killed
                    while inst.detector._sim_future is None:
                        threading.Event().wait(0.05)
                    proc.kill()

                executor.on_lost = stop
                killer = threading.Thread(target=kill_once_submitted, daemon=True)
                killer.start()
                result = dispatcher.run(1, "c", {"x": 0.5}, timeout=60)
                killer.join(10)
        finally:
            inst.close()
            executor.close()
    finally:
        proc.kill()
        proc.wait()
    assert len(told) == 1 and f"the Dask scheduler at {address} is gone" in told[0]
    assert result.exit_status == "abort", result.error
    assert "then resume the campaign" in (result.error or "")


BLOCK_SIMULATORS = """
import sys


class _NoClosedloop:  # a worker environment without closedloop installed
    def find_spec(self, name, path=None, target=None):
        if name == "simulators" or name.startswith("simulators."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoClosedloop())
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_workers_that_cannot_import_simulators_are_refused_at_connect(tmp_path: Path) -> None:
    """Was: such a worker could not read the first task, closed itself, and the trial
    waited for ever with no message."""
    from distributed import Client, LocalCluster

    (tmp_path / "sitecustomize.py").write_text(BLOCK_SIMULATORS)
    cluster = LocalCluster(
        n_workers=0,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    worker = None
    try:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from distributed.cli.dask_worker import main; main()",
                cluster.scheduler_address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=120)
        with pytest.raises(ExecutorUnavailable) as info:
            DaskExecutor.connect(cluster.scheduler_address, connect_timeout=30)
    finally:
        if worker is not None:
            worker.kill()
            worker.wait()
        cluster.close()
    message = str(info.value)
    assert "1 Dask worker(s)" in message and "cannot import closedloop's `simulators`" in message
    assert "No module named 'simulators'" in message and "install closedloop" in message


@pytest.mark.slow
def test_a_local_cluster_keeps_distributed_s_info_logs_and_port_8787_to_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Was: ~55 lines of distributed INFO on the CLI's terminal (its handler is on the root
    logger, and distributed's records propagate there whatever ``silence_logs`` says), and
    the scheduler's HTTP server on 127.0.0.1:8787, where a second campaign collided."""
    executor = DaskExecutor.local(workers=1)
    try:
        port = executor.cluster.scheduler.http_server.port
    finally:
        executor.close()
    chatter = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("distributed") and r.levelno < logging.WARNING
    ]
    assert chatter == []
    assert port != 8787
