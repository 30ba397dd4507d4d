"""The local Dask cluster speaks mutual TLS; a plain scheduler someone else runs is warned about.

Found in review: ``executor: {kind: local}`` started its ``LocalCluster`` on
``tcp://127.0.0.1`` with no security, and Dask's TCP comms authenticate no one, so any user of
the machine (another uid) connected to the scheduler's loopback port and ran code on
closedloop's workers as the campaign's user. The cluster now uses a throwaway certificate
(``Security.temporary()``) that only this process and its workers hold; a user's own
``tcp://`` scheduler elsewhere on the network is still accepted (a lab's private cluster may
rely on network isolation), with one warning saying what it exposes.

The outsider runs in a process of its own, as another user's client would, with four tries:
plain ``tcp://``, ``tls://`` without certificates, with its own certificate, and with its
own certificate while trusting the scheduler's (fetched from the port, as anyone can): the
last one is refused only because the cluster checks its clients' certificates (mutual TLS).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask
import pytest

from simulators import _executor
from simulators._executor import DaskExecutor, ExecutorUnavailable
from tests.dask_cluster import scheduler

OUTSIDER = """
import gc, json, os, ssl, sys
from distributed import Client
from distributed.security import Security

gc.disable()
address, marker = sys.argv[1], sys.argv[2]
host, port = address.split("://")[1].rsplit(":", 1)
own = Security.temporary()
try:  # the scheduler's certificate, as anyone can read it from the port
    theirs = ssl.get_server_certificate((host, int(port)))
except OSError:  # no TLS there at all
    theirs = own.tls_ca_file
trusting = Security(
    tls_ca_file=theirs,
    tls_client_cert=own.tls_client_cert,
    tls_client_key=own.tls_client_key,
    require_encryption=True,
)


def probe(path=marker):
    with open(path, "w") as out:
        out.write("ran")


tries = {
    "tcp": (f"tcp://{host}:{port}", None),
    "tls without certificates": (address, None),
    "tls with its own certificate": (address, own),
    "tls trusting the scheduler, its own certificate": (address, trusting),
}
outcome = {}
for name, (where, security) in tries.items():
    try:
        client = Client(where, timeout=5, set_as_default=False, security=security)
        client.submit(probe, pure=False).result(timeout=10)
        outcome[name] = "ran"
    except Exception as exc:
        outcome[name] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(outcome), flush=True)
