"""The standard streams as a command finds them, and as they fail under it.

A campaign runs for hours on whatever its three standard streams were when it started, and
none of them is the campaign's business: a closed or lost stream must never stop the work
(README: "A closed stdout ... ends the output, not the command"). Found in review:

* **Closed at start** (``closedloop run ... >&-``, a service manager that starts it without
  a stdin): Python sets ``sys.stdout`` to ``None``, bluesky's ``sys.stdout.flush()`` then
  failed the first trial, whose measurement was lost, and the freed file descriptor 1 was
  reused by asyncio's socket, so a stray write to "stdout" went to the event loop.
  :func:`standard_streams` points each closed one of the descriptors 0, 1 and 2 at
  ``os.devnull`` before anything else opens a file: stdin reads as at its end, and output
  goes nowhere.
* **Lost under a running command**: a pipe's reader that exits (``EPIPE``), a terminal that
  went away (``EIO``, ``ENXIO``: an ssh session dropped under ``nohup``), a log file's full
  disk (``ENOSPC``, ``EDQUOT``, ``EFBIG``). rich handles only the first; the others stopped
  a campaign as "the runner failed: OSError". :func:`gone` names them all, and the console
  (``loop.fmt.Output.on_broken_pipe``) treats them alike: the descriptor is pointed at
  ``os.devnull``, :func:`stdout_note` says once on stderr why the output stopped, and the
  work goes on.
* **An encoding that cannot write every character** (a Latin-1 locale, ``PYTHONIOENCODING=
  latin-1``): a ``—`` in ``status`` or a choice value in ``export`` raised
  ``UnicodeEncodeError``. Text for a reader degrades instead (``\\u2014``: Python's own
  ``backslashreplace``, as it does for stderr), while data for a program (:func:`write_data`:
  ``export`` to a pipe or a file) is written as UTF-8, byte for byte what ``export -o``
  writes.

Only the standard library: the entry point imports this before anything else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import IO, Any, Final

GONE: Final = frozenset(
    {
        errno.EPIPE,  # a pipe's reader exited (BrokenPipeError)
        errno.ECONNRESET,  # a socket's reader went away (journald restarted)
        errno.EIO,  # a terminal hung up (its pty closed, the ssh session dropped)
        errno.ENXIO,  # a terminal device gone
        errno.ENOSPC,  # a log file's disk is full, or /dev/full
        errno.EDQUOT,  # a log file's quota is spent
        errno.EFBIG,  # a log file at the size the system allows (ulimit -f)
        errno.EBADF,  # the descriptor was closed under the stream
    }
)
"""The ``errno`` of an ``OSError`` from a standard stream that will never be written again:
the console stops writing there (see :func:`gone`)."""

STDOUT_CLOSED: Final = (
    "note: standard output was closed (the program reading it exited); closedloop prints "
    "nothing more there and goes on (`closedloop status` shows how a campaign stands)\n"
)
"""What the console writes to stderr when stdout's reader went away (``loop.fmt.Output``)."""

STDOUT_LOST: Final = (
    "note: standard output can no longer be written ({why}); closedloop prints nothing "
    "more there and goes on (`closedloop status` shows how a campaign stands)\n"
)
"""What it writes when stdout failed otherwise: :func:`stdout_note` fills in why."""

OUTPUT_FAILED: Final = (
    "error: standard output could not be written ({why}): what this command printed there "
    "is incomplete\n"
)
"""What a command other than a campaign's says as it ends with exit code 1 when its output
failed (:func:`exit_code`)."""

_WHY: Final = {
    errno.EIO: "its terminal went away",
    errno.ENXIO: "its terminal went away",
    errno.EBADF: "it was closed",
}

_READER_LEFT: Final = frozenset({errno.EPIPE, errno.ECONNRESET})

#: Characters a stream's encoding must write for its text to need no degrading: a dash
#: closedloop's own messages use, rich's ellipsis, a CJK and an astral character (a name).
_PROBE: Final = "\u2014\u2026\u53cd\U0001f9ea"


_unsaid: OSError | None = None
"""The first error of stdout not said yet (:func:`keep_unsaid`)."""


def gone(error: BaseException | None) -> bool:
    """Whether ``error``, raised by a write to a standard stream, means no write there will
    ever succeed again (:data:`GONE`): stop writing there and go on, rather than fail."""
    return isinstance(error, OSError) and error.errno in GONE


