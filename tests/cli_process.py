"""The ``closedloop`` command as a user runs it: a process of its own, its exit code and
both streams (for what CliRunner cannot show: signals, exit codes of ``main``, start-up).

:func:`start_cli` forks the process from a zygote that has the heavy libraries imported
(``tests/cli_zygote.py``, which says what it preloads and why) and gives it back as a
:class:`subprocess.Popen` would: the suite runs the command ~600 times, and a fresh
interpreter's imports were about half of the suite's time. The child is still its own
process with its own streams, environment, working directory and signals, and it imports
closedloop fresh. :func:`run_cli` is ``subprocess.run`` on top of it.

A fresh interpreter is started instead (a real ``Popen``) when ``CLOSEDLOOP_TEST_FRESH=1``
(to check that nothing depends on the zygote), when a run sets start-up variables of its own
(``PYTHON*``, the locale), or when the zygote cannot fork. Tests of start-up itself
(``test_imports.py``, ``test_streams.py``) and of other users (``setpriv``) start their own
processes.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

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
    """The zygote of this test process, started at its first use.

    Its socket carries requests one way and ``pid``/``exit`` messages the other; whichever
    thread waits for a message reads the socket (under ``_lock``) and files what it reads,
    so there is no reader thread in the test process.
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.cli_zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                cwd=ZYGOTE.parents[1],
            )
        self.control = ours
        self._lock = threading.Lock()  # one reader of the socket at a time
        self._requests = threading.Lock()  # a request and its answer, one at a time
        self._answers: list[str] = []
        self._exits: dict[int, int] = {}
        atexit.register(self.close)

    def close(self) -> None:
        if self.process.poll() is None:
            self.control.close()  # end of input: the zygote kills what still runs, and ends
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def _pump(self, timeout: float | None) -> None:
        """Read and file one message, waiting at most ``timeout`` s for it (under the lock)."""
        ready, _, _ = select.select([self.control], [], [], timeout)
        if not ready:
            return
        text = self.control.recv(4096).decode()
        if not text:
            raise RuntimeError("the closedloop test zygote died; see the test's stderr")
        if text.startswith("exit "):
            _, pid, code = text.split()
            self._exits[int(pid)] = int(code)
        else:
            self._answers.append(text)

    def fork(
        self,
        args: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        fds: Sequence[int],
        options: Mapping[str, bool],
    ) -> int | None:
        """A child running ``closedloop ARGS`` on ``fds`` (stdin, stdout, stderr), with
        ``options`` (``new_session``, ``default_stop_signals``): its pid, or None when the
        zygote cannot fork (it is not single-threaded)."""
        request: dict[str, object] = {"cwd": str(cwd), "env": dict(env), "args": list(args)}
        request |= options
        with self._requests:
            socket.send_fds(self.control, [json.dumps(request).encode()], list(fds))
            deadline = time.monotonic() + 60
            while True:
                with self._lock:
                    if self._answers:
                        answer = self._answers.pop(0)
                        break
                    self._pump(max(deadline - time.monotonic(), 0.0))
                if time.monotonic() > deadline:
                    raise RuntimeError("the closedloop test zygote did not answer in 60 s")
        return None if answer == "nofork" else int(answer.split()[1])

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """``pid``'s exit code once it has ended, waiting at most ``timeout`` s (None: for
        ever); None if it still runs."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                if pid not in self._exits:
                    # a slice at a time, so that other threads waiting get the lock in turn
                    self._pump(0.05 if left is None else min(left, 0.05))
                if pid in self._exits:
                    return self._exits.pop(pid)
                if left == 0:
                    return None


class ForkedProcess:
    """A ``closedloop`` child of the zygote, with the part of :class:`subprocess.Popen`'s
    interface the tests use: ``pid``, ``args``, ``stdin``/``stdout``/``stderr``,
    ``returncode``, ``poll``, ``wait``, ``communicate``, ``send_signal``, ``terminate`` and
    ``kill``."""

    def __init__(
        self,
        zygote: _Zygote,
        pid: int,
        args: list[str],
        streams: tuple[IO[Any] | None, IO[Any] | None, IO[Any] | None],
    ) -> None:
        self._zygote = zygote
        self.pid = pid
        self.args = args
        self.stdin, self.stdout, self.stderr = streams
        self.returncode: int | None = None
        self._readers: dict[str, threading.Thread] = {}
        self._read: dict[str, Any] = {}

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # as Popen: never a signal to a pid that may be reused
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        """Send ``input``, read both streams to their end and wait, as ``Popen.communicate``
        (a call after ``TimeoutExpired`` goes on where the last one stopped)."""
        if not self._readers:
            if self.stdin is not None:
                stdin = self.stdin
                self._start("stdin", lambda: _feed(stdin, input))
            for name in ("stdout", "stderr"):
                stream = getattr(self, name)
                if stream is not None:
                    self._start(name, stream.read)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._readers.values():
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
            if thread.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None:
                stream.close()
        return self._read.get("stdout"), self._read.get("stderr")

    def _start(self, name: str, read: Any) -> None:
        def run() -> None:
            self._read[name] = read()

        thread = threading.Thread(target=run, name=f"closedloop-{name}", daemon=True)
        self._readers[name] = thread
        thread.start()

    def __enter__(self) -> ForkedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        self.wait()


def _feed(stdin: IO[Any], data: Any) -> None:
    try:
        if data:
            stdin.write(data)
        stdin.close()
    except BrokenPipeError:  # as Popen: a child that reads no input is no error
        pass


Process = ForkedProcess | subprocess.Popen[Any]
"""What :func:`start_cli` gives: a child of the zygote, or a fresh interpreter."""

_zygotes: dict[tuple[tuple[str, str], ...], _Zygote] = {}
"""This process's zygotes by their start-up variables: one, unless this process's own
variables change. They do: a Dask ``LocalCluster`` with worker processes sets
``PYTHONHASHSEED`` in its parent's environment for good (``distributed.nanny``), and from
then on every command of that test process differed from its first zygote, so all ran in a
fresh interpreter (~60 in one run of the suite)."""
_zygotes_lock = threading.Lock()


def _zygote_for(environment: Mapping[str, str]) -> _Zygote | None:
    """The zygote to fork a run with ``environment`` from: the one started with its
    start-up variables, started now if they are this process's own; None for a run that
    sets its own (a fresh interpreter serves a one-off better than a new zygote)."""
    startup = _startup(environment)
    key = tuple(sorted(startup.items()))
    with _zygotes_lock:
        zygote = _zygotes.get(key)
        if zygote is not None and zygote.process.poll() is None:
            return zygote
        if startup != _startup(os.environ):
            return None
        _zygotes[key] = zygote = _Zygote()
        return zygote


def start_cli(
    args: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
    text: bool = True,
    errors: str = "strict",
    start_new_session: bool = False,
    default_stop_signals: bool = False,
    fresh: bool = False,
) -> Process:
    """``closedloop ARGS`` started as ``subprocess.Popen([python, "-m", "loop.cli", *ARGS],
    ...)`` would start it; the streams as Popen takes them (``PIPE``, ``DEVNULL``,
    ``STDOUT`` for stderr, a file, None to inherit), text in UTF-8.

    ``default_stop_signals``: SIGINT, SIGTERM and SIGHUP as a terminal's shell leaves them,
    whatever this process has (a suite started under ``nohup`` hands its children SIGHUP
    ignored, which closedloop rightly keeps ignored).

    ``fresh``: a fresh interpreter even where the zygote would fork, for a test of what
    only a real interpreter's exit does (a forked child ends without tearing down the
    zygote's libraries: ``tests/cli_zygote.py``, ``_finalize``)."""
    command = [sys.executable, "-m", "loop.cli", *args]
    where = Path(cwd if cwd is not None else os.getcwd()).resolve()
    environment = dict(os.environ if env is None else env)
    if not fresh and os.environ.get("CLOSEDLOOP_TEST_FRESH") != "1":
        zygote = _zygote_for(environment)
        if zygote is not None:
            streams = (stdin, stdout, stderr)
            options = {
                "new_session": start_new_session,
                "default_stop_signals": default_stop_signals,
            }
            child = _fork(zygote, command, where, environment, streams, text, errors, options)
            if child is not None:
                return child
    return subprocess.Popen(
        command,
        cwd=where,
        env=environment,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        text=text,
        encoding="utf-8" if text else None,
        errors=errors if text else None,
        start_new_session=start_new_session,
        preexec_fn=_default_stop_signals if default_stop_signals else None,
    )


