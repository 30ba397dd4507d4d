"""The ``epics_ioc`` fixture: the simulated reactor IOC (``simulators.reactor_ioc``) in a
subprocess.

One IOC per test session, on 127.0.0.1 and a free port, with automatic address lists off, so
the tests never talk to (or are disturbed by) another IOC on the network. The environment is
set in this process too before any Channel Access client exists (Ophyd's caproto context
reads it once), and restored after.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PREFIX = "closedloop:sim:"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class IOC:
    """A running IOC: its prefix, its put log, and helpers to read and write its PVs.

    ``stop()`` and ``start()`` take it away and bring it back on the same port (the
    disconnection tests); a test that stops it must start it again.
    """

    prefix: str
    put_log: Path
    env: dict[str, str]
    out: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the IOC process (appending to the same put log) and wait until it answers."""
        with self.out.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulators.reactor_ioc",
                    "--prefix",
                    self.prefix,
                    "--put-log",
                    str(self.put_log),
                ],
                env={**os.environ, **self.env},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:  # wait until it answers (a start-up wait, not an assertion on speed)
            if not self.running():
                pytest.fail(f"the IOC exited: {self.out.read_text(errors='replace')[-2000:]}")
            try:
                self._signal("door_closed", timeout=0.5).get()
                return
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"the IOC did not answer: {self.out.read_text(errors='replace')[-2000:]}"
                    )
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the IOC process: every PV disconnects."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def puts(self) -> list[dict[str, Any]]:
        """Every put the IOC received so far, oldest first."""
        lines = self.put_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _signal(self, pv: str, timeout: float = 5.0) -> Any:
        import ophyd

        if getattr(ophyd.cl, "name", None) != "caproto":
            ophyd.set_cl("caproto")
        signal = ophyd.EpicsSignal(self.prefix + pv, name=pv.replace(":", "_"))
        signal.wait_for_connection(timeout=timeout)
        return signal

    def get(self, pv: str) -> Any:
        return self._signal(pv).get()

    def put(self, pv: str, value: Any) -> None:
        done = threading.Event()
        self._signal(pv).put(value, use_complete=True, callback=done.set)
        if not done.wait(5):
            raise TimeoutError(f"put to {pv} not acknowledged")


@pytest.fixture(scope="session")
def epics_ioc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IOC]:
    port = _free_port()
    env = {
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_SERVER_PORT": str(port),
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_REPEATER_PORT": str(_free_port()),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    log = tmp_path_factory.mktemp("ioc") / "puts.jsonl"
    log.touch()
    out = log.with_name("ioc.out")
    ioc = IOC(PREFIX, log, env, out)
    try:
        ioc.start()
        yield ioc
    finally:
        ioc.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