def stdout_note(error: BaseException | None) -> str:
    """The line to write on stderr once stdout failed with ``error`` (``None``: unknown):
    :data:`STDOUT_CLOSED` for a reader that left, else :data:`STDOUT_LOST` with the cause,
    so a full disk is not reported as a reader that exited."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None or code in _READER_LEFT:
        return STDOUT_CLOSED
    return STDOUT_LOST.format(why=_why(code))


def keep_unsaid(error: BaseException | None) -> None:
    """Remember that stdout failed with ``error`` while no campaign ran, to be said when
    one starts (:func:`take_unsaid`) or when the command ends (:func:`exit_code`)."""
    global _unsaid
    if _unsaid is None and isinstance(error, OSError):
        _unsaid = error


def take_unsaid() -> OSError | None:
    """stdout's error :func:`keep_unsaid` kept, now to be said (a campaign that starts on a
    stdout that failed at its banner, such as ``/dev/full``, says so as it starts)."""
    global _unsaid
    error, _unsaid = _unsaid, None
    return error


def reader_left(exit: SystemExit) -> bool:
    """Whether ``exit`` is rich's ``SystemExit(1)`` for a pipe whose reader left.

    Help and usage text are printed by typer's own rich console, not by ``loop.fmt.Output``,
    and rich's ``Console.on_broken_pipe`` ends the program with 1 once it has pointed stdout
    at ``os.devnull``: ``closedloop --help | head -1`` failed where ``export | head`` does
    not (found in review). Raised while the ``BrokenPipeError`` is handled, so that error is
    its context.
    """
    cause = exit.__context__
    return exit.code == 1 and isinstance(cause, OSError) and cause.errno in _READER_LEFT


def console_output_lost(error: BaseException) -> bool:
    """Whether ``error`` is a rich console's write to a standard stream that is gone.

    typer's help console is the one console that is not a ``loop.fmt.Output`` (which stops
    writing and goes on, ``Output.on_broken_pipe``), and rich re-raises every error but
    ``EPIPE``: ``closedloop --help > /dev/full`` ended as "please report it". The error
    is raised by the console's own write (its innermost frame), so a full disk under a
    store's file is never taken for one.
    """
    if not gone(error):
        return False
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    code = frame.tb_frame.f_code if frame is not None else None
    return code is not None and code.co_name == "_write_buffer" and "rich" in code.co_filename


def exit_code(code: str | int | None) -> str | int | None:
    """The exit code of a command that would end with ``code``.

    A command that succeeded but could not write its output (a full disk under ``export >
    trials.csv``, a terminal gone) did not succeed: :data:`OUTPUT_FAILED` on stderr and 1,
    as ``cat`` does. A reader that left (``EPIPE``: ``| head``) is no failure, and a
    campaign's output is a log (the campaign is in the store): it said so as it went on.
    """
    error = take_unsaid()
    if code not in (0, None) or error is None or error.errno in _READER_LEFT:
        return code
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(OUTPUT_FAILED.format(why=_why(error.errno)))
        sys.stderr.flush()
    return 1


def real_stderr() -> IO[str] | None:
    """``sys.stderr`` itself, not rich's proxy of it: while a progress bar shows on a
    terminal, rich points ``sys.stderr`` at its console (stdout), so a note that stdout is
    gone written there went the way of stdout (found with a terminal that went away)."""
    stream = sys.stderr
    return getattr(stream, "rich_proxied_file", stream)


def to_devnull(stream: IO[Any] | None) -> None:
    """Point ``stream``'s file descriptor at ``os.devnull``, so every later write and the
    flush at exit succeed (Python's documentation's advice for ``EPIPE``). A stream without
    a descriptor, such as a test's captured output, is left as it is."""
    if stream is None:
        return
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return
    _devnull_onto(fd, os.O_WRONLY)