def _default_stop_signals() -> None:
    """In a fresh child: the stop signals as a terminal's shell leaves them."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _fork(
    zygote: _Zygote,
    command: list[str],
    where: Path,
    environment: dict[str, str],
    specs: tuple[Any, Any, Any],
    text: bool,
    errors: str,
    options: Mapping[str, bool],
) -> ForkedProcess | None:
    """:func:`start_cli` through ``zygote``; None if it cannot fork."""
    child_fds: list[int] = []
    ours: list[IO[Any] | None] = []
    to_close: list[int] = []
    for index, spec in enumerate(specs):
        reading = index == 0  # the child reads its stdin, writes the others
        if spec == subprocess.PIPE:
            r, w = os.pipe()
            child_fd, our_fd = (r, w) if reading else (w, r)
            to_close.append(child_fd)
            binary = open(our_fd, "wb" if reading else "rb")  # noqa: SIM115
            if text:
                wrapper = io.TextIOWrapper(
                    binary, encoding="utf-8", errors=errors, write_through=reading
                )
                ours.append(wrapper)
            else:
                ours.append(binary)
        elif spec == subprocess.STDOUT:
            child_fd = child_fds[1]
            ours.append(None)
        elif spec == subprocess.DEVNULL:
            child_fd = os.open(os.devnull, os.O_RDONLY if reading else os.O_WRONLY)
            to_close.append(child_fd)
            ours.append(None)
        elif spec is None:
            child_fd = index  # inherited, as Popen's None
            ours.append(None)
        else:
            child_fd = spec if isinstance(spec, int) else spec.fileno()
            ours.append(None)
        child_fds.append(child_fd)
    try:
        pid = zygote.fork(command[3:], where, environment, child_fds, options)
    finally:
        for fd in to_close:
            os.close(fd)
    if pid is None:
        for stream in ours:
            if stream is not None:
                stream.close()
        return None
    return ForkedProcess(zygote, pid, command, (ours[0], ours[1], ours[2]))


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
    process = start_cli(args, cwd=cwd, env=env, stdin=subprocess.PIPE, errors=errors)
    with process:
        try:
            out, err = process.communicate(input or "", timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            process.kill()
            out, err = process.communicate()
            raise subprocess.TimeoutExpired(process.args, timeout, out, err) from expired
    return subprocess.CompletedProcess(process.args, process.wait(), out, err)


def closedloop(*args: str, cwd: Path, wide: bool = False) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` in ``cwd``; ``wide``: a 200-column terminal, so rich does not
    wrap table cells a test reads (the test session itself drops ``COLUMNS``)."""
    env = {**os.environ, "COLUMNS": "200"} if wide else None
    return run_cli(args, cwd=cwd, env=env)


def told(tmp_path: Path, campaign: str, rows: Sequence[Sequence[float]], outputs: str) -> str:
    """A store of ``campaign`` (a manual one) whose first ``len(rows)`` proposals were told
    ``rows`` (the values of ``outputs``, comma-separated names), through `suggest` and
    `tell --csv` as a scientist does; returns the store's URL."""
    from typer.testing import CliRunner

    from loop.cli import app

    (tmp_path / "c.yaml").write_text(campaign)
    (tmp_path / "r.csv").write_text(
        f"trial_id,{outputs}\n"
        + "".join(f"{i},{','.join(map(str, row))}\n" for i, row in enumerate(rows, 1))
    )
    url = f"sqlite:///{tmp_path / 'told.db'}"
    runner = CliRunner()
    asked = runner.invoke(
        app, ["suggest", str(tmp_path / "c.yaml"), "--store", url, "-n", str(len(rows))]
    )
    assert asked.exit_code == 0, asked.output
    answered = runner.invoke(app, ["tell", "--store", url, "--csv", str(tmp_path / "r.csv")])
    assert answered.exit_code == 0, answered.output
    return url
