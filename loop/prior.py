"""Prior data: earlier measurements a campaign starts from (``prior_data:`` or ``--prior``).

A prior-data file is a CSV with a header row: one column per parameter (fixed parameters may
be left out) and one per measured output. Every objective and every output named by an
outcome constraint must have a column; other instrument outputs may. Every row is checked
against the search space (types, bounds, choice values, constraints) before anything is
stored, and any problem is reported with the file, the line, the row, the column and the fix,
like a campaign-file error.

A CSV written by ``closedloop export`` is accepted as it is: its bookkeeping columns
(``trial_id``, ``status``, ...) are ignored, and rows whose ``status`` is one the export
writes for a trial without a measurement (``failed``, ``abandoned``, ``running``) are skipped
and counted (:attr:`PriorData.skipped`, which ``validate`` and ``run`` report); any other
status than ``completed`` (a notebook's ``done``) is refused, never read as either. Columns
without a name whose cells are all empty (a spreadsheet's trailing columns) are ignored. Its
``readback.NAME`` columns are where the instrument actually was: a row is
learned there, as the campaign that measured it learned it, when those values form a point
of the space (else at the commanded values, as the runner does).

The runner stores each row as a trial of kind ``prior`` (status ``completed``, the outputs as
observations, no Bluesky documents) in the transaction that creates the campaign, so a
campaign has all its prior data or does not exist; they are never dispatched, and ``resume``
never inserts them again.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loop.errors import CampaignConfigError
from loop.fmt import counted
from planners import InvalidPoint, Point, Space
from simulators._text import CsvRecord, TextFileError, csv_records, read_text, shown, shown_names

if TYPE_CHECKING:
    from loop.config import Campaign, LoadedCampaign

logger = logging.getLogger(__name__)

MAX_CSV_BYTES = 50_000_000
MAX_PRIOR_ROWS = 100_000

# Columns of `closedloop export` that are not data: ignored, so an export can be reused
# (and reserved as parameter and output names, ``loop.config.RESERVED_COLUMNS``).
EXPORT_COLUMNS = frozenset(
    {
        "trial_id",
        "number",
        "kind",
        "status",
        "run_uid",
        "error",
        "started_at",
        "finished_at",
        "feasible",
        "pareto",
        "best",
        "slot",
        "transient",
        "retry_of",
        "attempt",
    }
)
# The statuses an export writes for a trial with no measurement to learn from: its rows are
# skipped (and counted). Every status but ``completed`` (``loop.store.TrialStatus``), compared
# without regard to case.
UNMEASURED_STATUSES = ("failed", "abandoned", "running")
# Unknown columns given a "did you mean": the first few (a header of thousands of junk
# columns is named in part, and difflib would compare each).
_HINTED = 8


class PriorDataError(CampaignConfigError):
    """A prior-data CSV that cannot be used, located by line, data row and column.

    Attributes:
        row: 1-based data row (the header is not counted), when the problem is in a row.
        column: the offending column's name, when known.
    """

    def __init__(
        self,
        path: Path | str,
        problem: str,
        *,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
        fix: str = "",
    ) -> None:
        where = []
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {shown(column)}")
        prefix = ", ".join(where)
        super().__init__(path, f"{prefix}: {problem}" if prefix else problem, line=line, fix=fix)
        self.row = row
        self.column = column


@dataclass(frozen=True)
class PriorRow:
    """One earlier measurement, validated against the campaign.

    Attributes:
        parameters: a member of the search space (types coerced, fixed values filled).
        outputs: output name -> finite value.
        source: the CSV file.
        row: 1-based data row in that file.
    """

    parameters: Point
    outputs: dict[str, float]
    source: Path
    row: int


class PriorData(list[PriorRow]):
    """The rows read from prior-data files, and how many were skipped, by status.

    A list, so that every caller handles it as the rows; ``skipped`` counts an export's rows
    without a measurement (``failed: 2``), which a count of rows alone would hide.
    """

    def __init__(self, rows: Sequence[PriorRow] = ()) -> None:
        super().__init__(rows)
        self.skipped: Counter[str] = Counter()
        # (file, data row) of the rows outside the campaign's bounds or constraints
        self.outside: list[tuple[Path, int]] = []

    def skipped_note(self) -> str:
        """`` (2 rows skipped, not measured: 1 failed, 1 abandoned)`` to follow a count of
        the rows, or ``""`` when none was skipped."""
        total = sum(self.skipped.values())
        if not total:
            return ""
        which = ", ".join(f"{n} {status}" for status, n in self.skipped.items())
        return f" ({total} row{'s' if total != 1 else ''} skipped, not measured: {which})"

    def outside_note(self, planner: str = "botorch", space: Space | None = None) -> str | None:
        """What to say of the rows outside the campaign's bounds or constraints, or
        ``None``: they are used (a model learns from them where they lie; the planner
        proposes inside only), and the user should know which they are. With ``space``,
        a parameter that most rows put far outside its bounds is named, with the question
        of its unit (:meth:`unit_question`)."""
        if not self.outside:
            return None
        by_file: dict[Path, list[int]] = {}
        for path, row in self.outside:
            by_file.setdefault(path, []).append(row)
        where = "; ".join(
            f"{path.name} row{'s' if len(rows) > 1 else ''} "
            + ", ".join(map(str, rows[:10]))
            + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
            for path, rows in by_file.items()
        )
        use = {
            "botorch": "used as measurements there: the model learns from them where they lie",
            "ax": "kept as measurements (the best trial, exports); Ax models only points "
            "inside, so it leaves them out",
        }.get(planner, "kept as measurements (the best trial, exports)")
        question = self.unit_question(space) if space is not None else None
        return (
            f"{counted(len(self.outside), 'prior-data row')} "
            f"{'is' if len(self.outside) == 1 else 'are'} outside the campaign's "
            f"bounds or constraints ({where}): {use}; proposals stay inside"
            + (f". {question}" if question else "")
        )

    def unit_question(self, space: Space) -> str | None:
        """The parameters most of the rows put more than a span outside their bounds, said
        as a question of their unit, or ``None``.

        A column in seconds for a parameter in minutes (120-900 against [0.5, 30]) was
        taken with the note written for a space narrowed since, and its rows became the
        best trial (found in review). A space narrowed since leaves rows near the old
        range; a unit leaves most of them far outside, on one side.
        """
        asked = []
        for p in space.parameters:
            bounds = getattr(p, "bounds", None)
            if bounds is None:
                continue
            low, high = float(bounds[0]), float(bounds[1])
            span = high - low
            values = [float(r.parameters[p.name]) for r in self if p.name in r.parameters]
            far = [v for v in values if v > high + span or v < low - span]
            if not values or len(far) * 2 <= len(values):
                continue
            unit = f" {p.unit}" if getattr(p, "unit", None) else ""
            asked.append(
                f"{p.name} reads {min(far):g} to {max(far):g} in {len(far)} of "
                f"{counted(len(values), 'row')}, far outside its bounds [{low:g}, {high:g}]"
                f"{unit}: is that column in another unit?"
            )
        return "; ".join(asked) or None


def prior_files(loaded: LoadedCampaign, extra: Sequence[Path | str] = ()) -> list[Path]:
    """The campaign's ``prior_data`` (relative to its file), then ``extra`` (e.g. ``--prior``).

    Both are used: earlier data is never dropped because another file was given. A file
    named twice is read once.
    """
    files: list[Path] = []
    if loaded.campaign.prior_data:
        files.append((loaded.base_dir / loaded.campaign.prior_data).resolve())
    files.extend(Path(p).resolve() for p in extra)
    unique: list[Path] = []
    for f in files:
        if f not in unique:
            unique.append(f)
    return unique


def load_prior_data(loaded: LoadedCampaign, extra: Sequence[Path | str] = ()) -> PriorData:
    """Every row of the campaign's prior-data files, validated (see ``read_prior_csv``),
    with the rows skipped in all of them."""
    from instruments import describe_instrument

    c = loaded.campaign
    files = prior_files(loaded, extra)
    if not files:
        return PriorData()
    _refuse_missing(loaded, files)
    outputs = describe_instrument(c.instrument, c.parameters, base_dir=loaded.base_dir)
    rows = PriorData()
    for f in files:
        read = read_prior_csv(f, c, outputs)
        rows.extend(read)
        rows.skipped.update(read.skipped)
        rows.outside += read.outside
    note = rows.outside_note("plugin" if c.planner.plugin else c.planner.kind, c.space)
    if note is not None:
        logger.warning("%s", note)
    model = c.planner.kind in ("botorch", "ax") and not c.planner.plugin
    if len(rows) > _MANY_PRIOR_ROWS and model:
        # said before it is paid: the first suggest ran 274 s at 1.8 GB with no word (found
        # in review; a GP's exact fit grows with the cube of its points)
        logger.warning(
            "%d prior-data rows: the model's first fit over all of them takes minutes and "
            "gigabytes of memory at this size (3000 rows: about 5 min, 1.8 GB on 2 cores); "
            "a few hundred rows near the region of interest teach it nearly as much",
            len(rows),
        )
    return rows


#: Prior rows past which a model planner's first fit is said to be slow (benchmarks/scale.py:
#: a cold fit at 2000 points took 14 s of a 18 s suggest; the exact fit grows as n**3).
_MANY_PRIOR_ROWS = 1500


def _refuse_missing(loaded: LoadedCampaign, files: Sequence[Path]) -> None:
    """A prior-data file that does not exist, said where it was named and how the path is
    read: ``prior_data:`` at its line of the campaign file, relative to that file's folder;
    ``--prior`` relative to the current folder."""
    c = loaded.campaign
    from_file = (loaded.base_dir / c.prior_data).resolve() if c.prior_data else None
    for f in files:
        if f.exists() or f.is_symlink():  # a dangling link: `_read_text` says it is missing
            continue
        if f == from_file:
            raise PriorDataError(
                loaded.path,
                f"prior_data: {c.prior_data}: no such file ({f})",
                line=_prior_data_line(loaded),
                fix="prior_data is relative to the campaign file's folder "
                f"({loaded.base_dir}); correct the name, or give the CSV's absolute path",
            )
        raise PriorDataError(
            f,
            "no such file (given with --prior)",
            fix=f"a --prior path is relative to the current folder ({Path.cwd()}), not to "
            "the campaign file; correct it, or give the CSV's absolute path",
        )


def _prior_data_line(loaded: LoadedCampaign) -> int | None:
    """The line of ``prior_data:`` in the campaign's text, if it can be found."""
    from instruments._yamlfile import line_of, read_yaml_mapping

    try:
        data = read_yaml_mapping(
            loaded.text, loaded.path, error=CampaignConfigError, example="branin.yaml"
        )
    except CampaignConfigError:  # pragma: no cover - the text was validated already
        return None
    return line_of(data, ("prior_data",))


