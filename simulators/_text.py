"""Reading a user's text file: one way for every file a user writes, with one set of messages.

It lives in the leaf package so that every package reads user files the same way: campaign
and instrument files (``loop.config``, ``instruments._instrument_file``), prior-data and
results CSVs (``loop.prior``, ``loop.asktell``), and a dataset's spec and data
(``simulators._datasets``). Each caller turns :class:`TextFileError` into its own error
class (which names the file) in one ``except``; before, six callers each caught missing
files, folders, oversized files and bad bytes themselves, and said so in six ways.
"""

from __future__ import annotations

from pathlib import Path


class TextFileError(ValueError):
    """A user's file cannot be read as text: what is wrong, where, and the fix.

    Attributes:
        problem: what is wrong, worded to follow the file's name (``no such file``).
        line: 1-based line of the problem, where it has one (a byte that is not UTF-8).
        fix: how to put it right, or ``""``.
    """

    def __init__(self, problem: str, *, line: int | None = None, fix: str = "") -> None:
        self.problem = problem
        self.line = line
        self.fix = fix
        super().__init__(problem if line is None else f"line {line}: {problem}")


class NotUTF8Error(TextFileError):
    """A user's file is not UTF-8 text: where its first bad byte is.

    Attributes:
        offset: the bad byte's 0-based position in the file (a byte-order mark counted, as
            an editor or ``xxd`` counts it).
        byte: its value (``0xff``).
    """

    def __init__(self, line: int, offset: int, byte: int, *, fix: str = "") -> None:
        self.offset = offset
        self.byte = byte
        super().__init__(f"is not UTF-8 text (byte {offset})", line=line, fix=fix)


def decode_text(raw: bytes, *, fix: str = "") -> str:
    """A user's file's bytes as UTF-8 text.

    The one decoder of them all, so each names a bad byte's line and position alike, both
    counted in the file's own bytes. A leading byte-order mark is kept as ``\\ufeff``:
    decoding ``utf-8-sig`` gave the position in the bytes after the mark, so a line counted
    up to it in the file's bytes could be one short.

    Raises:
        NotUTF8Error: the bytes are not UTF-8.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start  # in ``raw`` itself: nothing was stripped before decoding
        line = raw[:offset].count(b"\n") + 1
        raise NotUTF8Error(line, offset, raw[offset], fix=fix) from None


def read_text(
    path: Path,
    *,
    kind: str,
    max_bytes: int,
    missing_fix: str = "check the path",
    csv: bool = False,
) -> str:
    """A user's file as text, or :class:`TextFileError` saying why not.

    Args:
        path: the file.
        kind: what the file is, for the messages (``campaign file``, ``CSV file``).
        max_bytes: the largest file read: a user who names a 2 GB log by mistake gets a
            message, not a frozen terminal.
        missing_fix: the fix for a missing file (a prior-data path is relative to the
            campaign file, which its fix says).
        csv: the file is a CSV a spreadsheet may have written, so a leading byte-order mark
            is dropped (it would become part of the first column's name) and the fix for bad
            bytes names the spreadsheet's "CSV UTF-8". YAML ignores the mark itself, and a
            campaign's text is stored as it was written.

    Raises:
        TextFileError: the file is missing, a folder, unreadable, too large, or not UTF-8.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TextFileError("no such file", fix=missing_fix) from None
    except IsADirectoryError:
        raise TextFileError(
            f"is a directory, not a {kind}", fix=f"name the {kind} itself, not its folder"
        ) from None
    except OSError as exc:
        raise TextFileError(f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise TextFileError(f"is {len(raw)} bytes; a {kind} is at most {max_bytes} bytes")
    fix = "save it as UTF-8 CSV (a spreadsheet's CSV UTF-8)" if csv else "save the file as UTF-8"
    text = decode_text(raw, fix=fix)
    return text.removeprefix("\ufeff") if csv else text
