"""``closedloop datasets``: the bundled laboratory datasets, their spaces, fit and citations.

Each can be a campaign's instrument (``instrument: {dataset: NAME}``): an exact lookup for a
fully enumerated space, a GP emulator fitted on the data otherwise. ``--fit`` fits (or reads
from the cache) every emulator and prints its 5-fold cross-validated R²; ``--data/--spec``
does the same for a CSV of your own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from loop.errors import shell_word
from loop.fmt import Output, number

console = Output(soft_wrap=True)
err_console = Output(stderr=True, soft_wrap=True)  # errors: a script reads stdout as results


def _fmt(value: float | None, digits: int = 3) -> str:
    """A fitted statistic: 3 significant digits (2 for R²) on purpose, not loop.fmt's 6 for
    measured values: a noise sd and a cross-validated R² are estimates, and more digits
    would claim a precision five folds of a few hundred rows do not have."""
    return number(value, digits, none="-")


def _objectives(spec: Any) -> str:
    return ", ".join(f"{o} ({'max' if g == 'maximize' else 'min'})" for o, g in spec.goal.items())


def _per_output(values: Mapping[str, float], digits: int) -> str:
    """One figure, or ``yield 6.69, turnover 4.6`` for several outputs (bare figures did
    not say whose they were; found in review)."""
    if len(values) == 1:
        return _fmt(next(iter(values.values())), digits)
    return ", ".join(f"{k} {_fmt(v, digits)}" for k, v in values.items())


def _inputs_table(ds: Any) -> Table:
    """A dataset's inputs as a campaign's ``parameters:`` lists them: name, type, bounds
    or values (the README said `datasets` shows them; it showed a count only)."""
    title = f"{ds.name}: inputs (parameters: of a campaign on it)"
    table = Table(title=title, title_justify="left")
    for col in ("parameter", "type", "bounds or values"):
        table.add_column(col, overflow="fold")
    for p in ds.spec.parameters:
        if p.values is not None:
            shown = ", ".join(str(v) for v in p.values[:12])
            more = len(p.values) - 12
            span = f"{shown}, ... ({len(p.values)} values)" if more > 0 else shown
        else:
            low, high = p.bounds
            span = f"[{low:g}, {high:g}]" + (" (log)" if p.log else "")
        kind = p.kind + (f" ({p.unit})" if p.unit else "")
        table.add_row(escape(p.name), kind, escape(span))
    return table


def datasets(
    fit: Annotated[
        bool,
        typer.Option(
            "--fit",
            help="Fit each emulator (or read it from the cache) and print its 5-fold "
            "cross-validated R² (minutes the first time, then cached).",
        ),
    ] = False,
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", help="Only this dataset (repeatable).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="A CSV of your own measurements (with --spec).")
    ] = None,
    spec: Annotated[Path | None, typer.Option(help="The YAML spec of --data.")] = None,
    write_bundled: Annotated[
        bool,
        typer.Option(
            "--write-bundled", hidden=True, help="Maintainers: store the fits as package data."
        ),
    ] = False,
) -> None:
    """List the bundled laboratory datasets: space, rows, objectives, kind and citation.

    Use one as a campaign's instrument with `instrument: {dataset: NAME}` (the campaign's
    `parameters:` may then be omitted); your own data with `{dataset: data.csv, spec: spec.yaml}`.
    """
    import simulators
    from simulators import _emulator

    if (data is None) != (spec is None):
        err_console.print("[red]error:[/] --data and --spec go together")
        raise typer.Exit(2)
    if data is not None and name:
        err_console.print(
            "[red]error:[/] --name picks bundled datasets and --data/--spec describe your own; "
            "give one or the other"
        )
        raise typer.Exit(2)
    try:
        if data is not None:
            loaded = [simulators.load_dataset(data, spec)]
        else:
            # each dataset once, in the order asked (`--name hplc --name hplc` is one row)
            names = list(dict.fromkeys(name or simulators.bundled_dataset_names()))
            loaded = [simulators.load_dataset(n) for n in names]
    except simulators.DatasetError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None

    table = Table(title="datasets (instrument: {dataset: NAME})")
    for col in ("name", "kind", "space", "rows", "objectives", "noise sd", "CV R²"):
        table.add_column(col, overflow="fold")
    citations: list[tuple[str, str]] = []
    unfitted = False  # an emulator with no fit at hand: `--fit` would show its figures
    for ds in loaded:
        ds_spec = ds.spec
        noise: str = "0 (exact)" if ds_spec.enumerated else "-"
        r2: str = "-"
        if not ds_spec.enumerated:
            emulator = None
            if fit:
                started = time.perf_counter()
                with console.status(f"fitting {escape(ds.name)} ({len(ds)} rows, 5-fold CV) ..."):
                    emulator = _emulator.cached_emulator(ds, cv=True)
                if write_bundled and data is None:
                    emulator.save(_emulator.bundled_path(ds))
                took = time.perf_counter() - started
                if took > 1:
                    console.print(f"{ds.name}: fitted in {took:.0f} s", style="dim", markup=False)
            else:
                for path in (_emulator.bundled_path(ds), _emulator.cache_path(ds)):
                    if path.is_file():
                        emulator = simulators.Emulator.load(path, ds_spec, ds.digest)
                        if emulator is not None:
                            break
            unfitted |= emulator is None
            if emulator is not None:
                noise = _per_output(emulator.noise_sd, 3)
                if emulator.cv_r2:
                    r2 = _per_output(emulator.cv_r2, 2)
        # a dataset of your own (--data/--spec) is named by its file: `run[red]2.csv` is
        # text, not markup (it showed "run2" in red)
        table.add_row(
            escape(ds.name),
            "lookup" if ds_spec.enumerated else "emulator",
            escape(ds_spec.space_summary()),
            str(len(ds)),
            escape(_objectives(ds_spec)),
            noise,
            r2,
        )
        if ds_spec.citation:
            citations.append((ds.name, ds_spec.citation))
    console.print(table)
    if unfitted:  # the bundled datasets ship fitted: the hint was shown beside their figures
        # the same datasets, fitted: a bare `--fit` listed the bundled ones and left the
        # user's own unfitted (found in review)
        if data is not None and spec is not None:
            which = f" --data {shell_word(str(data))} --spec {shell_word(str(spec))}"
        else:
            which = "".join(f" --name {shell_word(n)}" for n in dict.fromkeys(name or []))
        console.print(
            escape(
                "noise sd and CV R² of an emulator not fitted yet: "
                f"`closedloop datasets{which} --fit`"
            ),
            style="dim",
        )
    if name or data is not None:  # the datasets asked for by name: what a campaign lists
        for ds in loaded:
            console.print(_inputs_table(ds))
    else:
        console.print(
            "each dataset's inputs, bounds and choices: `closedloop datasets --name NAME`",
            style="dim",
        )
    for ds_name, text in citations:
        console.print(f"[bold]{escape(ds_name)}[/]: {escape(text)}")
    if data is None:
        console.print(
            f"All bundled datasets via Olympus (MIT licence): {escape(simulators.OLYMPUS_CITATION)}"
        )
