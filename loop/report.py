"""Tables and plots from a store: the best trial, CSV/JSON export, and the PNG report."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from loop.config import Campaign, parse_campaign
from loop.errors import ClosedLoopError
from loop.store import CampaignRow, Store, export_records, path_from_text
from planners._outliers import best_index, best_trace, outlying
from planners._protocol import DESIGN_KINDS, Objective

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class OutputError(ClosedLoopError, ValueError):
    """An output file (``export -o``, ``report -o``) that cannot be written as given.

    Bad input, like a bad campaign file: the CLI prints it and exits with code 2.
    """


def write_output(
    path: Path,
    text: str | Iterable[str],
    example: str = "trials.csv",
    *,
    store_url: str | None = None,
) -> None:
    """Write ``text`` to ``path``, or :class:`OutputError` naming the path and the fix.

    ``text`` may come in pieces (an iterable of strings), written as they come: a store's
    20 000 documents need not all be in memory at once (the jsonl export of a 5000-trial
    campaign took 300 MB). A path that cannot be written loses nothing: the store is
    only read, and the command can be run again with another ``-o``. A path
    that is the store's own database (``store_url``), or any SQLite database, is refused:
    ``export -o closedloop.db`` is a typo that would destroy every campaign in it (found in
    review). A new or regular file is written as a temporary file renamed over it, so a
    failed write (a full disk) leaves the old file whole and a reader never sees half of
    it. A symlink, ``/dev/stdout`` or a named pipe is written through instead: renaming
    over it would replace the link or device itself. A file written over keeps its mode: a
    private (0600) export rewritten came out readable by everyone (the new file's 0666 minus
    the umask; found in review).
    """
    if path.is_dir():
        raise OutputError(
            f"cannot write to {path}: it is a directory; give a file name, e.g. -o {path / example}"
        )
    refuse_database(path, store_url, example)
    refuse_missing_folder(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        _write_through(path, text)
        return
    try:
        kept: os.stat_result | None = path.stat()
    except FileNotFoundError:
        kept = None
    except OSError as exc:
        raise OutputError(_cannot_write(path, exc)) from None
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # 0o666 minus the umask, as for any new file (a NamedTemporaryFile would be 0o600)
        handle = os.fdopen(
            os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w", encoding="utf-8"
        )
    except OSError:  # e.g. a folder that is not ours, holding a file we may write
        _write_through(path, text)
        return
    try:
        with handle:
            if kept is not None:  # before any byte is written
                _keep_access(handle.fileno(), kept)
            _write_pieces(handle, text)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(_cannot_write(path, exc)) from None
    except BaseException:  # the pieces' source failed (a damaged store): the old file stays
        temporary.unlink(missing_ok=True)
        raise


def _write_pieces(handle: IO[str], text: str | Iterable[str]) -> None:
    if isinstance(text, str):
        handle.write(text)
    else:
        handle.writelines(text)


def _keep_access(fd: int, old: os.stat_result) -> None:
    """Give the new file ``fd`` the mode and group of the file it replaces.

    Where the group cannot be kept (a file of a group this user is not in), the group's
    bits are dropped rather than granted to this user's own group.
    """
    mode = stat.S_IMODE(old.st_mode) & 0o777  # no set-id bits
    if os.fstat(fd).st_gid != old.st_gid:
        try:
            os.fchown(fd, -1, old.st_gid)
        except OSError:
            mode &= ~0o070
    os.fchmod(fd, mode)


def _write_through(path: Path, text: str | Iterable[str]) -> None:
    try:
        with path.open("w", encoding="utf-8") as handle:
            _write_pieces(handle, text)
    except OSError as exc:
        raise OutputError(_cannot_write(path, exc)) from None


# The first bytes of SQLite's files: a database, its write-ahead log (two byte orders), and
# its rollback journal. The shared-memory index (-shm) has none: only ``store_url`` finds it.
_SQLITE_MAGIC = (
    b"SQLite format 3\x00",
    b"\x37\x7f\x06\x82",
    b"\x37\x7f\x06\x83",
    b"\xd9\xd5\x05\xf9",
)
_SQLITE_FILES = ("", "-wal", "-shm", "-journal")


def refuse_database(path: Path, store_url: str | None, example: str = "trials.csv") -> None:
    """:class:`OutputError` if writing ``path`` would overwrite a database.

    That is the store's own file or one of SQLite's companions to it (``-wal``, ``-shm``,
    ``-journal``) when ``store_url`` is a SQLite URL, compared as files (a symlink or another
    spelling of the path is the same file), or any existing file that starts like a SQLite
    database, log or journal (another store).
    """
    if store_url is not None:
        db = sqlite_file(store_url)
        for suffix in _SQLITE_FILES if db is not None else ():
            companion = Path(f"{db}{suffix}")
            if _same_file(path, companion):
                raise OutputError(
                    f"cannot write to {path}: it is the store's database"
                    f"{' file ' + suffix if suffix else ''} ({store_url}); writing there would "
                    f"destroy the campaigns in it; give another file name, e.g. -o {example}"
                )
    if not path.is_file():  # missing (the usual case); a pipe would block the read
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:  # unreadable: nothing we could tell about it
        return
    if head.startswith(_SQLITE_MAGIC):
        raise OutputError(
            f"cannot write to {path}: it is a SQLite database (a closedloop store?), which "
            f"writing there would destroy; give another file name, e.g. -o {example}, or "
            "delete the file first if it is really not needed"
        )


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; ``None`` for in-memory and other databases."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL, a port that is not a number
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: compare the paths they would be
        return a.resolve() == b.resolve()


def refuse_missing_folder(path: Path) -> None:
    """An output into a folder that does not exist is refused, not the folder created: a
    typo in ``-o`` would otherwise scatter folders (as root, anywhere). ``export`` and
    ``report`` alike; the store's own folder is created (``Store``)."""
    if not path.parent.is_dir():
        raise OutputError(
            f"cannot write to {path}: the folder {path.parent} does not exist; create it "
            "first, or give a path in a folder that exists and that you may write to"
        )


def _cannot_write(path: Path, exc: OSError) -> str:
    return (
        f"cannot write to {path}: {exc.strerror or exc}; give a path in a folder that exists "
        "and that you may write to"
    )