os._exit(0)  # skips the failed Clients' __del__
"""
# gc.disable() first thing: a Client that failed to connect, collected while the next one
# starts, closes their shared event loop from its __del__ and hangs that start (distributed
# 2026.8, seen 1 time in 4); os._exit at the end skips those __del__ for the same reason.


@pytest.mark.timeout(120)
def test_the_local_cluster_runs_only_its_own_clients_work(tmp_path: Path) -> None:
    """Was: ``tcp://127.0.0.1:...``, and another user's plain ``Client`` ran code there."""
    outsider, marker = tmp_path / "outsider.py", tmp_path / "ran"
    outsider.write_text(OUTSIDER)
    executor = DaskExecutor.local(workers=2)
    try:
        assert executor.address.startswith("tls://127.0.0.1:"), executor.address
        workers = executor.client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2
        for address, worker in workers.items():  # every listening comm, not the scheduler's only
            assert address.startswith("tls://127.0.0.1:"), address
            assert str(worker.get("nanny")).startswith("tls://127.0.0.1:"), worker

        tried = subprocess.run(
            [sys.executable, str(outsider), executor.address, str(marker)],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert tried.returncode == 0, tried.stderr[-2000:]
        outcome: dict[str, str] = json.loads(tried.stdout.strip().splitlines()[-1])
        assert len(outcome) == 4 and "ran" not in outcome.values(), outcome
        assert outcome["tcp"].startswith("CommClosedError"), outcome
        assert "certificate does not match" in outcome["tls with its own certificate"], outcome
        refused = outcome["tls trusting the scheduler, its own certificate"]
        assert refused.startswith(("CommClosedError", "FatalCommClosedError", "OSError")), refused
        assert not marker.exists()

        assert executor.client.submit(pow, 2, 10, pure=False).result(timeout=30) == 1024
    finally:
        executor.close()


@pytest.mark.timeout(120)
def test_a_local_cluster_starts_where_dask_requires_encryption_or_names_other_certificates(
    tmp_path: Path,
) -> None:
    """Was refused ("dask's configuration requires encryption ..., and `executor: {kind:
    local}` starts an unencrypted cluster"): now it is encrypted. The certificate files
    dask's configuration names for a user's TLS cluster (missing ones here) are not used."""
    gone = str(tmp_path / "gone.pem")
    hpc = {
        "distributed.comm.require-encryption": True,
        "distributed.comm.tls.ca-file": gone,
        "distributed.comm.tls.client.cert": gone,
        "distributed.comm.tls.client.key": gone,
        "distributed.comm.tls.scheduler.cert": gone,
        "distributed.comm.tls.worker.cert": gone,
    }
    with dask.config.set(hpc):
        executor = DaskExecutor.local(workers=1)
        try:
            assert executor.address.startswith("tls://127.0.0.1:"), executor.address
            assert executor.client.submit(pow, 3, 2, pure=False).result(timeout=30) == 9
        finally:
            executor.close()


def test_without_cryptography_the_local_cluster_names_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Security.temporary`` imports ``cryptography`` (a closedloop dependency); a Python
    without it gets the package and the command, not distributed's ImportError."""
    from distributed.security import Security

    def temporary(**_: Any) -> Security:
        raise ImportError("Using `Security.temporary` requires `cryptography`")

    monkeypatch.setattr(Security, "temporary", staticmethod(temporary))
    with pytest.raises(ExecutorUnavailable) as info:
        DaskExecutor.local(workers=1)
    message = str(info.value)
    assert message.startswith(
        "`executor: {kind: local}` secures its cluster with a throwaway TLS certificate, made "
        "with the `cryptography` package, which is not installed in this Python ("
    ), message
    assert f"`{sys.executable} -m pip install cryptography`" in message


def _unencrypted_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "is unencrypted and accepts anyone" in r.msg]


def test_an_unencrypted_remote_scheduler_is_warned_about_once_per_address(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_executor, "_warned_unauthenticated", set())
    with caplog.at_level(logging.WARNING, logger="simulators._executor"):
        for address in (
            "tcp://10.1.2.3:8786",
            "tcp://10.1.2.3:8786",  # the same again: already said
            "10.1.2.4:8786",  # no scheme is tcp
            "ws://10.1.2.5:8786",
            "tls://10.1.2.6:8786",  # encrypted and authenticated: nothing to say
            "wss://10.1.2.7:8786",
            "tcp://127.0.0.1:8786",  # the user's own, on this machine
            "tcp://[::1]:8786",
            "tcp://localhost:8786",
        ):
            _executor._warn_unauthenticated(address)
    warned = _unencrypted_warnings(caplog)
    assert [m.split(" is unencrypted")[0] for m in warned] == [
        "the Dask scheduler at tcp://10.1.2.3:8786",
        "the Dask scheduler at 10.1.2.4:8786",
        "the Dask scheduler at ws://10.1.2.5:8786",
    ], warned
    assert warned[0] == (
        "the Dask scheduler at tcp://10.1.2.3:8786 is unencrypted and accepts anyone (tcp://): "
        "whoever can reach it, or one of its workers, can run code as this user and as the "
        "workers' users; unless only you can reach that network, give the cluster TLS and its "
        "tls:// address (dask's distributed.comm.tls.* settings: README, \"Several instruments "
        'at once, and simulations on Dask")'
    )


@pytest.mark.timeout(120)
def test_connecting_to_an_unencrypted_scheduler_warns_once_and_still_connects(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain scheduler is not refused (the README's dask-jobqueue example is one); taken
    for a remote one here, as the test's own scheduler can only be on loopback."""
    monkeypatch.setattr(_executor, "_warned_unauthenticated", set())
    monkeypatch.setattr(_executor, "_is_loopback", lambda host: False)
    with scheduler(0) as cluster, caplog.at_level(logging.WARNING, logger="simulators._executor"):
        for _ in range(2):
            DaskExecutor.connect(cluster.scheduler_address, connect_timeout=30).close()
    warned = _unencrypted_warnings(caplog)
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"the Dask scheduler at {cluster.scheduler_address} is unencrypted")
