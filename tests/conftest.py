"""Suite-wide settings.

Property tests explore new random examples on every local run (that is how they find bugs);
under CI (``CI`` set, as the CI runner does) they replay a fixed, derandomised sequence, so a
submission cannot fail on a draw its author never saw.

Ctrl-C works in every test process: a suite started in the background (``make test &``,
``nohup``) inherits SIGINT as *ignored*, and Python then installs no KeyboardInterrupt
handler, so the tests that press Ctrl-C (``signal.pthread_kill``, ``_thread.interrupt_main``)
would see nothing happen and fail for a reason that is not the code's.

``make test`` runs the suite on every core (pytest-xdist). Its workers export ``COLUMNS=80``
and ``LINES=24``; a rich ``Console`` created while ``COLUMNS`` is set keeps that width for
good, so ``loop.cli``'s consoles (made at import) would print 80-column tables even to a test
that asks for 200. The variables are dropped before any test module imports the CLI.

One thread per process for torch and the BLAS libraries (``OMP_NUM_THREADS`` and its
kin, unless already set): the suite runs a process per core (pytest-xdist) and each of them
starts ``closedloop`` subprocesses, so every core is already busy. A second OpenMP thread
per process only contends for it, and OpenMP's idle threads spin: measured on a 2-core
machine, ``cross_validate`` of the snar dataset took 37.7 s of CPU with torch's default of
2 threads and 3.1 s with 1, for the same R². The planners' own ``suggest`` already runs on
one thread (``BoTorchSettings.torch_threads``); model fits outside it (the dataset emulators,
Ax) and the ``closedloop`` subprocesses, which inherit the environment, did not. Set before
any test module imports torch or numpy, which read the variables once, at import.

Bytecode is written (``__pycache__``, ignored by git) even where the environment sets
``PYTHONDONTWRITEBYTECODE``, as some machines do: the suite starts the ``closedloop`` command
hundreds of times, and without bytecode each start compiled closedloop's ~50 modules from
source again, 0.35 s of CPU each time.

``postgres_server``: a throwaway PostgreSQL server (``tests/postgres_server.py``) for the
tests of server stores, started once per test process by the first test that asks for it.
Where PostgreSQL is not installed those tests are skipped, except under CI, where they fail:
a CI machine without it would otherwise pass without ever testing a server store.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.postgres_server import PostgresServer, PostgresUnavailable

for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_raises_keyboard_interrupt() -> Iterator[None]:
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing = "the psycopg driver is not installed: pip install -e '.[dev]'"
    else:
        try:
            server = PostgresServer().start()
        except PostgresUnavailable as exc:
            missing = str(exc)
        else:
            try:
                yield server
            finally:
                server.stop()
            return
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run under CI: {missing}", pytrace=False)
    pytest.skip(f"no PostgreSQL server to test against: {missing}")
