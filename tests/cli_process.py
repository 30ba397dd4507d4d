"""The ``closedloop`` command as a user runs it: a process of its own, its exit code and
both streams (for what CliRunner cannot show: signals, exit codes of ``main``, start-up).

:func:`run_cli` forks the process from a zygote that has the heavy libraries imported
(``tests/cli_zygote.py``, which says what it preloads and why): the suite runs the command
~600 times, and a fresh interpreter's imports were about half of the suite's time. The
child is still its own process with its own streams, environment and working directory,
and imports closedloop fresh. ``CLOSEDLOOP_TEST_FRESH=1`` starts a fresh interpreter for
every run instead, to check that nothing depends on the zygote; tests of start-up itself
(``test_imports.py``, ``test_streams.py``) and of signals start their own processes.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

ZYGOTE = Path(__file__).with_name("cli_zygote.py")


def _startup(env: Mapping[str, str]) -> dict[str, str]:
    """The variables an interpreter reads as it starts (``PYTHONPATH``, the locale, the
    thread counts the preloaded libraries took): a run whose values differ from the
    zygote's gets a fresh interpreter, since the zygote read them once, for good."""
    names = (
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
    )
    return {k: v for k, v in env.items() if k.startswith("PYTHON") or k in names}


class _Zygote:
    """The zygote of this test process, started at its first use."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cli_zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ZYGOTE.parents[1],
        )
        self.startup = _startup(os.environ)
        atexit.register(self.close)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def _line(self, timeout: float | None) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError("the closedloop test zygote died; see the test's stderr")
            line += chunk
        return line.decode().strip()

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        streams: Sequence[Path],
        timeout: float,
    ) -> int | None:
        """The command's exit code, or None when the zygote cannot fork (not single-threaded)."""
        assert self.process.stdin is not None
        stdin, stdout, stderr = (str(path) for path in streams)
        request = {"cwd": str(cwd), "env": dict(env), "args": list(args)}
        request |= {"stdin": stdin, "stdout": stdout, "stderr": stderr}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        answer = self._line(60)
        if answer == "nofork":
            return None
        pid = int(answer.split()[1])
        try:
            return int(self._line(timeout).split()[1])
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._line(60)
            raise


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()  # one request at a time; a concurrent run starts fresh


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 300,
    errors: str = "strict",
) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` as ``subprocess.run([python, "-m", "loop.cli", *ARGS], text=True,
    capture_output=True)`` gives it, stdin ``input`` (empty when None)."""
    global _zygote
    command = [sys.executable, "-m", "loop.cli", *args]
    where = Path(cwd if cwd is not None else os.getcwd()).resolve()
    environment = dict(os.environ if env is None else env)
    done: subprocess.CompletedProcess[str] | None = None
    if os.environ.get("CLOSEDLOOP_TEST_FRESH") != "1" and _zygote_lock.acquire(blocking=False):
        try:
            if _zygote is None or _zygote.process.poll() is not None:
                _zygote = _Zygote()
            if _startup(environment) == _zygote.startup:
                done = _forked(_zygote, command, where, environment, input, timeout, errors)
        finally:
            _zygote_lock.release()
    if done is not None:
        return done
    return subprocess.run(
        command,
        cwd=where,
        env=environment,
        input=input or "",
        capture_output=True,
        text=True,
        errors=errors,
        timeout=timeout,
    )


def _forked(
    zygote: _Zygote,
    command: list[str],
    where: Path,
    environment: dict[str, str],
    input: str | None,
    timeout: float,
    errors: str,
) -> subprocess.CompletedProcess[str] | None:
    """:func:`run_cli` through ``zygote``; None if it cannot fork."""
    with tempfile.TemporaryDirectory(prefix="closedloop-cli-") as folder:
        streams = [Path(folder, name) for name in ("stdin", "stdout", "stderr")]
        streams[0].write_text(input or "")
        args = command[3:]
        try:
            code = zygote.run(args, cwd=where, env=environment, streams=streams, timeout=timeout)
        except TimeoutError:
            out, err = (_text(path, errors) for path in streams[1:])
            raise subprocess.TimeoutExpired(command, timeout, out, err) from None
        if code is None:
            return None
        out, err = (_text(path, errors) for path in streams[1:])
        return subprocess.CompletedProcess(command, code, out, err)


def _text(path: Path, errors: str) -> str:
    """A stream's bytes as ``subprocess``'s text mode reads them (universal newlines)."""
    text = path.read_bytes().decode("utf-8", errors)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def closedloop(*args: str, cwd: Path, wide: bool = False) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` in ``cwd``; ``wide``: a 200-column terminal, so rich does not
    wrap table cells a test reads (the test session itself drops ``COLUMNS``)."""
    env = {**os.environ, "COLUMNS": "200"} if wide else None
    return run_cli(args, cwd=cwd, env=env)