def required_outputs(campaign: Campaign) -> list[str]:
    """Outputs every prior row must have: the objectives and outcome-constrained outputs."""
    names = [o.name for o in campaign.objectives]
    for constraint in campaign.parsed_outcome_constraints:
        if constraint.name not in names:
            names.append(constraint.name)
    return names


def read_prior_csv(path: Path, campaign: Campaign, outputs: Sequence[str]) -> PriorData:
    """Read and validate one prior-data CSV against the campaign's space and outputs.

    Raises:
        PriorDataError: the file is missing, unreadable, or any header or row is invalid.
    """
    text = _read_text(path)
    if path.suffix.lower() in (".json", ".jsonl", ".yaml", ".yml"):
        # an export in another format: its first character was refused as a column ("'['
        # is neither a parameter nor an output", found in review)
        raise PriorDataError(
            path,
            f"is a {path.suffix.lstrip('.').upper()} file; prior data is a CSV",
            fix="export the campaign as CSV (`closedloop export -o prior.csv`) and give that",
        )
    space = campaign.space
    records = csv_records(text)  # the header is the first non-blank record
    try:
        head = next(records, None)
    except TextFileError as exc:
        raise PriorDataError(path, exc.problem, line=exc.line, fix=exc.fix) from None
    if head is None:
        raise PriorDataError(
            path, "is empty", fix="write a header row of parameter and output names, then data"
        )
    header_line = head.line
    header = _Header([h.strip() for h in head.cells])
    _check_header(path, header.columns, campaign, space, outputs, header_line)
    has_status = "status" in header.columns
    rows = PriorData()
    bad: list[PriorDataError] = []
    number = 0
    while True:
        try:
            found = next(records, None)
        except TextFileError as exc:
            raise PriorDataError(
                path, exc.problem, line=exc.line, row=number + 1, fix=exc.fix
            ) from None
        if found is None:
            break
        number += 1
        line = found.line
        if number > MAX_PRIOR_ROWS:
            raise PriorDataError(
                path,
                f"has more than {MAX_PRIOR_ROWS} data rows",
                line=line,
                fix="keep the most informative rows (a GP gains little past a few thousand)",
            )
        try:
            row = _read_row(path, found, number, header, has_status, campaign, outputs, rows)
        except PriorDataError as exc:
            bad.append(exc)
            continue
        if row is not None:
            rows.append(row)
    if bad:
        raise _all_of(bad)
    if not rows:
        raise PriorDataError(
            path,
            "has no data rows"
            + (" with status completed" if has_status else "")
            + rows.skipped_note(),
            line=header_line,
            fix="add one row per earlier measurement below the header, or drop the file",
        )
    return rows