def standard_streams() -> None:
    """Make the standard streams safe to use for the whole command: called first thing.

    * each of the file descriptors 0, 1 and 2 that is closed is opened on ``os.devnull``
      (stdin for reading: its end at once; stdout and stderr for writing: nowhere), and
      the ``sys`` stream Python left ``None`` for it is made on that descriptor;
    * stdout and stderr whose encoding cannot write every character write what it cannot
      as ``\\uXXXX`` (``backslashreplace``) instead of raising ``UnicodeEncodeError``.
    """
    for fd, name, flags in (
        (0, "stdin", os.O_RDONLY),
        (1, "stdout", os.O_WRONLY),
        (2, "stderr", os.O_WRONLY),
    ):
        if not _is_open(fd):
            _devnull_onto(fd, flags)
        if getattr(sys, name) is None:
            stream = open(  # the process's stream, open for its lifetime
                fd,
                "r" if fd == 0 else "w",
                encoding="utf-8",
                errors="backslashreplace",
                buffering=1 if fd == 2 else -1,  # stderr line by line, as Python's
                closefd=False,
            )
            setattr(sys, name, stream)
            if getattr(sys, f"__{name}__") is None:
                setattr(sys, f"__{name}__", stream)
    for standard in (sys.stdout, sys.stderr):
        _degrade(standard)


def write_data(stream: IO[str], text: str) -> None:
    """Write ``text`` (CSV, JSON, YAML: data for a program) to ``stream`` and flush it.

    To a file or a pipe the text goes as UTF-8 bytes, whatever the locale's encoding: the
    bytes ``export -o FILE`` writes, and what JSON requires (RFC 8259). On a terminal, whose
    encoding is the one its reader sees, it goes through the stream's text layer (degraded
    there by :func:`standard_streams` if the encoding cannot write a character). Errors of
    the stream itself (:func:`gone`) are the caller's.
    """
    buffer = getattr(stream, "buffer", None)
    if buffer is None or _terminal(stream):
        stream.write(text)
        stream.flush()
        return
    stream.flush()  # what the text layer holds goes first
    buffer.write(text.encode("utf-8", "backslashreplace"))  # a lone surrogate: \udXXX
    buffer.flush()


def read_line() -> str:
    """A line of stdin (``input()``), any end of it raised as ``EOFError``: its end, no
    stdin at all (Python's ``RuntimeError: input(): lost sys.stdin``), or a terminal that
    went away (``EIO``). An operator who is gone has stopped typing; that is not a bug."""
    try:
        return input()
    except RuntimeError:
        if sys.stdin is not None:
            raise
        raise EOFError("no standard input") from None
    except OSError as exc:
        if not gone(exc):
            raise
        raise EOFError(f"standard input lost: {exc.strerror}") from None


def ask(console: Any, prompt: str) -> str:
    """``prompt`` written on ``console``'s stream (:func:`write_plain`), then a line of stdin
    (:func:`read_line`): the answer is read even when the prompt could not be shown, as an
    operator at the keyboard may still be typing."""
    write_plain(console, prompt)
    return read_line()


def write_plain(console: Any, text: str) -> None:
    """``text`` written on ``console``'s stream as it is and flushed, not through rich (a
    prompt rich printed and then interrupted would be printed again with rich's next
    line). A stream that cannot be written any more (:func:`gone`) is the console's
    ``on_broken_pipe``: silenced, and said once on stderr."""
    out = console.file
    try:
        out.write(text)
        out.flush()
    except OSError as exc:
        if not gone(exc):
            raise
        console.on_broken_pipe()


def _why(code: int | None) -> str:
    return _WHY.get(code or 0) or os.strerror(code or 0)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _devnull_onto(fd: int, flags: int) -> None:
    """``os.devnull`` opened with ``flags`` on the file descriptor ``fd``, inheritable as a
    standard stream is (a subprocess an instrument starts finds it open)."""
    devnull = os.open(os.devnull, flags)
    if devnull != fd:  # fd is open (dup2 replaces it) or a lower one was closed too
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    os.set_inheritable(fd, True)


def _degrade(stream: Any) -> None:
    """Have ``stream`` write what its encoding cannot as ``\\uXXXX`` instead of raising.

    Only a stream whose encoding cannot write :data:`_PROBE` and whose errors handler raises
    (``strict``, or ``surrogateescape``, which escapes only undecodable bytes) is changed: a
    handler given in ``PYTHONIOENCODING`` (``latin-1:replace``) is the user's choice.
    """
    encoding = getattr(stream, "encoding", None)
    reconfigure = getattr(stream, "reconfigure", None)
    if not encoding or reconfigure is None:
        return
    try:
        _PROBE.encode(encoding)
    except LookupError:
        return
    except UnicodeError:
        if getattr(stream, "errors", "strict") in ("strict", "surrogateescape"):
            with contextlib.suppress(OSError, ValueError):
                reconfigure(errors="backslashreplace")


def _terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False
