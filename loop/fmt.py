"""How the command line writes numbers: one rule for a parameter's value, one for the rest.

A parameter's value is written to a precision its search range sets, not to a fixed number
of significant digits: at ``.4g`` an energy of 7112.4213 eV in bounds [7110, 7115] read
``7112``, three trials of a narrow scan read alike, and ``suggest`` asked the operator to
set values other than the ones it stored, so a result told without ``--actual`` was learnt
at the wrong point (found in review). The rule, by the parameter's type:

* ``float``: enough decimals to resolve :data:`READ` (1e-4) of the range ``upper - lower``;
  on a log scale, enough significant digits to resolve that share of the range in log
  space (5 for a range of three decades);
* ``int``: the integer; ``choice`` and ``fixed``: the value as written in the file.

A value someone will *set* by hand (``suggest``, the manual prompt, ``plan``'s point) uses
:data:`SET` (1e-6) instead: set as shown, it reproduces the stored point within 1e-6 of the
range (``suggest --json`` gives the stored floats themselves).

Everything else (outputs, readings, values with no parameter to go by) is written to six
significant digits (:func:`number`): ``.4g`` wrote a dark count of 131234 as ``1.312e+05``.

:class:`WholeTable` lays such values out in a table that never cuts a number, and
:class:`Output` is the console the commands print to (wide when nobody is watching, quiet
when its reader went away, and never driving the terminal with the text it prints:
:func:`visible`).

Only the standard library and rich: ``status`` and ``export`` import this and stay light.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleDimensions, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from loop.streams import STDOUT_CLOSED as STDOUT_CLOSED
from loop.streams import (
    gone,
    keep_unsaid,
    real_stderr,
    stdout_note,
    take_unsaid,
    to_devnull,
    write_data,
)

READ = 1e-4
"""The share of a parameter's range a value read in a table or a summary resolves."""

SET = 1e-6
"""The share of a parameter's range a value shown to be set by hand resolves."""

DIGITS = 6
"""Significant digits of an output, a reading, or a value with no parameter to go by."""

_MAX_DECIMALS = 15  # beyond this a float's own precision runs out for values near 1


def digits_apart(values: Iterable[Any], least: int = DIGITS, most: int = 17) -> int:
    """The fewest significant digits, from ``least`` up to ``most``, at which the distinct
    finite numbers among ``values`` are written distinct.

    Six digits wrote 1.0000001, 1.0000002 and 0.9999999 all as ``1``, one of them called
    best, and ``c=1, feasible no`` beside ``c=1, feasible yes`` (found in review): a column
    of an output, with its bounds among the values, is written so that what differs is
    seen to differ.
    """
    distinct = {float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)}
    for digits in range(least, most + 1):
        if len({f"{v:.{digits}g}" for v in distinct}) == len(distinct):
            return digits
    return most