def _read_row(
    path: Path,
    found: CsvRecord,
    number: int,
    header: _Header,
    has_status: bool,
    campaign: Campaign,
    outputs: Sequence[str],
    rows: PriorData,
) -> PriorRow | None:
    """Data row ``number`` as a prior row, or ``None`` for an export's unmeasured trial
    (counted in ``rows.skipped``).

    Raises:
        PriorDataError: the row cannot be used, located by line, row and column.
    """
    space = campaign.space
    params = {p.name: p for p in space.parameters}
    required = required_outputs(campaign)
    line = found.line
    record = header.fit(path, number, found)
    if has_status:
        status = _status(path, line, number, record["status"])
        if status is not None:  # an export's trial without a measurement to learn from
            rows.skipped[status] += 1
            return None
    point: dict[str, Any] = {}
    for name, param in params.items():
        if name in record:
            point[name] = _parse_parameter(path, line, number, param, record[name])
    try:
        point = space.validate(point)
    except InvalidPoint:
        try:
            # measured outside today's bounds or constraints (the space was narrowed since):
            # learned from where it lies, and said (PriorData.outside)
            point = space.measured(point)
        except InvalidPoint as exc:
            raise PriorDataError(
                path,
                str(exc),
                line=line,
                row=number,
                column=_column_of(str(exc), params),
                fix="correct or delete the row; each value must be one its parameter can "
                "take (a whole number for an int, one of a choice's values)",
            ) from None
        rows.outside.append((path, number))
    point = _achieved(point, record, params, space)
    values: dict[str, float] = {}
    for name in outputs:
        cell = record.get(name, "")
        if cell == "":
            if name in required:
                raise PriorDataError(
                    path,
                    "is empty",
                    line=line,
                    row=number,
                    column=name,
                    fix="every row needs each objective and outcome-constrained output; "
                    "delete rows that were not measured",
                )
            continue
        if name not in required and _not_finite(cell):
            # a side output that read nothing, as the export writes it (nan): a run keeps
            # such a trial, and prior data refused the export's every such row (review)
            continue
        values[name] = _parse_output(path, line, number, name, cell)
    return PriorRow(parameters=point, outputs=values, source=path, row=number)


