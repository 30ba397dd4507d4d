"""Reading a user's text file: one way for every file a user writes, with one set of messages.

It lives in the leaf package so that every package reads user files the same way: campaign
and instrument files (``loop.config``, ``instruments._instrument_file``), prior-data and
results CSVs (``loop.prior``, ``loop.asktell``), and a dataset's spec and data
(``simulators._datasets``). Each caller turns :class:`TextFileError` into its own error
class (which names the file) in one ``except``; before, six callers each caught missing
files, folders, oversized files and bad bytes themselves, and said so in six ways.

The limits on a YAML document's nesting and alias expansion live here too, for the same
reason: campaign and instrument files are read with ruamel.yaml (``instruments._yamlfile``)
and a dataset's spec with PyYAML (``simulators._datasets``), and both must refuse the same
anchor bombs and deep nesting with the same words. Neither check depends on the library:
:class:`DepthLimitedComposer` goes before either library's ``Composer``, and
:func:`check_yaml_expansion` walks either's tree through a ``children`` function.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A campaign or instrument file is at most this many bytes: a real one is a few kB, and
#: a file of gigabytes (or one that never ends) must be refused before it is read.
MAX_FILE_BYTES = 1_000_000
#: The most values a YAML document may hold once its aliases are expanded: a few hundred
#: bytes of anchors and aliases ("billion laughs") expand to 10^9 values, which hung a
#: reader for minutes before any other check ran.
MAX_YAML_NODES = 100_000
#: The deepest nesting of lists/mappings (aliases expanded); a real file needs fewer than
#: ten. Every reader of the tree recurses once per level, so a few thousand ``[`` ended in a
#: ``RecursionError`` with no file or line.
MAX_YAML_DEPTH = 100


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


def _a(kind: str) -> str:
    """``kind`` with its article: ``an instrument file``, ``a CSV file``."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _kind_of_file(mode: int) -> str:
    """What a file that is not a regular file is, for a message (``a named pipe``)."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


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
        TextFileError: the file is missing, a folder, a pipe or device (a link to one),
            unreadable, too large, or not UTF-8.
    """
    try:
        # Judged before it is opened, as the file the path leads to (a link followed): a
        # named pipe would block the open, and a device (a link to /dev/zero, which git
        # stores as readily as a file) never ends, so reading it until the size check ran
        # out of memory.
        raw = _read_regular(path, kind=kind, max_bytes=max_bytes)
    except FileNotFoundError:
        raise TextFileError("no such file", fix=missing_fix) from None
    except IsADirectoryError:
        raise TextFileError(
            f"is a directory, not {_a(kind)}", fix=f"name the {kind} itself, not its folder"
        ) from None
    except OSError as exc:
        raise TextFileError(f"cannot be read: {exc.strerror or exc}") from None
    fix = "save it as UTF-8 CSV (a spreadsheet's CSV UTF-8)" if csv else "save the file as UTF-8"
    text = decode_text(raw, fix=fix)
    return text.removeprefix("\ufeff") if csv else text