def counted(n: int, noun: str) -> str:
    """``1 cell``, ``3 cells``: a count with its noun (``1 prior-data rows`` read wrongly)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def number(value: Any, digits: int = DIGITS, none: str = "") -> str:
    """An output or reading: a float to ``digits`` significant digits, anything else as is.

    A NumPy scalar (an instrument's reading) is written as the Python value it holds.
    """
    if value is None:
        return none
    if hasattr(value, "item") and not isinstance(value, int | float | str):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def parameter(value: Any, spec: Any = None, *, setpoint: bool = False) -> str:
    """``value`` of the parameter ``spec`` (a ``planners`` parameter; ``None`` if unknown)
    by the module's rule; ``setpoint`` for a value someone will set by hand.

    A value the rule does not fit (an ``int`` parameter's readback of 2.97, a value of a
    parameter no longer in the campaign) is written as :func:`number` writes it.
    """
    if value is None:
        return ""
    if hasattr(value, "item") and not isinstance(value, int | float | str):
        value = value.item()
    kind = getattr(spec, "type", None)
    if kind in ("choice", "fixed"):
        return str(value)  # exactly as the file lists it: 0.25 is 0.25, not 0.2500
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if kind == "int":
        return str(int(value)) if float(value).is_integer() else number(value)
    if kind != "float" or not math.isfinite(value):
        return number(value)
    lower, upper = (float(b) for b in spec.bounds)
    share = SET if setpoint else READ
    if getattr(spec, "log", False):
        # a step of `share` of the range in log space is a relative step of
        # share * ln(upper / lower); n significant digits resolve 10**(1 - n) relative
        relative = share * math.log(upper / lower)
        digits = max(1, math.ceil(1 - math.log10(relative) - 1e-9))
        return f"{value:.{digits}g}"
    step = share * (upper - lower)
    decimals = math.ceil(-math.log10(step) - 1e-9)
    if decimals > _MAX_DECIMALS:
        # a range so small (bounds [0, 1e-15]) that fixed decimals would read 0: significant
        # digits enough to resolve the step at the value's magnitude
        magnitude = max(abs(value), abs(lower), abs(upper))
        digits = min(max(math.ceil(math.log10(magnitude / step) + 1e-9) + 1, 1), 17)
        return f"{value:.{digits}g}"
    return _fixed(value, max(decimals, 0))


def _fixed(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` decimals, trailing zeros dropped (80.0 reads ``80``)."""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


#: The characters :func:`visible` writes as escapes: C0 controls but tab and newline, DEL,
#: and the C1 controls (U+0080 to U+009F; U+009B is a CSI to a terminal that reads C1).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def span(seconds: float) -> str:
    """A duration as a person reads it: ``0.4 s``, ``45 s``, ``35 min``, ``2.5 h``, ``3.2 d``
    (every message and table that shows one; the stored and command-line forms are exact).

    Under 10 s two significant digits: a short campaign's summary ("in 0.4 s", as the CLI
    wrote it before it used this) must not read "in 0 s". A negative duration (the clocks of
    two hosts a little apart) is ``0 s``.
    """
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} d"


def visible(text: str) -> str:
    """``text`` with each control character but newline and tab written as an escape:
    ``\\x1b``, ``\\x07``, ``\\x9b`` (a ``\\r`` right before a newline, a Windows line end,
    is dropped).

    What closedloop prints is often data: a choice value or a campaign's description from a
    shared campaign file, an error a user's function or a device raised, a stop reason, a
    lease's owner read from a shared store. A choice value ``"a\\e]0;TITLE\\a\\e[41m"``
    printed as it is set the terminal's title and turned its background red, and a
    function's message with ``\\x1b[2J`` cleared the screen (found in review): rich drops
    BEL, backspace and carriage return but passes ESC through. Written as escapes they are
    seen, not obeyed, and a person can tell that the text holds them. JSON output
    (``export``, ``--json``) escapes them already; ``export``'s CSV is data for a program and
    keeps every value as stored in a file or a pipe, and goes through this on a terminal.
    """
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """``text`` for a one-line field (a name, a reason): :func:`visible`, with its line
    breaks written as ``\\n`` too. A reason ``"a\\nb"`` in a `tell` CSV printed a second
    line that looked like the tool's own (found in review)."""
    return visible(text.replace("\r\n", "\n").replace("\n", "\\n"))


def specs(parameters: Iterable[Any]) -> dict[str, Any]:
    """Name -> parameter, for :func:`parameter` (``campaign.parameters`` in, say)."""
    return {p.name: p for p in parameters}