def _not_finite(cell: str) -> bool:
    """Whether ``cell`` is a number that is not finite (``nan``, ``inf``); junk is not."""
    from loop.config import read_number  # loop.config imports this module

    try:
        return not math.isfinite(read_number(cell))
    except ValueError:
        return False


#: The most bad rows one refusal lists: each with its line, so a spreadsheet is mended in
#: one pass, not one run per row (found in review).
_BAD_ROWS_SHOWN = 10


def _all_of(bad: Sequence[PriorDataError]) -> PriorDataError:
    """One refusal for every bad row: the first in full, then each other's line and
    problem (at most :data:`_BAD_ROWS_SHOWN` in all)."""
    first = bad[0]
    if len(bad) == 1:
        return first
    others = [f"line {e.line}: {e.problem}" for e in bad[1:_BAD_ROWS_SHOWN]]
    more = len(bad) - _BAD_ROWS_SHOWN
    listed = "; ".join(others) + (f"; and {more} more" if more > 0 else "")
    error = PriorDataError(
        first.path,
        f"{first.problem} ({len(bad)} rows cannot be used; the others: {listed})",
        line=first.line,
        fix=first.fix,
    )
    error.row, error.column = first.row, first.column
    return error


def _status(path: Path, line: int, row: int, cell: str) -> str | None:
    """``None`` for a measured row (``completed``, any case, or empty), the status for an
    export's row without a measurement (skipped); any other status is refused: ``done`` or
    ``ok`` may mean measured or not, and reading either way could be wrong."""
    status = cell.strip().lower()
    if status in ("completed", ""):
        return None
    if status in UNMEASURED_STATUSES:
        return status
    raise PriorDataError(
        path,
        f"{shown(cell)} is not a status closedloop writes "
        f"(completed, {', '.join(UNMEASURED_STATUSES)})",
        line=line,
        row=row,
        column="status",
        fix="write completed in a measured row (failed, abandoned and running rows are "
        "skipped), or delete the column if it is your own: a status column is read as "
        "`closedloop export` writes it",
    )


