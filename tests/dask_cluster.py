"""What the Dask tests share: a campaign-file function that sleeps, a real one-worker local
cluster, a cluster configured as a user's scheduler would be, and waiting for a cluster's
state without timed assertions."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from instruments import load_function
from simulators._executor import DaskExecutor

SLEEPS = """
import time


def sleep(inputs):
    time.sleep(inputs["s"])
    return {"y": inputs["s"]}
"""


@pytest.fixture(scope="module")
def one_worker() -> Iterator[DaskExecutor]:
    """A local cluster of one single-threaded worker: a second trial queues behind the first."""
    executor = DaskExecutor.local(workers=1)
    try:
        yield executor
    finally:
        executor.close()


@contextlib.contextmanager
def scheduler(workers: int, **options: Any) -> Iterator[Any]:
    """A ``LocalCluster`` as a scheduler someone else runs (a ``dask scheduler``, a
    dask-jobqueue cluster): dask's own settings (``allowed-failures`` 3, not the 0 of
    :meth:`DaskExecutor.local`), ``workers`` processes on loopback, no dashboard; ``options``
    go to ``LocalCluster`` (``threads_per_worker``, ``protocol``, ``security``)."""
    from distributed import LocalCluster

    options = {"threads_per_worker": 1, **options}
    cluster = LocalCluster(
        n_workers=workers,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        **options,
    )
    try:
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def scheduler_process(folder: Path) -> Iterator[tuple[Any, str]]:
    """A ``dask scheduler`` process with no worker on loopback, as a user would start one:
    yields the process (a test may kill it) and its address."""
    import json
    import subprocess
    import sys

    info = folder / "scheduler.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from distributed.cli.dask_scheduler import main; main()",
            *("--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"),
            *("--scheduler-file", str(info)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, "no scheduler"
            time.sleep(0.1)
        yield proc, json.loads(info.read_text())["address"]
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def sleep(tmp_path: Path) -> Callable[[dict[str, Any]], Any]:
    """A campaign-file function (sent by value: the workers cannot import the tests)."""
    (tmp_path / "model.py").write_text(SLEEPS)
    return load_function("model.py:sleep", base_dir=tmp_path)


def until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Wait for ``condition`` (a cluster's state), failing after ``limit`` s (generous: the
    machines are shared)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:g} s: {what}")
        time.sleep(0.05)