class WholeTable:
    """A rich table laid out so that no number is ever cut, and no wider than the console
    when some of its columns may be left out.

    Rich fits a table to the console by cutting cells with "…" (and squeezes a column it
    cannot fit to nothing): at 80 columns ``6.426e-17`` read ``6.42…`` and every small value
    ``0.0…`` (found in review). Here each column starts at its natural width; while that is
    too wide for the console, the widest text column narrows first (its cells fold onto more
    lines, down to their longest word or :data:`_TEXT_MIN` columns: an error, a long choice
    name fold further), then the widest numeric column (its header folds, down to its widest
    number); then the cells lose their padding. A header keeps :data:`_HEAD_MIN` letters
    (a text column's :data:`_HEAD_MIN_TEXT`) of a word on a line: a column of one-digit
    integers folded ``anneal_steps`` one letter per line, a header twelve lines tall (found in
    review).

    When that is still too wide, the ``optional`` columns (a campaign's parameters) move
    after the others and the last of them are left out until the table fits, and a line
    under it says which (``left_out``: a template of ``{count}``, ``{total}``, ``{names}`` and
    ``{width}``): with 31 parameters every row took three screen lines and the objectives
    came last, past the screen's edge (found in review). With ``turn`` (a table someone
    works down, such as ``suggest``'s), a table too wide is printed turned instead: a row
    per column, a column per row headed by its first cell, in as many tables as it takes.
    Only when even that is wider than the console is the table printed wider: the CLI's
    consoles soft-wrap, they do not crop, and a long line beats a wrong number.
    """

    def __init__(
        self,
        title: str,
        headers: Sequence[str],
        rows: Sequence[Sequence[str]],
        numeric: Collection[int],
        caption: str | None = None,
        *,
        optional: Sequence[int] = (),
        left_out: str = "{count} of {total} columns left out to fit {width} columns ({names})",
        turn: bool = False,
    ) -> None:
        # made visible here, where the widths are measured: an escape is four columns wide,
        # an ESC none (Output would make them visible anyway, but after the layout)
        self.title = visible(title)
        self.headers = [visible(header) for header in headers]
        self.rows = [[visible(cell) for cell in row] for row in rows]
        self.numeric = set(numeric)
        self.caption = None if caption is None else visible(caption)
        self.optional = list(optional)
        self.left_out = left_out
        self.turn = turn

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        columns, widths, padding, over = self._layout(width)
        if self.turn and over > 0 and self.rows:
            yield from self._turned(width)
            return
        yield self._table(columns, widths, padding)
        hidden = [i for i in self.optional if i not in columns]
        if hidden:
            names = [_plain(self.headers[i]).split(maxsplit=1)[0] for i in hidden]
            note = self.left_out.format(
                count=len(hidden),
                total=len(self.optional),
                width=width,
                names=", ".join(names) if len(names) <= 3 else f"{names[0]} … {names[-1]}",
            )
            yield Text(note).wrap(console, width)  # the console soft-wraps: lines of its width

    def _layout(self, max_width: int) -> tuple[list[int], list[int], int, int]:
        """The columns shown, their widths, the cells' padding, and how far over
        ``max_width`` that still is (positive: printed wider)."""

        def widest(texts: Iterable[str]) -> int:
            return max([cell_len(text) for text in texts] + [1])

        natural, least = {}, {}
        for i, header in enumerate(self.headers):
            cells = [line for row in self.rows for line in _lines(row[i])]
            head = [word for line in _lines(header) for word in line.split()]
            natural[i] = widest([*cells, *_lines(header)])
            if i in self.numeric:
                least[i] = max(widest(cells), min(widest(head), _HEAD_MIN))
            else:
                words = [word for line in cells for word in line.split()]
                least[i] = max(min(widest(words), _TEXT_MIN), min(widest(head), _HEAD_MIN_TEXT))

        def fit(columns: list[int], padding: int) -> tuple[list[int], int]:
            """Widths of ``columns`` with ``padding``, and how far over ``max_width``."""
            widths = {i: natural[i] for i in columns}
            excess = sum(widths.values()) + len(columns) + 1 + 2 * padding * len(columns)
            excess -= max_width
            while excess > 0:
                shrinkable = [i for i in columns if widths[i] > least[i]]
                if not shrinkable:
                    break
                text = [i for i in shrinkable if i not in self.numeric]
                column = max(text or shrinkable, key=lambda i: widths[i])
                widths[column] -= 1
                excess -= 1
            return [widths[i] for i in columns], excess

        # the box: a rule left of each column and at the right edge, a space either side;
        # without the spaces when that is what it takes to fit
        every = list(range(len(self.headers)))
        for padding in (1, 0):
            widths, excess = fit(every, padding)
            if excess <= 0:
                return every, widths, padding, excess
        if not self.optional:
            return every, widths, 0, excess
        # the optional columns after the others, the last of them left out until it fits
        columns = [i for i in every if i not in self.optional] + self.optional
        kept = len(columns)
        while kept > len(columns) - len(self.optional):
            kept -= 1
            widths, excess = fit(columns[:kept], 0)
            if excess <= 0:
                break
        return columns[:kept], widths, 0, excess

    def _table(self, columns: list[int], widths: list[int], padding: int) -> Table:
        table = Table(
            title=self.title,
            caption=self.caption,
            width=sum(widths) + len(columns) + 1 + 2 * padding * len(columns),
            padding=(0, padding),
        )
        for i, width in zip(columns, widths, strict=True):
            head = Text.from_markup(self.headers[i], overflow="fold")
            head.no_wrap = False  # a numeric column's header folds, its numbers never
            table.add_column(head, width=width, no_wrap=i in self.numeric, overflow="fold")
        for row in self.rows:
            table.add_row(*[row[i] for i in columns])
        return table

    def _turned(self, max_width: int) -> Iterator[WholeTable]:
        """The table turned: a row per column but the first, a column per row headed by
        the row's first cell (its values are never cut, as numbers are not); as many tables
        as it takes to fit ``max_width``, the title on the first."""
        title, start = self.title, 0
        while start < len(self.rows):
            end = start + 1
            while end < len(self.rows):
                _, _, padding, over = self._turned_table("", start, end + 1)._layout(max_width)
                if over > 0 or padding == 0:  # the tables alike: each with its padding
                    break
                end += 1
            yield self._turned_table(title, start, end)
            title, start = "", end

    def _turned_table(self, title: str, start: int, end: int) -> WholeTable:
        rows = self.rows[start:end]
        return WholeTable(
            title,
            [self.headers[0], *[row[0] for row in rows]],
            [[header, *[row[i] for row in rows]] for i, header in enumerate(self.headers[1:], 1)],
            numeric=range(1, 1 + len(rows)),
        )