def report_path(out: Path) -> tuple[Path, str]:
    """The file the report is written to, and its format, from ``-o``.

    The suffix picks the format (matplotlib's); a name without one gets ``.png``, the path
    that is then printed being the one written (matplotlib would add the suffix silently).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    supported = FigureCanvasAgg.get_supported_filetypes()
    if out.is_dir():
        raise OutputError(
            f"cannot write the report to {out}: it is a directory; give a file name, e.g. "
            f"-o {out / 'report.png'}"
        )
    suffix = out.suffix.lower().removeprefix(".")
    if not suffix:
        out = out.with_name(out.name + ".png")
        suffix = "png"
    if suffix not in supported:
        raise OutputError(
            f"cannot write the report to {out}: '.{suffix}' is not an image format "
            f"matplotlib writes; end the file name in one of "
            f"{', '.join('.' + k for k in sorted(supported))} (e.g. {out.with_suffix('.png')})"
        )
    return out, suffix


def stored_campaign(row: CampaignRow) -> Campaign:
    """The campaign model from the YAML text kept in the store (no file needed), for display:
    not checked again against its planner and instrument (see ``parse_campaign``)."""
    path = path_from_text(row.config_path)
    return parse_campaign(
        row.config_text,
        path=path,
        base_dir=path.parent,
        instrument_text=row.instrument_text,
        cross_check=False,
    ).campaign


def best_record(records: list[dict[str, Any]], objective: str, goal: str) -> dict[str, Any] | None:
    """The completed feasible trial with the best finite objective value, readings far
    outside every other one left out (:func:`outlying_records`).

    A record without a ``feasible`` key (see :func:`annotate`) counts as feasible.
    """
    index, _ = best_index(_best_candidates(records, objective), _sign(goal))
    return None if index is None else records[index]


def outlying_records(
    records: list[dict[str, Any]], objective: str, goal: str
) -> list[dict[str, Any]]:
    """The completed feasible trials whose objective value is far outside every other one
    (``planners._outliers.outlying``: an overrange code, a sentinel such as 9.9e37), which
    are left out of the best trial and of :func:`best_so_far`; in trial order.
    """
    _, mask = best_index(_best_candidates(records, objective), _sign(goal))
    return [r for r, flag in zip(records, mask, strict=True) if flag]


def best_so_far(records: list[dict[str, Any]], objective: str, goal: str) -> list[float]:
    """Running best feasible objective per trial (NaN until the first one), the readings of
    :func:`outlying_records` left out: its last value is :func:`best_record`'s."""
    trace, _ = best_trace(_best_candidates(records, objective), _sign(goal))
    return [float(v) for v in trace]


def outlying_note(trials: list[tuple[int, float]], objective: str) -> str:
    """The one line ``run`` and ``status`` print for readings left out of the best trial:
    ``trials`` are ``(number, value)`` in trial order; at most five are named."""
    shown = ", ".join(f"#{n} {objective} = {v:.6g}" for n, v in trials[:_NAMED_OUTLIERS])
    more = f" and {len(trials) - _NAMED_OUTLIERS} more" if len(trials) > _NAMED_OUTLIERS else ""
    if len(trials) == 1:
        return (
            f"left out of best: trial {shown}, far outside every other reading "
            "(an overrange code or a sentinel?)"
        )
    return (
        f"left out of best: trials {shown}{more}, far outside every other reading "
        "(overrange codes or sentinels?)"
    )


# Outlying trials named by :func:`outlying_note`; the rest are counted.
_NAMED_OUTLIERS = 5


def _sign(goal: str) -> float:
    return 1.0 if goal == "maximize" else -1.0


def _best_candidates(records: list[dict[str, Any]], objective: str) -> list[float]:
    """The objective per record where it may be the best (a completed feasible trial), NaN
    elsewhere: what ``planners._outliers.best_index`` takes."""
    return [
        _number(r["outputs"].get(objective))
        if r["status"] == "completed" and r.get("feasible", True)
        else math.nan
        for r in records
    ]


# ---------------------------------------------------------------------------- goals
def annotate(records: list[dict[str, Any]], campaign: Campaign) -> list[dict[str, Any]]:
    """Add ``feasible`` (outcome constraints), and ``best`` (one objective) or ``pareto``
    (several) to records.

    ``feasible`` is set on every record when the campaign has outcome constraints: on a
    completed trial whether it meets them (one without a value for a constrained output does
    not), on any other ``None``; ``pareto`` is set on
    every record of a multi-objective campaign: whether the trial is on the Pareto front of
    the feasible completed trials (prior-data trials included: they are measurements).
    ``best`` is set on every record of a one-objective campaign: whether it is the trial
    ``status`` calls best (:func:`best_record`), so an export says which trial that is
    without the campaign file and the rules for feasibility and outlying readings.
    """
    constraints = campaign.parsed_outcome_constraints
    for r in records:
        if constraints:
            # a trial that did not complete has no verdict: null, not a missing key (every
            # JSON record has the same keys; found in review)
            r["feasible"] = (
                all(c.satisfied(r["outputs"]) for c in constraints)
                if r["status"] == "completed"
                else None
            )
    objectives = campaign.objectives
    if len(objectives) > 1:
        on_front = pareto_flags(records, campaign)
        for r, flag in zip(records, on_front, strict=True):
            r["pareto"] = flag
    elif objectives and not _named_best(campaign, records):
        best = best_record(records, objectives[0].name, objectives[0].goal)
        for r in records:
            r["best"] = r is best
    return records


def _named_best(campaign: Campaign, records: list[dict[str, Any]]) -> bool:
    """Whether ``best`` is a parameter or output of the campaign: then the export has no
    ``best`` flag column (a campaign stored before the flag existed may use the name; its
    column would have been written twice)."""
    if any(p.name == "best" for p in campaign.parameters):
        return True
    return any("best" in r["outputs"] for r in records)


def objective_values(
    status: str, outputs: Mapping[str, Any], objectives: Sequence[Objective]
) -> tuple[float, ...]:
    """One trial's row of its campaign's objective matrix (objective order): the values of a
    completed trial (NaN where missing or not finite), all NaN for any other trial.

    The one definition behind every Pareto front and hypervolume of a campaign: ``run``'s
    summary and ``patience`` (the runner) and ``status``, ``export`` and the report (here).
    A failed trial keeps the finite outputs it had (e.g. a readback out of range after
    the measurement); they once widened the report's inferred reference point and not the
    runner's, so one campaign had two hypervolumes (found in review).
    """
    if status != "completed":
        return tuple(math.nan for _ in objectives)
    values = (_number(outputs.get(o.name)) for o in objectives)
    return tuple(v if math.isfinite(v) else math.nan for v in values)


def objective_matrix(
    records: list[dict[str, Any]], objectives: Sequence[Objective]
) -> tuple[np.ndarray, np.ndarray]:
    """``n x m`` objective values (:func:`objective_values`) and the mask of the completed
    feasible rows, which is what the front and the hypervolume count."""
    Y = np.array(
        [objective_values(r["status"], r["outputs"], objectives) for r in records], dtype=float
    ).reshape(len(records), len(objectives))
    usable = np.array(
        [r["status"] == "completed" and bool(r.get("feasible", True)) for r in records],
        dtype=bool,
    )
    return Y, usable


