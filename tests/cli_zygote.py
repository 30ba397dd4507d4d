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
* typer reads the environment (``TERMINAL_WIDTH``, ``TYPER_USE_RICH``) at import, and the
  tests vary it per run (rich reads ``FORCE_COLOR`` and ``COLUMNS`` only when a console is
  made, so its modules are preloaded);
* matplotlib reads its configuration and backend from the environment at import;
* closedloop's own packages, so a run imports the code as it is on disk.

The zygote forks only while it is single-threaded (it checks ``/proc/self/task``); if it is
not, it answers ``nofork`` and the client starts a fresh interpreter instead. It needs
``OMP_NUM_THREADS=1`` and its kin, which ``tests/conftest.py`` sets, so that numpy's
OpenBLAS starts no thread pool at import.

Protocol, on a ``SOCK_SEQPACKET`` Unix socket whose descriptor is the zygote's one argument,
one message each: a JSON request ``{"cwd", "env", "args", "new_session",
"default_stop_signals"}`` carrying the child's stdin, stdout and stderr as three descriptors
(``SCM_RIGHTS``: pipes, files, or ``/dev/null``, as ``subprocess`` would give them); the
answer ``pid N`` once forked (or ``nofork``); and later, whenever a child ends, ``exit PID
CODE`` (``subprocess``'s convention: ``-SIG`` when killed by a signal). Several children may
run at once, as several ``Popen`` can: a test sends a signal to one command while starting
another. End of input (the client gone) kills the children still running and ends the
zygote.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
import time
from types import SimpleNamespace
from typing import NoReturn

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
    "botorch.acquisition.analytic",
    "botorch.acquisition.logei",
    "botorch.acquisition.multi_objective",
    "botorch.generation",
    "botorch.models.approximate_gp",
    "botorch.models.fully_bayesian",
    "botorch.models.higher_order_gp",
    "botorch.optim.optimize",
    "botorch.optim.optimize_mixed",
    "botorch.sampling.pathwise",
    "botorch.utils.multi_objective",
    "sqlite3",
    "sqlalchemy",
    "sqlalchemy.dialects.sqlite",
    "sqlmodel",
    "pydantic",
    "yaml",
    "jsonschema",
    "event_model",
    "bluesky",
    "bluesky.plan_stubs",
    "bluesky.preprocessors",
    "ophyd_async.core",
    # rich reads the environment only when a console is made, never at import
    "rich.columns",
    "rich.console",
    "rich.live",
    "rich.logging",
    "rich.markdown",
    "rich.panel",
    "rich.pretty",
    "rich.progress",
    "rich.rule",
    "rich.syntax",
    "rich.table",
    "rich.traceback",
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


def _child(request: dict[str, object], fds: list[int]) -> None:
    """Become ``python -m loop.cli ARGS`` run in ``cwd`` with ``env`` on the streams ``fds``."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    if request.get("new_session"):
        os.setsid()
    if request.get("default_stop_signals"):  # as a fresh interpreter from a terminal's shell
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
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
    interrupted = False
    try:
        runpy.run_module("loop.cli", run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exit:
        status = _exit_status(exit)
    except BaseException as error:  # uncaught: the interpreter prints it and exits 1
        interrupted = isinstance(error, KeyboardInterrupt)
        sys.excepthook(type(error), error, error.__traceback__)
        status = 1
    _finalize(status, interrupted)


def _exit_status(exit: SystemExit) -> int:
    """The status the interpreter exits with for ``exit`` (``_Py_HandleSystemExit``)."""
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code & 0xFF
    print(exit.code, file=sys.stderr)
    return 1


def _finalize(status: int, interrupted: bool) -> NoReturn:
    """End the child as ``Py_FinalizeEx`` does, up to its teardown of the modules.

    Why: that teardown clears every module's namespace, and each decref writes to an object
    the zygote made, so the child copied ~150 MB of the zygote's pages (38,000 page faults)
    only to exit: 0.5 s of a 1.0 s ``closedloop validate``. What a command's own exit does
    is kept, in the interpreter's order: non-daemon threads joined, ``atexit`` handlers (the
    store's, logging's), the standard streams flushed (a failure is status 120, as the
    interpreter's), and the child's garbage collected with its finalizers. Not kept: the
    finalizers of objects that only a module's namespace holds (closedloop closes its store
    and files itself; ``CLOSEDLOOP_TEST_FRESH=1`` runs every command with the full exit).
    Clearing closedloop's own modules here was tried and dropped: the interpreter first stops
    daemon threads (caproto's), which Python cannot, and they failed on the cleared names.
    """
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter calls first
    atexit._run_exitfuncs()
    flushed = _flushed()
    gc.collect()
    if not (_flushed() and flushed):
        status = 120
    if interrupted:  # as the interpreter does: the child ends by SIGINT, not with a status
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


def _flushed() -> bool:
    """Flush stdout and stderr as ``flush_std_files`` does: a failure is reported as an
    unraisable exception, and the exit status becomes 120."""
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None or stream.closed:
            continue
        try:
            stream.flush()
        except Exception as error:
            hook_args = SimpleNamespace(
                exc_type=type(error),
                exc_value=error,
                exc_traceback=error.__traceback__,
                err_msg=None,
                object=stream,
            )
            sys.unraisablehook(hook_args)  # type: ignore[arg-type]
            flushed = False
    return flushed


def _reap(control: socket.socket, children: set[int]) -> None:
    """Tell the client of every child that has ended."""
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        children.discard(pid)
        control.send(f"exit {pid} {os.waitstatus_to_exitcode(status)}".encode())


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    _preload()
    # The preloaded objects into the collector's permanent generation (``gc.freeze``, made
    # for forking servers): a child's collections, above all the one at its exit, walked
    # every one of them and so wrote to, and copied, every page of the zygote's heap. A
    # `closedloop validate` took 3.0 s, 2.2 s of it at exit; frozen, 1.0 s.
    gc.freeze()
    children: set[int] = set()
    while True:
        # children end on their own: look for them every 20 ms while any runs
        ready, _, _ = select.select([control], [], [], 0.02 if children else None)
        _reap(control, children)
        if not ready:
            continue
        message, fds, _, _ = socket.recv_fds(control, 1 << 20, 3)
        if not message:
            break
        request = json.loads(message)
        if not _single_threaded():
            for fd in fds:
                os.close(fd)
            control.send(b"nofork")
            continue
        gc.freeze()  # what the zygote made since (few objects), frozen too
        pid = os.fork()
        if pid == 0:
            # the child: what it raises (SystemExit with the command's code) ends it through
            # the interpreter's own exit, with its atexit handlers and stream flushes
            control.close()
            _child(request, fds)
            return
        for fd in fds:
            os.close(fd)
        children.add(pid)
        control.send(f"pid {pid}".encode())
    for pid in children:  # the client is gone: nobody will read these commands' outcomes
        os.kill(pid, signal.SIGKILL)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