def _lines(markup: str) -> list[str]:
    """The lines of a cell's text (its markup read)."""
    return Text.from_markup(markup).plain.splitlines() or [""]


def _plain(markup: str) -> str:
    """A header's text, its markup read (a left-out column's name in the note)."""
    return Text.from_markup(markup).plain


_TEXT_MIN = 12  # a text column keeps words whole up to this width ("completed", "botorch")
_HEAD_MIN = 6  # a numeric column's header folds no narrower ("anneal/_steps", not a letter a line)
_HEAD_MIN_TEXT = 3  # a text column's header: its cells fold too ("fea/sib/le" beside "yes")


LOG_WIDTH = 400
"""Columns a table may take when no one is watching (:class:`Output`): every row on one line
for a table of some forty numeric columns (a wider one leaves parameters out, and says so:
:class:`WholeTable`); finite, so a renderable that fills the width
(none is printed to stdout today) could not write lines of thousands of spaces."""


class Output(Console):
    """The console a command prints to: its results (stdout), or with ``stderr=True`` its
    errors and notes; both follow the rules here, so stdout and stderr never differ in them.

    Its width is rich's (the terminal's, else ``COLUMNS``) while a person can see it: a
    standard stream is a terminal (``closedloop status | less`` included). With none (a
    log, cron, a CI job, a script capturing the output) and no ``COLUMNS``, rich would lay
    tables out for 80 columns and fold their cells over several lines; there is no screen
    to fit, so tables take :data:`LOG_WIDTH` and keep one line per row, which ``grep`` and
    a later reader need.

    Emoji codes are off: rich read ``:cl:`` in the PV ``PV:cl:sim:temp:RBV`` as an emoji and
    showed a technician ``PV🆑sim:temp:RBV`` (found in review); ``escape`` does not cover
    them, and nothing closedloop prints means one.

    No text it prints drives the terminal: every control character but newline and tab is
    written as an escape (:func:`visible`), in every command, table, log record and error
    alike, so no call site can forget it. Two hooks do it, and rich's own escape codes
    (colours, styles, the progress bar's cursor moves) pass untouched:

    * :meth:`render_str`, through which rich turns every ``str`` it is given into text (a
      printed line, a table's cell and title, before markup is parsed and widths are
      measured): the escapes take their columns in the layout, and the BEL or carriage
      return rich would drop silently is shown too;
    * :meth:`_render_buffer`, through which every segment passes on its way to the stream:
      the text rich built without :meth:`render_str` (a log record, a spinner's or a
      progress column's text) is made visible there. Only a segment's text is touched,
      never its style (rendered into escape codes after this) or a control segment (the
      cursor moves and the window title rich itself writes). rich's renderer for a legacy
      Windows console passes it by: that console reads no escape codes at all.

    :meth:`write_raw` (JSON, CSV) writes its text as it is: it is data, for a program.

    A stream that can no longer be written (its reader exited, its terminal went away, its
    disk is full) silences the console instead of ending the process: see
    :meth:`on_broken_pipe`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("emoji", False)
        super().__init__(*args, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """rich's text of ``text``, its control characters made :func:`visible` first."""
        return super().render_str(visible(text), **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        """rich's output of ``buffer``, each text segment's control characters made
        :func:`visible` (the rendered escape codes of its style are added after this)."""
        return super()._render_buffer(
            segment
            if segment.control or _CONTROL.search(segment.text) is None
            else Segment(visible(segment.text), segment.style)
            for segment in buffer
        )

    def on_broken_pipe(self) -> None:
        """The program reading this console's stream exited (``closedloop run ... | head``, a
        log shipper that died): print nothing more, and go on.

        rich's own handler raises ``SystemExit(1)`` from the ``print`` that met the closed
        pipe: from a trial's line that stopped a hardware campaign, stored as "the runner
        failed: SystemExit: 1", exit code 1 and not a word why (found in review). Losing a
        reader of the output must not stop the work. As Python's documentation advises for
        EPIPE, the stream's file descriptor is pointed at ``os.devnull``, so any later write
        and the flush at exit succeed (rich pointed stdout there even for a stderr console).
        When stdout closed under a campaign that goes on (:func:`say_when_stdout_closes`),
        one line on stderr says so; when stderr closed too, nothing. Any other command ends
        as quietly as a Unix tool does in ``closedloop export | head``.

        A terminal that went away (EIO) and a full disk under a log file (ENOSPC) come here
        too (``loop.streams.gone``, :meth:`_check_buffer`): they stopped a campaign as "the
        runner failed: OSError" (found in review). The line on stderr names the cause.
        """
        if self.quiet:  # said already (two threads met the closed pipe at once)
            return
        self.quiet = True
        error = sys.exc_info()[1]  # called while handling the write's error
        to_devnull(self.file)
        if self.stderr:
            return
        if _campaign_goes_on:
            _say_stdout_closed(error)
        else:  # said when a campaign starts, or as the command ends (loop.streams.exit_code)
            keep_unsaid(error)

    def _check_buffer(self) -> None:
        """rich's, with every error of a stream that is gone (``loop.streams.gone``) taken
        as a broken pipe: rich itself catches ``BrokenPipeError`` only."""
        try:
            super()._check_buffer()
        except OSError as exc:
            if not gone(exc):
                raise
            self.on_broken_pipe()

    def write_raw(self, text: str) -> None:
        """``text`` exactly as given (JSON, CSV: no markup, wrapping or tab expansion),
        flushed, as UTF-8 to a file or a pipe (``loop.streams.write_data``); a closed stream
        is :meth:`on_broken_pipe`'s, as for :meth:`print`."""
        if self.quiet:
            return
        try:
            write_data(self.file, text)
        except OSError as exc:
            if not gone(exc):
                raise
            self.on_broken_pipe()

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        # `_width`: a width given to the console, or COLUMNS when it was made
        if self._width is not None or os.environ.get("COLUMNS") or _watched():
            return size
        return ConsoleDimensions(LOG_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


_campaign_goes_on = False


@contextlib.contextmanager
def say_when_stdout_closes() -> Iterator[None]:
    """While a campaign runs, have a closed stdout said once on stderr: ``run`` and ``resume``
    go on for hours after their reader left, so a log shows why their lines stopped.
    ``export``, ``status`` and the rest end at once and say nothing, as ``head`` expects."""
    global _campaign_goes_on
    _campaign_goes_on = True
    error = take_unsaid()  # stdout failed before: at the banner, such as on /dev/full
    if error is not None:
        _say_stdout_closed(error)
    try:
        yield
    finally:
        _campaign_goes_on = False


def _say_stdout_closed(error: BaseException | None) -> None:
    """Write why stdout stopped (``loop.streams.stdout_note`` of ``error``) to stderr; when
    stderr is gone too, point it at ``os.devnull`` and say nothing (the flush at exit would
    fail on it again)."""
    stream = real_stderr()
    if stream is None:
        return
    try:
        stream.write(stdout_note(error))
        stream.flush()
    except OSError as exc:
        if gone(exc):
            to_devnull(stream)
    except ValueError:  # closed or unusable: nothing to say it on
        pass


def _watched() -> bool:
    """Whether a standard stream is a terminal (rich's own test for a terminal's size)."""
    for fd in (0, 1, 2):
        try:
            os.get_terminal_size(fd)
        except (AttributeError, ValueError, OSError):
            continue
        return True
    return False
