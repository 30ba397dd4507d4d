"""The ``closedloop`` command: run, validate, status, export, report, simulators.

Errors a user can cause are printed as one message (file, line, fix) with exit code 2 for
bad input and 1 for a failed run; never a traceback unless ``--debug``.
"""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from instruments import InstrumentError
from loop.errors import CampaignConfigError, ClosedLoopError
from loop.store import DEFAULT_STORE

app = typer.Typer(
    name="closedloop",
    help="Closed-loop experimentation: BoTorch proposes, Bluesky measures, SQLite remembers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

StoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="CLOSEDLOOP_STORE",
        help="SQLAlchemy URL of the store, e.g. sqlite:///runs/lab.db.",
    ),
]
CampaignOpt = Annotated[
    str | None,
    typer.Option("--campaign", "-c", help="Campaign name or id in the store (default: latest)."),
]
_state: dict[str, bool] = {"debug": False}


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log engine details.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )
    if not verbose:
        # bluesky logs a whole traceback for every failed run; the loop reports the failure
        # on the trial's line and stores the error, so keep the terminal readable.
        for name in ("bluesky", "ophyd", "caproto"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


# ---------------------------------------------------------------------------- commands
@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Campaign YAML file.")]) -> None:
    """Check a campaign file without running anything."""
    from loop.config import load_campaign

    loaded = load_campaign(file)
    c = loaded.campaign
    console.print(
        f"[green]ok[/] {file}: campaign '{c.name}', {len(c.parameters)} parameters, "
        f"objective {c.objectives[0].name} ({c.objectives[0].goal}), "
        f"planner {c.planner.kind}, instrument "
        f"{c.instrument.simulator or c.instrument.function}"
    )


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    store: StoreOpt = DEFAULT_STORE,
    seed: Annotated[int | None, typer.Option(help="Override the file's seed.")] = None,
    max_trials: Annotated[
        int | None, typer.Option(min=1, help="Override budget.max_trials.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Run a campaign until its budget is spent; every trial is stored as it happens."""
    from loop.config import load_campaign
    from loop.runner import Runner
    from loop.store import Store

    loaded = load_campaign(file)
    c = loaded.campaign
    db = Store(store)
    listener = _ProgressListener(c.objectives[0].name, max_trials or c.budget.max_trials, quiet)
    runner = Runner(loaded, db, seed=seed, max_trials=max_trials, listener=listener)
    console.print(
        f"[bold]{c.name}[/]: {c.planner.kind} planner, instrument "
        f"{c.instrument.simulator or c.instrument.function}, seed {runner.seed}, "
        f"store {store}"
    )
    try:
        with listener:
            summary = runner.run()
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]stopped by Ctrl-C[/]; completed trials are in the store "
            f"({store}); `closedloop status --store {store}` shows them"
        )
        raise typer.Exit(130) from None
    finally:
        db.close()
    console.print(
        f"\n[bold]{summary.status}[/]: {summary.reason}; {summary.completed} "
        f"completed, {summary.failed} failed in {summary.elapsed:.1f} s"
    )
    if summary.best is not None:
        b = summary.best
        console.print(
            f"best trial #{b.number}: {c.objectives[0].name} = {b.objective:.6g} at "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in b.parameters.items())
        )
    if summary.status == "failed":
        raise typer.Exit(1)


