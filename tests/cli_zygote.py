"""A process that has imported the heavy libraries once and forks a ``closedloop`` run per
request: what :func:`tests.cli_process.run_cli` starts the command with.

Why: the suite runs the command ~600 times, and a fresh interpreter spends ~3 s of CPU of a
4 s ``closedloop run`` importing torch, BoTorch, SQLAlchemy and bluesky. That was about
half of the suite's time on 2 cores. A forked child is still a process of its own: its own
exit code, streams, signals, working directory and environment, and it imports
closedloop's packages fresh; only the libraries below are already in memory.

What is *not* preloaded, and why:

* ophyd's control layer: ``import ophyd`` starts caproto's threads (``set_cl()``), and
  threads do not survive a fork. The zygote imports ophyd with the thread-free ``dummy``
  layer, and each child sets up the layer its environment names (``ophyd.set_cl()``:
  ``$OPHYD_CONTROL_LAYER``, else the first that imports) when it first uses ophyd;
* typer and rich read the environment (``FORCE_COLOR``, ``COLUMNS``, ``TERMINAL_WIDTH``)
  at import or when their consoles are made, and the tests vary it per run;
* matplotlib reads its configuration and backend from the environment at import;
* closedloop's own packages, so a run imports the code as it is on disk.

The zygote forks only while it is single-threaded (it checks ``/proc/self/task``); if it is
not, it answers ``nofork`` and the client starts a fresh interpreter instead. It needs
``OMP_NUM_THREADS=1`` and its kin, which ``tests/conftest.py`` sets, so that numpy's
OpenBLAS starts no thread pool at import.

Protocol, one line each way, on the zygote's stdin and stdout: a JSON request ``{"cwd",
"env", "stdin", "stdout", "stderr", "args"}`` (the three streams are file paths); the answer
``pid N`` once forked, then ``rc N`` (``subprocess``'s convention: ``-SIG`` when killed by a
signal) once the child has been reaped. End of input ends the zygote.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time

PRELOAD = (
    "numpy",
    "scipy.linalg",
    "scipy.optimize",
    "scipy.stats",
    "torch",
    "linear_operator",
    "gpytorch",
    "botorch",
    "botorch.acquisition",
    "botorch.fit",
    "botorch.models",
    "botorch.optim",
    "botorch.sampling",
    "sqlalchemy",
    "sqlmodel",
    "pydantic",
    "yaml",
    "jsonschema",
    "event_model",
    "bluesky",
    "bluesky.plan_stubs",
    "bluesky.preprocessors",
    "ophyd_async.core",
)


def _preload() -> None:
    for name in PRELOAD:
        __import__(name)
    layer = os.environ.get("OPHYD_CONTROL_LAYER")
    os.environ["OPHYD_CONTROL_LAYER"] = "dummy"
    import ophyd  # noqa: F401

    if layer is None:
        del os.environ["OPHYD_CONTROL_LAYER"]
    else:
        os.environ["OPHYD_CONTROL_LAYER"] = layer


class _LazyControlLayer:
    """ophyd's control layer, set up (``ophyd.set_cl()``, from the environment) the first time
    anything asks ophyd for it, then ophyd's own. A fresh ``closedloop status`` never imports
    ophyd, so never starts caproto's threads; setting the layer up in every child made such a
    command a second slower, in the threads' start and their joins at exit."""

    def __getattr__(self, name: str) -> object:
        import ophyd

        if ophyd.cl is self:
            ophyd.set_cl()
        return getattr(ophyd.cl, name)


def _single_threaded() -> bool:
    return len(os.listdir("/proc/self/task")) == 1


def _readline() -> bytes:
    """One request line from fd 0, unbuffered: a forked child must not inherit read-ahead."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            return b""
        line += chunk
    return line


def _child(request: dict[str, object]) -> None:
    """Become ``python -m loop.cli ARGS`` run in ``cwd`` with ``env`` and the given streams."""
    for fd, path, flags in (
        (0, request["stdin"], os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(str(path), flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    cwd = str(request["cwd"])
    os.chdir(cwd)
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update(env)
    time.tzset()
    sys.path[0] = cwd  # as ``python -m`` puts the working directory first
    args = request["args"]
    assert isinstance(args, list)
    sys.argv = ["-m", *args]
    import ophyd

    ophyd.cl = _LazyControlLayer()  # set up at its first use, as at import in a fresh process
    runpy.run_module("loop.cli", run_name="__main__", alter_sys=True)


def main() -> None:
    _preload()
    while line := _readline():
        request = json.loads(line)
        if not _single_threaded():
            os.write(1, b"nofork\n")
            continue
        pid = os.fork()
        if pid == 0:
            # the child: what it raises (SystemExit with the command's code) ends it through
            # the interpreter's own exit, with its atexit handlers and stream flushes
            _child(request)
            return
        os.write(1, f"pid {pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(1, f"rc {os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    main()