def pareto_flags(records: list[dict[str, Any]], campaign: Campaign) -> list[bool]:
    """Whether each record is on the Pareto front of the feasible completed trials."""
    from planners import pareto_mask

    if not records:
        return []
    Y, usable = objective_matrix(records, campaign.objectives)
    return [bool(v) for v in pareto_mask(Y, campaign.objectives, usable)]


def hypervolume_trace(
    records: list[dict[str, Any]], campaign: Campaign, *, max_evaluations: int | None = None
) -> list[float]:
    """Feasible hypervolume after each trial (one reference point for the whole trace).

    The reference point is the objectives' ``reference_point`` where given, else inferred
    from the completed feasible trials (``planners.reference_point``). Empty when nothing
    was measured.
    ``max_evaluations`` bounds the volumes computed (``planners.hypervolume_trace``: the
    last value stays exact, earlier ones may lag behind the truth between computed steps).
    """
    from planners import hypervolume_trace as trace

    if not records:
        return []
    Y, usable = objective_matrix(records, campaign.objectives)
    try:
        return trace(Y, campaign.objectives, None, usable, max_evaluations=max_evaluations)
    except ValueError:  # no finite value to infer a reference point from
        return [0.0] * len(records)


def final_hypervolume(records: list[dict[str, Any]], campaign: Campaign) -> float | None:
    """The feasible hypervolume of all the trials: ``hypervolume_trace(...)[-1]``, computed once.

    For ``status``, which shows only this value: the trace computes a volume each time the
    front changed, which grew with the campaign (seconds for a thousand trials). ``None``
    when there is no trial (the trace is empty); 0.0 when nothing finite was measured.
    """
    from planners import hypervolume

    if not records:
        return None
    Y, usable = objective_matrix(records, campaign.objectives)
    try:
        return hypervolume(Y, campaign.objectives, None, usable)
    except ValueError:  # no finite value to infer a reference point from
        return 0.0


def hypervolume_reference(
    records: list[dict[str, Any]], campaign: Campaign
) -> dict[str, tuple[float, bool]] | None:
    """The reference point the campaign's hypervolume is measured from, per objective: its
    value and whether the campaign file gives it (else it is inferred from the trials, and
    moves as they do). ``None`` without a trial or a finite value to infer it from.

    ``status`` shows it beside the hypervolume: a number without its reference point could
    not be compared or checked (found in review)."""
    from planners import reference_point

    if not records:
        return None
    Y, usable = objective_matrix(records, campaign.objectives)
    try:
        ref = reference_point(campaign.objectives, Y, usable)
    except ValueError:
        return None
    return {
        o.name: (float(v), o.reference_point is not None)
        for o, v in zip(campaign.objectives, ref, strict=True)
    }


def feasibility(records: list[dict[str, Any]]) -> tuple[int, int]:
    """``(feasible, completed)`` over the campaign's own completed trials (not priors)."""
    done = [r for r in records if r["status"] == "completed" and r["kind"] != "prior"]
    return sum(bool(r.get("feasible", True)) for r in done), len(done)


def units_of(campaign: Campaign) -> dict[str, str]:
    """Parameter name -> unit, for the parameters that declare one."""
    units: dict[str, str] = {}
    for p in campaign.parameters:
        unit = getattr(p, "unit", None)
        if unit:
            units[p.name] = str(unit)
    return units


def declared_units(campaign: Campaign, base_dir: Path) -> dict[str, dict[str, str]]:
    """The units a campaign declares: each parameter's ``unit`` (else its instrument
    input's ``units:``) and each instrument output's ``units:`` (only an instrument file,
    or inline ``devices:``, declares an output's unit). ``base_dir``: the campaign file's
    folder, which a relative instrument file is found from.

    What ``status`` and the report label parameters and outputs with (``status --json``'s
    ``units``): the README said an output's ``units:`` was shown by both, and neither
    showed it (found in session 39).
    """
    parameters = units_of(campaign)
    outputs: dict[str, str] = {}
    if campaign.instrument.file is not None or campaign.instrument.devices is not None:
        from instruments._epics import declared_spec  # the text stored with the campaign
        from instruments._instrument_file import input_units

        spec = declared_spec(campaign.instrument, base_dir)
        for name, unit in input_units(spec, parameters).items():
            if unit:
                parameters.setdefault(name, unit)
        outputs = {name: decl.units for name, decl in spec.outputs.items() if decl.units}
    return {"parameters": parameters, "outputs": outputs}


def shown_units(campaign: Campaign, config_path: str) -> dict[str, str]:
    """Name -> unit over parameters and outputs (their names are distinct: every data key
    is), for labels; only the parameters' own ``unit`` when the instrument's declarations
    cannot be read (a display must not fail for that)."""
    try:
        declared = declared_units(campaign, path_from_text(config_path).parent)
    except Exception as exc:
        logger.debug("the instrument's units could not be read: %s", exc)
        return units_of(campaign)
    return {**declared["parameters"], **declared["outputs"]}


def label(name: str, units: dict[str, str]) -> str:
    """``name [unit]`` when the name has a unit, else the name."""
    unit = units.get(name)
    return f"{name} [{unit}]" if unit else name


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _or_blank(value: Any) -> Any:
    return "" if value is None else value