def _read_regular(path: Path, *, kind: str, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``.

    Never more than ``max_bytes + 1`` bytes are read, and nothing is read from a file that
    is not a regular file: checked before the open (so a named pipe does not block it) and
    again on the open file (opened non-blocking), in case the path was swapped in between.

    Raises:
        TextFileError: not a regular file, or too large.
        OSError: missing (``FileNotFoundError``), a directory (``IsADirectoryError``),
            unreadable.
    """
    _refuse_irregular(path, path.stat().st_mode, kind)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    with open(os.open(path, flags), "rb") as handle:
        info = os.fstat(handle.fileno())
        _refuse_irregular(path, info.st_mode, kind)
        if info.st_size > max_bytes:
            raise TextFileError(f"is {info.st_size} bytes; {_a(kind)} is at most {max_bytes} bytes")
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:  # it grew since the fstat
        raise TextFileError(f"is over {max_bytes} bytes; {_a(kind)} is at most {max_bytes} bytes")
    return raw


def _refuse_irregular(path: Path, mode: int, kind: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    link = f" (it links to {os.path.realpath(path)})" if path.is_symlink() else ""
    raise TextFileError(
        f"is {_kind_of_file(mode)}, not {_a(kind)}{link}",
        fix=f"name a regular file: save the {kind} as one and give its path",
    )


# ---------------------------------------------------------------------------- YAML limits
def yaml_too_deep(*, line: int | None = None) -> TextFileError:
    """The error for a YAML document nested deeper than :data:`MAX_YAML_DEPTH` as written."""
    return TextFileError(
        f"nests lists/mappings more than {MAX_YAML_DEPTH} levels deep",
        line=line,
        fix="remove the extra brackets or indentation; a valid file nests only a few levels",
    )


def key_twice(key: object, *, line: int, first: int | None) -> TextFileError:
    """The error for a key given twice in one YAML mapping (``first``: the first one's line).

    YAML allows a key once per mapping; PyYAML keeps the last value in silence and
    ruamel.yaml refused with both values' reprs and the advice to check indentation and
    quotes (found in review). Both readers say this instead: which key, both lines, and
    that one must go.
    """
    return TextFileError(
        f"has the key {shown(key)} twice in one mapping"
        + (f" (first on line {first})" if first is not None and first != line else ""),
        line=line,
        fix=f"keep one {shown(key)}: merge the two into one, or delete the one you do not "
        "mean (a key is allowed once per mapping)",
    )


class DepthLimitedComposer:
    """A YAML composer's nesting limit: put it before ruamel.yaml's or PyYAML's ``Composer``.

    Both composers recurse once per nesting level (``compose_node``, with the same
    arguments in both), so a few thousand ``[`` end in a ``RecursionError`` deep inside the
    library, with no file or line. Stopping at :data:`MAX_YAML_DEPTH` raises
    :func:`yaml_too_deep` with the line of the node that is too deep; it passes through
    the library's ``load``/``compose`` as it is.
    """

    _yaml_depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._yaml_depth >= MAX_YAML_DEPTH:
            # ruamel's composer reads events through its loader's ``parser``; PyYAML's
            # loader is itself the parser
            parser: Any = getattr(self, "parser", self)
            raise yaml_too_deep(line=parser.peek_event().start_mark.line + 1)
        self._yaml_depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._yaml_depth -= 1


def check_yaml_expansion(
    root: Any,
    children: Callable[[Any], Iterable[Any]],
    *,
    line: Callable[[Any], int | None] = lambda node: None,
) -> None:
    """Refuse a YAML tree whose aliases expand it beyond the limits, before anything
    expands them.

    An alias is the same object in the tree as its anchor, so the tree is walked once per
    distinct node (each node's expanded size and depth remembered by identity), without
    recursion: linear in the file, however large the expansion would be.

    Args:
        root: the document's root (a composed node, or loaded data whose aliases share
            their objects).
        children: a node's children (a mapping's keys and values or values, a list's
            items); empty for a scalar.
        line: a node's 1-based line, for the message, where it is known.

    Raises:
        TextFileError: more than :data:`MAX_YAML_NODES` values or :data:`MAX_YAML_DEPTH`
            levels once expanded, or an alias inside the list/mapping it names (it would
            expand forever).
    """
    done: dict[int, tuple[int, int]] = {}  # id -> (expanded size, expanded depth)
    # The path from the root: each node with its children still to visit, and the size
    # and depth of its part visited so far.
    path: list[tuple[Any, Iterator[Any], list[int]]] = [(root, iter(list(children(root))), [1, 1])]
    on_path = {id(root)}
    plainly = "write the values out instead of repeating them through anchors/aliases"
    deep = f"nests lists/mappings more than {MAX_YAML_DEPTH} levels deep through YAML aliases"
    while path:
        node, rest, totals = path[-1]
        child = next(rest, _END)
        if child is _END:
            path.pop()
            on_path.discard(id(node))
            measured = done[id(node)] = (totals[0], totals[1])
            if not path:
                return
        elif id(child) in on_path:
            raise TextFileError(
                "an alias refers to a list or mapping that holds it, so it would never end",
                line=line(node),
                fix=plainly,
            )
        elif id(child) in done:
            measured = done[id(child)]
        else:
            grandchildren = list(children(child))
            if grandchildren:  # a list or mapping: measure it first
                if len(path) + 2 > MAX_YAML_DEPTH:  # it and one child below the path
                    raise TextFileError(deep, line=line(child), fix=plainly)
                path.append((child, iter(grandchildren), [1, 1]))
                on_path.add(id(child))
                continue
            measured = (1, 1)  # a scalar, or an empty list or mapping
        parent, _, parent_totals = path[-1]
        parent_totals[0] += measured[0]
        parent_totals[1] = max(parent_totals[1], measured[1] + 1)
        if parent_totals[0] > MAX_YAML_NODES:
            raise TextFileError(
                f"expands to more than {MAX_YAML_NODES} values through YAML anchors/aliases",
                line=line(parent),
                fix=plainly,
            )
        if parent_totals[1] > MAX_YAML_DEPTH:
            raise TextFileError(deep, line=line(parent), fix=plainly)


_END = object()


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a regular file's bytes, read in chunks; ``None`` when it is no regular
    file (a pipe or a device, a link to ``/dev/zero``, would never end) or cannot be read.

    The one hash of the user's files the store records (a ``function:`` file, a planner
    plugin's, prior-data CSVs): recorded and compared, never a reason to refuse, so a file
    that cannot be hashed is left for the import or the read to report.
    """
    try:
        if not path.is_file():
            return None
        with path.open("rb") as handle:  # in chunks: never the whole file in memory
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


# ---------------------------------------------------------------------------- user text
#: The longest value an error message quotes in full (a campaign file's value is cut alike,
#: ``instruments._yamlfile``): a 5,000-digit cell made a 5 kB message (found in review).
SHOWN_CHARS = 40


def shown(value: object, width: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for a message, cut to ``width`` characters with "…" (a text's
    length said), so a huge cell or name is recognisable without filling the terminal."""
    text = repr(value)
    if len(text) <= width:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return text[: width - 1] + "…" + size


def shown_names(names: Sequence[str], most: int = 8) -> str:
    """``'a', 'b', 'c'`` for a message: at most ``most`` names, each cut (:func:`shown`),
    then how many more (a header of 20,000 columns is not listed)."""
    listed = ", ".join(shown(n) for n in names[:most])
    more = len(names) - most
    return f"{listed} and {more} more" if more > 0 else listed


@dataclass(frozen=True)
class CsvRecord:
    """One non-blank record of a user's CSV and the lines it spans.

    Attributes:
        cells: the cells as written (not stripped).
        line: the 1-based line the record starts on: where an error in it is reported.
        last: the line it ends on; after ``line`` only when a quoted cell holds a line
            break (or a quote opened by mistake runs on to the next quote).
    """

    cells: list[str]
    line: int
    last: int

    def spans_note(self) -> str:
        """`` (the quote opened on line 4 runs on to line 9)`` for a record over several
        lines, else ``""``: said with a cell-count error, whose cause is then that quote."""
        if self.last == self.line:
            return ""
        return f" (the quote opened on line {self.line} runs on to line {self.last})"


#: A quote opened on a line, found by :func:`_open_quote`: ``"`` then anything but a single
#: ``"`` (a doubled one is a quote inside the cell).
_QUOTED = re.compile(r'"[^"]*(?:""[^"]*)*')
_UNQUOTED = re.compile(r"[^,\r\n]*")
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def csv_records(text: str) -> Iterator[CsvRecord]:
    """Every non-blank record of a user's CSV text (``read_text(..., csv=True)``), with its
    lines; the one reader of prior-data and dataset CSVs, so both say a CSV mistake alike.

    Python's ``csv`` module splits the lines itself (``newline=""``: Unix, Windows and
    old-Mac endings, and a quoted cell may hold a line break) and reports only the line a
    record ends on; a record starts on the line after the previous one ended, which is
    where an error is reported. A quote that is never closed made the rest of the file one
    cell, reported at the file's last line with a fix to quote more (found in review): it
    is said as such, at the line the quote opened.

    Raises:
        TextFileError: a quote never closed, a cell past the ``csv`` module's size limit.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    end = 0  # the last line of the previous record
    held: CsvRecord | None = None  # yielded once the next is read: the last one is checked
    failure: TextFileError | None = None
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            failure = _csv_error(exc, end + 1, reader.line_num)
            break
        if held is not None and any(c.strip() for c in held.cells):
            yield held
        held = CsvRecord(cells, end + 1, reader.line_num)
        end = held.last
    if held is None:
        if failure is not None:
            raise failure
        return
    opened = None if failure is not None else _unclosed_quote(text, held)
    if opened is not None:
        raise TextFileError(
            f"the quote opened on line {opened} is never closed: the rest of the file was "
            "read as one cell",
            line=opened,
            fix="close the quote or remove it (a quoted cell runs on, over line breaks, to "
            "the next quote)",
        )
    if any(c.strip() for c in held.cells):
        yield held
    if failure is not None:  # after the rows before it, so that they are checked first
        raise failure


def _unclosed_quote(text: str, record: CsvRecord) -> int | None:
    """The line of the quote the last ``record`` of ``text`` leaves open at the end of the
    file, or ``None``.

    The ``csv`` module ends such a record at the end of the file without a word, its last
    cell the rest of the file; that cell, read back as written (``"`` and the cell with its
    quotes doubled), is then the end of the text. Only then is the record scanned from its
    first line as the module reads it, which tells an open quote from a closed one that
    merely looks alike (``1,""``).
    """
    last = record.cells[-1] if record.cells else ""
    if not text.endswith('"' + last.replace('"', '""')):
        return None
    breaks = LINE_BREAK.finditer(text)
    start = 0
    for _ in range(record.line - 1):
        start = next(breaks).end()
    at = start
    while at < len(text):  # one field per turn, as the csv module reads them (not strict)
        if text[at] == '"':
            opened, at = at, _match_end(_QUOTED, text, at)
            if at == len(text):
                return record.line + len(LINE_BREAK.findall(text, start, opened))
            at += 1  # past the closing quote the cell goes on, unquoted
        at = _match_end(_UNQUOTED, text, at)
        if at < len(text) and text[at] != ",":
            return None  # a line break outside quotes: the record ended before the file
        at += 1
    return None


def _match_end(pattern: re.Pattern[str], text: str, at: int) -> int:
    """Where ``pattern`` (which matches the empty text too) stops matching from ``at``."""
    found = pattern.match(text, at)
    return found.end() if found is not None else at


def _csv_error(exc: csv.Error, start: int, line: int) -> TextFileError:
    """What the ``csv`` module refused in the record from line ``start`` to ``line``."""
    limit = csv.field_size_limit()
    if "field larger than field limit" in str(exc):
        if line > start:
            return TextFileError(
                f"the quote opened on line {start} is not closed within {limit} characters",
                line=start,
                fix="close the quote or remove it (a quoted cell runs on, over line breaks, "
                "to the next quote)",
            )
        return TextFileError(
            f"has a cell of more than {limit} characters",
            line=start,
            fix=f"a cell holds at most {limit} characters: shorten it, or delete the row",
        )
    return TextFileError(  # pragma: no cover - the csv module's other errors need strict mode
        f"is not valid CSV: {exc}",
        line=line,
        fix="save it again as CSV from the spreadsheet or program that wrote it",
    )