class _Header:
    """A prior-data header's columns, and where a row's cells may stop.

    A spreadsheet saves the columns it once formatted as empty header cells (thousands of
    them, at times): ignored while their cells are empty too. Each row is fitted in time
    linear in its own cells, so such a header costs nothing per row (checking every missing
    cell against a list of the unnamed columns took seconds on a 20 kB file, found in
    review).

    Attributes:
        columns: the header's cells, stripped (``""`` for an unnamed column).
        named: ``(position, name)`` of each named column.
        unnamed: the positions of the unnamed columns, in order.
        needed: how many cells a row must have: up to the last named column.
    """

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.named = [(i, col) for i, col in enumerate(columns) if col]
        self.unnamed = [i for i, col in enumerate(columns) if not col]
        self.needed = self.named[-1][0] + 1 if self.named else 0

    def fit(self, path: Path, row: int, record: CsvRecord) -> dict[str, str]:
        """A row's stripped cells by column name: cells past the header's that are empty
        are dropped, and missing cells of trailing unnamed columns read as empty
        (spreadsheets write either), so long as no value is lost; a value in an unnamed
        column is refused, naming the column by its position and letter."""
        cells = record.cells
        width = len(self.columns)
        if len(cells) < self.needed or (
            len(cells) > width and any(c.strip() for c in cells[width:])
        ):
            spans = record.last > record.line
            raise PriorDataError(
                path,
                f"has {counted(len(cells), 'cell')} for "
                f"{counted(self.needed if len(cells) < self.needed else width, 'column')}"
                + record.spans_note(),
                line=record.line,
                row=row,
                fix=f"close the quote on line {record.line} where its cell ends, or remove it"
                if spans
                else "give every row one cell per header column"
                + (" (quote cells holding commas)" if len(cells) > width else ""),
            )
        for i in self.unnamed:
            if i >= len(cells):
                break
            if cells[i].strip():
                raise PriorDataError(
                    path,
                    f"has {shown(cells[i].strip())} in column {i + 1} ({column_letter(i + 1)}), "
                    "which has no name in the header",
                    line=record.line,
                    row=row,
                    fix="name the column in the header (a parameter or an output), or delete it",
                )
        return {col: cells[i].strip() if i < len(cells) else "" for i, col in self.named}