@app.command()
def status(store: StoreOpt = DEFAULT_STORE, campaign: CampaignOpt = None) -> None:
    """Show a campaign's progress, its best trial and its last trials."""
    from loop.report import best_record, stored_campaign
    from loop.store import Store, export_records, sequence_counts

    db = Store(store, create=False)
    row = db.campaign(campaign)
    c = stored_campaign(row)
    records = export_records(db, row.id or 0)
    counts = sequence_counts(db.trials(row.id or 0))
    obj = c.objectives[0]
    console.print(
        f"[bold]{row.name}[/] (id {row.id}) — {row.status}"
        + (f": {row.stop_reason}" if row.stop_reason else "")
    )
    console.print(
        "trials: "
        + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none")
        + f"; budget {c.budget.max_trials or '∞'} trials; seed {row.seed}"
    )
    best = best_record(records, obj.name, obj.goal)
    if best:
        console.print(
            f"best: trial #{best['number']} {obj.name} = "
            f"{best['outputs'][obj.name]:.6g} ({obj.goal}) at "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in best["parameters"].items())
        )
    table = Table(title="last trials")
    for col in ("#", "status", *[p.name for p in c.parameters], obj.name, "error"):
        table.add_column(col)
    for r in records[-10:]:
        table.add_row(
            str(r["number"]),
            r["status"],
            *[_fmt(r["parameters"].get(p.name)) for p in c.parameters],
            _fmt(r["outputs"].get(obj.name)),
            (r["error"] or "")[:40],
        )
    console.print(table)


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


@app.command()
def export(
    store: StoreOpt = DEFAULT_STORE,
    campaign: CampaignOpt = None,
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.csv,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default stdout).")
    ] = None,
) -> None:
    """Export one record per trial: id, status, parameters, readbacks, outputs, run uid."""
    from loop.report import to_csv, to_json
    from loop.store import Store, export_records

    db = Store(store, create=False)
    row = db.campaign(campaign)
    records = export_records(db, row.id or 0)
    text = to_csv(records) if format == ExportFormat.csv else to_json(records)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err_console.print(f"wrote {len(records)} trials to {output}")


@app.command()
def report(
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")],
    store: StoreOpt = DEFAULT_STORE,
    campaign: CampaignOpt = None,
) -> None:
    """Plot the best-so-far trace and every output per trial."""
    from loop.report import plot_report
    from loop.store import Store

    db = Store(store, create=False)
    row = db.campaign(campaign)
    path = plot_report(db, row, output)
    console.print(f"wrote {path}")


@app.command()
def simulators() -> None:
    """List the built-in simulated instruments and their inputs and outputs."""
    from simulators import SIMULATORS

    table = Table(title="built-in simulators")
    for col in ("name", "inputs", "outputs", "description"):
        table.add_column(col)
    for name, problem in SIMULATORS.items():
        table.add_row(
            name,
            ", ".join(p.name for p in problem.parameters),
            ", ".join(problem.outputs),
            problem.description.split("\n")[0][:60],
        )
    console.print(table)


# ---------------------------------------------------------------------------- progress
class _ProgressListener:
    """A progress bar plus one line per trial (value and best so far)."""

    def __init__(self, objective: str, total: int | None, quiet: bool) -> None:
        self.objective = objective
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet or not console.is_terminal,
        )
        self.task = self.progress.add_task("trials", total=total)

    def __enter__(self) -> _ProgressListener:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
        self.progress.update(self.task, description=f"trial {number}")

    def trial_finished(self, report: Any) -> None:
        if report.status == "completed":
            self.progress.advance(self.task)
        if self.quiet:
            return
        if report.status == "completed":
            line = (
                f"trial {report.number:>4}  {self.objective} = {_fmt(report.objective)}  "
                f"best = {_fmt(report.best)}  "
                f"[dim](suggest {report.timing.suggest:.2f} s)[/]"
            )
        else:
            line = f"trial {report.number:>4}  [red]{report.status}[/]: {report.error}"
        self.progress.console.print(line)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------- entry
def main() -> None:
    """Console entry point: user errors become one message and an exit code."""
    try:
        app(standalone_mode=False)
    except CampaignConfigError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except (ClosedLoopError, InstrumentError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one line, not a traceback
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if _state["debug"] or os.environ.get("CLOSEDLOOP_DEBUG"):
            raise
        err_console.print(
            f"error: {type(exc).__name__}: {exc}\n(run with --debug for the "
            "traceback, and please report it)",
            highlight=False,
            markup=False,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