def to_csv(records: list[dict[str, Any]], campaign: Campaign | None = None) -> str:
    """Flat CSV: parameters as columns, readbacks as ``readback.NAME``, outputs by name.

    With the ``campaign``, its parameters and the outputs its goals name (objectives,
    outcome constraints) are columns even when no record has a value for them: a
    campaign whose trials all failed, or that has none yet, exported a header without its
    objective, and a script reading ``df["yield"]`` broke on the one export that needed
    checking (found in review). Other keys follow in the order the records give them.
    """
    params = _keys(records, "parameters", [p.name for p in campaign.parameters] if campaign else [])
    readbacks = _keys(records, "readbacks")
    outputs = _keys(records, "outputs", _goal_outputs(campaign) if campaign else [])
    # the flags the records carry: never a parameter's or output's column of the same name
    # (a stored campaign may name one `best`; its rows had a cell more than the header)
    flags = [k for k in _FLAGS if any(k in r for r in records)]
    # nor a campaign's parameter or output of one of these names (stored before they were
    # reserved): its column is kept, the bookkeeping one left out
    named = {*params, *outputs}
    attempts = [k for k in _ATTEMPT if k not in named and any(k in r for r in records)]
    header = (
        ["trial_id", "number", "kind", "status", "slot"]
        + params
        + [f"readback.{k}" for k in readbacks]
        + outputs
        + flags
        + attempts
        + ["run_uid", "error", "started_at", "finished_at"]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        writer.writerow(
            [r["trial_id"], r["number"], r["kind"], r["status"], _or_blank(r.get("slot"))]
            + [r["parameters"].get(k, "") for k in params]
            + [r["readbacks"].get(k, "") for k in readbacks]
            + [r["outputs"].get(k, "") for k in outputs]
            + [_flag(r.get(k)) for k in flags]
            + [_flag(r.get(k)) if k == "transient" else _or_blank(r.get(k)) for k in attempts]
            + [r["run_uid"] or "", r["error"] or "", r["started_at"] or "", r["finished_at"] or ""]
        )
    return buffer.getvalue()


# True/false columns ``annotate`` adds, in the export's column order.
_FLAGS = ("feasible", "pareto", "best")
# What ``loop.store.export_records`` says of a trial's attempt at its point.
_ATTEMPT = ("transient", "retry_of", "attempt")


def _flag(value: bool | None) -> str:
    """A flag column's cell: empty where a record has no verdict (a failed trial's
    ``feasible``)."""
    return "" if value is None else ("true" if value else "false")


def to_json(value: Any) -> str:
    """Strict JSON: a NaN or infinite value (a failed trial's stored output) is ``null``.

    Python's ``NaN``/``Infinity`` tokens are not JSON; jq, JavaScript and most strict
    parsers reject the whole file over one of them. The CSV keeps ``nan`` (no such rule).
    ``value`` is the records ``export`` writes, or another JSON object a command prints
    (``status --json``, ``suggest --json``): one encoder, one rule.
    """
    return json.dumps(_json_safe(value), indent=2, default=str, allow_nan=False)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _goal_outputs(campaign: Campaign) -> list[str]:
    """The outputs a campaign's objectives and outcome constraints name, in that order."""
    names = [o.name for o in campaign.objectives]
    names += [c.name for c in campaign.parsed_outcome_constraints]
    return list(dict.fromkeys(names))


def _keys(records: list[dict[str, Any]], field: str, first: Iterable[str] = ()) -> list[str]:
    seen: dict[str, None] = dict.fromkeys(first)
    for r in records:
        for k in r[field]:
            seen.setdefault(k, None)
    return list(seen)


def plot_report(store: Store, row: CampaignRow, out: Path) -> Path:
    """The campaign as a PNG (headless: matplotlib's Agg backend); returns the path written.

    ``out``'s suffix picks the format (see :func:`report_path`); a path that cannot be
    written is an :class:`OutputError`, checked before anything is plotted where it can be.

    Panels, top to bottom: the best feasible value so far (one objective; the ``target``
    drawn when there is one) or the feasible hypervolume over trials (several objectives);
    for several objectives, the Pareto front for each pair of objectives; then every output
    per trial, with feasible, infeasible, prior-data and failed trials marked apart, a
    reading far outside every other one marked on the panel's edge (see
    :func:`_plot_output`) and outcome-constraint bounds drawn; last, each objective against
    each parameter (at most ``MAX_SCAN_PARAMETERS`` of them), a grid of small panels marked
    the same way. The best so far leaves such readings out (:func:`best_so_far`).
    """
    out, fmt = report_path(out)
    refuse_database(out, store.url, "report.png")
    refuse_missing_folder(out)  # as `export` does, before anything is plotted
    fig = report_figure(store, row)
    try:
        fig.savefig(out, dpi=110, format=fmt)
    except OSError as exc:
        raise OutputError(_cannot_write(out, exc)) from None
    return out


def report_figure(store: Store, row: CampaignRow) -> Figure:
    """The report's figure (see :func:`plot_report`), not yet written anywhere.

    A plain ``Figure``, outside pyplot's global list of figures: nothing to close, no GUI
    backend, and safe beside other threads' figures.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    campaign = stored_campaign(row)
    objectives = campaign.objectives
    if row.id is None:  # pragma: no cover
        raise ValueError("campaign row without id")
    records = annotate(export_records(store, row.id), campaign)
    units = shown_units(campaign, row.config_path)
    outputs = _panel_outputs(records, campaign)
    pairs = [(i, j) for i in range(len(objectives)) for j in range(i + 1, len(objectives))]
    targets = _targets(row, campaign)
    scanned, note = scan_parameters(records, campaign)
    columns = max(1, min(_SCAN_COLUMNS, len(scanned)))
    per_objective = -(-len(scanned) // columns)  # rows of small panels per objective
    scan_objectives = objectives[:_SCAN_OBJECTIVES] if scanned else []
    n_rows = 1 + len(pairs) + len(outputs)
    n_scan = per_objective * len(scan_objectives)
    across = _FIGURE_WIDTH / columns  # a small panel's share of the width, inches
    # Each choice parameter's tick labels, decided before the figure is sized: a row of
    # small panels whose labels stand upright is made taller by their length, so that the
    # panels keep their height and nothing runs into the row below.
    ticks = {p.name: category_ticks(p.values, across) for p in scanned if _is_choice(p)}
    blocks = [scanned[r * columns : (r + 1) * columns] for r in range(per_objective)]
    extra = [max((ticks[p.name].height for p in b if p.name in ticks), default=0.0) for b in blocks]
    heights = [2.8] * n_rows + [2.5 + e for e in extra] * len(scan_objectives)
    # Constrained layout, not tight_layout: it gives each row and column the margins its
    # own labels need, where tight_layout spaced every row as the one with the longest
    # labels and, when they could not fit, gave up with a UserWarning on the terminal.
    fig = Figure(
        figsize=(_FIGURE_WIDTH, sum(heights) + (0.3 if n_scan else 0.0)), layout="constrained"
    )
    grid = fig.add_gridspec(n_rows + n_scan, columns, height_ratios=heights)
    feasible, completed = feasibility(records)
    rate = (
        f"; {feasible}/{completed} feasible" if campaign.outcome_constraints and completed else ""
    )
    first = fig.add_subplot(grid[0, :])
    numbers = [r["number"] for r in records]
    # the trace ends at the last trial with an outcome: trials still running or awaiting
    # `tell` were drawn as measured without improving (found in review)
    ended = 1 + max((i for i, r in enumerate(records) if r["status"] != "running"), default=-1)
    if len(objectives) == 1:
        objective = objectives[0]
        first.plot(
            numbers[:ended],
            best_so_far(records, objective.name, objective.goal)[:ended],
            drawstyle="steps-post",
            color="C0",
            lw=2,
        )
        target = targets.get(objective.name)
        if target is not None:
            first.axhline(target, color="C2", ls="--", lw=1.2, label=f"target {target:g}")
            first.legend(loc="best", fontsize="small")
        first.set_ylabel(fit_label(f"best {label(objective.name, units)}", _ROW_AXES))
        first.set_title(
            _wrapped(f"{row.name}: best feasible {objective.name} so far ({objective.goal}){rate}")
        )
    else:
        trace = hypervolume_trace(records, campaign, max_evaluations=_TRACE_EVALUATIONS)
        first.plot(numbers[:ended], trace[:ended], drawstyle="steps-post", color="C0", lw=2)
        first.set_ylabel("hypervolume")
        first.set_title(
            _wrapped(
                f"{row.name}: feasible hypervolume over trials "
                f"({', '.join(f'{o.name} {o.goal}' for o in objectives)}){rate}"
            )
        )
    first.set_xlabel("trial")
    # trials are whole numbers: a short campaign's axis read 2.5, 7.5 (found in review)
    first.xaxis.set_major_locator(MaxNLocator(integer=True))
    if numbers:
        first.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
    if not any(r["status"] == "completed" for r in records):
        _say(first, _NO_COMPLETED)
    for k, (i, j) in enumerate(pairs, start=1):
        ax = fig.add_subplot(grid[k, :])
        _plot_front(ax, records, objectives[i].name, objectives[j].name, units)
    bounds: dict[str, list[float]] = {}
    for c in campaign.parsed_outcome_constraints:
        bounds.setdefault(c.name, []).append(c.bound)
    initial = [r["number"] for r in records if r["kind"] in DESIGN_KINDS]
    panels: list[Any] = []
    for k, name in enumerate(outputs, start=1 + len(pairs)):
        ax = fig.add_subplot(grid[k, :], sharex=panels[0] if panels else None)
        panels.append(ax)
        _plot_output(ax, records, name)
        _draw_limits(ax, bounds.get(name, []), targets.get(name) if len(objectives) > 1 else None)
        if initial and max(initial) < max(numbers, default=0):
            # labelled: an unexplained dotted line (found in review); one legend entry
            ax.axvline(
                max(initial) + 0.5, color="grey", ls=":", lw=1, label="end of initial design"
            )
        ax.set_ylabel(fit_label(label(name, units), _ROW_AXES))
    if panels:
        if numbers:
            panels[0].set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
        # One legend for all the output panels, on the first: a group may appear in a
        # later panel only (a trial that failed without a value of the first output).
        legend: dict[str, Any] = {}
        for ax in panels:
            for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(text, handle)
        if legend:
            panels[0].legend(list(legend.values()), list(legend), loc="best", fontsize="small")
        panels[-1].set_xlabel("trial")
        panels[-1].xaxis.set_major_locator(MaxNLocator(integer=True))  # shared by the panels
    top = n_rows
    for objective in scan_objectives:
        shared: Any = None
        for k, param in enumerate(scanned):
            ax = fig.add_subplot(grid[top + k // columns, k % columns], sharey=shared)
            shared = shared or ax
            _plot_scan(ax, records, objective.name, param, ticks.get(param.name), across, units)
            _draw_limits(ax, bounds.get(objective.name, []), targets.get(objective.name))
            if k % columns:
                ax.tick_params(labelleft=False)
        # A title over the block, not a y label: the per-trial panel of the objective is
        # the one labelled with its name. It is the first small panel's: wider than that
        # by more than about an inch, it narrowed every column (a figure's width of it
        # collapsed them).
        shared.set_title(
            fit_label(
                f"{objective.name} against {note or 'each parameter'}",
                across * _PANEL_FILL + 1.0,
            ),
            loc="left",
            fontsize="medium",
        )
        top += per_objective
    return fig


# Characters of the top panel's title per line: about what fits the 8-inch figure at the
# title's size, with room for wide letters. With several objectives (and a long campaign
# name) one line ran off the right edge (found in review).
_TITLE_WIDTH = 72
_FIGURE_WIDTH = 8.0  # inches


def _wrapped(title: str) -> str:
    """``title`` on as many lines as it needs to fit the figure's width."""
    import textwrap

    return "\n".join(textwrap.wrap(title, _TITLE_WIDTH)) or title


# The objective-against-parameter grid: at most this many parameters (the ones most related
# to the first objective when there are more), in rows of this many small panels, for at
# most this many objectives. A scientist reads a scan of a few parameters at a glance; a
# grid of 40 panels is unreadable and slow to draw.
MAX_SCAN_PARAMETERS = 6
_SCAN_COLUMNS = 3
_SCAN_OBJECTIVES = 3
# Volumes computed for the report's hypervolume curve: enough steps for a plot ~900 pixels
# wide, bounded for long campaigns (see ``planners.hypervolume_trace``).
_TRACE_EVALUATIONS = 200
_NO_COMPLETED = "no completed trial"


def _targets(row: CampaignRow, campaign: Campaign) -> dict[str, float]:
    """``budget.target`` in force (the stored budget, which run/resume options may have
    changed, else the file's) as ``{objective: value}``; a bare number is the first
    objective's."""
    target = (row.budget or {}).get("target", campaign.budget.target)
    if target is None:
        return {}
    if isinstance(target, dict):
        return {str(k): float(v) for k, v in target.items()}
    return {campaign.objectives[0].name: float(target)}


def _draw_limits(ax: Any, bounds: list[float], target: float | None) -> None:
    """Outcome-constraint bounds (dashed orange) and an objective's target (dashed green)."""
    for bound in bounds:
        ax.axhline(bound, color="C1", ls="--", lw=1)
    if target is not None:
        ax.axhline(target, color="C2", ls="--", lw=1)


def scan_parameters(records: list[dict[str, Any]], campaign: Campaign) -> tuple[list[Any], str]:
    """The parameters the report plots each objective against, and a note when some are
    left out.

    Every parameter but the fixed ones, up to :data:`MAX_SCAN_PARAMETERS`; with more, those
    most related to the first objective over the completed trials: numbers by the absolute
    rank correlation, choices by the correlation ratio (the share of the objective's spread
    between the choices), both in [0, 1]; a parameter too little measured to tell scores 0.
    """
    params = [p for p in campaign.parameters if getattr(p, "type", None) != "fixed"]
    if len(params) <= MAX_SCAN_PARAMETERS:
        return params, ""
    objective = campaign.objectives[0].name
    done = [r for r in records if r["status"] == "completed"]
    y = np.array([_number(r["outputs"].get(objective)) for r in done], dtype=float)
    scores = [_relevance(p, done, y) for p in params]
    order = sorted(range(len(params)), key=lambda i: (-scores[i], i))[:MAX_SCAN_PARAMETERS]
    chosen = [params[i] for i in sorted(order)]
    return chosen, f"the {len(chosen)} of {len(params)} parameters most related to {objective}"


def _relevance(param: Any, done: list[dict[str, Any]], y: np.ndarray) -> float:
    """How strongly ``y`` (the first objective) varies with ``param`` (0 to 1)."""
    values = [_achieved(r, param) for r in done]
    keep = np.isfinite(y)
    if getattr(param, "type", None) == "choice":
        groups: dict[str, list[float]] = {}
        for value, target, ok in zip(values, y, keep, strict=True):
            if ok and value is not None:
                groups.setdefault(repr(value), []).append(float(target))
        flat = np.array([v for g in groups.values() for v in g], dtype=float)
        if len(groups) < 2 or flat.size < 3 or float(np.var(flat)) == 0.0:
            return 0.0
        mean = float(flat.mean())
        between = sum(len(g) * (float(np.mean(g)) - mean) ** 2 for g in groups.values())
        return float(math.sqrt(between / (float(np.var(flat)) * flat.size)))
    x = np.array([_number(v) for v in values], dtype=float)
    keep &= np.isfinite(x)
    if keep.sum() < 3:
        return 0.0
    xr, yr = _ranks(x[keep]), _ranks(y[keep])
    if float(np.std(xr)) == 0.0 or float(np.std(yr)) == 0.0:
        return 0.0
    return abs(float(np.corrcoef(xr, yr)[0, 1]))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks (ties broken by order: enough for a relevance score)."""
    ranks = np.empty(values.size, dtype=float)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    return ranks


def _achieved(record: dict[str, Any], param: Any) -> Any:
    """Where a trial ran in ``param``: its readback (or the value told as actually used)
    when it has a usable one, else the commanded value; the model learnt the achieved point,
    and a scan plotted at the setpoints would misplace every trial a controller missed.

    A runner's failed trial (it has a run) is plotted at its commanded point, where the
    model learnt the failure (``loop.runner.Runner._observation``): its readbacks say where
    a stalled stage stopped, and a failure marker there sat between good measurements
    (found in review, session 38). A told failure keeps the values told as used."""
    commanded = record["parameters"].get(param.name)
    if getattr(param, "type", None) == "choice":
        return commanded
    if record.get("status") == "failed" and record.get("run_uid"):
        return commanded
    actual = (record.get("readbacks") or {}).get(param.name)
    return actual if math.isfinite(_number(actual)) else commanded


# Category tick labels of the objective-against-parameter panels. A choice's value may be
# a SMILES string of 80 characters (the bundled Suzuki dataset): printed whole, the labels
# ran over one another and into the panels beside and below, and the layout gave up with a
# UserWarning on the user's terminal (found in review). A label is at most this many
# characters (the value's start and end around an ellipsis: SMILES of one family share a
# long start); the full values are in `closedloop export`.
CATEGORY_LABEL_CHARS = 12
# Of a panel's share of the figure's width, what is left for its axes after the space
# between panels; the height of an ordinary row's axes (inches).
_PANEL_FILL = 0.78
_ROW_AXES = 2.0
# Font sizes (points) of tick labels ("small") and of axis labels and titles ("medium").
_SMALL_PT = 8.33
_LABEL_PT = 10.0
# Room between two tick labels, and a margin on every measured width (the rendered text is
# a few per cent wider than its outline's metrics), in points and as a factor.
_TICK_GAP_PT = 4.0
_MEASURE_MARGIN = 1.1


@dataclass(frozen=True)
class CategoryTicks:
    """How a choice parameter's values are labelled on a small panel's x axis.

    Attributes:
        labels: One per value, in the values' order: the value, shortened to at most
            :data:`CATEGORY_LABEL_CHARS` characters; ``""`` for a value left unlabelled
            where the panel is too narrow for all of them (every ``step``-th is kept).
        rotation: 0 (across) when every label fits in its value's share of the panel's
            width, else 90 (upright: a label then never reaches a neighbouring value's).
        height: inches the labels take below the axis beyond an ordinary row's.
    """

    labels: list[str]
    rotation: int
    height: float


def text_width(text: str, points: float) -> float:
    """How wide ``text`` is drawn in matplotlib's default font at ``points``, in points
    (measured on the font's outlines, with a small margin; no figure needed)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    width, _, _ = TextToPath().get_text_width_height_descent(
        text, FontProperties(size=points), ismath=False
    )
    return float(width) * _MEASURE_MARGIN


def short_label(text: str, width: int = CATEGORY_LABEL_CHARS) -> str:
    """``text`` on one line, at most ``width`` characters: its start and end around an
    ellipsis when it is longer. A ``$`` is escaped: matplotlib would read the text between
    two as mathematics (and fail to draw one it cannot parse)."""
    flat = " ".join(text.split())
    if len(flat) > width:
        head = width // 2
        tail = width - 1 - head
        flat = f"{flat[:head]}\u2026{flat[len(flat) - tail :] if tail else ''}"
    return flat.replace("$", r"\$")


def category_ticks(values: Sequence[Any], panel_inches: float) -> CategoryTicks:
    """The tick labels of ``values`` on a panel ``panel_inches`` wide (its share of the
    figure): see :class:`CategoryTicks`. Two values that read the same once shortened are
    told apart by their position in the campaign file (``1:``, ``2:``, ...)."""
    texts = [str(v) for v in values]
    labels = [short_label(t) for t in texts]
    if len(set(labels)) < len(labels):
        labels = [
            f"{k}:{short_label(t, CATEGORY_LABEL_CHARS - len(str(k)) - 1)}"
            for k, t in enumerate(texts, start=1)
        ]
    spacing = panel_inches * _PANEL_FILL * 72 / max(1, len(labels))  # points between ticks
    widest = max((text_width(t, _SMALL_PT) for t in labels), default=0.0)
    if widest + _TICK_GAP_PT <= spacing:
        return CategoryTicks(labels, 0, 0.0)
    # Upright, a label takes its line's height of the axis: keep every step-th.
    step = max(1, math.ceil((_SMALL_PT + _TICK_GAP_PT) / spacing))
    kept = [t if k % step == 0 else "" for k, t in enumerate(labels)]
    # An ordinary row has room for about a line and a half of them.
    return CategoryTicks(kept, 90, max(0.0, widest - 1.5 * _SMALL_PT) / 72)


def fit_label(text: str, inches: float, lines: int = 2) -> str:
    """An axis label or panel title (the 10 pt font) on at most ``lines`` lines of
    ``inches``: wrapped, and shortened around an ellipsis (:func:`short_label`) when even
    that is too little. A name longer than its panel's side made the layout give up
    ("axes sizes collapsed to zero", a UserWarning) and the panels overlap."""
    import textwrap

    flat = " ".join(text.split())
    per_char = text_width(flat, _LABEL_PT) / max(1, len(flat))
    chars = max(8, int(inches * 72 / per_char)) if per_char > 0 else len(flat)
    short = short_label(flat, chars * lines)
    return "\n".join(textwrap.wrap(short, chars, break_on_hyphens=False)) or short


def _is_choice(param: Any) -> bool:
    return getattr(param, "type", None) == "choice"


def _plot_scan(
    ax: Any,
    records: list[dict[str, Any]],
    objective: str,
    param: Any,
    ticks: CategoryTicks | None,
    panel_inches: float,
    units: dict[str, str],
) -> None:
    """One objective against one parameter: numbers on a linear or (``log: true``) log
    axis, choices as categories (their values' order, a little jitter apart, labelled as
    ``ticks`` says: see :func:`category_ticks`). The axis label (with its ``units``) is cut
    to the panel's width (``panel_inches``, its share of the figure), as a long category
    label is."""
    if _is_choice(param):
        values = list(param.values)
        index = {repr(v): i for i, v in enumerate(values)}
        rng = np.random.default_rng(0)  # the same jitter on every report of a campaign
        jitter = {id(r): float(rng.uniform(-0.15, 0.15)) for r in records}

        def where(r: dict[str, Any]) -> float:
            at = index.get(repr(r["parameters"].get(param.name)))
            return math.nan if at is None else at + jitter[id(r)]

        ticks = ticks or category_ticks(values, panel_inches)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(ticks.labels, rotation=ticks.rotation, fontsize="small")
        ax.set_xlim(-0.5, len(values) - 0.5)
    else:

        def where(r: dict[str, Any]) -> float:
            return _number(_achieved(r, param))

        if getattr(param, "log", False):
            ax.set_xscale("log")
    _plot_output(ax, records, objective, where, say=False)
    if getattr(param, "log", False) and getattr(param, "type", None) != "choice":
        _log_ticks(ax)
    ax.set_xlabel(fit_label(label(param.name, units), panel_inches * _PANEL_FILL))
    ax.tick_params(labelsize="small")


def _log_ticks(ax: Any) -> None:
    """Readable ticks on a small panel's log x axis: over two decades or more, matplotlib's
    powers of ten; over less, where there are few or none of those, plain numbers at 1, 2
    and 5 times a power of ten (all of 1-9 under half a decade). Minor ticks are never
    labelled: matplotlib labelled them ``2×10^0 3×10^0 ...`` on a short range, and on a
    panel a third of the figure wide they printed over each other (found in review)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = ax.get_xlim()
    if not (low > 0 and high > low):
        return
    decades = math.log10(high / low)
    if decades < 2:
        subs = tuple(range(1, 10)) if decades < 0.5 else (1.0, 2.0, 5.0)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _panel_outputs(records: list[dict[str, Any]], campaign: Campaign) -> list[str]:
    """The outputs that get a panel: every objective and outcome-constrained output (from
    the campaign, so a campaign whose trials all failed still shows them), then any other
    output measured."""
    names = [o.name for o in campaign.objectives]
    for c in campaign.parsed_outcome_constraints:
        if c.name not in names:
            names.append(c.name)
    return names + [k for k in _keys(records, "outputs") if k not in names]


def _plot_output(
    ax: Any,
    records: list[dict[str, Any]],
    name: str,
    where: Callable[[dict[str, Any]], float] | None = None,
    *,
    say: bool = True,
) -> None:
    """One output per trial (or against ``where(record)``, a parameter), by group; a failed
    trial without a finite value of it (a fault, an exception, a NaN reading) is marked on
    the panel's bottom edge, so every failure shows (found in review: most failed trials
    were invisible), and so is a measured one whose side output read NaN, hollow. A record
    ``where`` puts at NaN is left out.

    A value far outside every other one in the panel (``planners._outliers.outlying``: an
    overrange code, a sentinel such as 9.9e37) is marked on the top or bottom edge instead
    of being plotted: at its value it set the y range, and every other trial sat on one
    line at 0 (found in review)."""
    x_of = where or (lambda r: float(r["number"]))
    shown = [r for r in records if _group(r) in _GROUP_NAMES and math.isfinite(x_of(r))]
    value_of = {id(r): _number(r["outputs"].get(name)) for r in shown}
    flags = outlying([value_of[id(r)] for r in shown])
    far = [r for r, flag in zip(shown, flags, strict=True) if flag]
    far_ids = {id(r) for r in far}
    drawn = False
    for group, color, marker in _GROUPS:
        chosen = [r for r in shown if _group(r) == group]
        values = [value_of[id(r)] for r in chosen]
        finite = [
            (x_of(r), v)
            for r, v in zip(chosen, values, strict=True)
            if math.isfinite(v) and id(r) not in far_ids
        ]
        if finite:
            xs, ys = zip(*finite, strict=True)
            ax.scatter(xs, ys, color=color, marker=marker, label=group, **_dense(len(shown), 16))
            drawn = True
        blank = [x_of(r) for r, v in zip(chosen, values, strict=True) if not math.isfinite(v)]
        if blank and group == "failed":
            # the bottom edge whatever the y range; pointing down, off the scale, so
            # it does not read as a value
            _on_edge(ax, blank, 0.0, "v", s=30, color=color, label="failed (no value)")
        elif blank:
            # a measured trial whose side output read NaN (or a prior row without it): a
            # gap in the panel read as a trial not run (found in review, session 37)
            _on_edge(ax, blank, 0.0, "v", label=_NO_VALUE_LABEL, **_NO_VALUE_STYLE)
    if far:
        middle = _middle([value_of[id(r)] for r in shown], flags)
        for high, edge, marker in ((True, 1.0, "^"), (False, 0.0, "v")):
            at = [x_of(r) for r in far if (value_of[id(r)] > middle) == high]
            if at:
                # like the failed trials' marker: on the edge, pointing off the scale
                _on_edge(ax, at, edge, marker, label=_OUTLYING_LABEL, **_OUTLYING_STYLE)
        drawn = True
    if not drawn and say:
        done = any(r["status"] == "completed" for r in records)
        _say(ax, f"no finite value of {name}" if done else _NO_COMPLETED)


# Readings far outside every other one (see _plot_output): drawn on the panel's edge.
_OUTLYING_LABEL = "far outside the others (on the edge)"
_OUTLYING_STYLE: dict[str, Any] = {
    "s": 36,
    "facecolors": "none",
    "edgecolors": "C4",
    "linewidths": 1.2,
}
# A measured trial without a value of the output (see _plot_output): hollow, on the edge.
_NO_VALUE_LABEL = "measured, no value (NaN)"
_NO_VALUE_STYLE: dict[str, Any] = {**_OUTLYING_STYLE, "s": 30, "edgecolors": "grey"}


def _on_edge(
    ax: Any, at: list[float], edge: float, marker: str, *, along: str = "x", **style: Any
) -> None:
    """Markers on an edge of the panel: at data values ``at`` along the x axis (``along``
    "x": on the bottom, ``edge`` 0, or top, 1) or the y axis ("y": left 0 or right 1).

    The data axis takes their values into its range: matplotlib leaves markers drawn in
    axes coordinates out of autoscaling, and a failed trial at a parameter beyond every
    measured one was drawn outside its panel, over the next one (found in review).
    """
    if along == "x":
        xy = (at, [edge] * len(at))
        transform = ax.get_xaxis_transform()
        limits = [(v, 0.0) for v in at]
    else:
        xy = (([edge] * len(at)), at)
        transform = ax.get_yaxis_transform()
        limits = [(0.0, v) for v in at]
    ax.scatter(*xy, marker=marker, transform=transform, clip_on=False, zorder=3, **style)
    ax.update_datalim(limits, updatex=along == "x", updatey=along != "x")


def _say(ax: Any, text: str) -> None:
    """A note in the middle of an empty panel."""
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="grey",
        bbox={"facecolor": "white", "edgecolor": "none"},  # readable over a bound line
    )


# (group, colour, marker) of the trials in the per-output panels.
_GROUPS = (
    ("prior", "grey", "s"),
    ("prior, infeasible", "C1", "s"),
    ("completed", "C0", "o"),
    ("feasible", "C0", "o"),
    ("infeasible", "C1", "^"),
    ("failed", "C3", "x"),
    ("chosen (suggest --at, --repeat)", "C2", "D"),
)


_GROUP_NAMES = frozenset(group for group, _, _ in _GROUPS)


def _group(r: dict[str, Any]) -> str:
    if r["status"] == "failed":
        return "failed"
    if r["status"] != "completed":
        return "other"
    if r["kind"] == "prior":  # infeasible prior rows apart, as the front panels mark them
        return "prior, infeasible" if r.get("feasible") is False else "prior"
    if r["kind"] == "manual":  # a person's point (a control, a replicate: the legend said
        # "--at" alone beside --repeat's replicates; found in review): not the planner's
        return "chosen (suggest --at, --repeat)"
    if "feasible" not in r:  # the campaign has no outcome constraints
        return "completed"
    return "feasible" if r["feasible"] else "infeasible"


def _plot_front(
    ax: Any, records: list[dict[str, Any]], x: str, y: str, units: dict[str, str]
) -> None:
    """Completed trials in the plane of two objectives, the Pareto front highlighted.

    Feasible trials off the front are grey dots, infeasible ones orange hollow triangles
    above them (drawn under the grey dots, infeasible trials that beat the front read as
    dominated ones: found in review), the front red on top. A value far outside every
    other one of its objective (an overrange sentinel) is marked on the panel's edge, as
    in the per-output panels, not plotted at its value.
    """
    done = [r for r in records if r["status"] == "completed"]
    xs_all = [_number(r["outputs"].get(x)) for r in done]
    ys_all = [_number(r["outputs"].get(y)) for r in done]
    far_x, far_y = outlying(xs_all), outlying(ys_all)
    at = {id(r): (px, py) for r, px, py in zip(done, xs_all, ys_all, strict=True)}
    far = [r for r, fx, fy in zip(done, far_x, far_y, strict=True) if fx or fy]
    far_ids = {id(r) for r in far}
    near = [r for r in done if id(r) not in far_ids]
    groups = (
        ([r for r in near if r.get("feasible", True) and not r.get("pareto")], "trials"),
        ([r for r in near if not r.get("feasible", True)], "infeasible"),
        ([r for r in near if r.get("pareto")], "Pareto front"),
    )
    for chosen, text in groups:
        if not chosen:
            continue
        points = sorted(at[id(r)] for r in chosen) if text == "Pareto front" else None
        xs, ys = zip(*(points or [at[id(r)] for r in chosen]), strict=True)
        if text == "trials":
            ax.scatter(xs, ys, color="C7", label=text, zorder=2, **_dense(len(done), 14))
        elif text == "infeasible":
            ax.scatter(
                xs,
                ys,
                s=26,
                marker="^",
                facecolors="none",
                edgecolors="C1",
                linewidths=1.2,
                label=text,
                zorder=2.5,
            )
        else:
            ax.scatter(xs, ys, s=30, color="C3", label=text, zorder=3)
    if far:
        flags = {id(r): (bool(fx), bool(fy)) for r, fx, fy in zip(done, far_x, far_y, strict=True)}
        _front_edges(
            ax,
            [(*at[id(r)], *flags[id(r)]) for r in far],
            _middle(xs_all, far_x),
            _middle(ys_all, far_y),
        )
    ax.set_xlabel(fit_label(label(x, units), _FIGURE_WIDTH * _PANEL_FILL))
    ax.set_ylabel(fit_label(label(y, units), _ROW_AXES))
    if ax.get_legend_handles_labels()[0]:  # none: matplotlib warns "No artists with labels"
        ax.legend(loc="best", fontsize="small")
    else:
        _say(ax, _NO_COMPLETED)


def _dense(n: int, size: float) -> dict[str, float]:
    """Marker size and opacity for ``n`` points in a panel: as drawn for a few hundred, and
    smaller and fainter past that (area and opacity ~ 1/sqrt(n)), so where the points crowd
    shows. At 4000 trials every panel was one solid blob (found in review)."""
    crowd = min(1.0, math.sqrt(_FEW_POINTS / max(n, 1)))
    return {"s": max(2.0, size * crowd), "alpha": max(0.25, crowd)}


_FEW_POINTS = 300


def _front_edges(
    ax: Any, points: list[tuple[float, float, bool, bool]], mid_x: float, mid_y: float
) -> None:
    """The front panel's trials with an outlying value, ``(x, y, x outlying, y outlying)``:
    on the edge that value is beyond (the side of the others' median it is on), at their
    other value where that one is in range (axes coordinates for an outlying value, data
    coordinates for the other)."""
    label = _OUTLYING_LABEL
    for px, py, out_x, out_y in points:
        if out_x and out_y:  # a corner, in axes coordinates: no data value to place it by
            ex, ey = float(px > mid_x), float(py > mid_y)
            ax.scatter(
                [ex],
                [ey],
                marker="^" if ey else "v",
                transform=ax.transAxes,
                clip_on=False,
                zorder=3,
                label=label,
                **_OUTLYING_STYLE,
            )
        elif out_y:
            up = py > mid_y
            _on_edge(ax, [px], float(up), "^" if up else "v", label=label, **_OUTLYING_STYLE)
        else:
            right = px > mid_x
            marker = ">" if right else "<"
            _on_edge(ax, [py], float(right), marker, along="y", label=label, **_OUTLYING_STYLE)
        label = "_nolegend_"  # one legend entry


def _middle(values: list[float], flags: np.ndarray) -> float:
    """The median of the values not flagged (0 when none is finite)."""
    kept = [v for v, flag in zip(values, flags, strict=True) if not flag and math.isfinite(v)]
    return float(np.median(kept)) if kept else 0.0