def column_letter(position: int) -> str:
    """A spreadsheet's name of the 1-based column ``position``: ``A``, ..., ``Z``, ``AA``."""
    letters = ""
    while position > 0:
        position, rest = divmod(position - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _read_text(path: Path) -> str:
    try:
        return read_text(
            path,
            kind="CSV file",
            max_bytes=MAX_CSV_BYTES,
            missing_fix="check the path (prior_data: is relative to the campaign file, --prior "
            "to the current folder)",
            csv=True,
        )
    except TextFileError as exc:
        raise PriorDataError(path, exc.problem, line=exc.line, fix=exc.fix) from None


def other_delimiter(columns: Sequence[str]) -> tuple[str, str] | None:
    """``(problem, fix)`` when a header was read as one column because the file is separated
    by semicolons or tabs (a spreadsheet where the decimal mark is a comma saves ";"), else
    ``None``. Prior data and ``tell --csv`` share it: reported as an unknown column, the user
    looked for a typo in a column name (found in review). ``columns``: the whole header;
    one of several columns that holds a ";" (``notes;comments``) is a name, not a sign of
    another separator (it was called one: found in review)."""
    for col in columns if len(columns) == 1 else ():
        separator = next((sep for sep in (";", "\t") if sep in col), None)
        if separator is not None:
            name = "a semicolon" if separator == ";" else "a tab"
            return (
                f"is separated by {name}, not by commas: its header reads as one column "
                f"{shown(col)}",
                "save it as comma-separated CSV (cells separated by commas, decimal points "
                "not decimal commas), e.g. in the spreadsheet's Save As: CSV (comma delimited)",
            )
    return None


def _check_header(
    path: Path,
    columns: list[str],
    campaign: Campaign,
    space: Space,
    outputs: Sequence[str],
    line: int,
) -> None:
    """Every column a parameter, an output or an export's bookkeeping column; every
    parameter (but fixed ones) and every required output present.

    A column that is none of these is refused, not ignored (a notebook's ``date`` or
    ``notes`` too): a misspelt optional output or fixed parameter (``purty``, ``presure``)
    ignored would lose its values without a word, and a campaign option to name columns to
    ignore would be a second list to keep in step with the CSV. All such columns are named
    at once, so that deleting them is one edit.
    """
    known = [p.name for p in space.parameters] + list(outputs)
    seen: set[str] = set()
    unknown: list[str] = []
    for col in columns:
        if col == "":
            continue  # unnamed: its cells must be empty (read_prior_csv checks each row)
        if col in seen:
            raise PriorDataError(
                path,
                "appears twice in the header",
                line=line,
                column=col,
                fix="delete one of the two columns, or rename it (each parameter and output "
                "is read from one column)",
            )
        seen.add(col)
        if not (col in known or col in EXPORT_COLUMNS or col.startswith("readback.")):
            unknown.append(col)
    delimiter = other_delimiter(columns) if unknown else None
    if delimiter is not None:
        raise PriorDataError(path, delimiter[0], line=line, fix=delimiter[1])
    if unknown:
        hints = []
        for col in unknown[:_HINTED]:
            near = difflib.get_close_matches(col, known, n=1)
            if near:
                hints.append(
                    f"did you mean '{near[0]}'"
                    + (f" for {shown(col)}" if len(unknown) > 1 else "")
                    + "?"
                )
        names = shown_names(unknown)
        problem = (
            "is neither a parameter nor an output of the instrument"
            if len(unknown) == 1
            else f"columns {names} are neither parameters nor outputs of the instrument"
        )
        raise PriorDataError(
            path,
            problem,
            line=line,
            column=unknown[0] if len(unknown) == 1 else None,
            fix=" ".join(
                hints
                + [
                    f"columns are the parameters ({', '.join(p.name for p in space.parameters)}) "
                    f"and outputs ({', '.join(outputs)}); delete any other column (notes, dates) "
                    "from the CSV closedloop reads: it is refused rather than ignored so that a "
                    "misspelt name never loses its values"
                ]
            ),
        )
    for p in space.parameters:
        if p.name not in seen and getattr(p, "type", None) != "fixed":
            raise PriorDataError(
                path,
                f"has no column for parameter '{p.name}'",
                line=line,
                column=p.name,
                fix="add a column per parameter (fixed parameters may be left out)",
            )
    for name in required_outputs(campaign):
        if name not in seen:
            raise PriorDataError(
                path,
                f"has no column for output '{name}' (an objective or outcome constraint)",
                line=line,
                column=name,
                fix="add the measured values of every objective and outcome-constrained output",
            )


def _achieved(
    point: dict[str, Any], record: dict[str, str], params: dict[str, Any], space: Any
) -> dict[str, Any]:
    """``point`` with an export's ``readback.NAME`` values, if they form a point of the space.

    The runner learns a trial at its readbacks when they lie in the space (the instrument
    did not reach the commanded value exactly), so an export reused as prior data must be
    learned there too, or the new campaign's model differs from the one that measured it.
    """
    achieved = dict(point)
    for name, param in params.items():
        cell = record.get(f"readback.{name}", "")
        if cell == "":
            continue
        try:
            achieved[name] = _parse_parameter(Path(), 0, 0, param, cell)
        except PriorDataError:
            return point  # not a value of this parameter: keep the commanded point
    return achieved if space.contains(achieved) else point


def _parse_parameter(path: Path, line: int, row: int, param: Any, cell: str) -> Any:
    """The cell as the parameter's value (:func:`loop.config.parameter_value`, the reading
    ``tell --actual`` and ``plan --at`` share); ``space.validate`` checks bounds and
    constraints."""
    from loop.config import parameter_value  # loop.config imports this module

    kind = getattr(param, "type", None)
    if cell == "" and kind not in ("choice", "fixed"):
        raise PriorDataError(
            path, "is empty", line=line, row=row, column=param.name, fix="give every parameter"
        )
    try:
        return parameter_value(param, cell)
    except ValueError as exc:
        if kind == "fixed":  # the row was measured elsewhere: its value is not a typo
            problem = f"{shown(cell)}, but this campaign fixes {param.name} to {param.value}"
            fix = (
                "this row was measured at another value: remove it, or make "
                f"{param.name} a searched parameter (type float, int or choice) that holds "
                f"{cell.strip()}"
            )
        elif kind == "choice":
            allowed = ", ".join(str(v) for v in param.values)
            problem, fix = (
                f"{shown(cell)} is not one of the values {allowed}",
                f"use one of: {allowed}",
            )
        else:
            problem = f"{shown(cell)} {exc}"
            fix = "write plain numbers (no units) in parameter columns" + (
                ", whole numbers for an int parameter" if kind == "int" else ""
            )
        raise PriorDataError(
            path, problem, line=line, row=row, column=param.name, fix=fix
        ) from None


def _parse_output(path: Path, line: int, row: int, name: str, cell: str) -> float:
    """A measured value (:func:`loop.config.read_number`: ``1_000`` is refused, not 1000)."""
    from loop.config import read_number  # loop.config imports this module

    try:
        value = read_number(cell)
    except ValueError as exc:
        value = math.nan
        problem = f"{shown(cell)} {exc}"
    else:
        problem = f"{shown(cell)} is not finite"
    if not math.isfinite(value):
        raise PriorDataError(
            path,
            problem,
            line=line,
            row=row,
            column=name,
            fix="write the measured value as a finite number, or delete the row",
        )
    return value


def _column_of(message: str, params: dict[str, Any]) -> str | None:
    """The parameter an ``InvalidPoint`` message is about (``name=value ...``); ``None`` for
    a violated constraint, which involves several columns."""
    for name in params:
        if message.startswith(f"{name}="):
            return name
    return None
